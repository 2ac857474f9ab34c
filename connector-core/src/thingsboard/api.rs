//! The ThingsBoard MQTT gateway API: topics and the exact JSON payloads, built without IO.
//!
//! Payloads are compact JSON with keys in configuration order, as the ThingsBoard gateway (orjson)
//! writes them. Data of many devices is packed into one publish, split so that no payload exceeds
//! the size ThingsBoard accepts.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::convert::{ConvertedData, Datapoint, DeviceIdentity};
use crate::{get_or_insert_with, FastIndexMap};

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
    /// The gateway device's own attributes: client attributes it reports, shared ones pushed
    /// to it (remote configuration), and its attribute requests and their answers.
    pub const GATEWAY_ATTRIBUTES: &str = "v1/devices/me/attributes";
    pub const GATEWAY_ATTRIBUTE_REQUEST_PREFIX: &str = "v1/devices/me/attributes/request/";
    pub const GATEWAY_ATTRIBUTE_RESPONSE_PREFIX: &str = "v1/devices/me/attributes/response/";
    pub const GATEWAY_ATTRIBUTE_RESPONSES: &str = "v1/devices/me/attributes/response/+";
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
    devices: FastIndexMap<Arc<str>, DeviceData>,
    datapoints: usize,
}

#[derive(Debug)]
struct DeviceData {
    identity: Arc<DeviceIdentity>,
    attributes: FastIndexMap<Arc<str>, Value>,
    /// Each message's telemetry as converted, in arrival order.
    telemetry: Vec<(i64, Vec<Datapoint>)>,
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
        let entry = get_or_insert_with(&mut self.devices, &data.device.name, || DeviceData {
            identity: data.device.clone(),
            attributes: FastIndexMap::default(),
            telemetry: Vec::new(),
        });
        for point in data.attributes {
            entry.attributes.insert(point.key, point.value);
        }
        if !data.telemetry.is_empty() {
            entry.telemetry.push((data.ts_ms, data.telemetry));
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

    /// `v1/gateway/attributes` publishes: `{"Device A":{"k":"v"},"Device B":{...}}`.
    pub fn attributes_packed(&self, max_payload: usize) -> Packed {
        let devices = self.devices.iter().map(|(name, data)| {
            let values = data.attributes.iter().map(|(key, value)| (&**key, value));
            (&**name, values)
        });
        pack_attributes(devices, max_payload)
    }

    /// `v1/gateway/telemetry` publishes: `{"Device A":[{"ts":1,"values":{"k":"v"}}]}`.
    pub fn telemetry_packed(&self, max_payload: usize) -> Packed {
        let entries = self.devices.iter().flat_map(|(name, data)| {
            data.telemetry.iter().map(move |(ts, points)| {
                let values = points.iter().map(|point| (&*point.key, &point.value));
                (&**name, *ts, values)
            })
        });
        pack_telemetry(entries, max_payload)
    }

    /// The attribute payloads only (what does not fit is left out).
    pub fn attributes_payloads(&self, max_payload: usize) -> Vec<Vec<u8>> {
        self.attributes_packed(max_payload).into_payloads()
    }

    /// The telemetry payloads only (what does not fit is left out).
    pub fn telemetry_payloads(&self, max_payload: usize) -> Vec<Vec<u8>> {
        self.telemetry_packed(max_payload).into_payloads()
    }
}

/// Publishes packed below a payload limit, and the datapoints no publish can carry.
#[derive(Debug, Default, PartialEq)]
pub struct Packed {
    /// Each payload with the datapoints it carries.
    pub payloads: Vec<(Vec<u8>, usize)>,
    pub too_large: Vec<TooLarge>,
}

impl Packed {
    fn into_payloads(self) -> Vec<Vec<u8>> {
        self.payloads
            .into_iter()
            .map(|(payload, _)| payload)
            .collect()
    }
}

/// One datapoint whose publish alone exceeds the payload limit: it cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge {
    pub device: String,
    pub key: String,
    /// Bytes of the smallest publish that would carry it.
    pub bytes: usize,
}

/// Gateway-API data topics whose payloads can be packed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataTopic {
    Telemetry,
    Attributes,
}

