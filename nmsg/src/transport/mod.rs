//! Transports: how a router's messages move over a byte stream.
//!
//! [`Connection::spawn`] drives one router over any `AsyncRead + AsyncWrite`
//! stream: it reads length-prefixed messages into [`Router::dispatch`] and
//! writes what the router queues ([`Router::take_outgoing`]; a transport of
//! one's own can wait with [`Router::next_outgoing`]). [`memory`] links two routers in
//! one process. [`Connector`], [`Binder`] and [`Acceptor`] are the traits a
//! client and a server open streams with; [`Tcp`], [`Unix`] and
//! [`memory::Network`] implement them, and so can a user's own transport.
//!
//! What closes a connection: broken framing (a zero or oversized length prefix,
//! the stream ending inside a message) and I/O errors. A payload that is not a
//! valid message, even one the codec cannot decode at all, is reported to the
//! router's error hook and skipped: the length prefix keeps the stream in step,
//! so the next message is read as usual. (The protocol, see `nmsg::protocol`, allows closing the
//! connection for an undecodable payload; nmsg keeps it, so that one bad message
//! costs the peer nothing else.)

use crate::sync::MutexExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_util::codec::Decoder;
use tokio_util::io::poll_read_buf;

use crate::error::{Error, FramingError};
use crate::framing::{MessageCodec, PREFIX_LEN};
use crate::router::{Buffering, Router};

pub mod memory;
mod net;

pub use net::{Acceptor, Address, Binder, BoxFuture, BoxStream, Connector, Stream, Tcp, Unix};

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed the stream.
    PeerClosed,
    /// [`Connection::close`] or [`Connection::abort`] was called, or the router was closed.
    Local,
    /// The stream's framing broke (oversized or zero length prefix, truncated message).
    Framing(String),
    /// An I/O error.
    Io(String),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("the peer closed the connection"),
            CloseReason::Local => f.write_str("closed locally"),
            CloseReason::Framing(e) => write!(f, "framing error: {e}"),
            CloseReason::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

/// One router driven over one byte stream, by one task.
#[derive(Debug)]
pub struct Connection {
    router: Router,
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
}

impl Connection {
    /// Spawns the task that drives `router` over `stream`. Needs a tokio runtime.
    ///
    /// When the stream ends, the router is told ([`Router::connection_lost`]):
    /// frames sent on it with callbacks fail with a disconnect error.
    pub fn spawn<S>(stream: S, router: Router) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (conn, start) = Connection::spawn_held(stream, router);
        start.start();
        conn
    }

    /// Like [`Connection::spawn`], but the connection reads and writes nothing
    /// until [`Start::start`] is called (or the `Start` is dropped), so handlers
    /// can be set on its router before the first message is routed.
    pub fn spawn_held<S>(stream: S, router: Router) -> (Connection, Start)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        Connection::spawn_held_then(Box::pin(stream), router, |_: &Router, _: &CloseReason| {})
    }

    /// [`Connection::spawn_held`] for a stream that needs no pinning, and
    /// `on_close` runs on the connection's task once it has ended, with the
    /// router (a server's bookkeeping, without a task of its own per connection
    /// to wait for the end).
    pub(crate) fn spawn_held_then<S, F>(
        stream: S,
        router: Router,
        on_close: F,
    ) -> (Connection, Start)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: FnOnce(&Router, &CloseReason) + Send + Unpin + 'static,
    {
        let shared = Arc::new(Shared {
            signal: Signal::default(),
            end: Mutex::new(None),
            ended: Notify::new(),
        });
        let task = tokio::spawn(ConnectionTask {
            driver: Driver::new(stream, router.clone()),
            shared: shared.clone(),
            on_close: Some(on_close),
        })
        .abort_handle();
        let conn = Connection {
            router,
            shared: shared.clone(),
            task,
        };
        (conn, Start(shared))
    }

    /// The router this connection drives.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.reason().is_some()
    }

    /// Waits until the connection ends, and says why.
    pub async fn closed(&self) -> CloseReason {
        loop {
            let ended = self.shared.ended.notified();
            if let Some(reason) = self.shared.reason() {
                return reason;
            }
            ended.await;
        }
    }

    /// Closes gracefully: writes what is queued, shuts the stream down, and
    /// waits for the task to end.
    pub async fn close(&self) -> CloseReason {
        self.shared.signal.raise(STOP);
        self.closed().await
    }

    /// Closes gracefully, as [`Connection::close`], but if writing what is queued
    /// takes longer than `bound`, drops the connection there.
    pub async fn close_within(&self, bound: std::time::Duration) -> CloseReason {
        self.shared.signal.raise(STOP);
        match tokio::time::timeout(bound, self.closed()).await {
            Ok(reason) => reason,
            Err(_) => {
                self.task.abort();
                let reason =
                    CloseReason::Io(format!("could not write what was queued within {bound:?}"));
                self.router.connection_lost(&reason.to_string());
                reason
            }
        }
    }

    /// Asks the connection to close without waiting (it still writes what is queued).
    pub fn shutdown(&self) {
        self.shared.signal.raise(STOP);
    }

    /// Drops the connection at once, without writing what is queued.
    pub fn abort(&self) {
        self.task.abort();
        if !self.is_closed() {
            self.router.connection_lost(&CloseReason::Local.to_string());
        }
    }
}

