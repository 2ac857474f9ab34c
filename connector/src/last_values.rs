//! The last value of every key of every device, written by the uplink and read by the built-in
//! `get` RPC.

use std::sync::{Arc, Mutex, PoisonError};

use connector_core::convert::{ConvertedData, Datapoint};
use connector_core::{get_or_insert_with, FastIndexMap};
use serde_json::Value;

/// Last value per key of one device.
type KeyValues = FastIndexMap<Arc<str>, Value>;

/// The last value of every key of every device, for the built-in `get` RPC.
#[derive(Debug, Default)]
pub struct LastValues {
    values: Mutex<FastIndexMap<Arc<str>, KeyValues>>,
}

impl LastValues {
    /// Records one uplink batch, in order, under one lock. A message followed by one of the same
    /// device with the same keys is skipped: the next one overwrites every value it holds. A
    /// device sending fast puts many such messages in each batch.
    pub fn record_all(&self, messages: &[ConvertedData]) {
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        for (index, data) in messages.iter().enumerate() {
            if messages
                .get(index + 1)
                .is_some_and(|next| overwrites(next, data))
            {
                continue;
            }
            let device = get_or_insert_with(&mut values, &data.device.name, KeyValues::default);
            for point in data.telemetry.iter().chain(&data.attributes) {
                match device.get_mut(&point.key) {
                    Some(last) => assign(last, &point.value),
                    None => {
                        device.insert(point.key.clone(), point.value.clone());
                    }
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

/// Whether `next` holds a value for every key `earlier` holds, for the same device. Compares by
/// pointer (a device's identity and keys are shared from its configuration): cheap, and false
/// where a device's name comes from its messages.
fn overwrites(next: &ConvertedData, earlier: &ConvertedData) -> bool {
    let same_keys = |a: &[Datapoint], b: &[Datapoint]| {
        a.len() == b.len() && a.iter().zip(b).all(|(a, b)| Arc::ptr_eq(&a.key, &b.key))
    };
    Arc::ptr_eq(&next.device, &earlier.device)
        && same_keys(&next.telemetry, &earlier.telemetry)
        && same_keys(&next.attributes, &earlier.attributes)
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
    use connector_core::convert::DeviceIdentity;
    use serde_json::json;

    fn device(name: &str) -> Arc<DeviceIdentity> {
        Arc::new(DeviceIdentity {
            name: name.into(),
            device_type: "default".into(),
        })
    }

    /// A message of `device`; keys and device are shared between messages, as the converter
    /// shares them from the configuration.
    fn message(device: &Arc<DeviceIdentity>, values: &[(&Arc<str>, Value)]) -> ConvertedData {
        ConvertedData {
            device: device.clone(),
            ts_ms: 1,
            telemetry: values
                .iter()
                .map(|(key, value)| Datapoint {
                    key: Arc::clone(key),
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
        let meter = device("meter");
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let record = |values: &[(&Arc<str>, Value)]| last.record_all(&[message(&meter, values)]);
        record(&[(&a, json!("a long first value")), (&b, json!(1))]);
        record(&[(&a, json!("short"))]);
        assert_eq!(last.get("meter", "a"), Some(json!("short")));
        record(&[(&a, json!(2.5)), (&b, json!("now text"))]);
        assert_eq!(last.get("meter", "a"), Some(json!(2.5)));
        assert_eq!(last.get("meter", "b"), Some(json!("now text")));
        record(&[(&a, json!("text again, longer than before"))]);
        assert_eq!(
            last.get("meter", "a"),
            Some(json!("text again, longer than before"))
        );
        assert_eq!(last.get("meter", "c"), None);
        assert_eq!(last.get("other", "a"), None);
    }

    #[test]
    fn a_batch_keeps_the_last_value_of_every_key_of_every_device() {
        let last = LastValues::default();
        let (meter, pump) = (device("meter"), device("pump"));
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        last.record_all(&[
            message(&meter, &[(&a, json!("1")), (&b, json!("2"))]),
            message(&meter, &[(&a, json!("3")), (&b, json!("4"))]),
            // Skipping the message before this one would lose b's "4".
            message(&meter, &[(&a, json!("5"))]),
            message(&pump, &[(&a, json!("9"))]),
            message(&meter, &[(&b, json!("6"))]),
            message(&meter, &[(&b, json!("7"))]),
        ]);
        assert_eq!(last.get("meter", "a"), Some(json!("5")));
        assert_eq!(last.get("meter", "b"), Some(json!("7")));
        assert_eq!(last.get("pump", "a"), Some(json!("9")));
    }

    #[test]
    fn a_message_is_overwritten_only_by_the_same_device_with_the_same_keys() {
        let (meter, pump) = (device("meter"), device("pump"));
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let earlier = message(&meter, &[(&a, json!("1")), (&b, json!("2"))]);
        assert!(overwrites(
            &message(&meter, &[(&a, json!("3")), (&b, json!("4"))]),
            &earlier
        ));
        assert!(!overwrites(&message(&meter, &[(&a, json!("3"))]), &earlier));
        assert!(!overwrites(
            &message(&meter, &[(&b, json!("3")), (&a, json!("4"))]),
            &earlier
        ));
        assert!(!overwrites(
            &message(&pump, &[(&a, json!("3")), (&b, json!("4"))]),
            &earlier
        ));
    }
}
