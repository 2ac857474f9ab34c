//! The uplink queue: gateway-API publishes between the uplink task, which packs converted data
//! into them, and the MQTT session, which sends them.
//!
//! A record leaves the queue only when ThingsBoard acknowledged it (PUBACK at QoS 1; written to
//! the socket at QoS 0). Records are sent in the order they were pushed, and after a lost session
//! every unacknowledged record is sent again from the oldest, so delivery is at-least-once and
//! ordered. The queue is bounded in bytes; what happens when it is full is the [`FullPolicy`].
//! In [`Storage::Disk`] mode every record is also written to an embedded LSM store (fjall) and the
//! queue is rebuilt from it at start, so records survive a restart.

mod disk;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tracing::{error, info};

use crate::metrics::metrics;
use connector_core::thingsboard::api::topic;
use disk::DiskStore;

pub use connector_core::settings::{Fsync, FullPolicy};

use crate::events::{QueueDiskError, QueueFullDrops};

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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    pub storage: Storage,
    /// Most bytes of payload the queue holds.
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
}

impl Outbound {
    pub fn new(topic: Topic, datapoints: usize, payload: impl Into<Bytes>) -> Self {
        Self {
            topic,
            datapoints: u32::try_from(datapoints).unwrap_or(u32::MAX),
            payload: payload.into(),
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
}

/// What became of pushed records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pushed {
    pub accepted: usize,
    /// New records dropped (drop-newest, or a disk write that failed).
    pub dropped_new: usize,
    /// Old records deleted to make room (drop-oldest).
    pub dropped_old: usize,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    topic: Topic,
    datapoints: u32,
    size: u64,
    acked: bool,
    /// The payload, kept in memory always in memory mode and, in disk mode, while the cache has
    /// room (so a connected session rarely reads the disk).
    payload: Option<Bytes>,
}

#[derive(Debug, Default)]
struct State {
    /// In id order. Records leave only from the front (acknowledged or dropped oldest), so ids
    /// are consecutive except after a disk write failed while the record was kept in memory.
    entries: VecDeque<Entry>,
    /// Id of the next record to send.
    cursor: u64,
    next_id: u64,
    bytes: u64,
    cached_bytes: u64,
    closed: bool,
    /// Drop-newest dropped a record and nothing has left the queue since: later records are
    /// dropped too, even small ones that would fit, so what is kept is the oldest data without
    /// holes.
    refusing_new: bool,
}

impl State {
    fn front_id(&self) -> u64 {
        self.entries.front().map_or(self.next_id, |entry| entry.id)
    }

    fn index(&self, id: u64) -> Option<usize> {
        self.entries
            .binary_search_by_key(&id, |entry| entry.id)
            .ok()
    }

    /// Index of the first record with this id or a later one.
    fn position(&self, id: u64) -> usize {
        self.entries.partition_point(|entry| entry.id < id)
    }

    /// Appends a record; its payload stays in memory if `keep` or the disk cache has room.
    fn append(&mut self, outbound: Outbound, keep: bool) -> u64 {
        let Outbound {
            topic,
            datapoints,
            payload,
        } = outbound;
        let id = self.next_id;
        let size = payload.len() as u64;
        let cache = keep || self.cached_bytes + size <= DISK_CACHE_BYTES;
        if cache {
            self.cached_bytes += size;
        }
        self.entries.push_back(Entry {
            id,
            topic,
            datapoints,
            size,
            acked: false,
            payload: cache.then_some(payload),
        });
        self.bytes += size;
        self.next_id += 1;
        id
    }

