//! Loading `socket.json`: format detection, the old-format adapter, deserialization with JSON paths
//! in errors, unknown-key warnings, and the checks serde cannot express.

mod legacy;
mod model;

pub use legacy::{is_legacy_format, to_current_format};
pub use model::*;

use std::path::Path;

use serde_json::Value;

/// A configuration problem, located by its JSON path (`devices[1].deviceName: missing`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {file}: {message}")]
    Read { file: String, message: String },
    #[error("invalid JSON at line {line} column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl ConfigError {
    fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A configuration that passed every check, with what the user should hear about it.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: ConnectorConfig,
    /// Unknown keys and accepted-but-ignored settings, one line each, with their JSON path.
    pub warnings: Vec<String>,
    /// The file was in the old flat format and was converted in memory.
    pub legacy_format: bool,
}

/// Reads and checks a `socket.json` file.
pub fn load_file(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        file: path.display().to_string(),
        message: e.to_string(),
    })?;
    load_str(&text)
}

/// Parses and checks the text of a `socket.json`.
pub fn load_str(text: &str) -> Result<LoadedConfig, ConfigError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    })?;
    load_value(value)
}

/// Checks an already parsed `socket.json` document (the operator passes the CR's embedded config).
/// The first problem is the error.
pub fn load_value(value: Value) -> Result<LoadedConfig, ConfigError> {
    check_value(value).map_err(|mut errors| errors.remove(0))
}

/// Like [`load_value`], with every problem serde lets through to the semantic checks (a document
/// that does not deserialize has one error, at its first problem).
pub fn check_value(value: Value) -> Result<LoadedConfig, Vec<ConfigError>> {
    if !value.is_object() {
        return Err(vec![ConfigError::invalid(
            "(root)",
            "expected a JSON object with \"socket\" and \"devices\"",
        )]);
    }
    let legacy_format = is_legacy_format(&value);
    let value = if legacy_format {
        to_current_format(value)
    } else {
        value
    };
    let user_path = |path: String| {
        if legacy_format {
            legacy::user_path(&path)
        } else {
            path
        }
    };

    let mut ignored = Vec::new();
    let mut on_ignored = |path: serde_ignored::Path<'_>| ignored.push(format_ignored_path(&path));
    let deserializer = serde_ignored::Deserializer::new(value, &mut on_ignored);
    let config: ConnectorConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let (path, message) = describe_serde_error(path, &e.into_inner().to_string());
        vec![ConfigError::invalid(user_path(path), message)]
    })?;

    let mut warnings: Vec<String> = ignored
        .into_iter()
        .map(|path| format!("{}: unknown key, ignored", user_path(path)))
        .collect();
    if legacy_format {
        warnings.push(
            "old socket connector configuration format detected; converted in memory \
             (`socket-connector migrate` rewrites the file)"
                .to_owned(),
        );
    }
    let mut errors = Vec::new();
    check(&config, &mut warnings, &mut errors);
    if !errors.is_empty() {
        return Err(errors
            .into_iter()
            .map(|error| match error {
                ConfigError::Invalid { path, message } => {
                    ConfigError::invalid(user_path(path), message)
                }
                other => other,
            })
            .collect());
    }
    Ok(LoadedConfig {
        config,
        warnings,
        legacy_format,
    })
}

