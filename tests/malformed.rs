//! Bad input: malformed messages for each codec, fed to `Link::dispatch`,
//! each reaching the error hook with the expected error while the router goes
//! on serving the valid frames that follow (in the same bulk, for faults of a
//! single frame); and broken stream framing, which closes only its own
//! connection.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::mpsc;

use bytes::Bytes;
use nmsg::transport::memory::Network;
use nmsg::transport::{BoxStream, CloseReason, Connection, Connector};
use nmsg::{
    args, Args, Client, Codec, Error, FramingError, Json, MsgPack, ProtocolError, RemoteCallback,
    Router, Server, ServerEvent, Value,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;
use tokio::sync::mpsc::UnboundedReceiver;

// ----- a probe for the largest allocation made on the current thread -----

/// Passes every allocation to the system allocator, remembering the largest
/// one each thread asked for, so a test can show that a length prefix
/// claiming 2 GiB allocates nothing of the kind.
struct Probe;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

unsafe impl GlobalAlloc for Probe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static PROBE: Probe = Probe;

fn largest_allocation_since_reset<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(|l| l.get()))
}

// ----- the router under test -----

struct Harness {
    router: Router,
    errors: mpsc::Receiver<Error>,
    served: mpsc::Receiver<u32>,
}

/// A router with an error hook and an `ok(n)` handler, both feeding channels.
/// Sync handlers and the hook run inside `dispatch`, so after it returns the
/// channels hold everything it did.
fn harness(codec: impl Codec) -> Harness {
    let router = Router::builder().codec(codec).build();
    let (err_tx, errors) = mpsc::channel();
    router.on_error(move |e| {
        let _ = err_tx.send(e);
    });
    let (ok_tx, served) = mpsc::channel();
    router.on("ok", move |args: Args| -> Result<(), Error> {
        let _ = ok_tx.send(args.get(0)?);
        Ok(())
    });
    Harness {
        router,
        errors,
        served,
    }
}

impl Harness {
    fn errors(&self) -> Vec<Error> {
        self.errors.try_iter().collect()
    }
    fn served(&self) -> Vec<u32> {
        self.served.try_iter().collect()
    }
}

type Expect = fn(&ProtocolError) -> bool;

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
    /// True when the fault is in one frame: within a bulk, the frames around it still route.
    frame_level: bool,
}

fn case(name: &'static str, bytes: Vec<u8>, expect: Expect, frame_level: bool) -> Case {
    Case {
        name,
        bytes,
        expect,
        frame_level,
    }
}

/// Feeds every case alone, then (for faults of one frame) inside a bulk
/// between two valid frames; checks the error hook and that the valid frames
/// after the fault are served.
fn run_cases(
    codec: impl Codec + Copy,
    cases: Vec<Case>,
    valid: fn(u32) -> Vec<u8>,
    bulk: fn(&[&[u8]]) -> Vec<u8>,
) {
    let h = harness(codec);
    let mut n = 0;
    for c in &cases {
        h.router.link().dispatch(Bytes::from(c.bytes.clone()));
        let errors = h.errors();
        assert_eq!(
            errors.len(),
            1,
            "{}: {} errors: {errors:?}",
            c.name,
            errors.len()
        );
        match &errors[0] {
            Error::Protocol(p) if (c.expect)(p) => {}
            other => panic!("{}: unexpected error {other:?}", c.name),
        }
        assert!(h.served().is_empty(), "{}: nothing is routed", c.name);

        n += 1;
        h.router.link().dispatch(Bytes::from(valid(n)));
        assert_eq!(
            h.served(),
            [n],
            "{}: the next valid frame is served",
            c.name
        );
        assert!(h.errors().is_empty(), "{}", c.name);

        if c.frame_level {
            let (first, last) = (valid(n + 1), valid(n + 2));
            n += 2;
            h.router
                .link()
                .dispatch(Bytes::from(bulk(&[&first, &c.bytes, &last])));
            let errors = h.errors();
            assert_eq!(errors.len(), 1, "{} in a bulk: {errors:?}", c.name);
            match &errors[0] {
                Error::Protocol(p) if (c.expect)(p) => {}
                other => panic!("{} in a bulk: unexpected error {other:?}", c.name),
            }
            assert_eq!(
                h.served(),
                [n - 1, n],
                "{}: the bulk's first and last frames are served, in order",
                c.name
            );
        }
    }
    assert!(cases.len() >= 15);
}

// ----- MsgPack -----

fn mp(v: Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &v).unwrap();
    out
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

fn mp_valid(n: u32) -> Vec<u8> {
    mp(map(vec![
        ("i", Value::from(n)),
        ("e", Value::from("ok")),
        ("a", Value::Array(vec![Value::from(n)])),
    ]))
}

fn mp_bulk(frames: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    rmp_array_len(&mut out, frames.len());
    for f in frames {
        out.extend_from_slice(f);
    }
    out
}

fn rmp_array_len(out: &mut Vec<u8>, n: usize) {
    assert!(n < 16);
    out.push(0x90 | n as u8);
}

fn ev(extra: Vec<(&str, Value)>) -> Vec<u8> {
    let mut entries = vec![("i", Value::from(1)), ("e", Value::from("x"))];
    entries.extend(extra);
    mp(map(entries))
}