/// Splits a payload packed earlier (under a larger limit) below `max_payload`, by devices,
/// entries and keys as needed.
pub fn repack(topic: DataTopic, payload: &[u8], max_payload: usize) -> Result<Packed, String> {
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| format!("not a gateway-API payload: {e}"))?;
    let Value::Object(devices) = value else {
        return Err("not a gateway-API payload: not an object".to_owned());
    };
    match topic {
        DataTopic::Attributes => {
            let mut attributes = Vec::new();
            for (device, values) in &devices {
                let Value::Object(values) = values else {
                    return Err(format!("attributes of {device:?} are not an object"));
                };
                attributes.push((device.as_str(), pairs(values)));
            }
            let devices = attributes
                .iter()
                .map(|(device, values)| (*device, values.iter().copied()));
            Ok(pack_attributes(devices, max_payload))
        }
        DataTopic::Telemetry => {
            let mut entries = Vec::new();
            for (device, list) in &devices {
                let Value::Array(list) = list else {
                    return Err(format!("telemetry of {device:?} is not a list"));
                };
                for entry in list {
                    let (Some(ts), Some(Value::Object(values))) =
                        (entry.get("ts").and_then(Value::as_i64), entry.get("values"))
                    else {
                        return Err(format!(
                            "a telemetry entry of {device:?} has no ts or values"
                        ));
                    };
                    entries.push((device.as_str(), ts, pairs(values)));
                }
            }
            let entries = entries
                .iter()
                .map(|(device, ts, values)| (*device, *ts, values.iter().copied()));
            Ok(pack_telemetry(entries, max_payload))
        }
    }
}

fn pairs(values: &Map<String, Value>) -> Vec<(&str, &Value)> {
    values
        .iter()
        .map(|(key, value)| (key.as_str(), value))
        .collect()
}

/// Bytes a publish of one fragment needs around it: `{"<device>":<open>` and `<close>}`.
fn envelope(device_key: &[u8]) -> usize {
    device_key.len() + 5
}

/// Devices with their attributes `(key, value)`.
fn pack_attributes<'a, V>(devices: impl Iterator<Item = (&'a str, V)>, max_payload: usize) -> Packed
where
    V: Iterator<Item = (&'a str, &'a Value)>,
{
    let mut packer = Packer::new((b'{', b'}'), max_payload);
    let mut too_large = Vec::new();
    let mut device_key = Vec::new();
    let mut fragment = Vec::new();
    for (device, values) in devices {
        device_key.clear();
        append_json(&mut device_key, device);
        let room = max_payload.saturating_sub(envelope(&device_key));
        for (key, value) in values {
            fragment.clear();
            append_json(&mut fragment, key);
            fragment.push(b':');
            append_json(&mut fragment, value);
            if fragment.len() > room {
                too_large.push(TooLarge {
                    device: device.to_owned(),
                    key: key.to_owned(),
                    bytes: fragment.len() + envelope(&device_key),
                });
                continue;
            }
            packer.push(&device_key, &fragment, 1);
        }
    }
    Packed {
        payloads: packer.finish(),
        too_large,
    }
}

/// Telemetry entries `(device, ts, values)`; an entry too large for one publish is split into one
/// entry per key with the same ts.
fn pack_telemetry<'a, V>(
    entries: impl Iterator<Item = (&'a str, i64, V)>,
    max_payload: usize,
) -> Packed
where
    V: Iterator<Item = (&'a str, &'a Value)> + Clone,
{
    let mut packer = Packer::new((b'[', b']'), max_payload);
    let mut too_large = Vec::new();
    let mut device_key = Vec::new();
    let mut keyed: Option<&str> = None;
    let mut fragment = Vec::new();
    for (device, ts, values) in entries {
        if keyed != Some(device) {
            device_key.clear();
            append_json(&mut device_key, device);
            keyed = Some(device);
        }
        let room = max_payload.saturating_sub(envelope(&device_key));
        fragment.clear();
        let datapoints = append_telemetry_entry(&mut fragment, ts, values.clone());
        if fragment.len() <= room {
            packer.push(&device_key, &fragment, datapoints);
            continue;
        }
        for (key, value) in values {
            fragment.clear();
            append_telemetry_entry(&mut fragment, ts, std::iter::once((key, value)));
            if fragment.len() > room {
                too_large.push(TooLarge {
                    device: device.to_owned(),
                    key: key.to_owned(),
                    bytes: fragment.len() + envelope(&device_key),
                });
                continue;
            }
            packer.push(&device_key, &fragment, 1);
        }
    }
    Packed {
        payloads: packer.finish(),
        too_large,
    }
}

