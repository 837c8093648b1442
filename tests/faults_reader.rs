//! The reading side of a connection facing a hostile or careless peer:
//! reading pauses while the router is over its bounds (the peer does not
//! read its answers, or sends faster than its handlers finish), a message
//! begun must be whole within a time, an idle connection may be closed, and
//! silent sockets do not hold a server's slots for ever.
//!
//! End to end over a `Connection` on an in-memory stream, or a server on the
//! in-memory network; time is tokio's paused time; memory is counted per
//! thread by the allocator below (each test runs its runtime on its own thread).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nmsg::frame::{OutFrame, OutKind};
use nmsg::transport::memory::Network;
use nmsg::transport::{CloseReason, Connection, ConnectionOptions, Connector};
use nmsg::{Args, Backoff, Client, Codec, Error, FramingError, MsgPack, Router, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

// ----- live bytes allocated by the current thread -----

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn live_bytes() -> isize {
    LIVE.with(Cell::get)
}

/// Starts counting the peak from what is live now; gives that base.
fn reset_peak() -> isize {
    let live = live_bytes();
    PEAK.with(|peak| peak.set(live));
    live
}

fn peak_above(base: isize) -> isize {
    PEAK.with(Cell::get) - base
}

// ----- messages on the wire -----

/// One length-prefixed MsgPack event frame `event` with a number and, when
/// `callback`, a callback after it.
fn request(id: u32, event: &str, n: u64, callback: bool) -> Vec<u8> {
    let mut frame = Vec::new();
    let data: [&dyn erased_serde::Serialize; 1] = [&n];
    let positions: &[u32] = if callback { &[1] } else { &[] };
    MsgPack
        .encode_frame(
            &OutFrame {
                id,
                kind: OutKind::Event(event),
                data: &data,
                callbacks: positions,
                timeout: None,
            },
            &mut frame,
        )
        .unwrap();
    let mut wire = (frame.len() as u32).to_be_bytes().to_vec();
    wire.extend_from_slice(&frame);
    wire
}

/// Reads length-prefixed messages from `stream` until it ends; counts them.
async fn count_messages(mut stream: impl tokio::io::AsyncRead + Unpin) -> usize {
    let mut n = 0;
    let mut prefix = [0u8; 4];
    let mut payload = Vec::new();
    while stream.read_exact(&mut prefix).await.is_ok() {
        payload.resize(u32::from_be_bytes(prefix) as usize, 0);
        if stream.read_exact(&mut payload).await.is_err() {
            break;
        }
        n += 1;
    }
    n
}

/// Counts the handlers that run at once, and the most that ever did.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    most: AtomicUsize,
}

struct GaugeGuard(Arc<Gauge>);

