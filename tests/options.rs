//! Bounds and options set through the `Router`, `Client` and `Server`
//! builders, checked over real connections: the in-memory network, often with
//! one end that the test reads and writes itself, mostly under tokio's paused
//! time, so that what is timed is measured exactly.

use std::time::Duration;

use nmsg::frame::Message;
use nmsg::transport::memory::Network;
use nmsg::transport::{Acceptor, Binder, BoxStream, CloseReason, Connection, Connector};
use nmsg::{
    args, Args, Buffering, Client, ClientEvent, Codec, EncodeError, Error, FramingError, MsgPack,
    RemoteCallback, Router, Server, ServerEvent, Socket,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

const LIMIT: Duration = Duration::from_secs(20);

/// A number no test emits before the end: what arrives after it shows what
/// came in between.
const MARKER: u64 = 999;

// ----- raw ends and messages -----

/// A listener at `name` whose connections the test takes itself.
async fn raw_listener(net: &Network, name: &str) -> Box<dyn Acceptor> {
    net.binder(name).bind().await.unwrap()
}

async fn raw_accept(listener: &mut Box<dyn Acceptor>) -> BoxStream {
    let (stream, _) = tokio::time::timeout(LIMIT, listener.accept())
        .await
        .expect("no connection came")
        .unwrap();
    stream
}

async fn raw_connect(net: &Network, name: &str) -> BoxStream {
    net.connector(name).connect().await.unwrap().0
}

/// The next length-prefixed message's payload; `None` at the end of the stream.
async fn read_payload(stream: &mut (impl AsyncRead + Unpin)) -> Option<Vec<u8>> {
    let mut prefix = [0; 4];
    match tokio::time::timeout(LIMIT, stream.read_exact(&mut prefix))
        .await
        .expect("nothing arrived")
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
        Err(e) => panic!("{e}"),
    }
    let mut payload = vec![0; u32::from_be_bytes(prefix) as usize];
    stream.read_exact(&mut payload).await.unwrap();
    Some(payload)
}

/// Whether a MsgPack message is a bulk, and the first argument (a number) of each of its frames.
fn numbers(payload: &[u8]) -> (bool, Vec<u64>) {
    let message = MsgPack.decode_all(payload).unwrap();
    let bulk = matches!(message, Message::Bulk(_));
    let numbers = message
        .into_frames()
        .into_iter()
        .map(|frame| {
            let frame = frame.unwrap();
            nmsg::codec::decode_arg(&MsgPack, &payload[frame.data[0].clone()]).unwrap()
        })
        .collect();
    (bulk, numbers)
}

/// Reads `stream` on a task of its own: every message, with the milliseconds
/// since `start` at which it arrived.
fn read_all(
    mut stream: BoxStream,
    start: Instant,
) -> mpsc::UnboundedReceiver<(u128, bool, Vec<u64>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(payload) = read_payload(&mut stream).await {
            let (bulk, numbers) = numbers(&payload);
            if tx
                .send((start.elapsed().as_millis(), bulk, numbers))
                .is_err()
            {
                break;
            }
        }
    });
    rx
}

/// A handler of `n` events on `router` that forwards their first argument.
fn collect(router: &Router) -> mpsc::UnboundedReceiver<u64> {
    let (tx, rx) = mpsc::unbounded_channel();
    router.on("n", move |args: Args| -> Result<(), Error> {
        let _ = tx.send(args.get::<u64>(0)?);
        Ok(())
    });
    rx
}

/// The same for every socket of `server`.
fn collect_on(server: &Server) -> mpsc::UnboundedReceiver<u64> {
    let (tx, rx) = mpsc::unbounded_channel();
    server.on("n", move |args: Args| -> Result<(), Error> {
        let _ = tx.send(args.get::<u64>(0)?);
        Ok(())
    });
    rx
}

async fn next(rx: &mut mpsc::UnboundedReceiver<u64>) -> u64 {
    tokio::time::timeout(LIMIT, rx.recv())
        .await
        .expect("nothing more arrived")
        .expect("the sender is gone")
}

