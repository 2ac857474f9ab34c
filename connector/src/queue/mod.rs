//! The uplink queue: gateway-API publishes between the uplink task, which packs converted data
//! into them, and the MQTT session, which sends them.
//!
//! A record leaves the queue only when ThingsBoard acknowledged it (PUBACK at QoS 1; written to
//! the socket at QoS 0). Records are sent in the order they were pushed, and after a lost session
//! every unacknowledged record is sent again from the oldest, so delivery is at-least-once and
//! ordered. The queue is bounded in bytes; what happens when it is full is the [`FullPolicy`].
//!
//! In [`Storage::Disk`] mode every record is written to an embedded LSM store (fjall) before it
//! is accepted, and the queue resumes from the store at start. Memory then holds counters, the
//! records in flight and a bounded cache of the newest records, whatever the store holds: replay
//! streams from disk. When the store cannot be written (disk full, I/O error) the queue says so
//! ([`Queue::unwritable`]), applies its policy to new records (block, or drop counted), and
//! reopens the store to recover once writing works again.

mod disk;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;
use tracing::{error, info};

use crate::events::{QueueDiskError, QueueDrops, QueueRecovered};
use crate::metrics::metrics;
use connector_core::thingsboard::api::topic;
use disk::DiskStore;

pub use connector_core::settings::{Fsync, FullPolicy};

/// Where records live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// In memory only: fastest; records are lost when the process ends.
    Memory,
    /// In an embedded store in this directory, replayed after a restart.
    Disk { directory: PathBuf, fsync: Fsync },
}

impl Storage {
    pub fn is_disk(&self) -> bool {
        matches!(self, Self::Disk { .. })
    }

    pub fn directory(&self) -> Option<&std::path::Path> {
        match self {
            Self::Memory => None,
            Self::Disk { directory, .. } => Some(directory),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    pub storage: Storage,
    /// Most bytes the queue holds (see [`Queue::charge`]).
    pub max_bytes: u64,
    pub full_policy: FullPolicy,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            storage: Storage::Memory,
            max_bytes: 64 << 20,
            full_policy: FullPolicy::Block,
        }
    }
}

/// The gateway-API topic of a record, stored as one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Connect = 0,
    Disconnect = 1,
    Attributes = 2,
    Telemetry = 3,
}

impl Topic {
    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => topic::CONNECT,
            Self::Disconnect => topic::DISCONNECT,
            Self::Attributes => topic::ATTRIBUTES,
            Self::Telemetry => topic::TELEMETRY,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        [
            Self::Connect,
            Self::Disconnect,
            Self::Attributes,
            Self::Telemetry,
        ]
        .into_iter()
        .find(|topic| *topic as u8 == code)
    }
}

/// A publish handed to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub topic: Topic,
    /// Telemetry datapoints in the payload (for ThingsBoard's datapoint rate limit).
    pub datapoints: u32,
    pub payload: Bytes,
    /// The device a connect or disconnect is about.
    pub device: Option<Arc<str>>,
}

impl Outbound {
    pub fn new(topic: Topic, datapoints: usize, payload: impl Into<Bytes>) -> Self {
        Self {
            topic,
            datapoints: u32::try_from(datapoints).unwrap_or(u32::MAX),
            payload: payload.into(),
            device: None,
        }
    }

    /// A connect or disconnect of `device`.
    pub fn presence(topic: Topic, device: Arc<str>, payload: impl Into<Bytes>) -> Self {
        Self {
            device: Some(device),
            ..Self::new(topic, 0, payload)
        }
    }

    fn into_record(self, id: u64) -> Record {
        Record {
            id,
            topic: self.topic,
            datapoints: self.datapoints,
            payload: self.payload,
            device: self.device,
        }
    }
}

/// One publish waiting in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    pub topic: Topic,
    pub datapoints: u32,
    pub payload: Bytes,
    pub device: Option<Arc<str>>,
}

/// What became of pushed records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pushed {
    pub accepted: usize,
    /// New records dropped by drop-newest.
    pub dropped_new: usize,
    /// Old records deleted to make room (drop-oldest).
    pub dropped_old: usize,
    /// New records dropped because the disk store could not be written (drop policies).
    pub dropped_unwritable: usize,
}

