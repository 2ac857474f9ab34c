//! Device-side sockets: the TCP and UDP listeners. Each read (TCP) or datagram (UDP) of up to
//! `bufferSize` bytes is one message, as in ThingsBoard; peers are matched against the device
//! address filters, converted, and handed to the uplink queue.

pub mod tcp;
pub mod udp;

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

use crate::clock::now_ms;
use crate::convert::ConvertedData;
use crate::router::Router;

/// What the listeners feed: the device table and the uplink queue.
#[derive(Debug, Clone)]
pub struct Ingest {
    pub router: Arc<Router>,
    pub queue: mpsc::Sender<ConvertedData>,
    pub read_size: usize,
}

impl Ingest {
    /// Converts one message for the devices of `set` and queues the results. Waits while the
    /// queue is full, which stops reading from the socket: TCP backpressure.
    /// Returns false once the queue is closed (shutdown).
    pub async fn deliver(&self, set: &[usize], message: &[u8]) -> bool {
        let ts = now_ms();
        for converted in self.router.convert(set, message, ts) {
            if self.queue.send(converted).await.is_err() {
                return false;
            }
        }
        true
    }
}
