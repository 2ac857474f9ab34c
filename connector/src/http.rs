//! The HTTP endpoint for Kubernetes probes and Prometheus: `/healthz` (the process is alive),
//! `/readyz` and `/metrics`. What "ready" means and which metrics are shown is the [`Endpoint`]'s
//! business: the connector's [`Health`], or the operator's state.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

use crate::convert::ConvertedData;
use crate::metrics::metrics;

/// What an HTTP endpoint serves.
pub trait Endpoint: Send + Sync + 'static {
    /// `Ok` when ready, else the reason.
    fn readiness(&self) -> Result<(), &'static str>;
    /// Prometheus text format.
    fn metrics(&self) -> String;
}

/// The connector's readiness: the device socket is bound, and ThingsBoard is connected or the
/// queue still takes data.
#[derive(Debug, Default)]
pub struct Health {
    pub listener_bound: AtomicBool,
    pub mqtt_connected: AtomicBool,
    queue: OnceLock<mpsc::WeakSender<ConvertedData>>,
}

impl Health {
    pub fn watch_queue(&self, queue: &mpsc::Sender<ConvertedData>) {
        let _ = self.queue.set(queue.downgrade());
    }

    /// `Ok` when ready, else the reason.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if !self.listener_bound.load(Ordering::Relaxed) {
            return Err("device socket not bound");
        }
        if self.mqtt_connected.load(Ordering::Relaxed) {
            return Ok(());
        }
        let has_room = self
            .queue
            .get()
            .and_then(mpsc::WeakSender::upgrade)
            .is_some_and(|queue| queue.capacity() > 0);
        if has_room {
            Ok(())
        } else {
            Err("ThingsBoard not connected and the queue is full")
        }
    }
}

impl Endpoint for Health {
    fn readiness(&self) -> Result<(), &'static str> {
        Health::readiness(self)
    }

    fn metrics(&self) -> String {
        metrics().render()
    }
}

/// Serves until `stop`.
pub async fn serve<E: Endpoint>(
    listener: TcpListener,
    endpoint: Arc<E>,
    mut stop: watch::Receiver<bool>,
) {
    if let Ok(address) = listener.local_addr() {
        info!(%address, "metrics and health endpoint is up");
    }
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    debug!(%error, "metrics endpoint accept failed");
                    continue;
                }
            },
            _ = crate::stop::stopped(&mut stop) => break,
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(request, endpoint.clone()));
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%error, "metrics endpoint connection");
            }
        });
    }
}

async fn respond<E: Endpoint>(
    request: Request<Incoming>,
    endpoint: Arc<E>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            endpoint.metrics(),
        ),
        (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        (&Method::GET, "/readyz") => match endpoint.readiness() {
            Ok(()) => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
            Err(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {reason}\n"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let response = Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default();
    Ok(response)
}

/// Binds the endpoint (separately from serving, so a bad address fails start-up).
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_the_listener_and_either_thingsboard_or_queue_room() {
        let health = Health::default();
        assert_eq!(health.readiness(), Err("device socket not bound"));
        health.listener_bound.store(true, Ordering::Relaxed);
        // No queue yet and no ThingsBoard: nothing can take data.
        assert!(health.readiness().is_err());
        let (queue, _receiver) = mpsc::channel::<ConvertedData>(1);
        health.watch_queue(&queue);
        assert_eq!(health.readiness(), Ok(()));
        let filler = ConvertedData {
            device: std::sync::Arc::new(crate::convert::DeviceIdentity {
                name: "d".into(),
                device_type: "default".into(),
            }),
            ts_ms: 0,
            telemetry: Vec::new(),
            attributes: Vec::new(),
            decode_errors: 0,
        };
        queue.try_send(filler).unwrap();
        assert_eq!(
            health.readiness(),
            Err("ThingsBoard not connected and the queue is full")
        );
        health.mqtt_connected.store(true, Ordering::Relaxed);
        assert_eq!(health.readiness(), Ok(()));
    }
}
