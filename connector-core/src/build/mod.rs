//! Build is validation: a parsed `socket.json` becomes the runtime types (the device table, the
//! framer factory, the downlink rules, the client-mode plan) in one pass that reports every
//! problem serde cannot see, each with its JSON path. Nothing downstream parses configuration
//! again.

mod device;
#[cfg(test)]
mod tests;

pub use device::{
    AttributeRequestRule, AttributeUpdateRule, Device, DeviceSet, DeviceTable, DownlinkRules,
    MessageFilter, RpcRule,
};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::address_filter::AddressFilter;
use crate::config::ValueType;
use crate::config::{
    ConfigError, ConnectorConfig, DeviceConfig, Encoding, IdentitySliceConfig, KeyConfig,
    ReportStrategyConfig, ReportStrategyKind, SocketConfig, SocketKind, SocketMode,
    StrategyCascade, DEFAULT_CONVERTER, MAX_BUFFER_SIZE,
};
use crate::convert::typed::TypedDecoder;
use crate::convert::{DeviceIdentity, IdentitySlice, KeySlice, KeyValue, UplinkConverter};
use crate::framing::FramerFactory;

/// A configuration turned into what the running connector uses.
#[derive(Debug)]
pub struct Built {
    pub devices: DeviceTable,
    /// `None`: each read or datagram is one message, as in ThingsBoard.
    pub framing: Option<FramerFactory>,
    /// Bytes read at most per read or datagram.
    pub read_size: usize,
    /// UDP: the kernel receive buffer to ask for (`SO_RCVBUF`).
    pub receive_buffer: usize,
    pub socket_kind: SocketKind,
    /// Set in client mode (the connector connects out to a device server).
    pub client: Option<ClientPlan>,
    /// `rpcSetAllow`: where `set` may write besides the devices' peers.
    pub rpc_set_allow: Vec<AddressFilter>,
    /// Oddities the user should hear about, with their JSON paths.
    pub warnings: Vec<String>,
}

/// Client mode: what is sent to the device server, and how reconnects are paced.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientPlan {
    pub handshake: Option<Bytes>,
    /// Bytes sent every interval while connected.
    pub poll: Option<(Bytes, Duration)>,
    /// First reconnect delay; it doubles up to 30 s.
    pub reconnect_delay: Duration,
}

const DEFAULT_POLL_INTERVAL_MS: u64 = 1000;
const DEFAULT_RECONNECT_DELAY_MS: u64 = 500;

/// Checks everything serde cannot express and builds the runtime types. Every error is
/// returned, in file order.
pub fn build(config: &ConnectorConfig) -> Result<Built, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    check_buffer_size(&config.socket, &mut errors);
    check_receive_buffer_size(&config.socket, &mut errors);
    let client = client_plan(&config.socket, &mut errors);
    if config.socket.tls.is_some()
        && (config.socket.kind == SocketKind::Udp || config.socket.mode == Some(SocketMode::Client))
    {
        errors.push(ConfigError::invalid(
            "socket.tls",
            "TLS applies to TCP server mode only",
        ));
    }
    let framing = match config.socket.framing.as_ref().map(FramerFactory::new) {
        Some(Err((key, message))) => {
            errors.push(ConfigError::invalid(
                format!("socket.framing.{key}"),
                message,
            ));
            None
        }
        Some(Ok(factory)) => factory,
        None => None,
    };
    if config.socket.address.trim().is_empty() {
        errors.push(ConfigError::invalid("socket.address", "must not be empty"));
    }
    if let Some(strategy) = &config.report_strategy {
        check_report_strategy(strategy, "reportStrategy", &mut errors);
    }
    for (index, pattern) in config.rpc_set_allow.iter().enumerate() {
        if pattern.trim().is_empty() {
            errors.push(ConfigError::invalid(
                format!("rpcSetAllow[{index}]"),
                "must not be empty",
            ));
        }
    }
    if config.send_data_only_on_change == Some(true) {
        let note = if config.report_strategy.is_some() {
            "ignored because reportStrategy is set"
        } else {
            "applied as reportStrategy {\"type\": \"ON_CHANGE\"}"
        };
        warnings.push(format!("sendDataOnlyOnChange: {note}"));
    }
    let connector_level = config.report_strategy.clone().or_else(|| {
        (config.send_data_only_on_change == Some(true)).then_some(ReportStrategyConfig {
            kind: Some(ReportStrategyKind::OnChange),
            report_period: None,
            ttl: None,
            aggregation_function: None,
        })
    });
    let cascade = StrategyCascade::new(connector_level.as_ref());
    let devices = config
        .devices
        .iter()
        .enumerate()
        .filter_map(|(index, device)| {
            let path = format!("devices[{index}]");
            build_device(device, &path, &cascade, &mut warnings, &mut errors)
        })
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Built {
        devices: DeviceTable::new(devices),
        framing,
        read_size: config.socket.read_size(),
        receive_buffer: config
            .socket
            .receive_buffer_size
            .map_or(DEFAULT_RECEIVE_BUFFER, |size| size as usize),
        socket_kind: config.socket.kind,
        client,
        rpc_set_allow: config
            .rpc_set_allow
            .iter()
            .map(|pattern| AddressFilter::new(pattern))
            .collect(),
        warnings,
    })
}

