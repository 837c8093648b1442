//! The messages of the original JavaScript implementation (`tests/data/wire.json`,
//! a copy of the shared vectors): each decodes, with both codecs, to the meaning
//! its name states; what our encoder makes of that meaning decodes back to it.
//! The messages of the seed's own release, nmsg 1.0.2 (`tests/data/wire-2016.json`):
//! each decodes to the frames it meant (`e: ""` on a response, `{"b": [..]}`
//! bulks), its float64 numbers into integer parameters, its CESU-8 into text.

use bytes::BytesMut;
use nmsg::codec::{decode_arg, encode_bulk};
use nmsg::frame::{Frame, Message};
use nmsg::framing::MessageCodec;
use nmsg::{Codec, Json, MsgPack, Value};
use serde_json::json;
use tokio_util::codec::{Decoder, Encoder};

// ----- the meaning of a message, independent of its encoding -----

mod meaning;

use meaning::{encode_frame, frame_meaning, Arg, FrameMeaning, Kind};

#[derive(Debug, Clone, PartialEq)]
enum Meaning {
    Single(FrameMeaning),
    Bulk(Vec<FrameMeaning>),
}

fn data(v: serde_json::Value) -> Arg {
    Arg::Data(nmsg::to_value(&v).unwrap())
}

fn event(id: u32, name: &str, args: Vec<Arg>) -> FrameMeaning {
    FrameMeaning {
        id,
        kind: Kind::Event(name.into()),
        args,
        timeout: None,
    }
}

fn response(id: u32, to: u32, position: u32, args: Vec<Arg>) -> FrameMeaning {
    FrameMeaning {
        id,
        kind: Kind::Response { to, position },
        args,
        timeout: None,
    }
}

/// What each vector's name says, written out by hand.
fn expected(name: &str) -> Meaning {
    use Arg::Callback as Cb;
    match name {
        "emit without args" => Meaning::Single(event(1, "ping", vec![])),
        "emit with data" => Meaning::Single(event(
            2,
            "message",
            vec![
                data(json!("hello")),
                data(json!(42)),
                data(json!(true)),
                data(json!(null)),
                data(json!({"key": "value"})),
                data(json!([1, 2.5, "x"])),
            ],
        )),
        "emit with trailing callback" => {
            Meaning::Single(event(3, "echo", vec![data(json!("hello")), Cb]))
        }
        "emit with callbacks in several positions" => Meaning::Single(event(
            4,
            "ping",
            vec![Cb, data(json!({"key": "value"})), Cb, Cb],
        )),
        "response: err('This is error message') to frame 7, callback position 1" => {
            Meaning::Single(response(
                5,
                7,
                1,
                vec![data(json!("This is error message"))],
            ))
        }
        "response: done('pong', cb) to frame 7, callback position 2; carries its own callback" => {
            Meaning::Single(response(6, 7, 2, vec![data(json!("pong")), Cb]))
        }
        "bulk message of two frames, as a buffering router sends it" => Meaning::Bulk(vec![
            event(7, "a", vec![data(json!(1))]),
            event(8, "b", vec![data(json!("two")), Cb]),
        ]),
        other => panic!("vector {other:?} has no stated meaning in this test: add one"),
    }
}

// ----- decoding and encoding through the public API -----

fn decode(codec: &dyn Codec, payload: &[u8]) -> Meaning {
    let one = |f: &Result<Frame, nmsg::ProtocolError>| {
        let f = f
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", codec.name()));
        frame_meaning(codec, payload, f)
    };
    match codec.decode_all(payload).unwrap() {
        Message::Single(f) => Meaning::Single(one(&f)),
        Message::Bulk(fs) => Meaning::Bulk(fs.iter().map(one).collect()),
    }
}

fn encode(codec: &dyn Codec, m: &Meaning) -> Vec<u8> {
    match m {
        Meaning::Single(f) => encode_frame(codec, f),
        Meaning::Bulk(fs) => {
            let frames: Vec<Vec<u8>> = fs.iter().map(|f| encode_frame(codec, f)).collect();
            let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
            encode_bulk(codec, &refs)
        }
    }
}

// ----- the vectors -----

struct Vector {
    name: String,
    json: Option<String>,
    msgpack: Option<Vec<u8>>,
    stream: Option<Vec<u8>>,
}

