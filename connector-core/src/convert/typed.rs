//! Typed values (an extension: ThingsBoard only sends strings): integers of 1-8 bytes, floats,
//! booleans and bit fields in any byte order, with scale and offset, sent as JSON numbers and
//! booleans.

use serde_json::{Number, Value};

use crate::config::{NumberOrder, ValueType};

/// How one key's bytes become a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TypedDecoder {
    pub value_type: ValueType,
    pub order: NumberOrder,
    pub scale: Option<f64>,
    pub offset: Option<f64>,
    pub bit_offset: u32,
    pub bit_length: u32,
}

impl ValueType {
    /// Fixed width in bytes, if the type has one.
    fn width(self) -> Option<usize> {
        Some(match self {
            Self::Int8 | Self::Uint8 => 1,
            Self::Int16 | Self::Uint16 => 2,
            Self::Int32 | Self::Uint32 | Self::Float32 => 4,
            Self::Int64 | Self::Uint64 | Self::Float64 => 8,
            _ => return None,
        })
    }

    fn signed(self) -> bool {
        matches!(
            self,
            Self::Int | Self::Int8 | Self::Int16 | Self::Int32 | Self::Int64
        )
    }
}

impl TypedDecoder {
    /// The value of `bytes` (the key's slice), or why it has none (slice too short or too wide).
    pub fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
        let t = self.value_type;
        let value = match t {
            ValueType::String | ValueType::Hex => {
                return Err("text types are decoded by the text path".to_owned())
            }
            ValueType::Bool => return Ok(Value::Bool(bytes.iter().any(|b| *b != 0))),
            ValueType::Bits => {
                let raw = self.bits(bytes)?;
                if self.bit_length == 1 {
                    return Ok(Value::Bool(raw == 1));
                }
                Number::from(raw)
            }
            ValueType::Float | ValueType::Float32 | ValueType::Float64 => {
                let width = t.width().unwrap_or(bytes.len());
                let raw = self.ordered(take(bytes, width)?)?;
                let float = match width {
                    4 => f64::from(f32::from_bits(raw as u32)),
                    8 => f64::from_bits(raw),
                    other => return Err(format!("a float is 4 or 8 bytes, the slice has {other}")),
                };
                return self.scaled_float(float);
            }
            _ => {
                let width = t.width().unwrap_or(bytes.len());
                if width == 0 || width > 8 {
                    return Err(format!("an integer is 1-8 bytes, the slice has {width}"));
                }
                let raw = self.ordered(take(bytes, width)?)?;
                if t.signed() {
                    let shift = 64 - 8 * width as u32;
                    Number::from(((raw << shift) as i64) >> shift)
                } else {
                    Number::from(raw)
                }
            }
        };
        if self.scale.is_none() && self.offset.is_none() {
            return Ok(Value::Number(value));
        }
        self.scaled_float(value.as_f64().unwrap_or_default())
    }

    fn scaled_float(&self, value: f64) -> Result<Value, String> {
        let scaled = value * self.scale.unwrap_or(1.0) + self.offset.unwrap_or(0.0);
        Number::from_f64(scaled)
            .map(Value::Number)
            .ok_or_else(|| format!("{scaled} is not a JSON number"))
    }

    /// The bytes as an unsigned big-endian number after applying the byte order.
    fn ordered(&self, bytes: &[u8]) -> Result<u64, String> {
        let mut ordered = bytes.to_vec();
        match self.order {
            NumberOrder::Big => {}
            NumberOrder::Little => ordered.reverse(),
            NumberOrder::BigWordSwap | NumberOrder::LittleWordSwap => {
                if ordered.len() % 2 != 0 {
                    return Err(format!(
                        "word swap needs an even width, the slice has {}",
                        ordered.len()
                    ));
                }
                let mut words: Vec<[u8; 2]> =
                    ordered.chunks_exact(2).map(|w| [w[0], w[1]]).collect();
                if self.order == NumberOrder::BigWordSwap {
                    words.reverse();
                } else {
                    for word in &mut words {
                        word.swap(0, 1);
                    }
                }
                ordered = words.concat();
            }
        }
        Ok(ordered
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn bits(&self, bytes: &[u8]) -> Result<u64, String> {
        let total = bytes.len() as u64 * 8;
        let (from, length) = (u64::from(self.bit_offset), u64::from(self.bit_length));
        if length == 0 || length > 64 || from + length > total {
            return Err(format!(
                "bits {from}..{} are outside the {total}-bit slice",
                from + length
            ));
        }
        let mut value = 0u64;
        for bit in from..from + length {
            let byte = bytes[(bit / 8) as usize];
            let set = (byte >> (7 - bit % 8)) & 1;
            value = (value << 1) | u64::from(set);
        }
        Ok(value)
    }
}

fn take(bytes: &[u8], width: usize) -> Result<&[u8], String> {
    bytes
        .get(..width)
        .ok_or_else(|| format!("needs {width} bytes, the slice has {}", bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn decoder(value_type: ValueType) -> TypedDecoder {
        TypedDecoder {
            value_type,
            order: NumberOrder::Big,
            scale: None,
            offset: None,
            bit_offset: 0,
            bit_length: 1,
        }
    }

    #[test]
    fn known_vectors() {
        // IEEE-754 big-endian: 0x41200000 = 10.0, 0x3FB999999999999A = 0.1.
        assert_eq!(
            decoder(ValueType::Float32)
                .decode(&[0x41, 0x20, 0, 0])
                .unwrap(),
            json!(10.0)
        );
        assert_eq!(
            decoder(ValueType::Float64)
                .decode(&0.1f64.to_be_bytes())
                .unwrap(),
            json!(0.1)
        );
        assert_eq!(
            decoder(ValueType::Float)
                .decode(&[0xC0, 0x20, 0x00, 0x00])
                .unwrap(),
            json!(f64::from(-2.5f32))
        );
        // Signed 24-bit from a 3-byte slice: 0xFFFFFE = -2; 0x7FFFFF = 8388607.
        assert_eq!(
            decoder(ValueType::Int).decode(&[0xFF, 0xFF, 0xFE]).unwrap(),
            json!(-2)
        );
        assert_eq!(
            decoder(ValueType::Int).decode(&[0x7F, 0xFF, 0xFF]).unwrap(),
            json!(8_388_607)
        );
        assert_eq!(
            decoder(ValueType::Uint)
                .decode(&[0xFF, 0xFF, 0xFE])
                .unwrap(),
            json!(16_777_214)
        );
        assert_eq!(
            decoder(ValueType::Int16)
                .decode(&[0x80, 0x00, 0x12])
                .unwrap(),
            json!(-32768)
        );
        assert_eq!(
            decoder(ValueType::Uint64).decode(&[0xFF; 8]).unwrap(),
            json!(u64::MAX)
        );
        assert_eq!(
            decoder(ValueType::Int8).decode(&[0x85]).unwrap(),
            json!(-123)
        );
        assert_eq!(
            decoder(ValueType::Bool).decode(&[0, 0, 1]).unwrap(),
            json!(true)
        );
        assert_eq!(
            decoder(ValueType::Bool).decode(&[0, 0]).unwrap(),
            json!(false)
        );
    }

    #[test]
    fn byte_orders() {
        let bytes = [0x11, 0x22, 0x33, 0x44];
        let with = |order| {
            TypedDecoder {
                order,
                ..decoder(ValueType::Uint32)
            }
            .decode(&bytes)
            .unwrap()
        };
        assert_eq!(with(NumberOrder::Big), json!(0x1122_3344));
        assert_eq!(with(NumberOrder::Little), json!(0x4433_2211));
        assert_eq!(with(NumberOrder::BigWordSwap), json!(0x3344_1122));
        assert_eq!(with(NumberOrder::LittleWordSwap), json!(0x2211_4433));
        // A Modbus float in CDAB order: 10.0 is 0x41200000 → words 0000 4120.
        let cdab = TypedDecoder {
            order: NumberOrder::BigWordSwap,
            ..decoder(ValueType::Float32)
        };
        assert_eq!(cdab.decode(&[0x00, 0x00, 0x41, 0x20]).unwrap(), json!(10.0));
        let odd = TypedDecoder {
            order: NumberOrder::BigWordSwap,
            ..decoder(ValueType::Int)
        };
        assert!(odd.decode(&[1, 2, 3]).is_err());
    }

    #[test]
    fn scale_offset_and_bits() {
        let tenths = TypedDecoder {
            scale: Some(0.1),
            offset: Some(-40.0),
            ..decoder(ValueType::Uint16)
        };
        assert_eq!(tenths.decode(&[0x02, 0x58]).unwrap(), json!(20.0));
        let nibble = TypedDecoder {
            bit_offset: 4,
            bit_length: 4,
            ..decoder(ValueType::Bits)
        };
        assert_eq!(nibble.decode(&[0xA5]).unwrap(), json!(5));
        let flag = TypedDecoder {
            bit_offset: 8,
            bit_length: 1,
            ..decoder(ValueType::Bits)
        };
        assert_eq!(flag.decode(&[0x00, 0x80]).unwrap(), json!(true));
        assert!(TypedDecoder {
            bit_offset: 6,
            bit_length: 4,
            ..decoder(ValueType::Bits)
        }
        .decode(&[0xFF])
        .is_err());
    }

    #[test]
    fn short_or_wide_slices_are_errors() {
        assert!(decoder(ValueType::Int32).decode(&[1, 2]).is_err());
        assert!(decoder(ValueType::Int).decode(&[0; 9]).is_err());
        assert!(decoder(ValueType::Int).decode(&[]).is_err());
        assert!(decoder(ValueType::Float).decode(&[1, 2, 3]).is_err());
    }

    proptest! {
        #[test]
        fn integers_round_trip(value in any::<i64>(), width in 1usize..=8, little in any::<bool>()) {
            let shift = 64 - 8 * width as u32;
            let expected = (value << shift) >> shift;
            let mut bytes = expected.to_be_bytes()[8 - width..].to_vec();
            if little { bytes.reverse(); }
            let order = if little { NumberOrder::Little } else { NumberOrder::Big };
            let decoded = TypedDecoder { order, ..decoder(ValueType::Int) }.decode(&bytes).unwrap();
            prop_assert_eq!(decoded, json!(expected));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12), offset in 0u32..100, length in 0u32..100, which in 0usize..17) {
            let types = [ValueType::Int, ValueType::Uint, ValueType::Int8, ValueType::Int16, ValueType::Int32, ValueType::Int64,
                ValueType::Uint8, ValueType::Uint16, ValueType::Uint32, ValueType::Uint64, ValueType::Float, ValueType::Float32,
                ValueType::Float64, ValueType::Bool, ValueType::Bits, ValueType::Int, ValueType::Uint];
            for order in [NumberOrder::Big, NumberOrder::Little, NumberOrder::BigWordSwap, NumberOrder::LittleWordSwap] {
                let d = TypedDecoder { value_type: types[which], order, scale: Some(2.0), offset: None, bit_offset: offset, bit_length: length };
                let _ = d.decode(&bytes);
            }
        }
    }
}
