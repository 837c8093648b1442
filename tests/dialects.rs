//! The original's releases: a response written with `e: ""`, bulks written as
//! `{"b": [frames]}`, and answering each peer in the bulk form it uses. The
//! messages are those of the seed's release (nmsg 1.0.2, nmsg-rpc 1.0.6), as
//! `tests/data/wire-2016.json` holds them.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use nmsg::{args, Args, Buffering, BulkForm, Callback, Codec, Json, MsgPack, Router};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A router with `codec` and `buffering`, recording the events it serves.
fn router(codec: impl Codec, buffering: Buffering) -> (Router, Arc<Mutex<Vec<String>>>) {
    let router = Router::builder().codec(codec).buffering(buffering).build();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    router.on("*", move |args: Args| {
        let name: String = args.get(0).unwrap();
        log.lock().unwrap().push(name);
    });
    (router, seen)
}

/// The payload of the one message `bytes` holds (after its length prefix).
fn payload(bytes: &[u8]) -> &[u8] {
    let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
    assert_eq!(bytes.len(), 4 + len, "one message");
    &bytes[4..]
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_response_with_an_empty_event_name_invokes_its_callback() {
    for (codec, response) in [
        (
            Box::new(MsgPack) as Box<dyn Codec>,
            // {"i":3,"e":"","a":["hello"],"r":1,"f":1}
            hex("85a16903a165a0a16191a568656c6c6fa17201a16601"),
        ),
        (
            Box::new(Json),
            br#"{"i":3,"e":"","a":["hello"],"r":1,"f":1}"#.to_vec(),
        ),
    ] {
        let router = Router::builder().codec_arc(codec.into()).build();
        let errors = Arc::new(Mutex::new(Vec::new()));
        let log = errors.clone();
        router.on_error(move |e| log.lock().unwrap().push(e.to_string()));
        let (done, reply) = Callback::<(String,)>::once();
        router.emit("echo", args!["hello", done]).unwrap();
        let _request = router
            .link()
            .take_outgoing()
            .expect("the request is queued");
        router.link().dispatch(Bytes::from(response));
        let (text,) = tokio::time::timeout(std::time::Duration::from_secs(1), reply)
            .await
            .expect("the response was routed to the callback")
            .unwrap();
        assert_eq!(text, "hello");
        assert_eq!(*errors.lock().unwrap(), Vec::<String>::new());
    }
}

#[test]
fn an_event_with_an_empty_name_and_no_r_stays_an_event() {
    let (router, seen) = router(Json, Buffering::Off);
    router
        .link()
        .dispatch(Bytes::from_static(br#"{"i":1,"e":"","a":[1]}"#));
    assert_eq!(*seen.lock().unwrap(), [""]);
}

#[test]
fn a_keyed_bulk_is_routed_as_its_frames_in_order() {
    // {"b":[{"i":7,"e":"a","a":[1]},{"i":8,"e":"b","a":["two"],"c":[1]}]}
    let msgpack = hex("81a1629283a16907a165a161a161910184a16908a165a162a16191a374776fa1639101");
    let json = br#" { "b" : [{"i":7,"e":"a","a":[1]},{"i":8,"e":"b","a":["two"],"c":[1]}]}"#;
    for (codec, message) in [
        (Box::new(MsgPack) as Box<dyn Codec>, msgpack),
        (Box::new(Json), json.to_vec()),
    ] {
        let router = Router::builder().codec_arc(codec.into()).build();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        router.on("*", move |args: Args| {
            let name: String = args.get(0).unwrap();
            log.lock().unwrap().push((name, args.len()));
        });
        router.link().dispatch(Bytes::from(message));
        assert_eq!(
            *seen.lock().unwrap(),
            [("a".to_string(), 2), ("b".to_string(), 3)]
        );
    }
}

#[test]
fn a_map_with_other_keys_is_a_frame_not_a_bulk() {
    let (router, seen) = router(Json, Buffering::Off);
    let errors = Arc::new(Mutex::new(Vec::new()));
    let log = errors.clone();
    router.on_error(move |e| log.lock().unwrap().push(e.to_string()));
    // `b` first, with the keys of a frame: an unknown key, skipped.
    router
        .link()
        .dispatch(Bytes::from_static(br#"{"b":[],"i":1,"e":"x"}"#));
    // Only `b`, not an array: no frame either.
    router.link().dispatch(Bytes::from_static(br#"{"b":1}"#));
    assert_eq!(*seen.lock().unwrap(), ["x"]);
    let errors = errors.lock().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("`i`"), "{errors:?}");
}

/// The bulk a router with Idle buffering sends after serving `incoming`:
/// two `ping` events each answered through its callback.
fn answer_in_bulk(router: &Router, incoming: &[u8]) -> Vec<u8> {
    router.link().dispatch(Bytes::copy_from_slice(incoming));
    let out = router
        .link()
        .take_outgoing()
        .expect("the answers are queued");
    payload(&out).to_vec()
}

fn pinging_router(codec: impl Codec, form: Option<BulkForm>) -> Router {
    let mut builder = Router::builder().codec(codec).buffering(Buffering::Idle);
    if let Some(form) = form {
        builder = builder.bulk_form(form);
    }
    let router = builder.build();
    router.on("ping", |args: Args| -> Result<(), nmsg::Error> {
        args.callback(0)?.call(("pong",))
    });
    router
}

#[test]
fn a_peer_is_answered_in_the_bulk_form_it_sends() {
    // Two pings with a callback each, as a keyed bulk and as an array bulk.
    let keyed = br#"{"b":[{"i":1,"e":"ping","a":[],"c":[0]},{"i":2,"e":"ping","a":[],"c":[0]}]}"#;
    let array = br#"[{"i":3,"e":"ping","a":[],"c":[0]},{"i":4,"e":"ping","a":[],"c":[0]}]"#;
    let single = br#"{"i":5,"e":"ping","a":[],"c":[0]}"#;
    let router = pinging_router(Json, None);
    // Arrays until the peer sends a bulk: a single frame says nothing.
    let answer = answer_in_bulk(&router, single);
    assert_eq!(answer, br#"[{"i":1,"a":["pong"],"r":5,"f":0}]"#);
    let answer = answer_in_bulk(&router, keyed);
    assert_eq!(
        answer,
        br#"{"b":[{"i":2,"a":["pong"],"r":1,"f":0},{"i":3,"a":["pong"],"r":2,"f":0}]}"#
    );
    // Kept after a single frame, and answered in arrays once the peer sends them.
    let answer = answer_in_bulk(&router, single);
    assert!(
        answer.starts_with(br#"{"b":["#),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let answer = answer_in_bulk(&router, array);
    assert!(
        answer.starts_with(b"[{"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // MsgPack: {"b": [...]} is 0x81 0xa1 0x62, then the array.
    let router = pinging_router(MsgPack, None);
    // {"b": [{"i": 1, "e": "ping", "a": [], "c": [0]}]}
    let keyed = hex("81a1629184a16901a165a470696e67a16190a1639100");
    let answer = answer_in_bulk(&router, &keyed);
    assert_eq!(&answer[..4], &[0x81, 0xa1, b'b', 0x91], "{answer:x?}");
}

#[test]
fn a_fixed_bulk_form_is_kept_whatever_the_peer_sends() {
    let keyed = br#"{"b":[{"i":1,"e":"ping","a":[],"c":[0]}]}"#;
    let array = br#"[{"i":2,"e":"ping","a":[],"c":[0]}]"#;
    let router = pinging_router(Json, Some(BulkForm::Keyed));
    // Before anything arrives, the first bulk sent is keyed.
    router.emit("hello", ()).unwrap();
    let first = router.link().take_outgoing().unwrap();
    assert_eq!(payload(&first), br#"{"b":[{"i":1,"e":"hello"}]}"#);
    assert!(answer_in_bulk(&router, array).starts_with(br#"{"b":["#));
    let router = pinging_router(Json, Some(BulkForm::Array));
    assert!(answer_in_bulk(&router, keyed).starts_with(b"[{"));
}

#[test]
fn events_with_no_handler_are_ignored_and_counted_not_reported() {
    let router = Router::new();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let log = errors.clone();
    router.on_error(move |e| log.lock().unwrap().push(e.to_string()));
    // What an echoing server of the seed's release sends back: our own events.
    for i in 1..=3u8 {
        let mut m = hex("82a169");
        m.push(i);
        m.extend_from_slice(&hex("a165a470696e67"));
        router.link().dispatch(Bytes::from(m));
    }
    assert_eq!(router.unhandled_events(), 3);
    assert_eq!(*errors.lock().unwrap(), Vec::<String>::new());
}
