//! The pure side of ThingsBoard → devices: parsing ThingsBoard's messages ([`messages`]),
//! attribute-request expressions ([`expression`]), Python's formatting of values, which decides
//! the bytes a device receives ([`python`]), and RPC reply shapes and `set` parameters ([`rpc`]).

pub mod expression;
pub mod messages;
pub mod python;
pub mod rpc;
