//! Frames between a start and an end marker (e.g. `0x88 ... 0xFF`), markers included so that
//! byte offsets match the device's documentation. Bytes outside frames are skipped.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::{FrameError, FramingConfig};

#[derive(Debug, Clone)]
pub struct MarkersDecoder {
    start: Vec<u8>,
    end: Vec<u8>,
    max: usize,
}

impl MarkersDecoder {
    pub(super) fn from_config(
        config: &FramingConfig,
        max: usize,
    ) -> Result<Self, (&'static str, String)> {
        Ok(Self {
            start: config.required_bytes("start", &config.start)?,
            end: config.required_bytes("end", &config.end)?,
            max,
        })
    }
}

impl Decoder for MarkersDecoder {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        // Skip to the start marker (keep a possible partial marker at the end).
        match memchr::memmem::find(buffer, &self.start) {
            Some(at) => buffer.advance(at),
            None => {
                let keep = (self.start.len() - 1).min(buffer.len());
                buffer.advance(buffer.len() - keep);
                return Ok(None);
            }
        }
        let body = self.start.len();
        match memchr::memmem::find(&buffer[body..], &self.end) {
            Some(at) => {
                let total = body + at + self.end.len();
                if total > self.max {
                    // Resynchronise on the next start marker after this one.
                    buffer.advance(self.start.len());
                    return Err(FrameError::TooLong {
                        size: total,
                        max: self.max,
                    });
                }
                Ok(Some(buffer.split_to(total).freeze()))
            }
            None if buffer.len() > self.max => {
                let size = buffer.len();
                buffer.advance(self.start.len());
                Err(FrameError::TooLong {
                    size,
                    max: self.max,
                })
            }
            None => Ok(None),
        }
    }
}
