//! Bytes to the string values ThingsBoard's `BytesSocketUplinkConverter` produces.
//!
//! Text encodings drop NUL characters (ThingsBoard strips 0x00 bytes before decoding, which for
//! UTF-16/32 destroys the text; here NULs are removed after decoding, which gives the same result
//! for the single-byte encodings and the intended one for UTF-16/32). Bytes that do not decode
//! become Python's `repr` of the NUL-stripped bytes (`b'\xff\x01'`), exactly what ThingsBoard sends.

use std::fmt::Write;

use crate::config::Encoding;

/// Decodes a slice as ThingsBoard would present it to its users.
pub fn decode(bytes: &[u8], encoding: Encoding) -> String {
    decode_checked(bytes, encoding).0
}

/// [`decode`], and whether the bytes were valid in the encoding (false: Python repr fallback).
pub fn decode_checked(bytes: &[u8], encoding: Encoding) -> (String, bool) {
    let decoded = match encoding {
        Encoding::Hex => return (hex(bytes), true),
        Encoding::Utf8 => utf8(bytes),
        // ASCII is UTF-8 as it is: one copy, where mapping each byte to a `char` pushes each.
        Encoding::Ascii | Encoding::Latin1 if bytes.is_ascii() => utf8(bytes),
        Encoding::Ascii => None,
        Encoding::Latin1 => Some(bytes.iter().map(|&b| b as char).collect()),
        Encoding::Utf16 => decode_utf16(bytes, None),
        Encoding::Utf16Le => decode_utf16(bytes, Some(Endian::Little)),
        Encoding::Utf16Be => decode_utf16(bytes, Some(Endian::Big)),
        Encoding::Utf32 => decode_utf32(bytes, None),
        Encoding::Utf32Le => decode_utf32(bytes, Some(Endian::Little)),
        Encoding::Utf32Be => decode_utf32(bytes, Some(Endian::Big)),
    };
    match decoded {
        Some(text) if text.contains('\0') => (text.replace('\0', ""), true),
        Some(text) => (text, true),
        None => {
            let stripped: Vec<u8> = bytes.iter().copied().filter(|&b| b != 0).collect();
            (python_bytes_repr(&stripped), false)
        }
    }
}

fn utf8(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_owned)
}

/// Lowercase hex without separators, as Python's `bytes.hex()`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[derive(Clone, Copy)]
enum Endian {
    Little,
    Big,
}

/// Python's `utf-16`/`utf-32` codecs: a leading BOM selects the byte order and is dropped;
/// without one the machine order is used, which is little-endian on every platform the gateway
/// runs on.
fn detect_bom(bytes: &[u8], width: usize) -> (Endian, &[u8]) {
    let (le, be): (&[u8], &[u8]) = if width == 2 {
        (&[0xff, 0xfe], &[0xfe, 0xff])
    } else {
        (&[0xff, 0xfe, 0, 0], &[0, 0, 0xfe, 0xff])
    };
    if let Some(rest) = bytes.strip_prefix(le) {
        (Endian::Little, rest)
    } else if let Some(rest) = bytes.strip_prefix(be) {
        (Endian::Big, rest)
    } else {
        (Endian::Little, bytes)
    }
}

fn decode_utf16(bytes: &[u8], endian: Option<Endian>) -> Option<String> {
    let (endian, body) = match endian {
        Some(endian) => (endian, bytes),
        None => detect_bom(bytes, 2),
    };
    if body.len() % 2 != 0 {
        return None;
    }
    let units = body.chunks_exact(2).map(|c| match endian {
        Endian::Little => u16::from_le_bytes([c[0], c[1]]),
        Endian::Big => u16::from_be_bytes([c[0], c[1]]),
    });
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .ok()
}

fn decode_utf32(bytes: &[u8], endian: Option<Endian>) -> Option<String> {
    let (endian, body) = match endian {
        Some(endian) => (endian, bytes),
        None => detect_bom(bytes, 4),
    };
    if body.len() % 4 != 0 {
        return None;
    }
    body.chunks_exact(4)
        .map(|c| {
            let code = match endian {
                Endian::Little => u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                Endian::Big => u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
            };
            char::from_u32(code)
        })
        .collect()
}

/// Python's `repr(bytes)`: `b'...'`, double quotes when the bytes hold `'` and no `"`.
pub fn python_bytes_repr(bytes: &[u8]) -> String {
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(bytes.len() + 3);
    out.push('b');
    out.push(quote);
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            _ if b == quote as u8 => {
                out.push('\\');
                out.push(quote);
            }
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push(quote);
    out
}

