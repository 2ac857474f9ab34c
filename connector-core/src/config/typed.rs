//! The typed-value settings of a key (an extension: ThingsBoard only sends strings); the decoding
//! is [`crate::convert::typed`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// Text in the device's encoding (ThingsBoard's behaviour).
    String,
    /// Lowercase hex.
    Hex,
    /// Signed integer as wide as the slice (1-8 bytes; a 3-byte slice is a signed 24-bit value).
    Int,
    /// Unsigned integer as wide as the slice.
    Uint,
    Int8,
    Int16,
    Int32,
    Int64,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    /// IEEE-754, 4 or 8 bytes by the slice's width.
    Float,
    Float32,
    Float64,
    /// True when any byte of the slice is not zero.
    Bool,
    /// `bitLength` bits from `bitOffset` (from the most significant bit); one bit is a boolean.
    Bits,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NumberOrder {
    #[default]
    Big,
    Little,
    /// 16-bit words in little-endian order, bytes within a word big-endian (`CDAB` for `ABCD`).
    BigWordSwap,
    /// 16-bit words in big-endian order, bytes within a word little-endian (`BADC`).
    LittleWordSwap,
}
