//! The ThingsBoard side: the MQTT client ([`link`]), the session that sends the queue and
//! survives reconnects ([`session`]), the task that turns converted data into gateway-API
//! publishes ([`uplink`], with the payloads of `connector_core::thingsboard::api`), remote logs
//! ([`remote_logs`]), the gateway statistics ([`statistics`]) and the devices renamed in
//! ThingsBoard ([`renames`]).

pub mod link;
pub mod remote_logs;
pub mod renames;
pub mod session;
pub mod statistics;
pub mod uplink;

pub use link::MqttSettings;
pub use session::Publisher;