/// Text to device bytes (downlink). Python's `utf-16`/`utf-32` codecs write a byte-order mark
/// and little-endian units; `hex` takes hex digits (`"01ab"` → `01 ab`), the inverse of uplink.
pub fn encode(text: &str, encoding: Encoding) -> Result<Vec<u8>, String> {
    let units16 = |big: bool| -> Vec<u8> {
        text.encode_utf16()
            .flat_map(|u| {
                if big {
                    u.to_be_bytes()
                } else {
                    u.to_le_bytes()
                }
            })
            .collect()
    };
    let units32 = |big: bool| -> Vec<u8> {
        text.chars()
            .flat_map(|c| {
                let c = c as u32;
                if big {
                    c.to_be_bytes()
                } else {
                    c.to_le_bytes()
                }
            })
            .collect()
    };
    Ok(match encoding {
        Encoding::Utf8 => text.as_bytes().to_vec(),
        Encoding::Ascii => {
            if !text.is_ascii() {
                return Err(format!("{text:?} is not ASCII"));
            }
            text.as_bytes().to_vec()
        }
        Encoding::Latin1 => text
            .chars()
            .map(|c| u8::try_from(c as u32).map_err(|_| format!("{c:?} is not in latin-1")))
            .collect::<Result<_, _>>()?,
        Encoding::Hex => {
            let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            if digits.len() % 2 != 0 {
                return Err(format!("{text:?} is not an even number of hex digits"));
            }
            (0..digits.len())
                .step_by(2)
                .map(|i| {
                    u8::from_str_radix(digits.get(i..i + 2).unwrap_or_default(), 16)
                        .map_err(|_| format!("{text:?} is not hex"))
                })
                .collect::<Result<_, _>>()?
        }
        Encoding::Utf16 => [vec![0xff, 0xfe], units16(false)].concat(),
        Encoding::Utf16Le => units16(false),
        Encoding::Utf16Be => units16(true),
        Encoding::Utf32 => [vec![0xff, 0xfe, 0, 0], units32(false)].concat(),
        Encoding::Utf32Le => units32(false),
        Encoding::Utf32Be => units32(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_strips_nul_like_thingsboard() {
        assert_eq!(decode(b"ab\0c\0", Encoding::Utf8), "abc");
        assert_eq!(decode(b"abc\n", Encoding::Utf8), "abc\n");
        assert_eq!(decode("é€".as_bytes(), Encoding::Utf8), "é€");
    }

    #[test]
    fn undecodable_bytes_become_python_repr() {
        assert_eq!(decode(b"\xff\x01", Encoding::Utf8), r"b'\xff\x01'");
        assert_eq!(decode(b"\xff\0A", Encoding::Utf8), r"b'\xffA'");
        assert_eq!(decode(b"\x80", Encoding::Ascii), r"b'\x80'");
    }

    #[test]
    fn python_repr_quoting_rules() {
        assert_eq!(python_bytes_repr(b"it's"), r#"b"it's""#);
        assert_eq!(python_bytes_repr(b"'\""), r#"b'\'"'"#);
        assert_eq!(python_bytes_repr(b"a\\b\t\r\n\x7f"), r"b'a\\b\t\r\n\x7f'");
        assert_eq!(python_bytes_repr(b""), "b''");
    }

    #[test]
    fn hex_is_lowercase_without_separators() {
        assert_eq!(decode(b"\x01\xab\x00", Encoding::Hex), "01ab00");
        assert_eq!(decode(b"", Encoding::Hex), "");
    }

    #[test]
    fn utf16_and_utf32_decode_ascii_text_correctly() {
        // ThingsBoard strips NUL bytes first and gets '扡' here.
        assert_eq!(decode(b"a\0b\0", Encoding::Utf16), "ab");
        assert_eq!(decode(b"\xfe\xff\0a\0b", Encoding::Utf16), "ab");
        assert_eq!(decode(b"\0a\0b", Encoding::Utf16Be), "ab");
        assert_eq!(decode(b"a\0\0\0", Encoding::Utf32), "a");
        assert_eq!(decode(b"\0\0\0a", Encoding::Utf32Be), "a");
        assert_eq!(decode(b"a\0b", Encoding::Utf16Le), "b'ab'");
    }

    #[test]
    fn encode_is_the_inverse_of_decode() {
        // ascii cannot encode é; hex is not a text encoding.
        for &encoding in Encoding::ALL
            .iter()
            .filter(|e| !matches!(e, Encoding::Ascii | Encoding::Hex))
        {
            let bytes = encode("café", encoding).unwrap();
            assert_eq!(decode(&bytes, encoding), "café", "{encoding}");
        }
        assert_eq!(encode("ab", Encoding::Utf16).unwrap(), b"\xff\xfea\0b\0");
        assert_eq!(encode("01 AB", Encoding::Hex).unwrap(), [0x01, 0xab]);
        assert_eq!(
            decode(&encode("01ab", Encoding::Hex).unwrap(), Encoding::Hex),
            "01ab"
        );
        assert!(encode("0g", Encoding::Hex).is_err());
        assert!(encode("abc", Encoding::Hex).is_err());
        assert!(encode("é", Encoding::Ascii).is_err());
        assert!(encode("€", Encoding::Latin1).is_err());
    }

    /// Found by the `downlink_messages` fuzz target: a non-ASCII attribute value or RPC params
    /// for a `hex` device panicked (a byte index inside a character) instead of being an error.
    #[test]
    fn non_ascii_hex_is_an_error() {
        assert!(encode("a\u{e9}1", Encoding::Hex).is_err());
        assert!(encode("\u{e9}", Encoding::Hex).is_err());
    }

    #[test]
    fn latin1_maps_every_byte() {
        assert_eq!(decode(b"caf\xe9", Encoding::Latin1), "café");
    }
}
