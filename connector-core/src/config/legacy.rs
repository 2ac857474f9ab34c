//! The old flat `socket.json` format, converted the way ThingsBoard's `BackwardCompatibilityAdapter`
//! does: a file without a top-level `socket` object is old.

use serde_json::{Map, Value};

/// Keys that the old format keeps at the top level and the current one under `socket`.
const SOCKET_KEYS: [&str; 5] = ["type", "address", "port", "bufferSize", "buffer_size"];

/// ThingsBoard's test: the top-level `socket` key is absent.
pub fn is_legacy_format(config: &Value) -> bool {
    config
        .as_object()
        .is_some_and(|o| !o.contains_key("socket"))
}

/// Rewrites an old-format document into the current format. Values are moved, never reinterpreted,
/// so a wrong value still fails later with its (mapped back) path.
pub fn to_current_format(mut config: Value) -> Value {
    let Some(root) = config.as_object_mut() else {
        return config;
    };
    let mut socket = Map::new();
    for key in SOCKET_KEYS {
        if let Some(value) = root.remove(key) {
            socket.insert(key.to_owned(), value);
        }
    }
    root.insert("socket".to_owned(), Value::Object(socket));
    if let Some(devices) = root.get_mut("devices").and_then(Value::as_array_mut) {
        for device in devices.iter_mut().filter_map(Value::as_object_mut) {
            // ThingsBoard moves a truthy addressFilter to address.
            if device.get("addressFilter").is_some_and(is_truthy) {
                if let Some(filter) = device.remove("addressFilter") {
                    device.insert("address".to_owned(), filter);
                }
            }
            if let Some(requests) = device
                .get_mut("attributeRequests")
                .and_then(Value::as_array_mut)
            {
                for request in requests.iter_mut().filter_map(Value::as_object_mut) {
                    for key in ["requestExpressionSource", "attributeNameExpressionSource"] {
                        request.insert(key.to_owned(), Value::from("expression"));
                    }
                }
            }
        }
    }
    config
}

/// Maps a path in the converted document back to the path in the user's old-format file.
pub fn user_path(path: &str) -> String {
    match path.strip_prefix("socket.") {
        Some(rest) if SOCKET_KEYS.iter().any(|key| rest.starts_with(key)) => rest.to_owned(),
        _ => path.to_owned(),
    }
}

fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converts_like_the_thingsboard_adapter() {
        let old = json!({
            "name": "TCP Connector Example", "type": "UDP", "address": "0.0.0.0", "port": 5005,
            "bufferSize": 512,
            "devices": [
                {"addressFilter": "*:*", "address": "ignored", "deviceName": "A",
                 "attributeRequests": [{"type": "shared", "requestExpression": "${[0:3]==atr}",
                                        "attributeNameExpression": "[4:]"}]},
                {"addressFilter": "", "address": "10.0.0.1:*", "deviceName": "B"}
            ]
        });
        assert!(is_legacy_format(&old));
        let new = to_current_format(old);
        assert_eq!(
            new["socket"],
            json!({"type": "UDP", "address": "0.0.0.0", "port": 5005, "bufferSize": 512})
        );
        assert!(new.get("type").is_none());
        assert_eq!(new["devices"][0]["address"], "*:*");
        assert!(new["devices"][0].get("addressFilter").is_none());
        assert_eq!(
            new["devices"][0]["attributeRequests"][0]["requestExpressionSource"],
            "expression"
        );
        // An empty addressFilter is falsy in Python: it stays and address is kept.
        assert_eq!(new["devices"][1]["address"], "10.0.0.1:*");
        assert!(!is_legacy_format(&new));
    }

    #[test]
    fn maps_socket_paths_back_to_top_level() {
        assert_eq!(user_path("socket.type"), "type");
        assert_eq!(user_path("socket.bufferSize"), "bufferSize");
        assert_eq!(user_path("devices[0].deviceName"), "devices[0].deviceName");
    }
}
