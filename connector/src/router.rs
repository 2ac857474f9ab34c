//! The device table built from the configuration: which devices a peer feeds, and the converter
//! of each. Built once per configuration; the data path never re-reads config.

use std::sync::Arc;

use crate::address_filter::AddressFilter;
use crate::config::Encoding;
use crate::config::{
    AttributeRequestConfig, AttributeScope, ConnectorConfig, DeviceConfig, IdentitySliceConfig,
    KeyConfig, MessageFilterConfig, ReportStrategyConfig, ReportStrategyKind,
};
use crate::convert::typed::{TypedDecoder, ValueType};
use crate::convert::{
    ConvertedData, DeviceIdentity, IdentitySlice, KeySlice, KeyValue, UplinkConverter,
};
use crate::downlink::expression::{KeyNames, RequestMatcher};
use crate::metrics::metrics;
use crate::report::{ReportStrategy, StrategyCascade};
use prometheus::IntCounter;

#[derive(Debug)]
pub struct Device {
    pub filter: AddressFilter,
    pub converter: UplinkConverter,
    pub attribute_requests: Vec<AttributeRequestRule>,
    /// Only messages of this type belong to the entry.
    pub message_filter: Option<MessageFilter>,
    /// This device's series of the per-device metrics, looked up once.
    pub counters: DeviceCounters,
}

#[derive(Debug, Clone)]
pub struct DeviceCounters {
    pub frames: IntCounter,
    pub bytes: IntCounter,
    pub decode_errors: IntCounter,
}

impl DeviceCounters {
    fn new(device: &str) -> Self {
        let m = metrics();
        Self {
            frames: m.frames_received.with_label_values(&[device]),
            bytes: m.received_bytes.with_label_values(&[device]),
            decode_errors: m.decode_errors.with_label_values(&[device]),
        }
    }
}

/// One `attributeRequests[]` entry, parsed.
#[derive(Debug)]
pub struct AttributeRequestRule {
    pub scope: AttributeScope,
    pub matcher: RequestMatcher,
    pub names: KeyNames,
}

impl AttributeRequestRule {
    /// Parses an entry; the loader has already rejected entries that do not parse.
    pub fn parse(config: &AttributeRequestConfig) -> Result<Self, String> {
        let is_constant = |source: &Option<String>| {
            source
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("constant"))
        };
        let matcher = RequestMatcher::parse(
            &config.request_expression,
            is_constant(&config.request_expression_source),
        )
        .map_err(|e| format!("requestExpression: {e}"))?;
        let names = KeyNames::parse(
            &config.attribute_name_expression,
            is_constant(&config.attribute_name_expression_source),
        )
        .map_err(|e| format!("attributeNameExpression: {e}"))?;
        Ok(Self {
            scope: config.scope,
            matcher,
            names,
        })
    }
}

impl Device {
    /// The message is of this entry's type (always true without `messageFilter`).
    pub fn accepts(&self, message: &[u8]) -> bool {
        self.message_filter
            .as_ref()
            .is_none_or(|filter| filter.matches(message))
    }

    /// The attribute requests `message` makes: `(scope, keys)` for every matching entry. A message
    /// that is a request is not converted to data for this device, as in ThingsBoard.
    pub fn attribute_requests(&self, message: &[u8]) -> Vec<(AttributeScope, Vec<String>)> {
        self.attribute_requests
            .iter()
            .filter(|rule| rule.matcher.matches(message))
            .map(|rule| (rule.scope, rule.names.keys(message)))
            .collect()
    }
}

/// Indices of the devices a peer feeds, in configuration order.
pub type DeviceSet = Vec<usize>;

#[derive(Debug)]
pub struct Router {
    devices: Vec<Device>,
}

impl Router {
    /// `global` is the gateway-wide report strategy (`--report-strategy`).
    pub fn new(config: &ConnectorConfig, global: ReportStrategy) -> Self {
        let connector_level = config.report_strategy.clone().or_else(|| {
            (config.send_data_only_on_change == Some(true)).then_some(ReportStrategyConfig {
                kind: Some(ReportStrategyKind::OnChange),
                report_period: None,
                ttl: None,
                aggregation_function: None,
            })
        });
        let cascade = StrategyCascade::new(global, connector_level.as_ref());
        let devices = config
            .devices
            .iter()
            .map(|device| Device {
                filter: AddressFilter::new(device.filter_pattern().unwrap_or_default()),
                converter: converter(device, &cascade),
                attribute_requests: device
                    .attribute_requests
                    .iter()
                    .filter_map(|r| AttributeRequestRule::parse(r).ok())
                    .collect(),
                message_filter: device
                    .message_filter
                    .as_ref()
                    .and_then(|f| MessageFilter::parse(f).ok()),
                counters: DeviceCounters::new(&device.device_name),
            })
            .collect();
        Self { devices }
    }

    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    pub fn device(&self, index: usize) -> Option<&Device> {
        self.devices.get(index)
    }

    /// The first device with this ThingsBoard name (downlink addresses devices by name).
    pub fn find(&self, name: &str) -> Option<usize> {
        self.devices
            .iter()
            .position(|d| &*d.converter.device.name == name)
    }

    /// Every device whose filter matches the peer (ThingsBoard gives the message to all of them).
    pub fn matching(&self, peer: &str) -> DeviceSet {
        self.devices
            .iter()
            .enumerate()
            .filter(|(_, d)| d.filter.matches(peer))
            .map(|(i, _)| i)
            .collect()
    }

