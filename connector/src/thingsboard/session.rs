//! The MQTT session: owns rumqttc's event loop, sends the queue's records and the direct
//! publishes of other tasks, and deletes a record from the queue only when ThingsBoard
//! acknowledged it.
//!
//! Acknowledgements are matched to records through rumqttc's events: publishes leave the client
//! in the order they were handed to it, each announced by `Outgoing::Publish(pkid)`, and the
//! broker's `PubAck(pkid)` closes them. Because this task is the only one that publishes and also
//! polls the event loop, the order is exact. When the session is lost, rumqttc's own copies of
//! unacknowledged publishes are discarded (they would go out on a new clean session with stale
//! ids) and the queue is rewound: every unacknowledged record is sent again, oldest first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use indexmap::IndexMap;
use rumqttc::{AsyncClient, ConnectReturnCode, Event, EventLoop, Incoming, Outgoing, QoS};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};

use super::link::{self, explain, jitter, ConnectFailure, BACKOFF_MAX, BACKOFF_START};
use super::MqttSettings;
use crate::events::{ConnectionFailed, DatapointTooLarge, PoisonRecord};
use crate::http::Health;
use crate::metrics::metrics;
use crate::queue::{Queue, Record, Topic};
use connector_core::thingsboard::api::{repack, topic, DataTopic, Packed};
use connector_core::thingsboard::limits::{RateLimiter, SessionLimits};

/// What the downlink task hears from the MQTT session.
#[derive(Debug)]
pub enum DownlinkEvent {
    /// A new session: subscriptions must be made again.
    Connected,
    Message {
        topic: String,
        payload: Bytes,
    },
}

/// What the session subscribes to on every connect, before it sends anything, so that no answer
/// or update for data it sends can be missed.
pub const SUBSCRIPTIONS: [&str; 7] = [
    topic::ATTRIBUTES,
    topic::ATTRIBUTES_RESPONSE,
    topic::RPC,
    topic::GATEWAY_RPC_REQUESTS,
    topic::GATEWAY_RPC_RESPONSES,
    topic::GATEWAY_ATTRIBUTES,
    topic::GATEWAY_ATTRIBUTE_RESPONSES,
];

/// Publishes in flight (sent, not yet acknowledged) at most; rumqttc's inflight limit is the same.
pub const WINDOW: usize = 100;
/// Devices announced again at most when a session starts; rumqttc's request channel (1024) must
/// hold them and a full window.
const MAX_REANNOUNCED: usize = 512;
/// How often a stopping session checks whether the queue is drained.
const STOP_POLL: Duration = Duration::from_millis(20);
/// Direct publishes waiting for the session.
const DIRECT_CAPACITY: usize = 1024;

/// A publish that is not kept across a lost session: replies, requests and logs, which are only
/// meaningful while the session that asked for them lives.
#[derive(Debug)]
pub struct DirectPublish {
    pub topic: String,
    pub qos: QoS,
    pub payload: Bytes,
}

impl DirectPublish {
    fn new(topic: impl Into<String>, qos: QoS, payload: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            qos,
            payload: payload.into(),
        }
    }
}

/// Hands direct publishes to the session; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::Sender<DirectPublish>,
}

impl Publisher {
    pub fn channel() -> (Self, mpsc::Receiver<DirectPublish>) {
        let (tx, rx) = mpsc::channel(DIRECT_CAPACITY);
        (Self { tx }, rx)
    }

    /// Waits for room; false once the session has ended.
    pub async fn publish(
        &self,
        topic: impl Into<String>,
        qos: QoS,
        payload: impl Into<Bytes>,
    ) -> bool {
        let publish = DirectPublish::new(topic, qos, payload);
        self.tx.send(publish).await.is_ok()
    }