/// Lets a connection made with [`Connection::spawn_held`] begin.
#[derive(Debug)]
pub struct Start(Arc<Shared>);

impl Start {
    /// Begins reading and writing.
    pub fn start(self) {
        // Dropping it does.
    }
}

impl Drop for Start {
    fn drop(&mut self) {
        self.0.signal.raise(START);
    }
}

/// [`Signal`] flag: the connection may begin.
const START: u8 = 1;
/// [`Signal`] flag: close gracefully.
pub(crate) const STOP: u8 = 2;

/// Requests to one task, raised from anywhere: flags that stay set, and the
/// task's waker, woken when one is raised. Small enough to keep for every
/// connection (a `Notify` and the `Notified` future its task would hold take
/// about 100 bytes, a oneshot channel another allocation).
#[derive(Default)]
pub(crate) struct Signal {
    flags: AtomicU8,
    task: AtomicWaker,
}

impl std::fmt::Debug for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signal")
            .field("flags", &self.flags.load(Ordering::Relaxed))
            .finish()
    }
}

impl Signal {
    /// Sets `flag` and wakes the task.
    pub(crate) fn raise(&self, flag: u8) {
        self.flags.fetch_or(flag, Ordering::AcqRel);
        self.task.wake();
    }

    /// True if `flag` is set.
    pub(crate) fn is_raised(&self, flag: u8) -> bool {
        self.flags.load(Ordering::Acquire) & flag != 0
    }

    /// For the task: true if `flag` is set; otherwise the task is woken when a
    /// flag is raised.
    pub(crate) fn poll_raised(&self, flag: u8, cx: &mut Context<'_>) -> bool {
        self.task.register(cx.waker());
        self.is_raised(flag)
    }
}

/// What a [`Connection`], its [`Start`] and its task share.
#[derive(Debug)]
struct Shared {
    signal: Signal,
    /// Why the connection ended, once it has.
    end: Mutex<Option<CloseReason>>,
    /// Wakes the callers of [`Connection::closed`] when it ends.
    ended: Notify,
}

impl Shared {
    fn reason(&self) -> Option<CloseReason> {
        self.end.locked().clone()
    }

    /// Records the end (the first one recorded stands) and wakes the waiters.
    fn finish(&self, reason: CloseReason) {
        let mut end = self.end.locked();
        if end.is_none() {
            *end = Some(reason);
        }
        drop(end);
        self.ended.notify_waiters();
    }
}

