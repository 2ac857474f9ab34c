//! UDP server: every datagram from a matching peer is one message; downlink datagrams leave from
//! the same bound socket, so devices see the port they sent to.

use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::Ingest;
use crate::address_filter::peer_string;
use crate::metrics::metrics;

/// Receives datagrams until `stop`. A datagram longer than `bufferSize` is truncated, as in
/// ThingsBoard.
pub async fn serve(socket: Arc<UdpSocket>, ingest: Ingest, mut stop: watch::Receiver<bool>) {
    ingest.links.set_udp(socket.clone());
    let mut buffer = vec![0u8; ingest.read_size];
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buffer) => received,
            _ = crate::stop::stopped(&mut stop) => break,
        };
        match received {
            Ok((n, peer)) => {
                let peer_text = peer_string(peer);
                let devices = ingest.router.matching(&peer_text);
                if devices.is_empty() {
                    metrics().datagrams_rejected.inc();
                    debug!(peer = %peer_text, "datagram dropped: no device's address filter matches this peer");
                    continue;
                }
                if !ingest.deliver(peer, &devices, &buffer[..n]).await {
                    break;
                }
            }
            // ICMP errors from earlier sends surface here on some systems; keep serving.
            Err(error) => warn!(%error, "receiving a UDP datagram failed"),
        }
    }
}
