//! Client mode: the connector connects to a device that is a TCP server, sends the handshake on
//! every connect and polls on an interval, and reconnects when the device drops the connection.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use e2e_tests::broker_peer_and_connector;
use e2e_tests::peer::telemetry_entries;
use e2e_tests::PROMPTLY;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn connects_out_polls_and_reconnects() {
    let device_server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = device_server.local_addr().unwrap().port();
    let config = json!({
        "name": "Outbound",
        "socket": {"type": "TCP", "mode": "client", "address": "127.0.0.1", "port": port,
                   "handshake": "HELLO\\n", "pollPayload": "0x01", "pollIntervalMs": 100,
                   "reconnectDelayMs": 50, "framing": {"type": "delimiter", "delimiter": "\\n"}},
        "devices": [{"address": format!("127.0.0.1:{port}"), "deviceName": "Device Server",
                     "telemetry": [{"key": "value"}]}]
    });
    let (_broker, mut peer, _connector) = broker_peer_and_connector(&config, &[]).await;

    for round in 0..2 {
        let (mut connection, _) = device_server.accept().unwrap();
        connection.set_read_timeout(Some(PROMPTLY)).unwrap();
        let mut handshake = [0u8; 6];
        connection.read_exact(&mut handshake).unwrap();
        assert_eq!(&handshake, b"HELLO\n", "round {round}");
        // Polls keep coming while connected.
        let mut polls = [0u8; 3];
        connection.read_exact(&mut polls).unwrap();
        assert_eq!(polls, [1, 1, 1]);
        connection
            .write_all(format!("reading {round}\n").as_bytes())
            .unwrap();
        let telemetry = peer.next_on("v1/gateway/telemetry").await;
        let entries = telemetry_entries(&telemetry);
        assert_eq!(entries[0].0, "Device Server");
        assert_eq!(entries[0].2, json!({"value": format!("reading {round}")}));
        // The device drops the connection; the connector comes back (next round accepts it).
        drop(connection);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn client_mode_keys_are_checked() {
    let bad = json!({"socket": {"type": "UDP", "mode": "client", "port": 9, "handshake": "0xZZ"},
                     "devices": [{"address": "*:*", "deviceName": "d"}]});
    let output = e2e_tests::connector::validate(&bad.to_string());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stdout.contains("error: socket.mode: client mode connects over TCP; use type TCP"),
        "{stdout}"
    );
    assert!(stdout.contains("error: socket.handshake:"), "{stdout}");
}
