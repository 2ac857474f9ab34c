//! A fleet of slow devices, one frame per TCP write.
//!
//! Measured from outside the project by `tests/bench/fleet_check.py` (a separate sender process
//! and a separate paho-mqtt subscriber, run with the ThingsBoard gateway's venv python): nothing
//! is lost, and the linger (`--min-pack-send-delay-ms`) packs many devices' frames into one
//! publish where without it nearly every frame is a publish of its own. The same script is the
//! cross-check of `bench` in docs/benchmarks.md; this smoke run keeps it working.
//!
//! And read coalescing (`--read-coalescing-ms`): devices whose frames arrive at their own
//! instants wake the connector once per window, not once per frame.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e_tests::http::metric;
use e2e_tests::{free_port, thingsboard_gateway, ConnectorProcess, Mosquitto};
use serde_json::Value;
use socket_connector::simulate::{self, LoadOptions, Progress, Protocol};

const DEVICES: &str = "200";
const FRAMES_PER_DEVICE_PER_S: &str = "5";

/// `fleet_check.py` against a connector with this linger and read coalescing.
fn fleet_check(linger_ms: &str, coalescing_ms: &str) -> Value {
    let broker = Mosquitto::start();
    let config = simulate::socket_json(Protocol::Tcp, 0, 1024);
    let connector = ConnectorProcess::start_with(
        &config,
        broker.port(),
        &[
            "--min-pack-send-delay-ms",
            linger_ms,
            "--read-coalescing-ms",
            coalescing_ms,
        ],
    );
    connector.wait_for_log("connected to ThingsBoard");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/fleet_check.py");
    let output = Command::new(thingsboard_gateway::python())
        .arg(script)
        .args(["--device-port", &connector.local_addr.port().to_string()])
        .args(["--broker-port", &broker.port().to_string()])
        .args(["--connections", DEVICES, "--rate", FRAMES_PER_DEVICE_PER_S])
        .args(["--duration", "3"])
        .output()
        .expect("run fleet_check.py");
    assert!(
        output.status.success(),
        "fleet_check.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().expect("fleet_check.py prints a line");
    let result: Value = serde_json::from_str(line).expect("fleet_check.py prints JSON");
    eprintln!("linger {linger_ms} ms, coalescing {coalescing_ms} ms: {result}");
    let _ = connector.terminate();
    result
}

fn frames_per_publish(result: &Value) -> f64 {
    result["frames_per_publish"].as_f64().unwrap_or(0.0)
}

#[test]
fn a_fleet_of_slow_devices_loses_nothing_and_the_linger_packs_its_frames() {
    // 200 devices x 5 frames/s = 1,000 frames/s; 3 s of load is 3,000 frames.
    let lingering = fleet_check("50", "0");
    assert!(
        lingering["frames_sent"].as_u64().unwrap_or(0) >= 2_900,
        "{lingering}"
    );
    assert_eq!(lingering["lost"], 0, "{lingering}");
    assert_eq!(lingering["duplicates"], 0, "{lingering}");
    assert_eq!(lingering["sender_errors"], 0, "{lingering}");
    // 50 ms at 1,000 frames/s gathers about 50 frames; at least 10 leaves room for a slow CI.
    assert!(frames_per_publish(&lingering) >= 10.0, "{lingering}");

    let publish_what_waits = fleet_check("0", "0");
    assert_eq!(publish_what_waits["lost"], 0, "{publish_what_waits}");
    // Frames that arrive one at a time are published one at a time.
    assert!(
        frames_per_publish(&publish_what_waits) < 2.0,
        "{publish_what_waits}"
    );
    // The linger is what the frames wait for: a bounded, visible cost.
    let p50 = |result: &Value| result["latency_ms"]["p50"].as_f64().unwrap_or(0.0);
    assert!(
        p50(&lingering) > p50(&publish_what_waits),
        "{lingering} vs {publish_what_waits}"
    );
}

const WAKEUPS: &str = "socket_connector_worker_wakeups_total";
const FRAMES: &str = "socket_connector_frames_received_total{device=\"Bench Device\"}";

/// The connector's worker wake-ups and frames read during two seconds of steady load: 200
/// devices × 10 frames/s, each frame its own write at its own instant (the generator's pacer),
/// one worker as the operator runs it.
fn wakeups_and_frames(coalescing_ms: &str) -> (f64, f64) {
    let broker = Mosquitto::start();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let connector = ConnectorProcess::start_with(
        &simulate::socket_json(Protocol::Tcp, 0, 1024),
        broker.port(),
        &[
            "--worker-threads",
            "1",
            "--read-coalescing-ms",
            coalescing_ms,
            "--metrics-address",
            &metrics.to_string(),
        ],
    );
    connector.wait_for_log("connected to ThingsBoard");
    let mut load = LoadOptions::new(connector.local_addr, 200, 2_000, Duration::from_secs(5));
    load.batch = Some(1);
    let progress = Arc::new(Progress::default());
    let generator = std::thread::spawn({
        let progress = progress.clone();
        move || simulate::run_blocking(&load, progress, 1)
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress.sending_since.get().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Every device has sent its first frame a tenth of a second after the start.
    std::thread::sleep(Duration::from_secs(1));
    let (wakeups, frames) = (metric(metrics, WAKEUPS), metric(metrics, FRAMES));
    std::thread::sleep(Duration::from_secs(2));
    let counted = (
        metric(metrics, WAKEUPS) - wakeups,
        metric(metrics, FRAMES) - frames,
    );
    let summary = generator.join().unwrap().unwrap();
    assert_eq!(summary.errors, 0, "{summary:?}");
    let _ = connector.terminate();
    eprintln!("coalescing {coalescing_ms} ms: {counted:?} (wake-ups, frames)");
    counted
}

#[test]
fn read_coalescing_wakes_the_connector_once_per_window_not_once_per_frame() {
    let (wakeups, frames) = wakeups_and_frames("2");
    assert!(frames >= 3_000.0, "{frames} frames in 2 s at 2,000/s");
    // At most one wake-up per 2 ms window (1,000 in 2 s), and a few for ThingsBoard's side.
    assert!(wakeups <= 1_050.0, "{wakeups} wake-ups for {frames} frames");

    let (wakeups, frames) = wakeups_and_frames("0");
    assert!(frames >= 3_000.0, "{frames} frames in 2 s at 2,000/s");
    // Frames 0.5 ms apart: without a window nearly every one wakes the connector.
    assert!(
        wakeups >= 0.6 * frames,
        "{wakeups} wake-ups for {frames} frames"
    );
}
