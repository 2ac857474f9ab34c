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
