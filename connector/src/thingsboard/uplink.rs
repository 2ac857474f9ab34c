//! The uplink task: applies report strategies, announces devices, batches datapoints of many
//! devices into gateway-API publishes, re-announces devices after a reconnect and disconnects them
//! on shutdown.

use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use rumqttc::{AsyncClient, ClientError, QoS};
use tokio::sync::mpsc;
use tracing::{debug, trace, warn};

use super::api::{self, topic, UplinkBatch};
use super::LinkEvent;
use crate::clock::now_ms;
use crate::convert::{ConvertedData, DeviceIdentity};
use crate::downlink::LastValues;
use crate::report::ReportFilter;

/// Converted messages taken from the queue for one round of publishes.
const MAX_MESSAGES_PER_BATCH: usize = 4096;
/// How often remembered values past their ttl are forgotten.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

pub struct Uplink {
    client: AsyncClient,
    qos: QoS,
    max_payload: usize,
    connector_name: Arc<str>,
    filter: ReportFilter,
    /// Devices announced with `v1/gateway/connect` in this run.
    announced: IndexMap<Arc<str>, Arc<DeviceIdentity>>,
    last_values: Arc<LastValues>,
}

impl Uplink {
    pub fn new(
        client: AsyncClient,
        qos: QoS,
        max_payload: usize,
        connector_name: Arc<str>,
        last_values: Arc<LastValues>,
    ) -> Self {
        Self {
            client,
            qos,
            max_payload,
            connector_name,
            filter: ReportFilter::new(),
            announced: IndexMap::new(),
            last_values,
        }
    }

    /// Runs until `data` is closed (all producers gone), then disconnects the devices and the
    /// MQTT session.
    pub async fn run(
        mut self,
        mut data: mpsc::Receiver<ConvertedData>,
        mut link: mpsc::UnboundedReceiver<LinkEvent>,
    ) {
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        let mut incoming = Vec::with_capacity(MAX_MESSAGES_PER_BATCH);
        loop {
            let periodic_wait = self
                .filter
                .next_due_ms()
                .map(|due| Duration::from_millis(due.saturating_sub(now_ms()).max(0) as u64));
            tokio::select! {
                received = data.recv_many(&mut incoming, MAX_MESSAGES_PER_BATCH) => {
                    if received == 0 {
                        break;
                    }
                    let now = now_ms();
                    let mut batch = UplinkBatch::new();
                    for mut message in incoming.drain(..) {
                        self.last_values.record(&message);
                        self.filter.filter(&mut message, now);
                        batch.add(message);
                    }
                    self.publish(batch).await;
                }
                _ = sleep_for(periodic_wait) => {
                    let mut batch = UplinkBatch::new();
                    for message in self.filter.due(now_ms()) {
                        batch.add(message);
                    }
                    self.publish(batch).await;
                }
                Some(event) = link.recv() => {
                    if event == (LinkEvent::Connected { reconnect: true }) {
                        self.reannounce().await;
                    }
                }
                _ = sweep.tick() => self.filter.sweep(now_ms()),
            }
        }
        self.disconnect_all().await;
    }

    async fn publish(&mut self, batch: UplinkBatch) {
        if batch.is_empty() {
            return;
        }
        let new_devices: Vec<Arc<DeviceIdentity>> = batch
            .devices()
            .filter(|d| !self.announced.contains_key(&d.name))
            .cloned()
            .collect();
        for device in new_devices {
            self.send(topic::CONNECT, api::connect_payload(&device))
                .await;
            self.send(
                topic::ATTRIBUTES,
                api::connector_attributes_payload(&device.name, &self.connector_name),
            )
            .await;
            debug!(device = %device.name, "device connected to ThingsBoard");
            self.announced.insert(device.name.clone(), device);
        }
        for payload in batch.attributes_payloads(self.max_payload) {
            self.send(topic::ATTRIBUTES, payload).await;
        }
        for payload in batch.telemetry_payloads(self.max_payload) {
            self.send(topic::TELEMETRY, payload).await;
        }
        debug!(datapoints = batch.datapoints(), "data to ThingsBoard");
    }

    /// ThingsBoard forgets gateway devices with the session; announce them again.
    async fn reannounce(&mut self) {
        let devices: Vec<Arc<DeviceIdentity>> = self.announced.values().cloned().collect();
        for device in devices {
            self.send(topic::CONNECT, api::connect_payload(&device))
                .await;
        }
    }

    async fn disconnect_all(&mut self) {
        let names: Vec<Arc<str>> = self.announced.keys().cloned().collect();
        for name in names {
            self.send(topic::DISCONNECT, api::disconnect_payload(&name))
                .await;
        }
        if let Err(error) = self.client.disconnect().await {
            debug!(%error, "MQTT disconnect");
        }
    }

    async fn send(&self, topic: &str, payload: Vec<u8>) {
        trace!(topic, payload = %String::from_utf8_lossy(&payload), "publish");
        if let Err(ClientError::Request(_) | ClientError::TryRequest(_)) =
            self.client.publish(topic, self.qos, false, payload).await
        {
            warn!(topic, "MQTT client stopped; message dropped");
        }
    }
}

async fn sleep_for(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}