    /// False when the session is behind (full) or gone: the caller counts its drop.
    pub fn try_publish(
        &self,
        topic: impl Into<String>,
        qos: QoS,
        payload: impl Into<Bytes>,
    ) -> bool {
        self.tx
            .try_send(DirectPublish::new(topic, qos, payload))
            .is_ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Record(u64),
    /// One of the publishes a record was split into (it was queued under a larger payload
    /// limit); the record is acknowledged when all its parts are.
    Part(u64),
    Direct,
}

/// Sessions in a row that broke while the same record was the oldest one in flight before it is
/// quarantined. A broker that refuses a publish (too large for it, say) drops the connection
/// after acknowledging everything before it, so that record stays at the head.
const POISON_SESSIONS: u32 = 5;

pub struct Session {
    pub client: AsyncClient,
    pub event_loop: EventLoop,
    pub settings: MqttSettings,
    pub queue: Arc<Queue>,
    pub direct: mpsc::Receiver<DirectPublish>,
    pub downlink: mpsc::UnboundedSender<DownlinkEvent>,
    pub limits: watch::Receiver<SessionLimits>,
    pub health: Arc<Health>,
    pub stop: watch::Receiver<bool>,
    /// Bumped when credential or certificate files changed: the session reconnects with them.
    pub rotation: watch::Receiver<u64>,
}

/// What the session keeps between events.
struct Flight {
    /// Handed to rumqttc, packet id not known yet (in order).
    unnumbered: VecDeque<Sent>,
    inflight: HashMap<u16, (Sent, Instant)>,
    /// Taken from the queue, waiting for the rate limiter.
    ready: VecDeque<Record>,
    /// Devices connected in ThingsBoard, announced again on every new session.
    announced: IndexMap<Arc<str>, Bytes>,
    /// Parts of split records not yet acknowledged.
    parts: HashMap<u64, u32>,
    /// Largest payload ThingsBoard takes now (its session limits, else the configured size).
    max_payload: usize,
    /// The record that was the oldest in flight when sessions broke, and how many in a row.
    suspect: Option<(u64, u32)>,
    message_rate: RateLimiter,
    telemetry_rate: RateLimiter,
    datapoint_rate: RateLimiter,
    started: Instant,
}

impl Flight {
    fn in_window(&self) -> usize {
        self.unnumbered.len() + self.inflight.len()
    }

    fn room(&self) -> usize {
        WINDOW.saturating_sub(self.in_window())
    }

    /// How long until the rate limits allow this publish (zero: now, and it is counted).
    fn admit(&mut self, topic: Topic, datapoints: u32) -> Duration {
        let now = self.started.elapsed();
        let telemetry = topic == Topic::Telemetry;
        let mut wait = self.message_rate.delay(1.0, now);
        if telemetry {
            wait = wait
                .max(self.telemetry_rate.delay(1.0, now))
                .max(self.datapoint_rate.delay(f64::from(datapoints), now));
        }
        if wait.is_zero() {
            self.message_rate.take(1.0, now);
            if telemetry {
                self.telemetry_rate.take(1.0, now);
                self.datapoint_rate.take(f64::from(datapoints), now);
            }
        }
        wait
    }

    fn apply(&mut self, limits: &SessionLimits, configured_max_payload: usize) {
        self.max_payload = limits
            .max_payload
            .unwrap_or(configured_max_payload)
            .min(super::link::MAX_PAYLOAD);
        let now = self.started.elapsed();
        self.message_rate = RateLimiter::new(&limits.messages, now);
        self.telemetry_rate = RateLimiter::new(&limits.telemetry_messages, now);
        self.datapoint_rate = RateLimiter::new(&limits.telemetry_datapoints, now);
    }

    /// Remembers which devices ThingsBoard knows, from the connect and disconnect records sent.
    fn track_device(&mut self, record: &Record) {
        let Some(name) = &record.device else {
            return;
        };
        match record.topic {
            Topic::Connect => {
                self.announced.insert(name.clone(), record.payload.clone());
            }
            Topic::Disconnect => {
                self.announced.shift_remove(name);
            }
            _ => {}
        }
    }

