//! Arbitrary bytes as a `socket.json`: the loader must return a result, never panic, and a
//! configuration it accepts must build (device table, framer) and run a few frames without panic.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use socket_connector::config::{check_value, load_str, load_value};
use socket_connector::report::ReportStrategy;
use socket_connector::router::Router;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let loaded = load_str(&text);
    if let Ok(value) = serde_json::from_str::<Value>(&text) {
        // The operator's path (an already parsed document): same verdict as from text.
        let checked = check_value(value.clone());
        assert_eq!(
            checked.is_ok(),
            loaded.is_ok(),
            "check_value and load_str disagree"
        );
        let _ = load_value(value);
    }
    let Ok(loaded) = loaded else { return };
    let config = &loaded.config;
    let router = Router::new(
        config,
        ReportStrategy::global(config.report_strategy.as_ref()),
    );
    if let Some(framing) = &config.socket.framing {
        // The loader validated it, so it builds.
        let mut framer = framing
            .build()
            .expect("a framing the loader accepted must build");
        if let Some(framer) = framer.as_mut() {
            let mut buffer = BytesMut::from(data);
            while let Ok(Some(_)) | Err(_) = framer.next_frame(&mut buffer) {
                if buffer.is_empty() {
                    break;
                }
            }
        }
    }
    let set = router.matching("127.0.0.1:5000");
    for device in router.devices() {
        let _ = device.accepts(data);
        let _ = device.attribute_requests(data);
    }
    let _ = router.convert(&set, data, 0).count();
});
