//! Length-prefixed framing: a 4-byte big-endian length, then the payload.
//!
//! Decoding checks the length prefix against the maximum before it allocates
//! anything, and treats an incomplete message as "wait for more bytes", not as
//! an error.

use std::num::NonZeroU32;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

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
    /// At most [`MAX_MESSAGE_SIZE_LIMIT`], so it fits.
    max: u32,
    /// The length of the message whose prefix was taken from the buffer and
    /// whose payload has not all arrived yet. The prefix is gone from the
    /// buffer then, so an empty buffer at end of stream is not a clean end.
    /// (Small on purpose: every connection holds a codec; a message is never
    /// empty, so the length needs no word of its own to say "none".)
    awaiting: Option<NonZeroU32>,
}

impl MessageCodec {
    /// A codec that refuses messages larger than `max` bytes (clamped to
    /// [`MAX_MESSAGE_SIZE_LIMIT`]).
    pub fn new(max: usize) -> Self {
        MessageCodec {
            max: max.min(MAX_MESSAGE_SIZE_LIMIT) as u32,
            awaiting: None,
        }
    }

    /// Forgets a message begun: the next bytes start a new one (a session's
    /// connection resumed on a new stream).
    pub(crate) fn reset(&mut self) {
        self.awaiting = None;
    }

    /// The maximum message size this codec accepts.
    pub fn max_message_size(&self) -> usize {
        self.max as usize
    }

    /// How many more bytes `src` needs before the message it begins is
    /// whole: the rest of the payload once its prefix was decoded, or the rest
    /// of the prefix; 0 when [`Decoder::decode`] would give a message now.
    /// A reader grows its buffer by this, never by more than the peer has
    /// announced.
    pub fn missing(&self, src: &[u8]) -> usize {
        match self.awaiting {
            Some(len) => (len.get() as usize).saturating_sub(src.len()),
            None => match src.get(..PREFIX_LEN) {
                None => PREFIX_LEN - src.len(),
                Some(prefix) => {
                    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
                    (len as usize).saturating_sub(src.len() - PREFIX_LEN)
                }
            },
        }
    }

