//! Every frame has the same size.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::{FrameError, FramingConfig};

#[derive(Debug, Clone)]
pub struct FixedDecoder {
    size: usize,
}

impl FixedDecoder {
    pub(super) fn from_config(
        config: &FramingConfig,
        max: usize,
    ) -> Result<Self, (&'static str, String)> {
        let size = config
            .size
            .ok_or(("size", "missing: required by type fixed".to_owned()))?;
        if size == 0 || size > max {
            return Err((
                "size",
                format!("must be between 1 and maxFrameLength ({max})"),
            ));
        }
        Ok(Self { size })
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
