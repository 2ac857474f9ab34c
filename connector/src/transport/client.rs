//! Client mode: the connector connects out to a device that is a TCP server (ThingsBoard issues
//! #1290, #1421), sends an optional handshake on each connect and an optional poll on an interval,
//! and reconnects with jittered exponential backoff when the connection drops or fails.

use std::time::Duration;

use connector_core::build::ClientPlan;
use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{Ingest, PeerDevices};
use connector_core::address_filter::peer_string;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Where the device server is, what client mode sends and how patiently it reconnects.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub host: String,
    pub port: u16,
    pub plan: ClientPlan,
    /// `idleTimeoutMs`: reconnect when the device server goes silent this long.
    pub idle_timeout: Option<Duration>,
}

/// Keeps a connection to the device server until `stop`.
pub async fn run(settings: ClientSettings, ingest: Ingest, mut stop: watch::Receiver<bool>) {
    let target = format!("{}:{}", settings.host, settings.port);
    let mut backoff = settings.plan.reconnect_delay;
    let mut failing = false;
    loop {
        let attempt = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((settings.host.as_str(), settings.port)),
        );
        let connected = tokio::select! {
            result = attempt => result,
            _ = crate::stop::stopped(&mut stop) => return,
        };
        match connected {
            Ok(Ok(stream)) => {
                failing = false;
                backoff = settings.plan.reconnect_delay;
                serve_connection(stream, &settings, &ingest, &stop).await;
                if *stop.borrow() {
                    return;
                }
                info!(device = %target, "device connection lost; reconnecting");
            }
            Ok(Err(error)) => {
                if !failing {
                    warn!(device = %target, %error, "cannot connect to the device; retrying with backoff");
                }
                failing = true;
            }
            Err(_) => {
                if !failing {
                    warn!(device = %target, "connecting to the device timed out; retrying with backoff");
                }
                failing = true;
            }
        }
        let delay = backoff.mul_f64(rand::rng().random_range(0.8..1.2));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = crate::stop::stopped(&mut stop) => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    settings: &ClientSettings,
    ingest: &Ingest,
    stop: &watch::Receiver<bool>,
) {
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    let peer_text = peer_string(peer);
    let devices = PeerDevices::matching(&ingest.live, peer);
    if devices.is_empty() {
        warn!(peer = %peer_text, "connected, but no device's address filter matches the device server; closing");
        return;
    }
    info!(peer = %peer_text, "connected to the device");
    if let Some(handshake) = &settings.plan.handshake {
        if let Err(error) = stream.write_all(handshake).await {
            warn!(peer = %peer_text, %error, "handshake not sent");
            return;
        }
    }
    let poller = settings.plan.poll.clone().map(|(payload, interval)| {
        let links = ingest.links.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Before the connection registers, or after it closed, a poll just fails.
                let _ = links.write_to_peer(peer, payload.clone()).await;
            }
        })
    });
    let accepted = super::tcp::Accepted {
        peer,
        devices,
        ingest: ingest.clone(),
        idle_timeout: settings.idle_timeout,
        stop: stop.clone(),
    };
    super::tcp::connection(stream, accepted).await;
    if let Some(poller) = poller {
        poller.abort();
    }
}
