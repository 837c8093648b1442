//! The wire model: event frames, response frames and bulk messages, and their validation.
//!
//! A codec parses a message into [`FrameFields`] (the keys it found, with their
//! types checked); [`FrameFields::validate`] turns those into a [`Frame`] by the
//! rules of the protocol, the same for every codec. Arguments that are data stay
//! undecoded (byte ranges into the message) until a handler asks for them, so a
//! typed handler deserializes them straight into its own types.

use std::ops::Range;

pub use compact_str::CompactString;
pub use smallvec::SmallVec;

use crate::error::ProtocolError;

// The lists of a received frame, inline up to two entries: nearly every frame
// has one or two data arguments and at most one callback, so decoding it takes
// no allocation for them. They dereference to slices, so reading them is as
// with a `Vec`. Two, not more: a `Frame` is moved several times on its way from
// the codec to its handler, and inline room for 3 ranges and 4 positions cost
// more in those copies than it saved (`fire` 3% slower than with two).

/// Byte ranges of a frame's data arguments within the message.
pub type DataRanges = SmallVec<[Range<usize>; 2]>;

/// A frame's callback positions as received (`c`), before validation.
pub type RawPositions = SmallVec<[u64; 2]>;

/// A frame's callback positions, validated.
pub type Positions = SmallVec<[u32; 2]>;

/// The default time a sender keeps a frame's callbacks alive, in seconds (`t` absent).
pub const DEFAULT_TIMEOUT_SECS: f64 = 15.0;

/// The largest frame id; the counter wraps from here back to 1.
pub const MAX_ID: u32 = 1_000_000_000;

/// How many frame errors [`Error::MalformedFrames`](crate::Error::MalformedFrames)
/// keeps of a bulk message whose frames are bad: the first 3. The others are
/// counted only, so a bulk of millions of bad frames costs one small report.
pub const REPORTED_FRAME_ERRORS: usize = 3;

/// The keys of one frame, as a codec found them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FrameFields {
    /// `i`: the frame id.
    pub id: Option<u64>,
    /// `e`: the event name.
    pub event: Option<CompactString>,
    /// `a`: byte ranges of the data arguments within the message.
    pub data: Option<DataRanges>,
    /// `c`: callback positions.
    pub callbacks: Option<RawPositions>,
    /// `t`: callback lifetime in seconds.
    pub timeout: Option<f64>,
    /// `r`: the frame a response answers.
    pub reply_to: Option<u64>,
    /// `f`: the callback position a response invokes.
    pub position: Option<u64>,
}

/// What a frame is: an event, or a response that invokes a callback.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameKind {
    /// An event frame, with its name (held inline up to 24 bytes, so a
    /// received event takes no allocation for it).
    Event(CompactString),
    /// A response: invokes the callback at `position` of the frame `to`.
    Response {
        /// The id of the frame whose callback is invoked (`r`).
        to: u32,
        /// The callback's position in that frame's argument list (`f`).
        position: u32,
    },
}

/// One validated frame of a received message.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The frame id (`i`).
    pub id: u32,
    /// Event or response.
    pub kind: FrameKind,
    /// Byte ranges of the data arguments within the message (`a`).
    pub data: DataRanges,
    /// Callback positions, strictly ascending, within the full argument list (`c`).
    pub callbacks: Positions,
    /// Seconds the sender keeps this frame's callbacks (`t`), if given.
    pub timeout: Option<f64>,
}

impl Frame {
    /// Length of the full argument list: data and callbacks.
    pub fn arg_count(&self) -> usize {
        self.data.len() + self.callbacks.len()
    }
}

fn id_u32(key: &'static str, v: u64) -> Result<u32, ProtocolError> {
    u32::try_from(v).map_err(|_| ProtocolError::WrongType {
        key,
        expected: "an unsigned integer below 2^32",
    })
}

