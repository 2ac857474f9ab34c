//! Arbitrary device frames through converters built from representative configurations (text
//! slices in every encoding, hex, negative and open slices, typed keys with byte orders, scale,
//! offset and bit fields, names from the message, message filters, attribute requests), plus a
//! typed decoder with fuzzer-chosen parameters. Nothing may panic.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use connector_core::build::Built;
use connector_core::config::{NumberOrder, ValueType};
use connector_core::convert::typed::TypedDecoder;
use connector_core::convert::{slice, text};
use connector_core::load::load_str;
use connector_core::route::{route, Routed};

const CONFIGS: &[&str] = &[
    include_str!("../../examples/socket.json"),
    include_str!("../../examples/thingsboard/basic.json"),
    include_str!("../../examples/thingsboard/advanced.json"),
    include_str!("../../examples/thingsboard/old-format.json"),
    include_str!("../configs/uplink.json"),
];

static BUILT: LazyLock<Vec<std::sync::Arc<Built>>> = LazyLock::new(|| {
    CONFIGS
        .iter()
        .map(|text| load_str(text).expect("fuzz configs load").built)
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
    for built in BUILT.iter() {
        let devices = &built.devices;
        let set: Vec<usize> = (0..devices.len()).collect();
        for (index, routed) in route(devices, &set, data, 1_700_000_000_000) {
            let Routed::Data(converted) = routed else {
                continue;
            };
            // At most one datapoint per configured key (a repeated key keeps one).
            let converter = &devices.devices()[index].converter;
            assert!(converted.telemetry.len() <= converter.telemetry.len());
            assert!(converted.attributes.len() <= converter.attributes.len());
        }
    }
    let _ = typed(&mut Unstructured::new(data));
});
