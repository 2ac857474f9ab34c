//! The HTTP endpoint for Kubernetes probes and Prometheus, shared by the connector and the
//! operator: `/healthz` (the process is alive), `/readyz`, `/metrics` and `/status`. What "ready" means and
//! which metrics are shown is the [`Endpoint`]'s business.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info};

/// What an HTTP endpoint serves.
pub trait Endpoint: Send + Sync + 'static {
    /// `Ok` when ready, else the reason.
    fn readiness(&self) -> Result<(), &'static str>;
    /// Prometheus text format.
    fn metrics(&self) -> String;
    /// `/status`: what the endpoint's owner reports of itself, as JSON.
    fn status(&self) -> String {
        "{}".to_owned()
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
            _ = stop.wait_for(|stopped| *stopped) => break,
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
        (&Method::GET, "/status") => (StatusCode::OK, "application/json", endpoint.status()),
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