/// Every error reported to `router`'s error hook.
fn errors_of(router: &Router) -> mpsc::UnboundedReceiver<Error> {
    let (tx, rx) = mpsc::unbounded_channel();
    router.on_error(move |e| {
        let _ = tx.send(e);
    });
    rx
}

/// The sockets of `server`, as they are accepted.
fn sockets_of(server: &Server) -> mpsc::UnboundedReceiver<Socket> {
    let (tx, rx) = mpsc::unbounded_channel();
    server.on_socket(move |socket| {
        let _ = tx.send(socket);
    });
    rx
}

/// The encoded `n` event `[n, pad]` of a router's first frame, with `pad`
/// bytes of padding: its length prefix and payload, as a router of default
/// options queues it.
fn n_message(n: u64, pad: usize) -> Vec<u8> {
    let probe = Router::new();
    probe.emit("n", args![n, "x".repeat(pad)]).unwrap();
    probe.link().take_outgoing().unwrap().to_vec()
}

/// The padding that makes a router's first `n` event (`n` below 128) a payload
/// of exactly `size` bytes (256 to 65,535 bytes, so that the string's header
/// keeps its length).
fn pad_for(size: usize) -> usize {
    let overhead = n_message(1, 300).len() - 4 - 300;
    let pad = size - overhead;
    assert_eq!(n_message(1, pad).len() - 4, size);
    pad
}

// ----- max_queued_bytes -----

/// The byte bound of the queues below: about eight frames of [`PAD`].
const QUEUE_BYTES: usize = 1000;
const PAD: usize = 100;

/// Emits `n` events numbered from 0, [`PAD`] bytes each, until `router`
/// refuses one (at most 100); gives how many it took, and the refusal.
fn fill(router: &Router) -> (u64, Option<Error>) {
    let pad = "x".repeat(PAD);
    for queued in 0..100 {
        if let Err(e) = router.emit("n", args![queued, &pad]) {
            return (queued, Some(e));
        }
    }
    (100, None)
}

/// The refusal is the documented one, for the byte bound: the queue holds
/// at most [`QUEUE_BYTES`], and the refused frame would have passed it.
fn check_refusal(queued: u64, refusal: Option<Error>) {
    let Some(Error::QueueFull { frames, bytes }) = refusal else {
        panic!("after {queued} frames: expected QueueFull, got {refusal:?}");
    };
    assert_eq!(frames as u64, queued);
    assert!(queued >= 2, "{queued}");
    let frame = bytes / frames;
    assert!(
        bytes <= QUEUE_BYTES && bytes + frame > QUEUE_BYTES,
        "{frames} frames of {frame} bytes queued, {bytes} bytes in all"
    );
}

/// Exactly the queued numbers arrive, in order, and the refused one never:
/// the next to arrive after them is one emitted now.
async fn exactly_the_queued_arrive(
    emitter: &Router,
    rx: &mut mpsc::UnboundedReceiver<u64>,
    queued: u64,
) {
    for want in 0..queued {
        assert_eq!(next(rx).await, want);
    }
    emitter.emit("n", args![MARKER, ""]).unwrap();
    assert_eq!(next(rx).await, MARKER);
}

#[tokio::test(start_paused = true)]
async fn max_queued_bytes_of_a_router_refuses_the_frame_that_would_pass_it_and_drops_none() {
    let router = Router::builder().max_queued_bytes(QUEUE_BYTES).build();
    let (queued, refusal) = fill(&router);
    check_refusal(queued, refusal);
    assert_eq!(router.queued_frames() as u64, queued);
    let peer = Router::new();
    let mut rx = collect(&peer);
    let _link = nmsg::transport::memory::link(&router, &peer);
    exactly_the_queued_arrive(&router, &mut rx, queued).await;
}

