//! A length field gives the frame size (Netty's LengthFieldBasedFrameDecoder: offset, 1/2/4/8-byte
//! field, byte order, adjustment, bytes to strip, maximum).

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::{ByteOrder, FrameError, FramingConfig};

/// Bytes reserved at most ahead of a frame that has not arrived yet.
const MAX_READ_AHEAD: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct LengthFieldDecoder {
    offset: usize,
    length: usize,
    order: ByteOrder,
    adjustment: i64,
    strip: usize,
    max: usize,
    /// Bytes of an oversized frame still to skip.
    discard: usize,
}

impl LengthFieldDecoder {
    pub(super) fn from_config(
        config: &FramingConfig,
        max: usize,
    ) -> Result<Self, (&'static str, String)> {
        let length = config.length_field_length.unwrap_or(2);
        if ![1, 2, 4, 8].contains(&length) {
            return Err((
                "lengthFieldLength",
                format!("must be 1, 2, 4 or 8, got {length}"),
            ));
        }
        Ok(Self {
            offset: config.length_field_offset.unwrap_or(0),
            length,
            order: config.byte_order.unwrap_or_default(),
            adjustment: config.length_adjustment.unwrap_or(0),
            strip: config.initial_bytes_to_strip.unwrap_or(0),
            max,
            discard: 0,
        })
    }

    fn field(&self, bytes: &[u8]) -> u64 {
        let mut value = [0u8; 8];
        match self.order {
            ByteOrder::Big => {
                value[8 - self.length..].copy_from_slice(bytes);
                u64::from_be_bytes(value)
            }
            ByteOrder::Little => {
                value[..self.length].copy_from_slice(bytes);
                u64::from_le_bytes(value)
            }
        }
    }
}

impl Decoder for LengthFieldDecoder {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if self.discard > 0 {
            let skip = self.discard.min(buffer.len());
            buffer.advance(skip);
            self.discard -= skip;
            if self.discard > 0 {
                return Ok(None);
            }
        }
        let header = self.offset.saturating_add(self.length);
        if buffer.len() < header {
            return Ok(None);
        }
        let value = self.field(&buffer[self.offset..header]);
        let total = header as i128 + i128::from(value) + i128::from(self.adjustment);
        if total < header as i128 || total < self.strip as i128 {
            // Nothing sensible follows a corrupt header: drop what we have.
            buffer.clear();
            return Err(FrameError::BadLength {
                length: i128::from(value),
            });
        }
        let total = usize::try_from(total).unwrap_or(usize::MAX);
        if total > self.max {
            let skip = total.min(buffer.len());
            buffer.advance(skip);
            self.discard = total - skip;
            return Err(FrameError::TooLong {
                size: total,
                max: self.max,
            });
        }
        if buffer.len() < total {
            // Grow with what arrives, not with what the header announces: a few header bytes
            // must not make every connection allocate up to maxFrameLength.
            buffer.reserve((total - buffer.len()).min(MAX_READ_AHEAD));
            return Ok(None);
        }
        let mut frame = buffer.split_to(total);
        frame.advance(self.strip);
        Ok(Some(frame.freeze()))
    }
}
