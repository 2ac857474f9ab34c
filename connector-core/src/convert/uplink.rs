//! ThingsBoard's `BytesSocketUplinkConverter`: each configured key is a slice of the message,
//! decoded to a string with the device's encoding.

use std::sync::Arc;

use serde_json::Value;

use super::typed::TypedDecoder;
use super::{slice::byte_slice, text::decode_checked, ConvertedData, Datapoint, DeviceIdentity};
use crate::config::{Encoding, ReportStrategy};

/// One configured key, with the report strategy of its file already resolved (key > device >
/// connector; none: the gateway's applies).
#[derive(Debug, Clone)]
pub struct KeySlice {
    pub key: Arc<str>,
    pub byte_from: Option<i64>,
    pub byte_to: Option<i64>,
    pub strategy: Option<ReportStrategy>,
    pub value: KeyValue,
}

/// How a key's bytes become its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyValue {
    /// A string in this encoding (ThingsBoard's behaviour), or hex.
    Text(Encoding),
    /// A number or boolean.
    Typed(TypedDecoder),
}

impl KeySlice {
    /// The key's datapoint (None when a typed value cannot be read from the slice), and whether
    /// its bytes decoded.
    fn datapoint(&self, data: &[u8]) -> (Option<Datapoint>, bool) {
        let bytes = byte_slice(data, self.byte_from, self.byte_to);
        let (value, decoded) = match self.value {
            KeyValue::Text(encoding) => {
                let (text, decoded) = decode_checked(bytes, encoding);
                (Some(Value::String(text)), decoded)
            }
            KeyValue::Typed(decoder) => match decoder.decode(bytes) {
                Ok(value) => (Some(value), true),
                Err(_) => (None, false),
            },
        };
        let point = value.map(|value| Datapoint {
            key: self.key.clone(),
            value,
            strategy: self.strategy,
        });
        (point, decoded)
    }
}

/// The converter of one device entry.
#[derive(Debug, Clone)]
pub struct UplinkConverter {
    pub device: Arc<DeviceIdentity>,
    pub telemetry: Vec<KeySlice>,
    pub attributes: Vec<KeySlice>,
    /// Device name and type taken from the message, when configured.
    pub name_from: Option<IdentitySlice>,
    pub type_from: Option<IdentitySlice>,
}

/// A slice of the message naming the device or its type.
#[derive(Debug, Clone)]
pub struct IdentitySlice {
    pub byte_from: Option<i64>,
    pub byte_to: Option<i64>,
    pub prefix: String,
    pub encoding: Encoding,
}

impl IdentitySlice {
    /// The name in `data`, or None when the slice is empty.
    fn read(&self, data: &[u8]) -> Option<String> {
        let text = decode_checked(
            byte_slice(data, self.byte_from, self.byte_to),
            self.encoding,
        )
        .0;
        let text = text.trim();
        (!text.is_empty()).then(|| format!("{}{text}", self.prefix))
    }
}

impl UplinkConverter {
    /// The device a message belongs to: the configured one, or the one it names.
    fn identity(&self, data: &[u8]) -> Arc<DeviceIdentity> {
        if self.name_from.is_none() && self.type_from.is_none() {
            return self.device.clone();
        }
        let name = self.name_from.as_ref().and_then(|s| s.read(data));
        let device_type = self.type_from.as_ref().and_then(|s| s.read(data));
        Arc::new(DeviceIdentity {
            name: name.map_or_else(|| self.device.name.clone(), Into::into),
            device_type: device_type.map_or_else(|| self.device.device_type.clone(), Into::into),
        })
    }
}

impl UplinkConverter {
    /// Converts one message. Every key yields a value (an empty slice gives `""`, as in
    /// ThingsBoard).
    pub fn convert(&self, data: &[u8], ts_ms: i64) -> ConvertedData {
        let mut decode_errors = 0;
        let mut datapoints = |keys: &[KeySlice]| {
            let mut points = Vec::with_capacity(keys.len());
            for key in keys {
                let (point, decoded) = key.datapoint(data);
                decode_errors += usize::from(!decoded);
                if let Some(point) = point {
                    put_once(&mut points, point);
                }
            }
            points
        };
        let telemetry = datapoints(&self.telemetry);
        let attributes = datapoints(&self.attributes);
        ConvertedData {
            device: self.identity(data),
            ts_ms,
            telemetry,
            attributes,
            decode_errors,
        }
    }
}

/// A JSON object holds each key once: a key the configuration lists twice keeps its first
/// position and its last value, as inserting into a map does.
fn put_once(points: &mut Vec<Datapoint>, point: Datapoint) {
    match points.iter_mut().find(|p| p.key == point.key) {
        Some(existing) => *existing = point,
        None => points.push(point),
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
            strategy: None,
            value: KeyValue::Text(Encoding::Utf8),
        }
    }

    /// A converter for a device named `name` of type `default`, without name or type slices.
    fn converter(
        name: &str,
        telemetry: Vec<KeySlice>,
        attributes: Vec<KeySlice>,
    ) -> UplinkConverter {
        UplinkConverter {
            device: Arc::new(DeviceIdentity {
                name: name.into(),
                device_type: "default".into(),
            }),
            telemetry,
            attributes,
            name_from: None,
            type_from: None,
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
        let converter = converter(
            "Device Example",
            vec![key("temp", Some(0), Some(-1)), key("hum", Some(0), Some(2))],
            vec![key("name", Some(0), Some(-1)), key("num", Some(2), Some(4))],
        );
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
    fn device_identity_from_the_message() {
        let converter = UplinkConverter {
            device: Arc::new(DeviceIdentity {
                name: "fallback".into(),
                device_type: "meter".into(),
            }),
            telemetry: vec![key("v", Some(4), None)],
            attributes: vec![],
            name_from: Some(IdentitySlice {
                byte_from: Some(0),
                byte_to: Some(4),
                prefix: "Meter ".into(),
                encoding: Encoding::Utf8,
            }),
            type_from: None,
        };
        let data = converter.convert(b"0042 7", 0);
        assert_eq!(&*data.device.name, "Meter 0042");
        assert_eq!(&*data.device.device_type, "meter");
        assert_eq!(&*converter.convert(b"    9", 0).device.name, "fallback");
    }

    #[test]
    fn a_repeated_telemetry_key_keeps_its_first_position_and_its_last_value() {
        let converter = converter(
            "d",
            vec![
                key("t", Some(0), Some(1)),
                key("h", Some(1), Some(2)),
                key("t", Some(2), Some(3)),
                key("x", Some(3), Some(4)),
                key("h", Some(4), Some(5)),
            ],
            vec![],
        );
        let data = converter.convert(b"12345", 0);
        assert_eq!(
            values(&data.telemetry),
            vec![
                ("t".into(), "3".into()),
                ("h".into(), "5".into()),
                ("x".into(), "4".into())
            ]
        );
    }

    #[test]
    fn repeated_attribute_key_keeps_last_value() {
        let converter = converter(
            "d",
            vec![KeySlice {
                value: KeyValue::Text(Encoding::Hex),
                ..key("empty", Some(3), Some(1))
            }],
            vec![
                KeySlice {
                    value: KeyValue::Text(Encoding::Hex),
                    ..key("a", Some(0), Some(1))
                },
                KeySlice {
                    value: KeyValue::Text(Encoding::Hex),
                    ..key("a", Some(1), Some(2))
                },
            ],
        );
        let data = converter.convert(b"\x01\x02", 0);
        assert_eq!(values(&data.attributes), vec![("a".into(), "02".into())]);
        assert_eq!(values(&data.telemetry), vec![("empty".into(), "".into())]);
    }
}