#[tokio::test(start_paused = true)]
async fn max_queued_bytes_of_a_client_bounds_its_offline_queue_and_drops_none() {
    let net = Network::new();
    let client = Client::builder(net.connector("later"))
        .router(|r| r.max_queued_bytes(QUEUE_BYTES))
        .start();
    let (queued, refusal) = fill(client.router());
    check_refusal(queued, refusal);
    let server = Server::builder(net.binder("later")).start();
    let mut rx = collect_on(&server);
    exactly_the_queued_arrive(client.router(), &mut rx, queued).await;
    client.stop().await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn max_queued_bytes_of_a_server_bounds_each_sockets_queue_and_drops_none() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc"))
        .router(|r| r.max_queued_bytes(QUEUE_BYTES))
        .start();
    // The hook runs before the connection starts: nothing is taken meanwhile.
    let (filled_tx, mut filled) = mpsc::unbounded_channel();
    server.on_socket(move |socket| {
        let _ = filled_tx.send((fill(socket.router()), socket));
    });
    server.started().await.unwrap();
    let mut raw = raw_connect(&net, "svc").await;
    let ((queued, refusal), socket) = filled.recv().await.unwrap();
    check_refusal(queued, refusal);
    let mut arrived = Vec::new();
    while arrived.len() < queued as usize {
        arrived.extend(numbers(&read_payload(&mut raw).await.unwrap()).1);
    }
    assert_eq!(arrived, (0..queued).collect::<Vec<_>>());
    socket.router().emit("n", args![MARKER, ""]).unwrap();
    assert_eq!(numbers(&read_payload(&mut raw).await.unwrap()).1, [MARKER]);
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn emit_wait_of_a_frame_larger_than_the_byte_bound_fails_instead_of_waiting_forever() {
    let router = Router::builder().max_queued_bytes(QUEUE_BYTES).build();
    let big = "x".repeat(2 * QUEUE_BYTES);
    // the queue is empty: no room will ever come for it
    let waited = tokio::time::timeout(LIMIT, router.emit_wait("n", args![1u64, &big]))
        .await
        .expect("emit_wait waits for room that cannot come");
    // a clear error, not a "full" queue that holds nothing
    assert!(
        matches!(
            waited,
            Err(Error::FrameExceedsQueue { size, max_queued_bytes: QUEUE_BYTES }) if size > 2 * QUEUE_BYTES
        ),
        "{waited:?}"
    );
    // emit says the same, with the frames already queued not counted against it
    router.emit("n", args![3u64, ""]).unwrap();
    let emitted = router.emit("n", args![1u64, &big]);
    assert!(
        matches!(emitted, Err(Error::FrameExceedsQueue { .. })),
        "{emitted:?}"
    );
    let waited = tokio::time::timeout(LIMIT, router.emit_wait("n", args![1u64, &big]))
        .await
        .expect("emit_wait waits behind a queued frame for room that cannot come");
    assert!(
        matches!(waited, Err(Error::FrameExceedsQueue { .. })),
        "{waited:?}"
    );
    router.link().take_outgoing().unwrap();
    assert_eq!(router.queued_frames(), 0);
    // a frame that fits is still queued
    router.emit_wait("n", args![2u64, ""]).await.unwrap();
    assert_eq!(router.queued_frames(), 1);
}

// ----- max_message_size -----

/// The message size bound of the tests below.
const MAX: usize = 1000;

fn too_large(e: &Error) -> bool {
    matches!(e, Error::Framing(FramingError::TooLarge { max }) if *max == MAX)
}

#[tokio::test(start_paused = true)]
async fn a_router_accepts_a_message_of_its_max_size_and_closes_on_a_larger_one() {
    let router = Router::builder().max_message_size(MAX).build();
    let mut rx = collect(&router);
    let mut errors = errors_of(&router);
    let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
    let conn = Connection::spawn(ours, router);
    theirs.write_all(&n_message(1, pad_for(MAX))).await.unwrap();
    assert_eq!(next(&mut rx).await, 1);
    theirs
        .write_all(&n_message(2, pad_for(MAX + 1)))
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(LIMIT, conn.closed()).await.unwrap(),
        CloseReason::Framing(FramingError::TooLarge { max: MAX }.to_string())
    );
    let e = errors.recv().await.unwrap();
    assert!(too_large(&e), "{e}");
    assert!(rx.try_recv().is_err(), "the oversized message was handled");
}

