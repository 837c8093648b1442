//! The MsgPack codec: frames are maps keyed by one-letter strings.

use super::{ArgVisitor, BulkForm, Codec, Decoded, FrameSink};
use crate::error::{EncodeError, ProtocolError};
use crate::frame::{OutFrame, OutKind};

mod cesu;
mod read;

pub(crate) use cesu::utf8_from_cesu8;

use read::{Kind, Reader};

/// The MsgPack codec, the protocol's default.
///
/// Structs are encoded as maps with field names (as JavaScript objects are), byte
/// strings (`serde_bytes`, [`Value::Binary`](crate::Value::Binary)) as MsgPack `bin`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MsgPack;

impl Codec for MsgPack {
    fn name(&self) -> &'static str {
        "msgpack"
    }

    fn decode_message(
        &self,
        payload: &[u8],
        bulk: &mut FrameSink<'_>,
    ) -> Result<Decoded, ProtocolError> {
        let mut r = Reader {
            buf: payload,
            pos: 0,
        };
        // The first release's bulk, `{"b": [frames]}`: a map of one key.
        let keyed = matches!(r.peek()?, Kind::Map(1)) && r.enter_keyed_bulk()?;
        match r.peek()? {
            Kind::Map(_) => {
                let frame = r.frame(1)?;
                r.at_end()?;
                Ok(Decoded::Single(frame))
            }
            Kind::Array(n) => {
                // Frames sit one level deeper in a keyed bulk.
                let depth = 2 + keyed as usize;
                // Each frame goes as soon as it is read: a message that
                // breaks off partway has routed the frames before the break.
                // (Checking it whole first cost a second walk of every bulk.)
                r.advance_header()?;
                for index in 0..n as usize {
                    let frame = match r.peek()? {
                        Kind::Map(_) => r.frame(depth)?,
                        other => {
                            r.skip(depth)?;
                            Err(ProtocolError::NotAFrame {
                                index,
                                found: other.name(),
                            })
                        }
                    };
                    bulk(frame);
                }
                r.at_end()?;
                Ok(match keyed {
                    false => Decoded::Bulk(n as usize),
                    true => Decoded::KeyedBulk(n as usize),
                })
            }
            other => Err(ProtocolError::NotAMessage {
                found: other.name(),
            }),
        }
    }

    fn deserialize_arg(&self, raw: &[u8], visit: &mut ArgVisitor<'_>) -> Result<(), String> {
        let mut de = rmp_serde::Deserializer::from_read_ref(raw);
        let mut erased = <dyn erased_serde::Deserializer<'_>>::erase(&mut de);
        visit(&mut erased).map_err(|e| e.to_string())
    }

    fn encode_frame(&self, frame: &OutFrame<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        // `a` is written whenever the frame has arguments, `[]` when all are
        // callbacks, and `t` between `a` and `c`: as the original writes them.
        let has_args = frame.writes_data();
        let has_callbacks = !frame.callbacks.is_empty();
        let len = 1
            + matches!(frame.kind, OutKind::Event(_)) as u32
            + has_args as u32
            + has_callbacks as u32
            + frame.timeout.is_some() as u32
            + 2 * matches!(frame.kind, OutKind::Response { .. }) as u32;
        // The frame's own markers are written here, in their shortest forms
        // (as rmp writes them): rmp's writers go through `io::Write` and its
        // error path, several times the cost for the few bytes of a header.
        put_len(out, len, 0x80, 0xde);
        key(out, b'i');
        put_uint(out, frame.id);
        if let OutKind::Event(name) = frame.kind {
            key(out, b'e');
            put_str(out, name);
        }
        if has_args {
            key(out, b'a');
            put_len(out, frame.data.len() as u32, 0x90, 0xdc);
            for &item in frame.data {
                let mut ser = rmp_serde::Serializer::new(&mut *out).with_struct_map();
                // `erased_serde::serialize` gives the serializer's own errors
                // back; a bare `erased_serialize` call leaves them in its state.
                erased_serde::serialize(item, &mut ser)
                    .map_err(|e| EncodeError::Serialize(e.to_string()))?;
            }
        }
        if let Some(t) = frame.timeout {
            key(out, b't');
            match frame.timeout_whole_secs() {
                Some(secs) => put_uint(out, secs),
                None => {
                    let _ = rmp::encode::write_f64(out, t);
                }
            }
        }
        if has_callbacks {
            key(out, b'c');
            put_len(out, frame.callbacks.len() as u32, 0x90, 0xdc);
            for &p in frame.callbacks {
                put_uint(out, p);
            }
        }
        if let OutKind::Response { to, position } = frame.kind {
            key(out, b'r');
            put_uint(out, to);
            key(out, b'f');
            put_uint(out, position);
        }
        Ok(())
    }

    fn bulk_start(&self, count: usize, form: BulkForm, out: &mut Vec<u8>) {
        if form == BulkForm::Keyed {
            // {"b": [...]}
            out.extend_from_slice(&[0x81, 0xa1, b'b']);
        }
        put_len(out, count as u32, 0x90, 0xdc);
    }

    fn bulk_separator(&self) -> &'static [u8] {
        b""
    }

    fn bulk_end(&self, _form: BulkForm, _out: &mut Vec<u8>) {}

    fn builtin(&self) -> Option<super::Builtin> {
        Some(super::Builtin(super::BuiltinKind::MsgPack))
    }
}