    /// True when `src` holds part of a message and not all of it: the peer has
    /// begun a message and not finished it.
    pub fn is_partial(&self, src: &[u8]) -> bool {
        (self.awaiting.is_some() || !src.is_empty()) && self.missing(src) > 0
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
        let len = match self.awaiting {
            Some(len) => len.get(),
            None => {
                let Some(prefix) = src.get(..PREFIX_LEN) else {
                    return Ok(None);
                };
                let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
                if len > self.max {
                    return Err(FramingError::TooLarge {
                        max: self.max_message_size(),
                    });
                }
                src.advance(PREFIX_LEN);
                if len == 0 {
                    return Err(FramingError::Empty);
                }
                // No room reserved for the payload here: the reader grows its
                // buffer with the bytes that actually arrive, so a prefix
                // alone holds no memory.
                len
            }
        };
        if src.len() < len as usize {
            self.awaiting = NonZeroU32::new(len);
            return Ok(None);
        }
        self.awaiting = None;
        Ok(Some(src.split_to(len as usize).freeze()))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FramingError> {
        match self.decode(src)? {
            Some(msg) => Ok(Some(msg)),
            None if src.is_empty() && self.awaiting.is_none() => Ok(None),
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
        let max = self.max_message_size();
        put_message(dst, &item, max).map_err(|_| FramingError::TooLarge { max })
    }
}

/// Appends one length-prefixed message to `dst`, if its payload is at most
/// `max` bytes. The writer of every single message a router queues; a bulk is
/// written by the bulk writer of the codec module, with the same prefix.
pub fn put_message(dst: &mut BytesMut, payload: &[u8], max: usize) -> Result<(), EncodeError> {
    check_size(payload.len(), max)?;
    put_prefix(dst, payload.len());
    dst.put_slice(payload);
    Ok(())
}

/// Appends the length prefix of a payload of `len` bytes (at most
/// [`MAX_MESSAGE_SIZE_LIMIT`]), with room reserved for the payload.
pub(crate) fn put_prefix(dst: &mut BytesMut, len: usize) {
    dst.reserve(PREFIX_LEN + len);
    dst.put_u32(len as u32);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announced_length_reserves_nothing_before_its_bytes_arrive() {
        // A prefix announcing 16 MiB - 1, then one byte: the five bytes of a
        // peer that would hold 16 MiB of this process for nothing.
        let mut codec = MessageCodec::default();
        let mut buf = BytesMut::from(&[0x00, 0xff, 0xff, 0xff, 0x01][..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(
            buf.capacity() < 64 * 1024,
            "5 bytes received reserve {} bytes",
            buf.capacity()
        );
    }

    use std::collections::VecDeque;
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures_util::StreamExt;
    use tokio::io::{AsyncRead, ReadBuf};
    use tokio_util::codec::FramedRead;

    /// A scripted reader: hands out one chunk per read, each preceded by a
    /// `Pending` (with an immediate wake-up), so the decoder meets every
    /// partial state a socket can produce; then end of stream.
    struct Script {
        chunks: VecDeque<Vec<u8>>,
        ready: bool,
    }

    impl Script {
        fn chunks(chunks: &[&[u8]]) -> Self {
            Script {
                // An empty read would mean end of stream: leave empty chunks out.
                chunks: chunks
                    .iter()
                    .filter(|c| !c.is_empty())
                    .map(|c| c.to_vec())
                    .collect(),
                ready: false,
            }
        }

        fn bytewise(data: &[u8]) -> Self {
            Script {
                chunks: data.iter().map(|&b| vec![b]).collect(),
                ready: false,
            }
        }
    }

    impl AsyncRead for Script {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if !self.ready {
                self.ready = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.ready = false;
            if let Some(chunk) = self.chunks.pop_front() {
                buf.put_slice(&chunk);
            }
            Poll::Ready(Ok(()))
        }
    }

    /// Reads messages until the end of the stream or the first error.
    async fn read_all(script: Script, codec: MessageCodec) -> (Vec<Bytes>, Option<FramingError>) {
        let mut frames = FramedRead::new(script, codec);
        let mut out = Vec::new();
        while let Some(item) = frames.next().await {
            match item {
                Ok(msg) => out.push(msg),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    fn stream_of(payloads: &[&[u8]]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        for p in payloads {
            put_message(&mut buf, p, DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        }
        buf.to_vec()
    }

    #[tokio::test]
    async fn messages_arriving_one_byte_at_a_time_are_reassembled() {
        let data = stream_of(&[b"abc", b"hello", b"x"]);
        let (msgs, err) = read_all(Script::bytewise(&data), MessageCodec::default()).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(msgs, vec![&b"abc"[..], b"hello", b"x"]);
    }

    #[tokio::test]
    async fn a_stream_split_at_every_possible_point_gives_the_same_messages() {
        let data = stream_of(&[b"first", b"second message"]);
        for at in 0..=data.len() {
            let script = Script::chunks(&[&data[..at], &data[at..]]);
            let (msgs, err) = read_all(script, MessageCodec::default()).await;
            assert!(err.is_none(), "split at {at}: {err:?}");
            assert_eq!(
                msgs,
                vec![&b"first"[..], b"second message"],
                "split at {at}"
            );
        }
    }

    #[tokio::test]
    async fn several_messages_in_one_read_are_all_delivered() {
        let data = stream_of(&[b"a", b"bb", b"ccc"]);
        let (msgs, err) = read_all(Script::chunks(&[&data]), MessageCodec::default()).await;
        assert!(err.is_none());
        assert_eq!(msgs, vec![&b"a"[..], b"bb", b"ccc"]);
    }

    #[test]
    fn incomplete_input_waits_instead_of_failing() {
        let data = stream_of(&[b"abc"]);
        let mut codec = MessageCodec::default();
        let mut buf = BytesMut::new();
        for &b in &data[..data.len() - 1] {
            buf.extend_from_slice(&[b]);
            assert!(codec.decode(&mut buf).unwrap().is_none());
        }
        buf.extend_from_slice(&data[data.len() - 1..]);
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"abc");
        assert!(buf.is_empty());
    }

    #[test]
    fn a_length_prefix_claiming_2_gib_fails_before_allocating() {
        let mut codec = MessageCodec::default();
        let mut buf = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff, b'x'][..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(
            matches!(err, FramingError::TooLarge { max } if max == DEFAULT_MAX_MESSAGE_SIZE),
            "{err:?}"
        );
        assert!(buf.capacity() < 1024, "reserved {} bytes", buf.capacity());
    }

    #[test]
    fn missing_counts_what_the_message_begun_still_needs() {
        let mut codec = MessageCodec::default();
        assert_eq!(codec.missing(&[]), PREFIX_LEN);
        assert!(!codec.is_partial(&[]));
        assert_eq!(codec.missing(&[0, 0]), 2);
        assert!(codec.is_partial(&[0, 0]));
        let mut buf = BytesMut::from(&[0, 0, 0, 5, b'a', b'b'][..]);
        assert_eq!(codec.missing(&buf), 3);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        // The prefix is taken: the buffer holds the payload's first bytes only.
        assert_eq!(codec.missing(&buf), 3);
        buf.truncate(0);
        assert!(codec.is_partial(&buf), "a prefix alone is a message begun");
        buf.extend_from_slice(b"abcde");
        assert_eq!(codec.missing(&buf), 0);
        assert!(!codec.is_partial(&buf));
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"abcde");
        assert!(!codec.is_partial(&buf));
    }

    #[test]
    fn a_length_prefix_one_past_the_maximum_is_refused_and_the_maximum_itself_accepted() {
        let mut codec = MessageCodec::new(16);
        let mut over = BytesMut::from(&[0, 0, 0, 17][..]);
        assert!(matches!(
            codec.decode(&mut over),
            Err(FramingError::TooLarge { max: 16 })
        ));
        let mut codec = MessageCodec::new(16);
        let mut at = BytesMut::from(&stream_of(&[&[7u8; 16]])[..]);
        assert_eq!(codec.decode(&mut at).unwrap().unwrap().len(), 16);
    }

    #[test]
    fn the_configurable_maximum_is_clamped_to_what_a_signed_prefix_can_say() {
        assert_eq!(
            MessageCodec::new(usize::MAX).max_message_size(),
            MAX_MESSAGE_SIZE_LIMIT
        );
        assert_eq!(
            MessageCodec::default().max_message_size(),
            DEFAULT_MAX_MESSAGE_SIZE
        );
    }

    #[test]
    fn a_zero_length_prefix_is_an_error() {
        let mut codec = MessageCodec::default();
        let mut buf = BytesMut::from(&[0, 0, 0, 0, 0, 0, 0, 1, b'a'][..]);
        assert!(matches!(codec.decode(&mut buf), Err(FramingError::Empty)));
    }

    #[tokio::test]
    async fn end_of_stream_right_after_a_length_prefix_is_truncated() {
        // The prefix leaves the buffer when it is read, so the buffer is empty
        // at end of stream although a message was announced.
        let (msgs, err) = read_all(Script::bytewise(&[0, 0, 0, 5]), MessageCodec::default()).await;
        assert!(msgs.is_empty());
        assert!(matches!(err, Some(FramingError::Truncated)), "{err:?}");
    }

    #[tokio::test]
    async fn end_of_stream_inside_a_payload_is_truncated() {
        let mut data = stream_of(&[b"whole", b"half a message"]);
        data.truncate(data.len() - 7);
        let (msgs, err) = read_all(Script::bytewise(&data), MessageCodec::default()).await;
        assert_eq!(msgs, vec![&b"whole"[..]]);
        assert!(matches!(err, Some(FramingError::Truncated)), "{err:?}");
    }

    #[tokio::test]
    async fn end_of_stream_inside_a_length_prefix_is_truncated() {
        let (msgs, err) = read_all(Script::bytewise(&[0, 0]), MessageCodec::default()).await;
        assert!(msgs.is_empty());
        assert!(matches!(err, Some(FramingError::Truncated)), "{err:?}");
    }

    #[tokio::test]
    async fn end_of_stream_between_messages_is_a_clean_end() {
        let data = stream_of(&[b"one", b"two"]);
        let (msgs, err) = read_all(Script::bytewise(&data), MessageCodec::default()).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(msgs.len(), 2);
        let (msgs, err) = read_all(Script::chunks(&[]), MessageCodec::default()).await;
        assert!(msgs.is_empty() && err.is_none());
    }

    #[test]
    fn encoding_writes_a_big_endian_prefix_and_enforces_the_limits() {
        let mut codec = MessageCodec::new(16);
        let mut out = BytesMut::new();
        codec.encode(Bytes::from_static(b"abc"), &mut out).unwrap();
        assert_eq!(&out[..], b"\x00\x00\x00\x03abc");
        assert!(matches!(
            codec.encode(Bytes::from(vec![0u8; 17]), &mut out),
            Err(FramingError::TooLarge { max: 16 })
        ));
        assert!(matches!(
            codec.encode(Bytes::new(), &mut out),
            Err(FramingError::Empty)
        ));
        assert_eq!(out.len(), 7, "a refused message writes nothing");
        assert_eq!(
            put_message(&mut out, &[0u8; 17], 16),
            Err(EncodeError::TooLarge { size: 17, max: 16 })
        );
    }
}
