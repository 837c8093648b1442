//! Reading a MsgPack message: a bounds-checked reader of frames, which leaves
//! each data argument as a byte range.

use super::super::MAX_DEPTH;
use crate::error::ProtocolError;
use crate::frame::{CompactString, DataRanges, Frame, FrameFields, RawPositions, SmallVec};

pub(super) fn undecodable(reason: impl Into<String>) -> ProtocolError {
    ProtocolError::Undecodable {
        codec: "msgpack",
        reason: reason.into(),
    }
}

/// The MsgPack nil marker.
pub(super) const NIL: u8 = 0xc0;

/// A frame's key: one of the protocol's, or one this version does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
    I,
    E,
    A,
    C,
    T,
    R,
    F,
    Unknown,
}

/// The kind of the next value, from its marker.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Nil,
    Bool,
    Uint(u64),
    Int(i64),
    Float(f64),
    Str(usize),
    Bin(usize),
    Array(u32),
    Map(u32),
    Ext(usize),
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Nil => "nil",
            Kind::Bool => "a boolean",
            Kind::Uint(_) | Kind::Int(_) => "an integer",
            Kind::Float(_) => "a float",
            Kind::Str(_) => "a string",
            Kind::Bin(_) => "binary data",
            Kind::Array(_) => "an array",
            Kind::Map(_) => "a map",
            Kind::Ext(_) => "an extension value",
        }
    }
}

/// A bounds-checked reader over one message. Never panics on any input.
///
/// The general [`Reader::header`] reads any value's header. The readers of a
/// frame's keys first try the few forms nmsg and the JavaScript implementation
/// write (one-letter fixstr keys, positive fixint and uint 8/16/32 ids, fixstr
/// event names, fixarray lists, bin 8/16 and str 8/16 arguments) by matching the
/// bytes directly, and fall back to `header` for everything else, so unusual
/// input gets the same results and errors as before, only more slowly.
pub(super) struct Reader<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
}

/// The error for a value that runs past the end of the message.
pub(super) fn cut_short() -> ProtocolError {
    undecodable("message ends in the middle of a value")
}

