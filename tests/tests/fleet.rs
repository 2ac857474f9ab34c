//! A fleet of slow devices, one frame per TCP write, measured from outside the project by
//! `tests/bench/fleet_check.py` (a separate asyncio sender and a separate paho-mqtt subscriber,
//! run with the ThingsBoard gateway's venv python): nothing is lost, and the linger
//! (`--min-pack-send-delay-ms`) packs many devices' frames into one publish where without it
//! nearly every frame is a publish of its own. The same script is the cross-check of `bench`
//! in docs/benchmarks.md; this smoke run keeps it working.

use std::process::Command;

use e2e_tests::{thingsboard_gateway, ConnectorProcess, Mosquitto};
use serde_json::Value;
use socket_connector::simulate::{self, Protocol};

const DEVICES: &str = "200";
const FRAMES_PER_DEVICE_PER_S: &str = "5";

fn fleet_check(linger_ms: &str) -> Value {
    let broker = Mosquitto::start();
    let config = simulate::socket_json(Protocol::Tcp, 0, 1024);
    let connector = ConnectorProcess::start_with(
        &config,
        broker.port(),
        &["--min-pack-send-delay-ms", linger_ms],
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
    eprintln!("linger {linger_ms} ms: {result}");
    let _ = connector.terminate();
    result
}

fn frames_per_publish(result: &Value) -> f64 {
    result["frames_per_publish"].as_f64().unwrap_or(0.0)
}

#[test]
fn a_fleet_of_slow_devices_loses_nothing_and_the_linger_packs_its_frames() {
    // 200 devices x 5 frames/s = 1,000 frames/s; 3 s of load is 3,000 frames.
    let lingering = fleet_check("50");
    assert!(
        lingering["frames_sent"].as_u64().unwrap_or(0) >= 2_900,
        "{lingering}"
    );
    assert_eq!(lingering["lost"], 0, "{lingering}");
    assert_eq!(lingering["duplicates"], 0, "{lingering}");
    assert_eq!(lingering["sender_errors"], 0, "{lingering}");
    // 50 ms at 1,000 frames/s gathers about 50 frames; at least 10 leaves room for a slow CI.
    assert!(frames_per_publish(&lingering) >= 10.0, "{lingering}");

    let publish_what_waits = fleet_check("0");
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
