//! Length-prefixed framing: a 4-byte big-endian length, then the payload.
//!
//! Decoding uses tokio-util's length-delimited codec, which checks the length
//! prefix against the maximum before it allocates anything and treats an
//! incomplete message as "wait for more bytes", not as an error.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::error::{EncodeError, FramingError};

/// The default maximum message size, 16 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// The largest maximum message size that can be configured: the original
/// implementation reads the prefix as a signed 32-bit integer.
pub const MAX_MESSAGE_SIZE_LIMIT: usize = i32::MAX as usize;

/// Size of the length prefix in bytes.
pub const PREFIX_LEN: usize = 4;

/// A [`Decoder`]/[`Encoder`] of length-prefixed messages with a size limit.
///
/// ```
/// use bytes::BytesMut;
/// use nmsg::framing::MessageCodec;
/// use tokio_util::codec::Decoder;
///
/// let mut codec = MessageCodec::new(1024);
/// let mut buf = BytesMut::from(&b"\x00\x00\x00\x03ab"[..]);
/// assert!(codec.decode(&mut buf).unwrap().is_none()); // waits for the last byte
/// buf.extend_from_slice(b"c");
/// assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"abc");
/// ```
#[derive(Debug)]
pub struct MessageCodec {
    inner: LengthDelimitedCodec,
    max: usize,
}

impl MessageCodec {
    /// A codec that refuses messages larger than `max` bytes (clamped to
    /// [`MAX_MESSAGE_SIZE_LIMIT`]).
    pub fn new(max: usize) -> Self {
        let max = max.min(MAX_MESSAGE_SIZE_LIMIT);
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(PREFIX_LEN)
            .big_endian()
            .max_frame_length(max)
            .new_codec();
        MessageCodec { inner, max }
    }

    /// The maximum message size this codec accepts.
    pub fn max_message_size(&self) -> usize {
        self.max
    }
}

impl Default for MessageCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE_SIZE)
    }
}

impl Decoder for MessageCodec {
    type Item = Bytes;
    type Error = FramingError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FramingError> {
        match self.inner.decode(src) {
            Ok(Some(msg)) if msg.is_empty() => Err(FramingError::Empty),
            Ok(Some(msg)) => Ok(Some(msg.freeze())),
            Ok(None) => Ok(None),
            Err(e)
                if e.get_ref().map_or(false, |inner| {
                    inner.is::<tokio_util::codec::LengthDelimitedCodecError>()
                }) =>
            {
                Err(FramingError::TooLarge { max: self.max })
            }
            Err(e) => Err(FramingError::Io(e)),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FramingError> {
        match self.decode(src)? {
            Some(msg) => Ok(Some(msg)),
            None if src.is_empty() => Ok(None),
            None => Err(FramingError::Truncated),
        }
    }
}

impl Encoder<Bytes> for MessageCodec {
    type Error = FramingError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), FramingError> {
        if item.is_empty() {
            return Err(FramingError::Empty);
        }
        put_message(dst, &item, self.max).map_err(|_| FramingError::TooLarge { max: self.max })
    }
}

/// Appends one length-prefixed message to `dst`.
pub fn put_message(dst: &mut BytesMut, payload: &[u8], max: usize) -> Result<(), EncodeError> {
    check_size(payload.len(), max)?;
    dst.reserve(PREFIX_LEN + payload.len());
    dst.put_u32(payload.len() as u32);
    dst.put_slice(payload);
    Ok(())
}

/// Checks an encoded payload's size against the maximum.
pub(crate) fn check_size(size: usize, max: usize) -> Result<(), EncodeError> {
    let max = max.min(MAX_MESSAGE_SIZE_LIMIT);
    if size > max {
        Err(EncodeError::TooLarge { size, max })
    } else {
        Ok(())
    }
}
