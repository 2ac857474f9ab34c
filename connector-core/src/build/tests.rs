use super::*;
use crate::config::ReportStrategy;
use crate::load::load_value;
use crate::route::{route, Routed};
use serde_json::json;

fn built(config: serde_json::Value) -> Arc<Built> {
    load_value(config).unwrap().built
}

/// Names of the devices that produce data from `message`, in order.
fn data_devices(built: &Built, peer: &str, message: &[u8]) -> Vec<String> {
    let set = built.devices.matching(peer);
    route(&built.devices, &set, message, 0)
        .filter_map(|(_, routed)| match routed {
            Routed::Data(data) if !data.is_empty() => Some(data.device.name.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn overlapping_filters_feed_every_matching_device() {
    let built = built(json!({"socket": {}, "devices": [
        {"address": "*:*", "deviceName": "all", "telemetry": [{"key": "t"}]},
        {"address": "127.0.0.1:*", "deviceName": "local", "telemetry": [{"key": "t"}]},
        {"address": "10.0.0.1:*", "deviceName": "other", "telemetry": [{"key": "t"}]},
        {"address": "*:*", "deviceName": "all-again", "telemetry": [{"key": "u", "byteFrom": 1}]}
    ]}));
    assert_eq!(built.devices.matching("127.0.0.1:4000"), [0, 1, 3]);
    assert_eq!(
        data_devices(&built, "127.0.0.1:4000", b"ab"),
        ["all", "local", "all-again"],
        "same filter twice: both devices get data"
    );
    assert!(built
        .devices
        .matching("10.0.0.2:1")
        .iter()
        .all(|i| *i == 0 || *i == 3));
}

#[test]
fn devices_without_keys_produce_nothing() {
    let built =
        built(json!({"socket": {}, "devices": [{"address": "*:*", "deviceName": "silent"}]}));
    assert!(data_devices(&built, "1.2.3.4:5", b"x").is_empty());
}

#[test]
fn send_data_only_on_change_means_on_change() {
    let built = built(json!({"sendDataOnlyOnChange": true, "socket": {},
        "devices": [{"address": "*:*", "deviceName": "d", "telemetry": [{"key": "t"}]}]}));
    let strategy = built.devices.devices()[0].converter.telemetry[0].strategy;
    assert_eq!(strategy.map(|s| s.kind), Some(ReportStrategyKind::OnChange));
}

#[test]
fn keys_without_a_level_leave_the_strategy_to_the_gateway() {
    let built = built(json!({"socket": {},
        "devices": [{"address": "*:*", "deviceName": "d", "telemetry": [{"key": "t"}]}]}));
    let level = built.devices.devices()[0].converter.telemetry[0].strategy;
    assert_eq!(level, None);
    let gateway = ReportStrategy::global(Some(&ReportStrategyConfig {
        kind: Some(ReportStrategyKind::OnChange),
        report_period: None,
        ttl: None,
        aggregation_function: None,
    }));
    assert_eq!(
        ReportStrategy::effective(level, gateway).kind,
        ReportStrategyKind::OnChange
    );
}

#[test]
fn attribute_requests_are_not_data_for_their_device() {
    let built = built(json!({"socket": {}, "devices": [{
        "address": "*:*", "deviceName": "d", "telemetry": [{"key": "t"}],
        "attributeRequests": [{"type": "shared",
            "requestExpression": "${[0:3]==req}", "attributeNameExpression": "[3:]"}]
    }]}));
    let routed: Vec<Routed> = route(&built.devices, &[0], b"reqfirmware", 0)
        .map(|(_, routed)| routed)
        .collect();
    assert_eq!(
        routed,
        [Routed::AttributeRequests(vec![
            crate::route::AttributeRequest {
                device: "d".into(),
                scope: crate::config::AttributeScope::Shared,
                keys: vec!["firmware".into()],
            }
        ])]
    );
    let routed: Vec<Routed> = route(&built.devices, &[0], b"21.5", 0)
        .map(|(_, routed)| routed)
        .collect();
    assert!(matches!(&routed[..], [Routed::Data(data)] if data.telemetry.len() == 1));
}

#[test]
fn every_error_is_reported_with_its_path() {
    let parsed = crate::config::parse_value(json!({"socket": {"bufferSize": 0, "handshake": "x"},
    "devices": [
        {"address": "*:*", "deviceName": "", "messageFilter": {"equals": ""}},
        {"address": "*:*", "deviceName": "b",
         "serverSideRpc": [{"methodRPC": "m", "methodProcessing": "read"}]}
    ]}))
    .unwrap();
    let errors: Vec<String> = build(&parsed.config)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        [
            "socket.bufferSize: must be between 1 and 1048576, got 0",
            "socket.handshake: applies to mode \"client\" only",
            "devices[0].deviceName: must not be empty",
            "devices[0].messageFilter.equals: must not be empty",
            "devices[1].serverSideRpc[0].methodProcessing: unsupported value \"read\"; only \"write\" exists",
        ]
    );
}

#[test]
fn downlink_rules_take_the_device_encoding_unless_given() {
    let built = built(json!({"socket": {}, "devices": [{
        "address": "*:*", "deviceName": "d", "encoding": "utf-16",
        "attributeUpdates": [{"attributeOnThingsBoard": "a"},
                             {"attributeOnThingsBoard": "b", "encoding": "hex"}],
        "serverSideRpc": [{"methodRPC": "m", "withResponse": true, "responseTimeoutMs": 250}]
    }]}));
    let rules = &built.devices.devices()[0].downlink;
    let encodings: Vec<Encoding> = rules.attribute_updates.iter().map(|u| u.encoding).collect();
    assert_eq!(encodings, [Encoding::Utf16, Encoding::Hex]);
    let rpc = rules.rpc("m").unwrap();
    assert_eq!(rpc.encoding, Encoding::Utf16);
    assert_eq!(rpc.response_timeout, Some(Duration::from_millis(250)));
    assert!(rules.rpc("other").is_none());
    assert_eq!(built.devices.find("d"), Some(0));
}

#[test]
fn set_may_write_to_device_peers_and_the_allow_list_only() {
    let built = built(
        json!({"socket": {}, "rpcSetAllow": ["10.9.0.*:*"], "devices": [
            {"address": "192.168.1.*:*", "deviceName": "d", "telemetry": [{"key": "t"}]}
        ]}),
    );
    assert!(built.set_allowed("192.168.1.7:5000"));
    assert!(built.set_allowed("10.9.0.3:22"));
    assert!(
        !built.set_allowed("10.96.0.1:443"),
        "the cluster's API server"
    );
    assert!(!built.set_allowed("127.0.0.1:9100"));
}

#[test]
fn the_udp_receive_buffer_is_sized_for_bursts_and_checked() {
    let udp = built(json!({"socket": {"type": "UDP"}, "devices": []}));
    assert_eq!(udp.receive_buffer, DEFAULT_RECEIVE_BUFFER);
    let sized =
        built(json!({"socket": {"type": "UDP", "receiveBufferSize": 65536}, "devices": []}));
    assert_eq!(sized.receive_buffer, 65536);
    let errors = |socket: serde_json::Value| -> Vec<String> {
        let parsed = crate::config::parse_value(json!({"socket": socket, "devices": []})).unwrap();
        build(&parsed.config)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(
        errors(json!({"type": "TCP", "receiveBufferSize": 65536})),
        ["socket.receiveBufferSize: applies to UDP only (a TCP connection's buffer is the kernel's to size)"]
    );
    assert_eq!(
        errors(json!({"type": "UDP", "receiveBufferSize": 100})),
        ["socket.receiveBufferSize: must be between 4096 and 268435456 bytes, got 100"]
    );
}
