//! The disk side of the queue: one fjall keyspace, key = record id (big-endian u64, so keys sort
//! in queue order), value = topic byte, datapoints (big-endian u32), payload. The store holds a
//! contiguous run of ids; the queue keeps no per-record index in memory, only counters, and reads
//! records back in id order, so its memory does not grow with what the disk holds.
//!
//! fjall was chosen over a hand-written segment log: its journal is an append-only log with
//! checksums and crash recovery, its batches are atomic, and it reaches the throughput target
//! (docs/benchmarks.md). Deletions are weak tombstones, which vanish when they meet the record
//! they delete during compaction, so a queue that is written and deleted in order stays small.
//! A failed write poisons a fjall database for good, so the queue closes it and opens it again
//! to recover (see `Queue::recover`).

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{Fsync, Record, Topic};

const KEYSPACE: &str = "uplink";
/// Topic byte and datapoint count before the payload.
const HEADER: usize = 5;

pub struct DiskStore {
    db: Database,
    records: Keyspace,
    fsync: Fsync,
}

/// What a store holds: ids `first..next`, their count and payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub first: u64,
    pub next: u64,
    pub records: u64,
    pub bytes: u64,
}

impl DiskStore {
    pub fn open(directory: &Path, fsync: Fsync) -> anyhow::Result<Self> {
        std::fs::create_dir_all(directory)
            .with_context(|| format!("cannot create queue directory {}", directory.display()))?;
        let db = Database::builder(directory)
            // Small caches: the queue reads back only what its in-memory cache does not hold.
            .cache_size(1 << 20)
            .worker_threads(1)
            .open()
            .with_context(|| {
                format!(
                    "cannot open the queue in {} (is another connector using it?)",
                    directory.display()
                )
            })?;
        let records = db
            // Records are deleted soon after they are written, so a small memtable costs little
            // and keeps the connector within 16 MiB (28 MiB with fjall's default 8 MiB).
            .keyspace(KEYSPACE, || {
                KeyspaceCreateOptions::default().max_memtable_size(2 << 20)
            })
            .context("cannot open the queue's keyspace")?;
        Ok(Self { db, records, fsync })
    }

    /// Counts what the store holds in one pass over it, without keeping any of it.
    pub fn summary(&self) -> anyhow::Result<Summary> {
        let mut summary = Summary::default();
        for guard in self.records.iter() {
            let (key, value) = guard.into_inner().context("cannot read the stored queue")?;
            let Some(id) = id_of(&key) else {
                continue;
            };
            if summary.records == 0 {
                summary.first = id;
            }
            summary.next = id + 1;
            summary.records += 1;
            summary.bytes += value.len().saturating_sub(HEADER) as u64;
        }
        Ok(summary)
    }

    /// Records with ids in `range`, at most `limit`, in id order.
    pub fn read(&self, range: Range<u64>, limit: usize) -> fjall::Result<Vec<Record>> {
        let mut records = Vec::new();
        for guard in self
            .records
            .range(range.start.to_be_bytes()..range.end.to_be_bytes())
            .take(limit)
        {
            let (key, value) = guard.into_inner()?;
            match decode(&key, &value) {
                Some(record) => records.push(record),
                None => {
                    tracing::warn!(key = ?&*key, "skipping an unreadable record in the stored queue")
                }
            }
        }
        Ok(records)
    }

    /// Payload bytes of one record, if stored.
    pub fn size_of(&self, id: u64) -> fjall::Result<Option<u64>> {
        Ok(self
            .records
            .get(id.to_be_bytes())?
            .map(|value| value.len().saturating_sub(HEADER) as u64))
    }

    /// Writes new records and deletes the ids in `removes` in one atomic batch, made durable per
    /// the fsync policy.
    pub fn write(&self, inserts: &[&Record], removes: Range<u64>) -> fjall::Result<()> {
        let durability = match self.fsync {
            Fsync::Always => PersistMode::SyncData,
            // Flushed from fjall's journal buffer to the OS at every commit, so that a killed
            // process loses nothing already queued. `durability(None)` would leave up to 8 KiB
            // of the latest batches in that user-space buffer.
            Fsync::Never | Fsync::Every(_) => PersistMode::Buffer,
        };
        let mut batch = self.db.batch().durability(Some(durability));
        for record in inserts {
            let mut value = Vec::with_capacity(record.payload.len() + HEADER);
            value.push(record.topic as u8);
            value.extend_from_slice(&record.datapoints.to_be_bytes());
            value.extend_from_slice(&record.payload);
            batch.insert(&self.records, record.id.to_be_bytes(), value);
        }
        for id in removes {
            batch.remove_weak(&self.records, id.to_be_bytes());
        }
        batch.commit()
    }

    /// Deletes acknowledged records. Never synced: a deletion lost in a crash only means the
    /// record is sent again.
    pub fn remove(&self, ids: Range<u64>) -> fjall::Result<()> {
        let mut batch = self.db.batch();
        for id in ids {
            batch.remove_weak(&self.records, id.to_be_bytes());
        }
        batch.commit()
    }

    pub fn sync(&self) -> fjall::Result<()> {
        self.db.persist(PersistMode::SyncData)
    }
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        let _ = self.db.persist(PersistMode::SyncData);
    }
}

fn id_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

fn decode(key: &[u8], value: &[u8]) -> Option<Record> {
    let id = id_of(key)?;
    let (&code, rest) = value.split_first()?;
    let (datapoints, payload) = rest.split_first_chunk::<4>()?;
    let topic = Topic::from_code(code)?;
    let payload = Bytes::copy_from_slice(payload);
    Some(Record {
        id,
        topic,
        datapoints: u32::from_be_bytes(*datapoints),
        device: device_of(topic, &payload),
        payload,
    })
}

/// The device a connect or disconnect record is about (the session re-announces connected
/// devices after a reconnect). Only replayed records are read back this way.
fn device_of(topic: Topic, payload: &[u8]) -> Option<Arc<str>> {
    if !matches!(topic, Topic::Connect | Topic::Disconnect) {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    value.get("device")?.as_str().map(Arc::from)
}
