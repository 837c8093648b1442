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
    assert!(peak < 16 << 20, "{peak} bytes live at the peak");
    drop(conn);
}
