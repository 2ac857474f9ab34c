//! Binary devices: start/end-marker frames over UDP, two message types selected by a filter, the
//! device name taken from the frame, typed big-endian numbers with scale, and bit flags, all
//! reaching ThingsBoard as JSON numbers and booleans.

use std::net::UdpSocket;

use e2e_tests::broker_peer_and_connector;
use e2e_tests::peer::telemetry_entries;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn typed_fields_message_types_and_names_from_the_frame() {
    let name = json!({"byteFrom": 2, "byteTo": 4, "prefix": "Meter "});
    let config = json!({
        "name": "Meters",
        "socket": {"type": "UDP", "address": "127.0.0.1", "port": 0,
                   "framing": {"type": "markers", "start": "0x88", "end": "0xFF"}},
        "devices": [
            {"address": "*:*", "deviceName": "Meter", "deviceType": "meter", "deviceNameFrom": name,
             "messageFilter": {"byteFrom": 1, "equals": "0x01"},
             "telemetry": [
                {"key": "counter", "byteFrom": 4, "byteTo": 8, "type": "uint32"},
                {"key": "temperature", "byteFrom": 8, "byteTo": 10, "type": "int16", "scale": 0.1},
                {"key": "energy", "byteFrom": 10, "byteTo": 14, "type": "float32", "byteOrder": "big-word-swap"}
             ]},
            {"address": "*:*", "deviceName": "Meter", "deviceType": "meter", "deviceNameFrom": name,
             "messageFilter": {"byteFrom": 1, "equals": "\\x02"},
             "attributes": [
                {"key": "alarm", "byteFrom": 4, "byteTo": 5, "type": "bits", "bitOffset": 7, "bitLength": 1},
                {"key": "mode", "byteFrom": 4, "byteTo": 5, "type": "bits", "bitOffset": 0, "bitLength": 4}
             ]}
        ]
    });
    let (_broker, mut peer, connector) = broker_peer_and_connector(&config, &[]).await;
    let device = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Type 1 from meter "07": counter 0x12345678, temperature -300 (x0.1), energy 10.0 as CDAB.
    // (No 0xFF inside a frame: it is the end marker.)
    let mut measurement = vec![0x88, 0x01, b'0', b'7', 0x12, 0x34, 0x56, 0x78, 0xFE, 0xD4];
    measurement.extend_from_slice(&[0x00, 0x00, 0x41, 0x20, 0xFF]);
    // Type 2 from meter "09": flags 0b1010_0001: mode 10, alarm on.
    let status = [0x88, 0x02, b'0', b'9', 0b1010_0001, 0xFF];
    device.send_to(&measurement, connector.local_addr).unwrap();
    device.send_to(&status, connector.local_addr).unwrap();

    let mut telemetry = None;
    let mut attributes = None;
    while telemetry.is_none() || attributes.is_none() {
        let message = peer.next_gateway().await;
        let value = message.json();
        match message.topic.as_str() {
            "v1/gateway/telemetry" => telemetry = Some(telemetry_entries(&message)),
            "v1/gateway/attributes"
                if value
                    .get("Meter 09")
                    .is_some_and(|a| a.get("alarm").is_some()) =>
            {
                attributes = Some(value)
            }
            _ => {}
        }
    }
    let telemetry = telemetry.unwrap();
    assert_eq!(telemetry[0].0, "Meter 07");
    assert_eq!(
        telemetry[0].2,
        json!({"counter": 305_419_896u32, "temperature": -30.0, "energy": 10.0})
    );
    assert_eq!(
        attributes.unwrap(),
        json!({"Meter 09": {"alarm": true, "mode": 10}})
    );
}
