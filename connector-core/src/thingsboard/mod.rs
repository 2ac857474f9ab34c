//! ThingsBoard's MQTT gateway API without IO: topics and payloads ([`api`]), the session
//! limits ThingsBoard announces ([`limits`]), remote configuration from its UI
//! ([`remote_config`]), devices renamed there ([`renames`]) and the gateway statistics its dashboard plots ([`statistics`]).

pub mod api;
pub mod limits;
pub mod remote_config;
pub mod renames;
pub mod statistics;
