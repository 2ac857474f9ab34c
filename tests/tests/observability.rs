//! Metrics, probes and ThingsBoard's session limits, checked after real end-to-end traffic.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use e2e_tests::broker_peer_and_connector;
use e2e_tests::http::{get, sample};
use e2e_tests::peer::telemetry_entries;
use e2e_tests::{free_port, ConnectorProcess, Mosquitto, ThingsBoardPeer, PROMPTLY};
use serde_json::{json, Value};

fn basic(port_extra: &[(&str, Value)]) -> Value {
    let mut config = json!({
        "name": "Observed",
        "socket": {"type": "TCP", "address": "127.0.0.1", "port": 0},
        "devices": [{"address": "127.0.0.1:*", "deviceName": "Device Example",
            "telemetry": [{"key": "temp", "byteFrom": 0, "byteTo": -1}, {"key": "hum", "byteFrom": 0, "byteTo": 2}],
            "attributes": [{"key": "name", "byteFrom": 0, "byteTo": -1}, {"key": "num", "byteFrom": 2, "byteTo": 4}]}]
    });
    for (key, value) in port_extra {
        config[*key] = value.clone();
    }
    config
}

/// The device connects over IPv4 to a dual-stack listener.
fn device_address(connector: &ConnectorProcess) -> SocketAddr {
    SocketAddr::new("127.0.0.1".parse().unwrap(), connector.local_addr.port())
}

