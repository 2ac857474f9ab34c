//! The cooperative stop signal every task watches.

use tokio::sync::watch;

/// Resolves once the stop flag is true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard returned by wait_for is not Send; drop it before returning.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}
