//! UDP server: every datagram from a matching peer is one message; downlink datagrams leave from
//! the same bound socket, so devices see the port they sent to. The socket's kernel receive
//! buffer is sized for bursts, and what the kernel still drops is read from `/proc/net/udp` and
//! counted, since a full buffer drops datagrams before the connector ever sees them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::warn;

use bytes::BytesMut;

use super::{Ingest, PeerDevices};
use crate::clock::now_ms;
use crate::events::{DatagramRejected, FrameRejected, UdpKernelDrops, UdpReceiveBufferCapped};
use crate::live::Live;

/// UDP has no connections: bad frames are logged at most this often.
const FRAME_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// How often the kernel's drop counter of the socket is read.
const KERNEL_DROPS_INTERVAL: Duration = Duration::from_secs(5);

/// Binds the UDP socket with a receive buffer of `receive_buffer` bytes, or what the kernel
/// grants (it caps the request at `net.core.rmem_max`, which is logged).
pub fn bind(address: SocketAddr, receive_buffer: usize) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_recv_buffer_size(receive_buffer)?;
    // Linux reports twice what it grants (the bookkeeping overhead it adds).
    let granted = socket.recv_buffer_size()? / if cfg!(target_os = "linux") { 2 } else { 1 };
    if granted < receive_buffer {
        UdpReceiveBufferCapped {
            requested: receive_buffer,
            granted,
        }
        .emit();
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    UdpSocket::from_std(socket.into())
}

/// The kernel's count of datagrams it dropped for the socket with this inode: the last column
/// (`drops`) of its line in `/proc/net/udp` or `/proc/net/udp6`.
fn kernel_drops(proc_net_udp: &str, inode: u64) -> Option<u64> {
    proc_net_udp.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let line_inode: u64 = fields.get(9)?.parse().ok()?;
        (line_inode == inode).then(|| fields.last()?.parse().ok())?
    })
}

/// Reads the socket's kernel drops; `None` where the kernel does not say (not Linux, no /proc).
fn read_kernel_drops(socket: &UdpSocket) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd()))
            .ok()?
            .ino();
        ["/proc/self/net/udp", "/proc/self/net/udp6"]
            .iter()
            .find_map(|path| kernel_drops(&std::fs::read_to_string(path).ok()?, inode))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        None
    }
}

/// Receives datagrams until `stop`. A datagram longer than `bufferSize` is truncated, as in
/// ThingsBoard.
pub async fn serve(socket: Arc<UdpSocket>, ingest: Ingest, stop: watch::Receiver<bool>) {
    ingest.links.set_udp(socket.clone());
    receive(socket, &ingest, stop).await;
    // The socket closes with its last reference; downlink must not hold it open.
    ingest.links.clear_udp();
}

