//! Frames end with a delimiter (`\n`, `\r\n`, `0x03`, ...).

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::{FrameError, FramingConfig};

#[derive(Debug, Clone)]
pub struct DelimiterDecoder {
    delimiter: Vec<u8>,
    strip: bool,
    max: usize,
    /// Bytes already searched, so a long partial frame is not rescanned on every read.
    searched: usize,
    /// Discarding the rest of an oversized frame, up to the next delimiter.
    discarding: bool,
}

impl DelimiterDecoder {
    pub(super) fn from_config(
        config: &FramingConfig,
        max: usize,
    ) -> Result<Self, (&'static str, String)> {
        Ok(Self {
            delimiter: config.required_bytes("delimiter", &config.delimiter)?,
            strip: config.strip_delimiter.unwrap_or(true),
            max,
            searched: 0,
            discarding: false,
        })
    }

    fn find(&self, buffer: &[u8]) -> Option<usize> {
        let from = self.searched.saturating_sub(self.delimiter.len() - 1);
        let haystack = &buffer[from..];
        let found = match self.delimiter.as_slice() {
            [byte] => memchr::memchr(*byte, haystack),
            delimiter => memchr::memmem::find(haystack, delimiter),
        };
        found.map(|i| i + from)
    }
}

impl Decoder for DelimiterDecoder {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        loop {
            match self.find(buffer) {
                Some(end) => {
                    self.searched = 0;
                    let mut frame = buffer.split_to(end + self.delimiter.len());
                    if self.discarding {
                        self.discarding = false;
                        continue;
                    }
                    if frame.len() - self.delimiter.len() > self.max {
                        return Err(FrameError::TooLong {
                            size: frame.len() - self.delimiter.len(),
                            max: self.max,
                        });
                    }
                    if self.strip {
                        frame.truncate(end);
                    }
                    return Ok(Some(frame.freeze()));
                }
                // Oversized only once more than a full frame and a partial delimiter are here:
                // "abcd\r" with max 4 and "\r\n" is a frame of 4 whose delimiter is arriving.
                None if buffer.len() > self.max.saturating_add(self.delimiter.len() - 1) => {
                    let size = buffer.len();
                    // Keep what may be the start of a delimiter split across reads, or the
                    // end of this oversized frame is missed and the next frame discarded too.
                    let keep = (self.delimiter.len() - 1).min(buffer.len());
                    buffer.advance(buffer.len() - keep);
                    self.searched = 0;
                    let first = !self.discarding;
                    self.discarding = true;
                    // Report an oversized frame once, not once per read.
                    return if first {
                        Err(FrameError::TooLong {
                            size,
                            max: self.max,
                        })
                    } else {
                        Ok(None)
                    };
                }
                None => {
                    self.searched = buffer.len();
                    return Ok(None);
                }
            }
        }
    }
}
