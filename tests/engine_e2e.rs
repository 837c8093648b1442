//! The protocol engine end to end: two routers over the in-memory transport.
//!
//! Ordering is shown by awaiting replies: a connection routes the frames it
//! receives in order, and sync handlers run before the next frame is routed,
//! so once a request sent after some events has been answered, the peer has
//! routed those events. Timeouts run on tokio's paused clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nmsg::frame::{FrameKind, Message};
use nmsg::transport::memory::{link, pair, BUFFER_SIZE};
use nmsg::transport::Connection;
use nmsg::{
    args, Api, Args, Buffering, Callback, Codec, EncodeError, Error, Flow, Json, MsgPack,
    RemoteCallback, Router, Value,
};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

// ----- helpers -----

/// Sends every error the router reports to a channel.
fn errors_of(router: &Router) -> mpsc::UnboundedReceiver<Error> {
    let (tx, rx) = mpsc::unbounded_channel();
    router.on_error(move |e| {
        let _ = tx.send(e);
    });
    rx
}

/// `echo(value, cb)` answers `cb(value)`.
fn serve_echo(router: &Router) {
    router.on("echo", |args: Args| -> Result<(), Error> {
        let v: Value = args.value(0)?;
        args.callback(1)?.call((v,))
    });
}

/// A round trip: when it returns, the peer has routed everything sent before it.
async fn barrier(router: &Router) {
    let (back,): (String,) = router.request("echo", args!["barrier"]).await.unwrap();
    assert_eq!(back, "barrier");
}

fn no_errors(rx: &mut mpsc::UnboundedReceiver<Error>) {
    if let Ok(e) = rx.try_recv() {
        panic!("unexpected error: {e}");
    }
}

fn shared<T>(v: T) -> Arc<Mutex<T>> {
    Arc::new(Mutex::new(v))
}

/// Splits what a router queued into its length-prefixed messages and decodes them.
fn messages(codec: &dyn Codec, mut out: Bytes) -> Vec<Message> {
    let mut list = Vec::new();
    while !out.is_empty() {
        let len = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
        let payload = out.slice(4..4 + len);
        list.push(codec.decode_all(&payload).unwrap());
        out = out.slice(4 + len..);
    }
    list
}

/// Messages seen on the wire, with the (tokio) instant each one was complete.
type Wire = Arc<Mutex<Vec<(Instant, Message)>>>;

/// Links two routers as [`link`] does, through a relay that decodes every
/// message `a` sends before passing its bytes on unchanged; `b`'s bytes go
/// back as they are.
fn tapped_link(a: &Router, b: &Router) -> ((Connection, Connection), Wire) {
    let (a_end, a_wire) = tokio::io::duplex(BUFFER_SIZE);
    let (b_end, b_wire) = tokio::io::duplex(BUFFER_SIZE);
    let conns = (
        Connection::spawn(a_end, a.clone()),
        Connection::spawn(b_end, b.clone()),
    );
    let (mut from_a, mut to_a) = tokio::io::split(a_wire);
    let (mut from_b, mut to_b) = tokio::io::split(b_wire);
    let wire: Wire = shared(Vec::new());
    let seen = wire.clone();
    let codec = a.codec();
    tokio::spawn(async move {
        let mut input = BytesMut::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from_a.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            input.extend_from_slice(&buf[..n]);
            // Recorded before the bytes go on: once the peer has routed a
            // message, it is on the list.
            while input.len() >= 4 {
                let len = u32::from_be_bytes(input[..4].try_into().unwrap()) as usize;
                if input.len() < 4 + len {
                    break;
                }
                let message = input.split_to(4 + len);
                let decoded = codec.decode_all(&message[4..]).unwrap();
                seen.lock().unwrap().push((Instant::now(), decoded));
            }
            to_b.write_all(&buf[..n]).await.unwrap();
        }
        let _ = to_b.shutdown().await;
    });
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_b, &mut to_a).await;
        let _ = to_a.shutdown().await;
    });
    (conns, wire)
}

/// Reads one length-prefixed message from a raw stream and decodes it.
async fn read_message(stream: &mut DuplexStream, codec: &dyn Codec) -> Message {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await.unwrap();
    let mut payload = vec![0u8; u32::from_be_bytes(prefix) as usize];
    stream.read_exact(&mut payload).await.unwrap();
    codec.decode_all(&payload).unwrap()
}

/// The event names of a message's frames, and whether it is a bulk.
fn events_of(message: &Message) -> (bool, Vec<String>) {
    let (bulk, frames) = match message {
        Message::Single(f) => (false, vec![f.clone()]),
        Message::Bulk(fs) => (true, fs.clone()),
    };
    let names = frames
        .into_iter()
        .map(|f| match f.unwrap().kind {
            FrameKind::Event(name) => name.to_string(),
            FrameKind::Response { to, position } => format!("response {to}/{position}"),
        })
        .collect();
    (bulk, names)
}

// ----- the original's examples -----

#[tokio::test]
async fn the_originals_nested_ping_example_answers_err_then_done_with_an_inner_callback() {
    let (client, server, _link) = pair();
    let (data_tx, mut data_rx) = mpsc::unbounded_channel();
    server.on("ping", move |args: Args| -> Result<(), Error> {
        // ping(data, err, done), as in the original's README.
        let (data, err, done): (Value, RemoteCallback, RemoteCallback) = args.parse()?;
        let _ = data_tx.send(data);
        err.call(("This is error message",))?;
        let inner = Callback::new(|(cb2,): (RemoteCallback,)| {
            cb2.call(("You can have as many levels as you want...",))
                .unwrap();
        });
        done.call(args!["pong", inner])
    });

    let (seen_tx, mut seen) = mpsc::unbounded_channel::<String>();
    let err_seen = seen_tx.clone();
    let err = Callback::new(move |(message,): (String,)| {
        let _ = err_seen.send(format!("err: {message}"));
    });
    let (inner_tx, inner_rx) = oneshot::channel();
    let done = Callback::new(
        move |(pong, inner): (String, Callback<(Callback<(String,)>,)>)| {
            let _ = seen_tx.send(format!("done: {pong}"));
            let _ = inner_tx.send(inner);
        },
    );
    client
        .emit("ping", args![json!({"key": "value"}), err, done])
        .unwrap();

    assert_eq!(seen.recv().await.unwrap(), "err: This is error message");
    assert_eq!(seen.recv().await.unwrap(), "done: pong");
    assert_eq!(
        data_rx.recv().await.unwrap(),
        nmsg::to_value(&json!({"key": "value"})).unwrap()
    );
    let inner = inner_rx.await.unwrap();
    let (cb2, text) = Callback::<(String,)>::once();
    inner.call((cb2,)).unwrap();
    assert_eq!(
        text.await.unwrap().0,
        "You can have as many levels as you want..."
    );
    // Every callback was invoked, so both tables are empty.
    assert_eq!(client.pending_frames(), 0);
    assert_eq!(server.pending_frames(), 0);
}

