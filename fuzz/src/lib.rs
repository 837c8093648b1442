//! The bodies of nmsg's fuzz targets, one function each.
//!
//! The fuzz targets (`fuzz_targets/*.rs`, libFuzzer through cargo-fuzz, nightly)
//! call these, and so does the stable replay test `tests/fuzz_corpus.rs`, which
//! includes this file as a module: every input of the corpus runs through
//! exactly what the fuzzer ran. A body panics when something is wrong; an
//! input that is merely invalid must not make it panic.
//!
//! - [`framing`]: a byte stream cut into chunks of sizes the input chooses, fed
//!   to [`MessageCodec`], checked against a plain reading of the same stream.
//! - [`msgpack_message`] and [`json_message`]: one message payload dispatched
//!   through a router whose handlers read every argument into many types and
//!   answer every callback; the answers must read back without a protocol
//!   error, and the router must still serve a valid message afterwards.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use nmsg::framing::{MessageCodec, PREFIX_LEN};
use nmsg::{Args, Codec, Error, Flow, FramingError, Json, MsgPack, OutArgs, RemoteCallback};
use nmsg::{Router, Value};
use serde::Deserialize;
use tokio_util::codec::{Decoder, Encoder};

// ----- framing -----

/// How a [`framing`] input is laid out: the maximum message size (one byte,
/// 0 to 255), the number of chunk sizes that follow (one byte, taken modulo
/// 8, plus one), the chunk sizes (one byte each, a byte `b` meaning `b + 1`
/// bytes, used in turn and over again), then the stream.
pub fn framing_input(max: u8, chunks: &[u8], stream: &[u8]) -> Vec<u8> {
    assert!((1..=8).contains(&chunks.len()));
    let mut out = vec![max, chunks.len() as u8 - 1];
    out.extend_from_slice(chunks);
    out.extend_from_slice(stream);
    out
}

/// How a stream ends: cleanly between messages, or with a framing error.
#[derive(Debug, PartialEq)]
enum End {
    Clean,
    TooLarge,
    Empty,
    Truncated,
}

/// The messages of `stream` and how it ends, read in one go, plainly.
fn read_plainly(stream: &[u8], max: usize) -> (Vec<&[u8]>, End) {
    let mut messages = Vec::new();
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            return (messages, End::Clean);
        }
        let Some(prefix) = rest.get(..PREFIX_LEN) else {
            return (messages, End::Truncated);
        };
        let len = u32::from_be_bytes(prefix.try_into().unwrap()) as usize;
        if len > max {
            return (messages, End::TooLarge);
        }
        if len == 0 {
            return (messages, End::Empty);
        }
        let Some(payload) = rest.get(PREFIX_LEN..PREFIX_LEN + len) else {
            return (messages, End::Truncated);
        };
        messages.push(payload);
        rest = &rest[PREFIX_LEN + len..];
    }
}

/// What the message begun in `begun` (its bytes so far, from its prefix on)
/// still needs.
fn still_needed(begun: &[u8]) -> usize {
    match begun.get(..PREFIX_LEN) {
        None => PREFIX_LEN - begun.len(),
        Some(prefix) => {
            let len = u32::from_be_bytes(prefix.try_into().unwrap()) as usize;
            len - (begun.len() - PREFIX_LEN)
        }
    }
}