/// What a memory-mode record costs beyond its payload: the record itself, its slot and the
/// allocator's rounding (measured: docs/reliability.md), so that `max_bytes` bounds real memory.
pub const MEMORY_RECORD_OVERHEAD: u64 = 128;
/// Bytes of the newest records a disk queue keeps in memory, so a connected session rarely reads
/// the disk.
const DISK_CACHE_BYTES: u64 = 4 << 20;
/// How long after a failed disk write the queue tries the store again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// What a record counts against `max_bytes`: on disk its payload, in memory also its overhead.
fn charge(disk: bool, payload: usize) -> u64 {
    payload as u64 + if disk { 0 } else { MEMORY_RECORD_OVERHEAD }
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    charge: u64,
    acked: bool,
}

enum Store {
    Memory,
    Disk {
        /// `None` while closed after a failed write, until reopened.
        store: Option<DiskStore>,
        directory: PathBuf,
        fsync: Fsync,
    },
}

struct State {
    /// The queue holds the ids `head..next_id`, contiguous.
    head: u64,
    next_id: u64,
    /// Id of the next record to send.
    cursor: u64,
    /// Bytes charged against `max_bytes`.
    bytes: u64,
    /// Memory mode: every record, `head..next_id`. Disk mode: the newest records, at most
    /// [`DISK_CACHE_BYTES`].
    memory: VecDeque<Record>,
    memory_bytes: u64,
    /// Sent and not yet removed, in id order; acknowledged ones wait here for the older ones.
    in_flight: BTreeMap<u64, InFlight>,
    store: Store,
    /// The disk store could not be written, since when and why; over at the next good write.
    failure: Option<DiskFailure>,
    closed: bool,
    /// Drop-newest dropped a record and nothing has left the queue since: later records are
    /// dropped too, even small ones that would fit, so what is kept is the oldest data without
    /// holes.
    refusing_new: bool,
}

/// An episode of failed disk writes.
struct DiskFailure {
    reason: String,
    /// When to reopen the closed store (`None`: reopened, waiting for a write to succeed).
    retry_at: Option<Instant>,
}

/// What one round of a push would do, decided before anything changes.
#[derive(Default)]
struct Plan {
    /// Bytes and head after the round.
    bytes: u64,
    head: u64,
    next_id: u64,
    accepted: Vec<Record>,
    dropped_new: usize,
    dropped_old: usize,
    refusing: bool,
    /// Block: the rest waits for room.
    blocked: bool,
}

impl State {
    fn records(&self) -> u64 {
        self.next_id - self.head
    }

    fn is_disk(&self) -> bool {
        matches!(self.store, Store::Disk { .. })
    }

    fn disk(&self) -> Option<&DiskStore> {
        match &self.store {
            Store::Disk { store, .. } => store.as_ref(),
            Store::Memory => None,
        }
    }

    /// The record with this id, if it is in memory.
    fn in_memory(&self, id: u64) -> Option<&Record> {
        let first = self.memory.front()?.id;
        let index = usize::try_from(id.checked_sub(first)?).ok()?;
        self.memory.get(index)
    }

    /// What a stored record is charged (0 when it cannot be read: the store is closed).
    fn stored_charge(&self, id: u64) -> u64 {
        let disk = self.is_disk();
        if let Some(flight) = self.in_flight.get(&id) {
            return flight.charge;
        }
        if let Some(record) = self.in_memory(id) {
            return charge(disk, record.payload.len());
        }
        self.disk()
            .and_then(|store| store.size_of(id).ok().flatten())
            .unwrap_or(0)
    }

    /// Forgets the records below `to` (their bytes are the caller's to subtract).
    fn remove_below(&mut self, to: u64) {
        self.head = self.head.max(to);
        self.cursor = self.cursor.max(self.head);
        while self.memory.front().is_some_and(|r| r.id < self.head) {
            if let Some(record) = self.memory.pop_front() {
                self.memory_bytes -= record.payload.len() as u64;
            }
        }
        self.in_flight = self.in_flight.split_off(&self.head);
    }

