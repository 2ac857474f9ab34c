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
use crate::thingsboard::renames::Renames;
use connector_core::config::ReportStrategy;
use connector_core::convert::{ConvertedData, Datapoint, DeviceIdentity};
use connector_core::report::ReportFilter;
use connector_core::thingsboard::api::{self, UplinkBatch};
use connector_core::thingsboard::limits::SessionLimits;
use connector_core::thingsboard::renames::DeviceRenames;

/// Converted messages in one round of publishes at most, unless `minPackSizeToSend` says otherwise.
pub const DEFAULT_MAX_MESSAGES_PER_BATCH: usize = 4096;
/// Without `minPackSendDelayMS`, on tokio's current-thread scheduler (one worker): no linger.
/// The uplink runs after every connection a wake-up read (read coalescing gathers the frames of
/// many devices into one), so a batch already takes all of them; a linger would delay them again.
pub const DEFAULT_LINGER_CURRENT_THREAD: Duration = Duration::ZERO;
/// Without `minPackSendDelayMS`, on the multi-thread scheduler: its LIFO slot runs the uplink
/// right after the first connection that hands it a frame, so a wake-up's frames would go out a
/// few at a time; 1 ms gathers them (docs/benchmarks.md#read-coalescing measures both).
pub const DEFAULT_LINGER_MULTI_THREAD: Duration = Duration::from_millis(1);
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
    linger: Duration,
    max_messages: usize,
    renames: Arc<Renames>,
    /// The identities of renamed devices under their new names, for the renamings in `renamed_by`.
    renamed: HashMap<Arc<str>, Arc<DeviceIdentity>>,
    renamed_by: Arc<DeviceRenames>,
}

/// How the uplink gathers converted messages into one round of publishes, ThingsBoard's
/// `minPackSendDelayMS` and `minPackSizeToSend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// After a batch's first message, how long to wait for more (zero: publish what is waiting);
    /// `None`: the runtime's [`default_linger`].
    pub linger: Option<Duration>,
    /// A batch is published as soon as it holds this many messages.
    pub max_messages: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            linger: None,
            max_messages: DEFAULT_MAX_MESSAGES_PER_BATCH,
        }
    }
}

/// The linger without `minPackSendDelayMS`, for the scheduler the uplink runs on.
pub fn default_linger() -> Duration {
    match tokio::runtime::Handle::try_current().map(|runtime| runtime.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::CurrentThread) => DEFAULT_LINGER_CURRENT_THREAD,
        _ => DEFAULT_LINGER_MULTI_THREAD,
    }
}

