//! The uplink task: applies report strategies, announces devices, batches datapoints of many
//! devices into gateway-API publishes, re-announces devices after a reconnect and disconnects them
//! on shutdown.

use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use rumqttc::{AsyncClient, ClientError, QoS};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, trace, warn};

use super::api::{self, topic, UplinkBatch};
use super::limits::{RateLimiter, SessionLimits};
use super::LinkEvent;
use crate::clock::now_ms;
use crate::convert::{ConvertedData, DeviceIdentity};
use crate::downlink::LastValues;
use crate::metrics::metrics;
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
    limits: watch::Receiver<SessionLimits>,
    configured_max_payload: usize,
    started: Instant,
    message_rate: RateLimiter,
    telemetry_rate: RateLimiter,
    datapoint_rate: RateLimiter,
}

impl Uplink {
    pub fn new(
        client: AsyncClient,
        qos: QoS,
        max_payload: usize,
        connector_name: Arc<str>,
        last_values: Arc<LastValues>,
        limits: watch::Receiver<SessionLimits>,
    ) -> Self {
        Self {
            client,
            qos,
            max_payload,
            connector_name,
            filter: ReportFilter::new(),
            announced: IndexMap::new(),
            last_values,
            limits,
            configured_max_payload: max_payload,
            started: Instant::now(),
            message_rate: RateLimiter::default(),
            telemetry_rate: RateLimiter::default(),
            datapoint_rate: RateLimiter::default(),
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
                    let metrics = metrics();
                    metrics.queue_messages.set(data.len() as i64);
                    let now = now_ms();
                    let mut batch = UplinkBatch::new();
                    let mut read_at = Vec::with_capacity(incoming.len());
                    for mut message in incoming.drain(..) {
                        self.last_values.record(&message);
                        let decision = self.filter.filter(&mut message, now);
                        metrics.report_suppressed.inc_by(decision.suppressed as u64);
                        read_at.push(message.ts_ms);
                        batch.add(message);
                    }
                    self.publish(batch).await;
                    let published = now_ms();
                    for ts in read_at {
                        metrics.publish_latency.observe((published - ts).max(0) as f64 / 1000.0);
                    }
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
        self.apply_limits();
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
        let telemetry = batch.telemetry_payloads(self.max_payload);
        if !telemetry.is_empty() {
            let datapoints = batch.datapoints() as f64;
            Self::wait(&mut self.datapoint_rate, datapoints, self.started).await;
        }
        for payload in telemetry {
            Self::wait(&mut self.telemetry_rate, 1.0, self.started).await;
            self.send(topic::TELEMETRY, payload).await;
        }
        metrics()
            .datapoints_published
            .inc_by(batch.datapoints() as u64);
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

    /// Takes ThingsBoard's session limits when they (re)arrive.
    fn apply_limits(&mut self) {
        if !self.limits.has_changed().unwrap_or(false) {
            return;
        }
        let limits = self.limits.borrow_and_update().clone();
        let now = self.started.elapsed();
        self.max_payload = limits
            .max_payload
            .unwrap_or(self.configured_max_payload)
            .min(super::link::MAX_PAYLOAD);
        self.message_rate = RateLimiter::new(&limits.messages, now);
        self.telemetry_rate = RateLimiter::new(&limits.telemetry_messages, now);
        self.datapoint_rate = RateLimiter::new(&limits.telemetry_datapoints, now);
    }

    async fn wait(limiter: &mut RateLimiter, units: f64, started: Instant) {
        loop {
            let wait = limiter.delay(units, started.elapsed());
            if wait.is_zero() {
                limiter.take(units, started.elapsed());
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn send(&mut self, topic: &str, payload: Vec<u8>) {
        Self::wait(&mut self.message_rate, 1.0, self.started).await;
        trace!(topic, payload = %String::from_utf8_lossy(&payload), "publish");
        let name = topic.strip_prefix("v1/gateway/").unwrap_or(topic);
        match self.client.publish(topic, self.qos, false, payload).await {
            Ok(()) => metrics()
                .messages_published
                .with_label_values(&[name])
                .inc(),
            Err(ClientError::Request(_) | ClientError::TryRequest(_)) => {
                metrics()
                    .dropped
                    .with_label_values(&["mqtt_client_stopped"])
                    .inc();
                warn!(topic, "MQTT client stopped; message dropped");
            }
        }
    }
}

async fn sleep_for(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}
