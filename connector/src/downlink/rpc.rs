//! Server-side RPC: configured `serverSideRpc[]` methods, the built-in `set` and `get`, and the
//! connector-level `socket_set` on the gateway device. Every request gets a reply when something
//! goes wrong; a successful write gets one when `withResponse` is true.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::QoS;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::DownlinkContext;
use crate::events::RpcHandled;
use crate::transport::DownlinkError;
use connector_core::address_filter::peer_string;
use connector_core::config::SocketKind;
use connector_core::convert::text;
use connector_core::downlink::messages::{ConnectorRpc, DeviceRpc};
use connector_core::downlink::python;
use connector_core::downlink::rpc::{gateway_reply, GatewayFacts};
pub use connector_core::downlink::rpc::{set_fields, strip_device_name, RpcOutcome};
use connector_core::thingsboard::api::topic;

impl From<DownlinkError> for RpcOutcome {
    fn from(error: DownlinkError) -> Self {
        Self::Error(error.to_string())
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Handles `v1/gateway/rpc` and replies on the same topic.
pub async fn device_rpc(context: DownlinkContext, request: DeviceRpc) {
    // A device renamed in ThingsBoard is asked for by its new name; the reply keeps that name.
    let routed = DeviceRpc {
        device: context
            .renames
            .current()
            .configured(&request.device)
            .to_owned(),
        ..request.clone()
    };
    let outcome = handle_device_rpc(&context, &routed).await;
    RpcHandled {
        method: &request.method,
        outcome: outcome.as_ref(),
    }
    .emit();
    let Some(outcome) = outcome else {
        return;
    };
    let reply = json!({"device": request.device, "id": request.id, "data": outcome.data()});
    debug!(device = %request.device, method = %request.method, ?outcome, "RPC reply");
    publish(&context, topic::RPC, reply).await;
}

/// Handles RPC to the gateway device (`socket_set`) and replies on
/// `v1/devices/me/rpc/response/<id>`.
pub async fn connector_rpc(context: DownlinkContext, request: ConnectorRpc) {
    let reply_topic = format!(
        "{}{}",
        topic::GATEWAY_RPC_RESPONSE_PREFIX,
        request.request_id
    );
    if let Some(method) = request.method.strip_prefix("gateway_") {
        let reply = match method {
            "device_renamed" | "device_deleted" => context.renames.handle(method, &request.params),
            _ => gateway_reply(method, &gateway_facts(&context)),
        };
        let outcome = match reply.get("error").and_then(Value::as_str) {
            Some(error) => RpcOutcome::Error(error.to_owned()),
            None => RpcOutcome::Result(Value::Null),
        };
        RpcHandled {
            method: &request.method,
            outcome: Some(&outcome),
        }
        .emit();
        publish(&context, &reply_topic, reply).await;
        return;
    }
    let outcome = match request.method.split_once('_') {
        Some(("socket", "set")) => set(&context, &strip_device_name(&request.params)).await,
        Some(("socket", other)) => RpcOutcome::Error(format!(
            "connector RPC method {other:?} is not supported; only socket_set"
        )),
        _ => RpcOutcome::Error(format!(
            "gateway RPC method {:?} is not supported by the socket connector",
            request.method
        )),
    };
    RpcHandled {
        method: &request.method,
        outcome: Some(&outcome),
    }
    .emit();
    publish(&context, &reply_topic, outcome.data()).await;
}

fn gateway_facts(context: &DownlinkContext) -> GatewayFacts {
    let metrics = crate::metrics::metrics();
    let snapshot = context.live.load();
    let renames = context.renames.current();
    GatewayFacts {
        connector_name: context.connector_name.to_string(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        frames_received: crate::metrics::sum(&metrics.frames_received),
        datapoints_sent: metrics.datapoints_published.get(),
        devices: context
            .links
            .seen_names(&snapshot.built.devices)
            .iter()
            .map(|name| renames.in_thingsboard(name).to_owned())
            .collect(),
    }
}

async fn publish(context: &DownlinkContext, topic: &str, payload: Value) {
    if !context
        .publisher
        .publish(topic, QoS::AtLeastOnce, payload.to_string())
        .await
    {
        warn!(topic, "RPC reply not sent: the session ended");
    }
}

/// `None`: the write succeeded and the method does not want a response.
async fn handle_device_rpc(context: &DownlinkContext, request: &DeviceRpc) -> Option<RpcOutcome> {
    let snapshot = context.live.load();
    let devices = &snapshot.built.devices;
    let Some(addressed) = context.links.address(devices, &request.device) else {
        return Some(RpcOutcome::Error(format!(
            "device {:?} is not configured in this connector",
            request.device
        )));
    };
    let device = devices.device(addressed.index)?;
    let Some(entry) = device.downlink.rpc(&request.method) else {
        return Some(match request.method.as_str() {
            "set" => set(context, &request.params).await,
            "get" => get(context, &request.device, &request.params),
            method => RpcOutcome::Error(format!(
                "unknown RPC method {method:?} for device {:?}",
                request.device
            )),
        });
    };
    let encoding = entry.encoding;
    let bytes = match text::encode(&python::str(&request.params), encoding) {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) => {
            return Some(RpcOutcome::Error(format!(
                "params cannot be encoded as {encoding}: {e}"
            )))
        }
    };
    let links = &context.links;
    let Some(timeout) = entry.response_timeout else {
        return match links.write_to_device(addressed, bytes).await {
            Ok(_) if entry.with_response => Some(RpcOutcome::Result(json!("ok"))),
            Ok(_) => None,
            Err(error) => Some(error.into()),
        };
    };
    // Wait for the device's answer: its next message from the connection written to.
    let peer = match links.target_of(addressed) {
        Ok(peer) => peer,
        Err(error) => return Some(error.into()),
    };
    let answer = links.expect_reply(peer);
    if let Err(error) = links.write_to_device(addressed, bytes).await {
        links.cancel_reply(peer);
        return Some(error.into());
    }
    match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(reply)) => Some(RpcOutcome::Result(Value::String(text::decode(
            &reply, encoding,
        )))),
        Ok(Err(_)) => Some(RpcOutcome::Error(
            "device closed the connection before answering".to_owned(),
        )),
        Err(_) => {
            links.cancel_reply(peer);
            Some(RpcOutcome::Error(format!(
                "device did not answer within {} ms",
                timeout.as_millis()
            )))
        }
    }
}

