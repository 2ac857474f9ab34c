//! Uplink conversion: a device message's bytes become telemetry and attribute datapoints.
//!
//! Pure functions over byte slices; no IO, no clock (the caller passes the timestamp).

pub mod slice;
pub mod text;
pub mod typed;
mod uplink;

pub use uplink::{IdentitySlice, KeySlice, KeyValue, UplinkConverter};

use std::sync::Arc;

use serde_json::Value;

use crate::config::ReportStrategy;

/// The ThingsBoard device a message belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceIdentity {
    pub name: Arc<str>,
    pub device_type: Arc<str>,
}

/// One key's value from one message, with the report strategy its configuration gives it (none:
/// the gateway's applies).
#[derive(Debug, Clone, PartialEq)]
pub struct Datapoint {
    pub key: Arc<str>,
    pub value: Value,
    pub strategy: Option<ReportStrategy>,
}

/// What one message yields for one device: one timestamp for all its telemetry, and each key
/// once in `telemetry` and once in `attributes` (the uplink writes them as JSON objects).
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertedData {
    pub device: Arc<DeviceIdentity>,
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    pub telemetry: Vec<Datapoint>,
    pub attributes: Vec<Datapoint>,
    /// Values whose bytes did not decode in the device's encoding.
    pub decode_errors: usize,
}

impl ConvertedData {
    pub fn is_empty(&self) -> bool {
        self.telemetry.is_empty() && self.attributes.is_empty()
    }
}