    fn pop_front(&mut self) -> Option<Entry> {
        let entry = self.entries.pop_front()?;
        self.bytes -= entry.size;
        if entry.payload.is_some() {
            self.cached_bytes -= entry.size;
        }
        self.cursor = self.cursor.max(self.front_id());
        Some(entry)
    }
}

/// Bytes of cached payloads a disk queue keeps in memory.
const DISK_CACHE_BYTES: u64 = 4 << 20;

pub struct Queue {
    state: Mutex<State>,
    settings: QueueSettings,
    disk: Option<DiskStore>,
    /// Wakes the session when records are pushed.
    unsent: Notify,
    /// Wakes a blocked pusher when records leave.
    room: Notify,
}

impl Queue {
    /// Opens the queue; in disk mode the records of an earlier run are loaded for replay.
    pub fn open(settings: QueueSettings) -> anyhow::Result<Arc<Self>> {
        let mut state = State::default();
        let disk = match &settings.storage {
            Storage::Memory => None,
            Storage::Disk { directory, fsync } => {
                let store = DiskStore::open(directory, *fsync)?;
                for record in store.load()? {
                    let size = record.payload.len() as u64;
                    let payload = (state.cached_bytes + size <= DISK_CACHE_BYTES).then(|| {
                        state.cached_bytes += size;
                        record.payload
                    });
                    let id = record.id;
                    state.entries.push_back(Entry {
                        id,
                        topic: record.topic,
                        datapoints: record.datapoints,
                        size,
                        acked: false,
                        payload,
                    });
                    state.bytes += size;
                    state.next_id = id + 1;
                }
                state.cursor = state.front_id();
                if !state.entries.is_empty() {
                    info!(
                        records = state.entries.len(),
                        bytes = state.bytes,
                        directory = %directory.display(),
                        "replaying records queued by an earlier run"
                    );
                }
                Some(store)
            }
        };
        let queue = Arc::new(Self {
            state: Mutex::new(state),
            settings,
            disk,
            unsent: Notify::new(),
            room: Notify::new(),
        });
        queue.update_gauges(&queue.lock());
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
    /// until they fit; a single record larger than the whole queue is accepted into an empty one.
    /// In disk mode records become visible to the session only once written.
    pub async fn push(&self, records: Vec<Outbound>) -> Pushed {
        let mut pushed = Pushed::default();
        let mut records = records.into_iter().peekable();
        let max_bytes = self.settings.max_bytes;
        let fits =
            |state: &State, size: u64| state.entries.is_empty() || state.bytes + size <= max_bytes;
        loop {
            let room = self.room.notified();
            let mut blocked = false;
            let mut appended = 0;
            {
                let mut state = self.lock();
                let mut inserts: VecDeque<Record> = VecDeque::new();
                let mut removes = Vec::new();
                while let Some(next) = records.peek() {
                    let size = next.payload.len() as u64;
                    let refused =
                        state.refusing_new && self.settings.full_policy == FullPolicy::DropNewest;
                    if refused || !fits(&state, size) {
                        match self.settings.full_policy {
                            FullPolicy::Block => {
                                blocked = true;
                                break;
                            }
                            FullPolicy::DropNewest => {
                                records.next();
                                pushed.dropped_new += 1;
                                state.refusing_new = true;
                                continue;
                            }
                            FullPolicy::DropOldest => {
                                while !fits(&state, size) {
                                    let Some(entry) = state.pop_front() else {
                                        break;
                                    };
                                    pushed.dropped_old += 1;
                                    // A record of this very push never reached the disk.
                                    if inserts.front().is_some_and(|record| record.id == entry.id) {
                                        inserts.pop_front();
                                    } else {
                                        removes.push(entry.id);
                                    }
                                }
                            }
                        }
                    }
                    let Some(outbound) = records.next() else {
                        break;
                    };
                    let record = self.disk.is_some().then(|| outbound.clone());
                    let id = state.append(outbound, self.disk.is_none());
                    appended += 1;
                    if let Some(record) = record {
                        inserts.push_back(Record {
                            id,
                            topic: record.topic,
                            datapoints: record.datapoints,
                            payload: record.payload,
                        });
                    }
                }
                if let Some(disk) = &self.disk {
                    if let Err(err) = disk.write(inserts.make_contiguous(), &removes) {
                        // The records stay in memory and are still delivered while this process
                        // lives; they are only not replayed after a restart.
                        QueueDiskError {
                            records: inserts.len() + removes.len(),
                            consequence: "cannot write the uplink queue to disk, records kept in memory only",
                            error: &err,
                        }
                        .emit();
                    }
                }
                pushed.accepted += appended;
                self.update_gauges(&state);
            }
            if appended > 0 {
                self.unsent.notify_one();
            }
            if !blocked {
                break;
            }
            room.await;
        }
        QueueFullDrops {
            oldest: pushed.dropped_old,
            newest: pushed.dropped_new,
            max_bytes: self.settings.max_bytes,
        }
        .emit();
        pushed
    }

    fn delete(&self, ids: &[u64]) {
        if let (Some(disk), false) = (&self.disk, ids.is_empty()) {
            if let Err(err) = disk.remove(ids) {
                QueueDiskError {
                    records: ids.len(),
                    consequence: "cannot delete acknowledged records (they will be sent again after a restart)",
                    error: &err,
                }
                .emit();
            }
        }
    }

    /// Takes up to `max` records not sent yet in this session, oldest first, and marks them sent.
    pub fn take_unsent(&self, max: usize) -> Vec<Record> {
        let mut state = self.lock();
        let mut records = Vec::new();
        let mut index = state.position(state.cursor);
        while records.len() < max && index < state.entries.len() {
            let entry = &state.entries[index];
            index += 1;
            if entry.acked {
                continue;
            }
            let payload = match (&entry.payload, &self.disk) {
                (Some(payload), _) => Some(payload.clone()),
                (None, Some(disk)) => disk.get(entry.id).ok().flatten(),
                (None, None) => None,
            };
            match payload {
                Some(payload) => records.push(Record {
                    id: entry.id,
                    topic: entry.topic,
                    datapoints: entry.datapoints,
                    payload,
                }),
                None => error!(id = entry.id, "record missing from the disk queue; skipped"),
            }
        }
        state.cursor = state
            .entries
            .get(index)
            .map_or(state.next_id, |entry| entry.id);
        records
    }

    /// ThingsBoard acknowledged this record: it leaves the queue once all older records have.
    pub fn ack(&self, id: u64) {
        let removed = {
            let mut state = self.lock();
            let Some(index) = state.index(id) else {
                return;
            };
            state.entries[index].acked = true;
            let mut removed = Vec::new();
            while state.entries.front().is_some_and(|entry| entry.acked) {
                if let Some(entry) = state.pop_front() {
                    removed.push(entry.id);
                }
            }
            if !removed.is_empty() {
                state.refusing_new = false;
            }
            self.update_gauges(&state);
            removed
        };
        if !removed.is_empty() {
            self.delete(&removed);
            self.room.notify_one();
        }
    }

    /// The session was lost: everything not acknowledged is sent again, oldest first.
    pub fn rewind(&self) {
        let mut state = self.lock();
        state.cursor = state.front_id();
        if !state.entries.is_empty() {
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
        state
            .entries
            .range(state.position(state.cursor)..)
            .any(|entry| !entry.acked)
    }

    /// No more records will be pushed (the uplink ended).
    pub fn close(&self) {
        self.lock().closed = true;
        self.unsent.notify_one();
    }

    /// Closed and every record acknowledged.
    pub fn is_drained(&self) -> bool {
        let state = self.lock();
        state.closed && state.entries.is_empty()
    }

    /// Records and bytes waiting (sent or not) for an acknowledgement.
    pub fn depth(&self) -> (usize, u64) {
        let state = self.lock();
        (state.entries.len(), state.bytes)
    }

    /// Forces what was written to disk onto the device (fsync), whatever the policy.
    pub fn sync(&self) {
        if let Some(disk) = &self.disk {
            if let Err(err) = disk.sync() {
                error!(%err, "cannot fsync the disk queue");
            }
        }
    }

    /// How often the disk queue must be synced by a timer, if at all.
    pub fn sync_interval(&self) -> Option<Duration> {
        match &self.settings.storage {
            Storage::Disk {
                fsync: Fsync::Every(every),
                ..
            } => Some(*every),
            _ => None,
        }
    }

    fn update_gauges(&self, state: &State) {
        let metrics = metrics();
        metrics.queue_records.set(state.entries.len() as i64);
        metrics.queue_bytes.set(state.bytes as i64);
    }
}

#[cfg(test)]
mod tests;
