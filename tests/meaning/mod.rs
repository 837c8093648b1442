//! The meaning of a frame, independent of its encoding, shared by the wire
//! vector tests and the property tests: a frame's id, kind, full argument list
//! (callbacks in their positions) and timeout, and the two ways to it through
//! the public API: decoding a frame, and encoding one.

#![allow(dead_code)]

use nmsg::codec::decode_arg;
use nmsg::frame::{Frame, FrameKind, OutFrame, OutKind};
use nmsg::{Codec, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Event(String),
    Response { to: u32, position: u32 },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Data(Value),
    Callback,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FrameMeaning {
    pub id: u32,
    pub kind: Kind,
    /// The full argument list, callbacks in their positions.
    pub args: Vec<Arg>,
    pub timeout: Option<f64>,
}

/// What a decoded frame means; its data arguments decoded as [`Value`]s.
pub fn frame_meaning(codec: &dyn Codec, payload: &[u8], frame: &Frame) -> FrameMeaning {
    let mut data = frame.data.iter();
    let args = (0..frame.arg_count())
        .map(|pos| {
            if frame.callbacks.contains(&(pos as u32)) {
                Arg::Callback
            } else {
                let range = data.next().expect("as many data ranges as data positions");
                Arg::Data(decode_arg::<Value>(codec, &payload[range.clone()]).unwrap())
            }
        })
        .collect();
    FrameMeaning {
        id: frame.id,
        kind: match &frame.kind {
            FrameKind::Event(name) => Kind::Event(name.to_string()),
            FrameKind::Response { to, position } => Kind::Response {
                to: *to,
                position: *position,
            },
        },
        args,
        timeout: frame.timeout,
    }
}

/// Our encoder's bytes for a frame with this meaning.
pub fn encode_frame(codec: &dyn Codec, m: &FrameMeaning) -> Vec<u8> {
    let values: Vec<&Value> = m
        .args
        .iter()
        .filter_map(|a| match a {
            Arg::Data(v) => Some(v),
            Arg::Callback => None,
        })
        .collect();
    let callbacks: Vec<u32> = (0..m.args.len() as u32)
        .filter(|&p| m.args[p as usize] == Arg::Callback)
        .collect();
    let kind = match &m.kind {
        Kind::Event(name) => OutKind::Event(name),
        Kind::Response { to, position } => OutKind::Response {
            to: *to,
            position: *position,
        },
    };
    let frame = OutFrame {
        id: m.id,
        kind,
        data: &values
            .iter()
            .map(|v| v as &dyn erased_serde::Serialize)
            .collect::<Vec<_>>(),
        callbacks: &callbacks,
        timeout: m.timeout,
    };
    let mut out = Vec::new();
    codec.encode_frame(&frame, &mut out).unwrap();
    out
}
