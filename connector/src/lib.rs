//! ThingsBoard-compatible socket connector: TCP/UDP device bytes in, ThingsBoard MQTT gateway API out.
//!
//! Layers, from the wire inwards: [`transport`] (listeners, address filter) → [`router`] (which
//! devices a peer feeds) → [`convert`] (bytes to datapoints) → [`report`] (report strategies) →
//! [`thingsboard`] (gateway API over MQTT); [`downlink`] carries attribute responses, attribute
//! updates and RPC back to devices. [`config`] is the `socket.json` model that the
//! Kubernetes operator embeds; [`runtime`] wires the layers together.

pub mod address_filter;
pub mod clock;
pub mod config;
pub mod convert;
pub mod demo;
pub mod downlink;
pub mod framing;
pub mod http;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod queue;
pub mod reload;
pub mod report;
pub mod router;
pub mod runtime;
pub mod simulate;
pub mod stop;
pub mod thingsboard;
pub mod tools;
pub mod transport;
