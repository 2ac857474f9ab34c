//! TCP server: many concurrent device connections, one task each.

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::Ingest;
use crate::address_filter::peer_string;
use crate::router::DeviceSet;

/// Accepts connections until `stop`, then waits for the open ones to finish.
pub async fn serve(listener: TcpListener, ingest: Ingest, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    let connection_stop = stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let peer = peer_string(peer);
                    let devices = ingest.router.matching(&peer);
                    if devices.is_empty() {
                        info!(%peer, "connection closed: no device's address filter matches this peer");
                        continue;
                    }
                    debug!(%peer, "new connection established");
                    connections.spawn(connection(stream, peer, devices, ingest.clone(), connection_stop.clone()));
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

async fn connection(
    mut stream: TcpStream,
    peer: String,
    devices: DeviceSet,
    ingest: Ingest,
    mut stop: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; ingest.read_size];
    loop {
        let read = tokio::select! {
            read = stream.read(&mut buffer) => read,
            _ = crate::stop::stopped(&mut stop) => break,
        };
        match read {
            Ok(0) => {
                debug!(%peer, "connection closed by peer");
                break;
            }
            Ok(n) => {
                if !ingest.deliver(&devices, &buffer[..n]).await {
                    break;
                }
            }
            Err(error) => {
                debug!(%peer, %error, "connection failed");
                break;
            }
        }
    }
}