impl FrameFields {
    /// Applies the protocol's rules: `i` required; `e` makes an event (but an
    /// empty `e` beside `r` does not), else `r` and `f` are required; callback positions strictly ascending and within the
    /// argument list; `t` a finite, non-negative number.
    #[inline]
    pub fn validate(self) -> Result<Frame, ProtocolError> {
        let id = id_u32("i", self.id.ok_or(ProtocolError::MissingKey { key: "i" })?)?;
        // The original's first release and its TCP stack write `e: ""` on
        // every response: with `r`, an empty event name is no event.
        let event = self
            .event
            .filter(|name| !(name.is_empty() && self.reply_to.is_some()));
        let kind = match event {
            Some(name) => FrameKind::Event(name),
            None => match (self.reply_to, self.position) {
                (Some(r), Some(f)) => FrameKind::Response {
                    to: id_u32("r", r)?,
                    position: id_u32("f", f)?,
                },
                (None, None) => return Err(ProtocolError::NeitherEventNorResponse),
                (None, Some(_)) => return Err(ProtocolError::MissingKey { key: "r" }),
                (Some(_), None) => return Err(ProtocolError::MissingKey { key: "f" }),
            },
        };
        let data = self.data.unwrap_or_default();
        let raw_callbacks = self.callbacks.unwrap_or_default();
        let len = data.len() + raw_callbacks.len();
        // Not `with_capacity`: it makes an out-of-line reserve call even when
        // the positions fit inline, as they nearly always do.
        let mut callbacks = Positions::new();
        if raw_callbacks.len() > callbacks.inline_size() {
            callbacks.reserve_exact(raw_callbacks.len());
        }
        for (n, &position) in raw_callbacks.iter().enumerate() {
            if n > 0 && position <= raw_callbacks[n - 1] {
                return Err(ProtocolError::CallbackOrder {
                    previous: raw_callbacks[n - 1],
                    next: position,
                });
            }
            if position >= len as u64 {
                return Err(ProtocolError::CallbackOutOfRange { position, len });
            }
            callbacks.push(position as u32);
        }
        if let Some(t) = self.timeout {
            if !t.is_finite() || t < 0.0 {
                return Err(ProtocolError::WrongType {
                    key: "t",
                    expected: "a finite, non-negative number of seconds",
                });
            }
        }
        Ok(Frame {
            id,
            kind,
            data,
            callbacks,
            timeout: self.timeout,
        })
    }
}

/// A decoded message, collected ([`Codec::decode_all`](crate::Codec::decode_all)):
/// one frame, or the frames of a bulk in order. Each frame is validated on its
/// own, so one malformed frame of a bulk does not take the others down. A
/// router does not collect a message: it routes each frame as it is decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A single frame.
    Single(Result<Frame, ProtocolError>),
    /// A bulk message: frames in the order they were sent.
    Bulk(Vec<Result<Frame, ProtocolError>>),
}

impl Message {
    /// The frames of the message, in order.
    pub fn into_frames(self) -> Vec<Result<Frame, ProtocolError>> {
        match self {
            Message::Single(f) => vec![f],
            Message::Bulk(fs) => fs,
        }
    }
}

/// What an outgoing frame is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutKind<'a> {
    /// An event with this name.
    Event(&'a str),
    /// A response invoking callback `position` of frame `to`.
    Response {
        /// `r`.
        to: u32,
        /// `f`.
        position: u32,
    },
}

/// An outgoing frame, handed to a codec for encoding.
pub struct OutFrame<'a> {
    /// `i`.
    pub id: u32,
    /// Event or response.
    pub kind: OutKind<'a>,
    /// The data arguments in order (`a`, an array); omitted only when the frame
    /// has no arguments at all, and `[]` when all its arguments are callbacks,
    /// as the original writes it. A codec writes the array itself and
    /// serializes each argument on its own, so an argument costs one pass
    /// through `erased_serde`, not two.
    pub data: &'a [&'a dyn erased_serde::Serialize],
    /// Callback positions (`c`); omitted when empty.
    pub callbacks: &'a [u32],
    /// `t` in seconds, written between `a` and `c`; omitted when `None`.
    pub timeout: Option<f64>,
}

impl OutFrame<'_> {
    /// Whether a codec writes `a`: whenever the frame has arguments, `[]`
    /// when all of them are callbacks, as the original writes it.
    pub fn writes_data(&self) -> bool {
        !self.data.is_empty() || !self.callbacks.is_empty()
    }

    /// `t` as a whole number of seconds, when it is one: JavaScript writes
    /// `3`, not `3.0`, and a codec writes such a `t` as an integer.
    pub fn timeout_whole_secs(&self) -> Option<u32> {
        self.timeout
            .filter(|t| t.fract() == 0.0 && *t >= 0.0 && *t < u32::MAX as f64)
            .map(|t| t as u32)
    }
}

impl std::fmt::Debug for OutFrame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutFrame")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("data", &self.data.len())
            .field("callbacks", &self.callbacks)
            .field("timeout", &self.timeout)
            .finish()
    }
}
