//! UDP server: every datagram from a matching peer is one message; downlink datagrams leave from
//! the same bound socket, so devices see the port they sent to.

use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::warn;

use bytes::BytesMut;

use super::{Ingest, PeerDevices};
use crate::events::{DatagramRejected, FrameRejected};

/// UDP has no connections: bad frames are logged at most this often.
const FRAME_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Receives datagrams until `stop`. A datagram longer than `bufferSize` is truncated, as in
/// ThingsBoard.
pub async fn serve(socket: Arc<UdpSocket>, ingest: Ingest, mut stop: watch::Receiver<bool>) {
    ingest.links.set_udp(socket.clone());
    // The socket section cannot change on reload: framing and read size hold for the run.
    let built = ingest.live.load().built.clone();
    let mut buffer = vec![0u8; built.read_size];
    let mut last_frame_log: Option<std::time::Instant> = None;
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buffer) => received,
            _ = crate::stop::stopped(&mut stop) => break,
        };
        match received {
            Ok((n, peer)) => {
                let devices = PeerDevices::matching(&ingest.live, peer);
                if devices.is_empty() {
                    DatagramRejected {
                        peer: devices.peer_text(),
                    }
                    .emit();
                    continue;
                }
                let datagram = &buffer[..n];
                let Some(framing) = &built.framing else {
                    if !ingest.deliver(peer, &devices, datagram).await {
                        break;
                    }
                    continue;
                };
                // Each datagram is framed on its own: nothing carries over between datagrams.
                let mut framer = framing.framer();
                let mut bytes = BytesMut::from(datagram);
                loop {
                    match framer.next_frame(&mut bytes) {
                        Ok(Some(frame)) => {
                            if !ingest.deliver(peer, &devices, &frame).await {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            let log = last_frame_log
                                .is_none_or(|logged| logged.elapsed() >= FRAME_LOG_INTERVAL);
                            if log {
                                last_frame_log = Some(std::time::Instant::now());
                            }
                            FrameRejected {
                                error: &error,
                                peer: devices.peer_text(),
                                log,
                            }
                            .emit();
                        }
                    }
                }
            }
            // ICMP errors from earlier sends surface here on some systems; keep serving.
            Err(error) => warn!(%error, "receiving a UDP datagram failed"),
        }
    }
}
