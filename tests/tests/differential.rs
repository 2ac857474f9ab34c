//! Differential tests: the real ThingsBoard gateway (PyPI, socket connector, memory storage) and
//! this connector get the same `socket.json` and the same frames, one Mosquitto each; the MQTT
//! gateway-API messages must be the same, timestamps aside.
//!
//! ThingsBoard converts one message per 200 ms, so frames go slowly, one write each. Its telemetry
//! `ts` is taken per key and sometimes splits one frame into two entries 1 ms apart; entries that
//! close are merged before comparing. Messages are compared per device, in order: this connector
//! batches several devices into one publish, ThingsBoard publishes device by device.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use e2e_tests::broker_peer_and_connector;
use e2e_tests::thingsboard_gateway::ThingsBoardGateway;
use e2e_tests::{free_port, Message, Mosquitto, ThingsBoardPeer};
use serde_json::{json, Map, Value};

/// Frames, sent one per write, far enough apart for ThingsBoard's 200 ms converter.
const FRAME_GAP: Duration = Duration::from_millis(450);

#[derive(Clone, Copy)]
enum Transport {
    Tcp,
    Udp,
}

/// One gateway-API fact about one device.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Connect(Value),
    Attributes(Value),
    Telemetry(Value),
    Disconnect,
}

type PerDevice = BTreeMap<String, Vec<Event>>;

fn normalize(messages: &[Message]) -> PerDevice {
    let mut devices: PerDevice = BTreeMap::new();
    for message in messages {
        let payload = message.json();
        match message.topic.as_str() {
            "v1/gateway/connect" => {
                let device = payload["device"].as_str().unwrap().to_owned();
                devices
                    .entry(device)
                    .or_default()
                    .push(Event::Connect(payload["type"].clone()));
            }
            "v1/gateway/disconnect" => {
                let device = payload["device"].as_str().unwrap().to_owned();
                devices.entry(device).or_default().push(Event::Disconnect);
            }
            "v1/gateway/attributes" => {
                for (device, values) in payload.as_object().unwrap() {
                    devices
                        .entry(device.clone())
                        .or_default()
                        .push(Event::Attributes(values.clone()));
                }
            }
            "v1/gateway/telemetry" => {
                for (device, entries) in payload.as_object().unwrap() {
                    let events = devices.entry(device.clone()).or_default();
                    let mut last_ts: Option<i64> = None;
                    for entry in entries.as_array().unwrap() {
                        let ts = entry["ts"].as_i64().unwrap();
                        let values = entry["values"].as_object().unwrap().clone();
                        // ThingsBoard's per-key timestamps: merge entries a few ms apart.
                        match (last_ts, events.last_mut()) {
                            (Some(previous), Some(Event::Telemetry(Value::Object(merged))))
                                if ts - previous <= 5 =>
                            {
                                merged.extend(values);
                            }
                            _ => events.push(Event::Telemetry(Value::Object(values))),
                        }
                        last_ts = Some(ts);
                    }
                }
            }
            _ => {}
        }
    }
    devices
}

fn send_frames(transport: Transport, port: u16, frames: &[&[u8]]) {
    std::thread::sleep(FRAME_GAP);
    match transport {
        Transport::Tcp => {
            let mut stream =
                TcpStream::connect(("127.0.0.1", port)).expect("connect to the connector");
            for frame in frames {
                stream.write_all(frame).unwrap();
                std::thread::sleep(FRAME_GAP);
            }
        }
        Transport::Udp => {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            for frame in frames {
                socket.send_to(frame, ("127.0.0.1", port)).unwrap();
                std::thread::sleep(FRAME_GAP);
            }
        }
    }
}

/// Puts the socket settings (type, loopback address, port) into a config.
type Place = fn(&Value, Transport, u16) -> Value;

fn socket_settings(transport: Transport, port: u16) -> Value {
    json!({
        "type": match transport { Transport::Tcp => "TCP", Transport::Udp => "UDP" },
        "address": "127.0.0.1",
        "port": port,
        "bufferSize": 1024
    })
}

/// Current format: a `socket` section.
fn with_socket(config: &Value, transport: Transport, port: u16) -> Value {
    let mut config = config.clone();
    config["socket"] = socket_settings(transport, port);
    config
}