fn hex(s: &str) -> Vec<u8> {
    assert_eq!(s.len() % 2, 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn vectors() -> Vec<Vector> {
    vectors_of("wire.json")
}

/// The vectors of `tests/data/FILE`.
fn vectors_of(file: &str) -> Vec<Vector> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file);
    let text = std::fs::read_to_string(path).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| Vector {
            name: v["name"].as_str().unwrap().to_owned(),
            json: v["json"].as_str().map(str::to_owned),
            msgpack: v["msgpack_hex"].as_str().map(hex),
            stream: v["stream_hex"].as_str().map(hex),
        })
        .collect()
}

fn message_vectors() -> Vec<Vector> {
    vectors()
        .into_iter()
        .filter(|v| v.stream.is_none())
        .collect()
}

#[test]
fn the_copy_of_the_vectors_has_every_kind_of_message() {
    let all = vectors();
    assert_eq!(all.len(), 8);
    assert_eq!(all.iter().filter(|v| v.stream.is_some()).count(), 1);
    for v in all.iter().filter(|v| v.stream.is_none()) {
        assert!(v.json.is_some() && v.msgpack.is_some(), "{}", v.name);
    }
}

#[test]
fn every_msgpack_vector_decodes_to_the_meaning_its_name_states() {
    for v in message_vectors() {
        let got = decode(&MsgPack, v.msgpack.as_ref().unwrap());
        assert_eq!(got, expected(&v.name), "msgpack: {}", v.name);
    }
}

#[test]
fn every_json_vector_decodes_to_the_meaning_its_name_states() {
    for v in message_vectors() {
        let got = decode(&Json, v.json.as_ref().unwrap().as_bytes());
        assert_eq!(got, expected(&v.name), "json: {}", v.name);
    }
}

#[test]
fn data_arguments_of_the_vectors_decode_into_typed_values() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Keyed {
        key: String,
    }
    for (codec, payload) in [
        (&MsgPack as &dyn Codec, hex("83a16902a165a76d657373616765a16196a568656c6c6f2ac3c081a36b6579a576616c75659301cb4004000000000000a178")),
        (&Json, br#"{"i":2,"e":"message","a":["hello",42,true,null,{"key":"value"},[1,2.5,"x"]]}"#.to_vec()),
    ] {
        let Message::Single(Ok(frame)) = codec.decode_all(&payload).unwrap() else {
            panic!("{}: not a valid single frame", codec.name());
        };
        let arg = |n: usize| &payload[frame.data[n].clone()];
        assert_eq!(decode_arg::<String>(codec, arg(0)).unwrap(), "hello");
        assert_eq!(decode_arg::<u8>(codec, arg(1)).unwrap(), 42);
        assert!(decode_arg::<bool>(codec, arg(2)).unwrap());
        assert_eq!(decode_arg::<Option<u8>>(codec, arg(3)).unwrap(), None);
        assert_eq!(
            decode_arg::<Keyed>(codec, arg(4)).unwrap(),
            Keyed { key: "value".into() }
        );
        assert_eq!(
            decode_arg::<(u8, f64, String)>(codec, arg(5)).unwrap(),
            (1, 2.5, "x".to_owned())
        );
        assert!(decode_arg::<String>(codec, arg(1)).is_err(), "42 is no string");
    }
}

#[test]
fn what_we_encode_from_each_meaning_decodes_back_to_it_with_both_codecs() {
    for v in message_vectors() {
        let meaning = expected(&v.name);
        for codec in [&MsgPack as &dyn Codec, &Json] {
            let bytes = encode(codec, &meaning);
            assert_eq!(
                decode(codec, &bytes),
                meaning,
                "{}: {}",
                codec.name(),
                v.name
            );
        }
    }
}

#[test]
fn re_encoding_a_decoded_vector_reproduces_the_originals_bytes() {
    // Our encoder writes the keys in the original's order and numbers in
    // their smallest form, so the JavaScript bytes come back exactly.
    for v in message_vectors() {
        let msgpack = v.msgpack.as_ref().unwrap();
        let json = v.json.as_ref().unwrap().as_bytes();
        assert_eq!(
            &encode(&MsgPack, &decode(&MsgPack, msgpack)),
            msgpack,
            "msgpack: {}",
            v.name
        );
        assert_eq!(
            encode(&Json, &decode(&Json, json)),
            json,
            "json: {}",
            v.name
        );
    }
}

