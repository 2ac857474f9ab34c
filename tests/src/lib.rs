//! End-to-end test harness: a real Mosquitto broker standing in for ThingsBoard's MQTT transport,
//! a test peer playing ThingsBoard's side of the gateway API, and the real `socket-connector`
//! binary run as a child process.

pub mod broker;
pub mod chart;
pub mod connector;
pub mod control_plane;
pub mod http;
pub mod image;
pub mod node;
pub mod peer;
pub mod pki;
pub mod thingsboard_gateway;

use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

pub use broker::Mosquitto;
pub use connector::ConnectorProcess;
pub use peer::{Message, ThingsBoardPeer};

/// The usual end-to-end setup: a real Mosquitto standing in for ThingsBoard's MQTT transport, the
/// ThingsBoard test peer connected to it (before the connector, so it sees everything the
/// connector publishes), and the connector binary running `config` with extra `run` arguments.
pub async fn broker_peer_and_connector(
    config: &serde_json::Value,
    args: &[&str],
) -> (Mosquitto, ThingsBoardPeer, ConnectorProcess) {
    let broker = Mosquitto::start();
    let peer = ThingsBoardPeer::connect(broker.port()).await;
    let connector = ConnectorProcess::start_with(config, broker.port(), args);
    (broker, peer, connector)
}

/// Generous bound for anything that should happen "promptly" on a loaded 2-core CI machine.
pub const PROMPTLY: Duration = Duration::from_secs(10);

/// Runs a command to its end; panics when it cannot start.
pub fn run(command: &mut std::process::Command) -> std::process::Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

/// The output of a command that must succeed, or a panic with its stdout and stderr.
pub fn ok(output: &std::process::Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a command that must succeed: its stdout.
pub fn run_ok(command: &mut std::process::Command) -> String {
    let what = format!("{command:?}");
    ok(&run(command), &what)
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}