#[tokio::test(start_paused = true)]
async fn a_server_accepts_a_message_of_its_max_size_and_disconnects_a_peer_that_sends_more() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc"))
        .max_message_size(MAX)
        .start();
    let mut rx = collect_on(&server);
    let (errors_tx, mut errors) = mpsc::unbounded_channel();
    server.on_socket(move |socket| {
        let errors = errors_tx.clone();
        socket.router().on_error(move |e| {
            let _ = errors.send(e);
        });
    });
    let mut events = server.events();
    server.started().await.unwrap();
    let mut raw = raw_connect(&net, "svc").await;
    raw.write_all(&n_message(1, pad_for(MAX))).await.unwrap();
    assert_eq!(next(&mut rx).await, 1);
    raw.write_all(&n_message(2, pad_for(MAX + 1)))
        .await
        .unwrap();
    // the server closes: the peer reads the end of the stream
    assert_eq!(read_payload(&mut raw).await, None);
    let e = errors.recv().await.unwrap();
    assert!(too_large(&e), "{e}");
    loop {
        match events.recv().await.unwrap() {
            ServerEvent::Disconnected { reason, .. } => {
                let framing = CloseReason::Framing(FramingError::TooLarge { max: MAX }.to_string());
                assert_eq!(reason, framing.to_string());
                break;
            }
            _ => continue,
        }
    }
    assert!(rx.try_recv().is_err(), "the oversized message was handled");
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_accepts_a_message_of_its_max_size_and_disconnects_from_a_server_that_sends_more()
{
    let net = Network::new();
    let mut listener = raw_listener(&net, "svc").await;
    let client = Client::builder(net.connector("svc"))
        .max_message_size(MAX)
        .start();
    let mut rx = collect(client.router());
    let mut errors = errors_of(client.router());
    let mut events = client.events();
    let mut raw = raw_accept(&mut listener).await;
    raw.write_all(&n_message(1, pad_for(MAX))).await.unwrap();
    assert_eq!(next(&mut rx).await, 1);
    raw.write_all(&n_message(2, pad_for(MAX + 1)))
        .await
        .unwrap();
    assert_eq!(read_payload(&mut raw).await, None);
    let e = errors.recv().await.unwrap();
    assert!(too_large(&e), "{e}");
    loop {
        match events.recv().await.unwrap() {
            ClientEvent::Disconnected { reason } => {
                let framing = CloseReason::Framing(FramingError::TooLarge { max: MAX }.to_string());
                assert_eq!(reason, framing.to_string());
                break;
            }
            _ => continue,
        }
    }
    assert!(rx.try_recv().is_err(), "the oversized message was handled");
    client.stop().await;
}

