//! The part of the running connector that a hot reload replaces: the configuration and the
//! device table built from it. Readers take the current snapshot without locking; a reload
//! swaps in a new one and bumps the generation, so connections notice and re-match their peer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::ConnectorConfig;
use crate::report::ReportStrategy;
use crate::router::Router;

/// One generation of the configuration.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<ConnectorConfig>,
    pub router: Arc<Router>,
}

pub struct Live {
    current: ArcSwap<Snapshot>,
    generation: AtomicU64,
    /// The gateway-wide report strategy (`--report-strategy`), the last level of the cascade.
    global_strategy: ReportStrategy,
}

impl Live {
    pub fn new(config: ConnectorConfig, global_strategy: ReportStrategy) -> Self {
        let router = Arc::new(Router::new(&config, global_strategy));
        Self {
            current: ArcSwap::from_pointee(Snapshot {
                generation: 0,
                config: Arc::new(config),
                router,
            }),
            generation: AtomicU64::new(0),
            global_strategy,
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
    pub fn replace(&self, config: ConnectorConfig) -> (Arc<Snapshot>, Arc<Snapshot>) {
        let router = Arc::new(Router::new(&config, self.global_strategy));
        let old = self.load();
        let new = Arc::new(Snapshot {
            generation: old.generation + 1,
            config: Arc::new(config),
            router,
        });
        self.current.store(new.clone());
        self.generation.store(new.generation, Ordering::Release);
        (old, new)
    }
}
