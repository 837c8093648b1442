//! The JSON codec: UTF-8 text, frames as objects.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::ops::Range;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{ArgVisitor, BulkForm, Codec, Decoded, FrameSink, MAX_DEPTH};
use crate::error::{EncodeError, ProtocolError};
use crate::frame::{Frame, FrameFields, OutFrame, OutKind, SmallVec};

/// The JSON codec.
///
/// Binary data has no JSON form: encoding it fails with
/// [`EncodeError::BinaryInJson`] rather than sending something the peer would
/// read as a different value. Nesting is limited to
/// [`MAX_DEPTH`](super::MAX_DEPTH) levels, as in MsgPack; a deeper frame is a
/// [`ProtocolError::TooDeep`] of that frame alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

fn undecodable(reason: impl std::fmt::Display) -> ProtocolError {
    let reason = reason.to_string();
    if reason.contains("recursion limit exceeded") {
        return ProtocolError::TooDeep {
            limit: super::MAX_DEPTH,
        };
    }
    ProtocolError::Undecodable {
        codec: "json",
        reason,
    }
}

/// The keys of a frame, each left raw so that a wrong type is reported per
/// key, and the first key found twice. Other keys are skipped.
#[derive(Default)]
struct RawFrame<'a> {
    i: Option<&'a RawValue>,
    e: Option<&'a RawValue>,
    a: Option<&'a RawValue>,
    c: Option<&'a RawValue>,
    t: Option<&'a RawValue>,
    r: Option<&'a RawValue>,
    f: Option<&'a RawValue>,
    duplicate: Option<&'static str>,
}

/// The keys of the protocol, in the order of [`RawFrame::slot`].
const KEYS: [&str; 7] = ["i", "e", "a", "c", "t", "r", "f"];

impl<'a> RawFrame<'a> {
    /// Where the value of `KEYS[key]` goes.
    #[inline]
    fn slot(&mut self, key: usize) -> &mut Option<&'a RawValue> {
        match key {
            0 => &mut self.i,
            1 => &mut self.e,
            2 => &mut self.a,
            3 => &mut self.c,
            4 => &mut self.t,
            5 => &mut self.r,
            _ => &mut self.f,
        }
    }
}

impl<'de> Deserialize<'de> for RawFrame<'de> {
    #[inline]
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawFrameVisitor)
    }
}

struct RawFrameVisitor;

impl<'de> Visitor<'de> for RawFrameVisitor {
    type Value = RawFrame<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a frame (an object)")
    }

    #[inline]
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut keys = RawFrame::default();
        // Bit n: `KEYS[n]` was seen (with any value, `null` too).
        let mut seen = 0u8;
        while let Some(Key(key)) = map.next_key()? {
            match key {
                Some(n) if seen & 1 << n == 0 => {
                    seen |= 1 << n;
                    // `null` is an absent key, as serde's `Option` has it.
                    let value: &RawValue = map.next_value()?;
                    *keys.slot(n) = (value.get() != "null").then_some(value);
                }
                Some(n) => {
                    keys.duplicate.get_or_insert(KEYS[n]);
                    map.next_value::<IgnoredAny>()?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(keys)
    }
}

/// A key of a frame: its place in [`KEYS`], `None` for another key. Read
/// without allocating, escaped or not.
struct Key(Option<usize>);

impl<'de> Deserialize<'de> for Key {
    #[inline]
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    #[inline]
    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(Key(match key {
            "i" => Some(0),
            "e" => Some(1),
            "a" => Some(2),
            "c" => Some(3),
            "t" => Some(4),
            "r" => Some(5),
            "f" => Some(6),
            _ => None,
        }))
    }
}

fn first_byte(s: &str) -> Option<u8> {
    s.bytes().find(|b| !b.is_ascii_whitespace())
}

