//! Device-side sockets: the TCP and UDP listeners and client mode. Each read (TCP) or datagram
//! (UDP) of up to `bufferSize` bytes is one message, as in ThingsBoard, unless a framer cuts the
//! stream; peers are matched against the device address filters, each message is routed
//! (`connector_core::route`), and its data handed to the uplink and its attribute requests to
//! the downlink.

pub mod client;
pub mod device_socket;
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

use connector_core::build::DeviceSet;
use connector_core::route::{route, AttributeRequest, Routed};
use tokio::sync::mpsc;

use crate::events::AttributeRequestDropped;
use crate::live::{Live, Snapshot};
use connector_core::convert::ConvertedData;

/// An attribute request a device made, with the connection the answer goes back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAttributeRequest {
    pub request: AttributeRequest,
    pub peer: SocketAddr,
}

/// What the listeners feed: the device table (replaced by hot reloads), the uplink queue, the
/// attribute-request queue and the downlink routes.
#[derive(Clone)]
pub struct Ingest {
    pub live: Arc<Live>,
    pub queue: mpsc::Sender<ConvertedData>,
    pub requests: mpsc::Sender<PeerAttributeRequest>,
    pub links: Arc<DeviceLinks>,
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
        let peer_text = connector_core::address_filter::peer_string(peer);
        let devices = snapshot.built.devices.matching(&peer_text);
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
            self.devices = self.snapshot.built.devices.matching(&self.peer_text);
        }
        !self.devices.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn devices(&self) -> &[usize] {
        &self.devices
    }

    pub fn peer_text(&self) -> &str {
        &self.peer_text
    }
}

impl Ingest {
    /// Handles one message from `peer` for the devices it feeds: an RPC waiting for the device's
    /// answer takes it; otherwise it is routed, and each device's attribute requests or data are
    /// queued. Waits while the uplink queue is full, which stops reading from the socket: TCP
    /// backpressure. Returns false once the queue is closed (shutdown). `read_at_ms` is when the
    /// bytes were read: the frames of one read share it, and the clock is read once per read.
    pub async fn deliver(
        &self,
        peer: SocketAddr,
        matched: &PeerDevices,
        message: &[u8],
        read_at_ms: i64,
    ) -> bool {
        if self.links.deliver_reply(peer, message) {
            return true;
        }
        let set = matched.devices();
        self.links.seen(set, peer);
        let snapshot = matched.snapshot();
        for (index, routed) in route(&snapshot.built.devices, set, message, read_at_ms) {
            if let Some(counters) = snapshot.counters.get(index) {
                counters.frames.inc();
                counters.bytes.inc_by(message.len() as u64);
                if let Routed::Data(data) = &routed {
                    if data.decode_errors > 0 {
                        counters.decode_errors.inc_by(data.decode_errors as u64);
                    }
                }
            }
            match routed {
                Routed::AttributeRequests(requests) => {
                    for request in requests {
                        let device = request.device.clone();
                        let request = PeerAttributeRequest { request, peer };
                        if self.requests.try_send(request).is_err() {
                            AttributeRequestDropped { device: &device }.emit();
                        }
                    }
                }
                Routed::Data(data) if data.is_empty() => {}
                Routed::Data(data) => {
                    let configured = snapshot.built.devices.device(index).map(|d| d.name());
                    if configured.is_some_and(|name| *name != data.device.name) {
                        self.links.seen_dynamic(&data.device.name, index, peer);
                    }
                    if self.queue.send(data).await.is_err() {
                        return false;
                    }
                }
            }
        }
        true
    }
}