#[test]
fn a_vector_with_its_keys_in_another_order_has_the_same_meaning() {
    for v in message_vectors() {
        // serde_json's map sorts keys (a, c, e, f, i, r): not the original's order.
        let parsed: serde_json::Value = serde_json::from_str(v.json.as_ref().unwrap()).unwrap();
        let resorted = serde_json::to_vec(&parsed).unwrap();
        assert_eq!(
            decode(&Json, &resorted),
            expected(&v.name),
            "json: {}",
            v.name
        );

        let mut value = rmpv::decode::read_value(&mut &v.msgpack.as_ref().unwrap()[..]).unwrap();
        let reverse = |m: &mut Value| {
            if let Value::Map(entries) = m {
                entries.reverse();
            }
        };
        match &mut value {
            Value::Array(frames) => frames.iter_mut().for_each(reverse),
            m => reverse(m),
        }
        let mut reversed = Vec::new();
        rmpv::encode::write_value(&mut reversed, &value).unwrap();
        assert_eq!(
            decode(&MsgPack, &reversed),
            expected(&v.name),
            "msgpack: {}",
            v.name
        );
    }
}

#[test]
fn the_stream_vector_frames_the_payload_abc() {
    let v = vectors().into_iter().find(|v| v.stream.is_some()).unwrap();
    let stream = v.stream.unwrap();
    let mut codec = MessageCodec::default();
    let mut buf = BytesMut::from(&stream[..]);
    let msg = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(&msg[..], b"abc");
    assert!(buf.is_empty());
    assert!(codec.decode_eof(&mut buf).unwrap().is_none());

    let mut out = BytesMut::new();
    codec.encode(msg, &mut out).unwrap();
    assert_eq!(&out[..], &stream[..]);
}

#[test]
fn the_vectors_travel_through_the_framing_one_after_another() {
    // Every MsgPack vector, length-prefixed back to back, comes out of the
    // framing whole and in order.
    let payloads: Vec<Vec<u8>> = message_vectors()
        .into_iter()
        .map(|v| v.msgpack.unwrap())
        .collect();
    let mut codec = MessageCodec::default();
    let mut stream = BytesMut::new();
    for p in &payloads {
        codec
            .encode(bytes::Bytes::from(p.clone()), &mut stream)
            .unwrap();
    }
    for p in &payloads {
        let msg = codec.decode(&mut stream).unwrap().unwrap();
        assert_eq!(&msg[..], &p[..]);
    }
    assert!(stream.is_empty());
}

// ----- frames the vectors above do not show, as the original writes them -----
//
// The original's serializer writes `a` whenever a frame has arguments, so a
// frame whose arguments are all callbacks carries `a: []`, and a frame with
// none carries no `a`. It writes `t` (seconds) right after `a`, before `c`.
// These are its messages for such frames, keys in its order; the MsgPack
// bytes are what a JavaScript MsgPack encoder makes of the same objects.

struct Written {
    name: &'static str,
    json: &'static str,
    msgpack: &'static str,
    meaning: FrameMeaning,
}

fn written() -> Vec<Written> {
    use Arg::Callback as Cb;
    let timed = |t: f64| FrameMeaning {
        timeout: Some(t),
        ..event(1, "echo", vec![data(json!("hi")), Cb])
    };
    vec![
        Written {
            name: "emit with one callback and no data: a is []",
            json: r#"{"i":1,"e":"ping","a":[],"c":[0]}"#,
            msgpack: "84a16901a165a470696e67a16190a1639100",
            meaning: event(1, "ping", vec![Cb]),
        },
        Written {
            name: "response done(cb) to frame 7, position 0: a is []",
            json: r#"{"i":1,"a":[],"c":[0],"r":7,"f":0}"#,
            msgpack: "85a16901a16190a1639100a17207a16600",
            meaning: response(1, 7, 0, vec![Cb]),
        },
        Written {
            name: "response done() to frame 7, position 1: no a",
            json: r#"{"i":2,"r":7,"f":1}"#,
            msgpack: "83a16902a17207a16601",
            meaning: response(2, 7, 1, vec![]),
        },
        Written {
            name: "emit with data, a callback and a timeout of 3 s: t between a and c",
            json: r#"{"i":1,"e":"echo","a":["hi"],"t":3,"c":[1]}"#,
            msgpack: "85a16901a165a46563686fa16191a26869a17403a1639101",
            meaning: timed(3.0),
        },
        Written {
            name: "emit with data, a callback and a timeout of 1.5 s",
            json: r#"{"i":1,"e":"echo","a":["hi"],"t":1.5,"c":[1]}"#,
            msgpack: "85a16901a165a46563686fa16191a26869a174cb3ff8000000000000a1639101",
            meaning: timed(1.5),
        },
    ]
}

