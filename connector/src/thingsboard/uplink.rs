//! The uplink task: applies report strategies, announces devices, batches datapoints of many
//! devices into gateway-API publishes for the queue, and disconnects the devices on shutdown.

use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use tokio::sync::{mpsc, watch};
use tracing::debug;

use crate::clock::now_ms;
use crate::last_values::LastValues;
use crate::metrics::metrics;
use crate::queue::{Outbound, Queue, Topic};
use connector_core::config::ReportStrategy;
use connector_core::convert::{ConvertedData, DeviceIdentity};
use connector_core::report::ReportFilter;
use connector_core::thingsboard::api::{self, UplinkBatch};
use connector_core::thingsboard::limits::SessionLimits;

/// Converted messages taken from the queue for one round of publishes.
const MAX_MESSAGES_PER_BATCH: usize = 4096;
/// How often remembered values past their ttl are forgotten.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

pub struct Uplink {
    queue: Arc<Queue>,
    max_payload: usize,
    connector_name: Arc<str>,
    filter: ReportFilter,
    /// Devices announced with `v1/gateway/connect` in this run.
    announced: IndexMap<Arc<str>, Arc<DeviceIdentity>>,
    last_values: Arc<LastValues>,
    limits: watch::Receiver<SessionLimits>,
    configured_max_payload: usize,
}

impl Uplink {
    pub fn new(
        queue: Arc<Queue>,
        max_payload: usize,
        connector_name: Arc<str>,
        report_strategy: ReportStrategy,
        last_values: Arc<LastValues>,
        limits: watch::Receiver<SessionLimits>,
    ) -> Self {
        Self {
            queue,
            max_payload,
            connector_name,
            filter: ReportFilter::new(report_strategy),
            announced: IndexMap::new(),
            last_values,
            limits,
            configured_max_payload: max_payload,
        }
    }

    /// Runs until `data` is closed (all producers gone), then queues the devices' disconnects
    /// and closes the queue.
    pub async fn run(mut self, mut data: mpsc::Receiver<ConvertedData>) {
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
        let mut outbound = Vec::new();
        let new_devices: Vec<Arc<DeviceIdentity>> = batch
            .devices()
            .filter(|d| !self.announced.contains_key(&d.name))
            .cloned()
            .collect();
        for device in new_devices {
            outbound.push(Outbound::new(
                Topic::Connect,
                0,
                api::connect_payload(&device),
            ));
            outbound.push(Outbound::new(
                Topic::Attributes,
                0,
                api::connector_attributes_payload(&device.name, &self.connector_name),
            ));
            debug!(device = %device.name, "device connected to ThingsBoard");
            self.announced.insert(device.name.clone(), device);
        }
        for payload in batch.attributes_payloads(self.max_payload) {
            outbound.push(Outbound::new(Topic::Attributes, 0, payload));
        }
        for (payload, datapoints) in batch.telemetry_packs(self.max_payload) {
            outbound.push(Outbound::new(Topic::Telemetry, datapoints, payload));
        }
        self.queue.push(outbound).await;
        metrics()
            .datapoints_published
            .inc_by(batch.datapoints() as u64);
        debug!(datapoints = batch.datapoints(), "data to ThingsBoard");
    }

    async fn disconnect_all(&mut self) {
        let disconnects = self
            .announced
            .keys()
            .map(|name| Outbound::new(Topic::Disconnect, 0, api::disconnect_payload(name)))
            .collect();
        self.queue.push(disconnects).await;
        self.queue.close();
    }

    /// Takes ThingsBoard's payload limit when it (re)arrives.
    fn apply_limits(&mut self) {
        if !self.limits.has_changed().unwrap_or(false) {
            return;
        }
        let limits = self.limits.borrow_and_update().clone();
        self.max_payload = limits
            .max_payload
            .unwrap_or(self.configured_max_payload)
            .min(super::link::MAX_PAYLOAD);
    }
}

async fn sleep_for(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}