#[tokio::test]
async fn pick_hand_passes_callbacks_back_as_arguments() {
    let (client, server, _link) = pair();
    server.on("pick-hand", |args: Args| -> Result<(), Error> {
        let left = Callback::new(|(c,): (RemoteCallback,)| c.call(("white",)).unwrap());
        let right = Callback::new(|(c,): (RemoteCallback,)| c.call(("black",)).unwrap());
        args.callback(0)?.call(args![left, right])
    });
    type Hand = Callback<(Callback<(String,)>,)>;
    let (left, right): (Hand, Hand) = client.request("pick-hand", ()).await.unwrap();
    let (c1, white) = Callback::once();
    let (c2, black) = Callback::once();
    right.call((c2,)).unwrap();
    left.call((c1,)).unwrap();
    assert_eq!(white.await.unwrap(), ("white".to_owned(),));
    assert_eq!(black.await.unwrap(), ("black".to_owned(),));
    assert_eq!(client.pending_frames(), 0);
    assert_eq!(server.pending_frames(), 0);
}

// ----- nesting and positions -----

type Log = Arc<Mutex<Vec<(bool, u32)>>>;
type Done = Arc<Mutex<Option<oneshot::Sender<()>>>>;

/// One level: log `n`, then answer the callback with `n + 1` and a new callback
/// (none at the last level).
fn level(args: Args, server: Router, limit: u32, log: Log, done: Done) -> Result<(), Error> {
    let n: u32 = args.get(0)?;
    log.lock().unwrap().push((args.peer().same(&server), n));
    if n == limit {
        let _ = done.lock().unwrap().take().unwrap().send(());
        return Ok(());
    }
    let next = args.callback(1)?;
    if n + 1 == limit {
        return next.call((n + 1,));
    }
    let deeper = Callback::new(move |a: Args| level(a, server, limit, log, done).unwrap());
    next.call(args![n + 1, deeper])
}

#[tokio::test]
async fn callbacks_nest_fifty_levels_deep_each_level_answering_with_a_new_callback() {
    const LEVELS: u32 = 50;
    let (client, server, _link) = pair();
    let (mut client_errors, mut server_errors) = (errors_of(&client), errors_of(&server));
    let log: Log = shared(Vec::new());
    let (done_tx, done_rx) = oneshot::channel();
    let done: Done = shared(Some(done_tx));
    {
        let (server2, log, done) = (server.clone(), log.clone(), done.clone());
        server.on("nest", move |args: Args| {
            level(args, server2.clone(), LEVELS, log.clone(), done.clone())
        });
    }
    let (server2, log2, done2) = (server.clone(), log.clone(), done.clone());
    let first = Callback::new(move |a: Args| level(a, server2, LEVELS, log2, done2).unwrap());
    client.emit("nest", args![0u32, first]).unwrap();
    done_rx.await.unwrap();

    let log = log.lock().unwrap().clone();
    let expected: Vec<(bool, u32)> = (0..=LEVELS).map(|n| (n % 2 == 0, n)).collect();
    assert_eq!(
        log, expected,
        "levels alternate between server (even) and client (odd)"
    );
    assert_eq!(client.pending_frames(), 0);
    assert_eq!(server.pending_frames(), 0);
    no_errors(&mut client_errors);
    no_errors(&mut server_errors);
}

#[tokio::test]
async fn callbacks_at_the_first_middle_and_last_positions_are_each_invoked() {
    let (client, server, _link) = pair();
    let (report_tx, mut report) = mpsc::unbounded_channel();
    server.on("positions", move |args: Args| -> Result<(), Error> {
        let kinds: Vec<bool> = (0..args.len()).map(|i| args.is_callback(i)).collect();
        let text: String = args.get(1)?;
        let number: u32 = args.get(3)?;
        let positions: Vec<u32> = [0, 2, 4]
            .into_iter()
            .map(|i| args.callback(i).map(|cb| cb.position()))
            .collect::<Result<_, _>>()?;
        let _ = report_tx.send((kinds, text, number, positions));
        // Answer in reverse order: each callback gets its own position.
        for i in [4u32, 2, 0] {
            args.callback(i as usize)?.call((i,))?;
        }
        Ok(())
    });
    let (first, r0) = Callback::<(u32,)>::once();
    let (middle, r2) = Callback::<(u32,)>::once();
    let (last, r4) = Callback::<(u32,)>::once();
    client
        .emit(
            "positions",
            args![first, "middle data", middle, 42u32, last],
        )
        .unwrap();
    let (kinds, text, number, positions) = report.recv().await.unwrap();
    assert_eq!(kinds, [true, false, true, false, true]);
    assert_eq!((text.as_str(), number), ("middle data", 42));
    assert_eq!(positions, [0, 2, 4]);
    assert_eq!(r0.await.unwrap().0, 0);
    assert_eq!(r2.await.unwrap().0, 2);
    assert_eq!(r4.await.unwrap().0, 4);
    assert_eq!(client.pending_frames(), 0);
}