fn start_with_metrics(config: &Value, broker: u16) -> (ConnectorProcess, SocketAddr) {
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let connector =
        ConnectorProcess::start_with(config, broker, &["--metrics-address", &metrics.to_string()]);
    (connector, metrics)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_real_traffic_and_probes_answer() {
    let broker = Mosquitto::start();
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;
    let dual_stack = basic(&[("socket", json!({"type": "TCP", "address": "::", "port": 0}))]);
    let (connector, metrics) = start_with_metrics(&dual_stack, broker.port());
    assert_eq!(get(metrics, "/healthz"), (200, "ok\n".to_owned()));

    let frames: [&[u8]; 3] = [b"2345", b"\xff\x01ab", b"678"];
    let mut device = TcpStream::connect(device_address(&connector)).unwrap();
    for frame in frames {
        device.write_all(frame).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut telemetry = 0;
    while telemetry < 3 {
        let message = peer.next_gateway().await;
        if message.topic == "v1/gateway/telemetry" {
            telemetry += telemetry_entries(&message).len();
        }
    }
    let (status, text) = get(metrics, "/metrics");
    assert_eq!(status, 200);
    let value =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    let device = "{device=\"Device Example\"}";
    assert_eq!(
        value(&format!("socket_connector_frames_received_total{device}")),
        3.0
    );
    assert_eq!(
        value(&format!("socket_connector_received_bytes_total{device}")),
        11.0
    );
    // "\xff\x01ab": temp, hum and name do not decode as UTF-8; num ("ab") does.
    assert_eq!(
        value(&format!("socket_connector_decode_errors_total{device}")),
        3.0
    );
    assert_eq!(value("socket_connector_datapoints_published_total"), 12.0);
    assert_eq!(value("socket_connector_connections_accepted_total"), 1.0);
    assert_eq!(value("socket_connector_connections_open"), 1.0);
    assert_eq!(value("socket_connector_mqtt_connected"), 1.0);
    assert_eq!(
        value("socket_connector_mqtt_messages_published_total{topic=\"connect\"}"),
        1.0
    );
    assert!(value("socket_connector_mqtt_messages_published_total{topic=\"telemetry\"}") >= 1.0);
    assert_eq!(value("socket_connector_publish_latency_seconds_count"), 3.0);
    assert_eq!(get(metrics, "/readyz"), (200, "ready\n".to_owned()));

    // A peer no device accepts (IPv6 loopback; the filter is 127.0.0.1:*) is counted, by reason.
    let v6 = SocketAddr::new("::1".parse().unwrap(), connector.local_addr.port());
    let mut stranger = TcpStream::connect(v6).unwrap();
    let _ = stranger.write_all(b"x");
    connector.wait_for_log("no device's address filter matches");
    let text = get(metrics, "/metrics").1;
    assert_eq!(
        sample(
            &text,
            "socket_connector_connections_rejected_total{reason=\"no_matching_device\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "socket_connector_connections_accepted_total"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_survives_a_broker_outage_while_the_queue_has_room() {
    let mut broker = Mosquitto::start();
    let (connector, metrics) = start_with_metrics(&basic(&[]), broker.port());
    connector.wait_for_log("connected to ThingsBoard");
    broker.kill();
    connector.wait_for_log("ThingsBoard connection failed");
    let text = get(metrics, "/metrics").1;
    assert_eq!(sample(&text, "socket_connector_mqtt_connected"), Some(0.0));
    assert_eq!(get(metrics, "/readyz").0, 200, "the queue still takes data");
    assert_eq!(get(metrics, "/nope").0, 404);

    // Data read during the outage waits in the queue: connect, connector attributes, the
    // device's attributes and its telemetry.
    let mut device = TcpStream::connect(connector.local_addr).unwrap();
    device.write_all(b"2345").unwrap();
    let queued = |text: &str| sample(text, "socket_connector_queue_records").unwrap_or(0.0);
    let deadline = Instant::now() + PROMPTLY;
    let mut text = get(metrics, "/metrics").1;
    while queued(&text) < 4.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        text = get(metrics, "/metrics").1;
    }
    assert_eq!(queued(&text), 4.0, "{text}");
    assert!(sample(&text, "socket_connector_queue_bytes").unwrap_or(0.0) > 4.0);
    assert_eq!(
        sample(&text, "socket_connector_publish_ack_latency_seconds_count"),
        Some(0.0)
    );
    // Back online: the queue drains, each record acknowledged.
    broker.restart();
    let deadline = Instant::now() + PROMPTLY;
    while queued(&text) > 0.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        text = get(metrics, "/metrics").1;
    }
    assert_eq!(queued(&text), 0.0, "{text}");
    assert_eq!(sample(&text, "socket_connector_queue_bytes"), Some(0.0));
    assert!(
        sample(&text, "socket_connector_publish_ack_latency_seconds_count").unwrap_or(0.0) >= 4.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "socket_connector_mqtt_reconnects_total"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn session_limits_split_payloads_and_rate_limit_telemetry() {
    let broker = Mosquitto::start();
    // 80 % of 1000 bytes per payload, 80 % of 5 telemetry publishes per second.
    let limits = json!({"maxPayloadSize": 1000, "maxInflightMessages": 100,
        "gatewayRateLimits": {"messages": null, "telemetryMessages": "5:1", "telemetryDataPoints": null}});
    let mut peer = ThingsBoardPeer::connect_answering(broker.port(), Some(limits)).await;
    let connector = ConnectorProcess::start(&basic(&[]), broker.port());
    connector.wait_for_log("ThingsBoard session limits");
    // A burst that batches into payloads larger than 800 bytes unless split.
    let mut device = TcpStream::connect(connector.local_addr).unwrap();
    device.set_nodelay(true).unwrap();
    for n in 0..60 {
        device.write_all(format!("{n:04}").as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut entries = 0;
    let mut telemetry_arrivals = Vec::new();
    while entries < 60 {
        let message = peer.next_gateway().await;
        if message.topic == "v1/gateway/telemetry" {
            assert!(
                message.payload.len() <= 800,
                "{} bytes",
                message.payload.len()
            );
            entries += telemetry_entries(&message).len();
            telemetry_arrivals.push(Instant::now());
        }
    }
    // 4 per second after a burst of about 4.
    let publishes = telemetry_arrivals.len();
    if publishes > 8 {
        let span = telemetry_arrivals[publishes - 1] - telemetry_arrivals[0];
        let minimum = Duration::from_secs_f64((publishes - 6) as f64 / 4.0);
        let offsets: Vec<_> = telemetry_arrivals
            .iter()
            .map(|t| *t - telemetry_arrivals[0])
            .collect();
        assert!(span >= minimum, "{publishes} publishes in {span:?}, limit allows no faster than {minimum:?}: {offsets:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_answer_to_session_limits_does_not_stall_data() {
    let broker = Mosquitto::start();
    let mut peer = ThingsBoardPeer::connect_answering(broker.port(), None).await;
    let connector = ConnectorProcess::start(&basic(&[]), broker.port());
    let mut device = TcpStream::connect(connector.local_addr).unwrap();
    device.write_all(b"2345").unwrap();
    let (mut request, mut telemetry) = (None, None);
    while request.is_none() || telemetry.is_none() {
        let message = peer
            .next(e2e_tests::PROMPTLY)
            .await
            .expect("request and telemetry");
        match message.topic.as_str() {
            "v1/devices/me/rpc/request/1" => request = Some(message),
            "v1/gateway/telemetry" => telemetry = Some(message),
            _ => {}
        }
    }
    assert_eq!(
        request.unwrap().json(),
        json!({"method": "getSessionLimits", "params": {"timeout": 5000}})
    );
    let entries = telemetry_entries(&telemetry.unwrap());
    assert_eq!(entries[0].2, json!({"temp": "2345", "hum": "23"}));
}

/// ThingsBoard's default limits raise the payload size to 52,428 bytes after connecting; a
/// datapoint larger than the configured 8196 (here 20,000 bytes) must still be delivered: the MQTT
/// client's packet limit once stopped at 9,220 bytes and the session then failed for good.
#[tokio::test(flavor = "multi_thread")]
async fn larger_payloads_after_session_limits_are_delivered() {
    let framed = basic(&[(
        "socket",
        json!({"type": "TCP", "address": "127.0.0.1", "port": 0, "framing": {"type": "delimiter", "delimiter": "\\n"}}),
    )]);
    let (_broker, mut peer, connector) = broker_peer_and_connector(&framed, &[]).await;
    connector.wait_for_log("ThingsBoard session limits");
    let big = "7".repeat(20_000);
    let mut device = TcpStream::connect(connector.local_addr).unwrap();
    device
        .write_all(format!("{big}\nnext\n").as_bytes())
        .unwrap();
    let mut values = Vec::new();
    while values.len() < 2 {
        let message = peer.next_on("v1/gateway/telemetry").await;
        assert!(
            message.payload.len() <= 52_428,
            "{} bytes",
            message.payload.len()
        );
        values.extend(
            telemetry_entries(&message)
                .into_iter()
                .map(|(_, _, v)| v["temp"].clone()),
        );
    }
    assert_eq!(values, [json!(big), json!("next")]);
}
