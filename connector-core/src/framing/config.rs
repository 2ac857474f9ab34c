//! The `socket.framing` configuration (an extension: ThingsBoard has no framing).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::delimiter::DelimiterDecoder;
use super::fixed::FixedDecoder;
use super::length::LengthFieldDecoder;
use super::markers::MarkersDecoder;
use super::FrameDecoder;

/// Default maxFrameLength: 64 KiB.
pub const DEFAULT_MAX_FRAME: usize = 65_536;

/// How the byte stream is cut into messages. Without it (or with `raw`) each read (TCP) or
/// datagram (UDP) is one message, as in ThingsBoard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FramingConfig {
    /// `raw`, `delimiter`, `fixed`, `length` or `markers`.
    #[serde(rename = "type")]
    pub kind: FramingKind,
    /// delimiter: the bytes ending a frame: text with escapes (`\n`, `\r\n`, `\t`, `\0`,
    /// `\x03`) or hex (`0x0D0A`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    /// delimiter: drop the delimiter from the frame (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_delimiter: Option<bool>,
    /// fixed: bytes per frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    /// length: where the length field starts (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length_field_offset: Option<usize>,
    /// length: size of the length field: 1, 2, 4 or 8 bytes (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length_field_length: Option<usize>,
    /// length: `big` (default) or `little` endian.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_order: Option<ByteOrder>,
    /// length: added to the field's value to get the bytes after the field (default 0; e.g. -2
    /// when the length counts itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length_adjustment: Option<i64>,
    /// length: bytes cut from the start of each frame, e.g. the header (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_bytes_to_strip: Option<usize>,
    /// markers: bytes starting a frame (escapes or hex, like `delimiter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// markers: bytes ending a frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// Largest frame in bytes (default 65536); longer ones are dropped, logged and counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frame_length: Option<usize>,
    /// After an oversized or corrupt frame: `resync` (default) skips it and goes on, `close`
    /// closes the TCP connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_oversize: Option<OnOversize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FramingKind {
    Raw,
    Delimiter,
    Fixed,
    Length,
    Markers,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ByteOrder {
    #[default]
    Big,
    Little,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnOversize {
    #[default]
    Resync,
    Close,
}

impl FramingConfig {
    /// The framer these settings describe; `None` for raw reads.
    pub(super) fn decoder(&self) -> Result<Option<Box<dyn FrameDecoder>>, (&'static str, String)> {
        let max = self.max_frame_length.unwrap_or(DEFAULT_MAX_FRAME);
        if max == 0 {
            return Err(("maxFrameLength", "must be at least 1".to_owned()));
        }
        Ok(Some(match self.kind {
            FramingKind::Raw => return Ok(None),
            FramingKind::Delimiter => Box::new(DelimiterDecoder::from_config(self, max)?),
            FramingKind::Fixed => Box::new(FixedDecoder::from_config(self, max)?),
            FramingKind::Length => Box::new(LengthFieldDecoder::from_config(self, max)?),
            FramingKind::Markers => Box::new(MarkersDecoder::from_config(self, max)?),
        }))
    }

    /// A byte string the framer type needs (escapes or hex, not empty).
    pub(super) fn required_bytes(
        &self,
        key: &'static str,
        value: &Option<String>,
    ) -> Result<Vec<u8>, (&'static str, String)> {
        let text = value.as_deref().ok_or((
            key,
            // The `type` as written: serde's lowercase names are the variants' names lowercased.
            format!(
                "missing: required by type {}",
                format!("{:?}", self.kind).to_lowercase()
            ),
        ))?;
        let bytes = parse_bytes(text).map_err(|e| (key, e))?;
        if bytes.is_empty() {
            return Err((key, "must not be empty".to_owned()));
        }
        Ok(bytes)
    }

    pub fn on_oversize(&self) -> OnOversize {
        self.on_oversize.unwrap_or_default()
    }
}

/// `\n`, `\r\n`, `\t`, `\0`, `\\`, `\xNN` escapes in text, or `0x` followed by hex digits.
pub fn parse_bytes(text: &str) -> Result<Vec<u8>, String> {
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        let hex: String = hex
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '_')
            .collect();
        if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("{text:?} is not hex"));
        }
        if hex.is_empty() || hex.len() % 2 != 0 {
            return Err(format!("{text:?} is not an even number of hex digits"));
        }
        return (0..hex.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(hex.get(i..i + 2).unwrap_or_default(), 16)
                    .map_err(|_| format!("{text:?} is not hex"))
            })
            .collect();
    }
    let mut out = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut utf8 = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            continue;
        }
        match chars.next() {
            Some('n') => out.push(b'\n'),
            Some('r') => out.push(b'\r'),
            Some('t') => out.push(b'\t'),
            Some('0') => out.push(0),
            Some('\\') => out.push(b'\\'),
            Some('x') => {
                let digits: String = chars.by_ref().take(2).collect();
                let byte = u8::from_str_radix(&digits, 16)
                    .map_err(|_| format!("{text:?}: \\x needs two hex digits"))?;
                out.push(byte);
            }
            other => {
                return Err(format!(
                    "{text:?}: unknown escape \\{}",
                    other.map(String::from).unwrap_or_default()
                ))
            }
        }
    }
    Ok(out)
}
