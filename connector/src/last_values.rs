//! The last value of every key of every device, written by the uplink and read by the built-in
//! `get` RPC.

use std::sync::{Arc, Mutex, PoisonError};

use connector_core::convert::ConvertedData;
use connector_core::FastIndexMap;
use serde_json::Value;

/// Last value per key of one device.
type KeyValues = FastIndexMap<Arc<str>, Value>;

/// The last value of every key of every device, for the built-in `get` RPC.
#[derive(Debug, Default)]
pub struct LastValues {
    values: Mutex<FastIndexMap<Arc<str>, KeyValues>>,
}

impl LastValues {
    pub fn record(&self, data: &ConvertedData) {
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        // Looked up before inserting: `entry` would clone the name's Arc for every message.
        let device = match values.get_mut(&data.device.name) {
            Some(device) => device,
            None => values.entry(data.device.name.clone()).or_default(),
        };
        for point in data.telemetry.iter().chain(&data.attributes) {
            match device.get_mut(&point.key) {
                Some(last) => assign(last, &point.value),
                None => {
                    device.insert(point.key.clone(), point.value.clone());
                }
            }
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

/// `*last = value.clone()`, keeping the text's buffer when both are strings: the uplink records
/// every value of every message, and most are strings of about the same length.
fn assign(last: &mut Value, value: &Value) {
    match (last, value) {
        (Value::String(last), Value::String(text)) => text.clone_into(last),
        (last, value) => *last = value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector_core::convert::{Datapoint, DeviceIdentity};
    use serde_json::json;

    fn message(values: &[(&str, Value)]) -> ConvertedData {
        ConvertedData {
            device: Arc::new(DeviceIdentity {
                name: "meter".into(),
                device_type: "default".into(),
            }),
            ts_ms: 1,
            telemetry: values
                .iter()
                .map(|(key, value)| Datapoint {
                    key: (*key).into(),
                    value: value.clone(),
                    strategy: None,
                })
                .collect(),
            attributes: Vec::new(),
            decode_errors: 0,
        }
    }

    #[test]
    fn the_last_value_of_each_key_wins_whatever_its_type() {
        let last = LastValues::default();
        last.record(&message(&[
            ("a", json!("a long first value")),
            ("b", json!(1)),
        ]));
        last.record(&message(&[("a", json!("short"))]));
        assert_eq!(last.get("meter", "a"), Some(json!("short")));
        last.record(&message(&[("a", json!(2.5)), ("b", json!("now text"))]));
        assert_eq!(last.get("meter", "a"), Some(json!(2.5)));
        assert_eq!(last.get("meter", "b"), Some(json!("now text")));
        last.record(&message(&[("a", json!("text again, longer than before"))]));
        assert_eq!(
            last.get("meter", "a"),
            Some(json!("text again, longer than before"))
        );
        assert_eq!(last.get("meter", "c"), None);
        assert_eq!(last.get("other", "a"), None);
    }
}
