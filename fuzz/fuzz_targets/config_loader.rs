//! Arbitrary bytes as a `socket.json`: the loader must return a result, never panic, and a
//! configuration it accepts is built (device table, framer) and routes a few frames without panic.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use connector_core::load::{check_value, load_str, load_value};
use connector_core::route::route;

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
    let built = &loaded.built;
    if let Some(factory) = &built.framing {
        let mut framer = factory.framer();
        let mut buffer = BytesMut::from(data);
        while let Ok(Some(_)) | Err(_) = framer.next_frame(&mut buffer) {
            if buffer.is_empty() {
                break;
            }
        }
    }
    let set = built.devices.matching("127.0.0.1:5000");
    let _ = route(&built.devices, &set, data, 0).count();
});