#[tokio::test]
async fn a_callback_answered_with_the_wrong_types_gets_an_argument_error() {
    let (client, server, _link) = pair();
    server.on("wrong", |args: Args| -> Result<(), Error> {
        args.callback(0)?.call(("not a number",))
    });
    let result: Result<(u32,), Error> = client.request("wrong", ()).await;
    assert!(
        matches!(result, Err(Error::Argument { index: 0, .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn both_sides_request_each_other_at_once_with_independent_id_counters() {
    let (client, server, _link) = pair();
    serve_echo(&client);
    serve_echo(&server);
    let (a, b) = tokio::join!(
        client.request::<(String,)>("echo", args!["from client"]),
        server.request::<(String,)>("echo", args!["from server"]),
    );
    assert_eq!(a.unwrap().0, "from client");
    assert_eq!(b.unwrap().0, "from server");
}

#[tokio::test]
async fn the_request_helper_gives_the_callbacks_arguments() {
    let (client, server, _link) = pair();
    serve_echo(&server);
    let (x,): (String,) = client.request("echo", args!["x"]).await.unwrap();
    assert_eq!(x, "x");
    let (n,): (Vec<u8>,) = client
        .request("echo", args![vec![1u8, 2, 3]])
        .await
        .unwrap();
    assert_eq!(n, [1, 2, 3]);
}

// ----- routing: wildcard, Api, wiretap, off -----

#[tokio::test]
async fn the_wildcard_gets_the_event_name_first_and_runs_after_the_handler() {
    let (client, server, _link) = pair();
    serve_echo(&server);
    let mut errors = errors_of(&server);
    let log = shared(Vec::<String>::new());
    let l = log.clone();
    server.on("hello", move |args: Args| -> Result<(), Error> {
        let n: u32 = args.get(0)?;
        l.lock()
            .unwrap()
            .push(format!("hello({n}) len={}", args.len()));
        Ok(())
    });
    let l = log.clone();
    server.on("*", move |args: Args| -> Result<(), Error> {
        let name: String = args.get(0)?;
        let rest: Vec<String> = (1..args.len())
            .map(|i| match args.is_callback(i) {
                true => "<cb>".to_owned(),
                false => args.value(i).map(|v| v.to_string()).unwrap_or_default(),
            })
            .collect();
        l.lock()
            .unwrap()
            .push(format!("*({name}, {}) len={}", rest.join(", "), args.len()));
        Ok(())
    });
    client.emit("hello", args![7u32]).unwrap();
    // An event with no handler of its own goes to the wildcard alone, and is not unhandled.
    client.emit("only-wildcard", args!["a"]).unwrap();
    barrier(&client).await;
    assert_eq!(
        *log.lock().unwrap(),
        [
            "hello(7) len=1",
            "*(hello, 7) len=2",
            "*(only-wildcard, \"a\") len=2",
            "*(echo, \"barrier\", <cb>) len=3",
        ]
    );
    no_errors(&mut errors);
}

#[tokio::test]
async fn an_api_takes_precedence_over_on_handlers_and_serves_two_routers() {
    let api = Api::new();
    api.on("who", |args: Args| -> Result<(), Error> {
        args.callback(0)?.call(("api",))
    });
    let wildcard_saw = shared(Vec::<String>::new());
    let mut clients = Vec::new();
    let mut links = Vec::new();
    for _ in 0..2 {
        let (client, server, conns) = pair();
        serve_echo(&server);
        server.on("who", |args: Args| -> Result<(), Error> {
            args.callback(0)?.call(("on",))
        });
        let w = wildcard_saw.clone();
        server.on("*", move |args: Args| -> Result<(), Error> {
            w.lock().unwrap().push(args.get(0)?);
            Ok(())
        });
        server.set_api(Some(api.clone()));
        clients.push(client);
        links.push(conns);
    }
    for client in &clients {
        let (who,): (String,) = client.request("who", ()).await.unwrap();
        assert_eq!(who, "api");
    }
    // The api alone handled `who`: the wildcard did not see it.
    assert!(!wildcard_saw.lock().unwrap().contains(&"who".to_owned()));

    // The table is shared: a method added later serves both routers.
    api.on("late", |args: Args| -> Result<(), Error> {
        args.callback(0)?.call(("late method",))
    });
    for client in &clients {
        let (late,): (String,) = client.request("late", ()).await.unwrap();
        assert_eq!(late, "late method");
    }
    // Without the api method, the router's own handler serves the event again.
    assert!(api.off("who"));
    for client in &clients {
        let (who,): (String,) = client.request("who", ()).await.unwrap();
        assert_eq!(who, "on");
    }
}

#[tokio::test]
async fn a_wiretap_saying_stop_ends_routing_and_continue_does_not() {
    let (client, server, _link) = pair();
    serve_echo(&server);
    let mut errors = errors_of(&server);
    let log = shared(Vec::<String>::new());
    let l = log.clone();
    server.set_wiretap(move |args: &Args| {
        let name = args.event().unwrap_or_default().to_owned();
        l.lock().unwrap().push(format!("tap {name}"));
        if name == "secret" {
            Flow::Stop
        } else {
            Flow::Continue
        }
    });
    for event in ["secret", "open"] {
        let l = log.clone();
        server.on(event, move |_args: Args| {
            l.lock().unwrap().push(format!("on {event}"));
        });
    }
    let l = log.clone();
    server.on("*", move |args: Args| -> Result<(), Error> {
        l.lock()
            .unwrap()
            .push(format!("* {}", args.get::<String>(0)?));
        Ok(())
    });
    client.emit("secret", ()).unwrap();
    client.emit("open", ()).unwrap();
    barrier(&client).await;
    assert_eq!(
        *log.lock().unwrap(),
        [
            "tap secret",
            "tap open",
            "on open",
            "* open",
            "tap echo",
            "* echo"
        ]
    );
    no_errors(&mut errors);
}

#[tokio::test]
async fn a_panicking_wiretap_is_reported_and_stops_only_that_event() {
    let (client, server, _link) = pair();
    serve_echo(&server);
    let mut errors = errors_of(&server);
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    server.on("bad", move |_args: Args| {
        h.fetch_add(1, Ordering::SeqCst);
    });
    server.set_wiretap(|args: &Args| {
        if args.event() == Some("bad") {
            panic!("tap broke");
        }
        Flow::Continue
    });
    client.emit("bad", ()).unwrap();
    barrier(&client).await;
    let e = errors.try_recv().unwrap();
    assert!(
        matches!(&e, Error::HandlerPanicked { event, message, .. } if event == "bad" && message.contains("tap broke")),
        "{e}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    no_errors(&mut errors);
}

#[tokio::test]
async fn off_removes_a_handler_and_the_next_event_is_ignored_and_counted() {
    let (client, server, _link) = pair();
    serve_echo(&server);
    let mut errors = errors_of(&server);
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    server.on("gone", move |_args: Args| {
        h.fetch_add(1, Ordering::SeqCst);
    });
    client.emit("gone", ()).unwrap();
    barrier(&client).await;
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    assert!(server.off("gone"));
    assert!(!server.off("gone"), "a second off finds nothing");
    client.emit("gone", ()).unwrap();
    barrier(&client).await;
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Ignored and counted, not reported: a peer may emit what is not served.
    assert_eq!(server.unhandled_events(), 1);
    no_errors(&mut errors);
}

#[tokio::test]
async fn a_handler_may_replace_the_routes_while_it_runs() {
    // "first" answers once, then replaces itself with "second" and sets a
    // wildcard and an Api, all from inside the handler: the next frames route
    // by the new table, and nothing waits on the snapshot being routed.
    let (client, server, _link) = pair();
    serve_echo(&server);
    let mut errors = errors_of(&server);
    let seen = shared(Vec::<String>::new());
    let s = seen.clone();
    server.on("first", move |args: Args| {
        let peer = args.peer();
        s.lock().unwrap().push("first".into());
        assert!(peer.off("first"));
        let s2 = s.clone();
        peer.on("second", move |_args: Args| {
            s2.lock().unwrap().push("second".into());
        });
        let s3 = s.clone();
        peer.on("*", move |args: Args| {
            let name: String = args.get(0).unwrap();
            s3.lock().unwrap().push(format!("* {name}"));
        });
        let api = Api::new();
        let s4 = s.clone();
        api.on("third", move |_args: Args| {
            s4.lock().unwrap().push("api third".into());
        });
        peer.set_api(Some(api));
    });
    client.emit("first", ()).unwrap();
    client.emit("second", ()).unwrap();
    client.emit("third", ()).unwrap();
    client.emit("first", ()).unwrap();
    barrier(&client).await;
    no_errors(&mut errors);
    // An Api method takes precedence and the wildcard does not see it; the
    // second "first" has no handler of its own now, only the wildcard.
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "first",
            "second",
            "* second",
            "api third",
            "* first",
            "* echo"
        ]
    );
}

#[tokio::test]
async fn a_second_on_replaces_the_first_handler() {
    let (client, server, _link) = pair();
    server.on("who", |args: Args| -> Result<(), Error> {
        args.callback(0)?.call(("first",))
    });
    server.on("who", |args: Args| -> Result<(), Error> {
        args.callback(0)?.call(("second",))
    });
    let (who,): (String,) = client.request("who", ()).await.unwrap();
    assert_eq!(who, "second");
}

// ----- callbacks: once only, timeouts -----

#[tokio::test]
async fn invoking_a_remote_callback_twice_through_a_clone_fails_and_sends_nothing() {
    let (client, server, _link) = pair();
    serve_echo(&server);
    let mut client_errors = errors_of(&client);
    let (result_tx, mut result_rx) = mpsc::unbounded_channel();
    server.on("twice", move |args: Args| -> Result<(), Error> {
        let cb = args.callback(0)?;
        let clone = cb.clone();
        cb.call(("first",))?;
        let second = clone.call(("second",));
        let _ = result_tx.send((cb.frame_id(), clone.is_invoked(), second));
        Ok(())
    });
    let calls = shared(Vec::<String>::new());
    let c = calls.clone();
    let cb = Callback::new(move |(text,): (String,)| c.lock().unwrap().push(text));
    client.emit("twice", args![cb]).unwrap();
    let (frame, invoked, second) = result_rx.recv().await.unwrap();
    assert!(invoked);
    assert!(
        matches!(second, Err(Error::AlreadyInvoked { frame: f, position: 0 }) if f == frame),
        "{second:?}"
    );
    barrier(&client).await;
    // A second response would have arrived before the barrier's answer.
    assert_eq!(*calls.lock().unwrap(), ["first"]);
    no_errors(&mut client_errors);
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_callback_times_out_after_its_timeout_plus_500ms_and_leaves_the_table() {
    let (client, server, _link) = pair();
    let mut client_errors = errors_of(&client);
    let (held_tx, mut held) = mpsc::unbounded_channel();
    server.on("ignore", move |args: Args| -> Result<(), Error> {
        let _ = held_tx.send(args.callback(0)?);
        Ok(())
    });
    let (cb, mut reply) = Callback::<(String,)>::once();
    let start = Instant::now();
    client.emit("ignore", args![cb]).unwrap();
    let late = held.recv().await.unwrap();
    assert_eq!(client.pending_frames(), 1);

    let deadline = Duration::from_secs(15) + Duration::from_millis(500);
    let early = tokio::time::timeout_at(start + deadline - Duration::from_millis(1), &mut reply);
    assert!(early.await.is_err(), "still alive just before the deadline");
    assert_eq!(client.pending_frames(), 1);

    let err = reply.await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout(t) if t == Duration::from_secs(15)),
        "{err}"
    );
    let elapsed = start.elapsed();
    assert!(
        elapsed >= deadline && elapsed < deadline + Duration::from_millis(10),
        "{elapsed:?}"
    );
    assert_eq!(client.pending_frames(), 0);

    // An answer after the deadline is ignored, and reported.
    late.call(("too late",)).unwrap();
    let e = client_errors.recv().await.unwrap();
    assert!(matches!(e, Error::StrayResponse { position: 0, .. }), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_request_ends_with_timeout_or_closed_when_it_is_never_answered() {
    let client = Router::builder()
        .default_timeout(Duration::from_secs(2))
        .build();
    let server = Router::new();
    let _link = link(&client, &server);
    server.on("ignore", |_args: Args| {});
    let start = Instant::now();
    let result = client.request::<(String,)>("ignore", ()).await;
    assert!(
        matches!(result, Err(Error::Timeout(t)) if t == Duration::from_secs(2)),
        "{result:?}"
    );
    assert!(start.elapsed() >= Duration::from_millis(2500));
    assert_eq!(client.pending_frames(), 0);

    // Pending when the router closes, and sent after it closed.
    let pending = client.request::<(String,)>("ignore", ());
    client.close();
    assert!(matches!(pending.await, Err(Error::Closed)));
    let after = client.request::<(String,)>("ignore", ()).await;
    assert!(matches!(after, Err(Error::Closed)), "{after:?}");
}

#[tokio::test(start_paused = true)]
async fn frames_with_different_timeouts_each_expire_at_their_own_deadline() {
    // Deadlines live in the pending frames, not in a sorted index; the timer
    // looks through the frames when the earliest it knows of comes. Answered
    // frames, deadlines out of order and a shorter one queued later all count.
    let (client, server, _link) = pair();
    let (held_tx, mut held) = mpsc::unbounded_channel();
    server.on("ignore", move |args: Args| -> Result<(), Error> {
        let _ = held_tx.send(args.callback(0)?);
        Ok(())
    });
    server.on("echo", |args: Args| -> Result<(), Error> {
        args.callback(0)?.call(())
    });
    let allowance = Duration::from_millis(500);
    let start = Instant::now();
    let mut replies = Vec::new();
    // The earliest deadline goes to a frame that is answered at once.
    let (cb, answered) = Callback::<()>::once();
    client
        .emit_with_timeout("echo", args![cb], Duration::from_secs(1))
        .unwrap();
    for secs in [4, 2, 6] {
        let (cb, reply) = Callback::<()>::once();
        client
            .emit_with_timeout("ignore", args![cb], Duration::from_secs(secs))
            .unwrap();
        replies.push((
            secs,
            tokio::spawn(async move { (reply.await, Instant::now()) }),
        ));
    }
    answered.await.unwrap();
    for _ in 0..3 {
        held.recv().await.unwrap();
    }
    // Queued later with a shorter timeout than all the others.
    let (cb, reply) = Callback::<()>::once();
    client
        .emit_with_timeout("ignore", args![cb], Duration::from_millis(1500))
        .unwrap();
    let late_start = Instant::now();
    let limit = Duration::from_secs(30);
    let result = tokio::time::timeout(limit, reply)
        .await
        .expect("never expired");
    let at = Instant::now();
    assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
    let deadline = late_start + Duration::from_millis(1500) + allowance;
    assert!(
        at >= deadline && at < deadline + Duration::from_millis(20),
        "{:?}",
        at - deadline
    );
    for (secs, task) in replies {
        let (result, at) = tokio::time::timeout(limit, task)
            .await
            .expect("never expired")
            .unwrap();
        assert!(
            matches!(result, Err(Error::Timeout(t)) if t == Duration::from_secs(secs)),
            "{result:?}"
        );
        let deadline = start + Duration::from_secs(secs) + allowance;
        assert!(
            at >= deadline && at < deadline + Duration::from_millis(20),
            "{secs} s: {:?} after the deadline",
            at - deadline
        );
    }
    assert_eq!(client.pending_frames(), 0);
}

#[tokio::test(start_paused = true)]
async fn emit_with_timeout_sends_t_in_seconds_and_keeps_the_callback_that_long() {
    // Without a transport, the queued frame can be read back.
    let router = Router::new();
    let (cb, _reply) = Callback::<()>::once();
    router
        .emit_with_timeout("x", args![cb], Duration::from_secs(3))
        .unwrap();
    let (cb, _reply2) = Callback::<()>::once();
    router
        .emit_with_timeout("y", args![cb], Duration::from_millis(1500))
        .unwrap();
    let (cb, _reply3) = Callback::<()>::once();
    router.emit("z", args![cb]).unwrap();
    let timeouts: Vec<Option<f64>> = messages(&MsgPack, router.link().take_outgoing().unwrap())
        .into_iter()
        .flat_map(Message::into_frames)
        .map(|f| f.unwrap().timeout)
        .collect();
    assert_eq!(timeouts, [Some(3.0), Some(1.5), None]);

    // Over a link, the callback lives for `t` plus the allowance.
    let (client, server, _link) = pair();
    let (held_tx, mut held) = mpsc::unbounded_channel();
    server.on("ignore", move |args: Args| -> Result<(), Error> {
        let _ = held_tx.send((args.timeout(), args.callback(0)?));
        Ok(())
    });
    let (cb, reply) = Callback::<()>::once();
    let start = Instant::now();
    client
        .emit_with_timeout("ignore", args![cb], Duration::from_secs(3))
        .unwrap();
    // the receiving side sees the sender's `t`
    let (seen, _held) = held.recv().await.unwrap();
    assert_eq!(seen, Some(Duration::from_secs(3)));
    let err = reply.await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout(t) if t == Duration::from_secs(3)),
        "{err}"
    );
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(3500) && elapsed < Duration::from_millis(3510),
        "{elapsed:?}"
    );
    assert_eq!(client.pending_frames(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_default_timeout_of_a_router_is_sent_as_t() {
    let router = Router::builder()
        .default_timeout(Duration::from_secs(5))
        .build();
    let (cb, _reply) = Callback::<()>::once();
    router.emit("x", args![cb]).unwrap();
    router.emit("no-callbacks", args![1]).unwrap();
    let timeouts: Vec<Option<f64>> = messages(&MsgPack, router.link().take_outgoing().unwrap())
        .into_iter()
        .flat_map(Message::into_frames)
        .map(|f| f.unwrap().timeout)
        .collect();
    assert_eq!(timeouts, [Some(5.0), None], "t only goes with callbacks");
}

#[tokio::test]
async fn closing_the_link_fails_callbacks_waiting_for_answers_with_disconnected() {
    let (client, server, (client_conn, _server_conn)) = pair();
    let (held_tx, mut held) = mpsc::unbounded_channel();
    server.on("ignore", move |args: Args| -> Result<(), Error> {
        let _ = held_tx.send(args.callback(0)?);
        Ok(())
    });
    let (cb, reply) = Callback::<()>::once();
    client.emit("ignore", args![cb]).unwrap();
    let _held = held.recv().await.unwrap();
    client_conn.close().await;
    let err = reply.await.unwrap_err();
    assert!(matches!(err, Error::Disconnected(_)), "{err}");
    assert_eq!(client.pending_frames(), 0);
}

// ----- buffering -----

/// Sends 1,000 events, letting the writer run after every 100, then a
/// round trip; checks that the peer handled them in order, and gives what
/// the sender wrote on the wire.
async fn a_thousand_events_arrive_in_order(buffering: Buffering) -> Vec<(Instant, Message)> {
    let client = Router::builder().buffering(buffering).build();
    let server = Router::builder().buffering(buffering).build();
    let (_link, wire) = tapped_link(&client, &server);
    serve_echo(&server);
    let seen = shared(Vec::<u32>::new());
    let s = seen.clone();
    server.on("n", move |args: Args| -> Result<(), Error> {
        s.lock().unwrap().push(args.get(0)?);
        Ok(())
    });
    for i in 0..1000u32 {
        client.emit("n", args![i]).unwrap();
        if i % 100 == 99 {
            // Let the writer take what is queued, so several bulks go out.
            tokio::task::yield_now().await;
        }
    }
    barrier(&client).await;
    assert_eq!(*seen.lock().unwrap(), (0..1000).collect::<Vec<_>>());
    let wire = wire.lock().unwrap().clone();
    // Every frame crossed the wire once, in order: the events, then the barrier.
    let names: Vec<String> = wire.iter().flat_map(|(_, m)| events_of(m).1).collect();
    assert_eq!(names.len(), 1001);
    assert!(names[..1000].iter().all(|n| n == "n"));
    assert_eq!(names[1000], "echo");
    wire
}

#[tokio::test]
async fn bulk_messages_of_an_idle_flushing_router_are_handled_in_order() {
    let wire = a_thousand_events_arrive_in_order(Buffering::Idle).await;
    assert!(
        wire.iter().all(|(_, m)| matches!(m, Message::Bulk(_))),
        "every message is a bulk"
    );
    // What was queued when the writer ran went out together: about one bulk
    // per hundred events, never one message per frame.
    let sizes: Vec<usize> = wire.iter().map(|(_, m)| events_of(m).1.len()).collect();
    assert!(sizes.len() <= 20, "{} messages: {sizes:?}", sizes.len());
    assert!(sizes.iter().any(|&n| n >= 100), "{sizes:?}");
}

#[tokio::test(start_paused = true)]
async fn bulk_messages_of_a_10ms_cycle_router_are_handled_in_order() {
    let start = Instant::now();
    let wire = a_thousand_events_arrive_in_order(Buffering::Cycle(Duration::from_millis(10))).await;
    // Paused time: the 1,000 events and the barrier's request are emitted
    // within the first cycle, so they go out as one bulk when it ends.
    let shape: Vec<(bool, usize)> = wire
        .iter()
        .map(|(_, m)| {
            let (bulk, names) = events_of(m);
            (bulk, names.len())
        })
        .collect();
    assert_eq!(
        shape.len(),
        1,
        "{} messages, the first {:?}",
        shape.len(),
        &shape[..shape.len().min(5)]
    );
    assert_eq!(shape[0], (true, 1001));
    assert_eq!(wire[0].0 - start, Duration::from_millis(10));
}

#[tokio::test]
async fn unbuffered_events_are_handled_in_order() {
    let wire = a_thousand_events_arrive_in_order(Buffering::Off).await;
    // One message per frame.
    assert_eq!(wire.len(), 1001);
    assert!(wire
        .iter()
        .all(|(_, m)| matches!(m, Message::Single(Ok(_)))));
}

#[tokio::test]
async fn a_buffering_router_sends_what_is_queued_as_one_bulk() {
    let frames_of = |m: &Message| match m {
        Message::Single(_) => 1,
        Message::Bulk(fs) => fs.len(),
    };
    let idle = Router::builder().buffering(Buffering::Idle).build();
    let off = Router::new();
    for router in [&idle, &off] {
        for i in 0..3 {
            router.emit("n", args![i]).unwrap();
        }
    }
    let bulk = messages(&MsgPack, idle.link().take_outgoing().unwrap());
    assert_eq!(bulk.len(), 1);
    assert!(matches!(bulk[0], Message::Bulk(_)));
    assert_eq!(frames_of(&bulk[0]), 3);
    let singles = messages(&MsgPack, off.link().take_outgoing().unwrap());
    assert_eq!(singles.len(), 3);
    assert!(singles.iter().all(|m| matches!(m, Message::Single(Ok(_)))));
}

/// `Link::next_outgoing`, for a transport of one's own; a connection runs a
/// cycle of its own (the next test).
#[tokio::test(start_paused = true)]
async fn a_cycle_router_collects_the_frames_of_one_cycle_into_one_bulk() {
    let router = Router::builder()
        .buffering(Buffering::Cycle(Duration::from_millis(10)))
        .build();
    router.emit("a", args![1]).unwrap();
    let taker = {
        let router = router.clone();
        tokio::spawn(async move { router.link().next_outgoing().await })
    };
    // Paused time: this lands 5 ms into the 10 ms cycle the first frame opened.
    tokio::time::sleep(Duration::from_millis(5)).await;
    router.emit("b", args![2]).unwrap();
    let start = Instant::now();
    let out = taker.await.unwrap().unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(5));
    let msgs = messages(&MsgPack, out);
    assert_eq!(msgs.len(), 1);
    let Message::Bulk(frames) = &msgs[0] else {
        panic!("not a bulk: {msgs:?}");
    };
    let names: Vec<_> = frames
        .iter()
        .map(|f| f.as_ref().unwrap().kind.clone())
        .collect();
    assert_eq!(
        names,
        [
            nmsg::frame::FrameKind::Event("a".into()),
            nmsg::frame::FrameKind::Event("b".into())
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_cycle_connection_sends_the_frames_of_one_cycle_as_one_bulk_when_it_ends() {
    // The connection's own cycle (what a Client, a Server and `link` use), read
    // from the raw stream on the other end.
    let cycle = Duration::from_millis(10);
    let router = Router::builder().buffering(Buffering::Cycle(cycle)).build();
    let (ours, mut wire) = tokio::io::duplex(BUFFER_SIZE);
    let _conn = Connection::spawn(ours, router.clone());
    let start = Instant::now();
    router.emit("a", args![1]).unwrap();
    // Paused time: this lands 5 ms into the cycle the first frame opened.
    tokio::time::sleep(Duration::from_millis(5)).await;
    router.emit("b", args![2]).unwrap();
    let early =
        tokio::time::timeout_at(start + cycle - Duration::from_millis(1), wire.read_u8()).await;
    assert!(early.is_err(), "a byte came before the cycle ended");
    let first = read_message(&mut wire, &MsgPack).await;
    assert_eq!(start.elapsed(), cycle);
    assert_eq!(events_of(&first), (true, vec!["a".into(), "b".into()]));

    // The next frame opens the next cycle; a frame queued after that one
    // ended goes in the one after.
    let second_start = Instant::now();
    router.emit("c", args![3]).unwrap();
    tokio::time::sleep(Duration::from_millis(12)).await;
    router.emit("d", args![4]).unwrap();
    let second = read_message(&mut wire, &MsgPack).await;
    let third = read_message(&mut wire, &MsgPack).await;
    assert_eq!(events_of(&second), (true, vec!["c".into()]));
    assert_eq!(events_of(&third), (true, vec!["d".into()]));
    assert_eq!(second_start.elapsed(), Duration::from_millis(12) + cycle);
}

// ----- bounds -----

#[tokio::test]
async fn max_pending_refuses_a_third_frame_with_callbacks_until_one_is_answered() {
    let client = Router::builder().max_pending(2).build();
    let server = Router::new();
    let _link = link(&client, &server);
    let (held_tx, mut held) = mpsc::unbounded_channel();
    server.on("hold", move |args: Args| -> Result<(), Error> {
        let _ = held_tx.send(args.callback(0)?);
        Ok(())
    });
    let (cb1, r1) = Callback::<(u32,)>::once();
    let (cb2, _r2) = Callback::<(u32,)>::once();
    let (cb3, r3) = Callback::<(u32,)>::once();
    client.emit("hold", args![cb1]).unwrap();
    client.emit("hold", args![cb2]).unwrap();
    let third = client.emit("hold", args![cb3]);
    assert!(
        matches!(third, Err(Error::TooManyPending { limit: 2 })),
        "{third:?}"
    );
    assert_eq!(client.pending_frames(), 2);
    // The refused frame's callback ends with the same error.
    let refused = r3.await;
    assert!(
        matches!(refused, Err(Error::TooManyPending { limit: 2 })),
        "{refused:?}"
    );
    // Frames without callbacks are not bounded by it.
    client.emit("no-callbacks", ()).unwrap();

    let first = held.recv().await.unwrap();
    let _second = held.recv().await.unwrap();
    first.call((1u32,)).unwrap();
    assert_eq!(r1.await.unwrap().0, 1);
    assert_eq!(client.pending_frames(), 1);
    let (cb4, _r4) = Callback::<(u32,)>::once();
    client.emit("hold", args![cb4]).unwrap();
}

#[test]
fn a_router_without_transport_refuses_the_fourth_frame_with_queue_full() {
    let router = Router::builder().max_queued_frames(3).build();
    for i in 0..3 {
        router.emit("n", args![i]).unwrap();
    }
    let fourth = router.emit("n", args![3]);
    assert!(
        matches!(fourth, Err(Error::QueueFull { frames: 3, .. })),
        "{fourth:?}"
    );
    assert_eq!(router.queued_frames(), 3);
    // Once a transport takes what is queued, there is room again.
    assert!(router.link().take_outgoing().is_some());
    router.emit("n", args![4]).unwrap();
    assert_eq!(router.queued_frames(), 1);
}

#[tokio::test]
async fn the_callback_of_a_frame_refused_for_a_full_queue_ends_with_queue_full() {
    let router = Router::builder().max_queued_frames(1).build();
    router.emit("n", args![1]).unwrap();
    let (cb, reply) = Callback::<()>::once();
    let refused = router.emit("n", args![cb]);
    assert!(matches!(refused, Err(Error::QueueFull { frames: 1, .. })));
    let ended = reply.await;
    assert!(
        matches!(ended, Err(Error::QueueFull { frames: 1, .. })),
        "{ended:?}"
    );
    assert_eq!(router.pending_frames(), 0);
}

// ----- codecs end to end -----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: f64,
    label: Option<String>,
}

fn json_pair() -> (Router, Router, impl Sized) {
    let client = Router::builder().codec(Json).build();
    let server = Router::builder().codec(Json).build();
    let conns = link(&client, &server);
    (client, server, conns)
}

#[tokio::test]
async fn the_json_codec_on_both_ends_carries_data_and_nested_callbacks() {
    let (client, server, _link) = json_pair();
    serve_echo(&server);
    let p = Point {
        x: -3,
        y: 0.25,
        label: Some("ü €".into()),
    };
    let (back,): (Point,) = client.request("echo", args![p.clone()]).await.unwrap();
    assert_eq!(back, p);

    server.on("deeper", |args: Args| -> Result<(), Error> {
        let inner = Callback::new(|(cb,): (RemoteCallback,)| cb.call(("level 2",)).unwrap());
        args.callback(0)?.call(args!["level 1", inner])
    });
    let (one, inner): (String, Callback<(Callback<(String,)>,)>) =
        client.request("deeper", ()).await.unwrap();
    assert_eq!(one, "level 1");
    let (cb, two) = Callback::once();
    inner.call((cb,)).unwrap();
    assert_eq!(two.await.unwrap().0, "level 2");
}

/// Data whose `Serialize` fails, as a user type may.
struct Unserializable;

impl Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this value refuses"))
    }
}

#[tokio::test]
async fn an_argument_that_fails_to_serialize_is_an_error_and_nothing_is_sent() {
    for (client, server, _link) in [
        {
            let (c, s, l) = pair();
            (c, s, Box::new(l) as Box<dyn std::any::Any>)
        },
        {
            let (c, s, l) = json_pair();
            (c, s, Box::new(l) as Box<dyn std::any::Any>)
        },
    ] {
        serve_echo(&server);
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        server.on("bad", move |_args: Args| {
            h.fetch_add(1, Ordering::SeqCst);
        });
        // Alone, and after a good argument: the error is the value's own.
        for sent in [
            client.emit("bad", args![Unserializable]),
            client.emit("bad", args![1, Unserializable]),
        ] {
            assert!(
                matches!(&sent, Err(Error::Encode(EncodeError::Serialize(m))) if m.contains("this value refuses")),
                "{}: {sent:?}",
                client.codec().name()
            );
        }
        let (cb, reply) = Callback::<(String,)>::once();
        assert!(client.emit("bad", args![Unserializable, cb]).is_err());
        assert!(matches!(reply.await, Err(Error::Encode(_))));
        barrier(&client).await;
        assert_eq!(hits.load(Ordering::SeqCst), 0, "{}", client.codec().name());
    }
}

#[tokio::test]
async fn the_json_codec_refuses_binary_data_and_sends_nothing() {
    let (client, server, _link) = json_pair();
    serve_echo(&server);
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    server.on("bin", move |_args: Args| {
        h.fetch_add(1, Ordering::SeqCst);
    });

    let bytes = client.emit("bin", args![ByteBuf::from(vec![1u8, 2, 3])]);
    assert!(
        matches!(bytes, Err(Error::Encode(EncodeError::BinaryInJson))),
        "{bytes:?}"
    );
    let value = client.emit("bin", args![Value::Binary(vec![0xff])]);
    assert!(matches!(
        value,
        Err(Error::Encode(EncodeError::BinaryInJson))
    ));
    let nested = Value::Array(vec![Value::from("ok"), Value::Binary(vec![1])]);
    let nested = client.emit("bin", args![1, nested]);
    assert!(matches!(
        nested,
        Err(Error::Encode(EncodeError::BinaryInJson))
    ));

    // A callback sent with refused data is failed with the same error.
    let (cb, reply) = Callback::<()>::once();
    let with_cb = client.emit("bin", args![cb, ByteBuf::from(vec![9u8])]);
    assert!(matches!(
        with_cb,
        Err(Error::Encode(EncodeError::BinaryInJson))
    ));
    let err = reply.await.unwrap_err();
    assert!(
        matches!(err, Error::Encode(EncodeError::BinaryInJson)),
        "{err}"
    );
    assert_eq!(client.pending_frames(), 0);

    barrier(&client).await;
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing reached the peer");
}

#[tokio::test]
async fn a_remote_callback_refused_for_binary_in_json_can_still_be_invoked_once() {
    let (client, server, _link) = json_pair();
    let (result_tx, mut results) = mpsc::unbounded_channel();
    server.on("answer", move |args: Args| -> Result<(), Error> {
        let cb = args.callback(0)?;
        let refused = cb.call((ByteBuf::from(vec![1u8]),));
        let invoked_after_refusal = cb.is_invoked();
        let _ = result_tx.send((refused, invoked_after_refusal));
        cb.call(("text instead",))
    });
    let (answer,): (String,) = client.request("answer", ()).await.unwrap();
    assert_eq!(answer, "text instead");
    let (refused, invoked) = results.recv().await.unwrap();
    assert!(matches!(
        refused,
        Err(Error::Encode(EncodeError::BinaryInJson))
    ));
    assert!(!invoked, "a refused call does not use the callback up");
}

#[tokio::test]
async fn the_msgpack_codec_carries_binary_data() {
    let (client, server, _link) = pair();
    serve_echo(&server);
    let blob: Vec<u8> = (0..=255).collect();
    let (back,): (ByteBuf,) = client
        .request("echo", args![ByteBuf::from(blob.clone())])
        .await
        .unwrap();
    assert_eq!(back.into_vec(), blob);
    let (back,): (Value,) = client
        .request("echo", args![Value::Binary(vec![0, 0xc1, 0xff])])
        .await
        .unwrap();
    assert_eq!(back, Value::Binary(vec![0, 0xc1, 0xff]));
}

// ----- handlers -----

#[tokio::test]
async fn an_async_handler_does_not_hold_up_the_events_after_it() {
    let (client, server, _link) = pair();
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    server.on("wait", move |args: Args| {
        let gate = g.clone();
        async move {
            gate.notified().await;
            args.callback(0)?.call(("released",))
        }
    });
    server.on("open", move |_args: Args| gate.notify_one());
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.request::<(String,)>("wait", ()).await })
    };
    // `open` is routed while `wait`'s handler is still waiting for it.
    client.emit("open", ()).unwrap();
    assert_eq!(waiting.await.unwrap().unwrap().0, "released");
}

#[tokio::test]
async fn handler_errors_reach_the_error_hook_and_the_connection_goes_on() {
    let (client, server, _link) = pair();
    serve_echo(&server);
    let mut errors = errors_of(&server);
    server.on("fails", |_args: Args| -> Result<(), Error> {
        Err(Error::Unhandled("made up".into()))
    });
    server.on("fails-later", |_args: Args| async {
        Err::<(), _>(std::io::Error::other("async failure"))
    });
    client.emit("fails", ()).unwrap();
    let e = errors.recv().await.unwrap();
    assert!(
        matches!(&e, Error::Handler { event, .. } if event == "fails"),
        "{e}"
    );
    client.emit("fails-later", ()).unwrap();
    let e = errors.recv().await.unwrap();
    assert!(
        matches!(&e, Error::Handler { event, source } if event == "fails-later" && source.to_string() == "async failure"),
        "{e}"
    );
    barrier(&client).await;
}

#[tokio::test]
async fn a_panicking_handler_is_reported_and_the_next_event_is_still_served() {
    let (client, server, _link) = pair();
    serve_echo(&server);
    let mut errors = errors_of(&server);
    #[allow(clippy::unused_unit)]
    server.on("boom", |_args: Args| -> () { panic!("kaboom") });
    server.on("boom-later", |_args: Args| async {
        if true {
            panic!("later");
        }
        Ok::<(), Error>(())
    });
    client.emit("boom", ()).unwrap();
    barrier(&client).await;
    let e = errors.try_recv().unwrap();
    assert!(
        matches!(&e, Error::HandlerPanicked { event, message, .. } if event == "boom" && message == "kaboom"),
        "{e}"
    );
    client.emit("boom-later", ()).unwrap();
    let e = errors.recv().await.unwrap();
    assert!(
        matches!(&e, Error::HandlerPanicked { event, message, .. } if event == "boom-later" && message == "later"),
        "{e}"
    );
    barrier(&client).await;
    no_errors(&mut errors);
}

#[tokio::test]
async fn a_timeout_too_large_for_a_duration_reads_as_none_and_panics_nothing() {
    let router = Router::builder().codec(nmsg::Json).build();
    let (tx, mut rx) = mpsc::unbounded_channel();
    router.on("x", move |args: Args| {
        let _ = tx.send(args.timeout());
    });
    router.link().dispatch(bytes::Bytes::from_static(
        br#"{"i":1,"e":"x","c":[0],"t":1e300}"#,
    ));
    router.link().dispatch(bytes::Bytes::from_static(
        br#"{"i":2,"e":"x","c":[0],"t":0.25}"#,
    ));
    assert_eq!(rx.recv().await.unwrap(), None);
    assert_eq!(rx.recv().await.unwrap(), Some(Duration::from_millis(250)));
}

#[tokio::test(start_paused = true)]
async fn a_timeout_of_duration_max_keeps_the_callback_and_panics_nothing() {
    let (client, server, _link) = pair();
    let mut client_errors = errors_of(&client);
    let (held_tx, mut held) = mpsc::unbounded_channel();
    server.on("later", move |args: Args| -> Result<(), Error> {
        let _ = held_tx.send(args.callback(0)?);
        Ok(())
    });
    let (cb, mut reply) = Callback::<(String,)>::once();
    client
        .emit_with_timeout("later", args![cb], Duration::MAX)
        .unwrap();
    let late = held.recv().await.unwrap();
    // Paused time: an hour passes, far beyond the default 15 s and its allowance.
    let start = Instant::now();
    let waited = tokio::time::timeout(Duration::from_secs(3600), &mut reply).await;
    assert!(waited.is_err(), "the callback ended early: {waited:?}");
    assert_eq!(start.elapsed(), Duration::from_secs(3600));
    assert_eq!(client.pending_frames(), 1);

    late.call(("done",)).unwrap();
    assert_eq!(reply.await.unwrap().0, "done");
    assert_eq!(client.pending_frames(), 0);
    no_errors(&mut client_errors);
}
