//! Framing: how a byte stream becomes messages. One file per framer, each a
//! `tokio_util::codec::Decoder` over a `BytesMut` (as Vector's codecs) with the function that
//! builds it from the configuration, so a frame split across reads or several frames in one read
//! decode the same way. A new framer is its file and a [`FramingKind`] variant.
//!
//! Without `framing` the connector does what ThingsBoard does: each read (TCP) or datagram (UDP)
//! is one message. UDP datagrams are framed one by one (no state carries over).

mod config;
mod delimiter;
mod fixed;
mod length;
mod markers;

pub use config::{parse_bytes, ByteOrder, FramingConfig, FramingKind, OnOversize};

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

/// What every framer is: a `Decoder` of frames that can start afresh with the same settings.
/// Implemented for every such decoder, so a framer file only writes its `Decoder`.
pub trait FrameDecoder: Send + Sync + std::fmt::Debug {
    fn decode_frame(&mut self, buffer: &mut BytesMut) -> Result<Option<Bytes>, FrameError>;
    fn fresh(&self) -> Box<dyn FrameDecoder>;
}

impl<D> FrameDecoder for D
where
    D: Decoder<Item = Bytes, Error = FrameError> + Clone + Send + Sync + std::fmt::Debug + 'static,
{
    fn decode_frame(&mut self, buffer: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        self.decode(buffer)
    }

    fn fresh(&self) -> Box<dyn FrameDecoder> {
        Box::new(self.clone())
    }
}

/// The framer of one connection (or one datagram).
#[derive(Debug)]
pub struct Framer(Box<dyn FrameDecoder>);

impl Framer {
    /// The next complete frame, if the buffer holds one. On `Err`, the offending bytes are
    /// already discarded (resynchronised); the caller decides whether to go on.
    pub fn next_frame(&mut self, buffer: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        self.0.decode_frame(buffer)
    }
}

/// A validated framing configuration: makes a fresh framer per connection or datagram.
#[derive(Debug)]
pub struct FramerFactory {
    prototype: Box<dyn FrameDecoder>,
    on_oversize: OnOversize,
}

impl FramerFactory {
    /// `None` for raw reads; `Err((key, message))` names the offending key.
    pub fn new(config: &FramingConfig) -> Result<Option<Self>, (&'static str, String)> {
        Ok(config.decoder()?.map(|prototype| Self {
            prototype,
            on_oversize: config.on_oversize(),
        }))
    }

    pub fn framer(&self) -> Framer {
        Framer(self.prototype.fresh())
    }

    pub fn on_oversize(&self) -> OnOversize {
        self.on_oversize
    }
}

#[cfg(test)]
mod tests;