    fn append(&mut self, record: Record) {
        let size = record.payload.len() as u64;
        self.next_id = record.id + 1;
        self.memory_bytes += size;
        self.memory.push_back(record);
        while self.is_disk() && self.memory_bytes > DISK_CACHE_BYTES && self.memory.len() > 1 {
            if let Some(old) = self.memory.pop_front() {
                self.memory_bytes -= old.payload.len() as u64;
            }
        }
    }

    /// A write failed: close the store (fjall refuses every write after one failed) and try
    /// again later. Logged once per episode, counted every time.
    fn mark_unwritable(&mut self, error: &dyn std::fmt::Display, records: usize) {
        QueueDiskError {
            records,
            consequence: "cannot write the uplink queue to disk",
            error,
            first: self.failure.is_none(),
        }
        .emit();
        if let Store::Disk { store, .. } = &mut self.store {
            *store = None;
        }
        self.failure = Some(DiskFailure {
            reason: error.to_string(),
            retry_at: Some(Instant::now() + RETRY_INTERVAL),
        });
    }

    /// A write succeeded: an episode of failures, if any, is over.
    fn written(&mut self) {
        if let Some(failure) = self.failure.take() {
            QueueRecovered {
                records: self.records(),
                reason: &failure.reason,
            }
            .emit();
        }
    }

    /// The store is closed after a failure, until this instant.
    fn closed_until(&self) -> Option<Instant> {
        self.failure.as_ref().and_then(|failure| failure.retry_at)
    }
}

pub struct Queue {
    state: Mutex<State>,
    settings: QueueSettings,
    /// Wakes the session when records are pushed.
    unsent: Notify,
    /// Wakes a blocked pusher when records leave.
    room: Notify,
}

impl Queue {
    /// Opens the queue; in disk mode it resumes with what the store holds from an earlier run.
    pub fn open(settings: QueueSettings) -> anyhow::Result<Arc<Self>> {
        let mut state = State {
            head: 0,
            next_id: 0,
            cursor: 0,
            bytes: 0,
            memory: VecDeque::new(),
            memory_bytes: 0,
            in_flight: BTreeMap::new(),
            store: Store::Memory,
            failure: None,
            closed: false,
            refusing_new: false,
        };
        if let Storage::Disk { directory, fsync } = &settings.storage {
            let store = DiskStore::open(directory, *fsync)?;
            let summary = store.summary()?;
            state.head = summary.first;
            state.next_id = summary.next;
            state.cursor = summary.first;
            state.bytes = summary.bytes;
            if summary.records > 0 {
                info!(
                    records = summary.records,
                    bytes = summary.bytes,
                    directory = %directory.display(),
                    "replaying records queued by an earlier run"
                );
            }
            state.store = Store::Disk {
                store: Some(store),
                directory: directory.clone(),
                fsync: *fsync,
            };
        }
        let queue = Arc::new(Self {
            state: Mutex::new(state),
            settings,
            unsent: Notify::new(),
            room: Notify::new(),
        });
        queue.update_gauges(&queue.lock());
        metrics()
            .queue_max_bytes
            .set(i64::try_from(queue.settings.max_bytes).unwrap_or(i64::MAX));
        Ok(queue)
    }