/// `router` (unbuffered) sends a frame of exactly `MAX` bytes, refuses one of
/// a byte more with the documented error, queuing nothing of it, and the
/// refused frame's callback ends with the same error.
async fn refuses_to_send_more_than_max(router: &Router) {
    router
        .emit("n", args![1u64, "x".repeat(pad_for(MAX))])
        .unwrap();
    let queued = router.queued_frames();
    match router.emit("n", args![2u64, "x".repeat(pad_for(MAX + 1))]) {
        Err(Error::Encode(EncodeError::TooLarge { size, max })) => {
            assert_eq!((size, max), (MAX + 1, MAX))
        }
        other => panic!("expected an encode error, got {other:?}"),
    }
    let answer = router.request::<()>("n", args![3u64, "x".repeat(2 * MAX)]);
    let ended = tokio::time::timeout(LIMIT, answer).await.unwrap();
    assert!(
        matches!(
            ended,
            Err(Error::Encode(EncodeError::TooLarge { max: MAX, .. }))
        ),
        "{ended:?}"
    );
    assert!(
        router.queued_frames() <= queued,
        "a refused frame was queued"
    );
    router.emit("n", args![MARKER, ""]).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_router_sends_a_frame_of_its_max_size_and_refuses_a_larger_one() {
    let router = Router::builder().max_message_size(MAX).build();
    refuses_to_send_more_than_max(&router).await;
    assert_eq!(router.queued_frames(), 2);
    let peer = Router::new();
    let mut rx = collect(&peer);
    let _link = nmsg::transport::memory::link(&router, &peer);
    assert_eq!(next(&mut rx).await, 1);
    assert_eq!(next(&mut rx).await, MARKER);
}

#[tokio::test(start_paused = true)]
async fn a_client_sends_a_frame_of_its_max_size_and_refuses_a_larger_one() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc")).start();
    let mut rx = collect_on(&server);
    let client = Client::builder(net.connector("svc"))
        .max_message_size(MAX)
        .start();
    client.connected().await;
    refuses_to_send_more_than_max(client.router()).await;
    assert_eq!(next(&mut rx).await, 1);
    assert_eq!(next(&mut rx).await, MARKER);
    client.stop().await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_server_refuses_to_send_a_frame_larger_than_its_max_size() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc"))
        .max_message_size(MAX)
        .start();
    let mut sockets = sockets_of(&server);
    server.started().await.unwrap();
    let client = Client::builder(net.connector("svc")).start();
    let mut rx = collect(client.router());
    let socket = sockets.recv().await.unwrap();
    let big = "x".repeat(MAX);
    assert_eq!(server.broadcast("n", (2u64, big.clone())), 0);
    match socket.router().emit("n", args![2u64, &big]) {
        Err(Error::Encode(EncodeError::TooLarge { max: MAX, .. })) => {}
        other => panic!("expected an encode error, got {other:?}"),
    }
    socket.router().emit("n", args![MARKER, ""]).unwrap();
    assert_eq!(next(&mut rx).await, MARKER);
    client.stop().await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_server_splits_what_is_queued_into_bulks_of_at_most_its_max_size() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc"))
        .max_message_size(MAX)
        .start();
    // queued before the connection starts: 30 frames of about 300 bytes
    server.on_socket(|socket| {
        for n in 0..30u64 {
            socket
                .router()
                .emit("n", args![n, "x".repeat(300)])
                .unwrap();
        }
    });
    server.started().await.unwrap();
    let mut raw = raw_connect(&net, "svc").await;
    let mut arrived = Vec::new();
    let mut messages = 0;
    while arrived.len() < 30 {
        let payload = read_payload(&mut raw).await.unwrap();
        assert!(payload.len() <= MAX, "a message of {} bytes", payload.len());
        let (bulk, numbers) = numbers(&payload);
        assert!(bulk);
        arrived.extend(numbers);
        messages += 1;
    }
    assert_eq!(arrived, (0..30).collect::<Vec<_>>());
    // 9,000 bytes and more in messages of at most 1,000
    assert!(messages >= 10, "{messages}");
    server.stop().await;
}

// ----- latency_allowance -----

/// The requesters' callback timeout, and the allowance on top of it.
const TIMEOUT: Duration = Duration::from_secs(1);
const ALLOWANCE: Duration = Duration::from_secs(2);

fn with_allowance(router: nmsg::RouterBuilder) -> nmsg::RouterBuilder {
    router.default_timeout(TIMEOUT).latency_allowance(ALLOWANCE)
}

/// A `hold` handler on `router` that keeps each request's callback, with the
/// request's number and the timeout the request said (`t`).
fn holder(router: &Router) -> mpsc::UnboundedReceiver<(u32, RemoteCallback, Option<Duration>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    router.on("hold", move |args: Args| -> Result<(), Error> {
        let _ = tx.send((args.get(0)?, args.callback(1)?, args.timeout()));
        Ok(())
    });
    rx
}

