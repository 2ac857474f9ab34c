//! Durability at the edges, against a real Mosquitto: a datapoint too large for ThingsBoard, a
//! publish the broker refuses, a disk that fills up under the disk queue, and a core task that
//! panics. In each, nothing else is held up and nothing accepted is lost.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e_tests::http::{get, sample};
use e2e_tests::peer::telemetry_entries;
use e2e_tests::{free_port, ConnectorProcess, Mosquitto, ThingsBoardPeer, PROMPTLY};
use serde_json::{json, Value};

/// Two devices on one TCP listener, newline-framed: "Big" (peer port filter is not needed: the
/// device name comes from the first byte) and "Small".
fn two_devices() -> Value {
    json!({
        "socket": {"type": "TCP", "address": "127.0.0.1", "port": 0, "bufferSize": 65536,
                   "framing": {"type": "delimiter", "delimiter": "\\n", "maxFrameLength": 200000}},
        "devices": [
            {"address": "*:*", "deviceName": "Big", "messageFilter": {"equals": "B"},
             "telemetry": [{"key": "blob", "byteFrom": 1}]},
            {"address": "*:*", "deviceName": "Small", "messageFilter": {"equals": "S"},
             "telemetry": [{"key": "v", "byteFrom": 1}]}
        ]
    })
}

fn metrics_of(address: SocketAddr) -> String {
    get(address, "/metrics").1
}

fn dropped(metrics: &str, reason: &str) -> Option<f64> {
    sample(
        metrics,
        &format!("socket_connector_dropped_total{{reason=\"{reason}\"}}"),
    )
}

/// Telemetry values of `device` until `count` arrived (or `within` passed).
async fn values_of(
    peer: &mut ThingsBoardPeer,
    device: &str,
    key: &str,
    count: usize,
    within: Duration,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    let mut values = Vec::new();
    while values.len() < count && Instant::now() < deadline {
        let Some(message) = peer.next(Duration::from_millis(500)).await else {
            continue;
        };
        if message.topic != "v1/gateway/telemetry" {
            continue;
        }
        for (name, _, entry) in telemetry_entries(&message) {
            if name == device {
                values.push(entry[key].clone());
            }
        }
    }
    values
}

/// The case: ThingsBoard's 64 KiB payload limit (Mosquitto `max_packet_size 65536`) and
/// a 70,000-byte frame with one key over all of it. The datapoint cannot be sent at all: it is
/// dropped, counted and logged with its device, and the other device's data keeps flowing over
/// the same session (no reconnect).
#[tokio::test(flavor = "multi_thread")]
async fn a_datapoint_too_large_for_thingsboard_is_dropped_and_the_rest_flows() {
    let broker = Mosquitto::start_with(&["max_packet_size 65536"]);
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;
    let metrics_address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let connector = ConnectorProcess::start_with(
        &two_devices(),
        broker.port(),
        &["--metrics-address", &metrics_address.to_string()],
    );
    connector.wait_for_log("connected to ThingsBoard");
    let mut device = send_70_kb_frame(&connector);
    for i in 0..5 {
        device.write_all(format!("S{i}\n").as_bytes()).unwrap();
    }
    let values = values_of(&mut peer, "Small", "v", 5, PROMPTLY).await;
    assert_eq!(values, ["0", "1", "2", "3", "4"].map(Value::from));
    let error = connector.wait_for_log("datapoint dropped");
    assert_eq!(error["device"], "Big", "{error}");
    assert!(error["bytes"].as_u64().unwrap() > 70_000, "{error}");
    let metrics = metrics_of(metrics_address);
    assert_eq!(dropped(&metrics, "datapoint_too_large"), Some(1.0));
    assert_eq!(
        sample(&metrics, "socket_connector_mqtt_reconnects_total"),
        Some(0.0),
        "the session was never broken"
    );
}

/// A publish the broker refuses by closing the connection (here: the connector is told it may
/// send 1 MB, the broker takes 64 KiB, ThingsBoard's session limits never arrive) would be sent
/// again after every reconnect, forever, holding up everything queued after it. After five
/// sessions broke with it at the head of the queue it is quarantined, and the rest flows.
#[tokio::test(flavor = "multi_thread")]
async fn a_publish_that_keeps_breaking_the_session_is_quarantined() {
    let broker = Mosquitto::start_with(&["max_packet_size 65536"]);
    let mut peer = ThingsBoardPeer::connect_answering(broker.port(), None).await;
    let metrics_address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let connector = ConnectorProcess::start_with(
        &two_devices(),
        broker.port(),
        &[
            "--max-payload-size",
            "1000000",
            "--metrics-address",
            &metrics_address.to_string(),
        ],
    );
    connector.wait_for_log("connected to ThingsBoard");
    let mut device = send_70_kb_frame(&connector);
    // Sent after the big one: queued behind it.
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..3 {
        device.write_all(format!("S{i}\n").as_bytes()).unwrap();
    }
    let values = values_of(&mut peer, "Small", "v", 3, Duration::from_secs(40)).await;
    assert_eq!(values, ["0", "1", "2"].map(Value::from));
    let quarantined = connector.wait_for_log("publish quarantined");
    assert_eq!(quarantined["sessions"], 5, "{quarantined}");
    let metrics = metrics_of(metrics_address);
    assert_eq!(dropped(&metrics, "poison_record"), Some(1.0));
    let reconnects = sample(&metrics, "socket_connector_mqtt_reconnects_total").unwrap();
    assert!((5.0..=6.0).contains(&reconnects), "{reconnects} reconnects");
}

