//! ThingsBoard-compatible socket connector: TCP/UDP device bytes in, ThingsBoard MQTT gateway API out.
//!
//! The pure core (config model and build, routing, framing, conversion, report strategies, gateway
//! API payloads) is the `connector_core` crate; this crate adds the IO around it. From the wire
//! inwards: `transport` (listeners, address filter, framing, `route`) → [`thingsboard::uplink`]
//! (report strategies, batching) → [`queue`] → [`thingsboard::session`] (gateway API over MQTT);
//! `downlink` carries attribute responses, attribute updates and RPC back to devices. `live`
//! and [`reload`] swap the built configuration at run time; [`runtime`] wires the layers together.

pub(crate) mod clock;
pub mod demo;
pub(crate) mod downlink;
pub(crate) mod events;
pub mod gateway;
pub(crate) mod http;
pub(crate) mod last_values;
pub(crate) mod live;
pub mod logging;
pub(crate) mod metrics;
pub mod queue;
pub mod read_coalescing;
pub mod reload;
pub mod remote_config;
pub mod runtime;
pub mod simulate;
pub(crate) mod stop;
pub mod supervisor;
pub mod thingsboard;
pub mod tools;
pub(crate) mod transport;