/// `requester` asks twice. The peer answers the second 2.5 s later, after
/// its 1 s timeout but within the allowance: the answer is taken. The first
/// is never answered: it ends with a timeout error once timeout and
/// allowance have passed, 3 s. The peer is told the timeout alone.
async fn callbacks_live_for_their_timeout_plus_the_allowance(
    requester: &Router,
    held: &mut mpsc::UnboundedReceiver<(u32, RemoteCallback, Option<Duration>)>,
) {
    let start = Instant::now();
    let never = tokio::spawn(requester.request::<(u32,)>("hold", args![1u32]));
    let late = tokio::spawn(requester.request::<(u32,)>("hold", args![2u32]));
    let (first, _kept, t) = held.recv().await.unwrap();
    assert_eq!((first, t), (1, Some(TIMEOUT)));
    let (second, answer, _) = held.recv().await.unwrap();
    assert_eq!(second, 2);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    answer.call((2u32,)).unwrap();
    let answered = tokio::time::timeout(LIMIT, late).await.unwrap().unwrap();
    assert_eq!(answered.unwrap(), (2,), "an answer within the allowance");
    let failed = tokio::time::timeout(LIMIT, never).await.unwrap().unwrap();
    let at = start.elapsed();
    assert!(
        matches!(failed, Err(Error::Timeout(t)) if t == TIMEOUT),
        "{failed:?}"
    );
    assert!(
        at >= TIMEOUT + ALLOWANCE && at <= TIMEOUT + ALLOWANCE + Duration::from_millis(20),
        "the unanswered request failed after {at:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn latency_allowance_of_a_router_keeps_callbacks_that_long_past_their_timeout() {
    let requester = with_allowance(Router::builder()).build();
    let peer = Router::new();
    let mut held = holder(&peer);
    let _link = nmsg::transport::memory::link(&requester, &peer);
    callbacks_live_for_their_timeout_plus_the_allowance(&requester, &mut held).await;
}

#[tokio::test(start_paused = true)]
async fn latency_allowance_of_a_client_keeps_callbacks_that_long_past_their_timeout() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc")).start();
    let mut held = holder_on(&server);
    let client = Client::builder(net.connector("svc"))
        .router(with_allowance)
        .start();
    client.connected().await;
    callbacks_live_for_their_timeout_plus_the_allowance(client.router(), &mut held).await;
    client.stop().await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn latency_allowance_of_a_server_keeps_its_sockets_callbacks_that_long_past_their_timeout() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc"))
        .router(with_allowance)
        .start();
    let mut sockets = sockets_of(&server);
    server.started().await.unwrap();
    let client = Client::builder(net.connector("svc")).start();
    let mut held = holder(client.router());
    let socket = sockets.recv().await.unwrap();
    callbacks_live_for_their_timeout_plus_the_allowance(socket.router(), &mut held).await;
    client.stop().await;
    server.stop().await;
}

/// [`holder`] for every socket of `server`.
fn holder_on(server: &Server) -> mpsc::UnboundedReceiver<(u32, RemoteCallback, Option<Duration>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    server.on("hold", move |args: Args| -> Result<(), Error> {
        let _ = tx.send((args.get(0)?, args.callback(1)?, args.timeout()));
        Ok(())
    });
    rx
}

// ----- stop_timeout -----

const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Emits 8 frames of 64 KiB: more than an in-memory stream holds (256 KiB),
/// so a peer that reads nothing stalls the writer.
fn emit_half_a_megabyte(router: &Router) {
    let chunk = "x".repeat(64 * 1024);
    for n in 0..8u64 {
        router.emit("n", args![n, &chunk]).unwrap();
    }
}

/// Reads `stream` to its end; gives the numbers of the frames that arrived.
async fn read_to_the_end(mut stream: BoxStream) -> Vec<u64> {
    let mut bytes = Vec::new();
    tokio::time::timeout(LIMIT, stream.read_to_end(&mut bytes))
        .await
        .expect("the connection stayed open")
        .unwrap();
    let mut arrived = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        if rest.len() < 4 + len {
            break; // cut off by the close
        }
        arrived.extend(numbers(&rest[4..4 + len]).1);
        rest = &rest[4 + len..];
    }
    arrived
}

/// How long `stop` takes.
async fn timed(stop: impl std::future::Future<Output = ()>) -> Duration {
    let start = Instant::now();
    tokio::time::timeout(LIMIT, stop)
        .await
        .expect("stop did not return");
    start.elapsed()
}