#[test]
fn frames_with_only_callbacks_or_a_timeout_encode_to_the_originals_bytes() {
    for w in written() {
        let msgpack = hex(w.msgpack);
        assert_eq!(
            encode_frame(&MsgPack, &w.meaning),
            msgpack,
            "msgpack: {}",
            w.name
        );
        assert_eq!(
            String::from_utf8(encode_frame(&Json, &w.meaning)).unwrap(),
            w.json,
            "json: {}",
            w.name
        );
        assert_eq!(
            decode(&MsgPack, &msgpack),
            Meaning::Single(w.meaning.clone()),
            "msgpack: {}",
            w.name
        );
        assert_eq!(
            decode(&Json, w.json.as_bytes()),
            Meaning::Single(w.meaning.clone()),
            "json: {}",
            w.name
        );
    }
}

/// The payloads of the length-prefixed messages a router has queued.
fn queued(router: &nmsg::Router) -> Vec<Vec<u8>> {
    let out = router
        .link()
        .take_outgoing()
        .expect("the router queued a message");
    let mut codec = MessageCodec::default();
    let mut buf = BytesMut::from(&out[..]);
    let mut list = Vec::new();
    while let Some(msg) = codec.decode(&mut buf).unwrap() {
        list.push(msg.to_vec());
    }
    assert!(buf.is_empty(), "a partial message left over");
    list
}

fn original_bytes(codec: &dyn Codec, name_starts: &str) -> Vec<u8> {
    let w = written()
        .into_iter()
        .find(|w| w.name.starts_with(name_starts))
        .unwrap();
    if codec.name() == Json.name() {
        w.json.as_bytes().to_vec()
    } else {
        hex(w.msgpack)
    }
}

#[tokio::test]
async fn a_router_writes_callback_only_frames_and_t_as_the_original() {
    use nmsg::{args, Callback, Router};
    use std::time::Duration;
    for codec in [&MsgPack as &dyn Codec, &Json] {
        let build = || {
            if codec.name() == Json.name() {
                Router::builder().codec(Json).build()
            } else {
                Router::new()
            }
        };
        let name = codec.name();

        // emit with a callback only
        let router = build();
        let (cb, _reply) = Callback::<()>::once();
        router.emit("ping", args![cb]).unwrap();
        assert_eq!(
            queued(&router),
            [original_bytes(codec, "emit with one callback")],
            "{name}: emit(cb)"
        );

        // a request without arguments: its answer callback is the only argument
        let router = build();
        let _answer = router.request::<()>("ping", ());
        assert_eq!(
            queued(&router),
            [original_bytes(codec, "emit with one callback")],
            "{name}: request()"
        );

        // a timeout other than the default, on a frame with data and a callback
        for (t, vector) in [
            (3.0, "emit with data, a callback and a timeout of 3 s"),
            (1.5, "emit with data, a callback and a timeout of 1.5 s"),
        ] {
            let router = build();
            let (cb, _reply) = Callback::<()>::once();
            router
                .emit_with_timeout("echo", args!["hi", cb], Duration::from_secs_f64(t))
                .unwrap();
            assert_eq!(
                queued(&router),
                [original_bytes(codec, vector)],
                "{name}: t = {t}"
            );
        }

        // responses: one with a callback only, one with no arguments
        let router = build();
        let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
        router.on("x", move |args: nmsg::Args| -> Result<(), nmsg::Error> {
            args.callback(0)?.call((Callback::<()>::new(|()| {}),))?;
            args.callback(1)?.call(())?;
            let _ = done_tx.send(());
            Ok(())
        });
        let request = encode_frame(codec, &event(7, "x", vec![Arg::Callback, Arg::Callback]));
        router.link().dispatch(bytes::Bytes::from(request));
        tokio::time::timeout(Duration::from_secs(10), done.recv())
            .await
            .expect("the handler ran")
            .unwrap();
        assert_eq!(
            queued(&router),
            [
                original_bytes(codec, "response done(cb)"),
                original_bytes(codec, "response done()")
            ],
            "{name}: responses"
        );
    }
}

