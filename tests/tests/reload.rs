//! Hot reload and device-side connection limits, end to end: a real broker, the real binary,
//! real sockets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use e2e_tests::http::metric;
use e2e_tests::peer::value;
use e2e_tests::{free_port, ConnectorProcess, Mosquitto, ThingsBoardPeer, PROMPTLY};
use serde_json::{json, Value};

fn config(socket: Value, devices: Value) -> Value {
    let mut socket_section = json!({"type": "TCP", "address": "127.0.0.1", "port": 0});
    if let (Some(base), Some(extra)) = (socket_section.as_object_mut(), socket.as_object()) {
        base.extend(extra.clone());
    }
    json!({"name": "Reload Connector", "socket": socket_section, "devices": devices})
}

fn device(name: &str, key: &str) -> Value {
    json!({"address": "*:*", "deviceName": name, "deviceType": "default",
           "telemetry": [{"key": key, "byteFrom": 0, "byteTo": -1}]})
}

fn start(config: &Value, broker: u16) -> (ConnectorProcess, SocketAddr) {
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let connector =
        ConnectorProcess::start_with(config, broker, &["--metrics-address", &metrics.to_string()]);
    (connector, metrics)
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_change_on_reload_without_dropping_connections_or_the_session() {
    let broker = Mosquitto::start();
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;
    let (connector, metrics) = start(&config(json!({}), json!([device("A", "t")])), broker.port());
    let mut stream = TcpStream::connect(connector.local_addr).unwrap();
    stream.write_all(b"one").unwrap();
    assert_eq!(peer.telemetry_values(1).await, [value("A", "t", "one")]);

    // A changes its key and B is added: the open connection feeds both at once.
    let path = connector.config_path();
    let reloaded = config(json!({}), json!([device("A", "u"), device("B", "v")]));
    std::fs::write(&path, serde_json::to_vec_pretty(&reloaded).unwrap()).unwrap();
    connector.wait_for_log("configuration reloaded");
    stream.write_all(b"two").unwrap();
    let mut after = peer.telemetry_values(2).await;
    after.sort_by_key(|e| (e.0.clone(), e.1.clone()));
    assert_eq!(after, [value("A", "u", "two"), value("B", "v", "two")]);
    assert_eq!(
        metric(
            metrics,
            "socket_connector_config_reloads_total{result=\"applied\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(metrics, "socket_connector_mqtt_reconnects_total"),
        0.0,
        "the MQTT session was kept"
    );
    assert_eq!(
        metric(metrics, "socket_connector_connections_accepted_total"),
        1.0,
        "the device connection was kept"
    );

    // An invalid file and a socket change are rejected; the running configuration stays.
    std::fs::write(
        &path,
        br#"{"socket": {"type": "TCP"}, "devices": [{"deviceName": 7}]}"#,
    )
    .unwrap();
    connector.wait_for_log("configuration reload rejected");
    let moved = config(json!({"port": 1}), json!([device("A", "w")]));
    std::fs::write(&path, serde_json::to_vec_pretty(&moved).unwrap()).unwrap();
    connector.wait_for_logs("configuration reload rejected", 2);
    assert!(connector.logs_containing("socket section changed").len() == 1);
    stream.write_all(b"three").unwrap();
    let mut kept = peer.telemetry_values(2).await;
    kept.sort_by_key(|e| (e.0.clone(), e.1.clone()));
    assert_eq!(kept, [value("A", "u", "three"), value("B", "v", "three")]);
    assert_eq!(
        metric(
            metrics,
            "socket_connector_config_reloads_total{result=\"rejected\"}"
        ),
        2.0
    );

    // Removing the device a connection feeds closes that connection; SIGHUP reloads too.
    let other = config(
        json!({}),
        json!([{"address": "10.9.9.9:*", "deviceName": "C",
        "telemetry": [{"key": "t", "byteFrom": 0, "byteTo": -1}]}]),
    );
    std::fs::write(&path, serde_json::to_vec_pretty(&other).unwrap()).unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &connector.pid().to_string()])
        .status();
    connector.wait_for_log("SIGHUP: reloading the configuration");
    connector.wait_for_log("configuration reloaded");
    stream.write_all(b"four").unwrap();
    stream.set_read_timeout(Some(PROMPTLY)).unwrap();
    let mut buffer = [0u8; 16];
    assert!(
        matches!(stream.read(&mut buffer), Ok(0) | Err(_)),
        "the connection of a removed device is closed"
    );
    connector.wait_for_log("no device's address filter matches this peer");
}

/// A TCP connection to `target` from the loopback address `source` (127.0.0.x).
fn connect_from(source: [u8; 4], target: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        socket.connect(target).await.unwrap().into_std().unwrap()
    })
}

/// True when the connector closed the connection (EOF or reset) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buffer = [0u8; 16];
    match stream.read(&mut buffer) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn connection_limits_refuse_extra_peers_and_idle_connections_are_closed() {
    let broker = Mosquitto::start();
    let limits = json!({"maxConnections": 3, "maxConnectionsPerPeer": 2, "idleTimeoutMs": 1500});
    let (connector, metrics) = start(&config(limits, json!([device("A", "t")])), broker.port());
    let target = connector.local_addr;
    let mut first = connect_from([127, 0, 0, 1], target);
    let mut second = connect_from([127, 0, 0, 1], target);
    let mut third_same_peer = connect_from([127, 0, 0, 1], target);
    assert!(
        closed_within(&mut third_same_peer, PROMPTLY),
        "a third connection from one IP is refused"
    );
    let mut other_peer = connect_from([127, 0, 0, 2], target);
    let mut over_total = connect_from([127, 0, 0, 3], target);
    assert!(
        closed_within(&mut over_total, PROMPTLY),
        "a fourth connection is refused"
    );
    assert_eq!(
        metric(
            metrics,
            "socket_connector_connections_rejected_total{reason=\"max_connections_per_peer\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            metrics,
            "socket_connector_connections_rejected_total{reason=\"max_connections\"}"
        ),
        1.0
    );
    assert_eq!(metric(metrics, "socket_connector_connections_open"), 3.0);

    // `first` keeps talking, the other two go silent and are closed after 1.5 s.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        first.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(closed_within(&mut second, Duration::from_millis(100)));
    assert!(closed_within(&mut other_peer, Duration::from_millis(100)));
    assert!(
        !closed_within(&mut first, Duration::from_millis(100)),
        "a talking connection stays open"
    );
    assert_eq!(
        metric(
            metrics,
            "socket_connector_connections_closed_total{reason=\"idle_timeout\"}"
        ),
        2.0
    );
    // Closing freed the slots: the peer may connect again.
    let mut again = connect_from([127, 0, 0, 2], target);
    again.write_all(b"y").unwrap();
    assert!(!closed_within(&mut again, Duration::from_millis(300)));
    // One warning per peer and interval, not one per refusal.
    for _ in 0..5 {
        let mut refused = connect_from([127, 0, 0, 1], target);
        assert!(closed_within(&mut refused, PROMPTLY));
    }
    assert_eq!(
        connector
            .logs_containing("max_connections_per_peer reached")
            .len(),
        1
    );
}
