//! What ThingsBoard sends (input: the MQTT topic, a newline, the payload) through the downlink
//! parser, then through what the connector writes to devices: Python `str()` of values encoded in
//! every encoding, `json.dumps()` of attribute responses (must be JSON), the `set` / `socket_set`
//! RPC params, ThingsBoard's session limits (rate-limit windows), the gateway device's shared
//! attributes as remote configuration (an edit built, loaded and reported back). The topic line is also read as an attribute-request expression applied to the
//! payload. Nothing may panic.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use connector_core::config::Encoding;
use connector_core::convert::text;
use connector_core::downlink::expression::{KeyNames, RequestMatcher};
use connector_core::downlink::messages::{parse, Incoming};
use connector_core::downlink::{python, rpc};
use connector_core::load::load_value;
use connector_core::thingsboard::limits::{RateLimiter, SessionLimits};
use connector_core::thingsboard::remote_config::{
    connector_edit, connector_report, shared_changes, ConnectorIdentity, SharedChange,
};

const ENCODINGS: &[Encoding] = Encoding::ALL;

/// What the connector writes to a device for a value (attribute update, RPC params).
fn write_to_device(value: &Value) {
    let text = python::str(value);
    for encoding in ENCODINGS {
        let _ = text::encode(&text, *encoding);
    }
}

fn json_dumps(value: &Value) {
    let dumped = python::json_dumps(value);
    if let Err(e) = serde_json::from_str::<Value>(&dumped) {
        panic!("json_dumps wrote invalid JSON {dumped:?}: {e}");
    }
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let topic = String::from_utf8_lossy(&data[..split]);
    let payload = data.get(split + 1..).unwrap_or_default();

    match parse(&topic, payload) {
        Ok(Incoming::AttributeUpdate(update)) => {
            for value in update.data.values() {
                write_to_device(value);
            }
        }
        Ok(Incoming::AttributeResponse(response)) => json_dumps(&response.value),
        Ok(Incoming::DeviceRpc(request)) => {
            write_to_device(&request.params);
            let _ = rpc::set_fields(&request.params);
            let _ = rpc::RpcOutcome::Result(request.params).data();
        }
        Ok(Incoming::ConnectorRpc(request)) => {
            let _ = rpc::set_fields(&rpc::strip_device_name(&request.params));
            let _ = request.method.split_once('_');
        }
        Ok(Incoming::SessionLimits(value)) => {
            json_dumps(&value);
            if let Ok(limits) = SessionLimits::parse(&value) {
                for windows in [
                    &limits.messages,
                    &limits.telemetry_messages,
                    &limits.telemetry_datapoints,
                ] {
                    let mut limiter = RateLimiter::new(windows, Duration::ZERO);
                    let _ = limiter.delay(1.0, Duration::ZERO);
                    limiter.take(1.0, Duration::ZERO);
                    let _ = limiter.delay(1e9, Duration::from_millis(1500));
                }
            }
        }
        Ok(Incoming::GatewayShared(shared)) => {
            for change in shared_changes(&shared.attributes) {
                if let SharedChange::Connector { value, .. } = change {
                    if let Ok(edit) = connector_edit(&value) {
                        let _ = load_value(edit.document.clone());
                        let identity = ConnectorIdentity::new(&edit.name, "socket.json", &edit.document);
                        json_dumps(&connector_report(&identity, &edit.document, edit.ts));
                        json_dumps(&edit.echo);
                    }
                }
            }
        }
        Ok(Incoming::Ignored) | Err(_) => {}
    }

    // The topic line as a configured expression, the payload as a device message.
    for constant in [false, true] {
        if let Ok(matcher) = RequestMatcher::parse(&topic, constant) {
            let _ = matcher.matches(payload);
        }
        if let Ok(names) = KeyNames::parse(&topic, constant) {
            let _ = names.keys(payload);
        }
    }
    for encoding in ENCODINGS {
        let _ = text::encode(&topic, *encoding);
        let _ = text::decode(payload, *encoding);
    }
});
