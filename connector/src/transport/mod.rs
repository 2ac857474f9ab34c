//! Device-side sockets: the TCP and UDP listeners. Each read (TCP) or datagram (UDP) of up to
//! `bufferSize` bytes is one message, as in ThingsBoard; peers are matched against the device
//! address filters, converted, and handed to the uplink queue.

pub mod client;
pub mod limits;
pub mod links;
pub mod tcp;
pub mod tls;
pub mod udp;

pub use links::{DeviceLinks, DownlinkError};

use std::net::SocketAddr;

use tokio::net::lookup_host;

/// Resolves the configured bind address (`0.0.0.0`, `::`, `localhost`, an IP) and port.
pub async fn bind_address(address: &str, port: u16) -> std::io::Result<SocketAddr> {
    let host = address.trim().trim_start_matches('[').trim_end_matches(']');
    lookup_host((host, port)).await?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{address} does not resolve to an address"),
        )
    })
}

use std::sync::Arc;

use tokio::sync::mpsc;

use tracing::warn;

use crate::clock::now_ms;
use crate::convert::ConvertedData;
use crate::downlink::AttributeRequest;
use crate::framing::{FrameError, FramingConfig};
use crate::live::{Live, Snapshot};
use crate::metrics::metrics;
use crate::router::{DeviceSet, Router};

/// What the listeners feed: the device table (replaced by hot reloads), the uplink queue, the
/// attribute-request queue and the downlink routes.
#[derive(Clone)]
pub struct Ingest {
    pub live: Arc<Live>,
    pub queue: mpsc::Sender<ConvertedData>,
    pub requests: mpsc::Sender<AttributeRequest>,
    pub links: Arc<DeviceLinks>,
    pub read_size: usize,
    pub framing: Option<FramingConfig>,
}

/// Counts a frame the framer rejected; logs it when `log` (callers log the first per connection
/// or interval, so a bad peer cannot flood the log).
pub fn frame_rejected(error: &FrameError, peer: &str, log: bool) {
    metrics().dropped.with_label_values(&[error.reason()]).inc();
    if log {
        warn!(%peer, %error, "frame dropped (further ones from this peer are only counted)");
    }
}

/// The devices one peer feeds, matched against one generation of the configuration; matched
/// again when a reload installs a new one, so connections survive reloads.
pub struct PeerDevices {
    snapshot: Arc<Snapshot>,
    devices: DeviceSet,
    peer_text: String,
}

impl PeerDevices {
    pub fn matching(live: &Live, peer: SocketAddr) -> Self {
        let snapshot = live.load();
        let peer_text = crate::address_filter::peer_string(peer);
        let devices = snapshot.router.matching(&peer_text);
        Self {
            snapshot,
            devices,
            peer_text,
        }
    }

    /// Re-matches after a reload; false when no device matches the peer any more.
    pub fn refresh(&mut self, live: &Live) -> bool {
        if live.generation() != self.snapshot.generation {
            self.snapshot = live.load();
            self.devices = self.snapshot.router.matching(&self.peer_text);
        }
        !self.devices.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    pub fn router(&self) -> &Router {
        &self.snapshot.router
    }

    pub fn devices(&self) -> &[usize] {
        &self.devices
    }

    pub fn peer_text(&self) -> &str {
        &self.peer_text
    }
}

impl Ingest {
    /// Handles one message from `peer` for the devices of `set`: an RPC waiting for the device's
    /// answer takes it; otherwise each device turns it into an attribute request or data.
    /// Waits while the uplink queue is full, which stops reading from the socket: TCP
    /// backpressure. Returns false once the queue is closed (shutdown).
    pub async fn deliver(&self, peer: SocketAddr, matched: &PeerDevices, message: &[u8]) -> bool {
        if self.links.deliver_reply(peer, message) {
            return true;
        }
        let set = matched.devices();
        self.links.seen(set, peer);
        let ts = now_ms();
        for &index in set {
            let Some(device) = matched.router().device(index) else {
                continue;
            };
            if !device.accepts(message) {
                continue;
            }
            device.counters.frames.inc();
            device.counters.bytes.inc_by(message.len() as u64);
            if !device.attribute_requests.is_empty() {
                let requests = device.attribute_requests(message);
                if !requests.is_empty() {
                    for (scope, keys) in requests {
                        let request = AttributeRequest {
                            device: device.converter.device.name.clone(),
                            peer,
                            scope,
                            keys,
                        };
                        if self.requests.try_send(request).is_err() {
                            metrics()
                                .dropped
                                .with_label_values(&["attribute_request_queue_full"])
                                .inc();
                            warn!(device = %device.converter.device.name, "attribute request dropped: too many waiting");
                        }
                    }
                    continue;
                }
            }
            let converted = device.converter.convert(message, ts);
            if converted.decode_errors > 0 {
                device
                    .counters
                    .decode_errors
                    .inc_by(converted.decode_errors as u64);
            }
            if converted.is_empty() {
                continue;
            }
            if !Arc::ptr_eq(&converted.device, &device.converter.device)
                && converted.device.name != device.converter.device.name
            {
                self.links.seen_dynamic(&converted.device.name, index, peer);
            }
            if self.queue.send(converted).await.is_err() {
                return false;
            }
        }
        true
    }
}
