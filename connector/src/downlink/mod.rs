//! ThingsBoard → devices: attribute requests and their responses, shared-attribute updates and
//! RPC. Incoming MQTT messages are parsed into typed requests (`connector_core::downlink`), decided
//! with the built downlink rules, and executed against the device connections ([`DeviceLinks`]).

pub mod rpc;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;
use rumqttc::QoS;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::events::{AttributeRequestEvent, AttributeRequestOutcome, AttributeUpdateEvent};
use crate::last_values::LastValues;
use crate::live::Live;
use crate::remote_config::RemoteConfigurator;
use crate::thingsboard::renames::Renames;
use crate::thingsboard::session::DownlinkEvent;
use crate::thingsboard::Publisher;
use crate::transport::{DeviceLinks, PeerAttributeRequest};
use connector_core::config::AttributeScope;
use connector_core::convert::text;
use connector_core::downlink::messages::{self, AttributeResponse, AttributeUpdate, Incoming};
use connector_core::downlink::python;
use connector_core::thingsboard::api::topic;
use connector_core::thingsboard::limits::{self, SessionLimits};

/// ThingsBoard's gateway gives up on an attribute request after 20 s.
pub const ATTRIBUTE_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Attribute requests waiting for ThingsBoard at most; older ones are given up first.
const MAX_PENDING_REQUESTS: usize = 10_000;

struct PendingRequest {
    device: Arc<str>,
    peer: SocketAddr,
    sent: Instant,
}

/// Everything a downlink action needs, shared with the RPC tasks it spawns.
#[derive(Clone)]
pub struct DownlinkContext {
    /// Publishes (requests and replies), through the session.
    pub publisher: Publisher,
    /// The current configuration and device table (hot reloads replace them).
    pub live: Arc<Live>,
    pub links: Arc<DeviceLinks>,
    pub last_values: Arc<LastValues>,
    /// Where ThingsBoard's session limits go (the uplink task applies them).
    pub limits: watch::Sender<SessionLimits>,
    /// The `connectorName` of this connector's devices (gateway RPC answers name it).
    pub connector_name: Arc<str>,
    /// Devices renamed in ThingsBoard: requests name them by their new names.
    pub renames: Arc<Renames>,
}

pub struct Downlink {
    context: DownlinkContext,
    pending: IndexMap<u64, PendingRequest>,
    next_request_id: u64,
    /// Remote configuration, when it is on.
    remote: Option<RemoteConfigurator>,
}

impl Downlink {
    pub fn new(context: DownlinkContext, remote: Option<RemoteConfigurator>) -> Self {
        Self {
            context,
            pending: IndexMap::new(),
            next_request_id: 1,
            remote,
        }
    }

