//! Decoding a hostile message: a bulk of millions of elements costs memory
//! for what is routed, not for its element count, and its bad frames reach
//! the error hook as one summary.
//!
//! Memory is counted per thread by the allocator of `alloc_support`: `Link::dispatch`
//! decodes and routes on the caller's thread, sync handlers and the error hook
//! included.

mod alloc_support;

use alloc_support::peak_growth;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use nmsg::codec::encode_bulk;
use nmsg::frame::REPORTED_FRAME_ERRORS;
use nmsg::{Args, Codec, Error, Json, MsgPack, ProtocolError, Router, Value};

const MIB: isize = 1 << 20;

// ----- a router that records what it serves and reports -----

/// What the router did, in order: `ok` events served (by their argument)
/// and errors reported.
#[derive(Debug)]
enum Seen {
    Served(u32),
    Error(Error),
}

struct Harness {
    router: Router,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Every call of the error hook, kept or not.
    hook_calls: Arc<Mutex<usize>>,
}

/// A router with an `ok(n)` handler and an error hook. The hook keeps only
/// the first few errors, so that a hook called millions of times (as the
/// old decoder called it) does not itself grow the heap.
fn harness(codec: impl Codec) -> Harness {
    let router = Router::builder().codec(codec).build();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hook_calls = Arc::new(Mutex::new(0));
    let (s, calls) = (seen.clone(), hook_calls.clone());
    router.on_error(move |e| {
        let mut calls = calls.lock().unwrap();
        *calls += 1;
        if *calls <= 4 {
            s.lock().unwrap().push(Seen::Error(e));
        }
    });
    let s = seen.clone();
    router.on("ok", move |args: Args| -> Result<(), Error> {
        s.lock().unwrap().push(Seen::Served(args.get(0)?));
        Ok(())
    });
    Harness {
        router,
        seen,
        hook_calls,
    }
}

impl Harness {
    fn dispatch(&self, payload: Vec<u8>) {
        self.router.link().dispatch(Bytes::from(payload));
    }

    fn hook_calls(&self) -> usize {
        *self.hook_calls.lock().unwrap()
    }

    fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// The one error reported, which must be a summary: its count and first errors.
    fn summary(&self) -> (usize, Vec<ProtocolError>) {
        assert_eq!(self.hook_calls(), 1, "one report for the whole message");
        match self.take_seen().pop() {
            Some(Seen::Error(Error::MalformedFrames { count, first })) => (count, first),
            other => panic!("expected a MalformedFrames summary, got {other:?}"),
        }
    }
}

// ----- a bulk of millions of elements -----

/// Elements of the MsgPack bulk: its array header (`0xdd`, a 32-bit count)
/// and one byte per element make a message just under 16 MiB.
const NILS: usize = 16_777_200;

/// Elements of the JSON bulk `[0,0,…]`: two bytes each, just under 16 MiB.
const ZEROS: usize = 8_388_600;

fn msgpack_bulk_of_nils() -> Vec<u8> {
    let mut payload = Vec::with_capacity(5 + NILS);
    payload.push(0xdd);
    payload.extend_from_slice(&(NILS as u32).to_be_bytes());
    payload.resize(5 + NILS, 0xc0);
    payload
}

fn json_bulk_of_zeros() -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 * ZEROS + 1);
    payload.push(b'[');
    for n in 0..ZEROS {
        if n > 0 {
            payload.push(b',');
        }
        payload.push(b'0');
    }
    payload.push(b']');
    payload
}

/// Dispatches `payload`, a bulk of `count` elements that are not frames (each
/// `found`), through a router of `codec`: the heap grows by less than 64 MiB
/// and the error hook gets one summary with the first elements' errors.
fn costs_little_memory_and_one_report(
    codec: impl Codec,
    payload: Vec<u8>,
    count: usize,
    found: &'static str,
) {
    let h = harness(codec);
    let growth = peak_growth(|| h.dispatch(payload));
    assert!(
        growth < 64 * MIB,
        "dispatching the bulk grew the heap by {} MiB",
        growth / MIB
    );
    let (reported, first) = h.summary();
    assert_eq!(reported, count);
    let expected: Vec<ProtocolError> = (0..REPORTED_FRAME_ERRORS)
        .map(|index| ProtocolError::NotAFrame { index, found })
        .collect();
    assert_eq!(first, expected);
}

#[test]
fn a_16_mib_msgpack_bulk_of_nils_costs_little_memory_and_one_report() {
    costs_little_memory_and_one_report(MsgPack, msgpack_bulk_of_nils(), NILS, "nil");
}

#[test]
fn a_16_mib_json_bulk_of_zeros_costs_little_memory_and_one_report() {
    costs_little_memory_and_one_report(Json, json_bulk_of_zeros(), ZEROS, "a number");
}

// ----- good and bad frames mixed -----

fn mp(v: Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &v).unwrap();
    out
}

fn mp_map(entries: Vec<(&str, Value)>) -> Vec<u8> {
    mp(Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    ))
}

