//! ThingsBoard's UI driving the connector (remote configuration) and the gateway RPCs, end to
//! end: real Mosquitto, the real binary, real device sockets, and the test peer playing
//! ThingsBoard's side (the shared attributes the UI saves, answers to attribute requests).
//! Mosquitto, unlike ThingsBoard, also hands the connector its own client-attribute reports
//! back; the connector must not take them for edits.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e_tests::http::{get, metric};
use e2e_tests::peer::{telemetry_entries, value, Message};
use e2e_tests::{free_port, ConnectorProcess, Mosquitto, ThingsBoardPeer};
use serde_json::{json, Value};

const NAME: &str = "Socket Connector";
const CLIENT_ATTRIBUTES: &str = "v1/devices/me/attributes";

fn device(name: &str, key: &str) -> Value {
    device_at("*:*", name, key)
}

fn device_at(address: &str, name: &str, key: &str) -> Value {
    json!({"address": address, "deviceName": name, "deviceType": "default",
           "telemetry": [{"key": key, "byteFrom": 0, "byteTo": -1}]})
}

fn config(devices: Value) -> Value {
    json!({"name": NAME, "socket": {"type": "TCP", "address": "127.0.0.1", "port": 0},
           "devices": devices})
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The connector's `GET /status`.
fn status(address: SocketAddr) -> Value {
    serde_json::from_str(&get(address, "/status").1).unwrap()
}

fn metrics_address() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// The next report of the connector's configuration (its client attribute named [`NAME`]).
async fn next_report(peer: &mut ThingsBoardPeer) -> Value {
    loop {
        let message = peer.next_on(CLIENT_ATTRIBUTES).await;
        if let Some(report) = message.json().get(NAME) {
            return report.clone();
        }
    }
}

/// At start the first report describes the file; when the answer to the attribute request
/// applies a saved edit, the next one describes it. The report with `ts`, of those two.
async fn report_after_the_answer(peer: &mut ThingsBoardPeer, ts: &Value) -> Value {
    let first = next_report(peer).await;
    if first["ts"] == *ts {
        return first;
    }
    next_report(peer).await
}

/// Telemetry values `(device, key, value)` until `count` arrived.
async fn telemetry(peer: &mut ThingsBoardPeer, count: usize) -> Vec<(String, String, Value)> {
    let mut found = peer.telemetry_values(count).await;
    found.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    found
}

/// Device "A" (key "t") on 127.0.0.1:`port`, one device per address as the gateway keeps them.
fn device_a_on(port: u16) -> Value {
    json!({"name": NAME, "socket": {"type": "TCP", "address": "127.0.0.1", "port": port},
           "devices": [device_at("127.0.0.1:*", "A", "t")]})
}

/// Mosquitto, the peer playing ThingsBoard, and a connector with one device "A" (key "t") run
/// with `args`.
async fn device_a_connector(args: &[&str]) -> (Mosquitto, ThingsBoardPeer, ConnectorProcess) {
    let broker = Mosquitto::start();
    let peer = ThingsBoardPeer::connect(broker.port()).await;
    let connector =
        ConnectorProcess::start_with(&config(json!([device("A", "t")])), broker.port(), args);
    (broker, peer, connector)
}

/// What the UI saves after the user edited the form loaded from `report`: the reported value
/// with new devices and log level, a new `ts`, the UI's own keys (as observed from ThingsBoard).
fn ui_edit(report: &Value, devices: Value, log_level: &str) -> Value {
    let mut value = report.clone();
    value["configurationJson"]["devices"] = devices;
    value["logLevel"] = json!(log_level);
    value["mode"] = json!("basic");
    value["configuration"] = json!("socketConnector.json");
    value["configVersion"] = json!("3.8.5");
    value["ts"] = json!(now_ms());
    value.as_object_mut().unwrap().remove("grpc_key");
    value
}

/// Messages on the gateway device's client attributes within `quiet`.
async fn reports_within(peer: &mut ThingsBoardPeer, quiet: Duration) -> Vec<Message> {
    peer.drain(quiet)
        .await
        .into_iter()
        .filter(|m| m.topic == CLIENT_ATTRIBUTES)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ui_edit_is_applied_live_and_reported_back_and_a_bad_one_is_refused() {
    let broker = Mosquitto::start();
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;
    let metrics = metrics_address();
    let connector = ConnectorProcess::start_with(
        &config(json!([device("A", "t")])),
        broker.port(),
        &[
            "--remote-configuration",
            "--metrics-address",
            &metrics.to_string(),
        ],
    );

    // At start: the attribute request, then the report the UI's Connectors page reads.
    let request = peer
        .next_on("v1/devices/me/attributes/request/1")
        .await
        .json();
    assert_eq!(request, json!({}));
    let general = peer.next_on(CLIENT_ATTRIBUTES).await.json();
    assert_eq!(general["active_connectors"], json!([NAME]));
    assert_eq!(general["Version"], "3.8.5");
    let report = next_report(&mut peer).await;
    assert_eq!(status(metrics)["configuration"], json!({"source": "file"}));
    assert_eq!(report["type"], "socket");
    assert_eq!(report["name"], NAME);
    assert_eq!(report["configuration"], "socket.json");
    assert_eq!(report["logLevel"], "INFO");
    assert_eq!(report["configurationJson"]["devices"][0]["deviceName"], "A");
    assert_eq!(report["configurationJson"]["id"], report["id"]);

    let mut device_connection = TcpStream::connect(connector.local_addr).unwrap();
    device_connection.write_all(b"one").unwrap();
    assert_eq!(telemetry(&mut peer, 1).await, [value("A", "t", "one")]);

    // The user changes A's key, adds B and switches the log level to DEBUG.
    let edit = ui_edit(
        &report,
        json!([device("A", "u"), device("B", "v")]),
        "DEBUG",
    );
    peer.set_shared(NAME, edit.clone()).await;
    let echo = next_report(&mut peer).await;
    assert_eq!(echo["ts"], edit["ts"], "the UI counts it applied by its ts");
    assert_eq!(echo["mode"], "basic");
    assert_eq!(
        echo["configurationJson"]["devices"],
        edit["configurationJson"]["devices"]
    );
    assert_eq!(echo["configurationJson"]["logLevel"], "DEBUG");
    connector.wait_for_log("configuration reloaded");
    // What the operator reads into `ConfiguredInThingsBoard`.
    assert_eq!(
        status(metrics)["configuration"],
        json!({"source": "thingsboard", "savedAtMs": edit["ts"]})
    );
    // Mosquitto hands the echo back: at DEBUG (applied live) the connector says it ignored it.
    connector.wait_for_log("not newer than the running one");

    // Same device connection, same MQTT session: both devices now.
    device_connection.write_all(b"two").unwrap();
    assert_eq!(
        telemetry(&mut peer, 2).await,
        [value("A", "u", "two"), value("B", "v", "two")]
    );
    assert_eq!(
        metric(metrics, "socket_connector_connections_accepted_total"),
        1.0
    );
    assert_eq!(
        metric(metrics, "socket_connector_mqtt_reconnects_total"),
        0.0
    );

    // An invalid edit (a socket type that does not exist) and one that needs a new listener.
    let mut invalid = ui_edit(&echo, json!([device("A", "w")]), "DEBUG");
    invalid["configurationJson"]["socket"]["type"] = json!("SCTP");
    peer.set_shared(NAME, invalid).await;
    connector.wait_for_log("configuration reload rejected");
    let mut new_port = ui_edit(&echo, json!([device("A", "w")]), "DEBUG");
    new_port["configurationJson"]["socket"]["port"] = json!(free_port());
    peer.set_shared(NAME, new_port).await;
    let rejected = connector.wait_for_logs("configuration reload rejected", 2);
    assert!(
        rejected[1]["message"]
            .as_str()
            .is_some_and(|m| m.contains("socket section changed")),
        "{:?}",
        rejected[1]
    );
    assert_eq!(
        metric(
            metrics,
            "socket_connector_config_reloads_total{result=\"rejected\"}"
        ),
        2.0
    );
    // The running configuration stays and nothing claims otherwise to the UI.
    device_connection.write_all(b"three").unwrap();
    let mut after = Vec::new();
    let mut errors = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    while (after.len() < 2 || errors.is_none()) && tokio::time::Instant::now() < deadline {
        let Some(message) = peer.next(Duration::from_secs(1)).await else {
            continue;
        };
        match message.topic.as_str() {
            "v1/gateway/telemetry" => after.extend(telemetry_entries(&message)),
            CLIENT_ATTRIBUTES => assert!(
                message.json().get(NAME).is_none(),
                "a rejected edit was reported: {}",
                message.text()
            ),
            "v1/devices/me/telemetry" => {
                if let Some(count) =
                    message.json()[0]["values"]["Socket Connector_ERRORS_COUNT"].as_u64()
                {
                    errors = Some(count);
                }
            }
            _ => {}
        }
    }
    let mut values: Vec<_> = after
        .iter()
        .map(|(device, _, values)| (device.clone(), values.clone()))
        .collect();
    values.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        values,
        [
            ("A".to_owned(), json!({"u": "three"})),
            ("B".to_owned(), json!({"v": "three"}))
        ]
    );
    // The UI's Errors column: the connector's error count telemetry.
    assert_eq!(errors, Some(2), "Socket Connector_ERRORS_COUNT");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_saved_while_away_is_applied_at_start_unless_the_file_is_newer() {
    let broker = Mosquitto::start();
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;
    let file_config = config(json!([device("A", "t")]));
    let saved = json!({
        "name": NAME, "type": "socket", "logLevel": "INFO", "enableRemoteLogging": false,
        "configuration": "socketConnector.json", "configVersion": "3.8.5", "ts": now_ms(),
        "configurationJson": {"name": NAME,
            "socket": {"type": "TCP", "address": "127.0.0.1", "port": 0},
            "devices": [device("Saved", "s")]}
    });
    peer.store_shared(NAME, saved.clone());

    // The file is an hour older than the edit: the edit wins, from the answer to the request.
    let older = ConnectorProcess::start_with_old_file(
        &file_config,
        broker.port(),
        &["--remote-configuration"],
        Duration::from_secs(3600),
    );
    let applied = report_after_the_answer(&mut peer, &saved["ts"]).await;
    assert_eq!(applied["ts"], saved["ts"]);
    assert_eq!(
        applied["configurationJson"]["devices"][0]["deviceName"],
        "Saved"
    );
    let mut connection = TcpStream::connect(older.local_addr).unwrap();
    connection.write_all(b"x").unwrap();
    assert_eq!(telemetry(&mut peer, 1).await, [value("Saved", "s", "x")]);
    drop(connection);
    older.terminate();

    // A file written after the edit wins: the edit is not applied, the file is reported.
    let _ = peer.drain(Duration::from_millis(300)).await;
    let newer =
        ConnectorProcess::start_with(&file_config, broker.port(), &["--remote-configuration"]);
    let reports: Vec<Value> = reports_within(&mut peer, Duration::from_secs(2))
        .await
        .iter()
        .filter_map(|m| m.json().get(NAME).cloned())
        .collect();
    assert!(!reports.is_empty(), "no report at start");
    for report in &reports {
        assert_eq!(report["configurationJson"]["devices"][0]["deviceName"], "A");
    }
    let mut connection = TcpStream::connect(newer.local_addr).unwrap();
    connection.write_all(b"y").unwrap();
    assert_eq!(telemetry(&mut peer, 1).await, [value("A", "t", "y")]);
    drop(connection);
    newer.terminate();

    // A new file whose content is older than the edit (a ConfigMap written at pod start): the
    // edit wins again when the connector is told when the content changed.
    let _ = peer.drain(Duration::from_millis(300)).await;
    let changed_at = saved["ts"].as_i64().unwrap() - 60_000;
    let restarted = ConnectorProcess::start_with(
        &file_config,
        broker.port(),
        &[
            "--remote-configuration",
            "--config-changed-at-ms",
            &changed_at.to_string(),
        ],
    );
    let applied = report_after_the_answer(&mut peer, &saved["ts"]).await;
    assert_eq!(
        applied["configurationJson"]["devices"][0]["deviceName"],
        "Saved"
    );
    let mut connection = TcpStream::connect(restarted.local_addr).unwrap();
    connection.write_all(b"w").unwrap();
    assert_eq!(telemetry(&mut peer, 1).await, [value("Saved", "s", "w")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_remote_configuration_ui_edits_change_nothing() {
    let (_broker, mut peer, connector) = device_a_connector(&[]).await;
    let edit = json!({"name": NAME, "type": "socket", "ts": now_ms(),
        "configurationJson": {"name": NAME,
            "socket": {"type": "TCP", "address": "127.0.0.1", "port": 0},
            "devices": [device("B", "v")]}});
    peer.set_shared(NAME, edit).await;
    let published: Vec<Message> = reports_within(&mut peer, Duration::from_secs(2))
        .await
        .into_iter()
        .filter(|m| m.json().get(NAME).is_some() || m.json().get("active_connectors").is_some())
        .collect();
    assert!(published.is_empty(), "reported: {published:?}");
    let mut connection = TcpStream::connect(connector.local_addr).unwrap();
    connection.write_all(b"z").unwrap();
    assert_eq!(telemetry(&mut peer, 1).await, [value("A", "t", "z")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_rpcs_are_answered_as_the_gateway_answers_them() {
    let (_broker, mut peer, connector) = device_a_connector(&[]).await;
    let mut connection = TcpStream::connect(connector.local_addr).unwrap();
    connection.write_all(b"1").unwrap();
    assert_eq!(telemetry(&mut peer, 1).await, [value("A", "t", "1")]);

    let mut ask = async |id: u32, method: &str| -> Value {
        peer.publish(
            &format!("v1/devices/me/rpc/request/{id}"),
            json!({"method": method, "params": {}}),
        )
        .await;
        peer.next_on(&format!("v1/devices/me/rpc/response/{id}"))
            .await
            .json()
    };
    assert_eq!(
        ask(11, "gateway_ping").await,
        json!({"code": 200, "resp": "pong"})
    );
    assert_eq!(
        ask(12, "gateway_devices").await,
        json!({"code": 200, "resp": {"A": NAME}})
    );
    let stats = ask(13, "gateway_stats").await;
    assert_eq!(stats["SocketConnectorEventsProduced"], 1);
    assert_eq!(stats["eventsProduced"], 1);
    assert_eq!(stats["eventsSent"], 1);
    let version = ask(14, "gateway_version").await;
    assert_eq!(version["code"], 200);
    assert!(version["resp"]["current_version"].is_string(), "{version}");
    assert_eq!(
        ask(15, "gateway_reboot").await,
        json!({"error": "Method not found", "code": 404})
    );
}

/// What one implementation reports and publishes when the UI adds a device: its start report,
/// its echo of the edit, and the telemetry of a frame sent afterwards.
struct RemoteRun {
    report: Value,
    echo: Value,
    telemetry: Vec<(String, String, Value)>,
}

/// Drops what legitimately differs between two runs: ids, timestamps, the listening port.
fn comparable(mut value: Value) -> Value {
    for path in ["/configurationJson", ""] {
        if let Some(object) = value.pointer_mut(path).and_then(Value::as_object_mut) {
            object.remove("id");
            object.remove("ts");
        }
    }
    if let Some(socket) = value["configurationJson"]["socket"].as_object_mut() {
        socket.remove("port");
    }
    value
}

async fn drive_remote_edit(mut peer: ThingsBoardPeer, port: u16, ready: Duration) -> RemoteRun {
    let report = tokio::time::timeout(ready, next_report(&mut peer))
        .await
        .expect("no configuration report");
    // Distinct addresses: the gateway keeps one device per address.
    let edit = ui_edit(
        &report,
        json!([device_at("127.0.0.1:*", "A", "t"), device("B", "v")]),
        "INFO",
    );
    peer.set_shared(NAME, edit.clone()).await;
    let echo = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let echo = next_report(&mut peer).await;
            if echo["ts"] == edit["ts"] {
                return echo;
            }
        }
    })
    .await
    .expect("no echo of the edit");
    // The gateway opens a new listener for the new connector instance.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut connection = TcpStream::connect(("127.0.0.1", port)).unwrap();
    connection.write_all(b"42").unwrap();
    let telemetry = telemetry(&mut peer, 2).await;
    RemoteRun {
        report,
        echo,
        telemetry,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_and_edits_match_the_thingsboard_gateway() {
    let theirs = async {
        let broker = Mosquitto::start();
        let peer = ThingsBoardPeer::connect(broker.port()).await;
        let port = free_port();
        let gateway = e2e_tests::thingsboard_gateway::ThingsBoardGateway::start_with(
            &device_a_on(port),
            broker.port(),
            &["--remote-configuration"],
        );
        let run = drive_remote_edit(peer, port, Duration::from_secs(60)).await;
        gateway.terminate();
        run
    };
    let ours = async {
        let broker = Mosquitto::start();
        let peer = ThingsBoardPeer::connect(broker.port()).await;
        let port = free_port();
        let connector = ConnectorProcess::start_with(
            &device_a_on(port),
            broker.port(),
            &["--remote-configuration"],
        );
        let run = drive_remote_edit(peer, port, Duration::from_secs(10)).await;
        drop(connector);
        run
    };
    let (theirs, ours) = tokio::join!(theirs, ours);
    assert_eq!(
        comparable(ours.report),
        comparable(theirs.report),
        "start report"
    );
    assert_eq!(
        comparable(ours.echo),
        comparable(theirs.echo),
        "echo of the edit"
    );
    assert_eq!(ours.telemetry, theirs.telemetry, "telemetry after the edit");
    assert_eq!(
        ours.telemetry,
        [value("A", "t", "42"), value("B", "v", "42")]
    );
}

/// Statistics messages (`machineStats`, ...) on the gateway device's telemetry until `done`
/// holds for the ones seen, or `timeout`.
async fn statistics_until(
    peer: &mut ThingsBoardPeer,
    timeout: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(&seen) && tokio::time::Instant::now() < deadline {
        if let Some(message) = peer.next(Duration::from_millis(200)).await {
            if message.topic == "v1/devices/me/telemetry"
                && message.json().get("machineStats").is_some()
            {
                seen.push(message.json());
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_statistics_are_sent_every_period_with_the_gateways_keys() {
    let (_broker, mut peer, connector) =
        device_a_connector(&["--statistics-period-seconds", "1"]).await;
    let totals = loop {
        let message = peer.next_on(CLIENT_ATTRIBUTES).await.json();
        if message.get("totalMemory").is_some() {
            break message;
        }
    };
    assert!(
        totals["cpuCount"].as_u64().is_some_and(|n| n >= 1),
        "{totals}"
    );
    assert!(
        totals["totalDisk"]
            .as_str()
            .is_some_and(|s| s.ends_with('G') || s.ends_with('T')),
        "{totals}"
    );

    let mut connection = TcpStream::connect(connector.local_addr).unwrap();
    for frame in [&b"1"[..], b"22", b"333"] {
        connection.write_all(frame).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let received = |seen: &[Value]| -> u64 {
        seen.iter()
            .filter_map(|s| s["connectorsStats"][NAME]["connectorMsgsReceived"].as_u64())
            .sum()
    };
    let seen = statistics_until(&mut peer, Duration::from_secs(10), |seen| {
        received(seen) >= 3
    })
    .await;
    assert_eq!(received(&seen), 3, "counts are per period: {seen:?}");
    let bytes: u64 = seen
        .iter()
        .filter_map(|s| s["connectorsStats"][NAME]["connectorBytesReceived"].as_u64())
        .sum();
    assert_eq!(bytes, 6);
    let pushed: u64 = seen
        .iter()
        .filter_map(|s| s["serviceStats"]["platformMsgPushed"].as_u64())
        .sum();
    assert!(pushed >= 1, "{seen:?}");
    let last = seen.last().unwrap();
    for key in [
        "totalCpuUsage",
        "diskUsage",
        "freeMemory",
        "gwProcessCpuUsage",
        "gwMemory",
    ] {
        assert!(last["machineStats"][key].is_number(), "{key}: {last}");
    }
    assert!(last["machineStats"]["freeMemory"]
        .as_f64()
        .is_some_and(|p| p > 0.0 && p <= 100.0));
    assert!(last["serviceStats"]["storageMsgCount"].is_u64());
}

#[tokio::test(flavor = "multi_thread")]
async fn statistics_start_with_the_connector_by_default_and_can_be_switched_off() {
    let broker = Mosquitto::start();
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;
    let on = ConnectorProcess::start(&config(json!([device("A", "t")])), broker.port());
    let first = statistics_until(&mut peer, Duration::from_secs(5), |seen| !seen.is_empty()).await;
    assert_eq!(first.len(), 1, "the first statistics are sent at start");
    drop(on);
    let _ = peer.drain(Duration::from_millis(300)).await;
    let _off = ConnectorProcess::start_with(
        &config(json!([device("A", "t")])),
        broker.port(),
        &["--statistics-period-seconds", "0"],
    );
    let none = statistics_until(&mut peer, Duration::from_secs(3), |_| false).await;
    assert!(none.is_empty(), "{none:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_changed_after_a_ui_edit_wins_and_is_reported() {
    let metrics = metrics_address();
    let metrics_arg = metrics.to_string();
    let (_broker, mut peer, connector) =
        device_a_connector(&["--remote-configuration", "--metrics-address", &metrics_arg]).await;
    let report = next_report(&mut peer).await;
    let edit = ui_edit(&report, json!([device("UI", "u")]), "INFO");
    peer.set_shared(NAME, edit.clone()).await;
    let echo = next_report(&mut peer).await;
    assert_eq!(echo["ts"], edit["ts"]);
    assert_eq!(status(metrics)["configuration"]["source"], "thingsboard");

    // The file changes afterwards (an operator's ConfigMap update, an edit on disk).
    let file = config(json!([device("File", "f")]));
    std::fs::write(
        connector.config_path(),
        serde_json::to_vec_pretty(&file).unwrap(),
    )
    .unwrap();
    let reported = next_report(&mut peer).await;
    assert_eq!(
        reported["configurationJson"]["devices"][0]["deviceName"],
        "File"
    );
    assert!(reported["ts"].as_i64() > edit["ts"].as_i64(), "{reported}");
    assert_eq!(status(metrics)["configuration"], json!({"source": "file"}));
    // ThingsBoard hands the older edit out again (a reconnect, a re-save of the same value).
    peer.set_shared(NAME, edit.clone()).await;
    // An applied edit would be echoed within a second (the first test sees it in milliseconds).
    for message in reports_within(&mut peer, Duration::from_secs(1)).await {
        assert_ne!(
            message.json()[NAME]["ts"],
            edit["ts"],
            "the older edit was applied"
        );
    }
    let mut connection = TcpStream::connect(connector.local_addr).unwrap();
    connection.write_all(b"v").unwrap();
    assert_eq!(telemetry(&mut peer, 1).await, [value("File", "f", "v")]);
}

/// RPC `method` to the gateway device; its reply.
async fn ask_gateway(peer: &mut ThingsBoardPeer, id: u32, method: &str, params: Value) -> Value {
    peer.publish(
        &format!("v1/devices/me/rpc/request/{id}"),
        json!({"method": method, "params": params}),
    )
    .await;
    peer.next_on(&format!("v1/devices/me/rpc/response/{id}"))
        .await
        .json()
}

/// What one implementation answers and publishes while ThingsBoard renames device "A" to "A2"
/// and then deletes "A2": the replies to both notifications, and the telemetry of a frame
/// before, between and after them.
async fn drive_renaming(peer: &mut ThingsBoardPeer, port: u16) -> (Vec<Value>, Vec<Value>) {
    let mut connection = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut frame = async |peer: &mut ThingsBoardPeer, bytes: &[u8]| -> Value {
        connection.write_all(bytes).unwrap();
        json!(telemetry(peer, 1).await)
    };
    let mut telemetry = vec![frame(peer, b"1").await];
    let mut replies =
        vec![ask_gateway(peer, 21, "gateway_device_renamed", json!({"A": "A2"})).await];
    telemetry.push(frame(peer, b"2").await);
    replies.push(ask_gateway(peer, 22, "gateway_device_deleted", json!("A2")).await);
    telemetry.push(frame(peer, b"3").await);
    (replies, telemetry)
}

#[tokio::test(flavor = "multi_thread")]
async fn renamed_and_deleted_devices_are_handled_as_the_gateway_handles_them() {
    let theirs = async {
        let broker = Mosquitto::start();
        let mut peer = ThingsBoardPeer::connect(broker.port()).await;
        let port = free_port();
        let gateway = e2e_tests::thingsboard_gateway::ThingsBoardGateway::start(
            &device_a_on(port),
            broker.port(),
        );
        // Ready once it publishes its statistics (after getSessionLimits is answered).
        peer.next_on_within("v1/devices/me/telemetry", Duration::from_secs(60))
            .await;
        let run = drive_renaming(&mut peer, port).await;
        gateway.terminate();
        run
    };
    let ours = async {
        let broker = Mosquitto::start();
        let mut peer = ThingsBoardPeer::connect(broker.port()).await;
        let port = free_port();
        let connector = ConnectorProcess::start(&device_a_on(port), broker.port());
        let run = drive_renaming(&mut peer, port).await;
        drop(connector);
        run
    };
    let (theirs, ours) = tokio::join!(theirs, ours);
    assert_eq!(ours, theirs);
    assert_eq!(
        ours.1,
        [
            json!([value("A", "t", "1")]),
            json!([value("A2", "t", "2")]),
            json!([value("A", "t", "3")])
        ]
    );
    assert_eq!(ours.0, [json!({"success": true}), json!({"success": true})]);
}

/// A device renamed in ThingsBoard is addressed by its new name (RPC, attribute updates), asks
/// for attributes under it, and stays renamed when the connector restarts on its disk queue.
#[tokio::test(flavor = "multi_thread")]
async fn a_renamed_device_is_addressed_by_its_new_name_and_stays_renamed_across_restarts() {
    let config = json!({"name": NAME, "socket": {"type": "TCP", "address": "127.0.0.1", "port": 0},
        "devices": [{"address": "*:*", "deviceName": "A",
            "telemetry": [{"key": "t", "byteFrom": 0, "byteTo": -1}],
            "attributeRequests": [{"type": "shared", "requestExpression": "${[:2]==AR}",
                                   "attributeNameExpression": "[2:]"}],
            "attributeUpdates": [{"encoding": "utf-8", "attributeOnThingsBoard": "mode"}],
            "serverSideRpc": [{"methodRPC": "setLed", "withResponse": true,
                               "methodProcessing": "write", "encoding": "utf-8"}]}]});
    let queue = tempfile::tempdir().unwrap();
    let queue_directory = queue.path().to_str().unwrap();
    let broker = Mosquitto::start();
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;
    let connector = ConnectorProcess::start_with(
        &config,
        broker.port(),
        &["--queue-directory", queue_directory],
    );
    let mut device = TcpStream::connect(connector.local_addr).unwrap();
    device.set_read_timeout(Some(e2e_tests::PROMPTLY)).unwrap();
    device.write_all(b"1").unwrap();
    assert_eq!(telemetry(&mut peer, 1).await, [value("A", "t", "1")]);
    assert_eq!(
        ask_gateway(&mut peer, 31, "gateway_device_renamed", json!({"A": "A2"})).await,
        json!({"success": true})
    );

    peer.publish(
        "v1/gateway/rpc",
        json!({"device": "A2", "data": {"id": 5, "method": "setLed", "params": "on"}}),
    )
    .await;
    let mut written = [0u8; 2];
    std::io::Read::read_exact(&mut device, &mut written).unwrap();
    assert_eq!(&written, b"on");
    assert_eq!(
        peer.next_on("v1/gateway/rpc").await.json(),
        json!({"device": "A2", "id": 5, "data": {"result": "ok"}})
    );
    peer.publish(
        "v1/gateway/attributes",
        json!({"device": "A2", "data": {"mode": "eco"}}),
    )
    .await;
    let mut written = [0u8; 3];
    std::io::Read::read_exact(&mut device, &mut written).unwrap();
    assert_eq!(&written, b"eco");
    device.write_all(b"ARfirmware").unwrap();
    // A frame that asks for attributes is not telemetry.
    let request = peer.next_on("v1/gateway/attributes/request").await.json();
    assert_eq!(request["device"], "A2", "{request}");
    assert_eq!(
        ask_gateway(&mut peer, 32, "gateway_devices", json!({})).await,
        json!({"code": 200, "resp": {"A2": NAME}})
    );
    drop(device);
    drop(connector);

    let connector = ConnectorProcess::start_with(
        &config,
        broker.port(),
        &["--queue-directory", queue_directory],
    );
    let mut device = TcpStream::connect(connector.local_addr).unwrap();
    device.write_all(b"2").unwrap();
    assert_eq!(telemetry(&mut peer, 1).await, [value("A2", "t", "2")]);
}

/// Polls `ready` every 50 ms until it holds, at most [`e2e_tests::PROMPTLY`].
fn promptly(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + e2e_tests::PROMPTLY;
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "not in time: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The UI's connector switch: ThingsBoard's `active_connectors` without this connector closes
/// its device socket and disconnects its devices, as the gateway closes a connector; listed
/// again, the socket opens on the same port and devices are connected again when they send.
#[tokio::test(flavor = "multi_thread")]
async fn a_connector_listed_as_inactive_closes_its_socket_until_it_is_listed_again() {
    let port = free_port();
    let metrics = metrics_address();
    let broker = Mosquitto::start();
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;
    let start = |metrics: SocketAddr| {
        ConnectorProcess::start_with(
            &device_a_on(port),
            broker.port(),
            &[
                "--remote-configuration",
                "--metrics-address",
                &metrics.to_string(),
            ],
        )
    };
    let connector = start(metrics);
    let mut device = TcpStream::connect(("127.0.0.1", port)).unwrap();
    device.set_read_timeout(Some(e2e_tests::PROMPTLY)).unwrap();
    device.write_all(b"1").unwrap();
    assert_eq!(telemetry(&mut peer, 1).await, [value("A", "t", "1")]);
    assert_eq!(get(metrics, "/readyz").0, 200);

    // A value that is not a list of names switches nothing off.
    peer.set_shared("active_connectors", json!(NAME)).await;
    connector.wait_for_log("not a list of names");
    device.write_all(b"1.5").unwrap();
    assert_eq!(telemetry(&mut peer, 1).await, [value("A", "t", "1.5")]);

    peer.set_shared("active_connectors", json!([])).await;
    // The disconnect goes through the queue, the report straight out: in either order.
    let (mut disconnected, mut reported) = (false, false);
    while !(disconnected && reported) {
        let message = peer
            .next(e2e_tests::PROMPTLY)
            .await
            .expect("disconnect and report");
        match message.topic.as_str() {
            "v1/gateway/disconnect" => {
                assert_eq!(message.json(), json!({"device": "A"}));
                disconnected = true;
            }
            CLIENT_ATTRIBUTES => {
                reported |= message.json().get("active_connectors") == Some(&json!([]));
            }
            _ => {}
        }
    }
    let mut rest = Vec::new();
    assert_eq!(
        std::io::Read::read_to_end(&mut device, &mut rest).unwrap(),
        0,
        "the device connection is closed"
    );
    promptly("the port refuses connections", || {
        TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    assert_eq!(get(metrics, "/readyz").0, 503, "not ready while inactive");
    assert_eq!(
        status(metrics)["deviceSocket"],
        json!({"open": false, "reason": "inactive_in_thingsboard"})
    );

    // ThingsBoard keeps the list: after a restart the answer to the attribute request at start
    // closes the socket again.
    drop(connector);
    let metrics = metrics_address();
    let _connector = start(metrics);
    loop {
        let report = peer.next_on(CLIENT_ATTRIBUTES).await.json();
        if report.get("active_connectors") == Some(&json!([])) {
            break;
        }
    }
    promptly("the port refuses connections after the restart", || {
        TcpStream::connect(("127.0.0.1", port)).is_err()
    });

    peer.set_shared("active_connectors", json!([NAME])).await;
    promptly("the port accepts connections again", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let mut device = TcpStream::connect(("127.0.0.1", port)).unwrap();
    device.write_all(b"2").unwrap();
    let connect = peer.next_on("v1/gateway/connect").await.json();
    assert_eq!(connect["device"], "A");
    assert_eq!(telemetry(&mut peer, 1).await, [value("A", "t", "2")]);
    assert_eq!(get(metrics, "/readyz").0, 200);
    assert_eq!(status(metrics)["deviceSocket"], json!({"open": true}));
}

/// The same switch for a UDP connector: while inactive its port is free (nothing, not even
/// downlink, holds the socket open); listed again, datagrams are read on it.
#[tokio::test(flavor = "multi_thread")]
async fn a_udp_connector_listed_as_inactive_frees_its_port_until_it_is_listed_again() {
    let port = free_port();
    let config = json!({"name": NAME, "socket": {"type": "UDP", "address": "127.0.0.1", "port": port},
        "devices": [device_at("127.0.0.1:*", "U", "t")]});
    let (_broker, mut peer, _connector) =
        e2e_tests::broker_peer_and_connector(&config, &["--remote-configuration"]).await;
    let device = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    device.send_to(b"1", ("127.0.0.1", port)).unwrap();
    assert_eq!(telemetry(&mut peer, 1).await, [value("U", "t", "1")]);

    peer.set_shared("active_connectors", json!([])).await;
    peer.next_on("v1/gateway/disconnect").await;
    promptly("the UDP port is free", || {
        std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
    });

    peer.set_shared("active_connectors", json!([NAME])).await;
    promptly("the UDP port is taken again", || {
        std::net::UdpSocket::bind(("127.0.0.1", port)).is_err()
    });
    device.send_to(b"2", ("127.0.0.1", port)).unwrap();
    assert_eq!(telemetry(&mut peer, 1).await, [value("U", "t", "2")]);
}
