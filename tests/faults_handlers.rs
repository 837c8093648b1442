//! Handlers facing a hostile or careless peer: reading pauses while too many
//! async handlers run or the answers are not read, handler tasks end with
//! their connection, and what a handler keeps holds only its own bytes.
//!
//! The router-level tests play the transport themselves through the router's
//! `Link`: they wait for `poll_read_ready` before each message, as a
//! connection does, and hand it messages read into 8 KiB buffers, as a
//! connection reads them. Time is tokio's paused time; memory is counted per
//! thread by the allocator of `alloc_support` (each test runs its runtime on its own thread).

mod alloc_support;

use alloc_support::{live_bytes, peak_above, reset_peak};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nmsg::frame::{OutFrame, OutKind};
use nmsg::transport::memory::Network;
use nmsg::transport::Link;
use nmsg::{Args, Client, Codec, MsgPack, RemoteCallback, Router, Server, ServerEvent};
use tokio::sync::mpsc;

// ----- messages, as a connection reads them -----

/// The size of the buffer a connection reads into.
const READ_BUFFER: usize = 8 * 1024;

/// One MsgPack event frame `event` with a number and, when `callback`, a
/// callback after it; as a connection hands it to the router: a slice of a
/// read buffer of its own, 8 KiB.
fn message(id: u32, event: &str, n: u64, callback: bool) -> Bytes {
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
    let mut buffer = BytesMut::with_capacity(READ_BUFFER);
    buffer.extend_from_slice(&frame);
    buffer.resize(READ_BUFFER, 0);
    buffer.freeze().slice(..frame.len())
}

/// Waits until `link` may read, as a connection does before each message.
async fn read_ready(link: &Link) {
    std::future::poll_fn(|cx| link.poll_read_ready(cx)).await
}

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Flag(AtomicUsize);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn poll_ready_with(link: &Link, flag: &Arc<Flag>) -> Poll<()> {
    let waker = Waker::from(flag.clone());
    link.poll_read_ready(&mut Context::from_waker(&waker))
}

/// Counts the handlers that run at once, and the most that ever did.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    most: AtomicUsize,
    done: AtomicUsize,
}

impl Gauge {
    fn enter(self: &Arc<Self>) -> GaugeGuard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        GaugeGuard(self.clone())
    }
}

struct GaugeGuard(Arc<Gauge>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
        self.0.done.fetch_add(1, Ordering::SeqCst);
    }
}

// ----- reading pauses -----

