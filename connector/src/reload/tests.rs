use super::*;
use connector_core::config::SocketKind;
use connector_core::load::load_str;
use std::net::SocketAddr;

fn loaded(devices: &str) -> LoadedConfig {
    let text = format!(
        r#"{{"name": "C", "socket": {{"type": "TCP", "port": 50000}}, "devices": [{devices}]}}"#
    );
    load_str(&text).expect("valid config")
}

fn config(devices: &str) -> ConnectorConfig {
    loaded(devices).config
}

const A: &str = r#"{"address": "*:*", "deviceName": "A", "telemetry": [{"key": "t", "byteFrom": 0, "byteTo": -1}]}"#;
const A2: &str = r#"{"address": "*:*", "deviceName": "A", "telemetry": [{"key": "u", "byteFrom": 0, "byteTo": -1}]}"#;
const B: &str = r#"{"address": "10.0.0.1:*", "deviceName": "B", "telemetry": [{"key": "t", "byteFrom": 0, "byteTo": -1}]}"#;

#[test]
fn plan_names_added_removed_and_changed_devices() {
    let summary = plan(&config(A), &config(&format!("{A2},{B}"))).expect("applicable");
    assert_eq!(summary.added, ["B"]);
    assert_eq!(summary.changed, ["A"]);
    assert!(summary.removed.is_empty());
    let summary = plan(&config(&format!("{A},{B}")), &config(B)).expect("applicable");
    assert_eq!(summary.removed, ["A"]);
}

#[test]
fn a_changed_socket_section_is_rejected() {
    let old = config(A);
    let mut new = old.clone();
    new.socket.port = 50001;
    let error = plan(&old, &new).expect_err("socket changes need a restart");
    assert!(error.contains("socket section changed"), "{error}");
}

#[test]
fn a_new_name_needs_a_restart_and_logging_applies_at_once() {
    let old = config(A);
    let mut new = old.clone();
    new.log_level = Some(connector_core::config::LogLevel::Debug);
    let summary = plan(&old, &new).expect("plan");
    assert!(summary.needs_restart.is_empty());
    assert!(summary.logging_changed && !summary.is_empty());
    new.name = Some("Renamed".to_owned());
    assert_eq!(plan(&old, &new).expect("plan").needs_restart, ["name"]);
}

#[test]
fn apply_swaps_the_device_table_and_keeps_downlink_targets_by_name() {
    let live = Arc::new(Live::new(&loaded(&format!("{A},{B}"))));
    let links = Arc::new(DeviceLinks::new(SocketKind::Udp, 2, 100));
    let peer_a: SocketAddr = "127.0.0.1:4000".parse().expect("addr");
    let peer_b: SocketAddr = "10.0.0.1:4001".parse().expect("addr");
    links.seen(&[0], peer_a);
    links.seen(&[1], peer_b);
    let reloader = Reloader::new(live.clone(), links.clone());
    // B moves to the front, A changes its key, C is new.
    let c = A.replace("\"A\"", "\"C\"");
    let summary = reloader
        .apply(&loaded(&format!("{B},{A2},{c}")))
        .expect("applied");
    assert_eq!(summary.added, ["C"]);
    let snapshot = live.load();
    assert_eq!(snapshot.generation, 1);
    assert_eq!(snapshot.built.devices.find("B"), Some(0));
    assert_eq!(links.target(0).ok(), Some(peer_b), "B keeps its peer");
    assert_eq!(links.target(1).ok(), Some(peer_a), "A keeps its peer");
    assert!(links.target(2).is_err(), "C has not sent anything yet");
}

#[test]
fn names_read_from_frames_follow_their_device_across_a_reload() {
    let live = Arc::new(Live::new(&loaded(&format!("{A},{B}"))));
    let links = Arc::new(DeviceLinks::new(SocketKind::Tcp, 2, 100));
    let peer: SocketAddr = "10.0.0.1:4001".parse().expect("addr");
    links.seen_dynamic(&Arc::from("B-17"), 1, peer);
    links.seen_dynamic(&Arc::from("A-3"), 0, peer);
    let reloader = Reloader::new(live.clone(), links.clone());
    reloader.apply(&loaded(B)).expect("applied");
    let snapshot = live.load();
    let devices = &snapshot.built.devices;
    assert_eq!(
        links.address(devices, "B-17"),
        Some(crate::transport::links::Addressed {
            index: 0,
            peer: Some(peer)
        }),
        "B is now device 0"
    );
    assert_eq!(links.address(devices, "A-3"), None, "A was removed");
}

#[test]
fn an_invalid_or_unchanged_file_keeps_the_running_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("socket.json");
    let live = Arc::new(Live::new(&loaded(A)));
    let reloader = Reloader::new(
        live.clone(),
        Arc::new(DeviceLinks::new(SocketKind::Tcp, 1, 100)),
    );
    std::fs::write(
        &path,
        r#"{"socket": {"port": "not a port"}, "devices": []}"#,
    )
    .expect("write");
    assert!(!reloader.reload_file(&path));
    assert_eq!(live.load().generation, 0);
    assert_eq!(live.load().built.devices.find("A"), Some(0));
}
