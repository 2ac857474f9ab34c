//! `socket-connector validate` and `migrate`: check a `socket.json` before deploying it, see what
//! sample frames would publish, and rewrite old-format files. Pure: text in, report out.

use std::fmt::Write;

use serde_json::{json, Value};

use connector_core::address_filter::peer_string;
use connector_core::config::{self, AttributeScope, ConnectorConfig, Encoding};
use connector_core::load::check_value;
use connector_core::route::{route, Routed};
use connector_core::thingsboard::api::UplinkBatch;

/// The outcome of `validate`: printable lines, and whether the file is usable.
pub struct Report {
    pub ok: bool,
    pub text: String,
}

/// Checks `text` (a socket.json), lists what ThingsBoard would ignore or mis-handle, and decodes
/// each sample (one message each) as the devices matching `peer` would publish it.
pub fn validate(text: &str, samples: &[Vec<u8>], peer: Option<std::net::SocketAddr>) -> Report {
    let mut out = String::new();
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => {
            let _ = writeln!(
                out,
                "error: invalid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            );
            return Report {
                ok: false,
                text: out,
            };
        }
    };
    let loaded = match check_value(value) {
        Ok(loaded) => loaded,
        Err(errors) => {
            for error in errors {
                let _ = writeln!(out, "error: {error}");
            }
            return Report {
                ok: false,
                text: out,
            };
        }
    };
    let _ = writeln!(out, "ok: {} device(s)", loaded.config.devices.len());
    for warning in &loaded.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    for note in thingsboard_notes(&loaded.config) {
        let _ = writeln!(out, "thingsboard: {note}");
    }
    let devices = &loaded.built.devices;
    let peer_text = peer.map(peer_string);
    let set: Vec<usize> = match &peer_text {
        Some(peer) => devices.matching(peer),
        None => (0..devices.len()).collect(),
    };
    if let Some(peer) = &peer_text {
        if set.is_empty() {
            let _ = writeln!(
                out,
                "peer {peer}: no device's address filter matches; the connection would be closed"
            );
        }
    }
    for (index, sample) in samples.iter().enumerate() {
        let _ = writeln!(out, "sample {} ({} bytes):", index + 1, sample.len());
        let mut batch = UplinkBatch::new();
        for (_, routed) in route(devices, &set, sample, 0) {
            match routed {
                Routed::AttributeRequests(requests) => {
                    for request in requests {
                        let client = request.scope == AttributeScope::Client;
                        let request = json!({"keys": request.keys, "device": &*request.device, "client": client});
                        let _ = writeln!(out, "  v1/gateway/attributes/request {request}");
                    }
                }
                Routed::Data(data) => batch.add(data),
            }
        }
        for payload in batch.attributes_payloads(usize::MAX) {
            let _ = writeln!(
                out,
                "  v1/gateway/attributes {}",
                String::from_utf8_lossy(&payload)
            );
        }
        for payload in batch.telemetry_payloads(usize::MAX) {
            let _ = writeln!(
                out,
                "  v1/gateway/telemetry {}",
                String::from_utf8_lossy(&payload)
            );
        }
    }
    Report {
        ok: true,
        text: out,
    }
}

/// Where ThingsBoard's own socket connector would behave differently with this file.
pub fn thingsboard_notes(config: &ConnectorConfig) -> Vec<String> {
    let mut notes = Vec::new();
    if config.socket.buffer_size.is_some() && config.socket.buffer_size_legacy.is_none() {
        notes.push("socket.bufferSize is ignored by ThingsBoard (it reads buffer_size); its buffer is always 1024 bytes".to_owned());
    }
    if config.socket.framing.is_some() {
        notes.push(
            "socket.framing is an extension; ThingsBoard treats every read as one message"
                .to_owned(),
        );
    }
    if config.socket.address.trim() == "127.0.0.1" {
        notes.push(
            "socket.address 127.0.0.1 accepts local peers only (in a container use 0.0.0.0)"
                .to_owned(),
        );
    }
    if config.send_data_only_on_change.is_some() {
        notes.push("sendDataOnlyOnChange is ignored by ThingsBoard".to_owned());
    }
    let mut filters: Vec<&str> = Vec::new();
    for (i, device) in config.devices.iter().enumerate() {
        let path = format!("devices[{i}]");
        if let Some(pattern) = device.filter_pattern() {
            if filters.contains(&pattern) {
                notes.push(format!("{path}: another device has the same address filter {pattern:?}; ThingsBoard keeps only the last of them"));
            }
            filters.push(pattern);
            let port = pattern.rsplit(':').next().unwrap_or_default();
            if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) {
                notes.push(format!("{path}.address: {pattern:?} matches one source port; TCP clients usually send from a random port (use \"ip:*\")"));
            }
        }
        if matches!(
            device.encoding,
            Encoding::Utf16
                | Encoding::Utf16Le
                | Encoding::Utf16Be
                | Encoding::Utf32
                | Encoding::Utf32Le
                | Encoding::Utf32Be
        ) {
            notes.push(format!("{path}.encoding: ThingsBoard strips NUL bytes before decoding {}, which garbles the text", device.encoding));
        }
        if device.message_filter.is_some()
            || device.device_name_from.is_some()
            || device.device_type_from.is_some()
        {
            notes.push(format!("{path}: messageFilter/deviceNameFrom/deviceTypeFrom are extensions ThingsBoard does not know"));
        }
        for (section, keys) in [
            ("telemetry", &device.telemetry),
            ("attributes", &device.attributes),
        ] {
            for (k, key) in keys.iter().enumerate() {
                if key.value_type.is_some() {
                    notes.push(format!("{path}.{section}[{k}].type is an extension; ThingsBoard sends every value as a string"));
                }
            }
        }
        for (u, update) in device.attribute_updates.iter().enumerate() {
            if update.encoding.is_some() {
                notes.push(format!("{path}.attributeUpdates[{u}].encoding is ignored by ThingsBoard (it uses the device's encoding and always writes over TCP)"));
            }
        }
        for (r, rpc) in device.server_side_rpc.iter().enumerate() {
            if rpc.method_processing.is_none() {
                notes.push(format!("{path}.serverSideRpc[{r}] has no methodProcessing: ThingsBoard silently does nothing for this method (here it means write)"));
            }
            if rpc.encoding.is_some() {
                notes.push(format!(
                    "{path}.serverSideRpc[{r}].encoding is ignored by ThingsBoard"
                ));
            }
            if rpc.response_timeout_ms.is_some() {
                notes.push(format!(
                    "{path}.serverSideRpc[{r}].responseTimeoutMs is an extension"
                ));
            }
        }
        for (q, request) in device.attribute_requests.iter().enumerate() {
            let both_bounds = request
                .request_expression
                .trim()
                .strip_prefix("${[")
                .and_then(|rest| rest.split(']').next())
                .is_some_and(|slice| {
                    slice.split_once(':').is_some_and(|(a, b)| {
                        !a.trim().is_empty() && !b.trim().is_empty() && !b.contains('-')
                    })
                });
            if !both_bounds {
                notes.push(format!("{path}.attributeRequests[{q}].requestExpression: ThingsBoard's converter thread dies on this form; only ${{[from:to]==text}} with both bounds works there"));
            }
        }
    }
    notes
}