fn kind_name(s: &str) -> &'static str {
    match first_byte(s) {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn field<'a, T: Deserialize<'a>>(
    raw: Option<&'a RawValue>,
    key: &'static str,
    expected: &'static str,
) -> Result<Option<T>, ProtocolError> {
    raw.map(|v| {
        serde_json::from_str(v.get()).map_err(|_| ProtocolError::WrongType { key, expected })
    })
    .transpose()
}

fn range_in(message: &str, part: &str) -> Range<usize> {
    // `part` is a sub-slice of `message`, borrowed by serde_json.
    let start = part.as_ptr() as usize - message.as_ptr() as usize;
    start..start + part.len()
}

/// Fails when containers in `text` nest deeper than [`MAX_DEPTH`] levels,
/// counting `enclosing` levels around it. `text` is valid JSON.
///
/// serde_json's recursion limit does not guard [`RawValue`]: it skips values
/// iteratively, at any depth. Without this check a data argument nested
/// 200,000 levels deep would reach a handler, and the depth limit would only
/// show up as an argument error there (or not at all, for a deserializer
/// without a limit).
fn check_depth(text: &str, enclosing: usize) -> Result<(), ProtocolError> {
    let mut depth = enclosing;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(ProtocolError::TooDeep { limit: MAX_DEPTH });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses one frame; `enclosing` is 1 for a frame inside a bulk.
fn frame(message: &str, raw: &RawValue, enclosing: usize) -> Result<Frame, ProtocolError> {
    if first_byte(raw.get()) != Some(b'{') {
        return Err(ProtocolError::NotAMessage {
            found: kind_name(raw.get()),
        });
    }
    check_depth(raw.get(), enclosing)?;
    let keys: RawFrame<'_> = serde_json::from_str(raw.get()).map_err(undecodable)?;
    if let Some(key) = keys.duplicate {
        return Err(ProtocolError::DuplicateKey { key });
    }
    let data = match keys.a {
        None => None,
        Some(a) => {
            let items: Vec<&RawValue> =
                serde_json::from_str(a.get()).map_err(|_| ProtocolError::WrongType {
                    key: "a",
                    expected: "an array",
                })?;
            Some(
                items
                    .into_iter()
                    .map(|v| range_in(message, v.get()))
                    .collect(),
            )
        }
    };
    FrameFields {
        id: field(keys.i, "i", "an unsigned integer")?,
        event: field(keys.e, "e", "a string")?,
        data,
        callbacks: field::<Vec<u64>>(keys.c, "c", "an array of unsigned integers")?
            .map(SmallVec::from_vec),
        timeout: field(keys.t, "t", "a number")?,
        reply_to: field(keys.r, "r", "an unsigned integer")?,
        position: field(keys.f, "f", "an unsigned integer")?,
    }
    .validate()
}

/// The array of a keyed bulk (`{"b": [frames]}`, an object of that one
/// key), as text borrowed from the message; `None` for anything else.
fn keyed_bulk(object: &str) -> Option<&str> {
    let after_brace = object.get(1..)?.trim_start();
    if !after_brace.starts_with("\"b\"") {
        return None;
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Keyed<'a> {
        #[serde(borrow)]
        b: &'a RawValue,
    }
    let keyed: Keyed<'_> = serde_json::from_str(object).ok()?;
    (first_byte(keyed.b.get()) == Some(b'[')).then(|| keyed.b.get())
}

/// Hands the frames of `array` (a bulk's array, borrowed from `text`, the
/// message, where it is nested `enclosing` levels deep) to the sink, each as
/// it is read; gives how many there were, or the error where the array
/// breaks off (after the frames before it went).
fn each_frame(
    text: &str,
    array: &str,
    enclosing: usize,
    bulk: &mut FrameSink<'_>,
) -> Result<usize, ProtocolError> {
    let mut de = serde_json::Deserializer::from_str(array);
    let each = EachFrame {
        text,
        enclosing,
        bulk,
    };
    serde::Deserializer::deserialize_seq(&mut de, each)
        .and_then(|count| de.end().map(|()| count))
        .map_err(undecodable)
}

/// Reads a bulk's elements one at a time, each as a raw value borrowed from
/// the message, and hands each, parsed as a frame, to the sink before it
/// reads the next. Gives the number of elements.
struct EachFrame<'t, 's, 'f> {
    text: &'t str,
    /// The levels around each frame: 1 in an array, 2 in a keyed bulk.
    enclosing: usize,
    bulk: &'s mut FrameSink<'f>,
}

impl<'de> Visitor<'de> for EachFrame<'_, '_, '_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a bulk (an array of frames)")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<usize, S::Error> {
        let mut index = 0;
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            (self.bulk)(frame(self.text, raw, self.enclosing).map_err(|e| match e {
                ProtocolError::NotAMessage { found } => ProtocolError::NotAFrame { index, found },
                other => other,
            }));
            index += 1;
        }
        Ok(index)
    }
}

