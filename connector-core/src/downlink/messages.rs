//! Parsing what ThingsBoard sends to a gateway. Malformed messages are errors the caller logs;
//! nothing here panics on input.

use serde_json::{Map, Value};

use crate::thingsboard::api::topic;

#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    AttributeUpdate(AttributeUpdate),
    AttributeResponse(AttributeResponse),
    DeviceRpc(DeviceRpc),
    ConnectorRpc(ConnectorRpc),
    /// ThingsBoard's answer to the gateway's `getSessionLimits` RPC.
    SessionLimits(Value),
    /// Shared attributes of the gateway device: pushed on `v1/devices/me/attributes` when they
    /// change, or the `shared` part of the answer to a request (remote configuration).
    GatewayShared(GatewayShared),
    /// Not for this connector (for example a plain broker echoing our own attribute publishes).
    Ignored,
}

/// `v1/gateway/attributes`: `{"device":"D","data":{"k":v}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeUpdate {
    pub device: String,
    pub data: Map<String, Value>,
}

/// `v1/gateway/attributes/response`: `{"id":7,"device":"D","value":v}` (one key),
/// `"values":{...}` (several) or neither (none found).
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeResponse {
    pub id: u64,
    pub device: String,
    /// `value`, else `values`, else null: what is written to the device.
    pub value: Value,
}

/// `v1/gateway/rpc`: `{"device":"D","data":{"id":42,"method":"m","params":...}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRpc {
    pub device: String,
    pub id: Value,
    pub method: String,
    pub params: Value,
}

/// `v1/devices/me/rpc/request/<id>`: RPC to the gateway device itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorRpc {
    pub request_id: String,
    pub method: String,
    pub params: Value,
}

/// Shared attributes of the gateway device.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayShared {
    /// The request this answers (`v1/devices/me/attributes/response/<id>`); none for a push.
    pub request_id: Option<String>,
    pub attributes: Map<String, Value>,
}