/// A small tmpfs, mounted for the test (CI runs as root), unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs failed: this test needs root (CI runs as root)"
        );
        Self { path, _dir: dir }
    }

    /// A file that takes all but `keep_bytes` of the free space.
    fn fill(&self, keep_bytes: u64) -> PathBuf {
        let filler = self.path.join("filler");
        let free = free_bytes(&self.path);
        let file = std::fs::File::create(&filler).unwrap();
        let mut writer = std::io::BufWriter::new(file);
        let chunk = vec![0u8; 1 << 16];
        let mut left = free.saturating_sub(keep_bytes);
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            writer.write_all(&chunk[..n]).unwrap();
            left -= n as u64;
        }
        writer.flush().unwrap();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn free_bytes(path: &Path) -> u64 {
    let output = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .expect("run df");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .and_then(|line| line.trim().parse().ok())
        .expect("df output")
}

/// The disk under the disk queue fills up while ThingsBoard is away: `/readyz` turns 503, the
/// writable gauge 0, and the `block` policy holds the devices back (TCP flow control) instead of
/// losing their frames. When space returns, the queue reopens its store by itself and every
/// frame the device sent arrives.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_holds_devices_back_and_the_queue_recovers_when_space_returns() {
    let disk = SmallDisk::mount(24);
    let filler = disk.fill(3 << 20);
    let broker = Mosquitto::start();
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;
    let metrics_address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let queue = disk.path.join("queue");
    let config = json!({
        "socket": {"type": "TCP", "address": "127.0.0.1", "port": 0,
                   "framing": {"type": "delimiter", "delimiter": "\\n"}},
        "devices": [{"address": "*:*", "deviceName": "Meter", "telemetry": [{"key": "seq"}]}]
    });
    let connector = ConnectorProcess::start_with(
        &config,
        broker.port(),
        &[
            "--queue-directory",
            queue.to_str().unwrap(),
            "--metrics-address",
            &metrics_address.to_string(),
        ],
    );
    connector.wait_for_log("connected to ThingsBoard");
    broker.pause();
    // Frames of ~120 bytes, far more than the 3 MiB left hold.
    let frames: u64 = 60_000;
    let address = connector.local_addr;
    let sender = std::thread::spawn(move || {
        let mut device = TcpStream::connect(address).unwrap();
        let pad = "p".repeat(100);
        for seq in 0..frames {
            device
                .write_all(format!("{seq:08}-{pad}\n").as_bytes())
                .unwrap();
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get(metrics_address, "/readyz");
        if status == 503 && body.contains("disk queue not writable") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the disk never filled: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = metrics_of(metrics_address);
    assert_eq!(
        sample(&metrics, "socket_connector_queue_writable"),
        Some(0.0)
    );
    assert!(sample(&metrics, "socket_connector_queue_disk_errors_total").unwrap() >= 1.0);
    assert_eq!(
        dropped(&metrics, "queue_unwritable"),
        Some(0.0),
        "block drops nothing"
    );
    connector.wait_for_log("cannot write the uplink queue to disk");

    // Space returns and ThingsBoard answers again.
    std::fs::remove_file(filler).unwrap();
    broker.resume();
    let seen: BTreeSet<u64> = {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut seen = BTreeSet::new();
        while (seen.len() as u64) < frames && Instant::now() < deadline {
            let Some(message) = peer.next(Duration::from_millis(500)).await else {
                continue;
            };
            if message.topic != "v1/gateway/telemetry" {
                continue;
            }
            for (_, _, values) in telemetry_entries(&message) {
                if let Some(seq) = values["seq"].as_str().and_then(|s| s[..8].parse().ok()) {
                    seen.insert(seq);
                }
            }
        }
        seen
    };
    sender.join().unwrap();
    assert_eq!(
        seen.len() as u64,
        frames,
        "missing, first: {:?}",
        (0..frames).find(|seq| !seen.contains(seq))
    );
    connector.wait_for_log("disk queue writable again");
    let (status, _) = get(metrics_address, "/readyz");
    assert_eq!(status, 200);
    let metrics = metrics_of(metrics_address);
    assert_eq!(
        sample(&metrics, "socket_connector_queue_writable"),
        Some(1.0)
    );
}

/// Fault injection (debug builds): a core task that panics ends the process with code 70 and a
/// log line, instead of leaving a connector that answers its probes but moves no data.
#[test]
fn a_panicking_core_task_ends_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("socket.json");
    std::fs::write(&config, two_devices().to_string()).unwrap();
    let broker = Mosquitto::start();
    let mut child = ConnectorProcess::command(&config, broker.port())
        .env("SOCKET_CONNECTOR_PANIC_TASK", "uplink")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PROMPTLY;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the connector kept running");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(70), "{stderr}");
    assert!(
        stderr.contains("the uplink task panicked: injected by SOCKET_CONNECTOR_PANIC_TASK"),
        "{stderr}"
    );
}

/// Connects a device and sends one 70,000-byte frame (`B` then `x`s), more than ThingsBoard's
/// default payload limit of 64 KiB can carry in one publish.
fn send_70_kb_frame(connector: &ConnectorProcess) -> TcpStream {
    let mut device = TcpStream::connect(connector.local_addr).unwrap();
    let mut big = vec![b'B'];
    big.extend(std::iter::repeat_n(b'x', 70_000));
    big.push(b'\n');
    device.write_all(&big).unwrap();
    device
}