#[inline]
fn key(out: &mut Vec<u8>, k: u8) {
    out.extend_from_slice(&[0xa1, k]);
}

/// An unsigned integer in its shortest form.
#[inline]
fn put_uint(out: &mut Vec<u8>, v: u32) {
    match v {
        0..=0x7f => out.push(v as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, v as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        }
        _ => {
            out.push(0xce);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// A map or array header: `fix` is the fixmap or fixarray marker (up to 15
/// entries), `m16` the 16-bit form's marker, followed by the 32-bit one.
#[inline]
fn put_len(out: &mut Vec<u8>, n: u32, fix: u8, m16: u8) {
    match n {
        0..=15 => out.push(fix | n as u8),
        16..=0xffff => {
            out.push(m16);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(m16 + 1);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// A string, with its header in the shortest form.
fn put_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    match n {
        0..=31 => out.push(0xa0 | n as u8),
        32..=0xff => out.extend_from_slice(&[0xd9, n as u8]),
        0x100..=0xffff => {
            out.push(0xda);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdb);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{"i": n, "e": "x"}`.
    fn frame(n: u8) -> Vec<u8> {
        vec![0x82, 0xa1, b'i', n, 0xa1, b'e', 0xa1, b'x']
    }

    /// The frames of `payload` as the sink got them, and what the decoder gave.
    fn sunk(
        payload: &[u8],
    ) -> (
        Vec<Result<u32, ProtocolError>>,
        Result<Decoded, ProtocolError>,
    ) {
        let mut frames = Vec::new();
        let decoded = MsgPack.decode_message(payload, &mut |f| frames.push(f.map(|f| f.id)));
        (frames, decoded)
    }

    #[test]
    fn a_bulk_hands_every_element_to_the_sink_in_order_and_a_single_frame_none() {
        let mut bulk = vec![0x94];
        bulk.extend(frame(1));
        bulk.push(0xc0);
        bulk.extend(frame(2));
        bulk.push(0x07);
        let (frames, decoded) = sunk(&bulk);
        assert_eq!(decoded, Ok(Decoded::Bulk(4)));
        assert_eq!(
            frames,
            [
                Ok(1),
                Err(ProtocolError::NotAFrame {
                    index: 1,
                    found: "nil"
                }),
                Ok(2),
                Err(ProtocolError::NotAFrame {
                    index: 3,
                    found: "an integer"
                }),
            ]
        );

        let (frames, decoded) = sunk(&frame(3));
        assert!(frames.is_empty());
        assert!(matches!(decoded, Ok(Decoded::Single(Ok(f))) if f.id == 3));
    }

    #[test]
    fn a_bulk_that_breaks_off_hands_over_the_frames_before_the_break() {
        let mut cut = vec![0x93];
        cut.extend(frame(1));
        cut.extend(frame(2));
        let mut trailing = vec![0x92];
        trailing.extend(frame(1));
        trailing.extend(frame(2));
        trailing.push(0xc0);
        // 16 million elements announced, two there.
        let mut short = vec![0xdd, 0x01, 0x00, 0x00, 0x00];
        short.extend(frame(1));
        short.extend(frame(2));
        for payload in [cut, trailing, short] {
            let (frames, decoded) = sunk(&payload);
            assert_eq!(frames, [Ok(1), Ok(2)]);
            assert!(
                matches!(decoded, Err(ProtocolError::Undecodable { .. })),
                "{decoded:?}"
            );
        }
    }

    /// The frame's markers are written by hand; they must be what rmp writes,
    /// in the shortest form, at every boundary between forms.
    #[test]
    fn hand_written_markers_are_rmps_shortest_forms() {
        let numbers = [
            0u32,
            1,
            15,
            16,
            31,
            32,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            u32::MAX,
        ];
        for n in numbers {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            put_uint(&mut ours, n);
            rmp::encode::write_uint(&mut theirs, n as u64).unwrap();
            assert_eq!(ours, theirs, "uint {n}");

            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            put_len(&mut ours, n, 0x80, 0xde);
            rmp::encode::write_map_len(&mut theirs, n).unwrap();
            assert_eq!(ours, theirs, "map of {n}");

            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            put_len(&mut ours, n, 0x90, 0xdc);
            rmp::encode::write_array_len(&mut theirs, n).unwrap();
            assert_eq!(ours, theirs, "array of {n}");
        }
        for n in [0usize, 1, 31, 32, 255, 256, 65_535, 65_536, 70_000] {
            let text = "x".repeat(n);
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            put_str(&mut ours, &text);
            rmp::encode::write_str(&mut theirs, &text).unwrap();
            assert_eq!(ours, theirs, "string of {n}");
        }
    }
}
