//! Every frame has the same size.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::FrameError;

#[derive(Debug)]
pub struct FixedDecoder {
    size: usize,
}

impl FixedDecoder {
    pub fn new(size: usize) -> Self {
        Self { size }
    }
}

impl Decoder for FixedDecoder {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if buffer.len() < self.size {
            buffer.reserve(self.size - buffer.len());
            return Ok(None);
        }
        Ok(Some(buffer.split_to(self.size).freeze()))
    }
}