/// Built-in `get`: the last value of a telemetry or attribute key (`params` is the key name, or
/// `{"key": name}`).
fn get(context: &DownlinkContext, device: &str, params: &Value) -> RpcOutcome {
    let key = params
        .as_str()
        .or_else(|| params.get("key").and_then(Value::as_str))
        .map(str::trim);
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return RpcOutcome::Error("get needs the key name as params".to_owned());
    };
    match context.last_values.get(device, key) {
        Some(value) => RpcOutcome::Result(value),
        None => RpcOutcome::Error(format!("no value of {key:?} received from {device:?} yet")),
    }
}

/// Built-in `set`: ThingsBoard's `address=..;port=..;value=..` (or an object with those keys):
/// the value goes to that peer over its open connection, or over a new outbound TCP connection
/// (TCP), or as a datagram from the bound socket (UDP).
async fn set(context: &DownlinkContext, params: &Value) -> RpcOutcome {
    let fields = set_fields(params);
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let (Some(address), Some(port), Some(value)) =
        (field("address"), field("port"), field("value"))
    else {
        // ThingsBoard's own reply text.
        return RpcOutcome::Result(json!("Not enough params"));
    };
    let Ok(port) = port.trim().parse::<u16>() else {
        return RpcOutcome::Result(json!("Param \"port\" have to be int type"));
    };
    let Ok(ip) = address.trim().parse::<IpAddr>() else {
        return RpcOutcome::Error(format!("address {address:?} is not an IP address"));
    };
    let peer = SocketAddr::new(ip, port);
    let snapshot = context.live.load();
    if !snapshot.built.set_allowed(&peer_string(peer)) {
        return RpcOutcome::Error(format!(
            "set refused: {} is not the peer of a configured device (its address filters) nor in rpcSetAllow",
            peer_string(peer)
        ));
    }
    let bytes = Bytes::from(value.into_bytes());
    match context.links.write_to_peer(peer, bytes.clone()).await {
        Ok(()) => RpcOutcome::Result(json!("ok")),
        Err(DownlinkError::NoConnection { .. })
            if snapshot.built.socket_kind == SocketKind::Tcp =>
        {
            write_outbound(peer, &bytes).await
        }
        Err(error) => error.into(),
    }
}

/// ThingsBoard's fallback for a peer without an open connection: connect to it, write, close.
async fn write_outbound(peer: SocketAddr, bytes: &[u8]) -> RpcOutcome {
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer)).await;
    let mut stream = match connect {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return RpcOutcome::Error(format!("cannot connect to {peer}: {e}")),
        Err(_) => return RpcOutcome::Error(format!("connecting to {peer} timed out")),
    };
    match stream.write_all(bytes).await {
        Ok(()) => {
            let _ = stream.shutdown().await;
            RpcOutcome::Result(json!("ok"))
        }
        Err(e) => RpcOutcome::Error(format!("writing to {peer} failed: {e}")),
    }
}
