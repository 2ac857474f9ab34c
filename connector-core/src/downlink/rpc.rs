//! The pure side of RPC: reply shapes and the parameters of ThingsBoard's built-in `set`.

use serde_json::{json, Value};

use super::python;

/// What an RPC reply carries in `data`.
#[derive(Debug, Clone, PartialEq)]
pub enum RpcOutcome {
    /// `{"result": ...}`
    Result(Value),
    /// `{"error": "..."}`
    Error(String),
}

impl RpcOutcome {
    pub fn data(&self) -> Value {
        match self {
            Self::Result(value) => json!({ "result": value }),
            Self::Error(message) => json!({ "error": message }),
        }
    }
}

/// `key=value` pairs of a `set` string (pairs without exactly one `=`, or with an empty side,
/// are skipped, as in ThingsBoard), or the string fields of an object.
pub fn set_fields(params: &Value) -> Vec<(String, String)> {
    match params {
        Value::String(text) => text
            .split(';')
            .filter_map(|pair| {
                let mut parts = pair.split('=');
                let (key, value) = (parts.next()?, parts.next()?);
                if parts.next().is_some() {
                    return None;
                }
                let key = key.trim();
                (!key.is_empty() && !value.is_empty()).then(|| (key.to_owned(), value.to_owned()))
            })
            .collect(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), python::str(v)))
            .collect(),
        _ => Vec::new(),
    }
}

/// `socket_set` params start with the device name (`"Device1 ;address=...;port=...;value=..."`);
/// `set` needs only the address part.
pub fn strip_device_name(params: &Value) -> Value {
    match params {
        Value::String(text) => match text.split_once(';') {
            Some((head, rest)) if !head.contains('=') => Value::String(rest.to_owned()),
            _ => params.clone(),
        },
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_params_like_thingsboard() {
        let fields = set_fields(&json!(
            "address=127.0.0.1;port=5000;value=ON;bad;a=b=c;=x;y="
        ));
        assert_eq!(
            fields,
            [
                ("address".to_owned(), "127.0.0.1".to_owned()),
                ("port".to_owned(), "5000".to_owned()),
                ("value".to_owned(), "ON".to_owned())
            ]
        );
        let object = set_fields(&json!({"address": "::1", "port": 7, "value": "x"}));
        assert_eq!(object[1], ("port".to_owned(), "7".to_owned()));
        assert!(set_fields(&json!(42)).is_empty());
    }

    #[test]
    fn connector_set_params_drop_the_device_name() {
        assert_eq!(
            strip_device_name(&json!("Device1 ;address=10.0.0.5;port=6000;value=ON")),
            json!("address=10.0.0.5;port=6000;value=ON")
        );
        assert_eq!(
            strip_device_name(&json!("address=10.0.0.5;port=6000;value=ON")),
            json!("address=10.0.0.5;port=6000;value=ON")
        );
    }

    #[test]
    fn outcome_shapes() {
        assert_eq!(
            RpcOutcome::Result(json!("ok")).data(),
            json!({"result": "ok"})
        );
        assert_eq!(RpcOutcome::Error("x".into()).data(), json!({"error": "x"}));
    }
}
