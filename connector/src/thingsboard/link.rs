//! The MQTT session to ThingsBoard: connects with the access token as username, reconnects with
//! jittered exponential backoff forever, and reports connection changes to the uplink task.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, MqttOptions,
    Outgoing, QoS,
};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::downlink::DownlinkEvent;
use crate::http::Health;
use crate::metrics::metrics;

/// How to reach ThingsBoard (what `tb_gateway.json` holds in the ThingsBoard gateway).
#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub access_token: String,
    pub client_id: String,
    pub qos: QoS,
    pub keep_alive: Duration,
    /// Largest payload of one publish, in bytes.
    pub max_payload: usize,
}

/// What the uplink task hears from the MQTT session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The broker accepted the session (first connect or reconnect).
    Connected { reconnect: bool },
    /// The session is gone; publishes wait in the client until it is back.
    Disconnected,
}

/// Largest MQTT packet the client sends or accepts.
pub const MAX_PACKET: usize = 1 << 20;
/// Largest payload the uplink packs: room for topic and header within MAX_PACKET.
pub const MAX_PAYLOAD: usize = MAX_PACKET - 1024;

const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Requests (publishes) buffered in the client before `publish` waits: backpressure to the
/// pipeline when ThingsBoard is slow or away.
const REQUEST_CAPACITY: usize = 1024;

/// Creates the client and its event loop; nothing is sent until the loop is driven.
pub fn client(settings: &MqttSettings) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(&settings.client_id, &settings.host, settings.port);
    options.set_credentials(settings.access_token.clone(), "");
    options.set_keep_alive(settings.keep_alive);
    options.set_clean_session(true);
    // ThingsBoard's session limits may raise the payload size after connecting, so the client
    // accepts packets up to MAX_PACKET; the uplink never packs more than MAX_PAYLOAD.
    options.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    options.set_inflight(100);
    AsyncClient::new(options, REQUEST_CAPACITY)
}

/// Drives the MQTT event loop until `stop` becomes true and the disconnect is flushed.
pub async fn drive(
    mut event_loop: EventLoop,
    settings: MqttSettings,
    events: mpsc::UnboundedSender<LinkEvent>,
    downlink: mpsc::UnboundedSender<DownlinkEvent>,
    health: Arc<Health>,
    mut stop: watch::Receiver<bool>,
) {
    let endpoint = format!("{}:{}", settings.host, settings.port);
    let mut backoff = BACKOFF_START;
    let mut connected_once = false;
    let mut connected = false;
    loop {
        let polled = tokio::select! {
            polled = event_loop.poll() => polled,
            _ = crate::stop::stopped(&mut stop), if !connected => return,
        };
        match polled {
            Ok(Event::Incoming(Incoming::ConnAck(ack)))
                if ack.code == ConnectReturnCode::Success =>
            {
                info!(%endpoint, "connected to ThingsBoard");
                backoff = BACKOFF_START;
                connected = true;
                health.mqtt_connected.store(true, Ordering::Relaxed);
                metrics().mqtt_connected.set(1);
                if connected_once {
                    metrics().mqtt_reconnects.inc();
                }
                let _ = events.send(LinkEvent::Connected {
                    reconnect: connected_once,
                });
                let _ = downlink.send(DownlinkEvent::Connected);
                connected_once = true;
            }
            Ok(Event::Incoming(Incoming::Publish(publish))) => {
                let _ = downlink.send(DownlinkEvent::Message {
                    topic: publish.topic,
                    payload: publish.payload,
                });
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                debug!("MQTT disconnect sent");
                return;
            }
            Ok(event) => debug!(?event, "mqtt"),
            Err(error) => {
                if *stop.borrow() {
                    return;
                }
                if connected {
                    connected = false;
                    health.mqtt_connected.store(false, Ordering::Relaxed);
                    metrics().mqtt_connected.set(0);
                    let _ = events.send(LinkEvent::Disconnected);
                }
                let delay = jitter(backoff);
                warn!(%endpoint, retry_in_ms = delay.as_millis() as u64, "ThingsBoard connection failed: {}", explain(&error));
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = crate::stop::stopped(&mut stop) => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// ±20 % so that many connectors restarted together do not reconnect in lockstep.
fn jitter(delay: Duration) -> Duration {
    let factor = rand::rng().random_range(0.8..1.2);
    delay.mul_f64(factor)
}

/// A message that says what to check, for the errors users meet most.
fn explain(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword)
        | ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => {
            "ThingsBoard rejected the access token (check --token / TB_ACCESS_TOKEN and that the device is a gateway)".to_owned()
        }
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused (is ThingsBoard's MQTT transport listening on --tb-host/--tb-port?)".to_owned()
        }
        other => other.to_string(),
    }
}