/// `{"i": 1, "e": "deep", "a": [[[[…]]]]}`, `levels` arrays deep, written by hand:
/// a recursive encoder would itself overflow the stack.
fn mp_deep(levels: usize) -> Vec<u8> {
    let mut out = vec![0x83, 0xa1, b'i', 0x01, 0xa1, b'e', 0xa4];
    out.extend_from_slice(b"deep");
    out.extend_from_slice(&[0xa1, b'a', 0x91]);
    out.extend(vec![0x91; levels - 1]);
    out.push(0x90);
    out
}

macro_rules! is {
    ($pat:pat) => {
        (|p: &ProtocolError| matches!(p, $pat)) as Expect
    };
}

fn v(x: impl Into<Value>) -> Value {
    x.into()
}

fn msgpack_cases() -> Vec<Case> {
    let valid = mp_valid(1);
    let mut truncated = valid.clone();
    truncated.pop();
    let mut trailing = valid.clone();
    trailing.push(0xc0);
    let bad_utf8_event = vec![0x82, 0xa1, b'i', 0x01, 0xa1, b'e', 0xa2, 0xff, 0xfe];
    let bad_utf8_key = vec![
        0x83, 0xa1, b'i', 0x01, 0xa1, b'e', 0xa1, b'x', 0xa1, 0xff, 0x01,
    ];
    let reserved_in_data = vec![
        0x83, 0xa1, b'i', 0x01, 0xa1, b'e', 0xa1, b'x', 0xa1, b'a', 0x91, 0xc1,
    ];
    vec![
        case(
            "i is a string",
            mp(map(vec![("i", v("1")), ("e", v("x"))])),
            is!(ProtocolError::WrongType { key: "i", .. }),
            true,
        ),
        case(
            "i is negative",
            mp(map(vec![("i", v(-1)), ("e", v("x"))])),
            is!(ProtocolError::WrongType { key: "i", .. }),
            true,
        ),
        case(
            "i is a float",
            mp(map(vec![("i", v(1.0)), ("e", v("x"))])),
            is!(ProtocolError::WrongType { key: "i", .. }),
            true,
        ),
        case(
            "i is missing",
            mp(map(vec![("e", v("x"))])),
            is!(ProtocolError::MissingKey { key: "i" }),
            true,
        ),
        case(
            "i exceeds u32",
            mp(map(vec![("i", v(u32::MAX as u64 + 1)), ("e", v("x"))])),
            is!(ProtocolError::WrongType { key: "i", .. }),
            true,
        ),
        case(
            "e is a number",
            mp(map(vec![("i", v(1)), ("e", v(5))])),
            is!(ProtocolError::WrongType { key: "e", .. }),
            true,
        ),
        case(
            "e is nil, which counts as absent",
            mp(map(vec![("i", v(1)), ("e", Value::Nil)])),
            is!(ProtocolError::NeitherEventNorResponse),
            true,
        ),
        case(
            "e is not UTF-8",
            bad_utf8_event,
            is!(ProtocolError::WrongType { key: "e", .. }),
            true,
        ),
        case(
            "a key is not UTF-8",
            bad_utf8_key,
            is!(ProtocolError::WrongType { key: "(keys)", .. }),
            true,
        ),
        case(
            "a key is not a string",
            mp(Value::Map(vec![
                (v(1), v(1)),
                (v("i"), v(1)),
                (v("e"), v("x")),
            ])),
            is!(ProtocolError::WrongType { key: "(keys)", .. }),
            true,
        ),
        case(
            "a is a map",
            ev(vec![("a", map(vec![]))]),
            is!(ProtocolError::WrongType { key: "a", .. }),
            true,
        ),
        case(
            "c is a string",
            ev(vec![("c", v("0"))]),
            is!(ProtocolError::WrongType { key: "c", .. }),
            true,
        ),
        case(
            "c holds a negative number",
            ev(vec![("c", Value::Array(vec![v(-1)]))]),
            is!(ProtocolError::WrongType { key: "c", .. }),
            true,
        ),
        case(
            "t is a string",
            ev(vec![("c", Value::Array(vec![v(0)])), ("t", v("soon"))]),
            is!(ProtocolError::WrongType { key: "t", .. }),
            true,
        ),
        case(
            "t is negative",
            ev(vec![("c", Value::Array(vec![v(0)])), ("t", v(-1))]),
            is!(ProtocolError::WrongType { key: "t", .. }),
            true,
        ),
        case(
            "r is a string",
            mp(map(vec![("i", v(1)), ("r", v("7")), ("f", v(0))])),
            is!(ProtocolError::WrongType { key: "r", .. }),
            true,
        ),
        case(
            "f is a boolean",
            mp(map(vec![("i", v(1)), ("r", v(7)), ("f", v(true))])),
            is!(ProtocolError::WrongType { key: "f", .. }),
            true,
        ),
        case(
            "neither e nor r/f",
            mp(map(vec![("i", v(1)), ("a", Value::Array(vec![v(1)]))])),
            is!(ProtocolError::NeitherEventNorResponse),
            true,
        ),
        case(
            "response with r but no f",
            mp(map(vec![("i", v(1)), ("r", v(7))])),
            is!(ProtocolError::MissingKey { key: "f" }),
            true,
        ),
        case(
            "response with f but no r",
            mp(map(vec![("i", v(1)), ("f", v(0))])),
            is!(ProtocolError::MissingKey { key: "r" }),
            true,
        ),
        case(
            "c not ascending",
            ev(vec![
                ("a", Value::Array(vec![v(1)])),
                ("c", Value::Array(vec![v(2), v(0)])),
            ]),
            is!(ProtocolError::CallbackOrder {
                previous: 2,
                next: 0
            }),
            true,
        ),
        case(
            "c has a duplicate",
            ev(vec![("c", Value::Array(vec![v(0), v(0)]))]),
            is!(ProtocolError::CallbackOrder {
                previous: 0,
                next: 0
            }),
            true,
        ),
        case(
            "c out of range",
            ev(vec![
                ("a", Value::Array(vec![v(1)])),
                ("c", Value::Array(vec![v(2)])),
            ]),
            is!(ProtocolError::CallbackOutOfRange {
                position: 2,
                len: 2
            }),
            true,
        ),
        case(
            "duplicate key i",
            mp(Value::Map(vec![
                (v("i"), v(1)),
                (v("i"), v(2)),
                (v("e"), v("x")),
            ])),
            is!(ProtocolError::DuplicateKey { key: "i" }),
            true,
        ),
        case(
            "duplicate key a",
            ev(vec![
                ("a", Value::Array(vec![])),
                ("a", Value::Array(vec![])),
            ]),
            is!(ProtocolError::DuplicateKey { key: "a" }),
            true,
        ),
        case(
            "top-level string",
            mp(v("hello")),
            is!(ProtocolError::NotAMessage { found: "a string" }),
            false,
        ),
        case(
            "top-level number",
            mp(v(42)),
            is!(ProtocolError::NotAMessage {
                found: "an integer"
            }),
            false,
        ),
        case(
            "top-level nil",
            vec![0xc0],
            is!(ProtocolError::NotAMessage { found: "nil" }),
            false,
        ),
        case(
            "bulk element not a map",
            mp(Value::Array(vec![v(1)])),
            is!(ProtocolError::NotAFrame { index: 0, .. }),
            false,
        ),
        case(
            "empty payload",
            vec![],
            is!(ProtocolError::Undecodable { .. }),
            false,
        ),
        case(
            "truncated",
            truncated,
            is!(ProtocolError::Undecodable { .. }),
            false,
        ),
        case(
            "string claims more bytes than there are",
            vec![
                0x82, 0xa1, b'i', 0x01, 0xa1, b'e', 0xdb, 0x7f, 0xff, 0xff, 0xff, b'x',
            ],
            is!(ProtocolError::Undecodable { .. }),
            false,
        ),
        case(
            "array claims 4 billion elements",
            vec![
                0x83, 0xa1, b'i', 0x01, 0xa1, b'e', 0xa1, b'x', 0xa1, b'a', 0xdd, 0xff, 0xff, 0xff,
                0xff, 0x01,
            ],
            is!(ProtocolError::Undecodable { .. }),
            false,
        ),
        case(
            "reserved marker 0xc1",
            vec![0xc1],
            is!(ProtocolError::Undecodable { .. }),
            false,
        ),
        case(
            "reserved marker 0xc1 in data",
            reserved_in_data,
            is!(ProtocolError::Undecodable { .. }),
            false,
        ),
        case(
            "trailing bytes",
            trailing,
            is!(ProtocolError::Undecodable { .. }),
            false,
        ),
        case(
            "data nested 200,000 levels deep",
            mp_deep(200_000),
            is!(ProtocolError::TooDeep { limit: 128 }),
            false,
        ),
    ]
}