    /// The oldest record in flight, if any.
    fn oldest_record(&self) -> Option<u64> {
        self.unnumbered
            .iter()
            .chain(self.inflight.values().map(|(sent, _)| sent))
            .filter_map(|sent| match sent {
                Sent::Record(id) | Sent::Part(id) => Some(*id),
                Sent::Direct => None,
            })
            .min()
    }
}

impl Session {
    /// Runs until stopped: after `stop`, until the queue is closed and fully acknowledged (then
    /// the MQTT session is closed cleanly), or until the caller's grace period gives up on it.
    pub async fn run(mut self) {
        let endpoint = format!("{}:{}", self.settings.host, self.settings.port);
        let mut flight = Flight {
            unnumbered: VecDeque::new(),
            inflight: HashMap::new(),
            ready: VecDeque::new(),
            announced: IndexMap::new(),
            parts: HashMap::new(),
            max_payload: self.settings.max_payload,
            suspect: None,
            message_rate: RateLimiter::default(),
            telemetry_rate: RateLimiter::default(),
            datapoint_rate: RateLimiter::default(),
            started: Instant::now(),
        };
        let mut backoff = BACKOFF_START;
        let mut connected = false;
        let mut connected_once = false;
        let mut stopping = false;
        let mut disconnecting = false;
        let mut rate_wait: Option<Instant> = None;
        let mut sync = self.queue.sync_interval().map(tokio::time::interval);
        loop {
            if stopping && !disconnecting && self.queue.is_drained() && flight.in_window() == 0 {
                if !connected {
                    return;
                }
                disconnecting = true;
                if self.client.try_disconnect().is_err() {
                    return;
                }
            }
            let can_send = connected && !disconnecting && rate_wait.is_none() && flight.room() > 0;
            let have_ready = !flight.ready.is_empty();
            tokio::select! {
                biased;
                polled = self.event_loop.poll() => match polled {
                    Ok(Event::Incoming(Incoming::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
                        info!(%endpoint, tls = self.settings.tls.is_some(), "connected to ThingsBoard");
                        backoff = BACKOFF_START;
                        connected = true;
                        self.health.connected();
                        metrics().mqtt_connected.set(1);
                        if connected_once {
                            metrics().mqtt_reconnects.inc();
                        }
                        connected_once = true;
                        // Subscribed before anything is published: ThingsBoard's answers and
                        // updates for what follows cannot arrive before the subscriptions.
                        for topic in SUBSCRIPTIONS {
                            if let Err(error) = self.client.try_subscribe(topic, QoS::AtLeastOnce) {
                                warn!(topic, %error, "subscribing failed");
                            }
                        }
                        let _ = self.downlink.send(DownlinkEvent::Connected);
                        // ThingsBoard forgets gateway devices with the session (and connects a
                        // device again by itself when data for it arrives, so a cap is harmless).
                        let devices: Vec<Bytes> = flight.announced.values().take(MAX_REANNOUNCED).cloned().collect();
                        for payload in devices {
                            submit(&self.client, &mut flight, Topic::Connect.name(), self.settings.qos, payload, Sent::Direct).await;
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(sent) = flight.unnumbered.pop_front() {
                            if pkid == 0 {
                                self.acknowledged(&mut flight, sent, Instant::now());
                            } else {
                                flight.inflight.insert(pkid, (sent, Instant::now()));
                            }
                        }
                    }
                    Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                        if let Some((sent, at)) = flight.inflight.remove(&ack.pkid) {
                            self.acknowledged(&mut flight, sent, at);
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(publish))) => {
                        let _ = self.downlink.send(DownlinkEvent::Message {
                            topic: publish.topic,
                            payload: publish.payload,
                        });
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                        debug!("MQTT disconnect sent");
                        return;
                    }
                    Ok(event) => trace!(?event, "mqtt"),
                    Err(error) => {
                        self.session_lost(&mut flight, connected);
                        let was_connected = std::mem::take(&mut connected);
                        if was_connected {
                            metrics().mqtt_connected.set(0);
                        }
                        if disconnecting || (stopping && self.queue.is_drained()) {
                            return;
                        }
                        let delay = jitter(backoff);
                        let (failure, hint) = explain(&error);
                        self.health.disconnected(failure, &hint);
                        ConnectionFailed {
                            endpoint: &endpoint,
                            failure,
                            hint: &hint,
                            was_connected,
                            retry_in: delay,
                            queued: self.queue.depth().0,
                        }
                        .emit();
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = crate::stop::stopped(&mut self.stop), if !stopping => {
                                stopping = true;
                            }
                            // New credentials: try them now, not after the backoff.
                            Ok(()) = self.rotation.changed() => {
                                self.rotate_credentials(&mut flight, &mut connected, &endpoint);
                                backoff = BACKOFF_START;
                                continue;
                            }
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                },
                _ = crate::stop::stopped(&mut self.stop), if !stopping => {
                    stopping = true;
                }
                _ = sleep_until(rate_wait), if rate_wait.is_some() => {
                    rate_wait = None;
                }
                // Direct publishes answer requests that time out: not held by the rate limiter.
                Some(direct) = self.direct.recv(), if connected && !disconnecting && flight.room() > 0 => {
                    submit(&self.client, &mut flight, &direct.topic, direct.qos, direct.payload, Sent::Direct).await;
                }
                _ = unsent_or_ready(&self.queue, have_ready), if can_send => {
                    if flight.ready.is_empty() {
                        flight.ready.extend(self.queue.take_unsent(flight.room()));
                    }
                    self.apply_limits(&mut flight);
                    while flight.room() > 0 {
                        let Some(record) = flight.ready.pop_front() else { break };
                        let wait = flight.admit(record.topic, record.datapoints);
                        if !wait.is_zero() {
                            flight.ready.push_front(record);
                            rate_wait = Some(Instant::now() + wait);
                            break;
                        }
                        flight.track_device(&record);
                        send_record(&self.client, &self.queue, self.settings.qos, &mut flight, record).await;
                    }
                }
                _ = tick(&mut sync) => self.queue.sync(),
                Ok(()) = self.rotation.changed() => {
                    self.rotate_credentials(&mut flight, &mut connected, &endpoint);
                }
                // While stopping, look again for the queue to be drained and closed.
                _ = tokio::time::sleep(STOP_POLL), if stopping => {}
            }
        }
    }

    /// Credential or certificate files changed: a new client with them (the session is lost and
    /// the queue replayed, as on any reconnect), or, if they cannot be used, the current one.
    fn rotate_credentials(&mut self, flight: &mut Flight, connected: &mut bool, endpoint: &str) {
        match link::client(&self.settings) {
            Ok((client, event_loop)) => {
                info!(%endpoint, "credentials or certificates changed; reconnecting with them");
                self.session_lost(flight, false);
                if std::mem::take(connected) {
                    metrics().mqtt_connected.set(0);
                }
                self.client = client;
                self.event_loop = event_loop;
            }
            Err(error) => {
                let hint =
                    format!("changed credentials not used, keeping the current ones: {error}");
                self.health
                    .disconnected(ConnectFailure::CredentialsFile, &hint);
                ConnectionFailed {
                    endpoint,
                    failure: ConnectFailure::CredentialsFile,
                    hint: &hint,
                    was_connected: false,
                    retry_in: Duration::ZERO,
                    queued: self.queue.depth().0,
                }
                .emit();
            }
        }
    }

    fn apply_limits(&mut self, flight: &mut Flight) {
        if self.limits.has_changed().unwrap_or(false) {
            let limits = self.limits.borrow_and_update().clone();
            flight.apply(&limits, self.settings.max_payload);
        }
    }
}

/// Publishes a record, split into parts when it was queued under a larger payload limit
/// than ThingsBoard takes now. What cannot be sent at all leaves the queue, counted.
async fn send_record(
    client: &AsyncClient,
    queue: &Queue,
    qos: QoS,
    flight: &mut Flight,
    record: Record,
) {
    let topic = record.topic.name();
    let data_topic = match record.topic {
        Topic::Telemetry => Some(DataTopic::Telemetry),
        Topic::Attributes => Some(DataTopic::Attributes),
        Topic::Connect | Topic::Disconnect => None,
    };
    let too_large = record.payload.len() > flight.max_payload;
    let Some(data_topic) = data_topic.filter(|_| too_large) else {
        submit(
            client,
            flight,
            topic,
            qos,
            record.payload,
            Sent::Record(record.id),
        )
        .await;
        return;
    };
    let packed = match repack(data_topic, &record.payload, flight.max_payload) {
        Ok(packed) => packed,
        Err(error) => {
            warn!(topic, bytes = record.payload.len(), %error, "queued publish above the payload limit cannot be split; dropped");
            Packed::default()
        }
    };
    for too_large in &packed.too_large {
        DatapointTooLarge {
            too_large,
            max_payload: flight.max_payload,
        }
        .emit();
    }
    if packed.payloads.is_empty() {
        queue.discard(record.id);
        return;
    }
    debug!(
        id = record.id,
        parts = packed.payloads.len(),
        "queued publish split below ThingsBoard's payload limit"
    );
    flight.parts.insert(record.id, packed.payloads.len() as u32);
    for (payload, _) in packed.payloads {
        submit(
            client,
            flight,
            topic,
            qos,
            Bytes::from(payload),
            Sent::Part(record.id),
        )
        .await;
    }
}

/// Hands a publish to rumqttc and remembers what it carries until its packet id is known.
async fn submit(
    client: &AsyncClient,
    flight: &mut Flight,
    topic: &str,
    qos: QoS,
    payload: Bytes,
    sent: Sent,
) {
    trace!(topic, payload = %String::from_utf8_lossy(&payload), "publish");
    let name = topic.strip_prefix("v1/gateway/").unwrap_or(topic);
    // The request channel holds more than the window, so this does not wait.
    match client.publish_bytes(topic, qos, false, payload).await {
        Ok(()) => {
            flight.unnumbered.push_back(sent);
            metrics()
                .messages_published
                .with_label_values(&[name])
                .inc();
        }
        Err(error) => debug!(%error, "MQTT client stopped"),
    }
}

impl Session {
    fn acknowledged(&self, flight: &mut Flight, sent: Sent, at: Instant) {
        let id = match sent {
            Sent::Record(id) => id,
            Sent::Part(id) => {
                let Some(remaining) = flight.parts.get_mut(&id) else {
                    return;
                };
                *remaining = remaining.saturating_sub(1);
                if *remaining > 0 {
                    return;
                }
                flight.parts.remove(&id);
                id
            }
            Sent::Direct => return,
        };
        if flight.suspect.is_some_and(|(suspect, _)| suspect == id) {
            flight.suspect = None;
        }
        self.queue.ack(id);
        metrics()
            .publish_ack_latency
            .observe(at.elapsed().as_secs_f64());
    }

    /// Drops the session's view of what was in flight and rumqttc's copies of it, and makes the
    /// queue send everything unacknowledged again. A record that was the oldest in flight each
    /// time the last [`POISON_SESSIONS`] established sessions broke is quarantined.
    fn session_lost(&mut self, flight: &mut Flight, established: bool) {
        // Acknowledgements read before the error are real: apply them first.
        let buffered: Vec<Event> = self.event_loop.state.events.drain(..).collect();
        for event in buffered {
            match event {
                Event::Outgoing(Outgoing::Publish(pkid)) => {
                    if let Some(sent) = flight.unnumbered.pop_front() {
                        flight.inflight.insert(pkid, (sent, Instant::now()));
                    }
                }
                Event::Incoming(Incoming::PubAck(ack)) => {
                    if let Some((sent, at)) = flight.inflight.remove(&ack.pkid) {
                        self.acknowledged(flight, sent, at);
                    }
                }
                _ => {}
            }
        }
        self.event_loop.pending.clear();
        if established {
            if let Some(oldest) = flight.oldest_record() {
                let sessions = match flight.suspect {
                    Some((id, count)) if id == oldest => count + 1,
                    _ => 1,
                };
                flight.suspect = Some((oldest, sessions));
                if sessions >= POISON_SESSIONS {
                    if let Some((topic, bytes)) = self.queue.discard(oldest) {
                        PoisonRecord {
                            topic: topic.name(),
                            bytes,
                            sessions,
                        }
                        .emit();
                    }
                    flight.suspect = None;
                }
            }
        }
        let lost = flight.in_window();
        flight.unnumbered.clear();
        flight.inflight.clear();
        flight.ready.clear();
        flight.parts.clear();
        self.queue.rewind();
        if lost > 0 {
            debug!(lost, "unacknowledged publishes will be sent again");
        }
    }
}

async fn unsent_or_ready(queue: &Queue, have_ready: bool) {
    if !have_ready {
        queue.unsent().await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}
