//! Codecs: how a message's payload is encoded. [`MsgPack`] is the default, [`Json`]
//! the alternative; implement [`Codec`] to plug in another.
//!
//! Both ends of a connection must use the same codec: the protocol has no negotiation.

use std::fmt;

use serde::de::DeserializeOwned;

use crate::error::{EncodeError, ProtocolError};
use crate::frame::{Frame, Message, OutFrame};
use crate::jsnum::JsNumbers;

mod json;
mod msgpack;

pub use json::Json;
pub use msgpack::MsgPack;

/// How deep data may nest in a message, counting the message's own levels
/// (bulk array, frame map, argument array). Deeper messages are a
/// [`ProtocolError::TooDeep`]; the limit keeps decoding free of stack overflows.
pub const MAX_DEPTH: usize = 128;

/// A callback that receives a type-erased deserializer for one argument.
pub type ArgVisitor<'v> =
    dyn FnMut(&mut dyn erased_serde::Deserializer<'_>) -> Result<(), erased_serde::Error> + 'v;

/// Where [`Codec::decode_message`] hands the frames of a bulk message: one at
/// a time, in order, each as soon as it is decoded. A frame that breaks the
/// protocol comes as its error; the frames after it still come.
pub type FrameSink<'s> = dyn FnMut(Result<Frame, ProtocolError>) + 's;

/// What [`Codec::decode_message`] found in a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A message of one frame: the frame, or what is wrong with it.
    Single(Result<Frame, ProtocolError>),
    /// A bulk message (an array of frames) of this many elements, each
    /// handed to the sink.
    Bulk(usize),
    /// A bulk message in the keyed form of the original's first release
    /// (`{"b": [frames]}`) of this many elements, each handed to the sink.
    KeyedBulk(usize),
}

/// How a bulk message is written: the array of its frames, or that array
/// under the key `b` (`{"b": [frames]}`), as the original's first release
/// (nmsg 1.0.2 with nmsg-rpc 1.0.6) writes and reads it. A router writes its
/// peer's form ([`RouterBuilder::bulk_form`](crate::RouterBuilder::bulk_form)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BulkForm {
    /// `[frame, frame, ...]`: the later releases' form, and nmsg's default.
    #[default]
    Array,
    /// `{"b": [frame, frame, ...]}`: the first release's form.
    Keyed,
}

