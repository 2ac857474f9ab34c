//! Uplink end to end: real device sockets in, the exact gateway-API topics and payloads out of a
//! real Mosquitto broker.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use e2e_tests::broker_peer_and_connector;
use e2e_tests::peer::telemetry_entries;
use e2e_tests::{ConnectorProcess, Message, Mosquitto, ThingsBoardPeer, PROMPTLY};
use serde_json::{json, Value};

fn example(name: &str) -> Value {
    let path = format!(
        "{}/../examples/thingsboard/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The example with a free port on loopback, keeping everything else as ThingsBoard ships it.
fn on_free_port(mut config: Value) -> Value {
    let socket = if config.get("socket").is_some() {
        &mut config["socket"]
    } else {
        &mut config
    };
    socket["address"] = json!("127.0.0.1");
    socket["port"] = json!(0);
    config
}

fn send_tcp(connector: &ConnectorProcess, frames: &[&[u8]]) -> TcpStream {
    let mut stream = TcpStream::connect(connector.local_addr).unwrap();
    for frame in frames {
        stream.write_all(frame).unwrap();
        // One read per frame, as a device sending one message at a time would see.
        std::thread::sleep(Duration::from_millis(50));
    }
    stream
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn assert_recent(ts: i64, since: i64) {
    assert!(
        ts >= since && ts <= now_ms(),
        "ts {ts} not in [{since}, now]"
    );
}

fn topics(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.topic.as_str()).collect()
}

/// The four messages of a device's first data, in ThingsBoard's order.
async fn expect_first_data(
    peer: &mut ThingsBoardPeer,
    device: &str,
    device_type: &str,
    connector: &str,
) -> Vec<Message> {
    let connect = peer.next_gateway().await;
    assert_eq!(connect.topic, "v1/gateway/connect");
    assert_eq!(
        connect.json(),
        json!({"device": device, "type": device_type})
    );
    let connector_attributes = peer.next_gateway().await;
    assert_eq!(connector_attributes.topic, "v1/gateway/attributes");
    assert_eq!(
        connector_attributes.json(),
        json!({device: {"connectorType": "socket", "connectorName": connector}})
    );
    vec![connect, connector_attributes]
}

/// The device of ThingsBoard's examples connects first.
async fn expect_example_device(peer: &mut ThingsBoardPeer) {
    expect_first_data(peer, "Device Example", "default", "TCP Connector Example").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_example_over_tcp() {
    let (_broker, mut peer, connector) =
        broker_peer_and_connector(&on_free_port(example("basic.json")), &[]).await;
    let since = now_ms();
    let _device = send_tcp(&connector, &[b"2345"]);

    expect_first_data(&mut peer, "Device Example", "default", "TCP Connector").await;
    let attributes = peer.next_gateway().await;
    assert_eq!(attributes.topic, "v1/gateway/attributes");
    // Exact bytes: compact JSON, keys in configuration order.
    assert_eq!(
        attributes.text(),
        r#"{"Device Example":{"name":"2345","num":"45"}}"#
    );
    let telemetry = peer.next_gateway().await;
    let entries = telemetry_entries(&telemetry);
    assert_eq!(entries.len(), 1);
    let (device, ts, values) = &entries[0];
    assert_eq!(device, "Device Example");
    assert_recent(*ts, since);
    assert_eq!(
        telemetry.text(),
        format!(r#"{{"Device Example":[{{"ts":{ts},"values":{{"temp":"2345","hum":"23"}}}}]}}"#)
    );
    assert_eq!(values, &json!({"temp": "2345", "hum": "23"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_example_over_udp() {
    let mut config = on_free_port(example("basic.json"));
    config["socket"]["type"] = json!("UDP");
    let (_broker, mut peer, connector) = broker_peer_and_connector(&config, &[]).await;
    let device = UdpSocket::bind("127.0.0.1:0").unwrap();
    device.send_to(b"2345", connector.local_addr).unwrap();

    expect_first_data(&mut peer, "Device Example", "default", "TCP Connector").await;
    assert_eq!(
        peer.next_gateway().await.json(),
        json!({"Device Example": {"name": "2345", "num": "45"}})
    );
    let entries = telemetry_entries(&peer.next_gateway().await);
    assert_eq!(entries[0].2, json!({"temp": "2345", "hum": "23"}));
    // The device is announced once, whatever else it sends.
    device.send_to(b"6789", connector.local_addr).unwrap();
    let next = peer.until_count("v1/gateway/telemetry", 1).await;
    assert_eq!(
        topics(&next),
        ["v1/gateway/attributes", "v1/gateway/telemetry"]
    );
    assert_eq!(
        telemetry_entries(next.last().unwrap())[0].2,
        json!({"temp": "6789", "hum": "67"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn old_format_example() {
    let (_broker, mut peer, connector) =
        broker_peer_and_connector(&on_free_port(example("old-format.json")), &[]).await;
    connector.wait_for_log("old socket connector configuration format detected");
    let _device = send_tcp(&connector, &[b"21.5"]);
    expect_example_device(&mut peer).await;
    let entries = telemetry_entries(&peer.next_gateway().await);
    assert_eq!(entries[0].2, json!({"temp": "21.5"}));
}

/// Report strategies of the advanced example: device ON_CHANGE, `temp` ON_REPORT_PERIOD 10 s.
#[tokio::test(flavor = "multi_thread")]
async fn advanced_example_report_strategies() {
    let (_broker, mut peer, connector) =
        broker_peer_and_connector(&on_free_port(example("advanced.json")), &[]).await;
    let _device = send_tcp(&connector, &[b"2345", b"2345", b"2399"]);

    expect_example_device(&mut peer).await;
    // First sighting: everything is forwarded.
    assert_eq!(
        peer.next_gateway().await.json(),
        json!({"Device Example": {"name": "2345", "num": "45"}})
    );
    let first = telemetry_entries(&peer.next_gateway().await);
    assert_eq!(first[0].2, json!({"temp": "2345", "hum": "23"}));
    let first_ts = first[0].1;
    // "2345" again: nothing changed, nothing sent. "2399": hum is unchanged ("23"), temp waits for
    // its period, the attributes changed.
    let changed = peer.next_gateway().await;
    assert_eq!(
        changed.json(),
        json!({"Device Example": {"name": "2399", "num": "99"}})
    );
    // The periodic re-send of temp carries the latest value and the send time.
    let resend = peer
        .next_on_within("v1/gateway/telemetry", Duration::from_secs(15))
        .await;
    let entries = telemetry_entries(&resend);
    assert_eq!(entries[0].2, json!({"temp": "2399"}));
    let elapsed = entries[0].1 - first_ts;
    assert!(
        (9_900..=12_000).contains(&elapsed),
        "re-sent {elapsed} ms after the first value"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_filters_feed_every_matching_device() {
    let config = json!({
        "name": "Overlap",
        "socket": {"type": "TCP", "address": "127.0.0.1", "port": 0},
        "devices": [
            {"address": "*:*", "deviceName": "Everyone", "telemetry": [{"key": "all"}]},
            {"address": "127.0.0.1:*", "deviceName": "Loopback", "deviceType": "local",
             "telemetry": [{"key": "first", "byteFrom": 0, "byteTo": 1}]},
            {"address": "10.1.2.3:*", "deviceName": "Elsewhere", "telemetry": [{"key": "x"}]}
        ]
    });
    let (_broker, mut peer, connector) = broker_peer_and_connector(&config, &[]).await;
    let _device = send_tcp(&connector, &[b"ab"]);
    let messages = peer.until_count("v1/gateway/telemetry", 1).await;
    let connects: Vec<Value> = messages
        .iter()
        .filter(|m| m.topic == "v1/gateway/connect")
        .map(Message::json)
        .collect();
    assert_eq!(
        connects,
        [
            json!({"device": "Everyone", "type": "default"}),
            json!({"device": "Loopback", "type": "local"})
        ]
    );
    let entries = telemetry_entries(messages.last().unwrap());
    let values: Vec<(&str, &Value)> = entries.iter().map(|(d, _, v)| (d.as_str(), v)).collect();
    assert_eq!(
        values,
        [
            ("Everyone", &json!({"all": "ab"})),
            ("Loopback", &json!({"first": "a"}))
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unmatched_tcp_peer_is_closed_and_logged() {
    let config = json!({
        "socket": {"type": "TCP", "address": "127.0.0.1", "port": 0},
        "devices": [{"address": "10.9.9.9:*", "deviceName": "Remote", "telemetry": [{"key": "t"}]}]
    });
    let (_broker, mut peer, connector) = broker_peer_and_connector(&config, &[]).await;
    let mut stream = TcpStream::connect(connector.local_addr).unwrap();
    stream.set_read_timeout(Some(PROMPTLY)).unwrap();
    let _ = stream.write_all(b"data");
    let mut buffer = [0u8; 16];
    // The connector closes the connection: EOF (or a reset if our write raced the close).
    match stream.read(&mut buffer) {
        Ok(0) => {}
        Ok(n) => panic!("unexpected {n} bytes from the connector"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "expected the connection to be closed, got {e}"
        ),
    }
    let record = connector.wait_for_log("no device's address filter matches");
    assert!(record["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(peer
        .drain(Duration::from_millis(500))
        .await
        .iter()
        .all(|m| !m.topic.starts_with("v1/gateway/")));
}

#[tokio::test(flavor = "multi_thread")]
async fn many_concurrent_tcp_clients() {
    const CLIENTS: usize = 50;
    let config = json!({
        "socket": {"type": "TCP", "address": "127.0.0.1", "port": 0},
        "devices": [{"address": "*:*", "deviceName": "Shared", "telemetry": [{"key": "id"}]}]
    });
    let (_broker, mut peer, connector) = broker_peer_and_connector(&config, &[]).await;
    // All connections open at once, then each sends its id.
    let mut streams: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| TcpStream::connect(connector.local_addr).unwrap())
        .collect();
    for (i, stream) in streams.iter_mut().enumerate() {
        stream.write_all(format!("{i:03}").as_bytes()).unwrap();
    }
    let mut ids = Vec::new();
    while ids.len() < CLIENTS {
        let message = peer.next_gateway().await;
        if message.topic == "v1/gateway/telemetry" {
            ids.extend(
                telemetry_entries(&message)
                    .into_iter()
                    .map(|(_, _, v)| v["id"].as_str().unwrap().to_owned()),
            );
        }
    }
    ids.sort();
    let expected: Vec<String> = (0..CLIENTS).map(|i| format!("{i:03}")).collect();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_listener_and_filter() {
    let config = json!({
        "socket": {"type": "UDP", "address": "::1", "port": 0},
        "devices": [{"address": "::1:*", "deviceName": "V6", "telemetry": [{"key": "t"}]}]
    });
    let (_broker, mut peer, connector) = broker_peer_and_connector(&config, &[]).await;
    assert!(connector.local_addr.is_ipv6());
    let device = UdpSocket::bind("[::1]:0").unwrap();
    device.send_to(b"six", connector.local_addr).unwrap();
    let messages = peer.until_count("v1/gateway/telemetry", 1).await;
    assert_eq!(
        telemetry_entries(messages.last().unwrap())[0].2,
        json!({"t": "six"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn buffer_size_bounds_each_message() {
    // ThingsBoard ignores bufferSize (always 1024); here a 4-byte buffer makes 8 bytes two messages.
    let config = json!({
        "socket": {"type": "TCP", "address": "127.0.0.1", "port": 0, "bufferSize": 4},
        "devices": [{"address": "*:*", "deviceName": "Small", "telemetry": [{"key": "t"}]}]
    });
    let (_broker, mut peer, connector) = broker_peer_and_connector(&config, &[]).await;
    let _device = send_tcp(&connector, &[b"abcdefgh"]);
    let mut values = Vec::new();
    while values.len() < 2 {
        let message = peer.next_gateway().await;
        if message.topic == "v1/gateway/telemetry" {
            values.extend(
                telemetry_entries(&message)
                    .into_iter()
                    .map(|(_, _, v)| v["t"].clone()),
            );
        }
    }
    assert_eq!(values, [json!("abcd"), json!("efgh")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_disconnects_devices_and_exits_cleanly() {
    let (_broker, mut peer, connector) =
        broker_peer_and_connector(&on_free_port(example("basic.json")), &[]).await;
    let _device = send_tcp(&connector, &[b"2345"]);
    peer.until_count("v1/gateway/telemetry", 1).await;
    let status = connector.terminate();
    assert!(status.success(), "exit status {status:?}");
    let disconnect = peer.next_gateway().await;
    assert_eq!(disconnect.topic, "v1/gateway/disconnect");
    assert_eq!(disconnect.json(), json!({"device": "Device Example"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnects_after_broker_restart_and_reannounces_devices() {
    let mut broker = Mosquitto::start();
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;
    let connector = ConnectorProcess::start(&on_free_port(example("basic.json")), broker.port());
    let mut device = send_tcp(&connector, &[b"2345"]);
    peer.until_count("v1/gateway/telemetry", 1).await;

    // Once the connector has seen the loss, its next attempt is at least 400 ms away (backoff),
    // time enough for the new broker and the peer's subscription.
    broker.kill();
    connector.wait_for_log("ThingsBoard connection failed");
    broker.restart();
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;
    // The device is announced again on the new session, before or after new data.
    let reconnect = peer.next_gateway().await;
    assert_eq!(reconnect.topic, "v1/gateway/connect");
    assert_eq!(
        reconnect.json(),
        json!({"device": "Device Example", "type": "default"})
    );
    connector.wait_for_logs("connected to ThingsBoard", 2);
    device.write_all(b"6789").unwrap();
    let after = peer.until_count("v1/gateway/telemetry", 1).await;
    assert_eq!(
        telemetry_entries(after.last().unwrap())[0].2,
        json!({"temp": "6789", "hum": "67"})
    );
}

#[test]
fn invalid_config_exits_with_the_json_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("socket.json");
    std::fs::write(
        &path,
        r#"{"socket": {"type": "TCP"}, "devices": [{"address": "*:*", "deviceName": "a"}, {"address": "*:*"}]}"#,
    )
    .unwrap();
    let output = ConnectorProcess::command(&path, e2e_tests::free_port())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("devices[1].deviceName: missing"),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[test]
fn missing_token_is_a_usage_error() {
    let output = std::process::Command::new(e2e_tests::connector::binary())
        .args(["run", "--config", "/nonexistent.json"])
        .env_remove("TB_ACCESS_TOKEN")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--token"));
}