/// A peer pipelines 100,000 requests to a handler that sleeps a second
/// before it answers. The transport waits for `poll_read_ready` before each
/// one, as a connection does, and writes what is queued after each (the peer
/// reads its answers). At most `max_running_handlers` handlers run at once,
/// all requests are answered, and the memory of the whole run stays within
/// a few MiB (about 1,024 tasks and their arguments; without the bound, a
/// task and an 8 KiB read buffer per request: about 1 GiB).
#[tokio::test(start_paused = true)]
async fn a_peer_that_pipelines_100000_requests_to_a_sleeping_handler_waits_for_the_running_ones() {
    const REQUESTS: u32 = 100_000;
    const MAX_RUNNING: usize = 1_024;
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
    let link = router.link();
    let mut answered = 0usize;
    let mut most_seen_by_router = 0;
    let base = live_bytes();
    reset_peak();
    let run = async {
        for id in 1..=REQUESTS {
            read_ready(&link).await;
            link.dispatch(message(id, "slow", id as u64, true));
            most_seen_by_router = most_seen_by_router.max(router.running_handlers());
            // The peer reads: what is queued is written (here, dropped).
            if let Some(out) = link.take_outgoing() {
                answered += count_messages(&out);
            }
        }
        while gauge.done.load(Ordering::SeqCst) < REQUESTS as usize {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(out) = link.take_outgoing() {
            answered += count_messages(&out);
        }
    };
    // Paused time runs on while everything waits: a reader never woken
    // would end here, not hang.
    tokio::time::timeout(Duration::from_secs(24 * 3600), run)
        .await
        .expect("the reader was never woken again");
    let peak = peak_above(base);
    let most = gauge.most.load(Ordering::SeqCst);
    println!("most running {most}, router saw {most_seen_by_router}, peak {peak} bytes");
    assert!(most <= MAX_RUNNING, "{most} handlers ran at once");
    assert!(most_seen_by_router <= MAX_RUNNING);
    assert_eq!(most, MAX_RUNNING, "the bound is used, not undercut");
    assert_eq!(answered, REQUESTS as usize);
    assert_eq!(router.running_handlers(), 0);
    // Generous: the run measured about 1.1 MiB here; with every running
    // handler's arguments holding their 8 KiB read buffer, 9.5 MiB.
    assert!(peak < 4 << 20, "{peak} bytes live at the peak");
}

fn count_messages(mut out: &[u8]) -> usize {
    let mut n = 0;
    while out.len() >= 4 {
        let len = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
        out = &out[4 + len..];
        n += 1;
    }
    n
}

/// A peer that sends requests and never reads the answers: reading pauses
/// once the outgoing queue holds half of its bound, and goes on (the reader
/// woken) once the queue is taken. Both bounds, frames and bytes.
#[tokio::test]
async fn a_peer_that_never_reads_pauses_reading_at_half_the_queue_bounds() {
    for (frames, bytes) in [(100, usize::MAX), (usize::MAX, 1_000)] {
        let router = Router::builder()
            .max_queued_frames(frames)
            .max_queued_bytes(bytes)
            .build();
        router.on("ask", |args: Args| -> Result<(), nmsg::Error> {
            let n: u64 = args.get(0)?;
            args.callback(1)?.call((n,))
        });
        let link = router.link();
        let flag = Arc::new(Flag::default());
        let mut read = 0;
        while poll_ready_with(&link, &flag).is_ready() {
            read += 1;
            assert!(read <= 1_000, "reading never paused");
            link.dispatch(message(read, "ask", read as u64, true));
        }
        let queued = router.queued_frames();
        match frames {
            100 => assert_eq!(queued, 50, "paused at half of 100 frames"),
            _ => {
                // Each answer is a few bytes: paused at the first that
                // reaches 500 bytes, well before 1,000.
                assert!(queued >= 10, "{queued} answers queued");
                assert!(link.take_outgoing().is_some());
                assert_eq!(flag.0.load(Ordering::SeqCst), 1, "the reader is woken");
                assert!(poll_ready_with(&link, &flag).is_ready());
                continue;
            }
        }
        assert_eq!(flag.0.load(Ordering::SeqCst), 0);
        // Still paused, however often asked, until the queue is taken.
        assert!(poll_ready_with(&link, &flag).is_pending());
        let out = link.take_outgoing().unwrap();
        assert_eq!(count_messages(&out), 50);
        assert_eq!(flag.0.load(Ordering::SeqCst), 1, "the reader is woken");
        assert!(poll_ready_with(&link, &flag).is_ready());
    }
}

/// Reading pauses while the bound of async handlers run and goes on, the
/// reader woken, when one ends; sync handlers never count.
#[tokio::test]
async fn reading_pauses_while_the_bound_of_async_handlers_run() {
    let router = Router::builder().max_running_handlers(3).build();
    let (release, released) = tokio::sync::watch::channel(false);
    router.on("wait", move |_args: Args| {
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|r| *r).await;
        }
    });
    router.on("sync", |_args: Args| {});
    let link = router.link();
    let flag = Arc::new(Flag::default());
    for n in 0..20 {
        link.dispatch(message(n, "sync", 0, false));
    }
    assert!(poll_ready_with(&link, &flag).is_ready());
    for n in 1..=3 {
        assert!(poll_ready_with(&link, &flag).is_ready());
        link.dispatch(message(n, "wait", 0, false));
    }
    assert_eq!(router.running_handlers(), 3);
    assert!(poll_ready_with(&link, &flag).is_pending());
    release.send(true).unwrap();
    while router.running_handlers() > 0 {
        tokio::task::yield_now().await;
    }
    assert!(flag.0.load(Ordering::SeqCst) >= 1, "the reader is woken");
    assert!(poll_ready_with(&link, &flag).is_ready());
}

// ----- handler tasks end with their connection -----

/// A handler that waits forever: it says "started" on `signals` when it is
/// called, and "dropped" when its task is dropped.
fn forever(
    signals: mpsc::UnboundedSender<&'static str>,
) -> impl Fn(Args) -> ForeverFuture + Send + Sync + 'static {
    move |_args: Args| {
        let _ = signals.send("started");
        let on_drop = OnDrop(signals.clone());
        Box::pin(async move {
            let _on_drop = on_drop;
            std::future::pending::<()>().await;
        })
    }
}

type ForeverFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

