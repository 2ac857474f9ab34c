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

/// What the gateway RPCs (`gateway_ping`, `gateway_stats`, ...) answer with.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayFacts {
    pub connector_name: String,
    pub version: String,
    /// Frames read from devices (the gateway's `MessagesReceived`).
    pub frames_received: u64,
    /// Datapoints handed to ThingsBoard (the gateway's `MessagesSent`).
    pub datapoints_sent: u64,
    /// Devices known from their data, by name.
    pub devices: Vec<String>,
}

/// The reply of gateway RPC `method` (the part after `gateway_`), as the ThingsBoard gateway
/// writes it on `v1/devices/me/rpc/response/<id>`: the result object itself, no `result` wrapper.
pub fn gateway_reply(method: &str, facts: &GatewayFacts) -> Value {
    match method {
        "ping" => json!({"code": 200, "resp": "pong"}),
        "version" => json!({
            "code": 200,
            "resp": {"current_version": &facts.version, "latest_version": &facts.version},
        }),
        "devices" => {
            let devices: serde_json::Map<String, Value> = facts
                .devices
                .iter()
                .map(|name| (name.clone(), facts.connector_name.clone().into()))
                .collect();
            json!({"code": 200, "resp": devices})
        }
        "stats" => {
            // The gateway's keys: the connector name without spaces, then the statistic.
            let prefix = facts.connector_name.replace(' ', "");
            json!({
                "eventsProduced": facts.frames_received,
                "eventsSent": facts.datapoints_sent,
                format!("{prefix}EventsProduced"): facts.frames_received,
                format!("{prefix}EventsSent"): facts.datapoints_sent,
            })
        }
        _ => json!({"error": "Method not found", "code": 404}),
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

    #[test]
    fn gateway_replies_have_the_gateways_shapes() {
        let facts = GatewayFacts {
            connector_name: "Socket Connector".into(),
            version: "1.2.3".into(),
            frames_received: 7,
            datapoints_sent: 5,
            devices: vec!["A".into()],
        };
        assert_eq!(
            gateway_reply("ping", &facts),
            json!({"code": 200, "resp": "pong"})
        );
        assert_eq!(
            gateway_reply("devices", &facts),
            json!({"code": 200, "resp": {"A": "Socket Connector"}})
        );
        assert_eq!(
            gateway_reply("stats", &facts),
            json!({"eventsProduced": 7, "eventsSent": 5,
                   "SocketConnectorEventsProduced": 7, "SocketConnectorEventsSent": 5})
        );
        assert_eq!(
            gateway_reply("version", &facts)["resp"]["current_version"],
            "1.2.3"
        );
        assert_eq!(
            gateway_reply("restart", &facts),
            json!({"error": "Method not found", "code": 404})
        );
    }
}
