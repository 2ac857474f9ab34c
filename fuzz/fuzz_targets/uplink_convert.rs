//! Arbitrary device frames through converters built from representative configurations (text
//! slices in every encoding, hex, negative and open slices, typed keys with byte orders, scale,
//! offset and bit fields, names from the message, message filters, attribute requests), plus a
//! typed decoder with fuzzer-chosen parameters. Nothing may panic.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use socket_connector::config::load_str;
use socket_connector::convert::typed::{NumberOrder, TypedDecoder, ValueType};
use socket_connector::convert::{slice, text};
use socket_connector::report::ReportStrategy;
use socket_connector::router::Router;

const CONFIGS: &[&str] = &[
    include_str!("../../examples/socket.json"),
    include_str!("../../examples/thingsboard/basic.json"),
    include_str!("../../examples/thingsboard/advanced.json"),
    include_str!("../../examples/thingsboard/old-format.json"),
    include_str!("../configs/uplink.json"),
];

static ROUTERS: LazyLock<Vec<Router>> = LazyLock::new(|| {
    CONFIGS
        .iter()
        .map(|text| {
            let loaded = load_str(text).expect("fuzz configs load");
            Router::new(&loaded.config, ReportStrategy::ON_RECEIVED)
        })
        .collect()
});

const TYPES: &[ValueType] = &[
    ValueType::Int,
    ValueType::Uint,
    ValueType::Int8,
    ValueType::Int16,
    ValueType::Int32,
    ValueType::Int64,
    ValueType::Uint8,
    ValueType::Uint16,
    ValueType::Uint32,
    ValueType::Uint64,
    ValueType::Float,
    ValueType::Float32,
    ValueType::Float64,
    ValueType::Bool,
    ValueType::Bits,
    ValueType::String,
    ValueType::Hex,
];

const ORDERS: &[NumberOrder] = &[
    NumberOrder::Big,
    NumberOrder::Little,
    NumberOrder::BigWordSwap,
    NumberOrder::LittleWordSwap,
];

/// A typed decoder and slice bounds chosen by the fuzzer, applied to the rest of the input.
fn typed(u: &mut Unstructured<'_>) -> Result<()> {
    let decoder = TypedDecoder {
        value_type: *u.choose(TYPES)?,
        order: *u.choose(ORDERS)?,
        scale: u.arbitrary()?,
        offset: u.arbitrary()?,
        bit_offset: u.arbitrary()?,
        bit_length: u.arbitrary()?,
    };
    let from: Option<i64> = u.arbitrary()?;
    let to: Option<i64> = u.arbitrary()?;
    let data = u.bytes(u.len())?;
    let bytes = slice::byte_slice(data, from, to);
    let _ = decoder.decode(bytes);
    let _ = text::hex(bytes);
    let _ = text::python_bytes_repr(bytes);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    for router in ROUTERS.iter() {
        let set = router.matching("127.0.0.1:5000");
        let _ = router.convert(&set, data, 1_700_000_000_000).count();
        for device in router.devices() {
            let _ = device.accepts(data);
            let _ = device.attribute_requests(data);
            // At most one datapoint per configured key (a repeated key keeps one).
            let converter = &device.converter;
            let converted = converter.convert(data, 0);
            assert!(converted.telemetry.len() <= converter.telemetry.len());
            assert!(converted.attributes.len() <= converter.attributes.len());
        }
    }
    let _ = typed(&mut Unstructured::new(data));
});