impl Gauge {
    fn enter(self: &Arc<Self>) -> GaugeGuard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        GaugeGuard(self.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

fn answering(router: &Router) {
    router.on("ask", |args: Args| -> Result<(), Error> {
        let n: u64 = args.get(0)?;
        args.callback(1)?.call((n,))
    });
}

// ----- reading pauses -----

/// A peer sends requests and never reads the answers. Once the stream back
/// is full, the answers fill the router's queue to half its bound, and the
/// connection stops reading: the peer's writes block, long before 100,000
/// requests, and the queue stays at the bound's half.
#[tokio::test(start_paused = true)]
async fn a_peer_that_never_reads_its_answers_stops_being_read_from() {
    const REQUESTS: usize = 100_000;
    let (ours, peer) = tokio::io::duplex(4096);
    let router = Router::builder().max_queued_frames(100).build();
    answering(&router);
    let conn = Connection::spawn(ours, router.clone());
    let (mut rx, mut tx) = tokio::io::split(peer);
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let writer = tokio::spawn(async move {
        for n in 0..REQUESTS {
            let wire = request(n as u32 + 1, "ask", n as u64, true);
            tx.write_all(&wire).await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    // Paused time runs on once every task waits.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let stalled_at = sent.load(Ordering::SeqCst);
    let queued = router.queued_frames();
    println!("{stalled_at} requests sent, {queued} answers queued");
    assert!(
        stalled_at < REQUESTS,
        "all {REQUESTS} requests were read, and no answer"
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(sent.load(Ordering::SeqCst), stalled_at, "still read from");
    assert!(queued <= 50, "{queued} answers queued");
    // Reading goes on once the peer reads.
    let reading = tokio::spawn(async move {
        let mut sink = vec![0u8; 64 * 1024];
        while rx.read(&mut sink).await.unwrap_or(0) > 0 {}
    });
    tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .expect("reading never went on")
        .unwrap();
    conn.abort();
    reading.abort();
}

/// A peer pipelines 100,000 requests to an async handler that sleeps a
/// second, and reads its answers. At most `max_running_handlers` handlers
/// run at once, every request is answered, and memory stays within a few
/// MiB (without the pause, a task per request: well over 100 MiB).
#[tokio::test(start_paused = true)]
async fn a_peer_that_pipelines_100000_requests_to_a_sleeping_handler_is_read_as_handlers_end() {
    const REQUESTS: u32 = 100_000;
    const MAX_RUNNING: usize = 1_024;
    let base = reset_peak();
    let (ours, peer) = tokio::io::duplex(64 * 1024);
    let router = Router::builder().max_running_handlers(MAX_RUNNING).build();
    let gauge = Arc::new(Gauge::default());
    let g = gauge.clone();
    router.on("slow", move |args: Args| {
        let running = g.enter();
        async move {
            let _running = running;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let n: u64 = args.get(0)?;
            args.callback(1)?.call((n,))
        }
    });
    let conn = Connection::spawn(ours, router.clone());
    let (rx, mut tx) = tokio::io::split(peer);
    let answers = tokio::spawn(count_messages(rx));
    let send = async {
        for id in 1..=REQUESTS {
            tx.write_all(&request(id, "slow", id as u64, true))
                .await
                .unwrap();
        }
        // Every answer, then the end of the stream.
        while router.running_handlers() > 0 || router.queued_frames() > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tx.shutdown().await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(24 * 3600), send)
        .await
        .expect("the requests were never all read");
    let answered = tokio::time::timeout(Duration::from_secs(60), answers)
        .await
        .expect("the answers never ended")
        .unwrap();
    let peak = peak_above(base);
    let most = gauge.most.load(Ordering::SeqCst);
    println!("most running {most}, answered {answered}, peak {peak} bytes");
    assert!(most <= MAX_RUNNING, "{most} handlers ran at once");
    assert_eq!(answered, REQUESTS as usize);
    // About 1.1 MiB here; 85 MB without the pause.
    assert!(peak < 4 << 20, "{peak} bytes live at the peak");
    drop(conn);
}

// ----- a message begun must be whole in time -----

/// The 5 bytes of the issue: a prefix announcing 16 MiB − 1, then one byte.
const BEGUN: [u8; 5] = [0x00, 0xff, 0xff, 0xff, 0x01];

/// A connection with these options over an in-memory stream; the peer's end,
/// and the errors its router's hook gets.
fn connection(
    options: ConnectionOptions,
) -> (
    Connection,
    tokio::io::DuplexStream,
    std::sync::mpsc::Receiver<Error>,
) {
    let (ours, peer) = tokio::io::duplex(64 * 1024);
    let router = Router::new();
    answering(&router);
    router.on("note", |_args: Args| {});
    let (tx, errors) = std::sync::mpsc::channel();
    router.on_error(move |e| {
        let _ = tx.send(e);
    });
    (Connection::spawn_with(ours, router, options), peer, errors)
}

fn stalled(timeout: Duration) -> CloseReason {
    CloseReason::Framing(FramingError::Stalled { timeout }.to_string())
}

/// A peer that begins a message and goes silent is disconnected once the
/// partial message timeout has passed (30 s by default), and the error hook
/// says why.
#[tokio::test(start_paused = true)]
async fn a_message_begun_and_never_finished_closes_the_connection_at_the_timeout() {
    for (options, timeout) in [
        (ConnectionOptions::new(), Duration::from_secs(30)),
        (
            ConnectionOptions::new().partial_message_timeout(Duration::from_secs(2)),
            Duration::from_secs(2),
        ),
    ] {
        let (conn, mut peer, errors) = connection(options);
        let start = Instant::now();
        peer.write_all(&BEGUN).await.unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(3600), conn.closed())
            .await
            .expect("a silent peer with a message begun stays connected");
        let took = start.elapsed();
        assert_eq!(reason, stalled(timeout));
        assert!(
            took >= timeout && took < timeout + Duration::from_millis(100),
            "closed after {took:?}"
        );
        let error = errors.try_recv().expect("the error hook is told");
        assert!(
            matches!(error, Error::Framing(FramingError::Stalled { timeout: t }) if t == timeout),
            "{error:?}"
        );
        println!("{reason}");
    }
}

/// A peer that trickles a message a byte at a time is disconnected at the
/// timeout too: the time counts from the message's first byte, not the last.
#[tokio::test(start_paused = true)]
async fn a_message_trickled_a_byte_at_a_time_closes_at_the_timeout() {
    let timeout = Duration::from_secs(2);
    let (conn, mut peer, _errors) =
        connection(ConnectionOptions::new().partial_message_timeout(timeout));
    let start = Instant::now();
    peer.write_all(&[0, 0, 1, 0]).await.unwrap();
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if peer.write_all(&[0]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        reason = conn.closed() => assert_eq!(reason, stalled(timeout)),
        _ = trickle => {}
        _ = tokio::time::sleep(Duration::from_secs(3600)) => panic!("a trickling peer stays connected"),
    }
    let took = start.elapsed();
    assert!(
        took < timeout + Duration::from_millis(150),
        "closed after {took:?}"
    );
}

/// Messages that each arrive whole within the timeout keep the connection,
/// even when the stream always holds one begun: each message gets its own
/// time. (Here each takes 1.5 s of a 2 s timeout, for 10 messages.)
#[tokio::test(start_paused = true)]
async fn messages_that_each_arrive_in_time_keep_the_connection() {
    let (conn, peer, errors) =
        connection(ConnectionOptions::new().partial_message_timeout(Duration::from_secs(2)));
    let (rx, mut tx) = tokio::io::split(peer);
    let answers = tokio::spawn(count_messages(rx));
    // Each message's second half goes with the next one's first.
    let wires: Vec<Vec<u8>> = (0..10)
        .map(|n| request(n + 1, "ask", n as u64, true))
        .collect();
    let mut held: &[u8] = &[];
    for wire in &wires {
        let (first, second) = wire.split_at(wire.len() / 2);
        tx.write_all(&[held, first].concat()).await.unwrap();
        held = second;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    tx.write_all(held).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!conn.is_closed(), "{:?}", conn.closed().await);
    assert!(errors.try_recv().is_err());
    tx.shutdown().await.unwrap();
    assert_eq!(conn.closed().await, CloseReason::PeerClosed);
    assert_eq!(answers.await.unwrap(), 10);
}

/// While the router pauses reading (here, its one async handler runs), the
/// partial message timeout does not count: the peer is not the one late.
#[tokio::test(start_paused = true)]
async fn the_partial_message_timeout_waits_while_the_router_pauses_reading() {
    let (ours, mut peer) = tokio::io::duplex(64 * 1024);
    let router = Router::builder().max_running_handlers(1).build();
    router.on("slow", |_args: Args| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    answering(&router);
    let timeout = Duration::from_secs(2);
    let conn = Connection::spawn_with(
        ours,
        router.clone(),
        ConnectionOptions::new().partial_message_timeout(timeout),
    );
    let ask = request(2, "ask", 7, true);
    let (first, second) = ask.split_at(3);
    peer.write_all(&[&request(1, "slow", 0, false)[..], first].concat())
        .await
        .unwrap();
    // The slow handler runs 10 s; the message begun waits unread meanwhile,
    // then gets its whole time again.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    assert!(!conn.is_closed(), "{:?}", conn.closed().await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    peer.write_all(second).await.unwrap();
    let mut prefix = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(1), peer.read_exact(&mut prefix))
        .await
        .expect("the request was not answered")
        .unwrap();
    assert!(!conn.is_closed());
}

// ----- idle timeout -----

/// With an idle timeout, a connection that receives nothing for that long
/// closes (`TimedOut`); one that receives a message more often stays. With
/// none (the default), an idle connection stays for an hour and more.
#[tokio::test(start_paused = true)]
async fn an_idle_timeout_closes_a_connection_that_receives_nothing() {
    let idle = Duration::from_secs(5);
    let (conn, mut peer, errors) = connection(ConnectionOptions::new().idle_timeout(idle));
    let start = Instant::now();
    for n in 0..5 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        peer.write_all(&request(n + 1, "note", 0, false))
            .await
            .unwrap();
    }
    let sent = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(3600), conn.closed())
        .await
        .expect("an idle connection stays");
    let took = sent.elapsed();
    assert!(start.elapsed() >= Duration::from_secs(20));
    assert!(
        matches!(
            reason,
            CloseReason::Io {
                kind: std::io::ErrorKind::TimedOut,
                ..
            }
        ),
        "{reason:?}"
    );
    assert!(
        took >= idle && took < idle + Duration::from_millis(100),
        "closed after {took:?}"
    );
    assert!(errors.try_recv().is_err(), "an idle close is not an error");
    println!("{reason}");

    let (conn, _peer, _errors) = connection(ConnectionOptions::new());
    tokio::time::sleep(Duration::from_secs(7200)).await;
    assert!(!conn.is_closed());
}

// ----- the scenario -----

/// A server at `max_connections(50)`, held by 50 sockets that each send the
/// 5 bytes of a message begun and go silent: a well-behaved client is
/// served within the partial message timeout plus 1 s.
#[tokio::test(start_paused = true)]
async fn fifty_silent_sockets_with_a_message_begun_free_their_slots_in_time() {
    let timeout = Duration::from_secs(3);
    let net = Network::new();
    let server = Server::builder(net.binder("svc"))
        .max_connections(50)
        .partial_message_timeout(timeout)
        .start();
    server.on("echo", |args: Args| -> Result<(), Error> {
        let n: u64 = args.get(0)?;
        args.callback(1)?.call((n,))
    });
    server.started().await.unwrap();
    let start = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..50 {
        let (mut stream, _) = net.connector("svc").connect().await.unwrap();
        stream.write_all(&BEGUN).await.unwrap();
        silent.push(stream);
    }
    while server.socket_count() < 50 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let client = Client::builder(net.connector("svc"))
        .backoff(Backoff {
            initial: Duration::from_millis(100),
            factor: 1.0,
            max: Duration::from_millis(100),
            jitter: 0.0,
            seed: None,
        })
        .start();
    let served = async {
        loop {
            match client.router().request::<(u64,)>("echo", (7u64,)).await {
                Ok((n,)) => return n,
                Err(Error::Disconnected(_)) | Err(Error::Timeout(_)) => continue,
                Err(e) => panic!("{e}"),
            }
        }
    };
    let n = tokio::time::timeout(Duration::from_secs(3600), served)
        .await
        .expect("never served");
    let took = start.elapsed();
    println!("served after {took:?}");
    assert_eq!(n, 7);
    assert!(
        took <= timeout + Duration::from_secs(1),
        "served after {took:?}"
    );
    client.stop().await;
    server.stop().await;
}

/// The same when reading pauses with a message begun: its time stops while
/// the router's queue is over its high-water mark (the peer does not read
/// what this side emits) and starts whole again once the peer reads.
#[tokio::test(start_paused = true)]
async fn a_message_begun_before_reading_paused_gets_its_whole_time_after() {
    let (ours, peer) = tokio::io::duplex(256);
    let router = Router::builder().max_queued_frames(10).build();
    answering(&router);
    let timeout = Duration::from_secs(2);
    let conn = Connection::spawn_with(
        ours,
        router.clone(),
        ConnectionOptions::new().partial_message_timeout(timeout),
    );
    let (mut rx, mut tx) = tokio::io::split(peer);
    let ask = request(1, "ask", 7, true);
    let (first, second) = ask.split_at(2);
    tx.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A frame larger than the stream's buffer, then enough to fill half the queue.
    router.emit("push", ("x".repeat(1024),)).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        router.emit("push", (0,)).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!conn.is_closed(), "{:?}", conn.closed().await);
    // The peer reads at last; the message begun 10 s ago gets 2 s from now.
    let reading = tokio::spawn(async move { count_messages(&mut rx).await });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!conn.is_closed(), "{:?}", conn.closed().await);
    tx.write_all(second).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!conn.is_closed(), "{:?}", conn.closed().await);
    tx.shutdown().await.unwrap();
    assert_eq!(conn.closed().await, CloseReason::PeerClosed);
    // The large frame, five small ones, and the answer.
    assert_eq!(reading.await.unwrap(), 7);
}

