//! ThingsBoard's `BytesSocketUplinkConverter`: each configured key is a slice of the message,
//! decoded to a string with the device's encoding.

use std::sync::Arc;

use serde_json::Value;

use super::{slice::byte_slice, text::decode_checked, ConvertedData, Datapoint, DeviceIdentity};
use crate::config::Encoding;
use crate::report::ReportStrategy;

/// One configured key, with its effective report strategy already resolved.
#[derive(Debug, Clone)]
pub struct KeySlice {
    pub key: Arc<str>,
    pub byte_from: Option<i64>,
    pub byte_to: Option<i64>,
    pub strategy: ReportStrategy,
}

impl KeySlice {
    /// The key's datapoint, and whether its bytes decoded.
    fn datapoint(&self, data: &[u8], encoding: Encoding) -> (Datapoint, bool) {
        let bytes = byte_slice(data, self.byte_from, self.byte_to);
        let (text, decoded) = decode_checked(bytes, encoding);
        let point = Datapoint {
            key: self.key.clone(),
            value: Value::String(text),
            strategy: self.strategy,
        };
        (point, decoded)
    }
}

/// The converter of one device entry.
#[derive(Debug, Clone)]
pub struct UplinkConverter {
    pub device: Arc<DeviceIdentity>,
    pub encoding: Encoding,
    pub telemetry: Vec<KeySlice>,
    pub attributes: Vec<KeySlice>,
}

impl UplinkConverter {
    /// Converts one message. Every key yields a value (an empty slice gives `""`, as in
    /// ThingsBoard); a repeated attribute key keeps its first position and its last value.
    pub fn convert(&self, data: &[u8], ts_ms: i64) -> ConvertedData {
        let mut decode_errors = 0;
        let mut telemetry = Vec::with_capacity(self.telemetry.len());
        for key in &self.telemetry {
            let (point, decoded) = key.datapoint(data, self.encoding);
            decode_errors += usize::from(!decoded);
            telemetry.push(point);
        }
        let mut attributes: Vec<Datapoint> = Vec::with_capacity(self.attributes.len());
        for key in &self.attributes {
            let (point, decoded) = key.datapoint(data, self.encoding);
            decode_errors += usize::from(!decoded);
            match attributes.iter_mut().find(|p| p.key == point.key) {
                Some(existing) => *existing = point,
                None => attributes.push(point),
            }
        }
        ConvertedData {
            device: self.device.clone(),
            ts_ms,
            telemetry,
            attributes,
            decode_errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, from: Option<i64>, to: Option<i64>) -> KeySlice {
        KeySlice {
            key: name.into(),
            byte_from: from,
            byte_to: to,
            strategy: ReportStrategy::ON_RECEIVED,
        }
    }

    fn values(points: &[Datapoint]) -> Vec<(String, Value)> {
        points
            .iter()
            .map(|p| (p.key.to_string(), p.value.clone()))
            .collect()
    }

    #[test]
    fn shipped_example_with_2345() {
        let converter = UplinkConverter {
            device: Arc::new(DeviceIdentity {
                name: "Device Example".into(),
                device_type: "default".into(),
            }),
            encoding: Encoding::Utf8,
            telemetry: vec![key("temp", Some(0), Some(-1)), key("hum", Some(0), Some(2))],
            attributes: vec![key("name", Some(0), Some(-1)), key("num", Some(2), Some(4))],
        };
        let data = converter.convert(b"2345", 1_700_000_000_000);
        assert_eq!(data.ts_ms, 1_700_000_000_000);
        assert_eq!(
            values(&data.telemetry),
            vec![("temp".into(), "2345".into()), ("hum".into(), "23".into())]
        );
        assert_eq!(
            values(&data.attributes),
            vec![("name".into(), "2345".into()), ("num".into(), "45".into())]
        );
    }

    #[test]
    fn repeated_attribute_key_keeps_last_value() {
        let converter = UplinkConverter {
            device: Arc::new(DeviceIdentity {
                name: "d".into(),
                device_type: "default".into(),
            }),
            encoding: Encoding::Hex,
            telemetry: vec![key("empty", Some(3), Some(1))],
            attributes: vec![key("a", Some(0), Some(1)), key("a", Some(1), Some(2))],
        };
        let data = converter.convert(b"\x01\x02", 0);
        assert_eq!(values(&data.attributes), vec![("a".into(), "02".into())]);
        assert_eq!(values(&data.telemetry), vec![("empty".into(), "".into())]);
    }
}