    pub async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<DownlinkEvent>,
        mut requests: mpsc::Receiver<PeerAttributeRequest>,
    ) {
        let mut expiry = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(DownlinkEvent::Connected) => {
                        self.request_session_limits().await;
                        if let Some(remote) = &mut self.remote {
                            remote.connected().await;
                        }
                    }
                    Some(DownlinkEvent::Message { topic, payload }) => self.handle(&topic, &payload).await,
                    None => break,
                },
                Some(request) = requests.recv() => self.request_attributes(request).await,
                _ = expiry.tick() => {
                    self.expire_requests();
                    if let Some(remote) = &mut self.remote {
                        remote.check_file_reload().await;
                    }
                }
            }
        }
    }

    /// On every new session (the session subscribed to [`SUBSCRIPTIONS`] already).
    async fn request_session_limits(&self) {
        let request = format!(
            "{}{}",
            topic::GATEWAY_RPC_REQUEST_PREFIX,
            limits::REQUEST_ID
        );
        if !self
            .context
            .publisher
            .publish(request, QoS::AtLeastOnce, limits::REQUEST)
            .await
        {
            warn!("getSessionLimits request not sent: the session ended");
        }
    }

    async fn handle(&mut self, topic: &str, payload: &[u8]) {
        match messages::parse(topic, payload) {
            Ok(Incoming::AttributeUpdate(update)) => self.update_attributes(update).await,
            Ok(Incoming::AttributeResponse(response)) => self.answer_request(response).await,
            Ok(Incoming::DeviceRpc(request)) => {
                tokio::spawn(rpc::device_rpc(self.context.clone(), request));
            }
            // Our own getSessionLimits request, heard back through a plain MQTT broker.
            Ok(Incoming::ConnectorRpc(request)) if request.method == "getSessionLimits" => {}
            Ok(Incoming::ConnectorRpc(request)) => {
                tokio::spawn(rpc::connector_rpc(self.context.clone(), request));
            }
            Ok(Incoming::SessionLimits(answer)) => match SessionLimits::parse(&answer) {
                Ok(limits) => {
                    info!(?limits, "ThingsBoard session limits");
                    let _ = self.context.limits.send(limits);
                }
                Err(error) => warn!(%error, "session limits ignored"),
            },
            Ok(Incoming::GatewayShared(update)) => match &mut self.remote {
                Some(remote) => remote.shared(update).await,
                None => debug!(
                    topic,
                    "gateway attributes ignored: remote configuration is off"
                ),
            },
            Ok(Incoming::Ignored) => {}
            Err(error) => warn!(topic, %error, "malformed message from ThingsBoard ignored"),
        }
    }

    async fn request_attributes(&mut self, asked: PeerAttributeRequest) {
        let PeerAttributeRequest { request, peer } = asked;
        let id = self.next_request_id;
        self.next_request_id += 1;
        let payload = json!({
            "keys": request.keys,
            "device": self.context.renames.current().in_thingsboard(&request.device),
            "client": request.scope == AttributeScope::Client,
            "id": id,
        });
        if self.pending.len() >= MAX_PENDING_REQUESTS {
            if let Some((old, _)) = self.pending.shift_remove_index(0) {
                warn!(
                    id = old,
                    "attribute request given up: too many waiting for ThingsBoard"
                );
            }
        }
        self.pending.insert(
            id,
            PendingRequest {
                device: request.device.clone(),
                peer,
                sent: Instant::now(),
            },
        );
        AttributeRequestEvent {
            outcome: AttributeRequestOutcome::Sent,
            id,
            device: &request.device,
        }
        .emit();
        // Fixed QoS 1, as ThingsBoard's gateway.
        if !self
            .context
            .publisher
            .publish(
                topic::ATTRIBUTES_REQUEST,
                QoS::AtLeastOnce,
                payload.to_string(),
            )
            .await
        {
            warn!("attribute request not sent: the session ended");
        }
    }

    /// Writes ThingsBoard's answer to the connection that asked.
    async fn answer_request(&mut self, response: AttributeResponse) {
        let Some(pending) = self.pending.shift_remove(&response.id) else {
            debug!(
                id = response.id,
                "attribute response for an unknown or expired request"
            );
            return;
        };
        AttributeRequestEvent {
            outcome: AttributeRequestOutcome::Answered,
            id: response.id,
            device: &pending.device,
        }
        .emit();
        let bytes = python::json_dumps(&response.value).into_bytes();
        let name = &pending.device;
        match self
            .context
            .links
            .write_to_peer(pending.peer, Bytes::from(bytes))
            .await
        {
            Ok(()) => debug!(id = response.id, device = %name, "attribute response written"),
            Err(error) => {
                warn!(id = response.id, device = %name, %error, "attribute response not delivered")
            }
        }
    }

    fn expire_requests(&mut self) {
        let now = Instant::now();
        while let Some((&id, pending)) = self.pending.first() {
            if now.duration_since(pending.sent) < ATTRIBUTE_REQUEST_TIMEOUT {
                break;
            }
            AttributeRequestEvent {
                outcome: AttributeRequestOutcome::TimedOut,
                id,
                device: &pending.device,
            }
            .emit();
            self.pending.shift_remove_index(0);
        }
    }

    /// Shared attribute changed in ThingsBoard: write each configured one to the device.
    async fn update_attributes(&mut self, update: AttributeUpdate) {
        let snapshot = self.context.live.load();
        let devices = &snapshot.built.devices;
        let renames = self.context.renames.current();
        let Some(addressed) = self
            .context
            .links
            .address(devices, renames.configured(&update.device))
        else {
            warn!(device = %update.device, "attribute update for a device this connector does not have");
            return;
        };
        let Some(device) = devices.device(addressed.index) else {
            return;
        };
        for entry in &device.downlink.attribute_updates {
            let Some(value) = update.data.get(&entry.attribute) else {
                continue;
            };
            let encoding = entry.encoding;
            let outcome = match text::encode(&python::str(value), encoding) {
                Ok(bytes) => self
                    .context
                    .links
                    .write_to_device(addressed, Bytes::from(bytes))
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!("cannot encode as {encoding}: {e}")),
            };
            AttributeUpdateEvent {
                device: &update.device,
                key: &entry.attribute,
                outcome,
            }
            .emit();
        }
    }
}