pub fn parse(topic_name: &str, payload: &[u8]) -> Result<Incoming, String> {
    if topic_name == topic::GATEWAY_ATTRIBUTES {
        let value: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(attributes) = value else {
            return Err("gateway attributes that are not a JSON object".to_owned());
        };
        return Ok(Incoming::GatewayShared(GatewayShared {
            request_id: None,
            attributes,
        }));
    }
    if let Some(id) = topic_name.strip_prefix(topic::GATEWAY_ATTRIBUTE_RESPONSE_PREFIX) {
        let value: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
        // `{"client": {...}, "shared": {...}}`, an empty scope left out.
        let attributes = match value.get("shared") {
            Some(Value::Object(shared)) => shared.clone(),
            Some(_) => return Err("attribute response whose \"shared\" is not an object".into()),
            None => Map::new(),
        };
        return Ok(Incoming::GatewayShared(GatewayShared {
            request_id: Some(id.to_owned()),
            attributes,
        }));
    }
    let is_ours = topic_name == topic::ATTRIBUTES
        || topic_name == topic::ATTRIBUTES_RESPONSE
        || topic_name == topic::RPC
        || topic_name.starts_with(topic::GATEWAY_RPC_REQUEST_PREFIX)
        || topic_name.starts_with(topic::GATEWAY_RPC_RESPONSE_PREFIX);
    if !is_ours {
        return Ok(Incoming::Ignored);
    }
    if let Some(id) = topic_name.strip_prefix(topic::GATEWAY_RPC_RESPONSE_PREFIX) {
        if id != crate::thingsboard::limits::REQUEST_ID {
            return Ok(Incoming::Ignored);
        }
        let value: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
        return Ok(Incoming::SessionLimits(value));
    }
    let value: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    let object = value.as_object().ok_or("not a JSON object")?;
    let text = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
    match topic_name {
        topic::ATTRIBUTES => match (text("device"), object.get("data")) {
            (Some(device), Some(Value::Object(data))) => {
                Ok(Incoming::AttributeUpdate(AttributeUpdate {
                    device,
                    data: data.clone(),
                }))
            }
            // Our own `{"Device":{...}}` uplink, heard back through a plain broker.
            _ => Ok(Incoming::Ignored),
        },
        topic::ATTRIBUTES_RESPONSE => {
            let id = object
                .get("id")
                .and_then(Value::as_u64)
                .ok_or("attribute response without a numeric id")?;
            let value = object
                .get("value")
                .or_else(|| object.get("values"))
                .cloned()
                .unwrap_or(Value::Null);
            Ok(Incoming::AttributeResponse(AttributeResponse {
                id,
                device: text("device").unwrap_or_default(),
                value,
            }))
        }
        topic::RPC => {
            let device = text("device").ok_or("RPC without device")?;
            let data = object
                .get("data")
                .and_then(Value::as_object)
                .ok_or("RPC without data")?;
            let method = data
                .get("method")
                .and_then(Value::as_str)
                .ok_or("RPC without method")?;
            Ok(Incoming::DeviceRpc(DeviceRpc {
                device,
                id: data.get("id").cloned().unwrap_or(Value::Null),
                method: method.to_owned(),
                params: data.get("params").cloned().unwrap_or(Value::Null),
            }))
        }
        _ => {
            let request_id = topic_name
                .strip_prefix(topic::GATEWAY_RPC_REQUEST_PREFIX)
                .unwrap_or_default()
                .to_owned();
            let method = text("method").ok_or("RPC without method")?;
            Ok(Incoming::ConnectorRpc(ConnectorRpc {
                request_id,
                method,
                params: object.get("params").cloned().unwrap_or(Value::Null),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn parse_json(topic: &str, value: Value) -> Result<Incoming, String> {
        parse(topic, value.to_string().as_bytes())
    }

    #[test]
    fn gateway_shared_attributes_pushed_and_answered() {
        let pushed = parse_json("v1/devices/me/attributes", json!({"active_connectors": []}));
        let Ok(Incoming::GatewayShared(pushed)) = pushed else {
            panic!("{pushed:?}")
        };
        assert_eq!(pushed.request_id, None);
        assert_eq!(pushed.attributes["active_connectors"], json!([]));
        let answer = parse_json(
            "v1/devices/me/attributes/response/3",
            json!({"client": {"x": 1}, "shared": {"y": 2}}),
        );
        let Ok(Incoming::GatewayShared(answer)) = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(answer.request_id.as_deref(), Some("3"));
        assert_eq!(Value::Object(answer.attributes), json!({"y": 2}));
        let nothing = parse_json("v1/devices/me/attributes/response/1", json!({}));
        assert!(matches!(nothing, Ok(Incoming::GatewayShared(g)) if g.attributes.is_empty()));
        assert!(parse("v1/devices/me/attributes", b"[1]").is_err());
        assert!(parse_json("v1/devices/me/attributes/response/1", json!({"shared": 1})).is_err());
    }

    #[test]
    fn thingsboard_shapes() {
        assert_eq!(
            parse_json(
                "v1/gateway/attributes",
                json!({"device": "D", "data": {"k": 1}})
            )
            .unwrap(),
            Incoming::AttributeUpdate(AttributeUpdate {
                device: "D".into(),
                data: json!({"k": 1}).as_object().unwrap().clone()
            })
        );
        assert_eq!(
            parse_json(
                "v1/gateway/attributes",
                json!({"D": {"connectorType": "socket"}})
            )
            .unwrap(),
            Incoming::Ignored
        );
        let response = |v: Value| match parse_json("v1/gateway/attributes/response", v).unwrap() {
            Incoming::AttributeResponse(r) => r.value,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            response(json!({"id": 1, "device": "D", "value": 0})),
            json!(0)
        );
        assert_eq!(
            response(json!({"id": 1, "device": "D", "value": false})),
            json!(false)
        );
        assert_eq!(
            response(json!({"id": 1, "device": "D", "values": {"a": 1}})),
            json!({"a": 1})
        );
        assert_eq!(response(json!({"id": 1, "device": "D"})), Value::Null);
        assert_eq!(
            parse_json(
                "v1/gateway/rpc",
                json!({"device": "D", "data": {"id": 42, "method": "m", "params": "p"}})
            )
            .unwrap(),
            Incoming::DeviceRpc(DeviceRpc {
                device: "D".into(),
                id: json!(42),
                method: "m".into(),
                params: json!("p")
            })
        );
        assert_eq!(
            parse_json(
                "v1/devices/me/rpc/request/7",
                json!({"method": "socket_set", "params": "x"})
            )
            .unwrap(),
            Incoming::ConnectorRpc(ConnectorRpc {
                request_id: "7".into(),
                method: "socket_set".into(),
                params: json!("x")
            })
        );
        assert_eq!(
            parse("v1/devices/me/telemetry", b"junk").unwrap(),
            Incoming::Ignored
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert!(parse("v1/gateway/rpc", b"{").is_err());
        assert!(parse("v1/gateway/rpc", b"[1]").is_err());
        assert!(parse_json("v1/gateway/rpc", json!({"device": "D"})).is_err());
        assert!(parse_json("v1/gateway/attributes/response", json!({"id": "x"})).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..64), which in 0usize..6) {
            let topic = ["v1/gateway/attributes", "v1/gateway/attributes/response", "v1/gateway/rpc", "v1/devices/me/rpc/request/1", "v1/devices/me/attributes", "v1/devices/me/attributes/response/1"][which];
            let _ = parse(topic, &payload);
        }
    }
}
