//! The ThingsBoard MQTT gateway API: topics and the exact JSON payloads, built without IO.
//!
//! Payloads are compact JSON with keys in configuration order, as the ThingsBoard gateway (orjson)
//! writes them. Data of many devices is packed into one publish, split so that no payload exceeds
//! the size ThingsBoard accepts.

use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::{json, Map, Value};

use crate::convert::{ConvertedData, DeviceIdentity};

pub mod topic {
    pub const CONNECT: &str = "v1/gateway/connect";
    pub const DISCONNECT: &str = "v1/gateway/disconnect";
    pub const TELEMETRY: &str = "v1/gateway/telemetry";
    pub const ATTRIBUTES: &str = "v1/gateway/attributes";
    pub const ATTRIBUTES_REQUEST: &str = "v1/gateway/attributes/request";
    pub const ATTRIBUTES_RESPONSE: &str = "v1/gateway/attributes/response";
    pub const RPC: &str = "v1/gateway/rpc";
    /// The gateway device's own telemetry (remote logs, error counts).
    pub const GATEWAY_TELEMETRY: &str = "v1/devices/me/telemetry";
    /// RPC to the gateway device itself (`socket_set`), and the prefixes of requests and replies.
    pub const GATEWAY_RPC_REQUESTS: &str = "v1/devices/me/rpc/request/+";
    pub const GATEWAY_RPC_REQUEST_PREFIX: &str = "v1/devices/me/rpc/request/";
    pub const GATEWAY_RPC_RESPONSE_PREFIX: &str = "v1/devices/me/rpc/response/";
    pub const GATEWAY_RPC_RESPONSES: &str = "v1/devices/me/rpc/response/+";
}

/// The `connectorType` attribute every device of this connector carries.
pub const CONNECTOR_TYPE: &str = "socket";

/// `v1/gateway/connect`: `{"device":"Device Example","type":"default"}`.
pub fn connect_payload(device: &DeviceIdentity) -> Vec<u8> {
    json!({"device": &*device.name, "type": &*device.device_type})
        .to_string()
        .into_bytes()
}

/// `v1/gateway/disconnect`: `{"device":"Device Example"}`.
pub fn disconnect_payload(device_name: &str) -> Vec<u8> {
    json!({ "device": device_name }).to_string().into_bytes()
}

/// The attributes ThingsBoard's gateway sends right after connecting a device.
pub fn connector_attributes_payload(device_name: &str, connector_name: &str) -> Vec<u8> {
    json!({ device_name: {"connectorType": CONNECTOR_TYPE, "connectorName": connector_name} })
        .to_string()
        .into_bytes()
}

/// Datapoints of many devices waiting to be published together.
#[derive(Debug, Default)]
pub struct UplinkBatch {
    devices: IndexMap<Arc<str>, DeviceData>,
    datapoints: usize,
}

#[derive(Debug)]
struct DeviceData {
    identity: Arc<DeviceIdentity>,
    attributes: Map<String, Value>,
    telemetry: Vec<(i64, Map<String, Value>)>,
}

