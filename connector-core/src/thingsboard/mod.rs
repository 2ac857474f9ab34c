//! ThingsBoard's MQTT gateway API without IO: topics and payloads ([`api`]) and the session
//! limits ThingsBoard announces ([`limits`]).

pub mod api;
pub mod limits;
