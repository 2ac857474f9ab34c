//! The uplink task: applies report strategies, announces devices, batches datapoints of many
//! devices into gateway-API publishes for the queue, and disconnects the devices on shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use tokio::sync::{mpsc, watch};
use tracing::debug;

use crate::clock::now_ms;
use crate::events::{DatapointTooLarge, DevicesEvicted};
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
    /// Devices announced with `v1/gateway/connect` in this run, with when they last sent data
    /// (a counter of messages).
    announced: IndexMap<Arc<str>, (Arc<DeviceIdentity>, u64)>,
    /// Messages seen, the clock of `announced`.
    seen: u64,
    /// When each device of the batch being built last sent (applied to `announced` at publish).
    seen_in_batch: HashMap<Arc<str>, u64>,
    /// Devices announced at most; beyond, the longest silent are disconnected and forgotten
    /// (names read from frames can be many).
    max_devices: usize,
    last_values: Arc<LastValues>,
    limits: watch::Receiver<SessionLimits>,
    configured_max_payload: usize,
}

/// What the uplink needs besides the queue and the shared state.
pub struct UplinkSettings {
    pub max_payload: usize,
    pub connector_name: Arc<str>,
    pub report_strategy: ReportStrategy,
    pub max_devices: usize,
}

impl Uplink {
    pub fn new(
        queue: Arc<Queue>,
        settings: UplinkSettings,
        last_values: Arc<LastValues>,
        limits: watch::Receiver<SessionLimits>,
    ) -> Self {
        Self {
            queue,
            max_payload: settings.max_payload,
            connector_name: settings.connector_name,
            filter: ReportFilter::new(settings.report_strategy),
            announced: IndexMap::new(),
            seen: 0,
            seen_in_batch: HashMap::new(),
            max_devices: settings.max_devices.max(1),
            last_values,
            limits,
            configured_max_payload: settings.max_payload,
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
                        self.seen += 1;
                        self.seen_in_batch.insert(message.device.name.clone(), self.seen);
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
        let seen_in_batch = std::mem::take(&mut self.seen_in_batch);
        for (name, seen) in &seen_in_batch {
            if let Some((_, last)) = self.announced.get_mut(name) {
                *last = *seen;
            }
        }
        let mut outbound = Vec::new();
        let new_devices: Vec<Arc<DeviceIdentity>> = batch
            .devices()
            .filter(|d| !self.announced.contains_key(&d.name))
            .cloned()
            .collect();
        for device in new_devices {
            outbound.push(Outbound::presence(
                Topic::Connect,
                device.name.clone(),
                api::connect_payload(&device),
            ));
            outbound.push(Outbound::new(
                Topic::Attributes,
                0,
                api::connector_attributes_payload(&device.name, &self.connector_name),
            ));
            debug!(device = %device.name, "device connected to ThingsBoard");
            let seen = seen_in_batch
                .get(&device.name)
                .copied()
                .unwrap_or(self.seen);
            self.announced.insert(device.name.clone(), (device, seen));
        }
        self.evict_silent_devices(&mut outbound);
        let attributes = batch.attributes_packed(self.max_payload);
        let telemetry = batch.telemetry_packed(self.max_payload);
        for too_large in attributes.too_large.iter().chain(&telemetry.too_large) {
            DatapointTooLarge {
                too_large,
                max_payload: self.max_payload,
            }
            .emit();
        }
        for (payload, _) in attributes.payloads {
            outbound.push(Outbound::new(Topic::Attributes, 0, payload));
        }
        for (payload, datapoints) in telemetry.payloads {
            outbound.push(Outbound::new(Topic::Telemetry, datapoints, payload));
        }
        self.queue.push(outbound).await;
        metrics()
            .datapoints_published
            .inc_by(batch.datapoints() as u64);
        debug!(datapoints = batch.datapoints(), "data to ThingsBoard");
    }

    /// Beyond `max_devices`, disconnects the longest silent tenth and forgets what is remembered
    /// of them (last values, report-strategy state); they are announced again if they send.
    fn evict_silent_devices(&mut self, outbound: &mut Vec<Outbound>) {
        if self.announced.len() <= self.max_devices {
            metrics().devices_connected.set(self.announced.len() as i64);
            return;
        }
        let keep = self.max_devices - self.max_devices / 10;
        let mut by_age: Vec<(u64, Arc<str>)> = self
            .announced
            .iter()
            .map(|(name, (_, last))| (*last, name.clone()))
            .collect();
        by_age.sort_unstable();
        let evicted: HashSet<Arc<str>> = by_age
            .into_iter()
            .take(self.announced.len() - keep)
            .map(|(_, name)| name)
            .collect();
        self.announced.retain(|name, _| !evicted.contains(name));
        for name in &evicted {
            outbound.push(Outbound::presence(
                Topic::Disconnect,
                name.clone(),
                api::disconnect_payload(name),
            ));
        }
        self.last_values.forget(&evicted);
        self.filter.forget_devices(&evicted);
        DevicesEvicted {
            count: evicted.len(),
            max_devices: self.max_devices,
        }
        .emit();
        metrics().devices_connected.set(self.announced.len() as i64);
    }

    async fn disconnect_all(&mut self) {
        let disconnects = self
            .announced
            .keys()
            .map(|name| {
                Outbound::presence(
                    Topic::Disconnect,
                    name.clone(),
                    api::disconnect_payload(name),
                )
            })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::FullPolicy;
    use connector_core::convert::Datapoint;

    fn message(device: &str, ts_ms: i64) -> ConvertedData {
        ConvertedData {
            device: Arc::new(DeviceIdentity {
                name: device.into(),
                device_type: "meter".into(),
            }),
            ts_ms,
            telemetry: vec![Datapoint {
                key: "v".into(),
                value: "1".into(),
                strategy: None,
            }],
            attributes: Vec::new(),
            decode_errors: 0,
        }
    }

    #[tokio::test]
    async fn beyond_max_devices_the_longest_silent_are_disconnected() {
        let queue = Queue::in_memory(1 << 20, FullPolicy::Block);
        let (limits_tx, limits) = watch::channel(SessionLimits::default());
        let settings = UplinkSettings {
            max_payload: 8196,
            connector_name: "C".into(),
            report_strategy: ReportStrategy::ON_RECEIVED,
            max_devices: 10,
        };
        let uplink = Uplink::new(queue.clone(), settings, Arc::default(), limits);
        let (data, received) = mpsc::channel(100);
        let task = tokio::spawn(uplink.run(received));
        // Ten devices, then "m0" again (so it is not the longest silent), then one more.
        for i in 0..10 {
            data.send(message(&format!("m{i}"), i)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        data.send(message("m0", 10)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        data.send(message("new", 11)).await.unwrap();
        drop(data);
        task.await.unwrap();
        drop(limits_tx);
        let records = queue.take_unsent(1000);
        let disconnected: Vec<&str> = records
            .iter()
            .filter(|r| r.topic == Topic::Disconnect)
            .filter_map(|r| r.device.as_deref())
            .collect();
        // 11 connected > 10: the longest silent down to 9 are evicted (m1, m2), then the
        // shutdown disconnects the nine left.
        assert_eq!(&disconnected[..2], ["m1", "m2"]);
        assert_eq!(disconnected.len(), 2 + 9);
        assert!(disconnected[2..].contains(&"m0"));
        assert!(disconnected[2..].contains(&"new"));
    }
}
