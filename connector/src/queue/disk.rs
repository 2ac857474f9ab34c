//! The disk side of the queue: one fjall keyspace, key = record id (big-endian u64, so keys sort
//! in queue order), value = topic byte, datapoints (big-endian u32), payload.
//!
//! fjall was chosen over a hand-written segment log: its journal is an append-only log with
//! checksums and crash recovery, its batches are atomic, and it reaches the throughput target
//! (docs/benchmarks.md). Deletions are weak tombstones, which vanish when they meet the record
//! they delete during compaction, so a queue that is written and deleted in order stays small.

use std::path::Path;

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

impl DiskStore {
    pub fn open(directory: &Path, fsync: Fsync) -> anyhow::Result<Self> {
        std::fs::create_dir_all(directory)
            .with_context(|| format!("cannot create queue directory {}", directory.display()))?;
        let db = Database::builder(directory)
            // Small caches: the queue reads back only what the in-memory cache does not hold.
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

    /// Every stored record in id order.
    pub fn load(&self) -> anyhow::Result<Vec<Record>> {
        let mut records = Vec::new();
        for guard in self.records.iter() {
            let (key, value) = guard.into_inner().context("cannot read the stored queue")?;
            match decode(&key, &value) {
                Some(record) => records.push(record),
                None => {
                    tracing::warn!(key = ?&*key, "skipping an unreadable record in the stored queue")
                }
            }
        }
        Ok(records)
    }

    /// Writes new records and deletes dropped ones in one atomic batch, made durable per the
    /// fsync policy.
    pub fn write(&self, inserts: &[Record], removes: &[u64]) -> fjall::Result<()> {
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
    pub fn remove(&self, ids: &[u64]) -> fjall::Result<()> {
        let mut batch = self.db.batch();
        for id in ids {
            batch.remove_weak(&self.records, id.to_be_bytes());
        }
        batch.commit()
    }

    pub fn get(&self, id: u64) -> fjall::Result<Option<Bytes>> {
        Ok(self
            .records
            .get(id.to_be_bytes())?
            .and_then(|value| value.get(HEADER..).map(Bytes::copy_from_slice)))
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

fn decode(key: &[u8], value: &[u8]) -> Option<Record> {
    let id = u64::from_be_bytes(key.try_into().ok()?);
    let (&code, rest) = value.split_first()?;
    let (datapoints, payload) = rest.split_first_chunk::<4>()?;
    Some(Record {
        id,
        topic: Topic::from_code(code)?,
        datapoints: u32::from_be_bytes(*datapoints),
        payload: Bytes::copy_from_slice(payload),
    })
}
