//! TCP server: many concurrent device connections, one reader task and one writer task each,
//! optionally over TLS.

use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::links::WriteRequest;
use super::{frame_rejected, Ingest};
use crate::address_filter::peer_string;
use crate::framing::OnOversize;
use crate::metrics::metrics;
use crate::router::DeviceSet;

/// Downlink writes queued per connection before writers wait.
const WRITE_QUEUE: usize = 64;

/// Devices get this long to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts connections until `stop`, then waits for the open ones to finish.
pub async fn serve(
    listener: TcpListener,
    ingest: Ingest,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let connection_stop = stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let peer_text = peer_string(peer);
                    let devices = ingest.router.matching(&peer_text);
                    if devices.is_empty() {
                        metrics().connections_rejected.with_label_values(&["no_matching_device"]).inc();
                        info!(peer = %peer_text, "connection closed: no device's address filter matches this peer");
                        continue;
                    }
                    metrics().connections_accepted.inc();
                    debug!(peer = %peer_text, "new connection established");
                    let (ingest, stop) = (ingest.clone(), connection_stop.clone());
                    match tls.clone() {
                        None => connections.spawn(connection(stream, peer, devices, ingest, stop)),
                        Some(acceptor) => connections.spawn(tls_connection(acceptor, stream, peer, devices, ingest, stop)),
                    };
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(%error, "accepting a TCP connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next() => {}
            _ = crate::stop::stopped(&mut stop) => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn tls_connection(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    devices: DeviceSet,
    ingest: Ingest,
    stop: watch::Receiver<bool>,
) {
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let (reader, writer) = tokio::io::split(stream);
            serve_connection(reader, writer, peer, devices, ingest, stop).await;
        }
        Ok(Err(error)) => {
            metrics()
                .connections_rejected
                .with_label_values(&["tls_handshake"])
                .inc();
            info!(peer = %peer_string(peer), %error, "connection closed: TLS handshake failed");
        }
        Err(_) => {
            metrics()
                .connections_rejected
                .with_label_values(&["tls_handshake"])
                .inc();
            info!(peer = %peer_string(peer), "connection closed: TLS handshake timed out");
        }
    }
}

pub(crate) async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    devices: DeviceSet,
    ingest: Ingest,
    stop: watch::Receiver<bool>,
) {
    let (reader, writer) = stream.into_split();
    serve_connection(reader, writer, peer, devices, ingest, stop).await;
}

async fn serve_connection<R, W>(
    mut reader: R,
    writer: W,
    peer: SocketAddr,
    devices: DeviceSet,
    ingest: Ingest,
    mut stop: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let open = metrics().connections_open.clone();
    open.inc();
    let (writes, write_queue) = mpsc::channel(WRITE_QUEUE);
    ingest.links.register_tcp(peer, writes);
    let writer = tokio::spawn(write_loop(writer, write_queue));
    let mut framer = ingest
        .framing
        .as_ref()
        .and_then(|f| f.build().ok().flatten());
    let close_on_error = ingest
        .framing
        .as_ref()
        .is_some_and(|f| f.on_oversize() == OnOversize::Close);
    let mut logged_frame_error = false;
    let mut buffer = BytesMut::with_capacity(ingest.read_size);
    'read: loop {
        if framer.is_none() {
            buffer.clear();
        }
        buffer.reserve(ingest.read_size);
        // At most bufferSize bytes per read: without framing, one read is one message.
        let mut limited = (&mut reader).take(ingest.read_size as u64);
        let read = tokio::select! {
            read = limited.read_buf(&mut buffer) => read,
            _ = crate::stop::stopped(&mut stop) => break,
        };
        match read {
            Ok(0) => {
                debug!(peer = %peer_string(peer), "connection closed by peer");
                break;
            }
            Ok(_) => {
                let Some(framer) = framer.as_mut() else {
                    // ThingsBoard's behaviour: one read is one message.
                    if !ingest.deliver(peer, &devices, &buffer).await {
                        break;
                    }
                    continue;
                };
                loop {
                    match framer.next_frame(&mut buffer) {
                        Ok(Some(frame)) => {
                            if !ingest.deliver(peer, &devices, &frame).await {
                                break 'read;
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            frame_rejected(&error, &peer_string(peer), !logged_frame_error);
                            logged_frame_error = true;
                            if close_on_error {
                                info!(peer = %peer_string(peer), "connection closed after a bad frame (onOversize: close)");
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
    ingest.links.unregister_tcp(peer);
    writer.abort();
    open.dec();
}

/// Writes downlink bytes in order and reports each outcome.
async fn write_loop<W: AsyncWrite + Unpin>(mut writer: W, mut queue: mpsc::Receiver<WriteRequest>) {
    while let Some(request) = queue.recv().await {
        let result = writer.write_all(&request.bytes).await;
        let failed = result.is_err();
        let _ = request.done.send(result);
        if failed {
            break;
        }
    }
}