/// Appends `{"ts":<ts>,"values":{<key>:<value>,...}}`; returns the number of values.
fn append_telemetry_entry<'a>(
    out: &mut Vec<u8>,
    ts: i64,
    values: impl Iterator<Item = (&'a str, &'a Value)>,
) -> usize {
    out.extend_from_slice(b"{\"ts\":");
    append_json(out, &ts);
    out.extend_from_slice(b",\"values\":{");
    let mut count = 0;
    for (key, value) in values {
        if count > 0 {
            out.push(b',');
        }
        append_json(out, key);
        out.push(b':');
        append_json(out, value);
        count += 1;
    }
    out.extend_from_slice(b"}}");
    count
}

/// Appends compact JSON, as `serde_json::to_string` writes it, without a string of its own per
/// call (the uplink writes every datapoint of every publish this way).
fn append_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // serde_json fails only on IO errors and non-string map keys: a Vec does not fail, and the
    // values written here (strings, integers, `Value`) have no such keys.
    let written = serde_json::to_writer(out, value);
    debug_assert!(written.is_ok(), "{written:?}");
}

/// Packs fragments into `{"device":<open>fragment,fragment<close>,...}` payloads of at most
/// `max_payload` bytes. Consecutive fragments of a device share its entry. Every fragment fits a
/// payload of its own (the callers leave out the ones that do not).
struct Packer {
    open: u8,
    close: u8,
    max_payload: usize,
    payloads: Vec<(Vec<u8>, usize)>,
    current: Vec<u8>,
    current_datapoints: usize,
    /// The quoted name of the device whose entry `current` ends with (empty: none).
    current_device: Vec<u8>,
}

impl Packer {
    fn new((open, close): (u8, u8), max_payload: usize) -> Self {
        Self {
            open,
            close,
            max_payload,
            payloads: Vec::new(),
            current: Vec::new(),
            current_datapoints: 0,
            current_device: Vec::new(),
        }
    }

    /// Adds one fragment of the device whose quoted name is `device_key`.
    fn push(&mut self, device_key: &[u8], fragment: &[u8], datapoints: usize) {
        let same_device = !self.current.is_empty() && self.current_device == device_key;
        // Bytes appended: a comma after the previous fragment, or for another device the
        // previous device's closing bracket, a comma, the key, a colon and the opening bracket.
        let added = if same_device {
            1 + fragment.len()
        } else {
            2 + device_key.len() + 2 + fragment.len()
        };
        // Every payload still needs its device's closing bracket and its closing brace.
        if !self.current.is_empty() && self.current.len() + added + 2 > self.max_payload {
            self.flush();
        }
        if self.current.is_empty() {
            self.current.push(b'{');
            self.current.extend_from_slice(device_key);
            self.current.push(b':');
            self.current.push(self.open);
        } else if same_device {
            self.current.push(b',');
        } else {
            self.current.push(self.close);
            self.current.push(b',');
            self.current.extend_from_slice(device_key);
            self.current.push(b':');
            self.current.push(self.open);
        }
        self.current.extend_from_slice(fragment);
        self.current_datapoints += datapoints;
        if self.current_device != device_key {
            self.current_device.clear();
            self.current_device.extend_from_slice(device_key);
        }
    }

    fn flush(&mut self) {
        self.current.push(self.close);
        self.current.push(b'}');
        let mut payload = std::mem::take(&mut self.current);
        // Without the spare capacity the buffer grew (up to twice its length): queued payloads
        // are held for as long as ThingsBoard is away, and the queue counts lengths.
        payload.shrink_to_fit();
        self.payloads
            .push((payload, std::mem::take(&mut self.current_datapoints)));
    }