    /// An in-memory queue with these limits (tests and benchmarks).
    pub fn in_memory(max_bytes: u64, full_policy: FullPolicy) -> Arc<Self> {
        let settings = QueueSettings {
            storage: Storage::Memory,
            max_bytes,
            full_policy,
        };
        // Memory mode does no IO, so opening cannot fail.
        Self::open(settings).unwrap_or_else(|_| unreachable!("memory queue opens"))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent state (no partial updates across
        // awaits), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Appends records in order, applying the full policy. With [`FullPolicy::Block`] this waits
    /// until they fit, and in disk mode until the store can be written; a single record larger
    /// than the whole queue is accepted into an empty one. In disk mode records are accepted
    /// (and visible to the session) only once written.
    pub async fn push(&self, records: Vec<Outbound>) -> Pushed {
        let mut pushed = Pushed::default();
        let mut records: VecDeque<Outbound> = records.into();
        while !records.is_empty() {
            let room = self.room.notified();
            let retry_at = {
                let mut state = self.lock();
                let retry_at = self.push_round(&mut state, &mut records, &mut pushed);
                self.update_gauges(&state);
                retry_at
            };
            if pushed.accepted > 0 {
                self.unsent.notify_one();
            }
            if let Some(retry_at) = retry_at {
                let _ = tokio::time::timeout_at(retry_at.into(), room).await;
            }
        }
        QueueDrops {
            oldest: pushed.dropped_old,
            newest: pushed.dropped_new,
            unwritable: pushed.dropped_unwritable,
            max_bytes: self.settings.max_bytes,
        }
        .emit();
        pushed
    }

    /// Takes what fits of `records`; `Some(when)` to wait (for room, or to retry the store).
    fn push_round(
        &self,
        state: &mut State,
        records: &mut VecDeque<Outbound>,
        pushed: &mut Pushed,
    ) -> Option<Instant> {
        let policy = self.settings.full_policy;
        self.recover(state);
        if let Some(retry_at) = state.closed_until() {
            if policy == FullPolicy::Block {
                return Some(retry_at);
            }
            pushed.dropped_unwritable += records.len();
            records.clear();
            return None;
        }
        let plan = self.plan(state, records);
        pushed.dropped_new += plan.dropped_new;
        let stored_drops = state.head..plan.head.min(state.next_id);
        if let Some(store) = state.disk() {
            let inserts: Vec<&Record> = plan.accepted.iter().collect();
            if let Err(error) = store.write(&inserts, stored_drops.clone()) {
                state.mark_unwritable(&error, plan.accepted.len());
                // Nothing of this round happened: its records wait or are dropped next round.
                for record in plan.accepted.into_iter().rev() {
                    records.push_front(record.into_outbound());
                }
                return (policy == FullPolicy::Block).then(|| Instant::now() + RETRY_INTERVAL);
            }
            if !plan.accepted.is_empty() || !stored_drops.is_empty() {
                state.written();
            }
        }
        pushed.accepted += plan.accepted.len();
        pushed.dropped_old += plan.dropped_old;
        state.remove_below(plan.head.min(state.next_id));
        for record in plan.accepted {
            state.append(record);
        }
        // This push's own records that a later one of it pushed out never reached the store.
        state.remove_below(plan.head);
        state.next_id = state.next_id.max(plan.next_id);
        state.bytes = plan.bytes;
        state.refusing_new = plan.refusing;
        plan.blocked.then(|| Instant::now() + RETRY_INTERVAL)
    }

    /// Decides one round of a push against the full policy.
    fn plan(&self, state: &State, records: &mut VecDeque<Outbound>) -> Plan {
        let (max_bytes, policy, disk) = (
            self.settings.max_bytes,
            self.settings.full_policy,
            state.is_disk(),
        );
        let mut plan = Plan {
            bytes: state.bytes,
            head: state.head,
            next_id: state.next_id,
            refusing: state.refusing_new,
            ..Plan::default()
        };
        while let Some(next) = records.front() {
            let size = charge(disk, next.payload.len());
            let fits = |plan: &Plan| plan.head == plan.next_id || plan.bytes + size <= max_bytes;
            match policy {
                FullPolicy::DropNewest if plan.refusing || !fits(&plan) => {
                    records.pop_front();
                    plan.dropped_new += 1;
                    plan.refusing = true;
                    continue;
                }
                FullPolicy::DropOldest => {
                    while !fits(&plan) {
                        let freed = if plan.head < state.next_id {
                            state.stored_charge(plan.head)
                        } else {
                            let index = (plan.head - state.next_id) as usize;
                            plan.accepted
                                .get(index)
                                .map_or(0, |r| charge(disk, r.payload.len()))
                        };
                        plan.bytes = plan.bytes.saturating_sub(freed);
                        plan.head += 1;
                        plan.dropped_old += 1;
                    }
                }
                FullPolicy::Block if !fits(&plan) => {
                    plan.blocked = true;
                    break;
                }
                _ => {}
            }
            let Some(outbound) = records.pop_front() else {
                break;
            };
            plan.bytes += size;
            plan.accepted.push(outbound.into_record(plan.next_id));
            plan.next_id += 1;
        }
        let head = plan.head;
        plan.accepted.retain(|record| record.id >= head);
        plan
    }

    /// Reopens a store that could not be written, once its retry time has come, and reconciles
    /// the counters with what it holds. Acknowledged records whose deletion failed are deleted
    /// now; records of a batch that failed but reached the store anyway are kept (sent again:
    /// at-least-once).
    fn recover(&self, state: &mut State) {
        let Some(retry_at) = state.closed_until() else {
            return;
        };
        if Instant::now() < retry_at {
            return;
        }
        let Store::Disk {
            directory, fsync, ..
        } = &state.store
        else {
            return;
        };
        let reopened = DiskStore::open(directory, *fsync).and_then(|store| {
            let mut summary = store.summary()?;
            if summary.records > 0 && summary.first < state.head {
                store.remove(summary.first..state.head)?;
                summary = store.summary()?;
            }
            Ok((store, summary))
        });
        match reopened {
            Ok((store, summary)) => {
                if summary.records == 0 {
                    if state.records() > 0 {
                        error!(
                            records = state.records(),
                            "the reopened disk queue holds none of the records it accepted"
                        );
                    }
                    let next = state.next_id;
                    state.remove_below(next);
                    state.bytes = 0;
                } else {
                    state.remove_below(summary.first);
                    state.next_id = summary.next;
                    state.bytes = summary.bytes;
                    while state.memory.back().is_some_and(|r| r.id >= summary.next) {
                        if let Some(record) = state.memory.pop_back() {
                            state.memory_bytes -= record.payload.len() as u64;
                        }
                    }
                    state.cursor = state.cursor.min(state.next_id);
                }
                if let Store::Disk { store: slot, .. } = &mut state.store {
                    *slot = Some(store);
                }
                // Reopened; the episode ends with the next write that works.
                if let Some(failure) = &mut state.failure {
                    failure.retry_at = None;
                }
                self.unsent.notify_one();
            }
            Err(error) => {
                state.failure = Some(DiskFailure {
                    reason: format!("{error:#}"),
                    retry_at: Some(Instant::now() + RETRY_INTERVAL),
                });
            }
        }
    }

    /// Takes up to `max` records not sent yet in this session, oldest first, and marks them sent.
    pub fn take_unsent(&self, max: usize) -> Vec<Record> {
        let mut state = self.lock();
        let disk = state.is_disk();
        let mut records = Vec::new();
        let mut id = state.cursor.max(state.head);
        while records.len() < max && id < state.next_id {
            if state.in_flight.get(&id).is_some_and(|f| f.acked) {
                id += 1;
                continue;
            }
            if let Some(record) = state.in_memory(id) {
                records.push(record.clone());
                id += 1;
                continue;
            }
            // Below the cache: read a run from the store.
            let until = state
                .memory
                .front()
                .map_or(state.next_id, |r| r.id.max(id + 1));
            let Some(store) = state.disk() else {
                break; // closed after a failed write: only the cache can be sent until it reopens
            };
            match store.read(id..until, max - records.len()) {
                Ok(read) if !read.is_empty() => {
                    for record in read {
                        if record.id != id {
                            error!(
                                from = id,
                                to = record.id,
                                "records missing from the disk queue; skipped"
                            );
                        }
                        id = record.id + 1;
                        records.push(record);
                    }
                }
                Ok(_) => {
                    error!(
                        from = id,
                        to = until,
                        "records missing from the disk queue; skipped"
                    );
                    id = until;
                }
                Err(error) => {
                    error!(%error, "cannot read the disk queue");
                    break;
                }
            }
        }
        for record in &records {
            let charge = charge(disk, record.payload.len());
            state.in_flight.insert(
                record.id,
                InFlight {
                    charge,
                    acked: false,
                },
            );
        }
        state.cursor = id;
        records
    }

    /// ThingsBoard acknowledged this record: it leaves the queue once all older records have.
    pub fn ack(&self, id: u64) {
        let mut state = self.lock();
        let Some(flight) = state.in_flight.get_mut(&id) else {
            return;
        };
        flight.acked = true;
        let (from, mut to, mut freed) = (state.head, state.head, 0);
        for (&flight_id, flight) in &state.in_flight {
            if flight_id != to || !flight.acked {
                break;
            }
            freed += flight.charge;
            to += 1;
        }
        if to == from {
            return;
        }
        state.remove_below(to);
        state.bytes = state.bytes.saturating_sub(freed);
        state.refusing_new = false;
        if let Some(store) = state.disk() {
            match store.remove(from..to) {
                Ok(()) => state.written(),
                Err(error) => state.mark_unwritable(&error, 0),
            }
        }
        self.update_gauges(&state);
        drop(state);
        self.room.notify_one();
    }

    /// Takes a sent record out as if ThingsBoard had acknowledged it (it cannot be delivered:
    /// quarantined or nothing of it fits a publish). Returns its topic and size.
    pub fn discard(&self, id: u64) -> Option<(Topic, usize)> {
        let found = {
            let state = self.lock();
            let charge = state.in_flight.get(&id)?.charge;
            let topic = state
                .in_memory(id)
                .map(|r| r.topic)
                .unwrap_or(Topic::Telemetry);
            let disk = state.is_disk();
            let size = charge.saturating_sub(if disk { 0 } else { MEMORY_RECORD_OVERHEAD });
            (topic, size as usize)
        };
        self.ack(id);
        Some(found)
    }

    /// The session was lost: everything not acknowledged is sent again, oldest first.
    pub fn rewind(&self) {
        let mut state = self.lock();
        state.cursor = state.head;
        state.in_flight.retain(|_, flight| flight.acked);
        if state.records() > 0 {
            self.unsent.notify_one();
        }
    }

    /// Resolves when records wait to be sent (returns at once if some already do).
    pub async fn unsent(&self) {
        loop {
            let notified = self.unsent.notified();
            if self.has_unsent() {
                return;
            }
            notified.await;
        }
    }

    pub fn has_unsent(&self) -> bool {
        let state = self.lock();
        let cursor = state.cursor.max(state.head);
        let acked_ahead = state
            .in_flight
            .range(cursor..)
            .filter(|(_, f)| f.acked)
            .count() as u64;
        state.next_id.saturating_sub(cursor) > acked_ahead
    }

    /// No more records will be pushed (the uplink ended).
    pub fn close(&self) {
        self.lock().closed = true;
        self.unsent.notify_one();
    }

    /// Closed and every record acknowledged.
    pub fn is_drained(&self) -> bool {
        let state = self.lock();
        state.closed && state.records() == 0
    }

    /// Records and bytes waiting (sent or not) for an acknowledgement.
    pub fn depth(&self) -> (u64, u64) {
        let state = self.lock();
        (state.records(), state.bytes)
    }

    /// Why the disk store cannot be written, from a failed write until one succeeds again.
    pub fn unwritable(&self) -> Option<String> {
        self.lock()
            .failure
            .as_ref()
            .map(|failure| failure.reason.clone())
    }

    /// Forces what was written to disk onto the device (fsync), whatever the policy; also tries
    /// to reopen a store that could not be written.
    pub fn sync(&self) {
        let mut state = self.lock();
        self.recover(&mut state);
        if let Some(store) = state.disk() {
            if let Err(err) = store.sync() {
                error!(%err, "cannot fsync the disk queue");
            }
        }
        self.update_gauges(&state);
    }

    /// How often the session must call [`Self::sync`] (fsync interval, or retrying the store).
    pub fn sync_interval(&self) -> Option<Duration> {
        match &self.settings.storage {
            Storage::Disk {
                fsync: Fsync::Every(every),
                ..
            } => Some((*every).min(RETRY_INTERVAL)),
            Storage::Disk { .. } => Some(RETRY_INTERVAL),
            Storage::Memory => None,
        }
    }

    fn update_gauges(&self, state: &State) {
        let metrics = metrics();
        metrics
            .queue_records
            .set(i64::try_from(state.records()).unwrap_or(i64::MAX));
        metrics
            .queue_bytes
            .set(i64::try_from(state.bytes).unwrap_or(i64::MAX));
        metrics
            .queue_writable
            .set(i64::from(state.failure.is_none()));
    }
}

impl Record {
    fn into_outbound(self) -> Outbound {
        Outbound {
            topic: self.topic,
            datapoints: self.datapoints,
            payload: self.payload,
            device: self.device,
        }
    }
}

#[cfg(test)]
mod tests;