impl UplinkBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one converted message. Attributes of one device merge (last value wins), telemetry
    /// entries are kept in arrival order, as the ThingsBoard gateway merges its storage packs.
    pub fn add(&mut self, data: ConvertedData) {
        if data.is_empty() {
            return;
        }
        self.datapoints += data.telemetry.len() + data.attributes.len();
        let entry = self
            .devices
            .entry(data.device.name.clone())
            .or_insert_with(|| DeviceData {
                identity: data.device.clone(),
                attributes: Map::new(),
                telemetry: Vec::new(),
            });
        for point in data.attributes {
            entry.attributes.insert(point.key.to_string(), point.value);
        }
        if !data.telemetry.is_empty() {
            let values = data
                .telemetry
                .into_iter()
                .map(|p| (p.key.to_string(), p.value))
                .collect();
            entry.telemetry.push((data.ts_ms, values));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Datapoints added so far.
    pub fn datapoints(&self) -> usize {
        self.datapoints
    }

    /// The devices in the batch, in first-seen order.
    pub fn devices(&self) -> impl Iterator<Item = &Arc<DeviceIdentity>> {
        self.devices.values().map(|d| &d.identity)
    }

    /// `v1/gateway/attributes` payloads: `{"Device A":{"k":"v"},"Device B":{...}}`.
    pub fn attributes_payloads(&self, max_payload: usize) -> Vec<Vec<u8>> {
        let fragments = self.devices.iter().flat_map(|(name, data)| {
            data.attributes
                .iter()
                .map(move |(key, value)| (&**name, format!("{}:{}", quote(key), value), 1))
        });
        pack(fragments, ('{', '}'), max_payload)
            .into_iter()
            .map(|(payload, _)| payload)
            .collect()
    }

    /// `v1/gateway/telemetry` payloads: `{"Device A":[{"ts":1,"values":{"k":"v"}}]}`.
    pub fn telemetry_payloads(&self, max_payload: usize) -> Vec<Vec<u8>> {
        self.telemetry_packs(max_payload)
            .into_iter()
            .map(|(payload, _)| payload)
            .collect()
    }

    /// [`Self::telemetry_payloads`] with the number of datapoints in each.
    pub fn telemetry_packs(&self, max_payload: usize) -> Vec<(Vec<u8>, usize)> {
        let fragments = self.devices.iter().flat_map(|(name, data)| {
            data.telemetry.iter().map(move |(ts, values)| {
                let entry = json!({"ts": ts, "values": values});
                (&**name, entry.to_string(), values.len())
            })
        });
        pack(fragments, ('[', ']'), max_payload)
    }
}

fn quote(text: &str) -> String {
    Value::from(text).to_string()
}

/// Packs `(device, fragment, datapoints)` into `{"device":<open>fragment,fragment<close>,...}` payloads of
/// at most `max_payload` bytes. Consecutive fragments of a device share its entry; a fragment too
/// large for any payload still goes alone (ThingsBoard then rejects that one message, not the rest).
fn pack<'a>(
    fragments: impl Iterator<Item = (&'a str, String, usize)>,
    (open, close): (char, char),
    max_payload: usize,
) -> Vec<(Vec<u8>, usize)> {
    let mut payloads = Vec::new();
    let mut current = String::new();
    let mut current_datapoints = 0;
    let mut current_device: Option<&str> = None;
    for (device, fragment, datapoints) in fragments {
        let same_device = current_device == Some(device);
        let device_key = quote(device);
        // Bytes appended: a comma after the previous fragment, or for another device the
        // previous device's closing bracket, a comma, the key, a colon and the opening bracket.
        let added = if same_device {
            1 + fragment.len()
        } else {
            2 + device_key.len() + 2 + fragment.len()
        };
        // Every payload still needs its device's closing bracket and its closing brace.
        if !current.is_empty() && current.len() + added + 2 > max_payload {
            current.push(close);
            current.push('}');
            payloads.push((
                std::mem::take(&mut current).into_bytes(),
                std::mem::take(&mut current_datapoints),
            ));
            current_device = None;
        }
        if current.is_empty() {
            current.push('{');
            current.push_str(&device_key);
            current.push(':');
            current.push(open);
        } else if current_device == Some(device) {
            current.push(',');
        } else {
            current.push(close);
            current.push(',');
            current.push_str(&device_key);
            current.push(':');
            current.push(open);
        }
        current.push_str(&fragment);
        current_datapoints += datapoints;
        current_device = Some(device);
    }
    if !current.is_empty() {
        current.push(close);
        current.push('}');
        payloads.push((current.into_bytes(), current_datapoints));
    }
    payloads
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::Datapoint;
    use proptest::prelude::*;

    fn device(name: &str) -> Arc<DeviceIdentity> {
        Arc::new(DeviceIdentity {
            name: name.into(),
            device_type: "default".into(),
        })
    }

    fn data(
        dev: &Arc<DeviceIdentity>,
        ts: i64,
        telemetry: &[(&str, &str)],
        attributes: &[(&str, &str)],
    ) -> ConvertedData {
        let points = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| Datapoint {
                    key: (*k).into(),
                    value: Value::from(*v),
                    strategy: None,
                })
                .collect()
        };
        ConvertedData {
            device: dev.clone(),
            ts_ms: ts,
            telemetry: points(telemetry),
            attributes: points(attributes),
            decode_errors: 0,
        }
    }

    fn text(payloads: Vec<Vec<u8>>) -> Vec<String> {
        payloads
            .into_iter()
            .map(|p| String::from_utf8(p).unwrap())
            .collect()
    }

    #[test]
    fn gateway_api_shapes() {
        let dev = device("Device Example");
        assert_eq!(
            String::from_utf8(connect_payload(&dev)).unwrap(),
            r#"{"device":"Device Example","type":"default"}"#
        );
        assert_eq!(
            String::from_utf8(disconnect_payload("Device Example")).unwrap(),
            r#"{"device":"Device Example"}"#
        );
        assert_eq!(
            String::from_utf8(connector_attributes_payload(
                "Device Example",
                "TCP Connector"
            ))
            .unwrap(),
            r#"{"Device Example":{"connectorType":"socket","connectorName":"TCP Connector"}}"#
        );
    }

    #[test]
    fn batch_keeps_thingsboard_shapes_and_order() {
        let (a, b) = (device("A"), device("B"));
        let mut batch = UplinkBatch::new();
        batch.add(data(
            &a,
            1,
            &[("temp", "2345"), ("hum", "23")],
            &[("name", "2345"), ("num", "45")],
        ));
        batch.add(data(&b, 2, &[("temp", "1")], &[]));
        batch.add(data(&a, 3, &[("temp", "9")], &[("num", "99")]));
        assert_eq!(batch.datapoints(), 7);
        assert_eq!(
            text(batch.telemetry_payloads(8196)),
            [
                r#"{"A":[{"ts":1,"values":{"temp":"2345","hum":"23"}},{"ts":3,"values":{"temp":"9"}}],"B":[{"ts":2,"values":{"temp":"1"}}]}"#
            ]
        );
        assert_eq!(
            text(batch.attributes_payloads(8196)),
            [r#"{"A":{"name":"2345","num":"99"}}"#]
        );
        let names: Vec<&str> = batch.devices().map(|d| &*d.name).collect();
        assert_eq!(names, ["A", "B"]);
    }

    #[test]
    fn empty_batch_publishes_nothing() {
        let mut batch = UplinkBatch::new();
        batch.add(data(&device("A"), 1, &[], &[]));
        assert!(batch.is_empty());
        assert!(batch.telemetry_payloads(100).is_empty());
        assert!(batch.attributes_payloads(100).is_empty());
    }

    #[test]
    fn special_characters_are_escaped() {
        let mut batch = UplinkBatch::new();
        batch.add(data(
            &device("a\"b"),
            1,
            &[("k\n", "v\\")],
            &[("q\"", "\u{1}")],
        ));
        let telemetry: Value = serde_json::from_slice(&batch.telemetry_payloads(8196)[0]).unwrap();
        assert_eq!(
            telemetry,
            json!({"a\"b": [{"ts": 1, "values": {"k\n": "v\\"}}]})
        );
        let attributes: Value =
            serde_json::from_slice(&batch.attributes_payloads(8196)[0]).unwrap();
        assert_eq!(attributes, json!({"a\"b": {"q\"": "\u{1}"}}));
    }

    proptest! {
        /// Splitting never loses, duplicates or reorders an entry, and respects the size limit
        /// whenever a single entry fits.
        #[test]
        fn packing_preserves_entries(
            messages in proptest::collection::vec((0usize..4, "[a-z]{0,30}"), 1..60),
            max in 60usize..400,
        ) {
            let devices: Vec<_> = (0..4).map(|i| device(&format!("dev{i}"))).collect();
            let mut batch = UplinkBatch::new();
            for (ts, (dev, value)) in messages.iter().enumerate() {
                batch.add(data(&devices[*dev], ts as i64, &[("v", value.as_str())], &[]));
            }
            let payloads = batch.telemetry_payloads(max);
            let mut seen: Vec<(String, i64, String)> = Vec::new();
            for payload in &payloads {
                let object: Map<String, Value> = serde_json::from_slice(payload).unwrap();
                let entries: usize = object.values().map(|e| e.as_array().unwrap().len()).sum();
                prop_assert!(
                    payload.len() <= max || entries == 1,
                    "{} bytes > {max} with {entries} entries", payload.len()
                );
                for (name, entries) in object {
                    for entry in entries.as_array().unwrap() {
                        seen.push((name.clone(), entry["ts"].as_i64().unwrap(), entry["values"]["v"].as_str().unwrap().to_owned()));
                    }
                }
            }
            let mut expected: Vec<(String, i64, String)> = messages
                .iter()
                .enumerate()
                .map(|(ts, (dev, value))| (format!("dev{dev}"), ts as i64, value.clone()))
                .collect();
            // Per device, order is arrival order; across devices, grouping by device is allowed.
            expected.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut sorted = seen.clone();
            sorted.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
            prop_assert_eq!(sorted, expected);
            for name in ["dev0", "dev1", "dev2", "dev3"] {
                let ts: Vec<i64> = seen.iter().filter(|s| s.0 == name).map(|s| s.1).collect();
                prop_assert!(ts.windows(2).all(|w| w[0] < w[1]), "{name} reordered: {ts:?}");
            }
        }
    }
}
