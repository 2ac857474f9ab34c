//! The device socket over the connector's life: bound at start (a failure fails the start),
//! closed while ThingsBoard lists the connector as inactive (remote configuration's
//! `active_connectors`: the listener stops, open device connections are closed), and bound
//! again when ThingsBoard lists it once more.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use super::client::{self, ClientSettings};
use super::limits::ConnectionLimits;
use super::{tcp, udp, Ingest};
use crate::http::Health;
use crate::stop::stopped;

/// Connections the kernel may hold for accept (capped by `net.core.somaxconn`). The backlog of
/// `TcpListener::bind` (128) made a storm of 10,000 devices connecting at once take 20-30 s,
/// as SYNs were dropped and retried (docs/benchmarks.md).
const LISTEN_BACKLOG: u32 = 4096;
/// How long to wait before binding again when the port is taken after a reactivation.
const REBIND_DELAY: Duration = Duration::from_secs(1);

/// What the `socket` section asks for, enough to bind it again.
#[derive(Clone)]
pub enum SocketPlan {
    /// Client mode: the connector connects out to a device server.
    Client(ClientSettings),
    TcpServer {
        address: SocketAddr,
        tls: Option<TlsAcceptor>,
        limits: ConnectionLimits,
    },
    Udp {
        address: SocketAddr,
        receive_buffer: usize,
    },
}

/// A bound device socket (client mode binds nothing).
pub enum DeviceSocket {
    Client(ClientSettings),
    TcpServer {
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        limits: ConnectionLimits,
    },
    Udp(Arc<UdpSocket>),
}

impl SocketPlan {
    pub fn bind(&self) -> anyhow::Result<DeviceSocket> {
        Ok(match self {
            Self::Client(settings) => DeviceSocket::Client(settings.clone()),
            Self::TcpServer {
                address,
                tls,
                limits,
            } => DeviceSocket::TcpServer {
                listener: listen(*address)
                    .with_context(|| format!("cannot listen on TCP {address}"))?,
                tls: tls.clone(),
                limits: *limits,
            },
            Self::Udp {
                address,
                receive_buffer,
            } => DeviceSocket::Udp(Arc::new(
                udp::bind(*address, *receive_buffer)
                    .with_context(|| format!("cannot bind UDP {address}"))?,
            )),
        })
    }
}

impl DeviceSocket {
    /// The bound address; `None` in client mode.
    pub fn local_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        match self {
            Self::Client(_) => Ok(None),
            Self::TcpServer { listener, .. } => listener.local_addr().map(Some),
            Self::Udp(socket) => socket.local_addr().map(Some),
        }
    }

    /// Serves devices until `stop`; then the socket and every device connection are closed.
    async fn serve(self, ingest: Ingest, stop: watch::Receiver<bool>) {
        match self {
            Self::Client(settings) => client::run(settings, ingest, stop).await,
            Self::TcpServer {
                listener,
                tls,
                limits,
            } => tcp::serve(listener, ingest, tls, limits, stop).await,
            Self::Udp(socket) => udp::serve(socket, ingest, stop).await,
        }
    }
}

/// Serves `socket` until `stop`; while `active` is false the socket is closed, and bound again
/// from `plan` when it turns true.
pub async fn run(
    plan: SocketPlan,
    mut socket: DeviceSocket,
    ingest: Ingest,
    health: Arc<Health>,
    mut stop: watch::Receiver<bool>,
    mut active: watch::Receiver<bool>,
) {
    loop {
        health.listener_bound.store(true, Ordering::Relaxed);
        let (close, closed) = watch::channel(false);
        let serving = socket.serve(ingest.clone(), closed);
        tokio::pin!(serving);
        let stopping = tokio::select! {
            () = &mut serving => return,
            () = stopped(&mut stop) => true,
            () = until(&mut active, false) => false,
        };
        let _ = close.send(true);
        serving.await;
        if stopping {
            return;
        }
        health.listener_bound.store(false, Ordering::Relaxed);
        health
            .switched_off_in_thingsboard
            .store(true, Ordering::Relaxed);
        info!("ThingsBoard lists this connector as inactive: device socket closed");
        tokio::select! {
            () = stopped(&mut stop) => return,
            () = until(&mut active, true) => {}
        }
        let Some(bound) = rebind(&plan, &mut stop).await else {
            return;
        };
        socket = bound;
        health
            .switched_off_in_thingsboard
            .store(false, Ordering::Relaxed);
        info!("ThingsBoard lists this connector as active again: device socket open");
    }
}

/// Binds until it works (the port may be taken meanwhile); `None` once stopped.
async fn rebind(plan: &SocketPlan, stop: &mut watch::Receiver<bool>) -> Option<DeviceSocket> {
    loop {
        match plan.bind() {
            Ok(socket) => return Some(socket),
            Err(error) => warn!("{error:#}; trying again in {REBIND_DELAY:?}"),
        }
        tokio::select! {
            () = stopped(stop) => return None,
            () = tokio::time::sleep(REBIND_DELAY) => {}
        }
    }
}

/// Resolves once `active` is `wanted`; never when its sender is gone (nothing can change it).
async fn until(active: &mut watch::Receiver<bool>, wanted: bool) {
    // The guard returned by wait_for is not Send; drop it before awaiting anything else.
    let reached = active.wait_for(|a| *a == wanted).await.is_ok();
    if !reached {
        std::future::pending::<()>().await;
    }
}

fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As std and tokio do for listeners: a restarted connector can bind while old connections
    // linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}
