//! A minimal HTTP/1.1 GET for scraping the connector's `/metrics` and probes, and for
//! Prometheus' query API, in tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// `(status, body)` of `GET path`.
pub fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect to the HTTP endpoint");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("HTTP status");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let chunked = head
        .lines()
        .any(|line| line.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

/// The body of a `Transfer-Encoding: chunked` response (Go's net/http sends bodies above 2 KiB so).
fn dechunk(mut chunks: &str) -> String {
    let mut body = String::new();
    while let Some((size, rest)) = chunks.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        body.push_str(&rest[..size]);
        chunks = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    body
}

/// The value of one sample (`name{labels}` exactly as exposed), or None when absent.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// One sample of the connector's `/metrics` at `address`; 0 when it is not exposed (yet).
pub fn metric(address: SocketAddr, series: &str) -> f64 {
    let (status, text) = get(address, "/metrics");
    assert_eq!(status, 200, "GET /metrics");
    sample(&text, series).unwrap_or(0.0)
}