/// The task of a [`Connection`]: waits for its start, drives the stream, runs
/// `on_close` at the end and records why it ended.
struct ConnectionTask<S, F> {
    driver: Driver<S>,
    shared: Arc<Shared>,
    on_close: Option<F>,
}

impl<S, F> Future for ConnectionTask<S, F>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Router, &CloseReason) + Unpin,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let signal = &this.shared.signal;
        if !signal.poll_raised(START, cx) {
            return Poll::Pending;
        }
        if signal.is_raised(STOP) {
            this.driver.stop();
        }
        let reason = std::task::ready!(this.driver.poll_run(cx));
        if let Some(on_close) = this.on_close.take() {
            on_close(&this.driver.router, &reason);
        }
        this.shared.finish(reason);
        Poll::Ready(())
    }
}

impl<S, F> Drop for ConnectionTask<S, F> {
    fn drop(&mut self) {
        // Aborted, or its runtime shut down: the waiters learn that it ended.
        self.shared.finish(CloseReason::Local);
    }
}

/// The size of the future of a connection's task, for a stream of type `S`
/// and an `on_close` like `_on_close` (for tests that keep it small).
#[cfg(test)]
pub(crate) fn task_future_size<S, F>(_on_close: &F) -> usize {
    std::mem::size_of::<ConnectionTask<S, F>>()
}

/// Where a [`Driver`] is. The rare states box what they hold, so that the
/// state of every open connection takes two words.
enum Phase {
    /// Reading and writing.
    Running,
    /// After a stop request: nothing more is read; `tail`, what was queued at
    /// the request, is written after what is being written now.
    Stopping { tail: Option<Box<Bytes>> },
    /// Shutting the stream down, then the connection has ended for this reason.
    Closing(Box<CloseReason>),
    /// Ended.
    Done,
}

/// Drives a router over a stream until the stream ends or [`Driver::stop`] is
/// called (then it writes what is queued and shuts the stream down), tells the
/// router the connection is lost, and says why it ended. A [`Connection`] runs
/// one on a task of its own; a client, on its reconnecting task.
///
/// A struct polled by hand rather than an `async fn`: tokio keeps a task's
/// whole future in the task's allocation, so every open connection pays for
/// it, and this way it holds only these fields. A server socket's task future
/// is 152 bytes on x86-64 (tokio's allocation for it, 256); it was 1,104 with
/// the `async fn` it replaces.
pub(crate) struct Driver<S> {
    reader: Reader<S>,
    router: Router,
    /// What is being written.
    out: Bytes,
    /// [`Buffering::Cycle`]: the end of the cycle the first frame queued opened.
    cycle_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    phase: Phase,
}

/// The stream, and the messages read from it.
struct Reader<S> {
    stream: S,
    /// What has arrived and is not dispatched yet; none while the stream is idle.
    input: BytesMut,
    codec: MessageCodec,
}

impl<S> Reader<S>
where
    S: AsyncRead + Unpin,
{
    /// The next message: `None` at a clean end of the stream.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FramingError>> {
        loop {
            if let Some(message) = self.codec.decode(&mut self.input)? {
                return Poll::Ready(Ok(Some(message)));
            }
            if self.input.capacity() == 0 {
                self.input.reserve(READ_BUFFER);
            }
            match std::task::ready!(poll_read_buf(
                Pin::new(&mut self.stream),
                cx,
                &mut self.input
            )) {
                Ok(0) => return Poll::Ready(self.codec.decode_eof(&mut self.input)),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(FramingError::Io(e))),
            }
        }
    }
}

