//! The ThingsBoard side: the gateway API payloads ([`api`]), the MQTT session with reconnects
//! ([`link`]) and the task that turns converted data into publishes ([`uplink`]).

pub mod api;
pub mod limits;
pub mod link;
pub mod remote_logs;
pub mod uplink;

pub use link::{LinkEvent, MqttSettings};