/// A message encoding.
///
/// A codec parses whole messages into frames ([`Codec::decode_message`]) but leaves
/// each data argument as a byte range, and deserializes an argument only when a
/// handler asks for it ([`Codec::deserialize_arg`]). It encodes one frame at a
/// time; a bulk message is the codec's array form of already encoded frames.
///
/// A codec decodes what a peer it may not trust sent: decoding a message must
/// cost memory for the frame at hand, not for the message's element count (a
/// 16 MiB message may announce 16 million elements), and never panic.
pub trait Codec: Send + Sync + fmt::Debug + 'static {
    /// A short name for messages and logs, such as `"msgpack"`.
    fn name(&self) -> &'static str;

    /// Decodes one message. A message of one frame gives [`Decoded::Single`];
    /// the frames of a bulk go to `bulk`, one at a time and in order, as they
    /// are decoded (a router routes each before the next is decoded), and
    /// give [`Decoded::Bulk`]. A frame that breaks the protocol is an `Err`
    /// frame; the others are still given.
    ///
    /// `Err` means the payload cannot be decoded (not the codec's form, cut
    /// short, trailing bytes, nested too deep). A bulk that breaks off
    /// partway has given the frames before the break to `bulk`: each went as
    /// soon as it was read whole, as a frame is checked on its own (checking
    /// the whole message first would walk every bulk twice).
    fn decode_message(
        &self,
        payload: &[u8],
        bulk: &mut FrameSink<'_>,
    ) -> Result<Decoded, ProtocolError>;

    /// Decodes one message and collects its frames, for tests and tools: its
    /// memory grows with the message's element count, which a router's
    /// decoding never does.
    fn decode_all(&self, payload: &[u8]) -> Result<Message, ProtocolError> {
        let mut frames = Vec::new();
        match self.decode_message(payload, &mut |frame| frames.push(frame))? {
            Decoded::Single(frame) => Ok(Message::Single(frame)),
            Decoded::Bulk(_) | Decoded::KeyedBulk(_) => Ok(Message::Bulk(frames)),
        }
    }

    /// Gives `visit` a deserializer for the argument encoded in `raw` (a range
    /// produced by [`Codec::decode_message`]).
    fn deserialize_arg(&self, raw: &[u8], visit: &mut ArgVisitor<'_>) -> Result<(), String>;

    /// Appends the encoding of `frame` to `out`.
    fn encode_frame(&self, frame: &OutFrame<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError>;

    /// Appends the start of a bulk message of `count` frames, in `form`, to `out`.
    fn bulk_start(&self, count: usize, form: BulkForm, out: &mut Vec<u8>);

    /// The bytes between two frames of a bulk message.
    fn bulk_separator(&self) -> &'static [u8];

    /// Appends the end of a bulk message in `form` to `out`.
    fn bulk_end(&self, form: BulkForm, out: &mut Vec<u8>);

    /// The most bytes [`Codec::bulk_start`] and [`Codec::bulk_end`] add to a
    /// bulk message together, in either [`BulkForm`]: a buffered router keeps
    /// this much room in every bulk it fills, and in every frame it encodes.
    /// The default, 8, is what nmsg's own codecs need at the most (a 5-byte
    /// MsgPack array header after the 3 bytes of `{"b":`; JSON's `{"b":[`
    /// and `]}`).
    fn bulk_overhead(&self) -> usize {
        8
    }

    /// Which of nmsg's own codecs this is; `None` (the default) for any other.
    /// Only nmsg can make a [`Builtin`], so other codecs always take the
    /// general path through [`Codec::deserialize_arg`].
    #[doc(hidden)]
    fn builtin(&self) -> Option<Builtin> {
        None
    }
}

/// Names one of nmsg's own codecs ([`Codec::builtin`]); cannot be made outside nmsg.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Builtin(BuiltinKind);

#[derive(Debug, Clone, Copy)]
enum BuiltinKind {
    MsgPack,
    Json,
}

/// Deserializes one argument through a codec. Integer types accept the
/// integral floats a JavaScript peer may write for them (see
/// [`protocol`](crate::protocol#javascript-numbers)).
pub fn decode_arg<T: DeserializeOwned>(codec: &dyn Codec, raw: &[u8]) -> Result<T, String> {
    // The built-in codecs deserialize straight into `T`, with the deserializer
    // their `deserialize_arg` would erase (same configuration, same errors, no
    // check for trailing bytes either): `erased_serde` boxes every value it
    // hands back and dispatches every step through a vtable.
    match codec.builtin() {
        Some(Builtin(BuiltinKind::MsgPack)) => {
            let decode = |raw: &[u8]| {
                let mut de = rmp_serde::Deserializer::from_read_ref(raw);
                T::deserialize(JsNumbers(&mut de)).map_err(|e| e.to_string())
            };
            // Strings that msgpack-lite 0.1 wrote as CESU-8 come as bytes;
            // only an argument that handed such bytes over is looked at
            // again. An argument that is binary data holds no string.
            if let Some(0xc4..=0xc6) = raw.first() {
                return decode(raw);
            }
            return match crate::jsnum::watching_for_cesu8(|| decode(raw)) {
                (decoded, false) => decoded,
                (decoded, true) => match msgpack::utf8_from_cesu8(raw) {
                    Some(fixed) => decode(&fixed),
                    None => decoded,
                },
            };
        }
        Some(Builtin(BuiltinKind::Json)) => {
            let mut de = serde_json::Deserializer::from_slice(raw);
            return T::deserialize(JsNumbers(&mut de)).map_err(|e| e.to_string());
        }
        None => {}
    }
    let mut out = None;
    codec.deserialize_arg(raw, &mut |de| {
        out = Some(T::deserialize(JsNumbers(de))?);
        Ok(())
    })?;
    out.ok_or_else(|| "codec produced no value".to_owned())
}

/// Encodes a whole bulk message (no length prefix) from already encoded
/// frames, with the bulk writer a buffered router uses, as an array.
pub fn encode_bulk(codec: &dyn Codec, frames: &[&[u8]]) -> Vec<u8> {
    encode_bulk_in(codec, BulkForm::Array, frames)
}

/// [`encode_bulk`] in either [`BulkForm`].
pub fn encode_bulk_in(codec: &dyn Codec, form: BulkForm, frames: &[&[u8]]) -> Vec<u8> {
    let mut bulk = Bulk::default();
    for frame in frames {
        bulk.push(codec, frame);
    }
    let mut out = bytes::BytesMut::new();
    bulk.seal(codec, form, &mut out);
    out[crate::framing::PREFIX_LEN..].to_vec()
}

/// A bulk message being filled: encoded frames joined by the codec's
/// separator, sealed into a length-prefixed message when it is sent.
#[derive(Debug, Default)]
pub(crate) struct Bulk {
    /// The frames with separators, and while sealing, the bulk's end and start.
    joined: Vec<u8>,
    frames: usize,
}

impl Bulk {
    /// True with no frame in it.
    pub(crate) fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// True if a frame of `len` bytes may join the bulk without making it a
    /// message larger than `max` (an empty bulk takes any frame: its size was
    /// checked with the overhead when it was encoded).
    pub(crate) fn fits(&self, codec: &dyn Codec, len: usize, max: usize) -> bool {
        self.frames == 0
            || self.joined.len() + codec.bulk_separator().len() + len + codec.bulk_overhead() <= max
    }

    /// Adds an encoded frame.
    pub(crate) fn push(&mut self, codec: &dyn Codec, frame: &[u8]) {
        if self.frames > 0 {
            self.joined.extend_from_slice(codec.bulk_separator());
        }
        self.joined.extend_from_slice(frame);
        self.frames += 1;
    }

    /// Appends the bulk to `dst` as one length-prefixed message in `form`,
    /// and empties it.
    pub(crate) fn seal(&mut self, codec: &dyn Codec, form: BulkForm, dst: &mut bytes::BytesMut) {
        // The bulk's end and start are appended to its frames, in the same
        // buffer, and copied out in order: no buffer of their own per message.
        let frames = self.joined.len();
        codec.bulk_end(form, &mut self.joined);
        let end = self.joined.len();
        codec.bulk_start(self.frames, form, &mut self.joined);
        let len = self.joined.len();
        crate::framing::put_prefix(dst, len);
        dst.extend_from_slice(&self.joined[end..]);
        dst.extend_from_slice(&self.joined[..frames]);
        dst.extend_from_slice(&self.joined[frames..end]);
        self.joined.clear();
        self.frames = 0;
    }
}
