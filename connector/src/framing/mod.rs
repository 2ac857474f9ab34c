//! Framing: how a byte stream becomes messages. One file per framer, each a
//! `tokio_util::codec::Decoder` over a `BytesMut` (as Vector's codecs), so a frame split across
//! reads or several frames in one read decode the same way.
//!
//! Without `framing` the connector does what ThingsBoard does: each read (TCP) or datagram (UDP)
//! is one message. UDP datagrams are framed one by one (no state carries over).

mod config;
mod delimiter;
mod fixed;
mod length;
mod markers;

pub use config::{parse_bytes, ByteOrder, FramingConfig, OnOversize};
pub use delimiter::DelimiterDecoder;
pub use fixed::FixedDecoder;
pub use length::LengthFieldDecoder;
pub use markers::MarkersDecoder;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// A problem in the stream. Oversized frames are dropped (counted and logged by the caller) and
/// the decoder resynchronises, or the connection is closed, by configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds maxFrameLength {max}")]
    TooLong { size: usize, max: usize },
    #[error("length field says {length}, which makes a frame shorter than its header")]
    BadLength { length: i128 },
    /// Required by `Decoder`; the decoders here never do IO.
    #[error("{0}")]
    Io(String),
}

impl From<std::io::Error> for FrameError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error.to_string())
    }
}

impl FrameError {
    /// The `reason` label of the dropped-frames metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLong { .. } => "frame_too_long",
            Self::BadLength { .. } => "bad_length_field",
            Self::Io(_) => "io",
        }
    }
}

/// A built framer of one connection (or one datagram).
#[derive(Debug)]
pub enum Framer {
    Delimiter(DelimiterDecoder),
    Fixed(FixedDecoder),
    Length(LengthFieldDecoder),
    Markers(MarkersDecoder),
}

impl Framer {
    /// The next complete frame, if the buffer holds one. On `Err`, the offending bytes are
    /// already discarded (resynchronised); the caller decides whether to go on.
    pub fn next_frame(&mut self, buffer: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match self {
            Self::Delimiter(d) => d.decode(buffer),
            Self::Fixed(d) => d.decode(buffer),
            Self::Length(d) => d.decode(buffer),
            Self::Markers(d) => d.decode(buffer),
        }
    }
}

#[cfg(test)]
mod tests;
