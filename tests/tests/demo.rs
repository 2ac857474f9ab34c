//! The README's main command: the demo shows telemetry within a few seconds, with nothing
//! installed (embedded broker, simulated device).

use std::process::Command;

#[test]
fn demo_prints_gateway_messages_and_stops() {
    let output = Command::new(e2e_tests::connector::binary())
        .args(["demo", "--duration", "3"])
        .env_remove("RUST_LOG")
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "demo failed: {output:?}");
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    let connect = lines.iter().position(|l| {
        *l == r#"v1/gateway/connect       {"device":"Thermometer A","type":"thermometer"}"#
    });
    let telemetry = lines.iter().position(|l| {
        l.starts_with("v1/gateway/telemetry")
            && l.contains(r#""values":{"temperature":"21.00","humidity":"40"}"#)
    });
    let disconnect = lines
        .iter()
        .position(|l| *l == r#"v1/gateway/disconnect    {"device":"Thermometer A"}"#);
    assert!(
        matches!((connect, telemetry, disconnect), (Some(c), Some(t), Some(d)) if c < t && t < d),
        "expected connect, telemetry, disconnect in order:\n{stdout}"
    );
}
