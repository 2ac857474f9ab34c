//! `socket-connector validate` and `migrate` as a user runs them.

use std::process::Command;

use e2e_tests::connector::binary;
use serde_json::Value;

fn example(name: &str) -> String {
    format!(
        "{}/../examples/thingsboard/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn validate_decodes_samples_and_exits_zero() {
    let output = Command::new(binary())
        .args([
            "validate",
            &example("basic.json"),
            "--sample-text",
            "2345",
            "--sample",
            "0x41 42",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains(r#"v1/gateway/telemetry {"Device Example":[{"ts":0,"values":{"temp":"2345","hum":"23"}}]}"#), "{stdout}");
    assert!(stdout.contains(r#"{"temp":"AB","hum":"AB"}"#), "{stdout}");
}

#[test]
fn validate_lists_every_error_and_exits_two() {
    let output = e2e_tests::connector::validate(
        r#"{"socket": {"port": 50000}, "devices": [{"deviceName": "a"}, {"address": "*:*", "deviceName": ""}]}"#,
    );
    assert_eq!(output.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("error: devices[0].address: missing"),
        "{stdout}"
    );
    assert!(
        stdout.contains("error: devices[1].deviceName: must not be empty"),
        "{stdout}"
    );
}

#[test]
fn migrate_rewrites_the_old_format() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("socket.json");
    let status = Command::new(binary())
        .args([
            "migrate",
            &example("old-format.json"),
            "--output",
            out.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let migrated: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(
        migrated["socket"],
        serde_json::json!({"type": "TCP", "address": "127.0.0.1", "port": 50000, "bufferSize": 1024})
    );
    // The result loads without the old-format warning.
    let check = Command::new(binary())
        .args(["validate", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(check.status.success());
    assert!(!String::from_utf8_lossy(&check.stdout)
        .contains("old socket connector configuration format"));
}

/// Threads of process `pid` named as tokio names its runtime's threads (workers and blocking).
fn runtime_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == "tokio-rt-worker")
        .count()
}

/// `--worker-threads` sets how many threads serve devices and ThingsBoard; 0 is refused.
#[tokio::test(flavor = "multi_thread")]
async fn worker_threads_are_what_the_flag_says() {
    let config = serde_json::json!({"name": "Threads",
        "socket": {"type": "TCP", "address": "127.0.0.1", "port": 0},
        "devices": [{"address": "*:*", "deviceName": "D", "telemetry": [{"key": "v"}]}]});
    // One worker is tokio's current-thread scheduler on the main thread: no worker thread of its
    // own, so two (the default on two cores) would fail the bound.
    for (workers, at_least, at_most) in [("1", 0, 1), ("7", 7, 9)] {
        let (_broker, mut peer, connector) =
            e2e_tests::broker_peer_and_connector(&config, &["--worker-threads", workers]).await;
        let mut device = std::net::TcpStream::connect(connector.local_addr).unwrap();
        std::io::Write::write_all(&mut device, b"1").unwrap();
        assert_eq!(
            peer.telemetry_values(1).await,
            [e2e_tests::peer::value("D", "v", "1")]
        );
        // The workers, and a blocking thread or two (address lookups) that may still be alive.
        let threads = runtime_threads(connector.pid());
        assert!(
            (at_least..=at_most).contains(&threads),
            "--worker-threads {workers}: {threads} runtime threads"
        );
    }
    let refused = Command::new(binary())
        .args(["demo", "--worker-threads", "0"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--worker-threads"),
        "{refused:?}"
    );
}
