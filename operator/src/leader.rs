//! Leader election over a `coordination.k8s.io/v1` Lease (kube-lease-manager), so that several
//! operator replicas are safe: only the holder reconciles; a replica that loses the lease stops.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::build::FIELD_MANAGER;

pub struct Leadership {
    leading: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

/// Joins the election for the operator's Lease in `namespace`. `duration_s` is how long a lease
/// holds without renewal; `grace_s` how early it is renewed.
pub async fn join(
    client: Client,
    namespace: &str,
    identity: &str,
    duration_s: u64,
    grace_s: u64,
) -> Result<Leadership, LeaseManagerError> {
    let manager = LeaseManagerBuilder::new(client, FIELD_MANAGER)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(duration_s)
        .with_grace(grace_s)
        .build()
        .await?;
    let (leading, task) = manager.watch().await;
    Ok(Leadership { leading, task })
}

impl Leadership {
    pub fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// Resolves once this replica holds the lease.
    pub async fn acquired(&mut self) {
        while !*self.leading.borrow_and_update() {
            if self.leading.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Resolves when this replica no longer holds the lease.
    pub async fn lost(&mut self) {
        while *self.leading.borrow_and_update() {
            if self.leading.changed().await.is_err() {
                return;
            }
        }
    }

    /// Gives the lease up (so another replica takes over at once).
    pub async fn release(self) {
        drop(self.leading);
        let _ = self.task.await;
    }
}