/// Rewrites an old-format file into the current format (pretty JSON). A current file comes back
/// unchanged in content.
pub fn migrate(text: &str) -> Result<(String, bool), String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let legacy = config::is_legacy_format(&value);
    let converted = if legacy {
        config::to_current_format(value)
    } else {
        value
    };
    connector_core::load::load_value(converted.clone()).map_err(|e| e.to_string())?;
    let mut out = serde_json::to_string_pretty(&converted).map_err(|e| e.to_string())?;
    out.push('\n');
    Ok((out, legacy))
}

/// Hex digits (spaces and `0x` allowed) to bytes, for `--sample`.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: String = text
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    connector_core::convert::text::encode(&digits, Encoding::Hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASIC: &str = include_str!("../../examples/thingsboard/basic.json");
    const OLD: &str = include_str!("../../examples/thingsboard/old-format.json");
    const ADVANCED: &str = include_str!("../../examples/thingsboard/advanced.json");

    #[test]
    fn samples_decode_to_the_exact_payloads() {
        let report = validate(BASIC, &[b"2345".to_vec()], None);
        assert!(report.ok);
        assert!(
            report
                .text
                .contains(r#"v1/gateway/attributes {"Device Example":{"name":"2345","num":"45"}}"#),
            "{}",
            report.text
        );
        assert!(report.text.contains(r#"v1/gateway/telemetry {"Device Example":[{"ts":0,"values":{"temp":"2345","hum":"23"}}]}"#), "{}", report.text);
        assert!(report
            .text
            .contains("thingsboard: socket.bufferSize is ignored by ThingsBoard"));
    }

    #[test]
    fn every_error_is_listed_with_its_path() {
        let bad = r#"{"socket": {"bufferSize": 0}, "devices": [{"deviceName": ""}, {"address": "*:*", "deviceName": "b", "serverSideRpc": [{"methodRPC": "m", "methodProcessing": "read"}]}]}"#;
        let report = validate(bad, &[], None);
        assert!(!report.ok);
        for expected in [
            "error: socket.bufferSize: must be between 1 and 1048576, got 0",
            "error: devices[0].address: missing",
            "error: devices[0].deviceName: must not be empty",
            "error: devices[1].serverSideRpc[0].methodProcessing: unsupported value \"read\"",
        ] {
            assert!(
                report.text.contains(expected),
                "missing {expected:?} in\n{}",
                report.text
            );
        }
    }

    #[test]
    fn thingsboard_pitfalls_are_listed() {
        let report = validate(
            ADVANCED,
            &[b"atr sharedAttribute sharedAttribute1".to_vec()],
            Some("127.0.0.1:5000".parse().unwrap()),
        );
        assert!(report.ok);
        assert!(report
            .text
            .contains("attributeUpdates[0].encoding is ignored by ThingsBoard"));
        assert!(report.text.contains(r#"v1/gateway/attributes/request {"keys":["sharedAttribute","sharedAttribute1"],"device":"Device Example","client":false}"#), "{}", report.text);
        let stranger = validate(ADVANCED, &[], Some("10.0.0.1:5000".parse().unwrap()));
        assert!(stranger.text.contains("no device's address filter matches"));
    }

    #[test]
    fn migrate_rewrites_old_files_and_keeps_current_ones() {
        let (migrated, legacy) = migrate(OLD).unwrap();
        assert!(legacy);
        let value: Value = serde_json::from_str(&migrated).unwrap();
        assert_eq!(value["socket"]["port"], 50000);
        assert_eq!(value["devices"][0]["address"], "*:*");
        assert!(value.get("type").is_none());
        let (same, legacy) = migrate(BASIC).unwrap();
        assert!(!legacy);
        assert_eq!(
            serde_json::from_str::<Value>(&same).unwrap(),
            serde_json::from_str::<Value>(BASIC).unwrap()
        );
        assert!(migrate(r#"{"devices": [{"deviceName": "x"}]}"#).is_err());
    }

    #[test]
    fn hex_samples() {
        assert_eq!(parse_hex("0x88 01 ff").unwrap(), [0x88, 0x01, 0xff]);
        assert!(parse_hex("zz").is_err());
    }
}
