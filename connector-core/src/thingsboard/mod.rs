//! ThingsBoard's MQTT gateway API without IO: topics and payloads ([`api`]), the session
//! limits ThingsBoard announces ([`limits`]) and remote configuration from its UI
//! ([`remote_config`]).

pub mod api;
pub mod limits;
pub mod remote_config;