#[test]
fn every_malformed_msgpack_message_reaches_the_error_hook_and_the_next_frame_is_served() {
    run_cases(MsgPack, msgpack_cases(), mp_valid, mp_bulk);
}

#[test]
fn a_bulk_element_that_is_not_a_map_spoils_only_itself() {
    let h = harness(MsgPack);
    let mut bytes = vec![0x93];
    bytes.extend(mp_valid(1));
    bytes.extend(mp(Value::from("not a frame")));
    bytes.extend(mp_valid(2));
    h.router.link().dispatch(Bytes::from(bytes));
    let errors = h.errors();
    assert!(
        matches!(
            &errors[..],
            [Error::Protocol(ProtocolError::NotAFrame {
                index: 1,
                found: "a string"
            })]
        ),
        "{errors:?}"
    );
    assert_eq!(h.served(), [1, 2]);

    let h = harness(Json);
    h.router.link().dispatch(Bytes::from(format!(
        "[{},\"no\",{}]",
        json_valid_str(1),
        json_valid_str(2)
    )));
    let errors = h.errors();
    assert!(
        matches!(
            &errors[..],
            [Error::Protocol(ProtocolError::NotAFrame {
                index: 1,
                found: "a string"
            })]
        ),
        "{errors:?}"
    );
    assert_eq!(h.served(), [1, 2]);
}

// ----- JSON -----

fn json_valid_str(n: u32) -> String {
    format!(r#"{{"i":{n},"e":"ok","a":[{n}]}}"#)
}

fn json_valid(n: u32) -> Vec<u8> {
    json_valid_str(n).into_bytes()
}

fn json_bulk(frames: &[&[u8]]) -> Vec<u8> {
    let mut out = b"[".to_vec();
    for (i, f) in frames.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(f);
    }
    out.push(b']');
    out
}