fn mp_ok(n: u32) -> Vec<u8> {
    mp_map(vec![
        ("i", Value::from(n)),
        ("e", Value::from("ok")),
        ("a", Value::Array(vec![Value::from(n)])),
    ])
}

fn json_ok(n: u32) -> Vec<u8> {
    format!(r#"{{"i":{n},"e":"ok","a":[{n}]}}"#).into_bytes()
}

/// The elements of the mixed bulk, for a codec: good frames `ok(1)` to
/// `ok(4)` with five bad elements between and after them.
struct Mixed {
    ok: fn(u32) -> Vec<u8>,
    nil: Vec<u8>,
    i_is_a_string: Vec<u8>,
    number: Vec<u8>,
    no_i: Vec<u8>,
    /// What the codec calls a number.
    number_kind: &'static str,
    /// What the codec calls nil.
    nil_kind: &'static str,
}

fn mixed_msgpack() -> Mixed {
    Mixed {
        ok: mp_ok,
        nil: mp(Value::Nil),
        i_is_a_string: mp_map(vec![("i", Value::from("1")), ("e", Value::from("ok"))]),
        number: mp(Value::from(5)),
        no_i: mp_map(vec![("e", Value::from("ok"))]),
        number_kind: "an integer",
        nil_kind: "nil",
    }
}

fn mixed_json() -> Mixed {
    Mixed {
        ok: json_ok,
        nil: b"null".to_vec(),
        i_is_a_string: br#"{"i":"1","e":"ok"}"#.to_vec(),
        number: b"5".to_vec(),
        no_i: br#"{"e":"ok"}"#.to_vec(),
        number_kind: "a number",
        nil_kind: "null",
    }
}

fn good_and_bad_frames(codec: impl Codec + Copy, m: Mixed) {
    let h = harness(codec);
    let ok = m.ok;
    let (ok1, ok2, ok3, ok4) = (ok(1), ok(2), ok(3), ok(4));
    let elements: [&[u8]; 9] = [
        &ok1,
        &m.nil,
        &ok2,
        &m.i_is_a_string,
        &ok3,
        &m.number,
        &m.nil,
        &ok4,
        &m.no_i,
    ];
    h.dispatch(encode_bulk(&codec, &elements));
    let seen = h.take_seen();
    let name = codec.name();
    let served: Vec<u32> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Served(n) => Some(*n),
            Seen::Error(_) => None,
        })
        .collect();
    assert_eq!(served, [1, 2, 3, 4], "{name}: every good frame, in order");
    assert_eq!(h.hook_calls(), 1, "{name}: one report: {seen:?}");
    match seen.last() {
        Some(Seen::Error(Error::MalformedFrames { count, first })) => {
            assert_eq!(*count, 5, "{name}");
            assert_eq!(
                first[..],
                [
                    ProtocolError::NotAFrame {
                        index: 1,
                        found: m.nil_kind
                    },
                    ProtocolError::WrongType {
                        key: "i",
                        expected: "an unsigned integer"
                    },
                    ProtocolError::NotAFrame {
                        index: 5,
                        found: m.number_kind
                    },
                ],
                "{name}: the first {REPORTED_FRAME_ERRORS} errors, in order"
            );
        }
        other => panic!("{name}: the summary comes last, got {other:?} in {seen:?}"),
    }
}

#[test]
fn a_msgpack_bulk_of_good_and_bad_frames_routes_the_good_in_order_and_reports_one_summary() {
    good_and_bad_frames(MsgPack, mixed_msgpack());
}

#[test]
fn a_json_bulk_of_good_and_bad_frames_routes_the_good_in_order_and_reports_one_summary() {
    good_and_bad_frames(Json, mixed_json());
}

/// Frames are routed as they are decoded, each checked on its own: a bulk
/// that breaks off partway has the frames before the break routed, then the
/// break reported once (and not the frames after it).
#[test]
fn a_bulk_broken_near_its_end_routes_the_frames_before_the_break_and_reports_it() {
    let (ok1, ok2) = (mp_ok(1), mp_ok(2));
    let mut cut = mp_ok(3);
    cut.pop();
    let (j1, j2) = (json_ok(1), json_ok(2));
    let broken: [(&dyn Codec, Vec<u8>); 3] = [
        (&MsgPack, encode_bulk(&MsgPack, &[&ok1, &ok2, &cut])),
        (&MsgPack, {
            let mut trailing = encode_bulk(&MsgPack, &[&ok1, &ok2]);
            trailing.push(0xc0);
            trailing
        }),
        (&Json, {
            let mut unclosed = encode_bulk(&Json, &[&j1, &j2]);
            unclosed.pop();
            unclosed
        }),
    ];
    for (codec, payload) in broken {
        let h = match codec.name() {
            "json" => harness(Json),
            _ => harness(MsgPack),
        };
        h.dispatch(payload);
        let seen = h.take_seen();
        assert!(
            matches!(
                &seen[..],
                [
                    Seen::Served(1),
                    Seen::Served(2),
                    Seen::Error(Error::Protocol(ProtocolError::Undecodable { .. }))
                ]
            ),
            "{}: the two whole frames, then one error: {seen:?}",
            codec.name()
        );
    }
}
