//! What the connector's probe endpoint (the `probes` crate) serves: its readiness ([`Health`]) and
//! its metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use connector_core::convert::ConvertedData;
use probes::Endpoint;
use tokio::sync::mpsc;

use crate::metrics::metrics;
use crate::queue::Queue;

/// The connector's readiness: the device socket is bound, the disk queue can be written, and
/// ThingsBoard is connected or the queue still takes data.
#[derive(Default)]
pub struct Health {
    pub listener_bound: AtomicBool,
    pub mqtt_connected: AtomicBool,
    queue: OnceLock<mpsc::WeakSender<ConvertedData>>,
    uplink_queue: OnceLock<Arc<Queue>>,
}

impl Health {
    pub fn watch_queue(&self, queue: &mpsc::Sender<ConvertedData>) {
        let _ = self.queue.set(queue.downgrade());
    }

    pub fn watch_uplink_queue(&self, queue: Arc<Queue>) {
        let _ = self.uplink_queue.set(queue);
    }

    /// `Ok` when ready, else the reason.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if !self.listener_bound.load(Ordering::Relaxed) {
            return Err("device socket not bound");
        }
        if self
            .uplink_queue
            .get()
            .is_some_and(|queue| queue.unwritable().is_some())
        {
            return Err("disk queue not writable (disk full or I/O error)");
        }
        if self.mqtt_connected.load(Ordering::Relaxed) {
            return Ok(());
        }
        let has_room = self
            .queue
            .get()
            .and_then(mpsc::WeakSender::upgrade)
            .is_some_and(|queue| queue.capacity() > 0);
        if has_room {
            Ok(())
        } else {
            Err("ThingsBoard not connected and the queue is full")
        }
    }
}

impl Endpoint for Health {
    fn readiness(&self) -> Result<(), &'static str> {
        Health::readiness(self)
    }

    fn metrics(&self) -> String {
        metrics().render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_the_listener_and_either_thingsboard_or_queue_room() {
        let health = Health::default();
        assert_eq!(health.readiness(), Err("device socket not bound"));
        health.listener_bound.store(true, Ordering::Relaxed);
        // No queue yet and no ThingsBoard: nothing can take data.
        assert!(health.readiness().is_err());
        let (queue, _receiver) = mpsc::channel::<ConvertedData>(1);
        health.watch_queue(&queue);
        assert_eq!(health.readiness(), Ok(()));
        let filler = ConvertedData {
            device: std::sync::Arc::new(connector_core::convert::DeviceIdentity {
                name: "d".into(),
                device_type: "default".into(),
            }),
            ts_ms: 0,
            telemetry: Vec::new(),
            attributes: Vec::new(),
            decode_errors: 0,
        };
        queue.try_send(filler).unwrap();
        assert_eq!(
            health.readiness(),
            Err("ThingsBoard not connected and the queue is full")
        );
        health.mqtt_connected.store(true, Ordering::Relaxed);
        assert_eq!(health.readiness(), Ok(()));
    }
}
