//! Property tests: no input panics a decoder, and every valid frame
//! round-trips through each codec to the same meaning.

use std::ops::Range;

use bytes::Bytes;
use nmsg::codec::{decode_arg, encode_bulk};
use nmsg::frame::Message;
use nmsg::{Args, Codec, Json, MsgPack, Router, Value};
use proptest::prelude::*;

// ----- the meaning of a frame -----

mod meaning;

use meaning::{encode_frame, frame_meaning as meaning, Arg, FrameMeaning as Spec, Kind};

fn decode_all(codec: &dyn Codec, payload: &[u8]) -> (bool, Vec<Spec>) {
    let message = codec.decode_all(payload).unwrap();
    let bulk = matches!(message, Message::Bulk(_));
    let specs = message
        .into_frames()
        .into_iter()
        .map(|f| meaning(codec, payload, &f.unwrap()))
        .collect();
    (bulk, specs)
}

// ----- strategies -----

/// Nested dynamic values. JSON has no binary and only string keys, and turns
/// non-finite floats into null, so those are left out for it.
fn value(binary: bool) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(move |b| if binary {
            Value::Binary(b)
        } else {
            Value::Nil
        }),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((".{0,6}", inner), 0..5).prop_map(|kv| {
                Value::Map(kv.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
            }),
        ]
    })
}

fn spec(binary: bool) -> impl Strategy<Value = Spec> {
    let kind = prop_oneof![
        ".{0,16}".prop_map(Kind::Event),
        (any::<u32>(), any::<u32>()).prop_map(|(to, position)| Kind::Response { to, position }),
    ];
    let arg = prop_oneof![
        3 => value(binary).prop_map(Arg::Data),
        1 => Just(Arg::Callback),
    ];
    let timeout = proptest::option::of(prop_oneof![
        (0u32..1_000_000).prop_map(|ms| ms as f64 / 1000.0),
        (0u64..10_000_000_000).prop_map(|s| s as f64),
        0.0f64..1e12,
    ]);
    (
        any::<u32>(),
        kind,
        proptest::collection::vec(arg, 0..7),
        timeout,
    )
        .prop_map(|(id, kind, args, timeout)| Spec {
            id,
            kind,
            args,
            timeout,
        })
}

/// Damages an encoding: flips, inserts, removes bytes, or cuts it short.
fn mutated(base: Vec<u8>, edits: Vec<(usize, u8, u8)>) -> Vec<u8> {
    let mut out = base;
    for (at, op, byte) in edits {
        if out.is_empty() {
            out.push(byte);
            continue;
        }
        let at = at % out.len();
        match op % 4 {
            0 => out[at] = byte,
            1 => out.insert(at, byte),
            2 => {
                out.remove(at);
            }
            _ => out.truncate(at),
        }
    }
    out
}

/// Decodes whatever a codec accepts, down to every data argument, in every
/// way a handler might ask for it.
fn decode_everything(codec: &dyn Codec, payload: &[u8]) {
    let Ok(message) = codec.decode_all(payload) else {
        return;
    };
    for frame in message.into_frames().into_iter().flatten() {
        let Range { start, end } = frame
            .data
            .iter()
            .fold(0..0, |acc, r| acc.start.min(r.start)..acc.end.max(r.end));
        assert!(start <= end && end <= payload.len());
        assert!(frame.callbacks.windows(2).all(|w| w[0] < w[1]));
        assert!(frame
            .callbacks
            .iter()
            .all(|&c| (c as usize) < frame.arg_count()));
        for r in &frame.data {
            let raw = &payload[r.clone()];
            let _ = decode_arg::<Value>(codec, raw);
            let _ = decode_arg::<String>(codec, raw);
            let _ = decode_arg::<Vec<u64>>(codec, raw);
            let _ = decode_arg::<std::collections::HashMap<String, f64>>(codec, raw);
            let _ = decode_arg::<serde_bytes::ByteBuf>(codec, raw);
            let _ = decode_arg::<(bool, Option<i8>)>(codec, raw);
        }
    }
}

/// A router whose wildcard reads every argument, fed the same bytes.
fn dispatch_everything(codec: impl Codec, payload: &[u8]) {
    let router = Router::builder().codec(codec).build();
    router.on_error(|_| {});
    router.on("*", |args: Args| {
        for i in 0..args.len() {
            if !args.is_callback(i) {
                let _ = args.value(i);
            }
        }
        let _ = format!("{args:?}");
    });
    router.link().dispatch(Bytes::copy_from_slice(payload));
}

/// 256 cases each, so the file runs in about a second; `PROPTEST_CASES=N`
/// asks for more.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic_either_codec(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        decode_everything(&MsgPack, &bytes);
        decode_everything(&Json, &bytes);
        dispatch_everything(MsgPack, &bytes);
        dispatch_everything(Json, &bytes);
    }

    #[test]
    fn json_like_text_never_panics_the_json_codec(text in r#"[\[\]{}":,0-9a-z .eE+\-\\]{0,80}"#) {
        decode_everything(&Json, text.as_bytes());
        dispatch_everything(Json, text.as_bytes());
    }

    #[test]
    fn damaged_msgpack_frames_never_panic(
        frame in spec(true),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
    ) {
        let bytes = mutated(encode_frame(&MsgPack, &frame), edits);
        decode_everything(&MsgPack, &bytes);
        dispatch_everything(MsgPack, &bytes);
    }

    #[test]
    fn damaged_json_frames_never_panic(
        frame in spec(false),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
    ) {
        let bytes = mutated(encode_frame(&Json, &frame), edits);
        decode_everything(&Json, &bytes);
        dispatch_everything(Json, &bytes);
    }

    #[test]
    fn valid_frames_round_trip_through_msgpack(frame in spec(true)) {
        let bytes = encode_frame(&MsgPack, &frame);
        prop_assert_eq!(decode_all(&MsgPack, &bytes), (false, vec![frame]));
    }

    #[test]
    fn valid_frames_round_trip_through_json(frame in spec(false)) {
        let bytes = encode_frame(&Json, &frame);
        prop_assert_eq!(decode_all(&Json, &bytes), (false, vec![frame]));
    }

    #[test]
    fn valid_bulks_round_trip_through_both_codecs(
        with_binary in proptest::collection::vec(spec(true), 1..5),
        without in proptest::collection::vec(spec(false), 1..5),
    ) {
        for (codec, frames) in [(&MsgPack as &dyn Codec, &with_binary), (&Json, &without)] {
            let encoded: Vec<Vec<u8>> = frames.iter().map(|f| encode_frame(codec, f)).collect();
            let refs: Vec<&[u8]> = encoded.iter().map(|e| &e[..]).collect();
            let bulk = encode_bulk(codec, &refs);
            prop_assert_eq!(decode_all(codec, &bulk), (true, frames.clone()));
        }
    }
}
