//! JavaScript numbers: a Node.js peer whose MsgPack library writes every number
//! outside the 32-bit range as a float64 (msgpack-lite 0.1 and 0.2, as
//! `Date.now()` or `2 ** 40`) reaches integer parameters, typed and dynamic;
//! a float that is no integer of the type is a clear error.

use std::time::Duration;

use nmsg::{args, Args, Callback};

#[nmsg::events]
pub trait Clock {
    fn tick(&self, at: u64);
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn sub(&self, a: i64, b: i64) -> Result<i64, String>;
}

struct Ticks(tokio::sync::mpsc::UnboundedSender<u64>);

impl Clock for Ticks {
    fn tick(&self, at: u64) {
        let _ = self.0.send(at);
    }

    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn sub(&self, a: i64, b: i64) -> Result<i64, String> {
        Ok(a - b)
    }
}

/// The floats msgpack-lite writes for `Date.now()`, 2^40, -5e9 and 2^53 − 1.
const JS_NUMBERS: [f64; 4] = [
    1_460_592_000_000.0,
    1_099_511_627_776.0,
    -5_000_000_000.0,
    9_007_199_254_740_991.0,
];

#[tokio::test]
async fn a_typed_server_takes_integral_floats_for_integer_parameters() {
    let (client, server, _conns) = nmsg::transport::memory::pair();
    let (tx, mut ticks) = tokio::sync::mpsc::unbounded_channel();
    ClockApi::new(Ticks(tx)).register(&server);
    // The frames a msgpack-lite client writes: floats where Rust wants integers.
    client.emit("tick", args![1_460_592_000_000.0f64]).unwrap();
    let at = tokio::time::timeout(Duration::from_secs(5), ticks.recv()).await;
    assert_eq!(at.unwrap(), Some(1_460_592_000_000));
    for (a, b) in [(JS_NUMBERS[1], 1.0), (JS_NUMBERS[2], JS_NUMBERS[3])] {
        let (done, reply) = Callback::<(i64,)>::once();
        client.emit("add", args![a, b, done]).unwrap();
        let (sum,) = tokio::time::timeout(Duration::from_secs(5), reply)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sum, a as i64 + b as i64);
    }
}

#[tokio::test]
async fn a_typed_reply_takes_an_integral_float() {
    let (client, server, _conns) = nmsg::transport::memory::pair();
    // A JavaScript server answering add with a float64 sum.
    server.on("add", |args: Args| -> Result<(), nmsg::Error> {
        let sum = args.get::<f64>(0)? + args.get::<f64>(1)?;
        args.callback(2)?.call((sum,))
    });
    let sum = tokio::time::timeout(
        Duration::from_secs(5),
        ClockClient::new(&client).add(1 << 40, 1),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(sum, (1 << 40) + 1);
}

#[tokio::test]
async fn args_take_integral_floats_and_name_what_does_not_fit() {
    let (client, server, _conns) = nmsg::transport::memory::pair();
    let (tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    server.on("n", move |args: Args| {
        let _ = tx.send((
            args.get::<u64>(0).map_err(|e| e.to_string()),
            args.parse::<(i64, i64, u8)>()
                .map(|t| t.1)
                .map_err(|e| e.to_string()),
            args.get::<i64>(1).map_err(|e| e.to_string()),
            args.get::<u32>(2).map_err(|e| e.to_string()),
            args.get::<i32>(3).map_err(|e| e.to_string()),
        ));
    });
    client
        .emit("n", args![JS_NUMBERS[0], JS_NUMBERS[2], 1.5f64, f64::NAN])
        .unwrap();
    let (first, parsed, second, third, fourth) =
        tokio::time::timeout(Duration::from_secs(5), got.recv())
            .await
            .unwrap()
            .unwrap();
    assert_eq!(first, Ok(1_460_592_000_000));
    assert_eq!(second, Ok(-5_000_000_000));
    assert_eq!(
        third,
        Err("argument 2: invalid type: floating point `1.5`, expected u32".into())
    );
    assert_eq!(
        parsed,
        Err("argument 2: invalid type: floating point `1.5`, expected u8".into())
    );
    assert_eq!(
        fourth,
        Err("argument 3: invalid type: floating point `NaN`, expected i32".into())
    );
}

#[test]
fn from_value_takes_integral_floats() {
    let v = nmsg::to_value(&(JS_NUMBERS[0], 2.5, JS_NUMBERS[2])).unwrap();
    let (at, half, neg): (u64, f64, i64) = nmsg::from_value(v).unwrap();
    assert_eq!((at, half, neg), (1_460_592_000_000, 2.5, -5_000_000_000));
    let err = nmsg::from_value::<(u64, u64)>(nmsg::to_value(&(1.0, 0.5)).unwrap()).unwrap_err();
    assert!(
        err.to_string()
            .contains("floating point `0.5`, expected u64"),
        "{err}"
    );
}

#[tokio::test]
async fn the_json_codec_takes_integral_floats_too() {
    let a = nmsg::Router::builder().codec(nmsg::Json).build();
    let b = nmsg::Router::builder().codec(nmsg::Json).build();
    let _conns = nmsg::transport::memory::link(&a, &b);
    let (tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    b.on("n", move |args: Args| {
        let _ = tx.send(args.get::<u64>(0).map_err(|e| e.to_string()));
    });
    a.emit("n", args![JS_NUMBERS[1]]).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), got.recv())
        .await
        .unwrap();
    assert_eq!(got, Some(Ok(1 << 40)));
}

#[tokio::test(start_paused = true)]
async fn an_error_first_method_answers_arguments_that_do_not_fit_at_once() {
    let (client, server, _conns) = nmsg::transport::memory::pair();
    let (tx, _ticks) = tokio::sync::mpsc::unbounded_channel();
    ClockApi::new(Ticks(tx)).register(&server);
    let (errors_tx, mut errors) = tokio::sync::mpsc::unbounded_channel();
    server.on_error(move |e| {
        let _ = errors_tx.send(e.to_string());
    });
    // A Node caller's `sub(1.5, 2, (err, v) => ..)`: the error comes back, not a timeout.
    let (done, reply) = Callback::<(Option<String>, Option<i64>)>::once();
    client.emit("sub", args![1.5f64, 2, done]).unwrap();
    let start = tokio::time::Instant::now();
    let (error, value) = reply.await.unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "answered after {:?}",
        start.elapsed()
    );
    assert_eq!(
        error.as_deref(),
        Some("bad arguments for sub: argument 0: invalid type: floating point `1.5`, expected i64")
    );
    assert_eq!(value, None);
    // The error hook hears of it, with the event's name.
    let reported = errors.recv().await.unwrap();
    assert!(
        reported.contains("sub") && reported.contains("floating point `1.5`"),
        "{reported}"
    );
    // And the typed client sees the handler's error, not a timeout.
    let answer = ClockClient::new(&client).sub(5, 2).await.unwrap();
    assert_eq!(answer, Ok(3));
}