    fn finish(mut self) -> Vec<(Vec<u8>, usize)> {
        if !self.current.is_empty() {
            self.flush();
        }
        self.payloads
    }
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
    fn an_entry_too_large_is_split_by_keys_and_a_key_too_large_is_left_out() {
        let dev = device("D");
        let mut batch = UplinkBatch::new();
        let big = "x".repeat(60);
        let huge = "y".repeat(200);
        batch.add(data(
            &dev,
            7,
            &[("a", &big), ("b", &big), ("c", &huge)],
            &[("small", "1"), ("blob", &huge)],
        ));
        let telemetry = batch.telemetry_packed(120);
        assert_eq!(
            telemetry.payloads.iter().map(|(_, n)| n).sum::<usize>(),
            2,
            "a and b go one by one"
        );
        for (payload, _) in &telemetry.payloads {
            assert!(payload.len() <= 120, "{} bytes", payload.len());
            let value: Value = serde_json::from_slice(payload).unwrap();
            assert_eq!(value["D"][0]["ts"], 7, "the split keeps the timestamp");
        }
        assert_eq!(telemetry.too_large.len(), 1);
        assert_eq!(
            (
                telemetry.too_large[0].device.as_str(),
                telemetry.too_large[0].key.as_str()
            ),
            ("D", "c")
        );
        assert!(telemetry.too_large[0].bytes > 200);
        let attributes = batch.attributes_packed(120);
        assert_eq!(text(attributes.into_payloads()), [r#"{"D":{"small":"1"}}"#]);
        assert_eq!(batch.attributes_packed(120).too_large[0].key, "blob");
    }

    #[test]
    fn repack_splits_a_payload_packed_under_a_larger_limit() {
        let mut batch = UplinkBatch::new();
        for (i, name) in ["A", "B", "C"].iter().enumerate() {
            batch.add(data(
                &device(name),
                i as i64,
                &[("t", "12345"), ("h", "6789")],
                &[("a", "1")],
            ));
        }
        let telemetry = batch.telemetry_payloads(usize::MAX).remove(0);
        let repacked = repack(DataTopic::Telemetry, &telemetry, 60).unwrap();
        assert!(repacked.payloads.len() > 1);
        assert!(repacked.too_large.is_empty());
        // Every datapoint survives the split, with its device and ts.
        let mut points = Vec::new();
        for (payload, count) in &repacked.payloads {
            assert!(payload.len() <= 60);
            let value: Value = serde_json::from_slice(payload).unwrap();
            let mut counted = 0;
            for (device, entries) in value.as_object().unwrap() {
                for entry in entries.as_array().unwrap() {
                    for (key, v) in entry["values"].as_object().unwrap() {
                        points.push((
                            device.clone(),
                            entry["ts"].as_i64().unwrap(),
                            key.clone(),
                            v.clone(),
                        ));
                        counted += 1;
                    }
                }
            }
            assert_eq!(counted, *count);
        }
        assert_eq!(points.len(), 6);
        assert!(points.contains(&("C".to_owned(), 2, "h".to_owned(), json!("6789"))));
        let attributes = batch.attributes_payloads(usize::MAX).remove(0);
        assert_eq!(
            repack(DataTopic::Attributes, &attributes, 20)
                .unwrap()
                .payloads
                .len(),
            3
        );
        assert!(repack(DataTopic::Telemetry, b"[1]", 60).is_err());
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
        /// Splitting never loses, duplicates or reorders an entry and always respects the size
        /// limit; an entry that fits no payload is reported, not sent.
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
            let packed = batch.telemetry_packed(max);
            let mut seen: Vec<(String, i64, String)> = Vec::new();
            for (payload, _) in &packed.payloads {
                let object: Map<String, Value> = serde_json::from_slice(payload).unwrap();
                prop_assert!(payload.len() <= max, "{} bytes > {max}", payload.len());
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
                .filter(|(dev, ts, value)| {
                    let alone = json!({dev.as_str(): [{"ts": ts, "values": {"v": value}}]});
                    alone.to_string().len() <= max
                })
                .collect();
            prop_assert_eq!(packed.too_large.len(), messages.len() - expected.len());
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