fn json_deep(levels: usize) -> Vec<u8> {
    let mut s = String::from(r#"{"i":1,"e":"deep","a":["#);
    s.push_str(&"[".repeat(levels));
    s.push_str(&"]".repeat(levels));
    s.push_str("]}");
    s.into_bytes()
}

fn json_cases() -> Vec<Case> {
    let j = |s: &str| s.as_bytes().to_vec();
    vec![
        case(
            "i is a string",
            j(r#"{"i":"1","e":"x"}"#),
            is!(ProtocolError::WrongType { key: "i", .. }),
            true,
        ),
        case(
            "i is negative",
            j(r#"{"i":-1,"e":"x"}"#),
            is!(ProtocolError::WrongType { key: "i", .. }),
            true,
        ),
        case(
            "i is a fraction",
            j(r#"{"i":1.5,"e":"x"}"#),
            is!(ProtocolError::WrongType { key: "i", .. }),
            true,
        ),
        case(
            "i is missing",
            j(r#"{"e":"x"}"#),
            is!(ProtocolError::MissingKey { key: "i" }),
            true,
        ),
        case(
            "i exceeds u32",
            j(r#"{"i":4294967296,"e":"x"}"#),
            is!(ProtocolError::WrongType { key: "i", .. }),
            true,
        ),
        case(
            "e is a number",
            j(r#"{"i":1,"e":5}"#),
            is!(ProtocolError::WrongType { key: "e", .. }),
            true,
        ),
        case(
            "e is null, which counts as absent",
            j(r#"{"i":1,"e":null}"#),
            is!(ProtocolError::NeitherEventNorResponse),
            true,
        ),
        case(
            "a is an object",
            j(r#"{"i":1,"e":"x","a":{}}"#),
            is!(ProtocolError::WrongType { key: "a", .. }),
            true,
        ),
        case(
            "c is a string",
            j(r#"{"i":1,"e":"x","c":"0"}"#),
            is!(ProtocolError::WrongType { key: "c", .. }),
            true,
        ),
        case(
            "c holds a negative number",
            j(r#"{"i":1,"e":"x","c":[-1]}"#),
            is!(ProtocolError::WrongType { key: "c", .. }),
            true,
        ),
        case(
            "t is a string",
            j(r#"{"i":1,"e":"x","c":[0],"t":"soon"}"#),
            is!(ProtocolError::WrongType { key: "t", .. }),
            true,
        ),
        case(
            "t is negative",
            j(r#"{"i":1,"e":"x","c":[0],"t":-1}"#),
            is!(ProtocolError::WrongType { key: "t", .. }),
            true,
        ),
        case(
            "r is a string",
            j(r#"{"i":1,"r":"7","f":0}"#),
            is!(ProtocolError::WrongType { key: "r", .. }),
            true,
        ),
        case(
            "f is a boolean",
            j(r#"{"i":1,"r":7,"f":true}"#),
            is!(ProtocolError::WrongType { key: "f", .. }),
            true,
        ),
        case(
            "neither e nor r/f",
            j(r#"{"i":1,"a":[1]}"#),
            is!(ProtocolError::NeitherEventNorResponse),
            true,
        ),
        case(
            "response with r but no f",
            j(r#"{"i":1,"r":7}"#),
            is!(ProtocolError::MissingKey { key: "f" }),
            true,
        ),
        case(
            "response with f but no r",
            j(r#"{"i":1,"f":0}"#),
            is!(ProtocolError::MissingKey { key: "r" }),
            true,
        ),
        case(
            "c not ascending",
            j(r#"{"i":1,"e":"x","a":[1],"c":[2,0]}"#),
            is!(ProtocolError::CallbackOrder {
                previous: 2,
                next: 0
            }),
            true,
        ),
        case(
            "c has a duplicate",
            j(r#"{"i":1,"e":"x","c":[0,0]}"#),
            is!(ProtocolError::CallbackOrder {
                previous: 0,
                next: 0
            }),
            true,
        ),
        case(
            "c out of range",
            j(r#"{"i":1,"e":"x","a":[1],"c":[2]}"#),
            is!(ProtocolError::CallbackOutOfRange {
                position: 2,
                len: 2
            }),
            true,
        ),
        case(
            "duplicate key i",
            j(r#"{"i":1,"i":2,"e":"x"}"#),
            is!(ProtocolError::DuplicateKey { key: "i" }),
            true,
        ),
        case(
            "duplicate key e",
            j(r#"{"i":1,"e":"x","e":"y"}"#),
            is!(ProtocolError::DuplicateKey { key: "e" }),
            true,
        ),
        case(
            "duplicate key i, written with an escape",
            j(r#"{"i":1,"\u0069":2,"e":"x"}"#),
            is!(ProtocolError::DuplicateKey { key: "i" }),
            true,
        ),
        case(
            "duplicate key i, null first",
            j(r#"{"e":"x","i":null,"i":2}"#),
            is!(ProtocolError::DuplicateKey { key: "i" }),
            true,
        ),
        case(
            "data nested 200,000 levels deep",
            json_deep(200_000),
            is!(ProtocolError::TooDeep { limit: 128 }),
            true,
        ),
        case(
            "top-level string",
            j(r#""hello""#),
            is!(ProtocolError::NotAMessage { found: "a string" }),
            false,
        ),
        case(
            "top-level number",
            j("42"),
            is!(ProtocolError::NotAMessage { found: "a number" }),
            false,
        ),
        case(
            "top-level null",
            j("null"),
            is!(ProtocolError::NotAMessage { found: "null" }),
            false,
        ),
        case(
            "bulk element not an object",
            j("[1]"),
            is!(ProtocolError::NotAFrame {
                index: 0,
                found: "a number"
            }),
            false,
        ),
        case(
            "empty payload",
            vec![],
            is!(ProtocolError::Undecodable { .. }),
            false,
        ),
        case(
            "only whitespace",
            j(" \n"),
            is!(ProtocolError::Undecodable { .. }),
            false,
        ),
        case(
            "not JSON at all",
            j("not json"),
            is!(ProtocolError::Undecodable { .. }),
            false,
        ),
        case(
            "truncated",
            j(r#"{"i":1,"e":"x""#),
            is!(ProtocolError::Undecodable { .. }),
            false,
        ),
        case(
            "trailing bytes",
            j(r#"{"i":1,"e":"x"} x"#),
            is!(ProtocolError::Undecodable { .. }),
            false,
        ),
        case(
            "invalid UTF-8",
            b"{\"i\":1,\"e\":\"\xff\xfe\"}".to_vec(),
            is!(ProtocolError::Undecodable { .. }),
            false,
        ),
        case(
            "unclosed data",
            j(r#"{"i":1,"e":"x","a":[[1]}"#),
            is!(ProtocolError::Undecodable { .. }),
            false,
        ),
    ]
}

#[test]
fn every_malformed_json_message_reaches_the_error_hook_and_the_next_frame_is_served() {
    run_cases(Json, json_cases(), json_valid, json_bulk);
}

#[test]
fn json_nesting_is_counted_outside_strings_only() {
    // Brackets inside strings, and escaped quotes, are not nesting.
    let h = harness(Json);
    let text = format!(
        r#"{{"i":1,"e":"ok","a":[7,"{}\"{}"]}}"#,
        "[".repeat(300),
        "{".repeat(300)
    );
    h.router.link().dispatch(Bytes::from(text));
    assert!(h.errors().is_empty());
    assert_eq!(h.served(), [7]);
}

#[test]
fn keys_holding_nil_or_null_count_as_absent_as_in_the_original() {
    let h = harness(MsgPack);
    h.router.link().dispatch(Bytes::from(mp(map(vec![
        ("i", v(1)),
        ("e", v("ok")),
        ("a", Value::Array(vec![v(3)])),
        ("c", Value::Nil),
        ("t", Value::Nil),
        ("r", Value::Nil),
        ("f", Value::Nil),
    ]))));
    assert!(h.errors().is_empty());
    assert_eq!(h.served(), [3]);

    let h = harness(Json);
    h.router.link().dispatch(Bytes::from(
        r#"{"i":1,"e":"ok","a":[4],"c":null,"t":null,"r":null,"f":null}"#,
    ));
    assert!(h.errors().is_empty());
    assert_eq!(h.served(), [4]);
}

// ----- the depth limit, at its edge -----

#[test]
fn data_just_within_the_depth_limit_is_routed_and_decodes_one_level_more_is_refused() {
    // A frame's own levels count: the map (1) and `a` (2), so an argument
    // may nest 126 levels before the limit of 128.
    for (codec, within, over) in [
        (&MsgPack as &dyn Codec, mp_deep(126), mp_deep(127)),
        (&Json, json_deep(126), json_deep(127)),
    ] {
        let router = Router::builder().codec_arc(codec_arc(codec)).build();
        let (tx, rx) = mpsc::channel();
        router.on("deep", move |args: Args| -> Result<(), Error> {
            let v: Value = args.value(0)?;
            let mut depth = 0;
            let mut at = &v;
            while let Value::Array(items) = at {
                depth += 1;
                match items.first() {
                    Some(next) => at = next,
                    None => break,
                }
            }
            let _ = tx.send(depth);
            Ok(())
        });
        let (etx, erx) = mpsc::channel();
        router.on_error(move |e| {
            let _ = etx.send(e);
        });
        router.link().dispatch(Bytes::from(within));
        let errors: Vec<Error> = erx.try_iter().collect();
        assert!(errors.is_empty(), "{}: {errors:?}", codec.name());
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [126], "{}", codec.name());

        router.link().dispatch(Bytes::from(over));
        let errors: Vec<Error> = erx.try_iter().collect();
        assert!(
            matches!(
                &errors[..],
                [Error::Protocol(ProtocolError::TooDeep { limit: 128 })]
            ),
            "{}: {errors:?}",
            codec.name()
        );
    }
}

fn codec_arc(codec: &dyn Codec) -> std::sync::Arc<dyn Codec> {
    match codec.name() {
        "json" => std::sync::Arc::new(Json),
        _ => std::sync::Arc::new(MsgPack),
    }
}

// ----- stream framing over a connection -----

/// The name of the server's endpoint on the in-memory network.
const ENDPOINT: &str = "svc";

/// A server on an in-memory network (which runs on paused time: a call that
/// is never answered fails at once, with a timeout). Its shared `Api` serves `echo` and
/// `hold` (whose callback goes to `held`, unanswered); every socket's
/// reported errors come to `errors` with the socket's id.
struct Served {
    net: Network,
    server: Server,
    events: broadcast::Receiver<ServerEvent>,
    errors: UnboundedReceiver<(u64, Error)>,
    held: UnboundedReceiver<RemoteCallback>,
}

async fn served() -> Served {
    let net = Network::new();
    let server = Server::builder(net.binder(ENDPOINT)).start();
    let events = server.events();
    server.on("echo", |args: Args| -> Result<(), Error> {
        let text: String = args.get(0)?;
        args.callback(1)?.call((text,))
    });
    let (held_tx, held) = tokio::sync::mpsc::unbounded_channel();
    server.on("hold", move |args: Args| -> Result<(), Error> {
        let _ = held_tx.send(args.callback(0)?);
        Ok(())
    });
    let (err_tx, errors) = tokio::sync::mpsc::unbounded_channel();
    server.on_socket(move |socket| {
        let (id, tx) = (socket.id(), err_tx.clone());
        socket.router().on_error(move |e| {
            let _ = tx.send((id, e));
        });
    });
    server.started().await.expect("the server listens");
    Served {
        net,
        server,
        events,
        errors,
        held,
    }
}

impl Served {
    /// The id of the next socket the server accepts.
    async fn next_connected(&mut self) -> u64 {
        loop {
            if let ServerEvent::Connected { socket, .. } = self.events.recv().await.unwrap() {
                return socket;
            }
        }
    }

    /// Waits until socket `id` ends, and says why.
    async fn disconnected(&mut self, id: u64) -> String {
        loop {
            match self.events.recv().await.unwrap() {
                ServerEvent::Disconnected { socket, reason } if socket == id => return reason,
                _ => {}
            }
        }
    }

    /// The victim: a raw connection to the server, written by the test, and its socket's id.
    async fn victim(&mut self) -> (BoxStream, u64) {
        let (stream, _) = self.net.connector(ENDPOINT).connect().await.unwrap();
        let id = self.next_connected().await;
        (stream, id)
    }

    /// The next error the server's sockets reported, which must be the victim's.
    async fn error_of(&mut self, victim: u64) -> Error {
        let (id, e) = self.errors.recv().await.unwrap();
        assert_eq!(id, victim, "an error on another socket: {e}");
        e
    }
}

/// Another client of the same server, with a call in flight that the server holds.
struct Bystander {
    client: Client,
    socket: u64,
    in_flight: tokio::task::JoinHandle<Result<(String,), Error>>,
    held: RemoteCallback,
}

async fn bystander(served: &mut Served) -> Bystander {
    let client = Client::builder(served.net.connector(ENDPOINT)).start();
    let socket = served.next_connected().await;
    client.connected().await;
    let router = client.router().clone();
    let in_flight = tokio::spawn(async move { router.request::<(String,)>("hold", ()).await });
    let held = served.held.recv().await.unwrap();
    let bystander = Bystander {
        client,
        socket,
        in_flight,
        held,
    };
    bystander.answers().await;
    bystander
}

impl Bystander {
    /// A new call is answered.
    async fn answers(&self) {
        let (back,): (String,) = self
            .client
            .router()
            .request("echo", args!["still here"])
            .await
            .unwrap();
        assert_eq!(back, "still here");
    }

    /// After the victim's end: the bystander's socket is still the server's,
    /// the call held through it is answered, a new call is too, and nothing
    /// was reported on its socket.
    async fn served_through_it(self, served: &mut Served) {
        assert!(served
            .server
            .sockets()
            .iter()
            .any(|s| s.id() == self.socket));
        self.answers().await;
        self.held.call(("held through it",)).unwrap();
        assert_eq!(self.in_flight.await.unwrap().unwrap().0, "held through it");
        assert_eq!(
            served.server.socket_count(),
            1,
            "only the bystander is left"
        );
        if let Ok((id, e)) = served.errors.try_recv() {
            panic!("socket {id} reported {e}");
        }
        self.client.stop().await;
        served.server.stop().await;
    }
}

/// True once the server has closed the stream: it reads the end (what the
/// server wrote before does not count).
async fn ends(stream: &mut BoxStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// A router driven over one end of a duplex stream; the test writes the other end.
fn victim() -> (
    Connection,
    tokio::io::DuplexStream,
    tokio::sync::mpsc::UnboundedReceiver<Error>,
) {
    let router = Router::new();
    let (tx, errors) = tokio::sync::mpsc::unbounded_channel();
    router.on_error(move |e| {
        let _ = tx.send(e);
    });
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    (Connection::spawn(ours, router), theirs, errors)
}

#[tokio::test(start_paused = true)]
async fn a_length_prefix_claiming_2_gib_closes_that_connection_without_allocating_it() {
    let mut served = served().await;
    let bystander = bystander(&mut served).await;
    let (mut stream, id) = served.victim().await;
    let (reason, largest) = {
        LARGEST.with(|l| l.set(0));
        stream
            .write_all(&[0x7f, 0xff, 0xff, 0xff, b'x', b'y'])
            .await
            .unwrap();
        let reason = served.disconnected(id).await;
        // A current-thread runtime: the socket's task ran on this thread.
        (reason, LARGEST.with(|l| l.get()))
    };
    let max = nmsg::framing::DEFAULT_MAX_MESSAGE_SIZE;
    let e = served.error_of(id).await;
    assert!(
        matches!(e, Error::Framing(FramingError::TooLarge { max: m }) if m == max),
        "{e}"
    );
    assert_eq!(
        reason,
        CloseReason::Framing(FramingError::TooLarge { max }.to_string()).to_string()
    );
    assert!(largest < 1024 * 1024, "largest allocation: {largest} bytes");
    assert!(
        ends(&mut stream).await,
        "the server closed the victim's stream"
    );
    bystander.served_through_it(&mut served).await;
}

#[test]
fn the_allocation_probe_sees_large_allocations() {
    let (v, largest) = largest_allocation_since_reset(|| vec![0u8; 4 << 20]);
    assert!(largest >= 4 << 20);
    drop(v);
}

#[tokio::test(start_paused = true)]
async fn a_zero_length_prefix_closes_that_connection() {
    let mut served = served().await;
    let bystander = bystander(&mut served).await;
    let (mut stream, id) = served.victim().await;
    stream.write_all(&[0, 0, 0, 0]).await.unwrap();
    assert_eq!(
        served.disconnected(id).await,
        CloseReason::Framing(FramingError::Empty.to_string()).to_string()
    );
    let e = served.error_of(id).await;
    assert!(matches!(e, Error::Framing(FramingError::Empty)), "{e}");
    assert!(
        ends(&mut stream).await,
        "the server closed the victim's stream"
    );
    bystander.served_through_it(&mut served).await;
}

#[tokio::test(start_paused = true)]
async fn half_a_message_then_end_of_stream_is_a_truncated_end() {
    let mut served = served().await;
    let bystander = bystander(&mut served).await;
    // Part of a payload, and only a length prefix: both are cut-off messages.
    for partial in [&[0u8, 0, 0, 10, 0x82, 0xa1, b'i'][..], &[0, 0, 0, 10][..]] {
        let (mut stream, id) = served.victim().await;
        stream.write_all(partial).await.unwrap();
        stream.shutdown().await.unwrap();
        assert_eq!(
            served.disconnected(id).await,
            CloseReason::Framing(FramingError::Truncated.to_string()).to_string(),
            "{partial:?}"
        );
        let e = served.error_of(id).await;
        assert!(matches!(e, Error::Framing(FramingError::Truncated)), "{e}");
        bystander.answers().await;
    }
    bystander.served_through_it(&mut served).await;
}

#[tokio::test]
async fn a_clean_end_between_messages_is_the_peer_closing() {
    let (conn, mut theirs, mut errors) = victim();
    let (tx, mut served) = tokio::sync::mpsc::unbounded_channel();
    conn.router()
        .on("ok", move |args: Args| -> Result<(), Error> {
            let _ = tx.send(args.get::<u32>(0)?);
            Ok(())
        });
    let payload = mp_valid(5);
    let mut stream = (payload.len() as u32).to_be_bytes().to_vec();
    stream.extend(payload);
    theirs.write_all(&stream).await.unwrap();
    drop(theirs);
    assert_eq!(conn.closed().await, CloseReason::PeerClosed);
    assert_eq!(served.recv().await, Some(5));
    assert!(errors.try_recv().is_err());
}

// ----- responses that name no live callback -----

/// The peer's side of [`victim`]'s stream: reads what the router sends, and
/// writes frames of its own.
struct RawPeer {
    stream: tokio::io::DuplexStream,
}

impl RawPeer {
    /// The next frame the router sent (one frame per message: buffering is off).
    async fn read_frame(&mut self) -> nmsg::frame::Frame {
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix).await.unwrap();
        let mut payload = vec![0u8; u32::from_be_bytes(prefix) as usize];
        self.stream.read_exact(&mut payload).await.unwrap();
        let mut frames = MsgPack.decode_all(&payload).unwrap().into_frames();
        assert_eq!(frames.len(), 1);
        frames.pop().unwrap().unwrap()
    }

    async fn write(&mut self, frame: Value) {
        let payload = mp(frame);
        let mut message = (payload.len() as u32).to_be_bytes().to_vec();
        message.extend(payload);
        self.stream.write_all(&message).await.unwrap();
    }

    /// A `sync(n)` event, frame `id`: once [`answered_router`]'s channel gives
    /// `n`, the router has routed everything the peer wrote before it.
    async fn sync(&mut self, id: u32, n: u32) {
        self.write(map(vec![
            ("i", v(id)),
            ("e", v("sync")),
            ("a", Value::Array(vec![v(n)])),
        ]))
        .await;
    }

    /// A response frame `{i, r, f, a: [text]}`.
    async fn respond(&mut self, id: u32, to: u32, position: u32, text: &str) {
        self.write(map(vec![
            ("i", v(id)),
            ("r", v(to)),
            ("f", v(position)),
            ("a", Value::Array(vec![v(text)])),
        ]))
        .await;
    }
}

/// The router under test, as [`victim`] (on paused time, an answer that is
/// lost ends its callback with a timeout at once); `sync(n)` events from the peer come
/// to the returned channel, so the test knows what the router has routed.
fn answered_router() -> (
    Connection,
    RawPeer,
    tokio::sync::mpsc::UnboundedReceiver<Error>,
    tokio::sync::mpsc::UnboundedReceiver<u32>,
) {
    let (conn, stream, errors) = victim();
    let (tx, synced) = tokio::sync::mpsc::unbounded_channel();
    conn.router()
        .on("sync", move |args: Args| -> Result<(), Error> {
            let _ = tx.send(args.get::<u32>(0)?);
            Ok(())
        });
    (conn, RawPeer { stream }, errors, synced)
}

/// A callback that sends what it is invoked with, tagged, to `calls`.
fn recording(
    tag: &'static str,
    calls: &tokio::sync::mpsc::UnboundedSender<(&'static str, String)>,
) -> nmsg::Callback<(String,)> {
    let calls = calls.clone();
    nmsg::Callback::new(move |(text,): (String,)| {
        let _ = calls.send((tag, text));
    })
}

/// `router` emits `two(A, "data", B)`, A and B recording callbacks; gives the
/// frame's id, as the peer read it, and what the callbacks record.
async fn emit_two_callbacks(
    router: &nmsg::Router,
    peer: &mut RawPeer,
) -> (
    u32,
    tokio::sync::mpsc::UnboundedReceiver<(&'static str, String)>,
) {
    let (calls_tx, calls) = tokio::sync::mpsc::unbounded_channel();
    router
        .emit(
            "two",
            args![recording("A", &calls_tx), "data", recording("B", &calls_tx)],
        )
        .unwrap();
    // Only the callbacks hold senders now: once both are gone (run, or
    // failed by their timeout, at once on paused time), `calls` ends.
    drop(calls_tx);
    let frame = peer.read_frame().await;
    assert_eq!(&frame.callbacks[..], [0, 2]);
    (frame.id, calls)
}

/// Everything a channel holds now.
fn drain<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>) -> Vec<T> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

fn stray(e: &Error) -> Option<(u32, u32)> {
    match e {
        Error::StrayResponse { frame, position } => Some((*frame, *position)),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_second_answer_to_an_answered_callback_of_a_pending_frame_is_stray_and_the_other_callback_still_works(
) {
    let (conn, mut peer, mut errors, mut synced) = answered_router();
    let router = conn.router().clone();
    let (x, mut calls) = emit_two_callbacks(&router, &mut peer).await;

    // The peer answers A twice (two response frames of its own), B not yet.
    peer.respond(1, x, 0, "first").await;
    peer.respond(2, x, 0, "second").await;
    peer.sync(3, 1).await;
    assert_eq!(synced.recv().await, Some(1));
    assert_eq!(drain(&mut calls), [("A", "first".to_owned())], "A ran once");
    let reported: Vec<_> = drain(&mut errors).iter().map(stray).collect();
    assert_eq!(
        reported,
        [Some((x, 0))],
        "the second answer is a stray response"
    );
    assert_eq!(router.pending_frames(), 1, "the frame waits for B");

    // B still works, with its own answer.
    peer.respond(4, x, 2, "b's answer").await;
    assert_eq!(calls.recv().await, Some(("B", "b's answer".to_owned())));
    assert_eq!(router.pending_frames(), 0);
    // And once the frame is done, another answer to it is stray too.
    peer.respond(5, x, 2, "b again").await;
    let e = errors.recv().await.unwrap();
    assert_eq!(stray(&e), Some((x, 2)), "{e}");
    assert!(drain(&mut calls).is_empty());
    assert!(!conn.is_closed());
}

#[tokio::test(start_paused = true)]
async fn a_response_whose_f_names_a_data_position_is_stray_and_harms_nothing_else() {
    let (conn, mut peer, mut errors, mut synced) = answered_router();
    let router = conn.router().clone();
    let (x, mut calls) = emit_two_callbacks(&router, &mut peer).await;

    // Position 1 is the data argument; 3 is past the end of the list.
    peer.respond(1, x, 1, "to the data").await;
    peer.respond(2, x, 3, "past the end").await;
    peer.sync(3, 1).await;
    assert_eq!(synced.recv().await, Some(1));
    let reported: Vec<_> = drain(&mut errors).iter().map(stray).collect();
    assert_eq!(reported, [Some((x, 1)), Some((x, 3))]);
    assert!(drain(&mut calls).is_empty(), "no callback ran");
    assert_eq!(router.pending_frames(), 1);

    // Both callbacks still work, each with its own answer, and the router
    // still sends: the connection is unharmed.
    peer.respond(4, x, 2, "for B").await;
    peer.respond(5, x, 0, "for A").await;
    assert_eq!(calls.recv().await, Some(("B", "for B".to_owned())));
    assert_eq!(calls.recv().await, Some(("A", "for A".to_owned())));
    assert_eq!(router.pending_frames(), 0);
    router.emit("after", args![7]).unwrap();
    let after = peer.read_frame().await;
    assert_eq!(after.kind, nmsg::frame::FrameKind::Event("after".into()));
    assert!(drain(&mut errors).is_empty());
    assert!(!conn.is_closed());
}

// ----- seeds for the fuzz targets -----

/// Writes the malformed messages above, alone and (for faults of one frame)
/// in a bulk between valid frames, and the depth limit's edges, into the
/// message fuzz targets' seed corpus (`fuzz/corpus/`; see tests/fuzz_corpus.rs).
#[test]
#[ignore = "writes fuzz/corpus/; run by hand when the cases change"]
fn write_fuzz_seeds() {
    let write = |target: &str, name: &str, data: &[u8]| {
        let name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("malformed-{name}")), data).unwrap();
    };
    type Bulk = fn(&[&[u8]]) -> Vec<u8>;
    for (target, cases, valid, bulk, deep) in [
        (
            "msgpack_message",
            msgpack_cases(),
            mp_valid as fn(u32) -> Vec<u8>,
            mp_bulk as Bulk,
            mp_deep as fn(usize) -> Vec<u8>,
        ),
        (
            "json_message",
            json_cases(),
            json_valid,
            json_bulk,
            json_deep,
        ),
    ] {
        for c in cases.iter().filter(|c| c.bytes.len() <= 4096) {
            write(target, c.name, &c.bytes);
            if c.frame_level {
                write(
                    target,
                    &format!("{} in a bulk", c.name),
                    &bulk(&[&valid(1), &c.bytes, &valid(2)]),
                );
            }
        }
        write(target, "depth 126", &deep(126));
        write(target, "depth 127", &deep(127));
    }
}