    /// Converts one message for each device of the set; devices with no keys yield nothing.
    pub fn convert<'a>(
        &'a self,
        set: &'a [usize],
        data: &'a [u8],
        ts_ms: i64,
    ) -> impl Iterator<Item = ConvertedData> + 'a {
        set.iter()
            .filter_map(|&i| self.devices.get(i))
            .filter(move |d| d.accepts(data))
            .map(move |d| d.converter.convert(data, ts_ms))
            .filter(|c| !c.is_empty())
    }
}

/// Text in the device's encoding unless the key asks for a type.
pub fn key_value(key: &KeyConfig, encoding: Encoding) -> KeyValue {
    match key.value_type {
        None | Some(ValueType::String) => KeyValue::Text(encoding),
        Some(ValueType::Hex) => KeyValue::Text(Encoding::Hex),
        Some(value_type) => KeyValue::Typed(TypedDecoder {
            value_type,
            order: key.byte_order.unwrap_or_default(),
            scale: key.scale,
            offset: key.offset,
            bit_offset: key.bit_offset.unwrap_or(0),
            bit_length: key.bit_length.unwrap_or(1),
        }),
    }
}

fn identity_slice(config: &IdentitySliceConfig, encoding: Encoding) -> IdentitySlice {
    IdentitySlice {
        byte_from: config.byte_from,
        byte_to: config.byte_to,
        prefix: config.prefix.clone().unwrap_or_default(),
        encoding,
    }
}

/// `messageFilter`, parsed.
#[derive(Debug)]
pub struct MessageFilter {
    byte_from: Option<i64>,
    byte_to: Option<i64>,
    equals: Vec<u8>,
}

impl MessageFilter {
    pub fn parse(config: &MessageFilterConfig) -> Result<Self, String> {
        let equals = crate::framing::parse_bytes(&config.equals)?;
        if equals.is_empty() {
            return Err("must not be empty".to_owned());
        }
        Ok(Self {
            byte_from: config.byte_from,
            byte_to: config.byte_to,
            equals,
        })
    }

    pub fn matches(&self, message: &[u8]) -> bool {
        let to = self.byte_to.or_else(|| {
            Some(
                self.byte_from
                    .unwrap_or(0)
                    .saturating_add(self.equals.len() as i64),
            )
        });
        crate::convert::slice::byte_slice(message, self.byte_from, to) == self.equals.as_slice()
    }
}

fn converter(device: &DeviceConfig, cascade: &StrategyCascade) -> UplinkConverter {
    let keys = |keys: &[KeyConfig]| {
        keys.iter()
            .map(|k| KeySlice {
                key: k.key.as_str().into(),
                byte_from: k.byte_from,
                byte_to: k.byte_to,
                strategy: cascade
                    .resolve(device.report_strategy.as_ref(), k.report_strategy.as_ref()),
                value: key_value(k, device.encoding),
            })
            .collect()
    };
    UplinkConverter {
        device: Arc::new(DeviceIdentity {
            name: device.device_name.as_str().into(),
            device_type: device.device_type.as_str().into(),
        }),
        telemetry: keys(&device.telemetry),
        attributes: keys(&device.attributes),
        name_from: device
            .device_name_from
            .as_ref()
            .map(|s| identity_slice(s, device.encoding)),
        type_from: device
            .device_type_from
            .as_ref()
            .map(|s| identity_slice(s, device.encoding)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_value;
    use serde_json::json;

    fn router(config: serde_json::Value) -> Router {
        Router::new(
            &load_value(config).unwrap().config,
            ReportStrategy::global(None),
        )
    }

    #[test]
    fn overlapping_filters_feed_every_matching_device() {
        let router = router(json!({"socket": {}, "devices": [
            {"address": "*:*", "deviceName": "all", "telemetry": [{"key": "t"}]},
            {"address": "127.0.0.1:*", "deviceName": "local", "telemetry": [{"key": "t"}]},
            {"address": "10.0.0.1:*", "deviceName": "other", "telemetry": [{"key": "t"}]},
            {"address": "*:*", "deviceName": "all-again", "telemetry": [{"key": "u", "byteFrom": 1}]}
        ]}));
        let set = router.matching("127.0.0.1:4000");
        assert_eq!(set, [0, 1, 3]);
        let names: Vec<String> = router
            .convert(&set, b"ab", 0)
            .map(|c| c.device.name.to_string())
            .collect();
        assert_eq!(
            names,
            ["all", "local", "all-again"],
            "same filter twice: both devices get data"
        );
        assert!(router
            .matching("10.0.0.2:1")
            .iter()
            .all(|i| *i == 0 || *i == 3));
    }

    #[test]
    fn devices_without_keys_produce_nothing() {
        let router =
            router(json!({"socket": {}, "devices": [{"address": "*:*", "deviceName": "silent"}]}));
        let set = router.matching("1.2.3.4:5");
        assert_eq!(router.convert(&set, b"x", 0).count(), 0);
    }

    #[test]
    fn send_data_only_on_change_means_on_change() {
        let router = router(json!({"sendDataOnlyOnChange": true, "socket": {},
            "devices": [{"address": "*:*", "deviceName": "d", "telemetry": [{"key": "t"}]}]}));
        let strategy = router.devices()[0].converter.telemetry[0].strategy;
        assert_eq!(strategy.kind, ReportStrategyKind::OnChange);
    }
}