/// One method of each shape of README's table of typed methods.
#[nmsg::events]
pub trait Shapes {
    fn event(&self, a: String);
    async fn value(&self) -> String;
    async fn error_first(&self) -> Result<String, String>;
    fn callback(&self, cb: nmsg::Callback<(String, u8)>);
}

#[tokio::test]
async fn the_typed_client_writes_the_frames_of_readmes_table() {
    let router = nmsg::Router::builder().codec(Json).build();
    let client = ShapesClient::new(&router);
    client.event("x".into()).unwrap();
    let _value = client.value();
    let _error_first = client.error_first();
    let (cb, _reply) = nmsg::Callback::once();
    client.callback(cb).unwrap();
    let frames: Vec<String> = queued(&router)
        .into_iter()
        .map(|m| String::from_utf8(m).unwrap())
        .collect();
    assert_eq!(
        frames,
        [
            r#"{"i":1,"e":"event","a":["x"]}"#,
            r#"{"i":2,"e":"value","a":[],"c":[0]}"#,
            r#"{"i":3,"e":"error_first","a":[],"c":[0]}"#,
            r#"{"i":4,"e":"callback","a":[],"c":[0]}"#,
        ]
    );
}

// ----- the seed's release: nmsg 1.0.2, nmsg-rpc 1.0.6, msgpack-lite 0.1.17 -----

const NUMBERS_2016: &str = "numbers outside 32-bit integers are float64 on the wire (msgpack-lite)";

/// What each vector of wire-2016.json meant, written out by hand. The numbers
/// vector's data differ by codec (float64 in MsgPack, integers in JSON): its
/// arguments are checked by `floats_of_the_2016_vectors_decode_into_integer_parameters`.
fn expected_2016(name: &str) -> Meaning {
    use Arg::Callback as Cb;
    match name {
        "emit without args" => Meaning::Single(event(1, "ping", vec![])),
        "emit with trailing callback" => {
            Meaning::Single(event(2, "echo", vec![data(json!("hello")), Cb]))
        }
        "response to frame 2, callback position 1: every frame of this release carries e, empty for a response" => {
            Meaning::Single(response(3, 2, 1, vec![data(json!("hello"))]))
        }
        "emit with callbacks in two positions" => Meaning::Single(event(
            4,
            "ping",
            vec![data(json!({"key": "value"})), Cb, Cb],
        )),
        "response carrying its own callback (done(\"pong\", cb))" => {
            Meaning::Single(response(5, 4, 2, vec![data(json!("pong")), Cb]))
        }
        NUMBERS_2016 => Meaning::Single(event(6, "big", vec![])),
        "bulk of this release: a map with one key b holding the frames (RouterBuffered, 5 ms cycle)" => {
            Meaning::Bulk(vec![
                event(7, "a", vec![data(json!(1))]),
                event(8, "b", vec![data(json!("two")), Cb]),
            ])
        }
        name if name.starts_with("a string with a character outside the Basic Multilingual Plane") => {
            Meaning::Single(event(9, "echo", vec![data(json!("a\u{1F30D}"))]))
        }
        other => panic!("vector {other:?} of wire-2016.json has no stated meaning in this test: add one"),
    }
}

/// A meaning with the data of the numbers vector left out (see [`expected_2016`]).
fn without_numbers(name: &str, mut m: Meaning) -> Meaning {
    if let (NUMBERS_2016, Meaning::Single(f)) = (name, &mut m) {
        assert_eq!(f.args.len(), 4, "the numbers vector has four arguments");
        f.args.clear();
    }
    m
}

#[test]
fn the_copy_of_the_2016_vectors_has_every_kind_of_message() {
    let all = vectors_of("wire-2016.json");
    assert_eq!(all.len(), 8);
    for v in &all {
        assert!(v.json.is_some() && v.msgpack.is_some(), "{}", v.name);
    }
}

#[test]
fn every_2016_vector_decodes_to_the_frames_it_meant_with_both_codecs() {
    for v in vectors_of("wire-2016.json") {
        for (codec, payload) in [
            (&MsgPack as &dyn Codec, v.msgpack.clone().unwrap()),
            (&Json, v.json.clone().unwrap().into_bytes()),
        ] {
            let got = without_numbers(&v.name, decode(codec, &payload));
            assert_eq!(got, expected_2016(&v.name), "{}: {}", codec.name(), v.name);
        }
    }
}

