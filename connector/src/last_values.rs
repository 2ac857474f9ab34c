//! The last value of every key of every device, written by the uplink and read by the built-in
//! `get` RPC.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use connector_core::convert::ConvertedData;
use indexmap::IndexMap;
use serde_json::Value;

/// Last value per key of one device.
type KeyValues = IndexMap<Arc<str>, Value>;

/// The last value of every key of every device, for the built-in `get` RPC.
#[derive(Debug, Default)]
pub struct LastValues {
    values: Mutex<HashMap<Arc<str>, KeyValues>>,
}

impl LastValues {
    pub fn record(&self, data: &ConvertedData) {
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        let device = values.entry(data.device.name.clone()).or_default();
        for point in data.telemetry.iter().chain(&data.attributes) {
            device.insert(point.key.clone(), point.value.clone());
        }
    }

    /// Forgets devices (evicted as silent).
    pub fn forget(&self, devices: &std::collections::HashSet<Arc<str>>) {
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        values.retain(|device, _| !devices.contains(device));
    }

    pub fn get(&self, device: &str, key: &str) -> Option<Value> {
        let values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        values.get(device).and_then(|keys| keys.get(key)).cloned()
    }
}