async fn receive(socket: Arc<UdpSocket>, ingest: &Ingest, mut stop: watch::Receiver<bool>) {
    // The socket section cannot change on reload: framing and read size hold for the run.
    let built = ingest.live.load().built.clone();
    let mut buffer = vec![0u8; built.read_size];
    let mut last_frame_log: Option<std::time::Instant> = None;
    let mut drops_check = tokio::time::interval(KERNEL_DROPS_INTERVAL);
    let mut drops_seen = read_kernel_drops(&socket).unwrap_or(0);
    let mut peers = PeerCache::default();
    // One stop future for the run, not one registration with the stop signal per datagram.
    let stopped = crate::stop::stopped(&mut stop);
    tokio::pin!(stopped);
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buffer) => received,
            _ = drops_check.tick() => {
                if let Some(drops) = read_kernel_drops(&socket) {
                    if drops > drops_seen {
                        UdpKernelDrops { count: drops - drops_seen, receive_buffer: built.receive_buffer }.emit();
                    }
                    drops_seen = drops;
                }
                continue;
            }
            _ = &mut stopped => break,
        };
        match received {
            Ok((n, peer)) => {
                let read_at_ms = now_ms();
                let devices = peers.devices(&ingest.live, peer);
                if devices.is_empty() {
                    DatagramRejected {
                        peer: devices.peer_text(),
                    }
                    .emit();
                    continue;
                }
                let datagram = &buffer[..n];
                let Some(framing) = &built.framing else {
                    if !ingest.deliver(peer, devices, datagram, read_at_ms).await {
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
                            if !ingest.deliver(peer, devices, &frame, read_at_ms).await {
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

/// Peers datagrams came from beyond which the matches are forgotten all at once: a flood of
/// source addresses costs a re-match, not memory.
const MAX_CACHED_PEERS: usize = 65_536;

/// The devices each peer feeds, matched against the address filters once per peer (and again
/// after a reload), not for every datagram: UDP has no connection to hold the match.
#[derive(Default)]
struct PeerCache {
    peers: HashMap<SocketAddr, PeerDevices>,
}

impl PeerCache {
    fn devices(&mut self, live: &Live, peer: SocketAddr) -> &PeerDevices {
        if self.peers.len() >= MAX_CACHED_PEERS && !self.peers.contains_key(&peer) {
            self.peers.clear();
        }
        let devices = self
            .peers
            .entry(peer)
            .or_insert_with(|| PeerDevices::matching(live, peer));
        devices.refresh(live);
        devices
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector_core::load::{load_str, LoadedConfig};

    fn loaded(address: &str) -> LoadedConfig {
        load_str(&format!(
            r#"{{"socket": {{"type": "UDP", "port": 50000}}, "devices": [{{"address": "{address}", "deviceName": "D", "telemetry": [{{"key": "t", "byteFrom": 0, "byteTo": -1}}]}}]}}"#
        ))
        .expect("valid config")
    }

    #[test]
    fn a_peer_is_matched_again_after_a_reload() {
        let live = Live::new(&loaded("127.0.0.1:*"));
        let mut peers = PeerCache::default();
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        assert_eq!(peers.devices(&live, local).devices(), [0]);
        assert!(peers.devices(&live, remote).is_empty());
        live.replace(&loaded("10.0.0.1:*"));
        assert!(peers.devices(&live, local).is_empty());
        assert_eq!(peers.devices(&live, remote).devices(), [0]);
    }

    #[test]
    fn a_flood_of_source_addresses_is_forgotten_not_kept() {
        let live = Live::new(&loaded("*:*"));
        let mut peers = PeerCache::default();
        let peer = |i: usize| SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 7));
        for i in 0..MAX_CACHED_PEERS {
            peers.devices(&live, peer(i));
        }
        assert_eq!(peers.peers.len(), MAX_CACHED_PEERS);
        // A known peer keeps the others; a new one beyond the bound starts afresh.
        peers.devices(&live, peer(0));
        assert_eq!(peers.peers.len(), MAX_CACHED_PEERS);
        assert_eq!(peers.devices(&live, peer(MAX_CACHED_PEERS)).devices(), [0]);
        assert_eq!(peers.peers.len(), 1);
    }

    const PROC_NET_UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  187: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000   104        0 21551 2 0000000000000000 0
  210: 0100007F:C350 00000000:0000 07 00000000:00033000 00:00000000 00000000     0        0 987654 2 0000000000000000 2757
";

    #[test]
    fn kernel_drops_are_read_from_the_sockets_line() {
        assert_eq!(kernel_drops(PROC_NET_UDP, 987654), Some(2757));
        assert_eq!(kernel_drops(PROC_NET_UDP, 21551), Some(0));
        assert_eq!(kernel_drops(PROC_NET_UDP, 1), None);
        assert_eq!(kernel_drops("", 987654), None);
    }

    #[tokio::test]
    async fn the_socket_gets_the_receive_buffer_and_its_drops_are_readable() {
        let socket = bind("127.0.0.1:0".parse().unwrap(), 64 * 1024).unwrap();
        let granted = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        // Linux grants twice the request (64 KiB is below every rmem_max).
        assert_eq!(granted, 128 * 1024);
        assert_eq!(read_kernel_drops(&socket), Some(0));
        // Nobody reads: the smallest buffer fills and the kernel drops, as a busy connector's
        // would, and the drops are what is read back.
        let tiny = bind("127.0.0.1:0".parse().unwrap(), 4096).unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            sender
                .send_to(&[0u8; 512], tiny.local_addr().unwrap())
                .unwrap();
        }
        let drops = read_kernel_drops(&tiny).unwrap();
        assert!((150..=200).contains(&drops), "{drops} of 200 dropped");
    }
}
