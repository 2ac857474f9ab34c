//! The ThingsBoard side: the gateway API payloads ([`api`]), the MQTT client ([`link`]), the session that sends
//! the queue and survives reconnects ([`session`]) and the task that turns converted data into publishes ([`uplink`]).

pub mod link;
pub mod remote_logs;
pub mod session;
pub mod uplink;

pub use link::MqttSettings;
pub use session::Publisher;