/// "a🌍" as msgpack-lite 0.1.17 writes it: the surrogate halves as 3-byte
/// sequences (CESU-8), not valid UTF-8.
const CESU8_STR: &[u8] = &[0xa7, 0x61, 0xed, 0xa0, 0xbc, 0xed, 0xbc, 0x8d];

/// A message of one frame `{i: 9, e: "echo", a: [<CESU-8 "a🌍">, <bin of the same bytes>]}`,
/// as the seed's release writes it.
fn cesu8_frame() -> bytes::Bytes {
    let mut m = vec![
        0x83, 0xa1, b'i', 0x09, 0xa1, b'e', 0xa4, b'e', b'c', b'h', b'o', 0xa1, b'a', 0x92,
    ];
    m.extend_from_slice(CESU8_STR);
    m.extend_from_slice(&[0xc4, 7]);
    m.extend_from_slice(&CESU8_STR[1..]);
    bytes::Bytes::from(m)
}

#[test]
fn strings_written_as_cesu8_decode_to_the_characters_meant() {
    let router = nmsg::Router::new();
    let got = std::sync::Arc::new(std::sync::Mutex::new(None));
    let keep = got.clone();
    router.on("echo", move |args: Args| {
        *keep.lock().unwrap() = Some((
            args.get::<String>(0).map_err(|e| e.to_string()),
            args.value(0).map_err(|e| e.to_string()),
            args.get::<serde_bytes::ByteBuf>(1)
                .map(|b| b.into_vec())
                .map_err(|e| e.to_string()),
            args.value(1).map_err(|e| e.to_string()),
        ));
    });
    router.link().dispatch(cesu8_frame());
    let (text, value, bytes, bin) = got.lock().unwrap().take().expect("the frame was routed");
    assert_eq!(text, Ok("a🌍".to_string()));
    assert_eq!(value, Ok(nmsg::Value::from("a🌍")));
    // Binary stays binary, whatever its bytes.
    assert_eq!(bytes, Ok(CESU8_STR[1..].to_vec()));
    assert_eq!(bin, Ok(nmsg::Value::Binary(CESU8_STR[1..].to_vec())));
}

#[test]
fn other_invalid_utf8_is_still_an_error() {
    let router = nmsg::Router::new();
    let got = std::sync::Arc::new(std::sync::Mutex::new(None));
    let keep = got.clone();
    router.on("echo", move |args: Args| {
        *keep.lock().unwrap() = Some(args.get::<String>(0).map_err(|e| e.to_string()));
    });
    // A lone high surrogate, and a stray 0xff byte.
    for bad in [&[0xa4, 0x61, 0xed, 0xa0, 0xbc][..], &[0xa2, 0xed, 0xff]] {
        let mut m = vec![
            0x83, 0xa1, b'i', 0x09, 0xa1, b'e', 0xa4, b'e', b'c', b'h', b'o', 0xa1, b'a', 0x91,
        ];
        m.extend_from_slice(bad);
        router.link().dispatch(bytes::Bytes::from(m));
        let text = got.lock().unwrap().take().expect("the frame was routed");
        assert!(text.is_err(), "{bad:x?} decoded as {text:?}");
    }
}