/// A compact formatter that refuses byte arrays, so binary data never turns
/// into an array of numbers on the wire.
struct NoBinary<'a> {
    saw_binary: &'a Cell<bool>,
}

impl serde_json::ser::Formatter for NoBinary<'_> {
    fn write_byte_array<W: ?Sized + io::Write>(
        &mut self,
        _writer: &mut W,
        _value: &[u8],
    ) -> io::Result<()> {
        self.saw_binary.set(true);
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "binary data has no JSON form",
        ))
    }
}

impl Codec for Json {
    fn name(&self) -> &'static str {
        "json"
    }

    fn decode_message(
        &self,
        payload: &[u8],
        bulk: &mut FrameSink<'_>,
    ) -> Result<Decoded, ProtocolError> {
        let text = std::str::from_utf8(payload).map_err(|_| undecodable("payload is not UTF-8"))?;
        match first_byte(text) {
            Some(b'{') => {
                let raw: &RawValue = serde_json::from_str(text).map_err(undecodable)?;
                // The first release's bulk, `{"b": [frames]}`: an object
                // whose first key is "b" is looked at again (a frame's is "i").
                if let Some(frames) = keyed_bulk(raw.get()) {
                    let count = each_frame(text, frames, 2, bulk)?;
                    return Ok(Decoded::KeyedBulk(count));
                }
                Ok(Decoded::Single(frame(text, raw, 0)))
            }
            Some(b'[') => {
                // Each frame goes as soon as it is read: a message that
                // breaks off partway has routed the frames before the break.
                Ok(Decoded::Bulk(each_frame(text, text, 1, bulk)?))
            }
            None => Err(undecodable("empty payload")),
            Some(_) => {
                // Valid JSON of another kind is a protocol error; anything else is undecodable.
                let _: &RawValue = serde_json::from_str(text).map_err(undecodable)?;
                Err(ProtocolError::NotAMessage {
                    found: kind_name(text),
                })
            }
        }
    }

    fn deserialize_arg(&self, raw: &[u8], visit: &mut ArgVisitor<'_>) -> Result<(), String> {
        let mut de = serde_json::Deserializer::from_slice(raw);
        let mut erased = <dyn erased_serde::Deserializer<'_>>::erase(&mut de);
        visit(&mut erased).map_err(|e| e.to_string())
    }

    fn encode_frame(&self, frame: &OutFrame<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        use std::io::Write;
        // Writes into a Vec cannot fail.
        let _ = write!(out, "{{\"i\":{}", frame.id);
        if let OutKind::Event(name) = frame.kind {
            out.extend_from_slice(b",\"e\":");
            let _ = serde_json::to_writer(&mut *out, name);
        }
        // `a` is written whenever the frame has arguments, `[]` when all are
        // callbacks, and `t` between `a` and `c`: as the original writes them.
        if frame.writes_data() {
            out.extend_from_slice(b",\"a\":[");
            let saw_binary = Cell::new(false);
            for (n, &item) in frame.data.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                let mut ser = serde_json::Serializer::with_formatter(
                    &mut *out,
                    NoBinary {
                        saw_binary: &saw_binary,
                    },
                );
                // `erased_serde::serialize` gives the serializer's own errors
                // back; a bare `erased_serialize` call leaves them in its state.
                if let Err(e) = erased_serde::serialize(item, &mut ser) {
                    return Err(if saw_binary.get() {
                        EncodeError::BinaryInJson
                    } else {
                        EncodeError::Serialize(e.to_string())
                    });
                }
            }
            out.push(b']');
        }
        if let Some(t) = frame.timeout {
            out.extend_from_slice(b",\"t\":");
            match frame.timeout_whole_secs() {
                Some(secs) => {
                    let _ = write!(out, "{secs}");
                }
                None => {
                    let _ = serde_json::to_writer(&mut *out, &t);
                }
            }
        }
        if !frame.callbacks.is_empty() {
            out.extend_from_slice(b",\"c\":");
            let _ = serde_json::to_writer(&mut *out, frame.callbacks);
        }
        if let OutKind::Response { to, position } = frame.kind {
            let _ = write!(out, ",\"r\":{to},\"f\":{position}");
        }
        out.push(b'}');
        Ok(())
    }

    fn bulk_start(&self, _count: usize, form: BulkForm, out: &mut Vec<u8>) {
        match form {
            BulkForm::Array => out.push(b'['),
            BulkForm::Keyed => out.extend_from_slice(b"{\"b\":["),
        }
    }

    fn bulk_separator(&self) -> &'static [u8] {
        b","
    }

    fn bulk_end(&self, form: BulkForm, out: &mut Vec<u8>) {
        match form {
            BulkForm::Array => out.push(b']'),
            BulkForm::Keyed => out.extend_from_slice(b"]}"),
        }
    }

    fn builtin(&self) -> Option<super::Builtin> {
        Some(super::Builtin(super::BuiltinKind::Json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frames of `text` as the sink got them, and what the decoder gave.
    fn sunk(
        text: &str,
    ) -> (
        Vec<Result<u32, ProtocolError>>,
        Result<Decoded, ProtocolError>,
    ) {
        let mut frames = Vec::new();
        let decoded = Json.decode_message(text.as_bytes(), &mut |f| frames.push(f.map(|f| f.id)));
        (frames, decoded)
    }

    #[test]
    fn a_bulk_hands_every_element_to_the_sink_in_order_and_a_single_frame_none() {
        let (frames, decoded) = sunk(r#"[{"i":1,"e":"x"}, null ,{"i":2,"e":"x"},7]"#);
        assert_eq!(decoded, Ok(Decoded::Bulk(4)));
        assert_eq!(
            frames,
            [
                Ok(1),
                Err(ProtocolError::NotAFrame {
                    index: 1,
                    found: "null"
                }),
                Ok(2),
                Err(ProtocolError::NotAFrame {
                    index: 3,
                    found: "a number"
                }),
            ]
        );

        let (frames, decoded) = sunk(r#"{"i":3,"e":"x"}"#);
        assert!(frames.is_empty());
        assert!(matches!(decoded, Ok(Decoded::Single(Ok(f))) if f.id == 3));
    }

    #[test]
    fn a_bulk_that_breaks_off_hands_over_the_frames_before_the_break() {
        for text in [
            r#"[{"i":1,"e":"x"},{"i":2,"e":"x"}"#,
            r#"[{"i":1,"e":"x"},{"i":2,"e":"x"}] x"#,
            r#"[{"i":1,"e":"x"},{"i":2,"e":"x"},]"#,
            r#"[{"i":1,"e":"x"},{"i":2,"e":"x"},{"i":3,"e":"x}]"#,
        ] {
            let (frames, decoded) = sunk(text);
            assert_eq!(frames, [Ok(1), Ok(2)], "{text}");
            assert!(
                matches!(decoded, Err(ProtocolError::Undecodable { .. })),
                "{text}: {decoded:?}"
            );
        }
    }

    /// A key whose value is `null` is absent (as serde's `Option` reads it),
    /// with white space around the value or not: the frame is valid, as if
    /// the key were not there, where a `null` read as a value would be of the
    /// wrong type.
    #[test]
    fn a_null_key_is_absent() {
        for text in [
            r#"{"i":1,"e":"x","a":null,"t":null}"#,
            "{\"i\":1,\"e\":\"x\",\"a\" : \n null \t,\"c\":\tnull}",
        ] {
            let decoded = Json.decode_all(text.as_bytes());
            match decoded {
                Ok(crate::frame::Message::Single(Ok(frame))) => {
                    assert!(
                        frame.data.is_empty() && frame.callbacks.is_empty(),
                        "{text}"
                    );
                    assert_eq!(frame.timeout, None, "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
