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

/// Bodies larger than this are not read (an endpoint's `/status` is a few hundred bytes).
const MAX_STATUS_BYTES: usize = 64 * 1024;

/// `GET http://<address>/status` within `limit`: the body of a 200 answer, else what went wrong.
/// The operator asks each connector pod this way.
pub async fn fetch_status(
    address: SocketAddr,
    limit: std::time::Duration,
) -> Result<String, String> {
    match tokio::time::timeout(limit, fetch(address, "/status")).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
    }
}

async fn fetch(address: SocketAddr, path: &str) -> Result<String, String> {
    use http_body_util::{BodyExt, Empty, Limited};
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect to {address}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    // The connection ends when `sender` is dropped.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::get(path)
        .header(hyper::header::HOST, address.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != StatusCode::OK {
        return Err(format!("HTTP {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_STATUS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "the answer is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Fixed;

    impl Endpoint for Fixed {
        fn readiness(&self) -> Result<(), &'static str> {
            Ok(())
        }
        fn metrics(&self) -> String {
            String::new()
        }
        fn status(&self) -> String {
            r#"{"thingsboard":{"connected":true}}"#.to_owned()
        }
    }

    #[tokio::test]
    async fn fetch_status_reads_what_serve_answers() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve(listener, Arc::new(Fixed), stopped));
        let answer = fetch_status(address, Duration::from_secs(5)).await;
        assert_eq!(
            answer.as_deref(),
            Ok(r#"{"thingsboard":{"connected":true}}"#)
        );
        assert_eq!(
            fetch(address, "/nope").await,
            Err("HTTP 404 Not Found".to_owned())
        );
        let _ = stop.send(true);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn fetch_status_says_why_there_is_no_answer() {
        // Accepts, never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let answer = fetch_status(silent.local_addr().unwrap(), Duration::from_millis(200)).await;
        assert_eq!(answer, Err("no answer within 200 ms".to_owned()));
        let closed = silent.local_addr().unwrap();
        drop(silent);
        let answer = fetch_status(closed, Duration::from_secs(5)).await;
        assert!(
            answer
                .as_ref()
                .is_err_and(|e| e.starts_with(&format!("connect to {closed}: "))),
            "{answer:?}"
        );
    }
}