impl Built {
    /// Whether the built-in `set` RPC may write to `peer` (`ip:port`): a configured device's
    /// address filter matches it, or `rpcSetAllow` does.
    pub fn set_allowed(&self, peer: &str) -> bool {
        !self.devices.matching(peer).is_empty()
            || self.rpc_set_allow.iter().any(|filter| filter.matches(peer))
    }
}

fn check_buffer_size(socket: &SocketConfig, errors: &mut Vec<ConfigError>) {
    let Some(size) = socket.buffer_size.or(socket.buffer_size_legacy) else {
        return;
    };
    if !(1..=MAX_BUFFER_SIZE).contains(&size) {
        let key = if socket.buffer_size.is_some() {
            "socket.bufferSize"
        } else {
            "socket.buffer_size"
        };
        errors.push(ConfigError::invalid(
            key,
            format!("must be between 1 and {MAX_BUFFER_SIZE}, got {size}"),
        ));
    }
}

/// Default of `socket.receiveBufferSize`: a UDP burst of thousands of datagrams waits in the
/// kernel instead of being dropped there (Linux's own default, ~208 KiB, held about 20 ms of
/// 1,000 devices x 10 datagrams/s; docs/benchmarks.md).
pub const DEFAULT_RECEIVE_BUFFER: usize = 4 << 20;
const RECEIVE_BUFFER_RANGE: std::ops::RangeInclusive<u32> = 4096..=(256 << 20);

fn check_receive_buffer_size(socket: &SocketConfig, errors: &mut Vec<ConfigError>) {
    let Some(size) = socket.receive_buffer_size else {
        return;
    };
    if socket.kind != SocketKind::Udp {
        errors.push(ConfigError::invalid(
            "socket.receiveBufferSize",
            "applies to UDP only (a TCP connection's buffer is the kernel's to size)",
        ));
    } else if !RECEIVE_BUFFER_RANGE.contains(&size) {
        errors.push(ConfigError::invalid(
            "socket.receiveBufferSize",
            format!(
                "must be between {} and {} bytes, got {size}",
                RECEIVE_BUFFER_RANGE.start(),
                RECEIVE_BUFFER_RANGE.end()
            ),
        ));
    }
}

/// Client-mode keys need client mode (and TCP); their byte strings must parse.
fn client_plan(socket: &SocketConfig, errors: &mut Vec<ConfigError>) -> Option<ClientPlan> {
    let client = socket.mode == Some(SocketMode::Client);
    if client && socket.kind == SocketKind::Udp {
        errors.push(ConfigError::invalid(
            "socket.mode",
            "client mode connects over TCP; use type TCP",
        ));
    }
    if client && socket.port == 0 {
        errors.push(ConfigError::invalid(
            "socket.port",
            "client mode needs the device server's port",
        ));
    }
    let mut bytes = |key: &str, value: &Option<String>| -> Option<Bytes> {
        let value = value.as_ref()?;
        if !client {
            errors.push(ConfigError::invalid(
                format!("socket.{key}"),
                "applies to mode \"client\" only",
            ));
            return None;
        }
        match crate::framing::parse_bytes(value) {
            Ok(bytes) => Some(Bytes::from(bytes)),
            Err(message) => {
                errors.push(ConfigError::invalid(format!("socket.{key}"), message));
                None
            }
        }
    };
    let handshake = bytes("handshake", &socket.handshake);
    let poll_payload = bytes("pollPayload", &socket.poll_payload);
    if socket.poll_interval_ms == Some(0) {
        errors.push(ConfigError::invalid(
            "socket.pollIntervalMs",
            "must be at least 1 millisecond",
        ));
    }
    client.then(|| ClientPlan {
        handshake,
        poll: poll_payload.map(|payload| {
            let interval = socket.poll_interval_ms.unwrap_or(DEFAULT_POLL_INTERVAL_MS);
            (payload, Duration::from_millis(interval))
        }),
        reconnect_delay: Duration::from_millis(
            socket
                .reconnect_delay_ms
                .unwrap_or(DEFAULT_RECONNECT_DELAY_MS)
                .max(10),
        ),
    })
}