/// The 2016 vector named `name_starts…`, as the MsgPack codec reads it.
fn payload_2016(name_starts: &str) -> Vec<u8> {
    vectors_of("wire-2016.json")
        .into_iter()
        .find(|v| v.name.starts_with(name_starts))
        .unwrap_or_else(|| panic!("no 2016 vector named {name_starts:?}…"))
        .msgpack
        .unwrap()
}

#[test]
fn floats_of_the_2016_vectors_decode_into_integer_parameters() {
    let payload = payload_2016(NUMBERS_2016);
    let Message::Single(Ok(frame)) = MsgPack.decode_all(&payload).unwrap() else {
        panic!("the numbers vector is not a valid single frame");
    };
    let arg = |n: usize| &payload[frame.data[n].clone()];
    assert_eq!(decode_arg::<i64>(&MsgPack, arg(0)).unwrap(), 1 << 40);
    assert_eq!(
        decode_arg::<u64>(&MsgPack, arg(1)).unwrap(),
        1_460_592_000_000
    );
    assert_eq!(decode_arg::<i64>(&MsgPack, arg(2)).unwrap(), -5_000_000_000);
    assert!(
        decode_arg::<u32>(&MsgPack, arg(2)).is_err(),
        "-5e9 is no u32"
    );
    assert!(
        decode_arg::<i64>(&MsgPack, arg(3)).is_err(),
        "3.5 is no integer"
    );
    assert_eq!(decode_arg::<f64>(&MsgPack, arg(3)).unwrap(), 3.5);
}

#[test]
fn the_cesu_8_string_of_the_2016_vectors_decodes_to_the_text_meant() {
    let payload = payload_2016("a string with a character outside the Basic Multilingual Plane");
    let Message::Single(Ok(frame)) = MsgPack.decode_all(&payload).unwrap() else {
        panic!("the CESU-8 vector is not a valid single frame");
    };
    let text = &payload[frame.data[0].clone()];
    assert_eq!(decode_arg::<String>(&MsgPack, text).unwrap(), "a\u{1F30D}");
    assert_eq!(
        decode_arg::<Value>(&MsgPack, text).unwrap(),
        Value::from("a\u{1F30D}")
    );
}

/// A router reads the 2016 messages as that release meant them: handlers get
/// the numbers as `i64`/`u64` and the CESU-8 string as text (`Args::get`), both
/// frames of a `{"b": ..}` bulk are routed, and the response with `e: ""`
/// answers the router's own request.
#[tokio::test]
async fn a_router_reads_the_2016_messages_as_meant() {
    use nmsg::{Args, Error, Router};
    use std::time::Duration;
    let router = Router::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let sent = tx.clone();
    router.on("big", move |args: Args| -> Result<(), Error> {
        let got = (
            args.get::<i64>(0)?,
            args.get::<u64>(1)?,
            args.get::<i64>(2)?,
            args.get::<f64>(3)?,
        );
        let _ = sent.send(format!("big{got:?}"));
        Ok(())
    });
    let sent = tx.clone();
    router.on("echo", move |args: Args| -> Result<(), Error> {
        let _ = sent.send(format!("echo({:?})", args.get::<String>(0)?));
        Ok(())
    });
    for name in ["a", "b"] {
        let sent = tx.clone();
        router.on(name, move |_: Args| {
            let _ = sent.send(name.to_owned());
        });
    }
    let errors = tx.clone();
    router.on_error(move |e| {
        let _ = errors.send(format!("error: {e}"));
    });
    // Frame 1 goes out first, so that the request is frame 2, which the
    // response vector answers.
    router.emit("first", ()).unwrap();
    let answer = router.request::<(String,)>("echo", ("hello",));
    for name in [
        NUMBERS_2016,
        "bulk of this release",
        "a string with a character outside the Basic Multilingual Plane",
        "response to frame 2, callback position 1",
    ] {
        router
            .link()
            .dispatch(bytes::Bytes::from(payload_2016(name)));
    }
    let (hello,) = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("the response with e: \"\" answered the request")
        .unwrap();
    assert_eq!(hello, "hello");
    // Sync handlers have run by the time `dispatch` returns.
    let mut seen = Vec::new();
    while let Ok(s) = rx.try_recv() {
        seen.push(s);
    }
    assert_eq!(
        seen,
        [
            "big(1099511627776, 1460592000000, -5000000000, 3.5)",
            "a",
            "b",
            "echo(\"a\u{1F30D}\")",
        ]
    );
}
