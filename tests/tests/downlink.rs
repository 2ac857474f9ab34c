//! Downlink end to end, through a real Mosquitto with the test peer playing ThingsBoard:
//! attribute requests and responses, attribute updates, RPC, remote logging.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use e2e_tests::broker_peer_and_connector;
use e2e_tests::peer::telemetry_entries;
use e2e_tests::{ConnectorProcess, ThingsBoardPeer, PROMPTLY};
use serde_json::{json, Value};

fn example(name: &str) -> Value {
    let path = format!(
        "{}/../examples/thingsboard/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn socket(config: &mut Value, kind: &str) {
    config["socket"] = json!({"type": kind, "address": "127.0.0.1", "port": 0});
}

/// A TCP device that reads what the connector writes to it.
struct TcpDevice(TcpStream);

impl TcpDevice {
    fn connect(connector: &ConnectorProcess) -> Self {
        let stream = TcpStream::connect(connector.local_addr).unwrap();
        stream.set_read_timeout(Some(PROMPTLY)).unwrap();
        Self(stream)
    }

    fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).unwrap();
    }

    /// Reads exactly `len` bytes.
    fn read(&mut self, len: usize) -> Vec<u8> {
        let mut buffer = vec![0u8; len];
        self.0
            .read_exact(&mut buffer)
            .expect("device expected downlink bytes");
        buffer
    }

    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }
}

struct UdpDevice(UdpSocket, SocketAddr);

impl UdpDevice {
    fn bind(connector: &ConnectorProcess) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(PROMPTLY)).unwrap();
        Self(socket, connector.local_addr)
    }

    fn send(&self, bytes: &[u8]) {
        self.0.send_to(bytes, self.1).unwrap();
    }

    /// One datagram, which must come from the connector's bound socket.
    fn receive(&self) -> Vec<u8> {
        let mut buffer = [0u8; 2048];
        let (n, from) = self
            .0
            .recv_from(&mut buffer)
            .expect("device expected a datagram");
        assert_eq!(
            from, self.1,
            "downlink must leave from the bound UDP socket"
        );
        buffer[..n].to_vec()
    }
}