/// Feeds a stream to [`MessageCodec`] in chunks ([`framing_input`] says how
/// the input is read) and checks that the chunking changes nothing: the same
/// messages and the same end as [`read_plainly`]; that no message is empty or
/// over the maximum; that `missing` and `is_partial` tell exactly what the
/// message begun still needs; and that encoding the messages again gives the
/// stream back.
pub fn framing(data: &[u8]) {
    let (max, rest) = match data.split_first() {
        Some((&max, rest)) => (max as usize, rest),
        None => (0, data),
    };
    let (count, rest) = match rest.split_first() {
        Some((&n, rest)) => ((n % 8) as usize + 1, rest),
        None => (0, rest),
    };
    let (table, stream) = rest.split_at(count.min(rest.len()));
    let mut sizes: Vec<usize> = table.iter().map(|&b| b as usize + 1).collect();
    if sizes.is_empty() {
        sizes.push(stream.len().max(1));
    }

    let (want, want_end) = read_plainly(stream, max);

    let mut codec = MessageCodec::new(max);
    let mut buf = BytesMut::new();
    let mut got: Vec<Bytes> = Vec::new();
    let mut fed = 0;
    // Bytes of the stream in the messages delivered, prefixes included.
    let mut delivered = 0;
    let mut sizes = sizes.into_iter().cycle();
    let end = 'run: loop {
        let eof = fed == stream.len();
        loop {
            let missing_before = codec.missing(&buf);
            let step = if eof {
                codec.decode_eof(&mut buf)
            } else {
                codec.decode(&mut buf)
            };
            match step {
                Ok(Some(msg)) => {
                    assert!(!msg.is_empty(), "an empty message was delivered");
                    assert!(msg.len() <= max, "{} bytes over the max {max}", msg.len());
                    assert_eq!(missing_before, 0, "`missing` said more was needed");
                    delivered += PREFIX_LEN + msg.len();
                    assert_eq!(&msg[..], &stream[delivered - msg.len()..delivered]);
                    got.push(msg);
                }
                Ok(None) => {
                    let begun = &stream[delivered..fed];
                    assert_eq!(codec.is_partial(&buf), !begun.is_empty(), "is_partial");
                    assert_eq!(codec.missing(&buf), still_needed(begun), "missing");
                    if eof {
                        break 'run End::Clean;
                    }
                    break;
                }
                Err(FramingError::TooLarge { max: said }) => {
                    assert_eq!(said, max);
                    break 'run End::TooLarge;
                }
                Err(FramingError::Empty) => break 'run End::Empty,
                Err(FramingError::Truncated) => {
                    assert!(eof, "truncated before the end of the stream");
                    break 'run End::Truncated;
                }
                Err(e) => panic!("unexpected framing error {e:?}"),
            }
        }
        let n = sizes.next().unwrap().min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
    };

    assert_eq!(end, want_end, "the chunked stream ends otherwise");
    assert_eq!(got, want, "the chunked stream gives other messages");

    let mut again = BytesMut::new();
    for msg in got {
        codec.encode(msg, &mut again).unwrap();
    }
    assert_eq!(
        &again[..],
        &stream[..delivered],
        "encoding gives the stream back"
    );
}

// ----- messages -----

/// A MsgPack message payload through a router: see [`message`].
pub fn msgpack_message(data: &[u8]) {
    message(MsgPack, data, VALID_MSGPACK);
}

/// A JSON message payload through a router: see [`message`].
pub fn json_message(data: &[u8]) {
    message(Json, data, VALID_JSON);
}

/// The sentinel frame `{"i": 1, "e": "ok", "a": [SENTINEL]}` in each codec.
const SENTINEL: u32 = 0xF00D;
const VALID_MSGPACK: &[u8] = &[
    0x83, 0xa1, b'i', 0x01, 0xa1, b'e', 0xa2, b'o', b'k', 0xa1, b'a', 0x91, 0xcd, 0xf0, 0x0d,
];
const VALID_JSON: &[u8] = br#"{"i":1,"e":"ok","a":[61453]}"#;

/// At most this many arguments of a frame are read, and callbacks answered
/// (past the 64th, the callbacks' flags live elsewhere).
const MAX_ARGS: usize = 70;