fn about(d: Duration, want: Duration) -> bool {
    d >= want && d <= want + Duration::from_millis(20)
}

#[tokio::test(start_paused = true)]
async fn server_stop_waits_up_to_its_stop_timeout_for_a_peer_that_reads_nothing_then_closes() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc"))
        .stop_timeout(STOP_TIMEOUT)
        .start();
    let mut sockets = sockets_of(&server);
    server.started().await.unwrap();
    let raw = raw_connect(&net, "svc").await;
    emit_half_a_megabyte(sockets.recv().await.unwrap().router());
    let took = timed(server.stop()).await;
    assert!(about(took, STOP_TIMEOUT), "stop took {took:?}");
    // closed: the peer reads what the stream held, then its end
    let arrived = read_to_the_end(raw).await;
    assert!(arrived.len() < 8, "{arrived:?}");
}

#[tokio::test(start_paused = true)]
async fn server_stop_with_a_peer_that_reads_returns_once_everything_is_written() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc"))
        .stop_timeout(STOP_TIMEOUT)
        .start();
    let mut sockets = sockets_of(&server);
    server.started().await.unwrap();
    let raw = raw_connect(&net, "svc").await;
    emit_half_a_megabyte(sockets.recv().await.unwrap().router());
    let reader = tokio::spawn(read_to_the_end(raw));
    let took = timed(server.stop()).await;
    assert!(took < STOP_TIMEOUT, "stop took {took:?}");
    assert_eq!(reader.await.unwrap(), (0..8).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn client_stop_waits_up_to_its_stop_timeout_for_a_server_that_reads_nothing_then_closes() {
    let net = Network::new();
    let mut listener = raw_listener(&net, "svc").await;
    let client = Client::builder(net.connector("svc"))
        .stop_timeout(STOP_TIMEOUT)
        .start();
    let raw = raw_accept(&mut listener).await;
    client.connected().await;
    let mut events = client.events();
    emit_half_a_megabyte(client.router());
    let took = timed(client.stop()).await;
    assert!(about(took, STOP_TIMEOUT), "stop took {took:?}");
    let arrived = read_to_the_end(raw).await;
    assert!(arrived.len() < 8, "{arrived:?}");
    let mut last = None;
    while let Ok(event) = events.try_recv() {
        last = Some(event);
    }
    assert!(
        matches!(last, Some(ClientEvent::Stopped { .. })),
        "{last:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_stopped_before_it_connects_reports_what_it_queued_as_unsent() {
    let net = Network::new();
    let client = Client::builder(net.connector("nowhere")).start();
    let mut events = client.events();
    for n in 0..3u64 {
        client.router().emit("n", args![n]).unwrap();
    }
    client.stop().await;
    let mut last = None;
    while let Ok(event) = events.try_recv() {
        last = Some(event);
    }
    assert_eq!(last, Some(ClientEvent::Stopped { unsent: 3 }));
}

#[tokio::test(start_paused = true)]
async fn client_stop_with_a_server_that_reads_returns_once_everything_is_written() {
    let net = Network::new();
    let mut listener = raw_listener(&net, "svc").await;
    let client = Client::builder(net.connector("svc"))
        .stop_timeout(STOP_TIMEOUT)
        .start();
    let raw = raw_accept(&mut listener).await;
    client.connected().await;
    emit_half_a_megabyte(client.router());
    let reader = tokio::spawn(read_to_the_end(raw));
    let took = timed(client.stop()).await;
    assert!(took < STOP_TIMEOUT, "stop took {took:?}");
    assert_eq!(reader.await.unwrap(), (0..8).collect::<Vec<_>>());
}

// ----- buffering over a connection -----

/// The cycle of the buffered routers below.
const CYCLE: Duration = Duration::from_millis(10);

/// `emitter`, buffering on a 10 ms cycle, is read by `read` on the other
/// end. The frames emitted within one cycle arrive together, as one bulk, when
/// the cycle the first of them opened ends; frames of two cycles arrive as two.
async fn frames_of_one_cycle_arrive_as_one_bulk_at_its_end(
    emitter: &Router,
    start: Instant,
    read: &mut mpsc::UnboundedReceiver<(u128, bool, Vec<u64>)>,
) {
    let at = |ms| start + Duration::from_millis(ms);
    emitter.emit("n", args![1u64]).unwrap();
    tokio::time::sleep_until(at(5)).await;
    emitter.emit("n", args![2u64]).unwrap();
    assert_eq!(read.recv().await.unwrap(), (10, true, vec![1, 2]));
    // 3 opens a cycle at 20 ms, which ends at 30 ms; 4, at 35 ms, opens the next
    tokio::time::sleep_until(at(20)).await;
    emitter.emit("n", args![3u64]).unwrap();
    tokio::time::sleep_until(at(35)).await;
    emitter.emit("n", args![4u64]).unwrap();
    assert_eq!(read.recv().await.unwrap(), (30, true, vec![3]));
    assert_eq!(read.recv().await.unwrap(), (45, true, vec![4]));
}

#[tokio::test(start_paused = true)]
async fn a_client_on_a_cycle_sends_the_frames_of_each_cycle_as_one_bulk_at_its_end() {
    let net = Network::new();
    let mut listener = raw_listener(&net, "svc").await;
    let client = Client::builder(net.connector("svc"))
        .buffering(Buffering::Cycle(CYCLE))
        .start();
    let raw = raw_accept(&mut listener).await;
    client.connected().await;
    let start = Instant::now();
    let mut read = read_all(raw, start);
    frames_of_one_cycle_arrive_as_one_bulk_at_its_end(client.router(), start, &mut read).await;
    client.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_server_on_a_cycle_sends_the_frames_of_each_cycle_as_one_bulk_at_its_end() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc"))
        .buffering(Buffering::Cycle(CYCLE))
        .start();
    let mut sockets = sockets_of(&server);
    server.started().await.unwrap();
    let raw = raw_connect(&net, "svc").await;
    let socket = sockets.recv().await.unwrap();
    let start = Instant::now();
    let mut read = read_all(raw, start);
    frames_of_one_cycle_arrive_as_one_bulk_at_its_end(socket.router(), start, &mut read).await;
    server.stop().await;
}

/// `emitter`, buffering when idle, is read by `read` on the other end: a
/// single frame goes out at once, as a bulk of one, without the clock moving;
/// frames queued at one moment go out as one bulk.
async fn idle_buffering_adds_no_latency(
    emitter: &Router,
    start: Instant,
    read: &mut mpsc::UnboundedReceiver<(u128, bool, Vec<u64>)>,
) {
    emitter.emit("n", args![1u64]).unwrap();
    assert_eq!(read.recv().await.unwrap(), (0, true, vec![1]));
    assert_eq!(start.elapsed(), Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(7)).await;
    emitter.emit("n", args![2u64]).unwrap();
    emitter.emit("n", args![3u64]).unwrap();
    assert_eq!(read.recv().await.unwrap(), (7, true, vec![2, 3]));
}

#[tokio::test(start_paused = true)]
async fn a_client_buffering_when_idle_sends_a_single_frame_at_once() {
    let net = Network::new();
    let mut listener = raw_listener(&net, "svc").await;
    let client = Client::builder(net.connector("svc"))
        .buffering(Buffering::Idle)
        .start();
    let raw = raw_accept(&mut listener).await;
    client.connected().await;
    let start = Instant::now();
    let mut read = read_all(raw, start);
    idle_buffering_adds_no_latency(client.router(), start, &mut read).await;
    client.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_server_buffers_when_idle_by_default_and_sends_a_single_frame_at_once() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc")).start();
    let mut sockets = sockets_of(&server);
    server.started().await.unwrap();
    let raw = raw_connect(&net, "svc").await;
    let socket = sockets.recv().await.unwrap();
    let start = Instant::now();
    let mut read = read_all(raw, start);
    idle_buffering_adds_no_latency(socket.router(), start, &mut read).await;
    server.stop().await;
}