struct OnDrop(mpsc::UnboundedSender<&'static str>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.send("dropped");
    }
}

async fn expect(rx: &mut mpsc::UnboundedReceiver<&'static str>, want: &str) {
    let got = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{want}: nothing within 60 s"))
        .unwrap_or_else(|| panic!("{want}: the channel closed"));
    assert_eq!(got, want);
}

#[tokio::test(start_paused = true)]
async fn the_handler_tasks_of_a_closed_router_are_cancelled() {
    let router = Router::new();
    let (tx, mut signals) = mpsc::unbounded_channel();
    router.on("forever", forever(tx));
    let link = router.link();
    link.dispatch(message(1, "forever", 0, false));
    link.dispatch(message(2, "forever", 0, false));
    for _ in 0..2 {
        expect(&mut signals, "started").await;
    }
    assert_eq!(router.running_handlers(), 2);
    router.close();
    for _ in 0..2 {
        expect(&mut signals, "dropped").await;
    }
    assert_eq!(router.running_handlers(), 0);
    // A handler started on the closed router is cancelled at once.
    link.dispatch(message(3, "forever", 0, false));
    expect(&mut signals, "started").await;
    expect(&mut signals, "dropped").await;
}

/// Over a server: the handler of a socket whose peer went away is dropped
/// when the socket ends, and one running at `Server::stop` when the server stops.
#[tokio::test(start_paused = true)]
async fn a_server_drops_the_handlers_of_a_closed_connection_and_at_its_stop() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc")).start();
    let (tx, mut signals) = mpsc::unbounded_channel();
    server.on("forever", forever(tx));
    let mut events = server.events();
    server.started().await.unwrap();
    let client = Client::builder(net.connector("svc")).start();
    client.connected().await;
    client.router().emit("forever", ()).unwrap();
    expect(&mut signals, "started").await;
    client.stop().await;
    loop {
        match events.recv().await.unwrap() {
            ServerEvent::Disconnected { .. } => break,
            _ => continue,
        }
    }
    expect(&mut signals, "dropped").await;

    let client = Client::builder(net.connector("svc")).start();
    client.connected().await;
    client.router().emit("forever", ()).unwrap();
    expect(&mut signals, "started").await;
    server.stop().await;
    expect(&mut signals, "dropped").await;
    client.stop().await;
}

// ----- kept arguments hold their own bytes -----

/// An async handler keeps its `Args` (here, sends it away); the message came
/// in a 1 MiB read buffer. Once everything else let go of the buffer, the
/// kept arguments hold a few bytes, not the buffer, and still read right.
#[tokio::test]
async fn kept_arguments_hold_their_own_bytes_not_the_read_buffer() {
    const BUFFER: usize = 1 << 20;
    let router = Router::new();
    let (kept_tx, mut kept) = mpsc::unbounded_channel::<Args>();
    router.on("keep", move |args: Args| {
        let kept_tx = kept_tx.clone();
        async move {
            let _ = kept_tx.send(args);
        }
    });
    let (cb_tx, mut callbacks) = mpsc::unbounded_channel::<(u64, RemoteCallback)>();
    router.on("sync", move |args: Args| -> Result<(), nmsg::Error> {
        // A sync handler keeps a callback (and the number it read).
        let _ = cb_tx.send((args.get(0)?, args.callback(1)?));
        Ok(())
    });
    let link = router.link();
    for (event, n) in [("sync", 8u64), ("keep", 7)] {
        let base = live_bytes();
        let small = message(1, event, n, true);
        let mut buffer = BytesMut::with_capacity(BUFFER);
        buffer.extend_from_slice(&small);
        buffer.resize(BUFFER, 0);
        let payload = buffer.freeze().slice(..small.len());
        drop(small);
        assert!(live_bytes() - base >= BUFFER as isize);
        link.dispatch(payload);
        let held = match event {
            "keep" => {
                let args = kept.recv().await.unwrap();
                let held = live_bytes() - base;
                assert_eq!(args.get::<u64>(0).unwrap(), 7);
                assert!(args.is_callback(1));
                drop(args);
                held
            }
            _ => {
                let (got, cb) = callbacks.try_recv().unwrap();
                assert_eq!(got, 8);
                let held = live_bytes() - base;
                assert!(!cb.is_invoked());
                drop(cb);
                held
            }
        };
        println!("{event}: {held} bytes held");
        assert!(held < 4096, "{event}: {held} bytes held by what was kept");
    }
}