/// The checks serde cannot express. The first problem is an error; oddities are warnings.
fn check(config: &ConnectorConfig, warnings: &mut Vec<String>, errors: &mut Vec<ConfigError>) {
    if let Some(size) = config
        .socket
        .buffer_size
        .or(config.socket.buffer_size_legacy)
    {
        if !(1..=MAX_BUFFER_SIZE).contains(&size) {
            let key = if config.socket.buffer_size.is_some() {
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
    check_client_mode(&config.socket, errors);
    if config.socket.tls.is_some()
        && (config.socket.kind == SocketKind::Udp || config.socket.mode == Some(SocketMode::Client))
    {
        errors.push(ConfigError::invalid(
            "socket.tls",
            "TLS applies to TCP server mode only",
        ));
    }
    if let Some(framing) = &config.socket.framing {
        if let Err((key, message)) = framing.validate() {
            errors.push(ConfigError::invalid(
                format!("socket.framing.{key}"),
                message,
            ));
        }
    }
    if config.socket.address.trim().is_empty() {
        errors.push(ConfigError::invalid("socket.address", "must not be empty"));
    }
    if let Some(strategy) = &config.report_strategy {
        if let Err(error) = check_report_strategy(strategy, "reportStrategy") {
            errors.push(error);
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
    for (index, device) in config.devices.iter().enumerate() {
        let path = format!("devices[{index}]");
        match device.filter_pattern() {
            None => errors.push(ConfigError::invalid(
                format!("{path}.address"),
                "missing: give the peer filter as \"address\" (or \"addressFilter\"), e.g. \"*:*\"",
            )),
            Some(pattern) if pattern.trim().is_empty() => errors.push(ConfigError::invalid(
                format!("{path}.address"),
                "must not be empty; \"*:*\" accepts every peer",
            )),
            Some(pattern) => {
                if crate::address_filter::AddressFilter::new(pattern).is_exact_only() {
                    warnings.push(format!(
                        "{path}.address: {pattern:?} is not a valid regular expression; \
                         only peers whose ip:port equals it exactly match"
                    ));
                }
            }
        }
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
            if let Err(error) = check_report_strategy(strategy, &format!("{path}.reportStrategy")) {
                errors.push(error);
            }
        }
        for (section, keys) in [
            ("telemetry", &device.telemetry),
            ("attributes", &device.attributes),
        ] {
            for (key_index, key) in keys.iter().enumerate() {
                let key_path = format!("{path}.{section}[{key_index}]");
                if key.key.is_empty() {
                    errors.push(ConfigError::invalid(
                        format!("{key_path}.key"),
                        "must not be empty",
                    ));
                }
                if let Some(strategy) = &key.report_strategy {
                    if let Err(error) =
                        check_report_strategy(strategy, &format!("{key_path}.reportStrategy"))
                    {
                        errors.push(error);
                    }
                }
                if let Err(error) = check_typed_key(key, &key_path) {
                    errors.push(error);
                }
            }
        }
        for (rpc_index, rpc) in device.server_side_rpc.iter().enumerate() {
            let rpc_path = format!("{path}.serverSideRpc[{rpc_index}]");
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
        }
        if let Some(filter) = &device.message_filter {
            if let Err(message) = crate::router::MessageFilter::parse(filter) {
                errors.push(ConfigError::invalid(
                    format!("{path}.messageFilter.equals"),
                    message,
                ));
            }
        }
        for (request_index, request) in device.attribute_requests.iter().enumerate() {
            if let Err(message) = crate::router::AttributeRequestRule::parse(request) {
                let (key, message) = message.split_once(": ").unwrap_or(("", &message));
                errors.push(ConfigError::invalid(
                    format!("{path}.attributeRequests[{request_index}].{key}"),
                    message.to_owned(),
                ));
            }
        }
        for (update_index, update) in device.attribute_updates.iter().enumerate() {
            if update.attribute_on_thingsboard.is_empty() {
                errors.push(ConfigError::invalid(
                    format!("{path}.attributeUpdates[{update_index}].attributeOnThingsBoard"),
                    "must not be empty",
                ));
            }
        }
    }
}

/// Client-mode keys need client mode (and TCP); their byte strings must parse.
fn check_client_mode(socket: &SocketConfig, errors: &mut Vec<ConfigError>) {
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
    for (key, value) in [
        ("handshake", &socket.handshake),
        ("pollPayload", &socket.poll_payload),
    ] {
        let Some(value) = value else { continue };
        if !client {
            errors.push(ConfigError::invalid(
                format!("socket.{key}"),
                "applies to mode \"client\" only",
            ));
        } else if let Err(message) = crate::framing::parse_bytes(value) {
            errors.push(ConfigError::invalid(format!("socket.{key}"), message));
        }
    }
    if socket.poll_interval_ms == Some(0) {
        errors.push(ConfigError::invalid(
            "socket.pollIntervalMs",
            "must be at least 1 millisecond",
        ));
    }
}

/// Typed-value settings must fit the type.
fn check_typed_key(key: &KeyConfig, path: &str) -> Result<(), ConfigError> {
    use crate::convert::typed::ValueType;
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
fn check_report_strategy(strategy: &ReportStrategyConfig, path: &str) -> Result<(), ConfigError> {
    let Some(kind) = strategy.kind else {
        if strategy.report_period.is_some() {
            return Err(ConfigError::invalid(
                format!("{path}.type"),
                format!(
                    "missing: reportPeriod needs a type, one of {}",
                    ReportStrategyKind::NAMES.join(", ")
                ),
            ));
        }
        return Ok(());
    };
    let periodic = matches!(
        kind,
        ReportStrategyKind::OnReportPeriod | ReportStrategyKind::OnChangeOrReportPeriod
    );
    match strategy.report_period {
        None if periodic => Err(ConfigError::invalid(
            format!("{path}.reportPeriod"),
            format!("missing: {kind} needs a period in milliseconds"),
        )),
        Some(0) => Err(ConfigError::invalid(
            format!("{path}.reportPeriod"),
            "must be at least 1 millisecond",
        )),
        _ => Ok(()),
    }
}

/// The uplink converter every ThingsBoard device uses unless told otherwise.
pub const DEFAULT_CONVERTER: &str = "BytesSocketUplinkConverter";
/// Largest accepted read size: the largest UDP datagram, rounded up.
pub const MAX_BUFFER_SIZE: u32 = 1 << 20;

/// Serde says "missing field `deviceName`" at the parent's path; users want the field's path.
fn describe_serde_error(path: String, message: &str) -> (String, String) {
    let message = strip_position(message);
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        let path = if path == "." || path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        };
        return (path, "missing".to_owned());
    }
    let path = if path == "." || path.is_empty() {
        "(root)".to_owned()
    } else {
        path
    };
    (path, message)
}

/// serde_json appends " at line L column C" to messages; paths locate errors better here.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

fn format_ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", format_ignored_path(parent)),
        Path::Map { parent, key } => {
            let parent = format_ignored_path(parent);
            if parent.is_empty() {
                key.to_string()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => format_ignored_path(parent),
    }
}

#[cfg(test)]
mod tests;
