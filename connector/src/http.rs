//! What the connector's probe endpoint (the `probes` crate) serves: its readiness ([`Health`]),
//! its metrics, and `/status`: whether ThingsBoard is connected and, if not, why (the operator
//! reads it into the SocketConnector's `ThingsBoardConnected` condition).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use connector_core::convert::ConvertedData;
use probes::Endpoint;
use tokio::sync::mpsc;

use crate::metrics::metrics;
use crate::queue::Queue;
use crate::thingsboard::link::ConnectFailure;

/// The connector's readiness: the device socket is bound, the disk queue can be written, and
/// ThingsBoard is connected or the queue still takes data.
#[derive(Default)]
pub struct Health {
    pub listener_bound: AtomicBool,
    /// ThingsBoard lists the connector as inactive (`active_connectors`): the socket is closed.
    pub switched_off_in_thingsboard: AtomicBool,
    pub mqtt_connected: AtomicBool,
    /// When ThingsBoard's UI saved the running configuration (its `ts`); none while it is the
    /// configuration file's.
    edited_in_thingsboard_at: Mutex<Option<i64>>,
    queue: OnceLock<mpsc::WeakSender<ConvertedData>>,
    uplink_queue: OnceLock<Arc<Queue>>,
    /// Why the last connection attempt failed, while not connected.
    last_failure: Mutex<Option<(ConnectFailure, String)>>,
}

impl Health {
    pub fn watch_queue(&self, queue: &mpsc::Sender<ConvertedData>) {
        let _ = self.queue.set(queue.downgrade());
    }

    pub fn watch_uplink_queue(&self, queue: Arc<Queue>) {
        let _ = self.uplink_queue.set(queue);
    }

    pub fn connected(&self) {
        self.mqtt_connected.store(true, Ordering::Relaxed);
        *self.failure() = None;
    }

    pub fn disconnected(&self, failure: ConnectFailure, hint: &str) {
        self.mqtt_connected.store(false, Ordering::Relaxed);
        *self.failure() = Some((failure, hint.to_owned()));
    }

    fn failure(&self) -> std::sync::MutexGuard<'_, Option<(ConnectFailure, String)>> {
        self.last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The running configuration is one ThingsBoard's UI saved at `ts` (ms), or, with `None`,
    /// the configuration file's.
    pub fn configured_from(&self, edited_in_thingsboard_at: Option<i64>) {
        *self
            .edited_in_thingsboard_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = edited_in_thingsboard_at;
    }

    /// `{"thingsboard": {"connected": true}, "configuration": {"source": "file"},
    /// "deviceSocket": {"open": true}}`: `thingsboard` with the `reason` and `message` of the
    /// last failed attempt while not connected; `configuration` `{"source": "thingsboard",
    /// "savedAtMs": ...}` after an edit in ThingsBoard's UI; `deviceSocket` with `"reason":
    /// "inactive_in_thingsboard"` while ThingsBoard switches the connector off.
    pub fn status(&self) -> serde_json::Value {
        let connected = self.mqtt_connected.load(Ordering::Relaxed);
        let mut thingsboard = serde_json::json!({ "connected": connected });
        if let (false, Some((failure, hint))) = (connected, self.failure().as_ref()) {
            thingsboard["reason"] = failure.label().into();
            thingsboard["message"] = hint.clone().into();
        }
        let edited = *self
            .edited_in_thingsboard_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let configuration = match edited {
            Some(ts) => serde_json::json!({"source": "thingsboard", "savedAtMs": ts}),
            None => serde_json::json!({"source": "file"}),
        };
        let mut device_socket =
            serde_json::json!({ "open": self.listener_bound.load(Ordering::Relaxed) });
        if self.switched_off_in_thingsboard.load(Ordering::Relaxed) {
            device_socket["reason"] = "inactive_in_thingsboard".into();
        }
        serde_json::json!({
            "thingsboard": thingsboard,
            "configuration": configuration,
            "deviceSocket": device_socket,
        })
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

    fn status(&self) -> String {
        Health::status(self).to_string()
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

    #[test]
    fn status_says_why_thingsboard_is_not_connected() {
        let health = Health::default();
        health.disconnected(ConnectFailure::BadCredentials, "check the token");
        assert_eq!(
            health.status()["thingsboard"],
            serde_json::json!({"connected": false, "reason": "bad_credentials", "message": "check the token"})
        );
        health.connected();
        assert_eq!(
            health.status()["thingsboard"],
            serde_json::json!({"connected": true})
        );
    }

    #[test]
    fn status_says_where_the_configuration_came_from_and_whether_the_socket_is_open() {
        let health = Health::default();
        health.listener_bound.store(true, Ordering::Relaxed);
        let status = health.status();
        assert_eq!(
            status["configuration"],
            serde_json::json!({"source": "file"})
        );
        assert_eq!(status["deviceSocket"], serde_json::json!({"open": true}));
        health.configured_from(Some(1_764_000_000_000));
        health.listener_bound.store(false, Ordering::Relaxed);
        health
            .switched_off_in_thingsboard
            .store(true, Ordering::Relaxed);
        let status = health.status();
        assert_eq!(
            status["configuration"],
            serde_json::json!({"source": "thingsboard", "savedAtMs": 1_764_000_000_000_i64})
        );
        assert_eq!(
            status["deviceSocket"],
            serde_json::json!({"open": false, "reason": "inactive_in_thingsboard"})
        );
        health.configured_from(None);
        assert_eq!(health.status()["configuration"]["source"], "file");
    }
}
