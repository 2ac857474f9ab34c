//! Framing end to end: frames split across reads, merged in one read, several per datagram,
//! oversized ones dropped or closing the connection.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use e2e_tests::broker_peer_and_connector;
use e2e_tests::peer::telemetry_entries;
use e2e_tests::{ConnectorProcess, ThingsBoardPeer, PROMPTLY};
use serde_json::{json, Value};

fn config(kind: &str, framing: Value, encoding: &str) -> Value {
    json!({
        "name": "Framed",
        "socket": {"type": kind, "address": "127.0.0.1", "port": 0, "framing": framing},
        "devices": [{"address": "*:*", "deviceName": "Framed Device", "encoding": encoding,
                     "telemetry": [{"key": "frame"}]}]
    })
}

/// Telemetry values of key `frame`, in order, until `count` arrived.
async fn frames(peer: &mut ThingsBoardPeer, count: usize) -> Vec<Value> {
    let mut values = Vec::new();
    while values.len() < count {
        let message = peer.next_on("v1/gateway/telemetry").await;
        values.extend(
            telemetry_entries(&message)
                .into_iter()
                .map(|(_, _, v)| v["frame"].clone()),
        );
    }
    values
}

/// Writes each chunk separately, pausing so that each is its own read on the other side.
fn write_chunks(stream: &mut TcpStream, chunks: &[&[u8]]) {
    stream.set_nodelay(true).unwrap();
    for chunk in chunks {
        stream.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(60));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn delimiter_frames_split_and_merged_across_reads() {
    let (_broker, mut peer, connector) = broker_peer_and_connector(
        &config(
            "TCP",
            json!({"type": "delimiter", "delimiter": "\\r\\n"}),
            "utf-8",
        ),
        &[],
    )
    .await;
    let mut device = TcpStream::connect(connector.local_addr).unwrap();
    write_chunks(&mut device, &[b"21.5\r", b"\n22.0\r\n22", b".5\r\n"]);
    assert_eq!(
        frames(&mut peer, 3).await,
        [json!("21.5"), json!("22.0"), json!("22.5")]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn length_field_frames() {
    let framing = json!({"type": "length", "lengthFieldLength": 2, "initialBytesToStrip": 2});
    let (_broker, mut peer, connector) =
        broker_peer_and_connector(&config("TCP", framing, "utf-8"), &[]).await;
    let mut device = TcpStream::connect(connector.local_addr).unwrap();
    write_chunks(
        &mut device,
        &[b"\x00\x05hel", b"lo\x00\x02hi\x00", b"\x03bye"],
    );
    assert_eq!(
        frames(&mut peer, 3).await,
        [json!("hello"), json!("hi"), json!("bye")]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fixed_size_frames() {
    let (_broker, mut peer, connector) = broker_peer_and_connector(
        &config("TCP", json!({"type": "fixed", "size": 4}), "utf-8"),
        &[],
    )
    .await;
    let mut device = TcpStream::connect(connector.local_addr).unwrap();
    write_chunks(&mut device, &[b"ab", b"cdefgh"]);
    assert_eq!(frames(&mut peer, 2).await, [json!("abcd"), json!("efgh")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn start_end_markers_in_udp_datagrams() {
    let framing = json!({"type": "markers", "start": "0x88", "end": "0xFF"});
    let (_broker, mut peer, connector) =
        broker_peer_and_connector(&config("UDP", framing, "hex"), &[]).await;
    let device = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Two frames and some noise in one datagram.
    device
        .send_to(
            b"\x00\x88\x01\x02\xFF\x13\x88\x03\xFF",
            connector.local_addr,
        )
        .unwrap();
    assert_eq!(
        frames(&mut peer, 2).await,
        [json!("880102ff"), json!("8803ff")]
    );
}

/// A bad frame in a datagram is logged and dropped, and the datagrams after it still arrive
/// (the tests run a debug build, where the old `now - i64::MIN` of the log throttle panicked).
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_udp_frame_is_logged_and_the_next_datagram_arrives() {
    let framing = json!({"type": "delimiter", "delimiter": "\\n", "maxFrameLength": 4});
    let (_broker, mut peer, connector) =
        broker_peer_and_connector(&config("UDP", framing, "utf-8"), &[]).await;
    let device = UdpSocket::bind("127.0.0.1:0").unwrap();
    device
        .send_to(b"much too long\n", connector.local_addr)
        .unwrap();
    connector.wait_for_log("frame dropped");
    device.send_to(b"ok\n", connector.local_addr).unwrap();
    assert_eq!(frames(&mut peer, 1).await, [json!("ok")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_frames_are_dropped_or_close_the_connection() {
    let resync = json!({"type": "delimiter", "delimiter": "\\n", "maxFrameLength": 4});
    let (broker, mut peer, connector) =
        broker_peer_and_connector(&config("TCP", resync, "utf-8"), &[]).await;
    let mut device = TcpStream::connect(connector.local_addr).unwrap();
    write_chunks(&mut device, &[b"ok\nmuch too long\nfine\n"]);
    assert_eq!(frames(&mut peer, 2).await, [json!("ok"), json!("fine")]);
    connector.wait_for_log("frame dropped");

    let close = json!({"type": "delimiter", "delimiter": "\\n", "maxFrameLength": 4, "onOversize": "close"});
    let metrics_address = format!("127.0.0.1:{}", e2e_tests::free_port());
    let closing = ConnectorProcess::start_with(
        &config("TCP", close, "utf-8"),
        broker.port(),
        &["--metrics-address", &metrics_address],
    );
    let mut device = TcpStream::connect(closing.local_addr).unwrap();
    device.set_read_timeout(Some(PROMPTLY)).unwrap();
    device.write_all(b"much too long\n").unwrap();
    let mut byte = [0u8; 1];
    match device.read(&mut byte) {
        Ok(0) => {}
        Ok(_) => panic!("unexpected data"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    closing.wait_for_log("connection closed after a bad frame");
    let (_, metrics) = e2e_tests::http::get(metrics_address.parse().unwrap(), "/metrics");
    let closed = |reason: &str| {
        e2e_tests::http::sample(
            &metrics,
            &format!("socket_connector_connections_closed_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(closed("frame_too_long"), Some(1.0), "{metrics}");
    assert_eq!(
        closed("idle_timeout"),
        Some(0.0),
        "every reason is a series from the start"
    );
}

#[test]
fn invalid_framing_is_a_config_error_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("socket.json");
    let bad = config(
        "TCP",
        json!({"type": "length", "lengthFieldLength": 3}),
        "utf-8",
    );
    std::fs::write(&path, bad.to_string()).unwrap();
    let output = ConnectorProcess::command(&path, 1).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("socket.framing.lengthFieldLength: must be 1, 2, 4 or 8, got 3"),
        "{stderr}"
    );
}