/// Dispatches `data` as one message through a router with handlers for a few
/// events and the wildcard, each reading its arguments (every one as a
/// [`Value`] and as many other types, the whole list as tuples, detached
/// copies read the same) and answering its callbacks with the data it got.
///
/// Checks: no handler or wiretap panics (the router would catch it and report
/// it); what the router writes back frames and decodes again with no protocol
/// error; a callback answers only once; and the router still serves a valid
/// message afterwards.
fn message(codec: impl Codec + Copy, data: &[u8], valid: &[u8]) {
    let router = Router::builder().codec(codec).build();
    let errors = Arc::new(Mutex::new(Vec::new()));
    {
        let errors = errors.clone();
        router.on_error(move |e| {
            let _ = e.to_string();
            errors.lock().unwrap().push(e);
        });
    }
    router.set_wiretap(|args: &Args| {
        let _ = args.len();
        match args.event() {
            Some("tap") => Flow::Stop,
            _ => Flow::Continue,
        }
    });
    let sentinels = Arc::new(AtomicUsize::new(0));
    {
        let sentinels = sentinels.clone();
        router.on("ok", move |args: Args| {
            read_all(&args);
            if args.get::<u32>(0).ok() == Some(SENTINEL) {
                sentinels.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    router.on("ping", |args: Args| {
        read_all(&args);
        answer(&args);
    });
    router.on("echo", |args: Args| answer(&args));
    router.on("message", |args: Args| -> Result<(), Error> {
        read_all(&args);
        let _: (String, Value) = args.parse()?;
        Ok(())
    });
    router.on("*", |args: Args| {
        read_all(&args);
        answer(&args);
    });

    let link = router.link();
    link.dispatch(Bytes::copy_from_slice(data));
    for e in errors.lock().unwrap().drain(..) {
        if let Error::HandlerPanicked { message, .. } = e {
            panic!("a handler panicked: {message}");
        }
    }

    // What was written back reads again.
    let echo = Router::builder().codec(codec).build();
    let echoed = Arc::new(Mutex::new(Vec::new()));
    {
        let echoed = echoed.clone();
        echo.on_error(move |e| echoed.lock().unwrap().push(e));
    }
    let mut framing = MessageCodec::new(router.max_message_size());
    let mut out = BytesMut::new();
    while let Some(bytes) = link.take_outgoing() {
        out.extend_from_slice(&bytes);
        while let Some(msg) = framing.decode(&mut out).expect("written framing reads") {
            echo.link().dispatch(msg);
        }
    }
    assert!(out.is_empty(), "a partial message was written");
    for e in echoed.lock().unwrap().iter() {
        assert!(
            !matches!(
                e,
                Error::Protocol(_) | Error::MalformedFrames { .. } | Error::HandlerPanicked { .. }
            ),
            "what the router wrote does not read back: {e}"
        );
    }

    // Still serving.
    let before = sentinels.load(Ordering::Relaxed);
    link.dispatch(Bytes::copy_from_slice(valid));
    assert_eq!(
        sentinels.load(Ordering::Relaxed),
        before + 1,
        "a valid message after this one is not served: {:?}",
        errors.lock().unwrap()
    );
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Point {
    x: f64,
    y: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
enum Tagged {
    Unit,
    New(u16),
    Pair(i8, bool),
    Named { a: char },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Untagged {
    Num(i64),
    Text(String),
    Point(Point),
    List(Vec<Untagged>),
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Flat {
    id: u32,
    #[serde(flatten)]
    rest: HashMap<String, Value>,
}

/// Reads every argument of `args` (and the one past the end) into many types,
/// and the list as a whole; checks that a detached copy reads the same.
fn read_all(args: &Args) {
    let _ = (
        args.event(),
        args.frame_id(),
        args.timeout(),
        args.is_empty(),
    );
    let kept = args.detached();
    let n = args.len().min(MAX_ARGS);
    for i in 0..=n {
        if args.is_callback(i) {
            let cb = args.callback(i).expect("a callback is a callback");
            let _ = (cb.frame_id(), cb.position(), cb.is_invoked());
            assert!(args.value(i).is_err(), "a callback read as data");
            continue;
        }
        let value = args.value(i);
        assert_eq!(
            format!("{value:?}"),
            format!("{:?}", kept.value(i)),
            "a detached copy reads argument {i} otherwise"
        );
        if let Ok(v) = value {
            let _ = format!("{v}");
            let _ = nmsg::from_value::<serde_json::Value>(v);
        }
        let _ = args.get::<serde_json::Value>(i);
        let _ = args.get::<String>(i);
        let _ = args.get::<Box<str>>(i);
        let _ = args.get::<char>(i);
        let _ = args.get::<bool>(i);
        let _ = args.get::<u8>(i);
        let _ = args.get::<u64>(i);
        let _ = args.get::<i64>(i);
        let _ = args.get::<i128>(i);
        let _ = args.get::<f32>(i);
        let _ = args.get::<f64>(i);
        let _ = args.get::<()>(i);
        let _ = args.get::<Option<String>>(i);
        let _ = args.get::<Vec<Value>>(i);
        let _ = args.get::<Vec<u8>>(i);
        let _ = args.get::<serde_bytes::ByteBuf>(i);
        let _ = args.get::<[u16; 3]>(i);
        let _ = args.get::<(u8, String)>(i);
        let _ = args.get::<HashMap<String, Value>>(i);
        let _ = args.get::<BTreeMap<u32, Option<f64>>>(i);
        let _ = args.get::<Point>(i);
        let _ = args.get::<Tagged>(i);
        let _ = args.get::<Untagged>(i);
        let _ = args.get::<Flat>(i);
    }
    let _ = format!("{args:?}");
    let _ = args.parse::<Args>();
    let _ = args.parse::<(Value,)>();
    let _ = args.parse::<(String, RemoteCallback)>();
    let _ = args.parse::<(Option<u64>, Vec<Value>, HashMap<String, Value>)>();
    let _ = args.parse::<(Value, Value, Value, Value, Value, Value, Value, Value)>();
}

/// Answers every callback of `args` with the data arguments it has, as values.
fn answer(args: &Args) {
    let n = args.len().min(MAX_ARGS);
    let values: Vec<Value> = (0..n).filter_map(|i| args.value(i).ok()).collect();
    for i in 0..n {
        let Ok(cb) = args.callback(i) else { continue };
        let mut out = OutArgs::new();
        for v in &values {
            out = out.data(v.clone());
        }
        if cb.call(out).is_ok() {
            assert!(cb.is_invoked());
            assert!(
                matches!(cb.call(()), Err(Error::AlreadyInvoked { .. })),
                "a callback answered twice"
            );
        }
    }
}