// ----- a budget of bytes for all of a server's sockets -----

/// A server whose sockets may buffer 1 MiB together: one peer sends most
/// of a 900 KiB message and holds most of the budget; a second that sends
/// a message as large waits for room (its writes block) until the first
/// message is whole and let go, then is read and served too.
#[tokio::test(start_paused = true)]
async fn a_socket_over_the_servers_byte_budget_waits_until_the_total_falls() {
    const LEN: usize = 900 * 1024;
    let net = Network::new();
    let server = Server::builder(net.binder("svc"))
        .max_buffered_bytes(1 << 20)
        .start();
    let (tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    server.on("big", move |args: Args| -> Result<(), Error> {
        let (who, text): (u64, String) = args.parse()?;
        let _ = tx.send((who, text.len()));
        Ok(())
    });
    server.started().await.unwrap();
    // Two messages of LEN bytes each: an event `big` with a number and a string.
    let big = |who: u64| {
        let mut frame = Vec::new();
        let text = "x".repeat(LEN - 40);
        let data: [&dyn erased_serde::Serialize; 2] = [&who, &text];
        MsgPack
            .encode_frame(
                &OutFrame {
                    id: who as u32,
                    kind: OutKind::Event("big"),
                    data: &data,
                    callbacks: &[],
                    timeout: None,
                },
                &mut frame,
            )
            .unwrap();
        let mut wire = (frame.len() as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(&frame);
        wire
    };
    let (first, second) = (big(1), big(2));
    let (mut a, _) = net.connector("svc").connect().await.unwrap();
    let (mut b, _) = net.connector("svc").connect().await.unwrap();
    a.write_all(&first[..600 * 1024]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut second_sent = Box::pin(b.write_all(&second));
    let blocked = tokio::time::timeout(Duration::from_secs(5), &mut second_sent).await;
    assert!(
        blocked.is_err(),
        "the second message was read whole, over the budget"
    );
    assert!(got.try_recv().is_err());
    // The first message is whole: handled, its buffer let go, and the
    // second is read on.
    a.write_all(&first[600 * 1024..]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), second_sent)
        .await
        .expect("the second socket was never read again")
        .unwrap();
    let mut served = vec![got.recv().await.unwrap(), got.recv().await.unwrap()];
    served.sort();
    assert_eq!(served, [(1, LEN - 40), (2, LEN - 40)]);
    server.stop().await;
}

/// A connection with a large write its peer does not read, while the
/// budget is over, stops reading; it reads on once the write is done.
#[tokio::test(start_paused = true)]
async fn a_connection_with_a_large_unwritten_write_over_the_budget_pauses_reading() {
    let (ours, peer) = tokio::io::duplex(1024);
    let router = Router::new();
    let (tx, mut noted) = tokio::sync::mpsc::unbounded_channel();
    router.on("note", move |args: Args| -> Result<(), Error> {
        let _ = tx.send(args.get::<u64>(0)?);
        Ok(())
    });
    let conn = Connection::spawn_with(
        ours,
        router.clone(),
        ConnectionOptions::new().max_buffered_bytes(64 * 1024),
    );
    router.emit("big", ("x".repeat(200 * 1024),)).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (mut rx, mut tx) = tokio::io::split(peer);
    tx.write_all(&request(1, "note", 1, false)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(noted.try_recv().is_err(), "read while over the budget");
    let reading = tokio::spawn(async move { count_messages(&mut rx).await });
    let n = tokio::time::timeout(Duration::from_secs(5), noted.recv())
        .await
        .expect("never read again");
    assert_eq!(n, Some(1));
    tx.shutdown().await.unwrap();
    assert_eq!(conn.closed().await, CloseReason::PeerClosed);
    assert_eq!(reading.await.unwrap(), 1);
}

/// A client that only listens, with an idle timeout: a server that sends
/// nothing for that long is taken for gone, and the client reconnects.
#[tokio::test(start_paused = true)]
async fn a_listening_client_with_an_idle_timeout_leaves_a_silent_server_and_reconnects() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc")).start();
    server.started().await.unwrap();
    let idle = Duration::from_secs(30);
    let client = Client::builder(net.connector("svc"))
        .idle_timeout(idle)
        .start();
    let mut events = client.events();
    client.connected().await;
    let start = Instant::now();
    let reason = loop {
        match tokio::time::timeout(Duration::from_secs(3600), events.recv())
            .await
            .expect("a silent server keeps a listening client")
            .unwrap()
        {
            nmsg::ClientEvent::Disconnected { reason } => break reason,
            _ => continue,
        }
    };
    let took = start.elapsed();
    println!("{reason} after {took:?}");
    assert!(reason.contains("idle timeout"), "{reason}");
    assert!(
        took >= idle && took < idle + Duration::from_millis(100),
        "{took:?}"
    );
    loop {
        if let nmsg::ClientEvent::Connected { .. } = events.recv().await.unwrap() {
            break;
        }
    }
    client.stop().await;
    server.stop().await;
}