/// What the uplink needs besides the queue and the shared state.
pub struct UplinkSettings {
    pub max_payload: usize,
    pub connector_name: Arc<str>,
    pub report_strategy: ReportStrategy,
    pub max_devices: usize,
    pub batching: Batching,
    /// Devices renamed in ThingsBoard: their data goes out under the new names.
    pub renames: Arc<Renames>,
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
            linger: settings.batching.linger.unwrap_or_else(default_linger),
            max_messages: settings.batching.max_messages.max(1),
            renamed_by: settings.renames.current(),
            renames: settings.renames,
            renamed: HashMap::new(),
        }
    }

    /// Runs until `data` is closed (all producers gone), then queues the devices' disconnects
    /// and closes the queue. While `active` is false (ThingsBoard lists the connector as
    /// inactive) its devices are disconnected, as the gateway does when it closes a connector.
    pub async fn run(
        mut self,
        mut data: mpsc::Receiver<ConvertedData>,
        mut active: watch::Receiver<bool>,
    ) {
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        let max_messages = self.max_messages;
        let mut incoming = Vec::with_capacity(max_messages.min(DEFAULT_MAX_MESSAGES_PER_BATCH));
        loop {
            let periodic_wait = self
                .filter
                .next_due_ms()
                .map(|due| Duration::from_millis(due.saturating_sub(now_ms()).max(0) as u64));
            tokio::select! {
                received = data.recv_many(&mut incoming, max_messages) => {
                    if received == 0 {
                        break;
                    }
                    self.linger(&mut data, &mut incoming).await;
                    let metrics = metrics();
                    metrics.queue_messages.set(data.len() as i64);
                    let now = now_ms();
                    let mut batch = UplinkBatch::new();
                    let mut read_at = Vec::with_capacity(incoming.len());
                    self.follow_renames();
                    // `get` asks for the configured name, so before renaming.
                    self.last_values.record_all(&incoming);
                    let mut messages = incoming.drain(..).peekable();
                    while let Some(mut message) = messages.next() {
                        self.seen += 1;
                        // A device's last message in a run of its messages stands for the run.
                        let run_goes_on = messages
                            .peek()
                            .is_some_and(|next| Arc::ptr_eq(&next.device, &message.device));
                        self.rename(&mut message);
                        if !run_goes_on {
                            self.seen_in_batch.insert(message.device.name.clone(), self.seen);
                        }
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
                    self.follow_renames();
                    for mut message in self.filter.due(now_ms()) {
                        self.rename(&mut message);
                        batch.add(message);
                    }
                    self.publish(batch).await;
                }
                _ = sweep.tick() => self.filter.sweep(now_ms()),
                Ok(()) = active.changed() => {
                    if !*active.borrow_and_update() {
                        self.disconnect_all().await;
                    }
                }
            }
        }
        self.disconnect_all().await;
        self.queue.close();
    }

    /// Takes the renamings ThingsBoard sent since the last batch.
    fn follow_renames(&mut self) {
        let current = self.renames.current();
        if !Arc::ptr_eq(&current, &self.renamed_by) {
            self.renamed.clear();
            self.renamed_by = current;
        }
    }

    /// A device renamed in ThingsBoard is connected and sends under its new name.
    fn rename(&mut self, message: &mut ConvertedData) {
        if self.renamed_by.is_empty() {
            return;
        }
        let configured = &message.device;
        let new_name = self.renamed_by.in_thingsboard(&configured.name);
        if *new_name == *configured.name {
            return;
        }
        let identity = self
            .renamed
            .entry(configured.name.clone())
            .or_insert_with(|| {
                Arc::new(DeviceIdentity {
                    name: new_name.into(),
                    device_type: configured.device_type.clone(),
                })
            });
        message.device = identity.clone();
    }

    /// Waits up to the linger for more messages, until the batch is full or the producers are
    /// gone. At moderate rates this is what packs many frames into one publish: without it,
    /// almost every frame would become its own MQTT message. (Sleeping through the linger in
    /// 1 ms steps instead of receiving as messages come packed fewer frames per publish for the
    /// same CPU: docs/benchmarks.md.)
    async fn linger(
        &self,
        data: &mut mpsc::Receiver<ConvertedData>,
        incoming: &mut Vec<ConvertedData>,
    ) {
        if self.linger.is_zero() {
            // The connections this same wake-up read deliver once they have run; the first of
            // them woke the uplink, which the multi-thread scheduler runs next (its LIFO slot).
            // One yield lets the others run first, so that the frames of one wake-up (read
            // coalescing gathers many) go out in one publish.
            tokio::task::yield_now().await;
            let room = self.max_messages.saturating_sub(incoming.len());
            for _ in 0..room {
                let Ok(message) = data.try_recv() else { break };
                incoming.push(message);
            }
            return;
        }
        // The linger counts from when the oldest message was read, not from when the uplink got
        // to it: a message that already waited while the previous batch was published goes
        // out with the next one at once, so the linger bounds the latency it adds.
        let waited_ms = incoming
            .first()
            .map_or(0, |oldest| (now_ms() - oldest.ts_ms).max(0) as u64);
        let Some(remaining) = self.linger.checked_sub(Duration::from_millis(waited_ms)) else {
            return;
        };
        // One timer for the linger, not one per message received during it.
        let deadline = tokio::time::sleep(remaining);
        tokio::pin!(deadline);
        // Lingering is for filling a publish: once the batch would fill one, waiting longer only
        // adds latency (at 100,000 frames/s it fills in about a millisecond).
        let mut bytes: usize = incoming.iter().map(estimated_bytes).sum();
        while incoming.len() < self.max_messages && bytes < self.max_payload {
            let room = self.max_messages - incoming.len();
            let before = incoming.len();
            let received = tokio::select! {
                biased;
                received = data.recv_many(incoming, room) => received,
                () = &mut deadline => 0,
            };
            if received == 0 {
                break;
            }
            bytes += incoming[before..]
                .iter()
                .map(estimated_bytes)
                .sum::<usize>();
        }
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
        by_age.truncate(self.announced.len() - keep);
        // The longest silent first.
        let evicted: Vec<Arc<str>> = by_age.into_iter().map(|(_, name)| name).collect();
        self.disconnect(&evicted, outbound);
        DevicesEvicted {
            count: evicted.len(),
            max_devices: self.max_devices,
        }
        .emit();
    }

    /// Disconnects these devices in ThingsBoard and forgets what is remembered of them (last
    /// values, report-strategy state); they are announced again if they send.
    fn disconnect(&mut self, devices: &[Arc<str>], outbound: &mut Vec<Outbound>) {
        let names: HashSet<Arc<str>> = devices.iter().cloned().collect();
        self.announced.retain(|name, _| !names.contains(name));
        for name in devices {
            outbound.push(Outbound::presence(
                Topic::Disconnect,
                name.clone(),
                api::disconnect_payload(name),
            ));
        }
        let configured: HashSet<Arc<str>> = names
            .iter()
            .map(|name| Arc::from(self.renamed_by.configured(name)))
            .collect();
        self.last_values.forget(&configured);
        self.filter.forget_devices(&names);
        metrics().devices_connected.set(self.announced.len() as i64);
    }

    async fn disconnect_all(&mut self) {
        let devices: Vec<Arc<str>> = self.announced.keys().cloned().collect();
        let mut disconnects = Vec::with_capacity(devices.len());
        self.disconnect(&devices, &mut disconnects);
        self.queue.push(disconnects).await;
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

/// About the bytes a message adds to gateway-API publishes: its keys and values with their JSON
/// punctuation, and its device's entry (counted for every message, so it errs on the large side).
fn estimated_bytes(message: &ConvertedData) -> usize {
    let datapoint = |point: &Datapoint| {
        point.key.len()
            + 6
            + match &point.value {
                serde_json::Value::String(text) => text.len(),
                _ => 8,
            }
    };
    let datapoints: usize = message
        .telemetry
        .iter()
        .chain(&message.attributes)
        .map(datapoint)
        .sum();
    32 + message.device.name.len() + datapoints
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

    /// The queue, its data sender, the task and the session-limits sender (kept alive by the
    /// caller).
    type RunningUplink = (
        Arc<Queue>,
        mpsc::Sender<ConvertedData>,
        tokio::task::JoinHandle<()>,
        watch::Sender<SessionLimits>,
    );

    /// An uplink task on an in-memory queue.
    fn running_uplink(max_payload: usize, max_devices: usize, batching: Batching) -> RunningUplink {
        let (uplink, _active) = switchable_uplink(max_payload, max_devices, batching);
        uplink
    }

    /// As [`running_uplink`], with the sender that switches the connector inactive.
    fn switchable_uplink(
        max_payload: usize,
        max_devices: usize,
        batching: Batching,
    ) -> (RunningUplink, watch::Sender<bool>) {
        let queue = Queue::in_memory(1 << 20, FullPolicy::Block);
        let (limits_tx, limits) = watch::channel(SessionLimits::default());
        let settings = UplinkSettings {
            max_payload,
            connector_name: "C".into(),
            report_strategy: ReportStrategy::ON_RECEIVED,
            max_devices,
            batching,
            renames: Arc::new(Renames::open(true, None)),
        };
        let uplink = Uplink::new(queue.clone(), settings, Arc::default(), limits);
        let (data, received) = mpsc::channel(100);
        let (active, active_rx) = watch::channel(true);
        let task = tokio::spawn(uplink.run(received, active_rx));
        ((queue, data, task, limits_tx), active)
    }

    #[tokio::test]
    async fn an_inactive_connector_disconnects_its_devices_and_announces_them_again_when_they_send()
    {
        let ((queue, data, task, _limits_tx), active) =
            switchable_uplink(8196, 10, Batching::default());
        data.send(message("m1", 1)).await.unwrap();
        data.send(message("m2", 2)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        active.send(false).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let records = queue.take_unsent(1000);
        let of = |records: &[crate::queue::Record], topic: Topic| -> Vec<String> {
            let mut devices: Vec<String> = records
                .iter()
                .filter(|r| r.topic == topic)
                .filter_map(|r| r.device.as_deref().map(str::to_owned))
                .collect();
            devices.sort();
            devices
        };
        assert_eq!(of(&records, Topic::Connect), ["m1", "m2"]);
        assert_eq!(of(&records, Topic::Disconnect), ["m1", "m2"]);
        // Listed again, a device that sends is connected again; the shutdown disconnects it.
        active.send(true).unwrap();
        data.send(message("m1", 3)).await.unwrap();
        drop(data);
        task.await.unwrap();
        let records = queue.take_unsent(1000);
        assert_eq!(of(&records, Topic::Connect), ["m1"]);
        assert_eq!(of(&records, Topic::Disconnect), ["m1"]);
    }

    #[tokio::test]
    async fn beyond_max_devices_the_longest_silent_are_disconnected() {
        let (queue, data, task, limits_tx) = running_uplink(8196, 10, Batching::default());
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

    /// Sends one message of each of `devices` devices, `gap` apart, through an uplink with
    /// `batching`; returns the telemetry and attribute publishes queued.
    async fn publishes_for(devices: usize, gap: Duration, batching: Batching) -> (usize, usize) {
        publishes_of(devices, gap, batching, 0).await
    }

    /// As [`publishes_for`], the messages read `waited_ms` before they are sent to the uplink.
    async fn publishes_of(
        devices: usize,
        gap: Duration,
        batching: Batching,
        waited_ms: i64,
    ) -> (usize, usize) {
        let (queue, data, task, _limits_tx) = running_uplink(8196, 1000, batching);
        for i in 0..devices {
            let mut message = message(&format!("m{i}"), now_ms() - waited_ms);
            message.attributes.push(Datapoint {
                key: "a".into(),
                value: "1".into(),
                strategy: None,
            });
            data.send(message).await.unwrap();
            tokio::time::sleep(gap).await;
        }
        drop(data);
        task.await.unwrap();
        let records = queue.take_unsent(10_000);
        let count = |topic: Topic| records.iter().filter(|r| r.topic == topic).count();
        // One connectorName attribute publish per new device comes with the announcements.
        (count(Topic::Telemetry), count(Topic::Attributes) - devices)
    }

    #[tokio::test]
    async fn the_linger_packs_messages_that_trickle_in_into_one_publish() {
        let linger = Batching {
            linger: Some(Duration::from_millis(500)),
            max_messages: 1000,
        };
        let (telemetry, attributes) = publishes_for(10, Duration::from_millis(3), linger).await;
        assert_eq!((telemetry, attributes), (1, 1));
        // Without it every message that arrives alone is published alone.
        let none = Batching {
            linger: Some(Duration::ZERO),
            max_messages: 1000,
        };
        let (telemetry, attributes) = publishes_for(10, Duration::from_millis(3), none).await;
        assert_eq!((telemetry, attributes), (10, 10));
    }

    #[tokio::test]
    async fn the_linger_counts_from_when_the_oldest_message_was_read() {
        // Read 1 s ago (it waited while an earlier batch was published): out at once, alone.
        let batching = Batching {
            linger: Some(Duration::from_millis(500)),
            max_messages: 1000,
        };
        let (telemetry, _) = publishes_of(3, Duration::from_millis(100), batching, 1000).await;
        assert_eq!(telemetry, 3);
        // Read just now: the same three 100 ms apart wait for each other.
        let (telemetry, _) = publishes_of(3, Duration::from_millis(100), batching, 0).await;
        assert_eq!(telemetry, 1);
    }

    #[tokio::test]
    async fn a_batch_that_fills_a_publish_does_not_wait_for_the_linger() {
        let (queue, data, task, _limits_tx) = running_uplink(
            1024,
            1000,
            Batching {
                linger: Some(Duration::from_secs(30)),
                max_messages: 1000,
            },
        );
        // About 40 bytes each: 40 of them are more than one 1024-byte publish holds.
        for i in 0..40 {
            data.send(message("m", now_ms() + i)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let published = queue.take_unsent(1000);
        assert!(
            published.iter().any(|r| r.topic == Topic::Telemetry),
            "nothing published within 500 ms of a 30 s linger"
        );
        drop(data);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_full_batch_is_published_without_waiting_for_the_linger() {
        let batching = Batching {
            linger: Some(Duration::from_secs(30)),
            max_messages: 4,
        };
        let started = std::time::Instant::now();
        let (telemetry, _) = publishes_for(8, Duration::ZERO, batching).await;
        assert_eq!(telemetry, 2);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn without_a_setting_one_worker_publishes_what_one_wake_up_read() {
        assert_eq!(default_linger(), Duration::ZERO);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_a_setting_several_workers_linger_a_millisecond() {
        assert_eq!(default_linger(), Duration::from_millis(1));
    }
}