impl<S> Driver<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub(crate) fn new(stream: S, router: Router) -> Self {
        let codec = MessageCodec::new(router.max_message_size());
        Driver {
            reader: Reader {
                stream,
                input: BytesMut::new(),
                codec,
            },
            router,
            out: Bytes::new(),
            cycle_timer: None,
            phase: Phase::Running,
        }
    }

    /// Begins closing gracefully: nothing more is read, what is queued now is
    /// written last, then the stream is shut down. A write, once started, is
    /// never cancelled.
    pub(crate) fn stop(&mut self) {
        if let Phase::Running = self.phase {
            let tail = self.router.take_outgoing().map(Box::new);
            self.phase = Phase::Stopping { tail };
        }
    }

    /// Drives the connection; ready with the reason once it has ended.
    pub(crate) fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        loop {
            match &mut self.phase {
                Phase::Running | Phase::Stopping { .. } => {
                    let reason = std::task::ready!(self.poll_stream(cx));
                    self.phase = Phase::Closing(Box::new(reason));
                }
                Phase::Closing(reason) => {
                    let _ = std::task::ready!(Pin::new(&mut self.reader.stream).poll_shutdown(cx));
                    let reason = std::mem::replace(&mut **reason, CloseReason::Local);
                    self.phase = Phase::Done;
                    tracing::debug!(%reason, "nmsg connection closed");
                    self.router.connection_lost(&reason.to_string());
                    return Poll::Ready(reason);
                }
                Phase::Done => return Poll::Ready(CloseReason::Local),
            }
        }
    }

    /// Reads and writes until the stream ends, or, after a stop request, until
    /// the last bytes are written. One task reads and writes the unsplit stream.
    /// After it dispatches the messages that have arrived (at most
    /// [`DISPATCH_BURST`] at a time), it writes what their handlers queued in
    /// the same turn: an answer costs no wake-up of its own, and the answers to
    /// a batch of requests go out together. Reading goes on while a write waits
    /// for room, so two peers that both send much never block each other.
    fn poll_stream(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let router = &self.router;
        let reader = &mut self.reader;
        router.writer_running();
        loop {
            let mut progress = false;
            // Read and dispatch what has arrived; nothing more after a stop request.
            if let Phase::Running = self.phase {
                // Messages dispatched since the last write (see DISPATCH_BURST).
                let mut burst = 0;
                let burst_limit = router.dispatch_burst().unwrap_or_else(dispatch_burst);
                loop {
                    let polled = reader.poll_message(cx);
                    if polled.is_pending() && reader.input.is_empty() {
                        // Idle: give the read buffer back; an idle connection holds none.
                        reader.input = BytesMut::new();
                    }
                    match polled {
                        Poll::Ready(Ok(Some(payload))) => {
                            router.dispatch(payload);
                            progress = true;
                            burst += 1;
                            if burst == burst_limit || !holds_message(&reader.input) {
                                break;
                            }
                        }
                        Poll::Ready(Ok(None)) => return Poll::Ready(CloseReason::PeerClosed),
                        Poll::Ready(Err(FramingError::Io(e))) => {
                            return Poll::Ready(CloseReason::Io(e.to_string()))
                        }
                        Poll::Ready(Err(e)) => {
                            let reason = CloseReason::Framing(e.to_string());
                            router.report(Error::Framing(e));
                            return Poll::Ready(reason);
                        }
                        Poll::Pending => break,
                    }
                }
            }
            loop {
                if self.out.is_empty() {
                    let next = match &mut self.phase {
                        Phase::Stopping { tail } => tail.take().map(|tail| *tail),
                        _ => match router.buffering() {
                            // Buffering::Cycle: the first frame queued starts the
                            // cycle; what is queued when it ends goes out together.
                            Buffering::Cycle(cycle) => {
                                if self.cycle_timer.is_none() && router.queued_frames() > 0 {
                                    self.cycle_timer = Some(Box::pin(tokio::time::sleep(cycle)));
                                }
                                match self.cycle_timer.as_mut().map(|t| t.as_mut().poll(cx)) {
                                    Some(Poll::Ready(())) => {
                                        self.cycle_timer = None;
                                        router.take_outgoing()
                                    }
                                    _ => None,
                                }
                            }
                            _ => router.take_outgoing(),
                        },
                    };
                    match next {
                        Some(bytes) => self.out = bytes,
                        None => {
                            // Written: let go of the buffer it came in.
                            self.out = Bytes::new();
                            break;
                        }
                    }
                }
                match Pin::new(&mut reader.stream).poll_write(cx, &self.out) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(CloseReason::Io("the stream took no bytes".into()))
                    }
                    Poll::Ready(Ok(n)) => {
                        self.out.advance(n);
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(CloseReason::Io(e.to_string())),
                    Poll::Pending => break,
                }
            }
            let stopping = match &self.phase {
                Phase::Stopping { tail } => {
                    if self.out.is_empty() && tail.is_none() {
                        return Poll::Ready(CloseReason::Local);
                    }
                    true
                }
                _ => false,
            };
            if progress {
                continue;
            }
            // Nothing moved: wait for bytes to read, room to write, a frame to
            // send, the cycle's end or a stop request (all registered above).
            if self.out.is_empty() && !stopping && self.cycle_timer.is_none() {
                match router.poll_queued(cx) {
                    Poll::Ready(true) => continue,
                    Poll::Ready(false) => return Poll::Ready(CloseReason::Local),
                    Poll::Pending => {}
                }
            }
            return Poll::Pending;
        }
    }
}