/// Waits until the connector has subscribed (its device was announced, so its session is up).
async fn announced(peer: &mut ThingsBoardPeer) {
    peer.next_on("v1/gateway/connect").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attribute_request_over_tcp_gets_the_answer_on_the_open_connection() {
    let mut config = example("advanced.json");
    socket(&mut config, "TCP");
    let (_broker, mut peer, connector) = broker_peer_and_connector(&config, &[]).await;
    let mut device = TcpDevice::connect(&connector);

    device.send(b"atr sharedAttribute sharedAttribute1");
    let request = peer.next_on("v1/gateway/attributes/request").await;
    assert_eq!(
        request.json(),
        json!({"keys": ["sharedAttribute", "sharedAttribute1"], "device": "Device Example", "client": false, "id": 1})
    );
    peer.publish(
        "v1/gateway/attributes/response",
        json!({"id": 1, "device": "Device Example", "values": {"sharedAttribute": "a", "sharedAttribute1": 2}}),
    )
    .await;
    let expected = br#"{"sharedAttribute": "a", "sharedAttribute1": 2}"#;
    assert_eq!(device.read(expected.len()), expected);

    // A single falsy value is written as itself (ThingsBoard writes null).
    device.send(b"atr sharedAttribute");
    let request = peer.next_on("v1/gateway/attributes/request").await;
    assert_eq!(request.json()["id"], 2);
    peer.publish(
        "v1/gateway/attributes/response",
        json!({"id": 2, "device": "Device Example", "value": 0}),
    )
    .await;
    assert_eq!(device.read(1), b"0");

    // A request is not data: the next telemetry is the next data frame's.
    device.send(b"2345");
    let telemetry = peer.next_on("v1/gateway/telemetry").await;
    assert_eq!(
        telemetry_entries(&telemetry)[0].2,
        json!({"temp": "2345", "hum": "23"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn attribute_request_over_udp_and_client_scope() {
    let config = json!({
        "name": "UDP requests",
        "socket": {"type": "UDP", "address": "127.0.0.1", "port": 0},
        "devices": [{"address": "*:*", "deviceName": "U",
            "attributeRequests": [{"type": "client", "requestExpression": "${[:2]==CA}", "attributeNameExpression": "[2:]"}]}]
    });
    let (_broker, mut peer, connector) = broker_peer_and_connector(&config, &[]).await;
    let device = UdpDevice::bind(&connector);
    device.send(b"CAfirmware\n");
    let request = peer.next_on("v1/gateway/attributes/request").await;
    assert_eq!(
        request.json(),
        json!({"keys": ["firmware"], "device": "U", "client": true, "id": 1})
    );
    peer.publish(
        "v1/gateway/attributes/response",
        json!({"id": 1, "device": "U", "value": "v1.2"}),
    )
    .await;
    assert_eq!(device.receive(), br#""v1.2""#);
}

#[tokio::test(flavor = "multi_thread")]
async fn attribute_updates_reach_tcp_and_udp_devices_in_the_entry_encoding() {
    for kind in ["TCP", "UDP"] {
        let mut config = example("advanced.json");
        socket(&mut config, kind);
        let (_broker, mut peer, connector) = broker_peer_and_connector(&config, &[]).await;
        let update = json!({"device": "Device Example", "data": {"sharedName": "new", "other": 1}});
        // The entry says utf-16: ThingsBoard ignores that and always uses TCP.
        let expected = b"\xff\xfen\0e\0w\0";
        if kind == "TCP" {
            let mut device = TcpDevice::connect(&connector);
            device.send(b"2345");
            announced(&mut peer).await;
            peer.publish("v1/gateway/attributes", update).await;
            assert_eq!(device.read(expected.len()), expected, "{kind}");
        } else {
            let device = UdpDevice::bind(&connector);
            device.send(b"2345");
            announced(&mut peer).await;
            peer.publish("v1/gateway/attributes", update).await;
            assert_eq!(device.receive(), expected, "{kind}");
        }
        connector.wait_for_log("attribute update written to device");
    }
}

fn rpc_config(kind: &str) -> Value {
    json!({
        "name": "RPC",
        "logLevel": "DEBUG",
        "socket": {"type": kind, "address": "127.0.0.1", "port": 0},
        "devices": [{
            "address": "127.0.0.1:*", "deviceName": "Lamp",
            "telemetry": [{"key": "state", "byteFrom": 0, "byteTo": -1}],
            "serverSideRpc": [
                {"methodRPC": "setLed", "withResponse": true, "methodProcessing": "write", "encoding": "utf-8"},
                {"methodRPC": "quiet", "withResponse": false},
                {"methodRPC": "ask", "withResponse": true, "responseTimeoutMs": 3000},
                {"methodRPC": "askFast", "withResponse": true, "responseTimeoutMs": 300}
            ]
        }]
    })
}

async fn rpc(peer: &mut ThingsBoardPeer, id: u64, method: &str, params: Value) -> Value {
    peer.publish(
        "v1/gateway/rpc",
        json!({"device": "Lamp", "data": {"id": id, "method": method, "params": params}}),
    )
    .await;
    let reply = peer.next_on("v1/gateway/rpc").await.json();
    assert_eq!(reply["device"], "Lamp");
    assert_eq!(
        reply["id"], id,
        "replies come in request order here: {reply}"
    );
    reply["data"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn rpc_over_tcp() {
    let (_broker, mut peer, connector) = broker_peer_and_connector(&rpc_config("TCP"), &[]).await;
    let mut device = TcpDevice::connect(&connector);
    device.send(b"off");
    announced(&mut peer).await;

    assert_eq!(
        rpc(&mut peer, 1, "setLed", json!("ON")).await,
        json!({"result": "ok"})
    );
    assert_eq!(device.read(2), b"ON");

    // No response wanted: written, no reply; the next reply is for the next request.
    peer.publish(
        "v1/gateway/rpc",
        json!({"device": "Lamp", "data": {"id": 2, "method": "quiet", "params": {"a": 1}}}),
    )
    .await;
    assert_eq!(device.read(8), b"{'a': 1}");

    // The device's answer becomes the result.
    let answer = tokio::task::spawn_blocking(move || {
        assert_eq!(device.read(4), b"PING");
        device.send(b"PONG");
        device
    });
    assert_eq!(
        rpc(&mut peer, 3, "ask", json!("PING")).await,
        json!({"result": "PONG"})
    );
    let mut device = answer.await.unwrap();

    let timeout = rpc(&mut peer, 4, "askFast", json!("PING")).await;
    assert_eq!(
        timeout,
        json!({"error": "device did not answer within 300 ms"})
    );
    assert_eq!(device.read(4), b"PING");

    let unknown = rpc(&mut peer, 5, "explode", json!(null)).await;
    assert_eq!(
        unknown,
        json!({"error": "unknown RPC method \"explode\" for device \"Lamp\""})
    );

    // Built-in get: the last value of a key.
    assert_eq!(
        rpc(&mut peer, 6, "get", json!("state")).await,
        json!({"result": "off"})
    );
    assert!(rpc(&mut peer, 7, "get", json!("nothing")).await["error"].is_string());

    // Built-in set, ThingsBoard's syntax, to the device's own open connection.
    let params = format!("address=127.0.0.1;port={};value=HELLO", device.port());
    assert_eq!(
        rpc(&mut peer, 8, "set", json!(params)).await,
        json!({"result": "ok"})
    );
    assert_eq!(device.read(5), b"HELLO");
    assert_eq!(
        rpc(&mut peer, 9, "set", json!("address=127.0.0.1")).await,
        json!({"result": "Not enough params"})
    );
    assert_eq!(
        rpc(
            &mut peer,
            10,
            "set",
            json!("address=127.0.0.1;port=x;value=1")
        )
        .await,
        json!({"result": "Param \"port\" have to be int type"})
    );

    // Not a device's peer (the filter is 127.0.0.1:*) nor in rpcSetAllow: refused, nothing sent.
    let elsewhere = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let params = format!(
        "address=127.0.0.2;port={};value=X",
        elsewhere.local_addr().unwrap().port()
    );
    let refused = rpc(&mut peer, 11, "set", json!(params)).await;
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .starts_with("set refused: 127.0.0.2:"),
        "{refused}"
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        elsewhere.accept().is_err(),
        "the connector connected anyway"
    );

    // Connector-level socket_set on the gateway device.
    let params = format!("Lamp ;address=127.0.0.1;port={};value=BYE", device.port());
    peer.publish(
        "v1/devices/me/rpc/request/77",
        json!({"method": "socket_set", "params": params}),
    )
    .await;
    assert_eq!(
        peer.next_on("v1/devices/me/rpc/response/77").await.json(),
        json!({"result": "ok"})
    );
    assert_eq!(device.read(3), b"BYE");

    // Once the device's connection is closed, RPC says so.
    drop(device);
    connector.wait_for_log("connection closed by peer");
    let closed = rpc(&mut peer, 11, "setLed", json!("ON")).await;
    assert!(
        closed["error"]
            .as_str()
            .unwrap()
            .starts_with("device is not connected"),
        "{closed}"
    );

    let stranger =
        json!({"device": "Nobody", "data": {"id": 12, "method": "setLed", "params": "ON"}});
    peer.publish("v1/gateway/rpc", stranger).await;
    let reply = peer.next_on("v1/gateway/rpc").await.json();
    assert_eq!(
        reply["data"],
        json!({"error": "device \"Nobody\" is not configured in this connector"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rpc_before_any_data_is_an_error_not_silence() {
    let (_broker, mut peer, connector) = broker_peer_and_connector(&rpc_config("TCP"), &[]).await;
    connector.wait_for_log("connected to ThingsBoard");
    // The subscription may lag the connection a little: retry until a reply comes.
    let deadline = Instant::now() + PROMPTLY;
    loop {
        peer.publish(
            "v1/gateway/rpc",
            json!({"device": "Lamp", "data": {"id": 1, "method": "setLed", "params": "ON"}}),
        )
        .await;
        if let Some(reply) = peer.next(Duration::from_millis(500)).await {
            if reply.topic == "v1/gateway/rpc" {
                let error = reply.json()["data"]["error"].as_str().unwrap().to_owned();
                assert!(error.contains("has not sent any data yet"), "{error}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "no RPC reply");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rpc_over_udp_replies_and_answers() {
    let (_broker, mut peer, connector) = broker_peer_and_connector(&rpc_config("UDP"), &[]).await;
    let device = UdpDevice::bind(&connector);
    device.send(b"off");
    announced(&mut peer).await;
    assert_eq!(
        rpc(&mut peer, 1, "setLed", json!("ON")).await,
        json!({"result": "ok"})
    );
    assert_eq!(device.receive(), b"ON");
    let answer = tokio::task::spawn_blocking(move || {
        assert_eq!(device.receive(), b"PING");
        device.send(b"PONG");
        device
    });
    assert_eq!(
        rpc(&mut peer, 2, "ask", json!("PING")).await,
        json!({"result": "PONG"})
    );
    let device = answer.await.unwrap();
    // Built-in set over UDP: a datagram from the bound socket (ThingsBoard fails with a TypeError).
    let port = device.0.local_addr().unwrap().port();
    let params = json!({"address": "127.0.0.1", "port": port, "value": "SET"});
    assert_eq!(
        rpc(&mut peer, 3, "set", params).await,
        json!({"result": "ok"})
    );
    assert_eq!(device.receive(), b"SET");
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_logs_arrive_and_stay_bounded_under_a_flood() {
    let good = UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = json!({
        "name": "Logger",
        "logLevel": "DEBUG",
        "enableRemoteLogging": true,
        "socket": {"type": "UDP", "address": "127.0.0.1", "port": 0},
        "devices": [{"address": format!("127.0.0.1:{}", good.local_addr().unwrap().port()),
                     "deviceName": "Good", "telemetry": [{"key": "n"}]}]
    });
    let (_broker, mut peer, connector) = broker_peer_and_connector(&config, &[]).await;
    let started = Instant::now();
    // Every datagram from this socket logs a DEBUG line: a log flood of about 5000 records a
    // second, paced so that the kernel's UDP buffer (not the connector) never drops datagrams.
    let flooder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = connector.local_addr;
    let flood = std::thread::spawn(move || {
        for _ in 0..200 {
            for _ in 0..50 {
                let _ = flooder.send_to(b"noise", target);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    for n in 0..20 {
        good.send_to(format!("{n}").as_bytes(), target).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    flood.join().unwrap();

    let mut values = Vec::new();
    let mut log_records = 0usize;
    let deadline = Instant::now() + PROMPTLY;
    while values.len() < 20 && Instant::now() < deadline {
        let Some(message) = peer.next(PROMPTLY).await else {
            break;
        };
        match message.topic.as_str() {
            "v1/gateway/telemetry" => {
                values.extend(
                    telemetry_entries(&message)
                        .into_iter()
                        .map(|(_, _, v)| v["n"].as_str().unwrap().to_owned()),
                );
            }
            "v1/devices/me/telemetry" => {
                let records = message.json();
                // The gateway statistics share the topic; they are an object, not a list.
                let Some(records) = records.as_array() else {
                    continue;
                };
                for record in records {
                    let line = record["values"]["Logger_LOGS"].as_str().unwrap();
                    assert!(
                        line.contains(" - |DEBUG|<")
                            || line.contains("|INFO|")
                            || line.contains("|WARNING|"),
                        "{line}"
                    );
                    log_records += 1;
                }
            }
            _ => {}
        }
    }
    let expected: Vec<String> = (0..20).map(|n| n.to_string()).collect();
    assert_eq!(values, expected, "device data must flow during a log flood");
    assert!(log_records > 0, "no remote log records arrived");
    // At most 20 records per publish and 10 publishes a second.
    let bound = 200.0 * started.elapsed().as_secs_f64() + 20.0;
    assert!(
        (log_records as f64) <= bound,
        "{log_records} records in {:?}",
        started.elapsed()
    );
    connector.wait_for_log("remote log records dropped");
}

/// Devices named by their frames (`deviceNameFrom`) are reachable by RPC under those names, on
/// the connection each name last sent from.
#[tokio::test(flavor = "multi_thread")]
async fn rpc_reaches_a_device_named_by_its_frames() {
    let mut config = rpc_config("TCP");
    config["devices"][0]["deviceNameFrom"] = json!({"byteFrom": 0, "byteTo": 4});
    config["devices"][0]["telemetry"] = json!([{"key": "state", "byteFrom": 4, "byteTo": -1}]);
    let (_broker, mut peer, connector) = broker_peer_and_connector(&config, &[]).await;
    let mut lamp7 = TcpDevice::connect(&connector);
    lamp7.send(b"L007off");
    let connect = peer.next_on("v1/gateway/connect").await;
    assert_eq!(connect.json()["device"], "L007");
    let mut lamp8 = TcpDevice::connect(&connector);
    lamp8.send(b"L008off");
    assert_eq!(
        peer.next_on("v1/gateway/connect").await.json()["device"],
        "L008"
    );

    peer.publish(
        "v1/gateway/rpc",
        json!({"device": "L008", "data": {"id": 1, "method": "setLed", "params": "ON"}}),
    )
    .await;
    let reply = peer.next_on("v1/gateway/rpc").await.json();
    assert_eq!(
        reply,
        json!({"device": "L008", "id": 1, "data": {"result": "ok"}})
    );
    assert_eq!(lamp8.read(2), b"ON", "the connection L008 sent from");

    peer.publish(
        "v1/gateway/rpc",
        json!({"device": "L009", "data": {"id": 2, "method": "setLed", "params": "ON"}}),
    )
    .await;
    let reply = peer.next_on("v1/gateway/rpc").await.json();
    assert!(reply["data"]["error"]
        .as_str()
        .is_some_and(|e| e.contains("\"L009\" is not configured")));
    lamp7.send(b"L007on");
    assert_eq!(
        peer.next_on("v1/gateway/telemetry").await.json()["L007"][0]["values"]["state"],
        "on"
    );
}