fn build_device(
    device: &DeviceConfig,
    path: &str,
    cascade: &StrategyCascade,
    warnings: &mut Vec<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<Device> {
    let errors_before = errors.len();
    let filter = match device.filter_pattern() {
        None => {
            errors.push(ConfigError::invalid(
                format!("{path}.address"),
                "missing: give the peer filter as \"address\" (or \"addressFilter\"), e.g. \"*:*\"",
            ));
            None
        }
        Some(pattern) if pattern.trim().is_empty() => {
            errors.push(ConfigError::invalid(
                format!("{path}.address"),
                "must not be empty; \"*:*\" accepts every peer",
            ));
            None
        }
        Some(pattern) => {
            let filter = AddressFilter::new(pattern);
            if filter.is_exact_only() {
                warnings.push(format!(
                    "{path}.address: {pattern:?} is not a valid regular expression; \
                     only peers whose ip:port equals it exactly match"
                ));
            }
            Some(filter)
        }
    };
    if device.address_filter.is_some() && device.address.is_some() {
        warnings.push(format!(
            "{path}: both address and addressFilter given; addressFilter is used"
        ));
    }
    if device.device_name.trim().is_empty() {
        errors.push(ConfigError::invalid(
            format!("{path}.deviceName"),
            "must not be empty",
        ));
    }
    if let Some(converter) = &device.converter {
        if converter != DEFAULT_CONVERTER {
            errors.push(ConfigError::invalid(
                format!("{path}.converter"),
                format!(
                    "unsupported converter {converter:?}; only {DEFAULT_CONVERTER} exists here"
                ),
            ));
        }
    }
    if let Some(strategy) = &device.report_strategy {
        check_report_strategy(strategy, &format!("{path}.reportStrategy"), errors);
    }
    let mut keys = |section: &str, configs: &[KeyConfig]| -> Vec<KeySlice> {
        configs
            .iter()
            .enumerate()
            .map(|(index, key)| {
                let key_path = format!("{path}.{section}[{index}]");
                if key.key.is_empty() {
                    errors.push(ConfigError::invalid(
                        format!("{key_path}.key"),
                        "must not be empty",
                    ));
                }
                if let Some(strategy) = &key.report_strategy {
                    check_report_strategy(strategy, &format!("{key_path}.reportStrategy"), errors);
                }
                if let Err(error) = check_typed_key(key, &key_path) {
                    errors.push(error);
                }
                KeySlice {
                    key: key.key.as_str().into(),
                    byte_from: key.byte_from,
                    byte_to: key.byte_to,
                    strategy: cascade.resolve(
                        device.report_strategy.as_ref(),
                        key.report_strategy.as_ref(),
                    ),
                    value: key_value(key, device.encoding),
                }
            })
            .collect()
    };
    let telemetry = keys("telemetry", &device.telemetry);
    let attributes = keys("attributes", &device.attributes);
    let rpc = device
        .server_side_rpc
        .iter()
        .enumerate()
        .map(|(index, rpc)| {
            let rpc_path = format!("{path}.serverSideRpc[{index}]");
            if rpc.method_rpc.is_empty() {
                errors.push(ConfigError::invalid(
                    format!("{rpc_path}.methodRPC"),
                    "must not be empty",
                ));
            }
            if let Some(processing) = &rpc.method_processing {
                if !processing.eq_ignore_ascii_case("write") {
                    errors.push(ConfigError::invalid(
                        format!("{rpc_path}.methodProcessing"),
                        format!("unsupported value {processing:?}; only \"write\" exists"),
                    ));
                }
            }
            if rpc.response_timeout_ms == Some(0) {
                errors.push(ConfigError::invalid(
                    format!("{rpc_path}.responseTimeoutMs"),
                    "must be at least 1 millisecond",
                ));
            }
            RpcRule {
                method: rpc.method_rpc.clone(),
                with_response: rpc.with_response,
                encoding: rpc.encoding.unwrap_or(device.encoding),
                response_timeout: rpc.response_timeout_ms.map(Duration::from_millis),
            }
        })
        .collect();
    let message_filter =
        device
            .message_filter
            .as_ref()
            .and_then(|filter| match MessageFilter::parse(filter) {
                Ok(filter) => Some(filter),
                Err(message) => {
                    errors.push(ConfigError::invalid(
                        format!("{path}.messageFilter.equals"),
                        message,
                    ));
                    None
                }
            });
    let attribute_requests = device
        .attribute_requests
        .iter()
        .enumerate()
        .filter_map(
            |(index, request)| match AttributeRequestRule::parse(request) {
                Ok(rule) => Some(rule),
                Err((key, message)) => {
                    errors.push(ConfigError::invalid(
                        format!("{path}.attributeRequests[{index}].{key}"),
                        message,
                    ));
                    None
                }
            },
        )
        .collect();
    let attribute_updates = device
        .attribute_updates
        .iter()
        .enumerate()
        .map(|(index, update)| {
            if update.attribute_on_thingsboard.is_empty() {
                errors.push(ConfigError::invalid(
                    format!("{path}.attributeUpdates[{index}].attributeOnThingsBoard"),
                    "must not be empty",
                ));
            }
            AttributeUpdateRule {
                attribute: update.attribute_on_thingsboard.clone(),
                encoding: update.encoding.unwrap_or(device.encoding),
            }
        })
        .collect();
    if errors.len() > errors_before {
        return None;
    }
    Some(Device {
        filter: filter?,
        converter: UplinkConverter {
            device: Arc::new(DeviceIdentity {
                name: device.device_name.as_str().into(),
                device_type: device.device_type.as_str().into(),
            }),
            telemetry,
            attributes,
            name_from: device
                .device_name_from
                .as_ref()
                .map(|s| identity_slice(s, device.encoding)),
            type_from: device
                .device_type_from
                .as_ref()
                .map(|s| identity_slice(s, device.encoding)),
        },
        attribute_requests,
        message_filter,
        downlink: DownlinkRules {
            encoding: device.encoding,
            attribute_updates,
            rpc,
        },
    })
}

/// Text in the device's encoding unless the key asks for a type.
fn key_value(key: &KeyConfig, encoding: Encoding) -> KeyValue {
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

/// Typed-value settings must fit the type.
fn check_typed_key(key: &KeyConfig, path: &str) -> Result<(), ConfigError> {
    let Some(value_type) = key.value_type else {
        for (name, set) in [
            ("byteOrder", key.byte_order.is_some()),
            ("scale", key.scale.is_some()),
            ("offset", key.offset.is_some()),
            ("bitOffset", key.bit_offset.is_some()),
            ("bitLength", key.bit_length.is_some()),
        ] {
            if set {
                return Err(ConfigError::invalid(
                    format!("{path}.{name}"),
                    "needs a numeric \"type\" (e.g. \"uint16\"); without type the value is a string",
                ));
            }
        }
        return Ok(());
    };
    let numeric = !matches!(
        value_type,
        ValueType::String | ValueType::Hex | ValueType::Bool
    );
    if !numeric && (key.scale.is_some() || key.offset.is_some()) {
        return Err(ConfigError::invalid(
            format!("{path}.scale"),
            "scale and offset apply to numbers only",
        ));
    }
    if value_type == ValueType::Bits {
        let length = key.bit_length.unwrap_or(1);
        if !(1..=64).contains(&length) {
            return Err(ConfigError::invalid(
                format!("{path}.bitLength"),
                format!("must be between 1 and 64, got {length}"),
            ));
        }
    }
    Ok(())
}

/// A report strategy object is either empty (not specified, as in ThingsBoard) or complete.
fn check_report_strategy(
    strategy: &ReportStrategyConfig,
    path: &str,
    errors: &mut Vec<ConfigError>,
) {
    let Some(kind) = strategy.kind else {
        if strategy.report_period.is_some() {
            errors.push(ConfigError::invalid(
                format!("{path}.type"),
                format!(
                    "missing: reportPeriod needs a type, one of {}",
                    ReportStrategyKind::NAMES.join(", ")
                ),
            ));
        }
        return;
    };
    let periodic = matches!(
        kind,
        ReportStrategyKind::OnReportPeriod | ReportStrategyKind::OnChangeOrReportPeriod
    );
    match strategy.report_period {
        None if periodic => errors.push(ConfigError::invalid(
            format!("{path}.reportPeriod"),
            format!("missing: {kind} needs a period in milliseconds"),
        )),
        Some(0) => errors.push(ConfigError::invalid(
            format!("{path}.reportPeriod"),
            "must be at least 1 millisecond",
        )),
        _ => {}
    }
}