impl<'a> Reader<'a> {
    /// The bytes from the reader's position on (empty at the end).
    #[inline]
    pub(super) fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    pub(super) fn bytes(&self, at: usize, n: usize) -> Result<&'a [u8], ProtocolError> {
        at.checked_add(n)
            .and_then(|end| self.buf.get(at..end))
            .ok_or_else(cut_short)
    }

    /// The `N` bytes at `at`, for a big-endian number of a header.
    pub(super) fn be<const N: usize>(&self, at: usize) -> Result<[u8; N], ProtocolError> {
        self.buf
            .get(at..)
            .and_then(|rest| rest.first_chunk::<N>())
            .copied()
            .ok_or_else(cut_short)
    }

    /// Fails unless the reader is at the end of the message.
    pub(super) fn at_end(&self) -> Result<(), ProtocolError> {
        if self.pos != self.buf.len() {
            return Err(undecodable("trailing bytes after the message"));
        }
        Ok(())
    }

    /// Reads the marker and fixed-size header of the next value without moving;
    /// returns its kind and the header's length in bytes.
    pub(super) fn header(&self) -> Result<(Kind, usize), ProtocolError> {
        let p = self.pos;
        let byte = *self
            .buf
            .get(p)
            .ok_or_else(|| undecodable("message ends where a value should start"))?;
        let u8 = || self.be::<1>(p + 1).map(|[a]| a);
        let u16 = || self.be::<2>(p + 1).map(u16::from_be_bytes);
        let u32 = || self.be::<4>(p + 1).map(u32::from_be_bytes);
        let u64 = || self.be::<8>(p + 1).map(u64::from_be_bytes);
        // The markers of the MsgPack specification, in order.
        Ok(match byte {
            0x00..=0x7f => (Kind::Uint(byte as u64), 1),
            0x80..=0x8f => (Kind::Map((byte & 0x0f) as u32), 1),
            0x90..=0x9f => (Kind::Array((byte & 0x0f) as u32), 1),
            0xa0..=0xbf => (Kind::Str((byte & 0x1f) as usize), 1),
            0xc0 => (Kind::Nil, 1),
            0xc1 => return Err(undecodable("reserved marker 0xc1")),
            0xc2 | 0xc3 => (Kind::Bool, 1),
            0xc4 => (Kind::Bin(u8()? as usize), 2),
            0xc5 => (Kind::Bin(u16()? as usize), 3),
            0xc6 => (Kind::Bin(u32()? as usize), 5),
            // ext: the type byte counts as payload here
            0xc7 => (Kind::Ext(u8()? as usize + 1), 2),
            0xc8 => (Kind::Ext(u16()? as usize + 1), 3),
            0xc9 => (Kind::Ext(u32()? as usize + 1), 5),
            0xca => (Kind::Float(f32::from_bits(u32()?) as f64), 5),
            0xcb => (Kind::Float(f64::from_bits(u64()?)), 9),
            0xcc => (Kind::Uint(u8()? as u64), 2),
            0xcd => (Kind::Uint(u16()? as u64), 3),
            0xce => (Kind::Uint(u32()? as u64), 5),
            0xcf => (Kind::Uint(u64()?), 9),
            0xd0 => (Kind::Int(u8()? as i8 as i64), 2),
            0xd1 => (Kind::Int(u16()? as i16 as i64), 3),
            0xd2 => (Kind::Int(u32()? as i32 as i64), 5),
            0xd3 => (Kind::Int(u64()? as i64), 9),
            0xd4 => (Kind::Ext(2), 1),
            0xd5 => (Kind::Ext(3), 1),
            0xd6 => (Kind::Ext(5), 1),
            0xd7 => (Kind::Ext(9), 1),
            0xd8 => (Kind::Ext(17), 1),
            0xd9 => (Kind::Str(u8()? as usize), 2),
            0xda => (Kind::Str(u16()? as usize), 3),
            0xdb => (Kind::Str(u32()? as usize), 5),
            0xdc => (Kind::Array(u16()? as u32), 3),
            0xdd => (Kind::Array(u32()?), 5),
            0xde => (Kind::Map(u16()? as u32), 3),
            0xdf => (Kind::Map(u32()?), 5),
            0xe0..=0xff => (Kind::Int(byte as i8 as i64), 1),
        })
    }

    /// The kind of the next value, without moving. Messages and bulk elements
    /// are nearly always a fixmap or a fixarray: those are read here.
    #[inline]
    pub(super) fn peek(&self) -> Result<Kind, ProtocolError> {
        Ok(match *self.rest() {
            [b @ 0x80..=0x8f, ..] => Kind::Map((b & 0x0f) as u32),
            [b @ 0x90..=0x9f, ..] => Kind::Array((b & 0x0f) as u32),
            _ => self.header()?.0,
        })
    }

    /// Moves past the header of the next value (for containers: to their first element).
    pub(super) fn advance_header(&mut self) -> Result<Kind, ProtocolError> {
        let (kind, len) = self.header()?;
        self.pos += len;
        Ok(kind)
    }

    /// The whole length of the next value, marker to end, when it is a scalar,
    /// or a string or binary data of at most 64 KiB; `None` for anything else,
    /// and when the header itself is cut short (the general path reports that).
    /// A payload cut short is left to the caller's bounds check, which gives the
    /// same error as the general path.
    #[inline]
    pub(super) fn scalar_len(&self) -> Option<usize> {
        Some(match *self.rest() {
            [0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff, ..] => 1,
            [b @ 0xa0..=0xbf, ..] => 1 + (b & 0x1f) as usize,
            [0xc4 | 0xd9, n, ..] => 2 + n as usize,
            [0xc5 | 0xda, a, b, ..] => 3 + u16::from_be_bytes([a, b]) as usize,
            [0xcc | 0xd0, ..] => 2,
            [0xcd | 0xd1, ..] => 3,
            [0xca | 0xce | 0xd2, ..] => 5,
            [0xcb | 0xcf | 0xd3, ..] => 9,
            _ => return None,
        })
    }

    /// Skips one whole value, without recursion. `depth` is the nesting level the
    /// value stands at; containers deeper than [`MAX_DEPTH`] are an error.
    ///
    /// Most skipped values (data arguments, unknown keys) are scalars, strings
    /// or binary data: those take one bounds check here, inlined, and only the
    /// rest go to the loop of [`Reader::skip_general`].
    #[inline]
    pub(super) fn skip(&mut self, depth: usize) -> Result<(), ProtocolError> {
        match self.scalar_len() {
            Some(len) => {
                self.bytes(self.pos, len)?;
                self.pos += len;
                Ok(())
            }
            None => self.skip_general(depth),
        }
    }

    /// [`Reader::skip`] for any value.
    #[inline(never)]
    pub(super) fn skip_general(&mut self, depth: usize) -> Result<(), ProtocolError> {
        // The counts of the containers open around the value at hand: inline
        // for the nesting of frames in a bulk, so checking a bulk allocates
        // nothing.
        let mut open: SmallVec<[u64; 8]> = SmallVec::new();
        let mut left: u64 = 1;
        loop {
            // Scalars, strings and binary up to 64 KiB, by their first bytes
            // (most of a frame's values), before the general header.
            if let Some(len) = self.scalar_len() {
                self.bytes(self.pos, len)?;
                self.pos += len;
                left -= 1;
                while left == 0 {
                    match open.pop() {
                        Some(l) => left = l,
                        None => return Ok(()),
                    }
                }
                continue;
            }
            let kind = self.advance_header()?;
            left -= 1;
            let children = match kind {
                Kind::Str(n) | Kind::Bin(n) | Kind::Ext(n) => {
                    self.bytes(self.pos, n)?;
                    self.pos += n;
                    0
                }
                Kind::Array(n) => n as u64,
                Kind::Map(n) => 2 * n as u64,
                _ => 0,
            };
            // An empty container counts as a level too, as it does for JSON.
            if matches!(kind, Kind::Array(_) | Kind::Map(_)) && depth + open.len() > MAX_DEPTH {
                return Err(ProtocolError::TooDeep { limit: MAX_DEPTH });
            }
            if children > 0 {
                open.push(left);
                left = children;
            }
            while left == 0 {
                match open.pop() {
                    Some(l) => left = l,
                    None => return Ok(()),
                }
            }
        }
    }

    /// At a map of one entry keyed `"b"` whose value is an array (a bulk of
    /// the original's first release, `{"b": [frames]}`): moves to the array
    /// and says yes. Anything else (a frame, nearly always) leaves the reader
    /// where it is.
    pub(super) fn enter_keyed_bulk(&mut self) -> Result<bool, ProtocolError> {
        let start = self.pos;
        if let (Kind::Map(1), hlen) = self.header()? {
            self.pos += hlen;
            if self.key_str()? == Some(b"b") && matches!(self.peek()?, Kind::Array(_)) {
                return Ok(true);
            }
        }
        self.pos = start;
        Ok(false)
    }

    /// Reads the `n` bytes of a string; `Ok(None)` if they are not UTF-8. The
    /// reader is past them either way: a bad string spoils its frame, not the
    /// frames after it.
    pub(super) fn str(&mut self, n: usize) -> Result<Option<&'a str>, ProtocolError> {
        let bytes = self.bytes(self.pos, n)?;
        self.pos += n;
        Ok(std::str::from_utf8(bytes).ok())
    }

    /// Reads a key in any form but a one-letter fixstr: its bytes if it is a
    /// string, with the reader past it; `None` if it is not a string, with the
    /// reader still before it.
    pub(super) fn key_str(&mut self) -> Result<Option<&'a [u8]>, ProtocolError> {
        let (kind, hlen) = self.header()?;
        let Kind::Str(len) = kind else {
            return Ok(None);
        };
        self.pos += hlen;
        let raw = self.bytes(self.pos, len)?;
        self.pos += len;
        Ok(Some(raw))
    }

    /// Reads a frame map at nesting level `depth`. Structural damage is an
    /// `Err` for the whole message; a frame whose keys have the wrong types is an
    /// `Ok(Err(..))`, with the reader past the frame so the next one can be read.
    pub(super) fn frame(
        &mut self,
        depth: usize,
    ) -> Result<Result<Frame, ProtocolError>, ProtocolError> {
        let n = match *self.rest() {
            [b @ 0x80..=0x8f, ..] => {
                self.pos += 1;
                (b & 0x0f) as u32
            }
            _ => match self.advance_header()? {
                Kind::Map(n) => n,
                other => {
                    return Ok(Err(ProtocolError::NotAMessage {
                        found: other.name(),
                    }))
                }
            },
        };
        let mut fields = FrameFields::default();
        let mut error: Option<ProtocolError> = None;
        let d = depth + 1;
        for _ in 0..n {
            let raw = match self.rest() {
                // The protocol's keys are one-letter fixstrs.
                [0xa1, k, ..] => {
                    self.pos += 2;
                    std::slice::from_ref(k)
                }
                _ => match self.key_str()? {
                    Some(raw) => raw,
                    None => {
                        self.skip(d)?;
                        self.skip(d)?;
                        error.get_or_insert(ProtocolError::WrongType {
                            key: "(keys)",
                            expected: "a string",
                        });
                        continue;
                    }
                },
            };
            // Matched as bytes, with no UTF-8 check for the protocol's keys
            // (they pass it by construction). One-element slice patterns
            // measured a little cheaper than byte-string ones.
            let key = match *raw {
                [b'i'] => Key::I,
                [b'e'] => Key::E,
                [b'a'] => Key::A,
                [b'c'] => Key::C,
                [b't'] => Key::T,
                [b'r'] => Key::R,
                [b'f'] => Key::F,
                _ if std::str::from_utf8(raw).is_ok() => Key::Unknown,
                _ => {
                    self.skip(d)?;
                    error.get_or_insert(ProtocolError::WrongType {
                        key: "(keys)",
                        expected: "a UTF-8 string",
                    });
                    continue;
                }
            };
            // As in the original (`data.a && ...`) and the JSON codec, a key
            // whose value is nil counts as absent.
            if key != Key::Unknown && self.rest().first() == Some(&NIL) {
                self.pos += 1;
                continue;
            }
            let found = match key {
                Key::I => self.uint("i", d)?.and_then(|v| set(&mut fields.id, v, "i")),
                Key::R => self
                    .uint("r", d)?
                    .and_then(|v| set(&mut fields.reply_to, v, "r")),
                Key::F => self
                    .uint("f", d)?
                    .and_then(|v| set(&mut fields.position, v, "f")),
                Key::T => self
                    .number("t", d)?
                    .and_then(|v| set(&mut fields.timeout, v, "t")),
                Key::E => self
                    .string("e", d)?
                    .and_then(|v| set(&mut fields.event, v, "e")),
                Key::C => self
                    .uints(d)?
                    .and_then(|v| set(&mut fields.callbacks, v, "c")),
                Key::A => self.ranges(d)?.and_then(|v| set(&mut fields.data, v, "a")),
                // Unknown keys are skipped: a later protocol version may add some.
                Key::Unknown => self.skip(d).map(Ok)?,
            };
            if let Err(e) = found {
                error.get_or_insert(e);
            }
        }
        Ok(match error {
            Some(e) => Err(e),
            None => fields.validate(),
        })
    }

    pub(super) fn wrong(
        &mut self,
        depth: usize,
        key: &'static str,
        expected: &'static str,
    ) -> Result<ProtocolError, ProtocolError> {
        self.skip(depth)?;
        Ok(ProtocolError::WrongType { key, expected })
    }

    /// Reads an unsigned integer: positive fixint and uint 8/16/32 here, any
    /// other form in [`Reader::uint_general`]. Always inlined: called out of
    /// line, returning the nested `Result` through memory cost as much as the
    /// read itself.
    #[inline(always)]
    pub(super) fn uint(
        &mut self,
        key: &'static str,
        depth: usize,
    ) -> Result<Result<u64, ProtocolError>, ProtocolError> {
        let (v, len) = match *self.rest() {
            [b @ 0x00..=0x7f, ..] => (b as u64, 1),
            [0xcc, a, ..] => (a as u64, 2),
            [0xcd, a, b, ..] => (u16::from_be_bytes([a, b]) as u64, 3),
            [0xce, a, b, c, d, ..] => (u32::from_be_bytes([a, b, c, d]) as u64, 5),
            _ => return self.uint_general(key, depth),
        };
        self.pos += len;
        Ok(Ok(v))
    }

    #[inline(never)]
    pub(super) fn uint_general(
        &mut self,
        key: &'static str,
        depth: usize,
    ) -> Result<Result<u64, ProtocolError>, ProtocolError> {
        let (kind, hlen) = self.header()?;
        match kind {
            Kind::Uint(v) => {
                self.pos += hlen;
                Ok(Ok(v))
            }
            Kind::Int(v) if v >= 0 => {
                self.pos += hlen;
                Ok(Ok(v as u64))
            }
            _ => Ok(Err(self.wrong(depth, key, "an unsigned integer")?)),
        }
    }

    pub(super) fn number(
        &mut self,
        key: &'static str,
        depth: usize,
    ) -> Result<Result<f64, ProtocolError>, ProtocolError> {
        let (kind, hlen) = self.header()?;
        let v = match kind {
            Kind::Uint(v) => v as f64,
            Kind::Int(v) => v as f64,
            Kind::Float(v) => v,
            _ => return Ok(Err(self.wrong(depth, key, "a number")?)),
        };
        self.pos += hlen;
        Ok(Ok(v))
    }

    pub(super) fn string(
        &mut self,
        key: &'static str,
        depth: usize,
    ) -> Result<Result<CompactString, ProtocolError>, ProtocolError> {
        let (len, hlen) = match *self.rest() {
            [b @ 0xa0..=0xbf, ..] => ((b & 0x1f) as usize, 1),
            _ => match self.header()? {
                (Kind::Str(len), hlen) => (len, hlen),
                _ => return Ok(Err(self.wrong(depth, key, "a string")?)),
            },
        };
        self.pos += hlen;
        Ok(self
            .str(len)?
            .map(CompactString::from)
            .ok_or(ProtocolError::WrongType {
                key,
                expected: "a UTF-8 string",
            }))
    }

    /// The length of the array that comes next and its header's length, with
    /// fixarray read here; `None` if the next value is not an array.
    #[inline]
    pub(super) fn array_header(&self) -> Result<Option<(u32, usize)>, ProtocolError> {
        if let [b @ 0x90..=0x9f, ..] = *self.rest() {
            return Ok(Some(((b & 0x0f) as u32, 1)));
        }
        Ok(match self.header()? {
            (Kind::Array(n), hlen) => Some((n, hlen)),
            _ => None,
        })
    }

    pub(super) fn uints(
        &mut self,
        depth: usize,
    ) -> Result<Result<RawPositions, ProtocolError>, ProtocolError> {
        let Some((n, hlen)) = self.array_header()? else {
            return Ok(Err(self.wrong(
                depth,
                "c",
                "an array of unsigned integers",
            )?));
        };
        self.pos += hlen;
        let mut out: RawPositions = small_vec((n as usize).min(64));
        let mut bad = false;
        for _ in 0..n {
            match self.uint("c", depth + 1)? {
                Ok(v) => out.push(v),
                Err(_) => bad = true,
            }
        }
        Ok(if bad {
            Err(ProtocolError::WrongType {
                key: "c",
                expected: "an array of unsigned integers",
            })
        } else {
            Ok(out)
        })
    }

    pub(super) fn ranges(
        &mut self,
        depth: usize,
    ) -> Result<Result<DataRanges, ProtocolError>, ProtocolError> {
        let Some((n, hlen)) = self.array_header()? else {
            return Ok(Err(self.wrong(depth, "a", "an array")?));
        };
        if depth > MAX_DEPTH {
            return Err(ProtocolError::TooDeep { limit: MAX_DEPTH });
        }
        self.pos += hlen;
        let mut out: DataRanges = small_vec((n as usize).min(64));
        for _ in 0..n {
            let start = self.pos;
            self.skip(depth + 1)?;
            out.push(start..self.pos);
        }
        Ok(Ok(out))
    }
}

/// `SmallVec::with_capacity(n)`, without the out-of-line reserve call it
/// makes even when `n` fits inline (nearly always, for a frame's lists).
#[inline]
pub(super) fn small_vec<A: smallvec::Array>(n: usize) -> SmallVec<A> {
    let mut v = SmallVec::new();
    if n > v.inline_size() {
        v.reserve_exact(n);
    }
    v
}

pub(super) fn set<T>(slot: &mut Option<T>, v: T, key: &'static str) -> Result<(), ProtocolError> {
    if slot.is_some() {
        return Err(ProtocolError::DuplicateKey { key });
    }
    *slot = Some(v);
    Ok(())
}
