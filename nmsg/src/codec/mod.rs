//! Codecs: how a message's payload is encoded. [`MsgPack`] is the default, [`Json`]
//! the alternative; implement [`Codec`] to plug in another.
//!
//! Both ends of a connection must use the same codec: the protocol has no negotiation.

use std::fmt;

use serde::de::DeserializeOwned;

use crate::error::{EncodeError, ProtocolError};
use crate::frame::{Message, OutFrame};

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

/// A message encoding.
///
/// A codec parses whole messages into frames ([`Codec::decode_message`]) but leaves
/// each data argument as a byte range, and deserializes an argument only when a
/// handler asks for it ([`Codec::deserialize_arg`]). It encodes one frame at a
/// time; a bulk message is the codec's array form of already encoded frames.
pub trait Codec: Send + Sync + fmt::Debug + 'static {
    /// A short name for messages and logs, such as `"msgpack"`.
    fn name(&self) -> &'static str;

    /// Decodes one message. `Err` means the payload cannot be decoded at all;
    /// errors of single frames are inside the [`Message`].
    fn decode_message(&self, payload: &[u8]) -> Result<Message, ProtocolError>;

    /// Gives `visit` a deserializer for the argument encoded in `raw` (a range
    /// produced by [`Codec::decode_message`]).
    fn deserialize_arg(&self, raw: &[u8], visit: &mut ArgVisitor<'_>) -> Result<(), String>;

    /// Appends the encoding of `frame` to `out`.
    fn encode_frame(&self, frame: &OutFrame<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError>;

    /// Appends the start of a bulk message of `count` frames to `out`.
    fn bulk_start(&self, count: usize, out: &mut Vec<u8>);

    /// The bytes between two frames of a bulk message.
    fn bulk_separator(&self) -> &'static [u8];

    /// Appends the end of a bulk message to `out`.
    fn bulk_end(&self, out: &mut Vec<u8>);

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

/// Deserializes one argument through a codec.
pub fn decode_arg<T: DeserializeOwned>(codec: &dyn Codec, raw: &[u8]) -> Result<T, String> {
    // The built-in codecs deserialize straight into `T`, with the deserializer
    // their `deserialize_arg` would erase (same configuration, same errors, no
    // check for trailing bytes either): `erased_serde` boxes every value it
    // hands back and dispatches every step through a vtable.
    match codec.builtin() {
        Some(Builtin(BuiltinKind::MsgPack)) => {
            let mut de = rmp_serde::Deserializer::from_read_ref(raw);
            return T::deserialize(&mut de).map_err(|e| e.to_string());
        }
        Some(Builtin(BuiltinKind::Json)) => {
            let mut de = serde_json::Deserializer::from_slice(raw);
            return T::deserialize(&mut de).map_err(|e| e.to_string());
        }
        None => {}
    }
    let mut out = None;
    codec.deserialize_arg(raw, &mut |de| {
        out = Some(erased_serde::deserialize::<T>(de)?);
        Ok(())
    })?;
    out.ok_or_else(|| "codec produced no value".to_owned())
}

/// Encodes a whole bulk message (no length prefix) from already encoded frames.
pub fn encode_bulk(codec: &dyn Codec, frames: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    codec.bulk_start(frames.len(), &mut out);
    for (n, frame) in frames.iter().enumerate() {
        if n > 0 {
            out.extend_from_slice(codec.bulk_separator());
        }
        out.extend_from_slice(frame);
    }
    codec.bulk_end(&mut out);
    out
}