/// Old flat format: the socket settings at the top level.
fn flat(config: &Value, transport: Transport, port: u16) -> Value {
    let mut object: Map<String, Value> = config.as_object().cloned().unwrap_or_default();
    object.remove("socket");
    object.extend(
        socket_settings(transport, port)
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    Value::Object(object)
}

/// Gateway-API messages until `quiet` passes without one, ignoring the gateway device's own.
async fn collect(peer: &mut ThingsBoardPeer, quiet: Duration) -> Vec<Message> {
    peer.drain(quiet)
        .await
        .into_iter()
        .filter(|m| m.topic.starts_with("v1/gateway/"))
        .collect()
}

async fn send(transport: Transport, port: u16, frames: &[&[u8]]) {
    let frames: Vec<Vec<u8>> = frames.iter().map(|f| f.to_vec()).collect();
    tokio::task::spawn_blocking(move || {
        let frames: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        send_frames(transport, port, &frames)
    })
    .await
    .unwrap();
}

async fn run_thingsboard(
    config: &Value,
    place: Place,
    transport: Transport,
    frames: &[&[u8]],
) -> Vec<Message> {
    let broker = Mosquitto::start();
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;
    let port = free_port();
    let gateway = ThingsBoardGateway::start(&place(config, transport, port), broker.port());
    // Ready once it publishes its error count (after getSessionLimits is answered).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let message = peer
            .next(deadline.saturating_duration_since(Instant::now()))
            .await
            .expect("the ThingsBoard gateway did not become ready within 60 s");
        if message.topic == "v1/devices/me/telemetry" {
            break;
        }
    }
    send(transport, port, frames).await;
    let mut messages = collect(&mut peer, Duration::from_secs(2)).await;
    gateway.terminate();
    messages.extend(collect(&mut peer, Duration::from_secs(2)).await);
    messages
}

async fn run_ours(
    config: &Value,
    place: Place,
    transport: Transport,
    frames: &[&[u8]],
) -> Vec<Message> {
    let (_broker, mut peer, connector) =
        broker_peer_and_connector(&place(config, transport, 0), &[]).await;
    send(transport, connector.local_addr.port(), frames).await;
    let mut messages = collect(&mut peer, Duration::from_secs(1)).await;
    assert!(connector.terminate().success());
    messages.extend(collect(&mut peer, Duration::from_secs(1)).await);
    messages
}

async fn compare(config: Value, place: Place, transport: Transport, frames: &[&[u8]]) {
    let (theirs, ours) = tokio::join!(
        run_thingsboard(&config, place, transport, frames),
        run_ours(&config, place, transport, frames)
    );
    let (theirs, ours) = (normalize(&theirs), normalize(&ours));
    assert!(
        !theirs.is_empty(),
        "the ThingsBoard gateway published nothing"
    );
    assert_eq!(ours, theirs, "\nours:   {ours:#?}\ntheirs: {theirs:#?}");
}

fn example(name: &str) -> Value {
    let path = format!(
        "{}/../examples/thingsboard/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Text frames, a trailing newline, a short frame, invalid UTF-8 and a NUL byte.
const TEXT_FRAMES: [&[u8]; 6] = [
    b"2345",
    b"abc\n",
    b"x",
    b"\xff\x01ab",
    b"12\x0034",
    b"hello world 1234567890",
];

#[tokio::test(flavor = "multi_thread")]
async fn basic_example_over_tcp_matches_thingsboard() {
    compare(
        example("basic.json"),
        with_socket,
        Transport::Tcp,
        &TEXT_FRAMES,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_example_over_udp_matches_thingsboard() {
    compare(
        example("basic.json"),
        with_socket,
        Transport::Udp,
        &TEXT_FRAMES,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn old_format_example_matches_thingsboard() {
    let frames: [&[u8]; 2] = [b"21.5", b"22"];
    compare(example("old-format.json"), flat, Transport::Tcp, &frames).await;
}

/// Overlapping filters (every matching device gets the message), hex, negative indices.
#[tokio::test(flavor = "multi_thread")]
async fn overlapping_devices_hex_and_negative_slices_match_thingsboard() {
    let config = json!({
        "name": "Differential",
        "logLevel": "INFO",
        "devices": [
            {"address": "*:*", "deviceName": "Hex Device", "deviceType": "hexer", "encoding": "hex",
             "telemetry": [{"key": "all", "byteFrom": 0, "byteTo": -1}, {"key": "tail", "byteFrom": -3}],
             "attributes": [{"key": "head", "byteFrom": 0, "byteTo": 2}]},
            {"address": "127.0.0.1:*", "deviceName": "Text Device",
             "telemetry": [{"key": "mid", "byteFrom": 1, "byteTo": -2}, {"key": "one", "byteFrom": 2, "byteTo": 3},
                           {"key": "none", "byteFrom": 5, "byteTo": 2}]}
        ]
    });
    let frames: [&[u8]; 3] = [b"\x01\x02\x03\x04\x05\x06", b"ABCDEFG", b"\x00\xffZZ"];
    compare(config, with_socket, Transport::Tcp, &frames).await;
}
