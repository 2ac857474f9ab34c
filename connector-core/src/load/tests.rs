use super::*;
use crate::config::*;
use serde_json::json;

fn example(name: &str) -> String {
    let path = format!(
        "{}/../examples/thingsboard/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn error_of(value: serde_json::Value) -> String {
    load_value(value).expect_err("must be rejected").to_string()
}

#[test]
fn loads_the_thingsboard_examples() {
    let basic = load_str(&example("basic.json")).unwrap();
    assert!(!basic.legacy_format);
    assert!(basic.warnings.is_empty(), "{:?}", basic.warnings);
    let config = &basic.config;
    assert_eq!(config.socket.kind, SocketKind::Tcp);
    assert_eq!(config.socket.read_size(), 1024);
    assert_eq!(config.devices[0].filter_pattern(), Some("*:*"));
    assert_eq!(config.devices[0].telemetry[0].byte_to, Some(-1));

    let advanced = load_str(&example("advanced.json")).unwrap();
    assert!(advanced.warnings.is_empty(), "{:?}", advanced.warnings);
    let device = &advanced.config.devices[0];
    assert_eq!(device.attribute_requests[0].scope, AttributeScope::Shared);
    assert_eq!(device.attribute_updates[0].encoding, Some(Encoding::Utf16));
    assert_eq!(device.server_side_rpc[0].method_rpc, "rpcMethod1");
    assert_eq!(
        advanced
            .config
            .report_strategy
            .as_ref()
            .unwrap()
            .report_period,
        Some(60000)
    );

    let old = load_str(&example("old-format.json")).unwrap();
    assert!(old.legacy_format);
    assert_eq!(old.config.socket.port, 50000);
    assert_eq!(old.config.devices[0].address.as_deref(), Some("*:*"));
}

#[test]
fn old_format_udp_really_is_udp() {
    // ThingsBoard bug #1685: old-format UDP configs ran as TCP on 127.0.0.1:50000.
    let loaded = load_value(json!({
        "type": "udp", "address": "0.0.0.0", "port": 5005,
        "devices": [{"address": "*:*", "deviceName": "d"}]
    }))
    .unwrap();
    assert_eq!(loaded.config.socket.kind, SocketKind::Udp);
    assert_eq!(loaded.config.socket.address, "0.0.0.0");
    assert_eq!(loaded.config.socket.port, 5005);
}

#[test]
fn defaults_match_thingsboard() {
    let loaded =
        load_value(json!({"socket": {}, "devices": [{"address": "*:*", "deviceName": "d"}]}))
            .unwrap();
    let config = loaded.config;
    assert_eq!(config.socket.kind, SocketKind::Tcp);
    assert_eq!(config.socket.address, "127.0.0.1");
    assert_eq!(config.socket.port, 50000);
    assert_eq!(config.socket.read_size(), 1024);
    assert_eq!(config.devices[0].device_type, "default");
    assert_eq!(config.devices[0].encoding, Encoding::Utf8);
}

#[test]
fn buffer_size_is_honoured_in_both_spellings() {
    let with = |socket: serde_json::Value| {
        load_value(json!({"socket": socket, "devices": []}))
            .unwrap()
            .config
            .socket
            .read_size()
    };
    assert_eq!(with(json!({"bufferSize": 64})), 64);
    assert_eq!(with(json!({"buffer_size": 32})), 32);
    assert_eq!(with(json!({"bufferSize": 64, "buffer_size": 32})), 64);
    assert_eq!(
        error_of(json!({"socket": {"bufferSize": 0}})),
        "socket.bufferSize: must be between 1 and 1048576, got 0"
    );
}

#[test]
fn address_filter_wins_over_address() {
    let loaded = load_value(json!({"socket": {}, "devices": [
        {"address": "10.0.0.1:*", "addressFilter": "*:*", "deviceName": "d"}
    ]}))
    .unwrap();
    assert_eq!(loaded.config.devices[0].filter_pattern(), Some("*:*"));
    assert_eq!(
        loaded.warnings,
        ["devices[0]: both address and addressFilter given; addressFilter is used"]
    );
}

#[test]
fn errors_name_the_json_path() {
    assert_eq!(
        error_of(json!({"socket": {}, "devices": [
            {"address": "*:*", "deviceName": "a"},
            {"address": "*:*"}
        ]})),
        "devices[1].deviceName: missing"
    );
    assert_eq!(
        error_of(json!({"socket": {"type": "SCTP"}})),
        "socket.type: unknown value \"SCTP\", expected one of TCP, UDP"
    );
    assert_eq!(
        error_of(json!({"socket": {"port": 70000}})),
        "socket.port: invalid value: integer `70000`, expected u16"
    );
    assert_eq!(
        error_of(json!({"socket": {}, "devices": [{"deviceName": "d"}]})),
        "devices[0].address: missing: give the peer filter as \"address\" (or \"addressFilter\"), e.g. \"*:*\""
    );
    assert_eq!(
        error_of(
            json!({"socket": {}, "devices": [{"address": "*:*", "deviceName": "d",
            "telemetry": [{"key": "t", "byteFrom": "zero"}]}]})
        ),
        "devices[0].telemetry[0].byteFrom: invalid type: string \"zero\", expected i64"
    );
    assert_eq!(
        error_of(json!({"socket": {}, "devices": [{"address": "*:*", "deviceName": "d",
            "encoding": "ebcdic"}]})),
        "devices[0].encoding: unknown encoding \"ebcdic\", expected one of utf-8, ascii, latin-1, hex, utf-16, utf-16-le, utf-16-be, utf-32, utf-32-le, utf-32-be"
    );
    assert_eq!(
        error_of(
            json!({"socket": {}, "devices": [{"address": "*:*", "deviceName": "d",
            "attributes": [{"byteFrom": 0}]}]})
        ),
        "devices[0].attributes[0].key: missing"
    );
    assert_eq!(
        error_of(json!([1])),
        "(root): expected a JSON object with \"socket\" and \"devices\""
    );
    assert_eq!(
        load_str("{\"socket\": {},\n \"devices\": [}")
            .unwrap_err()
            .to_string(),
        "invalid JSON at line 2 column 14: expected value"
    );
}

#[test]
fn old_format_errors_use_the_users_paths() {
    assert_eq!(
        error_of(json!({"type": "SCTP", "devices": []})),
        "type: unknown value \"SCTP\", expected one of TCP, UDP"
    );
}

#[test]
fn report_strategy_mistakes_are_errors_not_silence() {
    let device = |strategy: serde_json::Value| {
        json!({"socket": {}, "devices": [{"address": "*:*", "deviceName": "d",
            "telemetry": [{"key": "t", "reportStrategy": strategy}]}]})
    };
    assert_eq!(
        error_of(device(json!({"type": "ON_CHANGES"}))),
        "devices[0].telemetry[0].reportStrategy.type: unknown value \"ON_CHANGES\", expected one of ON_RECEIVED, ON_CHANGE, ON_REPORT_PERIOD, ON_CHANGE_OR_REPORT_PERIOD, DISABLED"
    );
    assert_eq!(
        error_of(device(json!({"reportPeriod": 100}))),
        "devices[0].telemetry[0].reportStrategy.type: missing: reportPeriod needs a type, one of ON_RECEIVED, ON_CHANGE, ON_REPORT_PERIOD, ON_CHANGE_OR_REPORT_PERIOD, DISABLED"
    );
    assert_eq!(
        error_of(device(json!({"type": "ON_REPORT_PERIOD"}))),
        "devices[0].telemetry[0].reportStrategy.reportPeriod: missing: ON_REPORT_PERIOD needs a period in milliseconds"
    );
    // Case-insensitive, and an empty object is "not specified", as in ThingsBoard.
    assert!(load_value(device(json!({"type": "on_change"}))).is_ok());
    assert!(load_value(device(json!({}))).is_ok());
}

#[test]
fn unknown_keys_are_warnings_with_paths() {
    let loaded = load_value(json!({
        "socket": {"type": "tcp", "backlog": 5},
        "devices": [{"address": "*:*", "deviceName": "d", "accessToken": "x",
                     "telemetry": [{"key": "t", "units": "C"}]}],
        "sendDataOnlyOnChange": true,
        "extra": {"nested": 1}
    }))
    .unwrap();
    assert_eq!(
        loaded.warnings,
        [
            "socket.backlog: unknown key, ignored",
            "devices[0].accessToken: unknown key, ignored",
            "devices[0].telemetry[0].units: unknown key, ignored",
            "extra: unknown key, ignored",
            "sendDataOnlyOnChange: applied as reportStrategy {\"type\": \"ON_CHANGE\"}",
        ]
    );
}

#[test]
fn invalid_regex_filter_is_a_warning() {
    let loaded = load_value(
        json!({"socket": {}, "devices": [{"address": "1.2.3.4:(1", "deviceName": "d"}]}),
    )
    .unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0]
        .starts_with("devices[0].address: \"1.2.3.4:(1\" is not a valid regular expression"));
}

#[test]
fn unsupported_converter_is_rejected() {
    assert_eq!(
        error_of(json!({"socket": {}, "devices": [{"address": "*:*", "deviceName": "d", "converter": "MyConverter"}]})),
        "devices[0].converter: unsupported converter \"MyConverter\"; only BytesSocketUplinkConverter exists here"
    );
}

#[test]
fn round_trips_through_serde() {
    let loaded = load_str(&example("advanced.json")).unwrap();
    let value = serde_json::to_value(&loaded.config).unwrap();
    let again = load_value(value).unwrap();
    assert_eq!(again.config, loaded.config);
}