/// Messages a connection dispatches before it writes what their handlers
/// queued, even when more have arrived, unless its router's options say
/// otherwise ([`RouterBuilder::dispatch_burst`](crate::RouterBuilder::dispatch_burst)).
/// A peer that sends many requests at once gets the first answers while the
/// rest are still being handled, so on a machine with more than one CPU both
/// ends work at the same time instead of taking turns; each early write costs
/// a system call, and the peer's thread may have to be woken for it.
///
/// The best value depends on where the two ends run. Measured with
/// `examples/burst.rs`, 64 calls in flight on one loopback connection on two
/// CPUs, nanoseconds per call, medians of 7 runs (BENCHMARKS.md, item 13):
///
/// | limit | two processes | one runtime, calls from a spawned task | one runtime, calls from `block_on` | a runtime each |
/// |---:|---:|---:|---:|---:|
/// | 8 | 1,151 | 912 | 1,998 | 987 |
/// | 12 | 963 | 889 | 1,769 | 857 |
/// | 14 | 935 | 882 | 1,736 | 797 |
/// | 16 | 885 | 1,216 | 1,652 | 760 |
/// | 32 | 1,133 | 1,462 | 1,484 | 1,342 |
///
/// 14 is within 6% of the best of these in three arrangements and 17% behind
/// in the fourth; 8 (the value before) was 30 to 35% behind in three of them,
/// 16 was 38% behind with calls from a spawned task. The benchmark
/// (`examples/bench.rs`), whose arrangement is that one with another harness,
/// measures 8 about 12% faster than 14: on one runtime the result swings with
/// where tokio places the tasks. Where this process may run on one CPU only (its affinity or
/// its cgroup's quota, as `std::thread::available_parallelism` says), there is
/// no limit ([`dispatch_burst`]): no peer can run meanwhile, and the extra
/// writes are pure cost.
const DISPATCH_BURST: usize = 14;

/// [`DISPATCH_BURST`], or no limit when this process can use one CPU only.
fn dispatch_burst() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| match std::thread::available_parallelism() {
        Ok(cpus) if cpus.get() == 1 => usize::MAX,
        _ => DISPATCH_BURST,
    })
}

/// The read buffer a connection takes when bytes arrive (and gives back when idle).
const READ_BUFFER: usize = 8 * 1024;

/// True when `buf` starts with a whole length-prefixed message (a cheap check
/// that may say no when the codec is mid-message; then the next read decides).
fn holds_message(buf: &[u8]) -> bool {
    match buf.get(..PREFIX_LEN) {
        Some(prefix) => {
            let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
            buf.len() - PREFIX_LEN >= len
        }
        None => false,
    }
}
