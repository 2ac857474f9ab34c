//! TCP server: many concurrent device connections, one task each (downlink writes take the
//! connection's write half under a lock), optionally over TLS.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info};

use super::limits::{ConnectionLimits, OpenConnections};
use super::links::{DeviceLinks, DeviceWriter};
use super::{Ingest, PeerDevices};
use crate::clock::now_ms;
use crate::events::{
    warn_throttled, CloseReason, ConnectionAccepted, ConnectionClosed, ConnectionRejected,
    FrameRejected, RejectReason,
};
use crate::metrics::metrics;
use connector_core::address_filter::peer_string;
use connector_core::framing::OnOversize;

/// Devices get this long to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts connections until `stop`, then waits for the open ones to finish.
pub async fn serve(
    listener: TcpListener,
    ingest: Ingest,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut peer_of_task: HashMap<tokio::task::Id, IpAddr> = HashMap::new();
    let mut open = OpenConnections::default();
    let connection_stop = stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let devices = PeerDevices::matching(&ingest.live, peer);
                    if devices.is_empty() {
                        ConnectionRejected { reason: RejectReason::NoMatchingDevice, peer: devices.peer_text(), detail: &"" }.emit();
                        continue;
                    }
                    if let Err(reason) = open.admit(&limits, peer.ip()) {
                        let detail = format!("{} open", open.total());
                        ConnectionRejected { reason, peer: devices.peer_text(), detail: &detail }.emit();
                        continue;
                    }
                    ConnectionAccepted { peer: devices.peer_text() }.emit();
                    let accepted = Accepted {
                        peer,
                        devices,
                        ingest: ingest.clone(),
                        idle_timeout: limits.idle_timeout,
                        stop: connection_stop.clone(),
                    };
                    let task = match tls.clone() {
                        None => connections.spawn(connection(stream, accepted)),
                        Some(acceptor) => connections.spawn(tls_connection(acceptor, stream, accepted)),
                    };
                    peer_of_task.insert(task.id(), peer.ip());
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn_throttled("tcp_accept", format_args!("accepting a TCP connection failed: {error}"));
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(closed) = connections.join_next_with_id() => {
                let task = match closed {
                    Ok((task, ())) => task,
                    Err(failed) => {
                        // A panic closes that one connection; its slot is freed all the same.
                        if failed.is_panic() {
                            error!(task = %failed.id(), "a device connection task panicked; the connection is closed");
                        }
                        failed.id()
                    }
                };
                if let Some(ip) = peer_of_task.remove(&task) {
                    open.release(ip);
                }
            }
            _ = crate::stop::stopped(&mut stop) => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// An accepted device connection and what serving it needs.
pub(crate) struct Accepted {
    pub peer: SocketAddr,
    pub devices: PeerDevices,
    pub ingest: Ingest,
    pub idle_timeout: Option<Duration>,
    pub stop: watch::Receiver<bool>,
}

async fn tls_connection(acceptor: TlsAcceptor, stream: TcpStream, accepted: Accepted) {
    let peer = accepted.peer;
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let (reader, writer) = tokio::io::split(stream);
            serve_connection(reader, writer, accepted).await;
        }
        failed => {
            let detail = match failed {
                Ok(Err(error)) => format!("failed: {error}"),
                _ => "timed out".to_owned(),
            };
            ConnectionRejected {
                reason: RejectReason::TlsHandshake,
                peer: &peer_string(peer),
                detail: &detail,
            }
            .emit();
        }
    }
}

pub(crate) async fn connection(stream: TcpStream, accepted: Accepted) {
    let (reader, writer) = stream.into_split();
    serve_connection(reader, writer, accepted).await;
}

async fn serve_connection<R, W>(mut reader: R, writer: W, accepted: Accepted)
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let Accepted {
        peer,
        mut devices,
        ingest,
        idle_timeout,
        mut stop,
    } = accepted;
    let writer: DeviceWriter = Arc::new(tokio::sync::Mutex::new(Box::new(writer)));
    let _registered = Registered::new(peer, &ingest.links, writer);
    // The socket section (framing, read size) cannot change on reload: the first snapshot's
    // settings hold for the connection's life.
    let built = devices.snapshot().built.clone();
    let read_size = built.read_size;
    let mut framer = built.framing.as_ref().map(|factory| factory.framer());
    let close_on_error = built
        .framing
        .as_ref()
        .is_some_and(|factory| factory.on_oversize() == OnOversize::Close);
    let mut logged_frame_error = false;
    let mut buffer = BytesMut::with_capacity(read_size);
    // One stop future for the connection's life: made anew for every read, it would register
    // with the stop signal and leave it again on each of them.
    let stopped = crate::stop::stopped(&mut stop);
    tokio::pin!(stopped);
    'read: loop {
        if framer.is_none() {
            buffer.clear();
        }
        buffer.reserve(read_size);
        // At most bufferSize bytes per read: without framing, one read is one message.
        let mut limited = (&mut reader).take(read_size as u64);
        let read = tokio::select! {
            read = limited.read_buf(&mut buffer) => read,
            _ = &mut stopped => break,
            _ = idle(idle_timeout) => {
                let detail = format!("{} ms", idle_timeout.unwrap_or_default().as_millis());
                ConnectionClosed { reason: CloseReason::IdleTimeout, peer: devices.peer_text(), detail: &detail }.emit();
                break;
            }
        };
        let read_at_ms = now_ms();
        if !devices.refresh(&ingest.live) {
            info!(peer = %devices.peer_text(), "connection closed: after a configuration reload no device's address filter matches this peer");
            break;
        }
        match read {
            Ok(0) => {
                debug!(peer = %peer_string(peer), "connection closed by peer");
                break;
            }
            Ok(_) => {
                let Some(framer) = framer.as_mut() else {
                    // ThingsBoard's behaviour: one read is one message.
                    if !ingest.deliver(peer, &devices, &buffer, read_at_ms).await {
                        break;
                    }
                    continue;
                };
                loop {
                    match framer.next_frame(&mut buffer) {
                        Ok(Some(frame)) => {
                            if !ingest.deliver(peer, &devices, &frame, read_at_ms).await {
                                break 'read;
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            FrameRejected {
                                error: &error,
                                peer: devices.peer_text(),
                                log: !logged_frame_error,
                            }
                            .emit();
                            logged_frame_error = true;
                            if close_on_error {
                                ConnectionClosed {
                                    reason: CloseReason::of_frame_error(&error),
                                    peer: devices.peer_text(),
                                    detail: &error,
                                }
                                .emit();
                                break 'read;
                            }
                        }
                    }
                }
            }
            Err(error) => {
                debug!(peer = %peer_string(peer), %error, "connection failed");
                break;
            }
        }
    }
}

/// An open connection's entries in the downlink routes and the open-connections gauge, undone
/// when the connection ends, also by a panic.
struct Registered<'a> {
    peer: SocketAddr,
    links: &'a DeviceLinks,
}

impl<'a> Registered<'a> {
    fn new(peer: SocketAddr, links: &'a DeviceLinks, writer: DeviceWriter) -> Self {
        metrics().connections_open.inc();
        links.register_tcp(peer, writer);
        Self { peer, links }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.links.unregister_tcp(self.peer);
        metrics().connections_open.dec();
    }
}

/// Resolves after the idle timeout; never without one. Re-created for every read, so any data
/// restarts it.
async fn idle(timeout: Option<Duration>) {
    match timeout {
        Some(timeout) => tokio::time::sleep(timeout).await,
        None => std::future::pending().await,
    }
}
