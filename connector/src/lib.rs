//! ThingsBoard-compatible socket connector: TCP/UDP device bytes in, ThingsBoard MQTT gateway API out.
//!
//! The pure core (config model and build, routing, framing, conversion, report strategies, gateway
//! API payloads) is the `connector_core` crate; this crate adds the IO around it. From the wire
//! inwards: [`transport`] (listeners, address filter, framing, `route`) → [`thingsboard::uplink`]
//! (report strategies, batching) → [`queue`] → [`thingsboard::session`] (gateway API over MQTT);
//! [`downlink`] carries attribute responses, attribute updates and RPC back to devices. [`live`]
//! and [`reload`] swap the built configuration at run time; [`runtime`] wires the layers together.

pub mod clock;
pub mod demo;
pub mod downlink;
pub mod http;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod queue;
pub mod reload;
pub mod runtime;
pub mod simulate;
pub mod stop;
pub mod thingsboard;
pub mod tools;
pub mod transport;
