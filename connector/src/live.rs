//! The part of the running connector that a hot reload replaces: the configuration and what was
//! built from it. Readers take the current snapshot without locking; a reload swaps in a new one
//! and bumps the generation, so connections notice and re-match their peer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use connector_core::build::Built;
use connector_core::config::ConnectorConfig;
use connector_core::load::LoadedConfig;

use crate::metrics::DeviceCounters;

/// One generation of the configuration.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<ConnectorConfig>,
    pub built: Arc<Built>,
    /// Each device's series of the per-device metrics, looked up once (same order as the devices).
    pub counters: Vec<DeviceCounters>,
}

impl Snapshot {
    fn new(generation: u64, loaded: &LoadedConfig) -> Self {
        let counters = loaded
            .built
            .devices
            .devices()
            .iter()
            .map(|device| DeviceCounters::new(device.name()))
            .collect();
        Self {
            generation,
            config: Arc::new(loaded.config.clone()),
            built: loaded.built.clone(),
            counters,
        }
    }
}

pub struct Live {
    current: ArcSwap<Snapshot>,
    generation: AtomicU64,
}

impl Live {
    pub fn new(loaded: &LoadedConfig) -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::new(0, loaded)),
            generation: AtomicU64::new(0),
        }
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Cheap check for readers holding a snapshot.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Installs a new configuration; returns the snapshots before and after.
    pub fn replace(&self, loaded: &LoadedConfig) -> (Arc<Snapshot>, Arc<Snapshot>) {
        let old = self.load();
        let new = Arc::new(Snapshot::new(old.generation + 1, loaded));
        self.current.store(new.clone());
        self.generation.store(new.generation, Ordering::Release);
        (old, new)
    }
}
