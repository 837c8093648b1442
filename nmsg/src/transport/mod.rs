//! Transports: how a router's messages move over a byte stream.
//!
//! [`Connection::spawn`] drives one router over any `AsyncRead + AsyncWrite`
//! stream through the router's [`Link`]: it reads length-prefixed messages
//! into [`Link::dispatch`] and writes what the router queues
//! ([`Link::take_outgoing`]; a transport of one's own can wait with
//! [`Link::next_outgoing`]). How it reads and when it writes are the
//! connection's own [`ConnectionOptions`]. [`memory`] links two routers in
//! one process. [`Connector`], [`Binder`] and [`Acceptor`] are the traits a
//! client and a server open streams with; [`Tcp`], [`Unix`] and
//! [`memory::Network`] implement them, and so can a user's own transport.
//!
//! What closes a connection: broken framing (a zero or oversized length prefix,
//! the stream ending inside a message, a message begun and not whole within
//! the [partial message timeout](ConnectionOptions::partial_message_timeout)),
//! I/O errors, and the [idle timeout](ConnectionOptions::idle_timeout) if one
//! is set. A payload that is not a
//! valid message, even one the codec cannot decode at all, is reported to the
//! router's error hook and skipped: the length prefix keeps the stream in step,
//! so the next message is read as usual. (The protocol ([`crate::protocol`])
//! allows closing the connection for an undecodable payload; nmsg keeps it, so
//! that one bad message costs the peer nothing else.)
//!
//! A graceful close ([`Connection::close`], a client's or a server's stop)
//! stops dispatching, writes what is queued, shuts its side of the stream
//! down and reads, discarding, until the peer closes its side: a socket
//! closed with unread input is reset by the system, which can discard the
//! last bytes written before the peer has them. The whole close is bounded
//! ([`ConnectionOptions::stop_timeout`], 5 s); at the bound the connection
//! is dropped and what it did not write is counted as lost.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use tokio_util::codec::Decoder;
use tokio_util::io::poll_read_buf;

use crate::error::{Error, FramingError};
use crate::framing::{MessageCodec, PREFIX_LEN};
use crate::lifecycle::{Lifecycle, Status, START, STOP};
use crate::router::{Pacer, Router};
use crate::session::{Read, Session};
use options::{Budget, Settings};

pub mod memory;
mod net;
mod options;
mod peer;
#[cfg(feature = "tls")]
pub mod tls;

pub use crate::router::Link;
pub use net::{
    Accepted, Acceptor, Address, Binder, BoxFuture, BoxStream, Connector, Keepalive, Stream, Tcp,
    Unix,
};
pub use options::{ConnectionOptions, DEFAULT_PARTIAL_MESSAGE_TIMEOUT};
pub use peer::{PeerCertificate, PeerIdentity, SubjectAltName, UnixCredentials};

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed the stream.
    PeerClosed,
    /// [`Connection::close`] or [`Connection::abort`] was called, or the router was closed.
    Local,
    /// The stream's framing broke (oversized or zero length prefix, truncated message).
    Framing(String),
    /// An I/O error, or a write that could not finish.
    Io {
        /// What kind of error it was.
        kind: std::io::ErrorKind,
        /// The error, as text.
        message: String,
    },
}

impl CloseReason {
    fn io(e: &std::io::Error) -> Self {
        CloseReason::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    /// A connection dropped because what was queued could not be written
    /// within `bound` (a stop timeout).
    pub(crate) fn unwritten_within(bound: std::time::Duration) -> Self {
        CloseReason::Io {
            kind: std::io::ErrorKind::TimedOut,
            message: format!("could not write what was queued within {bound:?}"),
        }
    }

    /// What the callbacks that wait on the connection fail with: this
    /// reason, and its kind of I/O error if it is one.
    pub(crate) fn disconnect(&self) -> crate::error::Disconnect {
        let kind = match self {
            CloseReason::Io { kind, .. } => Some(*kind),
            _ => None,
        };
        crate::error::Disconnect::new(kind, self.to_string())
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("the peer closed the connection"),
            CloseReason::Local => f.write_str("closed locally"),
            CloseReason::Framing(e) => write!(f, "framing error: {e}"),
            CloseReason::Io { message, .. } => write!(f, "i/o error: {message}"),
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
    /// When the stream ends, the router is told ([`Link::connection_lost`]):
    /// frames sent on it with callbacks fail with a disconnect error.
    pub fn spawn<S>(stream: S, router: Router) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        Connection::spawn_with(stream, router, ConnectionOptions::default())
    }

    /// [`Connection::spawn`] with these connection options.
    pub fn spawn_with<S>(stream: S, router: Router, options: ConnectionOptions) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let on_close = |_: &Router, _: &CloseReason| {};
        let (conn, start) =
            Connection::spawn_held_then(Box::pin(stream), router, options, on_close, None);
        start.start();
        conn
    }

    /// Like [`Connection::spawn`], but the connection reads and writes nothing
    /// until [`Start::start`] is called, so handlers can be set on its router
    /// before the first message is routed (a `Start` dropped unused starts it
    /// too).
    pub fn spawn_held<S>(stream: S, router: Router) -> (Connection, Start)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let on_close = |_: &Router, _: &CloseReason| {};
        Connection::spawn_held_then(Box::pin(stream), router, Default::default(), on_close, None)
    }

    /// [`Connection::spawn_held`] for a stream that needs no pinning, and
    /// `on_close` runs on the connection's task once it has ended, with the
    /// router (a server's bookkeeping, without a task of its own per connection
    /// to wait for the end).
    pub(crate) fn spawn_held_then<S, F>(
        stream: S,
        router: Router,
        options: ConnectionOptions,
        on_close: F,
        session: Option<Box<Session>>,
    ) -> (Connection, Start)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: FnOnce(&Router, &CloseReason) + Send + Unpin + 'static,
    {
        let shared = Arc::new(Shared {
            life: Lifecycle::new(None),
            stop_bound: Default::default(),
        });
        shared.set_stop_bound(options.stop_bound());
        let mut driver = Driver::new(stream, router.link(), options);
        if let Some(session) = session {
            driver.set_session(session);
        }
        let task = tokio::spawn(ConnectionTask {
            driver,
            shared: shared.clone(),
            on_close: Some(on_close),
        })
        .abort_handle();
        let conn = Connection {
            router,
            shared: shared.clone(),
            task,
        };
        (conn, Start(Some(shared)))
    }

    /// The router this connection drives.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.status().is_some()
    }

    /// Waits until the connection ends, and says why.
    pub async fn closed(&self) -> CloseReason {
        self.shared.wait_for(Option::clone).await
    }

    /// Closes gracefully: writes what is queued, shuts the stream down, reads
    /// and discards what the peer still sends until it closes its side (so
    /// that closing with unread input does not make the system reset the
    /// connection, which can discard the last bytes written), and waits for
    /// the task to end.
    ///
    /// Bounded by the connection's
    /// [`stop_timeout`](ConnectionOptions::stop_timeout) (default 5 s): a peer
    /// that does not read, or does not close, cannot hold it longer. At the
    /// bound the connection is dropped, and what it did not write is counted
    /// and reported as lost ([`Error::FramesLost`] to the router's error
    /// hook); it ends with an I/O error of kind `TimedOut` then.
    pub async fn close(&self) -> CloseReason {
        self.shutdown();
        self.closed().await
    }

    /// Closes gracefully, as [`Connection::close`], within `bound` instead of
    /// the connection's stop timeout (a bound given after the close began
    /// changes nothing).
    pub async fn close_within(&self, bound: std::time::Duration) -> CloseReason {
        self.shared.set_stop_bound(bound);
        self.close().await
    }

    /// Asks the connection to close gracefully without waiting, as
    /// [`Connection::close`] does.
    pub fn shutdown(&self) {
        // If it is aborted while it writes, the tail it takes now is
        // counted with what it was writing then.
        self.router.link().stopping();
        self.shared.request_stop();
    }

    /// Drops the connection at once, without writing what is queued.
    pub fn abort(&self) {
        self.task.abort();
        if !self.is_closed() {
            self.router.link().lost(CloseReason::Local.disconnect());
        }
    }
}

/// Lets a connection made with [`Connection::spawn_held`] begin: call
/// [`Start::start`]. A `Start` dropped without it starts the connection as
/// well, so that no connection stays held by a value that is gone.
#[derive(Debug)]
pub struct Start(Option<Arc<Shared>>);

impl Start {
    /// Begins reading and writing.
    pub fn start(mut self) {
        self.begin();
    }

    fn begin(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.raise(START);
        }
    }
}

impl Drop for Start {
    fn drop(&mut self) {
        self.begin();
    }
}

/// What a [`Connection`], its [`Start`] and its task share: the lifecycle
/// that client and server tasks have too, with the close reason as its status
/// (`None` while the connection is open) and a start request beside the stop;
/// and the bound of a graceful close, kept here rather than in the task,
/// which every open connection pays for.
struct Shared {
    life: Lifecycle<Option<CloseReason>>,
    /// In nanoseconds (584 years at most).
    stop_bound: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn set_stop_bound(&self, bound: std::time::Duration) {
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
        self.stop_bound
            .store(nanos, std::sync::atomic::Ordering::Relaxed);
    }

    fn stop_bound(&self) -> std::time::Duration {
        let nanos = self.stop_bound.load(std::sync::atomic::Ordering::Relaxed);
        std::time::Duration::from_nanos(nanos)
    }
}

impl std::ops::Deref for Shared {
    type Target = Lifecycle<Option<CloseReason>>;

    fn deref(&self) -> &Self::Target {
        &self.life
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.life.fmt(f)
    }
}

impl Status for Option<CloseReason> {
    /// A task that ends without saying why was aborted, or its runtime shut down.
    const ENDED: Self = Some(CloseReason::Local);
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
    S: AsyncRead + AsyncWrite + Unpin + 'static,
    F: FnOnce(&Router, &CloseReason) + Unpin,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let shared = &this.shared;
        if !shared.poll_raised(START, cx) {
            return Poll::Pending;
        }
        if this.driver.is_running() && shared.is_raised(STOP) {
            this.driver.stop(shared.stop_bound());
        }
        let reason = std::task::ready!(this.driver.poll_run(cx));
        if let Some(on_close) = this.on_close.take() {
            on_close(this.driver.link.router(), &reason);
        }
        this.shared.end(Some(reason));
        Poll::Ready(())
    }
}

impl<S, F> Drop for ConnectionTask<S, F> {
    fn drop(&mut self) {
        // Aborted, or its runtime shut down: the waiters learn that it ended.
        self.shared.end(Some(CloseReason::Local));
    }
}

/// The size of the future of a connection's task, for a stream of type `S`
/// and an `on_close` like `_on_close` (for tests that keep it small).
#[cfg(test)]
pub(crate) fn task_future_size<S, F>(_on_close: &F) -> usize {
    std::mem::size_of::<ConnectionTask<S, F>>()
}

/// Where a [`Driver`] is: running, or, boxed, one of the rare states of its
/// end, so that the state of every open connection takes one word.
enum Phase {
    /// Reading and writing.
    Running,
    /// Ending.
    Ending(Box<Ending>),
}

/// The states of a [`Driver`]'s end.
enum Ending {
    /// After a stop request: `tail`, what was queued at the request, is
    /// written after what is being written now; what arrives is read and
    /// discarded, not dispatched.
    Stopping { tail: Option<Bytes>, stop: Stop },
    /// A graceful stop wrote everything: the stream's write side is shut down
    /// (once `shut`), then what arrives is read and discarded until the peer
    /// closes its side. Closing a socket with unread input makes the system
    /// reset the connection, which can discard the last bytes written before
    /// the peer has them.
    Draining { stop: Stop, shut: bool },
    /// Shutting the stream down, then the connection has ended for this reason.
    Closing(CloseReason),
    /// A server's session whose connection broke: waits for the client to
    /// resume on a new stream, or for the window to pass.
    Away,
    /// Ended.
    Done,
}

/// The bound of a graceful stop: at its `deadline`, `bound` after the stop
/// request, the connection is dropped.
struct Stop {
    deadline: Pin<Box<tokio::time::Sleep>>,
    bound: std::time::Duration,
    /// The peer closed its side: nothing more to read.
    eof: bool,
}

impl Stop {
    fn is_over(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

/// Drives a router over a stream until the stream ends or [`Driver::stop`] is
/// called (then it writes what is queued, shuts its side of the stream down
/// and discards what arrives until the peer closes its side, within a bound),
/// tells the router the connection is lost, with what it took and did not
/// write, and says why it ended. A [`Connection`] runs
/// one on a task of its own; a client, on its reconnecting task.
///
/// A struct polled by hand rather than an `async fn`: tokio keeps a task's
/// whole future in the task's allocation, so every open connection pays for
/// it, and this way it holds only these fields (a server socket's task stays
/// within 152 bytes on x86-64; BENCHMARKS.md has the figures).
pub(crate) struct Driver<S> {
    reader: Reader<S>,
    link: Link,
    /// What is being written: complete messages taken from the router, of
    /// which the first `written` bytes are written.
    out: Bytes,
    written: usize,
    /// When the router's queue may be taken, and the deadlines of reading.
    timers: Timers,
    phase: Phase,
}

/// The stream, and the messages read from it.
struct Reader<S> {
    stream: S,
    /// What has arrived and is not dispatched yet; none while the stream is idle.
    input: BytesMut,
    codec: MessageCodec,
    /// The connection's options (shared with the other connections made with them).
    settings: Arc<Settings>,
}

impl<S> Reader<S>
where
    S: AsyncRead + Unpin,
{
    /// The next message: `None` at a clean end of the stream. Sets `arrived`
    /// when bytes were read.
    /// A message that needs a larger buffer waits for room in the budget
    /// ([`ConnectionOptions::max_buffered_bytes`]), which `timers` counts.
    fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
        arrived: &mut bool,
        timers: &mut Timers,
    ) -> Poll<Result<Option<Bytes>, FramingError>> {
        loop {
            if let Some(message) = self.codec.decode(&mut self.input)? {
                return Poll::Ready(Ok(Some(message)));
            }
            if self.input.capacity() == 0 {
                // No read buffer (a new or idle connection): the first bytes
                // are read on the stack, and the buffer is taken only once
                // some arrive, so that a connection that waits holds none
                // and a wake-up with nothing to read allocates nothing.
                let mut first = [std::mem::MaybeUninit::<u8>::uninit(); FIRST_READ];
                let mut first = tokio::io::ReadBuf::uninit(&mut first);
                match std::task::ready!(Pin::new(&mut self.stream).poll_read(cx, &mut first)) {
                    Ok(()) if first.filled().is_empty() => {
                        return Poll::Ready(self.codec.decode_eof(&mut self.input))
                    }
                    Ok(()) => {
                        *arrived = true;
                        self.input.reserve(READ_BUFFER);
                        self.input.extend_from_slice(first.filled());
                        timers.input_held(self.input.capacity());
                        continue;
                    }
                    Err(e) => return Poll::Ready(Err(FramingError::Io(e))),
                }
            }
            let missing = self.codec.missing(&self.input);
            match room(&self.input, missing) {
                Room::Enough => {}
                Room::ReadBuffer => {
                    self.input.reserve(READ_BUFFER - self.input.len());
                    timers.input_held(self.input.capacity());
                }
                Room::Grow(capacity) => {
                    if let Some(budget) = &self.settings.budget {
                        std::task::ready!(timers.poll_charge_input(budget, capacity, cx));
                    }
                    grow(&mut self.input, capacity);
                }
            }
            match std::task::ready!(poll_read_buf(
                Pin::new(&mut self.stream),
                cx,
                &mut self.input
            )) {
                Ok(0) => return Poll::Ready(self.codec.decode_eof(&mut self.input)),
                Ok(_) => *arrived = true,
                Err(e) => return Poll::Ready(Err(FramingError::Io(e))),
            }
        }
    }
}

impl<S> Driver<S>
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    pub(crate) fn new(stream: S, link: Link, options: ConnectionOptions) -> Self {
        let max = options.max_message_size_for(link.router().max_message_size());
        Driver {
            reader: Reader {
                stream,
                input: BytesMut::new(),
                codec: MessageCodec::new(max),
                settings: options.settings().clone(),
            },
            link,
            out: Bytes::new(),
            written: 0,
            timers: Timers::default(),
            phase: Phase::Running,
        }
    }

    /// Makes this a session connection (before it is first polled).
    pub(crate) fn set_session(&mut self, session: Box<Session>) {
        self.timers.put_session(Some(session));
    }

    /// The session, once the connection has ended (a client's, for the next one).
    pub(crate) fn take_session(&mut self) -> Option<Box<Session>> {
        let session = self.timers.take_session();
        self.timers.put_session(None);
        session
    }

    /// True once a session handshake completed on this connection.
    pub(crate) fn handshake_completed(&self) -> bool {
        self.timers.session_ref().is_some_and(|s| s.completed)
    }

    /// True until a stop request or the end (a session away included).
    pub(crate) fn is_running(&self) -> bool {
        match &self.phase {
            Phase::Running => true,
            Phase::Ending(ending) => matches!(**ending, Ending::Away),
        }
    }

    /// A server's session resumes on `stream`, whose client received `n`
    /// messages: the old stream is dropped, and the new one starts with the
    /// welcome and what the client has not received. When `n` does not fit,
    /// the session ends.
    fn resume(&mut self, stream: S, n: u64, peer: crate::transport::Address) {
        let Some(session) = self.timers.session() else {
            return;
        };
        if !session.resume(n, peer) {
            session.stopped = true;
            let reason = CloseReason::Framing(format!(
                "the client asked to resume having received {n} messages, which does not fit what was written"
            ));
            self.phase = Phase::Ending(Box::new(Ending::Closing(reason)));
            return;
        }
        self.reader.stream = stream;
        self.reader.input = BytesMut::new();
        self.reader.codec.reset();
        self.timers.input_held(0);
        self.timers.pause_reading();
        out_done(&self.reader.settings, self.out.len());
        self.out = Bytes::new();
        self.written = 0;
        self.phase = Phase::Running;
    }

    /// Begins closing gracefully, within `bound`: nothing more is
    /// dispatched (what arrives is read and discarded), what is queued now is
    /// written last, the stream's write side is shut down, and what arrives
    /// is discarded until the peer closes its side. A write, once started, is
    /// never cancelled; at the bound the connection ends at once, and what it
    /// did not write is counted as lost.
    pub(crate) fn stop(&mut self, bound: std::time::Duration) {
        if let Some(session) = self.timers.session() {
            // The session ends with this connection: a client that comes
            // back gets a new one.
            session.stopped = true;
            session.end();
            if let Phase::Ending(ending) = &mut self.phase {
                if let Ending::Away = **ending {
                    **ending = Ending::Closing(CloseReason::Local);
                    return;
                }
            }
        }
        if let Phase::Running = self.phase {
            let tail = self.link.take_outgoing();
            // Nothing more is dispatched: a message begun is not needed.
            self.reader.input = BytesMut::new();
            self.timers.input_held(0);
            // Its own bound replaces the reading deadlines.
            self.timers.pause_reading();
            let stop = Stop {
                deadline: Box::pin(tokio::time::sleep(bound)),
                bound,
                eof: false,
            };
            self.phase = Phase::Ending(Box::new(Ending::Stopping { tail, stop }));
        }
    }

    /// Drives the connection; ready with the reason once it has ended.
    pub(crate) fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let handed = match self.timers.session() {
            Some(session) if !session.stopped => session.poll_handover(cx),
            _ => None,
        };
        if let Some((stream, n, peer)) = handed {
            let live = match &self.phase {
                Phase::Running => true,
                Phase::Ending(ending) => matches!(**ending, Ending::Away | Ending::Closing(_)),
            };
            // A server's stream is a `BoxStream`, as handed over.
            if let (true, Ok(stream)) = (live, stream.downcast::<S>()) {
                self.resume(*stream, n, peer);
            }
        }
        loop {
            let ending = match &mut self.phase {
                Phase::Running => None,
                Phase::Ending(ending) => Some(&mut **ending),
            };
            match ending {
                None => {
                    let reason = std::task::ready!(self.poll_stream(cx));
                    self.phase = Phase::Ending(Box::new(Ending::Closing(reason)));
                }
                Some(Ending::Stopping { stop, .. }) => {
                    if stop.is_over(cx) {
                        // Dropped at the bound, not shut down: a shutdown may
                        // have to write too.
                        let reason = CloseReason::unwritten_within(stop.bound);
                        return self.finish(reason, cx);
                    }
                    let reason = std::task::ready!(self.poll_stream(cx));
                    let next = match (reason, &mut self.phase) {
                        (CloseReason::Local, Phase::Ending(ending)) => {
                            let Ending::Stopping { stop, .. } =
                                std::mem::replace(&mut **ending, Ending::Done)
                            else {
                                unreachable!("matched as Stopping")
                            };
                            Ending::Draining { stop, shut: false }
                        }
                        (reason, _) => {
                            self.tail_to_out();
                            Ending::Closing(reason)
                        }
                    };
                    self.phase = Phase::Ending(Box::new(next));
                }
                Some(Ending::Draining { stop, shut }) => {
                    // Everything was written: whatever ends it now, nothing is lost.
                    if stop.is_over(cx) {
                        return self.finish(CloseReason::Local, cx);
                    }
                    let stream = &mut self.reader.stream;
                    if !*shut {
                        let _ = std::task::ready!(Pin::new(&mut *stream).poll_shutdown(cx));
                        *shut = true;
                    }
                    if !stop.eof {
                        // An error (the peer reset the connection) ends it too.
                        let _ = std::task::ready!(poll_discard(stream, cx));
                    }
                    return self.finish(CloseReason::Local, cx);
                }
                Some(Ending::Away) => {
                    let session = self.timers.session().expect("away with a session");
                    std::task::ready!(session.poll_window(cx));
                    let reason = CloseReason::Io {
                        kind: std::io::ErrorKind::TimedOut,
                        message: format!(
                            "the session expired: the client did not resume within {:?}",
                            session.window()
                        ),
                    };
                    session.expired(&self.link, reason.disconnect());
                    return self.finish(reason, cx);
                }
                Some(Ending::Closing(_)) => {
                    let _ = std::task::ready!(Pin::new(&mut self.reader.stream).poll_shutdown(cx));
                    let Phase::Ending(ending) = &mut self.phase else {
                        unreachable!("matched as Closing")
                    };
                    let Ending::Closing(reason) = std::mem::replace(&mut **ending, Ending::Done)
                    else {
                        unreachable!("matched as Closing")
                    };
                    return self.finish(reason, cx);
                }
                Some(Ending::Done) => return Poll::Ready(CloseReason::Local),
            }
        }
    }

    /// After a stop request, when what it wrote before is written whole: the
    /// tail becomes what it writes, so that a loss counts it exactly. (While
    /// it still writes the take before, the router counts the tail, its last
    /// take, whole with it.)
    fn tail_to_out(&mut self) {
        if let Phase::Ending(ending) = &mut self.phase {
            if let Ending::Stopping { tail, .. } = &mut **ending {
                if self.written == self.out.len() {
                    if let Some(tail) = tail.take() {
                        let settings = &self.reader.settings;
                        out_done(settings, self.out.len());
                        out_taken(settings, tail.len());
                        self.out = tail;
                        self.written = 0;
                    }
                }
            }
        }
    }

    /// Ends the connection for `reason`: tells the router, with what it took
    /// and did not write.
    fn finish(&mut self, reason: CloseReason, cx: &mut Context<'_>) -> Poll<CloseReason> {
        if let Some(session) = self.timers.session() {
            if !session.stopped && !self.link.router().is_closed() {
                // A break of a session that goes on: what the connection
                // took is in the replay buffer, nothing is lost, no
                // callback fails.
                tracing::debug!(%reason, "nmsg session connection broke");
                out_done(&self.reader.settings, self.out.len());
                self.out = Bytes::new();
                self.written = 0;
                session.broke(&reason);
                if session.waits_away() {
                    self.phase = Phase::Ending(Box::new(Ending::Away));
                    return self.poll_run(cx);
                }
                self.phase = Phase::Ending(Box::new(Ending::Done));
                return Poll::Ready(reason);
            }
            session.end();
        }
        self.tail_to_out();
        self.phase = Phase::Ending(Box::new(Ending::Done));
        tracing::debug!(peer = self.link.router().peer(), %reason, "nmsg connection closed");
        let out = std::mem::take(&mut self.out);
        out_done(&self.reader.settings, out.len());
        self.link.lost_with(reason.disconnect(), &out, self.written);
        Poll::Ready(reason)
    }

    /// Reads and writes until the stream ends, or, after a stop request, until
    /// the last bytes are written. One task reads and writes the unsplit stream.
    /// After it dispatches the messages that have arrived (at most the
    /// dispatch burst at a time), it writes what their handlers queued in
    /// the same turn: an answer costs no wake-up of its own, and the answers to
    /// a batch of requests go out together. Reading goes on while a write waits
    /// for room, so two peers that both send much never block each other.
    ///
    /// Before each message it asks the router whether it may read
    /// ([`Link::poll_read_ready`]): while its queue is over the high-water
    /// mark or its async handlers are at their bound, reading pauses (writing
    /// goes on) until the router wakes the task. While it waits for bytes
    /// with a message begun, or with an idle timeout, a deadline runs
    /// ([`Timers`]).
    fn poll_stream(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        // Out of its box while the stream is driven (one null check on a
        // plain connection), so that the timers can be used beside it.
        let mut session = self.timers.take_session();
        let polled = self.poll_stream_with(cx, &mut session);
        if session.is_some() {
            self.timers.put_session(session);
        }
        polled
    }

    fn poll_stream_with(
        &mut self,
        cx: &mut Context<'_>,
        session: &mut Option<Box<Session>>,
    ) -> Poll<CloseReason> {
        let link = &self.link;
        let reader = &mut self.reader;
        let timers = &mut self.timers;
        link.writer_running();
        // Bytes were read since reading last waited (for the idle timeout).
        let mut arrived = false;
        loop {
            let mut progress = false;
            // Read and dispatch what has arrived; after a stop request, read
            // and discard it.
            if let Phase::Ending(ending) = &mut self.phase {
                if let Ending::Stopping { stop, .. } = &mut **ending {
                    if !stop.eof {
                        match poll_discard(&mut reader.stream, cx) {
                            Poll::Ready(Ok(())) => stop.eof = true,
                            Poll::Ready(Err(e)) => return Poll::Ready(CloseReason::io(&e)),
                            Poll::Pending => {}
                        }
                    }
                }
            } else {
                // Messages dispatched since the last write (see `dispatch_burst`).
                let mut burst = 0;
                // A session's: messages read, data among them.
                let (mut heard, mut data) = (false, false);
                // A session that may not take from the queue (before the
                // welcome, with a full replay buffer) reads on whatever the
                // queue's level: what it reads (the welcome, acks) is what
                // lets it take again.
                let blocked = session.as_ref().is_some_and(|s| !s.may_take());
                let burst_limit = reader.settings.burst();
                loop {
                    if self.out.len() > READ_BUFFER && over_budget(&reader.settings, cx) {
                        // Over the shared budget, with a large write unwritten.
                        timers.pause_reading();
                        break;
                    }
                    if !blocked && link.poll_read_ready(cx).is_pending() {
                        // Paused by the router, not by the peer: its deadlines wait too.
                        timers.pause_reading();
                        break;
                    }
                    let polled = reader.poll_message(cx, &mut arrived, timers);
                    if polled.is_pending() {
                        if reader.input.is_empty() {
                            // Idle: give the read buffer back; an idle connection holds none.
                            reader.input = BytesMut::new();
                            timers.input_held(0);
                        }
                        let begun = reader.codec.is_partial(&reader.input);
                        let settings = &reader.settings;
                        let polled = timers.poll_reading(begun, arrived, settings, cx);
                        arrived = false;
                        match polled {
                            Poll::Pending => {}
                            Poll::Ready(Deadline::Partial) => {
                                let e = FramingError::Stalled {
                                    timeout: settings.partial_message_timeout,
                                };
                                let reason = CloseReason::Framing(e.to_string());
                                link.router().report(Error::Framing(e));
                                return Poll::Ready(reason);
                            }
                            Poll::Ready(Deadline::Idle(timeout)) => {
                                return Poll::Ready(CloseReason::Io {
                                    kind: std::io::ErrorKind::TimedOut,
                                    message: format!(
                                        "no bytes arrived within the idle timeout of {timeout:?}"
                                    ),
                                })
                            }
                        }
                    }
                    match polled {
                        Poll::Ready(Ok(Some(payload))) => {
                            timers.message_whole();
                            let is_data = match session {
                                None => true,
                                Some(session) => {
                                    heard = true;
                                    match session.read(&payload, link) {
                                        Read::Data => {
                                            data = true;
                                            true
                                        }
                                        Read::Handled => false,
                                        Read::Close(reason) => return Poll::Ready(reason),
                                    }
                                }
                            };
                            if is_data {
                                link.dispatch(payload);
                            }
                            progress = true;
                            burst += 1;
                            if burst == burst_limit || !holds_message(&reader.input) {
                                break;
                            }
                        }
                        Poll::Ready(Ok(None)) => return Poll::Ready(CloseReason::PeerClosed),
                        Poll::Ready(Err(FramingError::Io(e))) => {
                            return Poll::Ready(CloseReason::io(&e))
                        }
                        Poll::Ready(Err(e)) => {
                            let reason = CloseReason::Framing(e.to_string());
                            link.router().report(Error::Framing(e));
                            return Poll::Ready(reason);
                        }
                        Poll::Pending => break,
                    }
                }
                if let Some(session) = session {
                    if heard {
                        session.heard();
                    }
                    if data {
                        session.received_batch();
                    }
                    if let Poll::Ready(reason) = session.poll_timers(cx) {
                        return Poll::Ready(reason);
                    }
                }
            }
            let mut wrote = false;
            loop {
                if self.written == self.out.len() {
                    let next = match &mut self.phase {
                        Phase::Ending(ending) => match &mut **ending {
                            Ending::Stopping { tail, .. } => tail.take(),
                            _ => None,
                        },
                        Phase::Running => match session {
                            None => timers.poll_take(link, cx),
                            Some(session) => session.next_out(|| timers.poll_take(link, cx)),
                        },
                    };
                    out_done(&reader.settings, self.out.len());
                    match next {
                        Some(bytes) => {
                            out_taken(&reader.settings, bytes.len());
                            self.out = bytes;
                            self.written = 0;
                        }
                        None => {
                            // Written: let go of the buffer it came in.
                            self.out = Bytes::new();
                            self.written = 0;
                            // A stream that buffers what it is given (TLS
                            // keeps records it could not write yet) sends it
                            // only when written to or flushed: flush, since
                            // nothing more comes now. Pending registers for
                            // room to write. A no-op on a socket.
                            if let Poll::Ready(Err(e)) = Pin::new(&mut reader.stream).poll_flush(cx)
                            {
                                return Poll::Ready(CloseReason::io(&e));
                            }
                            break;
                        }
                    }
                }
                match Pin::new(&mut reader.stream).poll_write(cx, &self.out[self.written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(CloseReason::Io {
                            kind: std::io::ErrorKind::WriteZero,
                            message: "the stream took no bytes".into(),
                        })
                    }
                    Poll::Ready(Ok(n)) => {
                        self.written += n;
                        progress = true;
                        wrote = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(CloseReason::io(&e)),
                    Poll::Pending => break,
                }
            }
            let stopping = match &self.phase {
                Phase::Ending(ending) => {
                    if let Ending::Stopping { tail: None, .. } = **ending {
                        if self.written == self.out.len() {
                            return Poll::Ready(CloseReason::Local);
                        }
                    }
                    true
                }
                Phase::Running => false,
            };
            if let Some(session) = session {
                if wrote {
                    session.wrote();
                }
            }
            if progress {
                continue;
            }
            // A session that may not take new data now (the handshake, a
            // full replay buffer) is woken by what it reads.
            let may_take = session.as_ref().is_none_or(|s| s.may_take());
            // Nothing moved: wait for bytes to read, room to write, a frame to
            // send, the cycle's end or a stop request (all registered above).
            if self.written == self.out.len() && !stopping && !timers.is_cycling() && may_take {
                match link.poll_queued(cx) {
                    Poll::Ready(true) => continue,
                    Poll::Ready(false) => return Poll::Ready(CloseReason::Local),
                    Poll::Pending => {}
                }
            }
            return Poll::Pending;
        }
    }
}

/// The timers of a [`Driver`], boxed together and only while one runs (an
/// idle connection holds a null pointer): the cycle of a
/// [`Buffering::Cycle`](crate::Buffering::Cycle) router ([`Pacer`]), and the
/// deadlines of reading.
///
/// A reading deadline is armed only when a read ends with a message begun
/// (the partial message timeout) or when the connection has an idle
/// timeout; a connection that receives whole messages and has no idle
/// timeout never makes one. Both are counted from when reading began to wait
/// for bytes, and both stop while reading pauses (the router's bounds, or a
/// large write unwritten over the byte budget); not while a message waits
/// for room in the budget. The box also holds what the input buffer counts
/// in the byte budget, and gives it back when dropped.
#[derive(Default)]
struct Timers(Option<Box<TimerState>>);

#[derive(Default)]
struct TimerState {
    pacer: Pacer,
    /// Wakes the task at the earlier deadline, or before it: moved back
    /// only when it fires, so that bytes arriving cost no timer update.
    sleep: Option<Pin<Box<Sleep>>>,
    /// When the message begun must be whole.
    partial: Option<Instant>,
    /// When the connection is idle too long, unless bytes arrive.
    idle: Option<Instant>,
    /// What the input buffer holds beyond a read buffer, counted in `budget`.
    charged: usize,
    budget: Option<Arc<Budget>>,
    /// A session connection's state ([`crate::session`]): a plain
    /// connection holds none, and pays a null check per read and write batch.
    session: Option<Box<Session>>,
    /// The session is taken out while the stream is driven: the box stays.
    session_out: bool,
}

impl Drop for TimerState {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.release(self.charged);
        }
    }
}

/// A reading deadline that passed.
#[derive(Debug, PartialEq, Eq)]
enum Deadline {
    /// The message begun is not whole within the partial message timeout.
    Partial,
    /// No bytes within the idle timeout (this one).
    Idle(std::time::Duration),
}

impl Timers {
    /// What may be written now ([`Pacer::poll_take`]).
    fn poll_take(&mut self, link: &Link, cx: &mut Context<'_>) -> Option<Bytes> {
        match &mut self.0 {
            Some(state) => {
                let taken = state.pacer.poll_take(link, cx);
                self.tidy();
                taken
            }
            None => {
                // A pacer without a cycle open is no more than a null pointer.
                let mut pacer = Pacer::default();
                let taken = pacer.poll_take(link, cx);
                if pacer.is_timing() {
                    self.0.get_or_insert_with(Default::default).pacer = pacer;
                }
                taken
            }
        }
    }

    /// A message arrived whole: the next one begun gets the whole partial
    /// message timeout. (A null check when no deadline runs.)
    fn message_whole(&mut self) {
        if let Some(state) = &mut self.0 {
            state.partial = None;
        }
    }

    /// The input buffer grows to `capacity` (from what was counted): ready
    /// once what it holds beyond a read buffer is counted in `budget`;
    /// pending while that does not fit, the task woken when some is released.
    fn poll_charge_input(
        &mut self,
        budget: &Arc<Budget>,
        capacity: usize,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let state = self.0.get_or_insert_with(Default::default);
        let charge = capacity.saturating_sub(READ_BUFFER);
        if charge > state.charged {
            std::task::ready!(budget.poll_charge(charge - state.charged, cx));
        } else {
            budget.release(state.charged - charge);
        }
        state.charged = charge;
        state.budget.get_or_insert_with(|| budget.clone());
        Poll::Ready(())
    }

    /// The input buffer now holds `capacity` bytes (0: none), no more than
    /// counted: what it no longer holds is released. (A null check when
    /// nothing is counted.)
    fn input_held(&mut self, capacity: usize) {
        if let Some(state) = &mut self.0 {
            let charge = capacity.saturating_sub(READ_BUFFER);
            if charge < state.charged {
                if let Some(budget) = &state.budget {
                    budget.release(state.charged - charge);
                }
                state.charged = charge;
                self.tidy();
            }
        }
    }

    /// The session, if this is a session connection.
    fn session(&mut self) -> Option<&mut Session> {
        self.0.as_mut()?.session.as_deref_mut()
    }

    fn session_ref(&self) -> Option<&Session> {
        self.0.as_ref()?.session.as_deref()
    }

    /// Takes the session out for a while ([`Timers::put_session`] puts it back).
    fn take_session(&mut self) -> Option<Box<Session>> {
        let state = self.0.as_mut()?;
        let session = state.session.take();
        state.session_out = session.is_some();
        session
    }

    fn put_session(&mut self, session: Option<Box<Session>>) {
        if session.is_some() {
            let state = self.0.get_or_insert_with(Default::default);
            state.session = session;
            state.session_out = false;
        } else if let Some(state) = &mut self.0 {
            state.session_out = false;
            self.tidy();
        }
    }

    /// True while a cycle is open.
    fn is_cycling(&self) -> bool {
        self.0.as_ref().is_some_and(|s| s.pacer.is_timing())
    }

    /// Drops the box once nothing runs in it.
    fn tidy(&mut self) {
        if let Some(state) = &self.0 {
            if state.partial.is_none()
                && state.idle.is_none()
                && state.charged == 0
                && !state.pacer.is_timing()
                && state.session.is_none()
                && !state.session_out
            {
                self.0 = None;
            }
        }
    }

    /// The router paused reading: the deadlines stop, and start again from
    /// the whole timeouts when reading waits for bytes again.
    fn pause_reading(&mut self) {
        if let Some(state) = &mut self.0 {
            state.partial = None;
            state.idle = None;
            self.tidy();
        }
    }

    /// Reading waits for bytes, with a message `begun` or not, and bytes
    /// `arrived` since it last waited or not: arms, keeps or drops the
    /// deadlines; ready with the one that passed.
    fn poll_reading(
        &mut self,
        begun: bool,
        arrived: bool,
        settings: &Settings,
        cx: &mut Context<'_>,
    ) -> Poll<Deadline> {
        let idle = settings.idle_timeout;
        if !begun && idle.is_none() {
            // The common case: whole messages, no idle timeout.
            if self.0.is_some() {
                self.pause_reading();
            }
            return Poll::Pending;
        }
        let state = self.0.get_or_insert_with(Default::default);
        let mut now = None;
        let mut clock = || *now.get_or_insert_with(Instant::now);
        if !begun {
            state.partial = None;
        } else if state.partial.is_none() {
            state.partial = clock().checked_add(settings.partial_message_timeout);
        }
        if let Some(timeout) = idle {
            if arrived || state.idle.is_none() {
                state.idle = clock().checked_add(timeout);
            }
        }
        loop {
            let deadline = match (state.partial, state.idle) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => {
                    // Timeouts too long to count.
                    state.sleep = None;
                    return Poll::Pending;
                }
            };
            let sleep = state
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if sleep.deadline() > deadline {
                sleep.as_mut().reset(deadline);
            }
            std::task::ready!(sleep.as_mut().poll(cx));
            if sleep.deadline() < deadline {
                // Set for a deadline that was moved back since (bytes arrived).
                sleep.as_mut().reset(deadline);
                continue;
            }
            if state.partial == Some(deadline) {
                return Poll::Ready(Deadline::Partial);
            }
            return Poll::Ready(Deadline::Idle(idle.unwrap_or_default()));
        }
    }
}

/// A chunk of `len` bytes was taken to write: counted in the budget if it
/// is larger than a read buffer (small writes touch no shared counter).
fn out_taken(settings: &Settings, len: usize) {
    if len > READ_BUFFER {
        if let Some(budget) = &settings.budget {
            budget.charge(len);
        }
    }
}

/// A chunk of `len` bytes taken to write is written, or dropped.
fn out_done(settings: &Settings, len: usize) {
    if len > READ_BUFFER {
        if let Some(budget) = &settings.budget {
            budget.release(len);
        }
    }
}

/// True while the shared budget is over (the task is woken when it falls).
fn over_budget(settings: &Settings, cx: &mut Context<'_>) -> bool {
    match &settings.budget {
        Some(budget) => budget.poll_within(cx).is_pending(),
        None => false,
    }
}

impl<S> Drop for Driver<S> {
    fn drop(&mut self) {
        // A task aborted with a chunk unwritten.
        out_done(&self.reader.settings, self.out.len());
    }
}

/// Reads and discards what arrives until the end of the stream (ready with
/// `Ok`), an error, or nothing more has arrived (pending). A peer that sends
/// without pause gets [`DISCARD_READS`] reads per turn of the task, which
/// then yields: a stream need not limit itself as tokio's do.
fn poll_discard<S: AsyncRead + Unpin>(
    stream: &mut S,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<()>> {
    let mut scrap = [0u8; 8 * 1024];
    for _ in 0..DISCARD_READS {
        let mut buf = tokio::io::ReadBuf::new(&mut scrap);
        std::task::ready!(Pin::new(&mut *stream).poll_read(cx, &mut buf))?;
        if buf.filled().is_empty() {
            return Poll::Ready(Ok(()));
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// Reads of a closing connection's input, discarded, per turn of its task.
const DISCARD_READS: usize = 16;

/// The read buffer a connection takes when bytes arrive (and gives back when idle).
const READ_BUFFER: usize = 8 * 1024;

/// The most a connection without a read buffer reads on the stack before it
/// takes one: a read buffer's worth, so that a busy connection, which gives
/// its buffer back whenever it has read all there was, reads as much in the
/// first read of a wake-up as in the others (a smaller first read costs a
/// second read, a syscall, on every wake-up).
const FIRST_READ: usize = READ_BUFFER;

/// Below this much free room a read buffer is grown before the next read.
const MIN_ROOM: usize = 1024;

/// How a read buffer makes room for the next read.
enum Room {
    /// It has room enough.
    Enough,
    /// One read buffer: for small messages (reclaimed, when what was read
    /// before is no longer held, rather than allocated anew).
    ReadBuffer,
    /// A large message: a buffer of this capacity, twice what has arrived,
    /// up to the message's whole length.
    Grow(usize),
}

/// How `input` makes room for the next read, where the message it begins
/// needs `missing` more bytes. A buffer grows with what has arrived, never by
/// what a length prefix announces: to one read buffer, then doubling, and
/// never beyond the message the peer is sending. So a peer holds memory in
/// proportion to the bytes it has sent.
fn room(input: &BytesMut, missing: usize) -> Room {
    let len = input.len();
    if input.capacity() - len >= MIN_ROOM {
        return Room::Enough;
    }
    let whole = len + missing;
    if whole <= READ_BUFFER {
        Room::ReadBuffer
    } else {
        Room::Grow(whole.min((2 * len).max(READ_BUFFER)))
    }
}

/// Moves `input` to a buffer of exactly `capacity` (`reserve` may round a
/// large request up to twice it).
fn grow(input: &mut BytesMut, capacity: usize) {
    let mut grown = BytesMut::with_capacity(capacity);
    grown.extend_from_slice(input);
    *input = grown;
}

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

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Polls `driver` once; true while it runs on.
    async fn poll_once<S: AsyncRead + AsyncWrite + Unpin + 'static>(
        driver: &mut Driver<S>,
    ) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(driver.poll_run(cx).is_pending())).await
    }

    /// A driver over one end of an in-memory stream, and the other end.
    fn driver() -> (Driver<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let driver = Driver::new(ours, Router::new().link(), ConnectionOptions::default());
        (driver, theirs)
    }

    /// The budget counts what a large message's buffer holds beyond a read
    /// buffer while it arrives, and nothing once it is handled and the
    /// connection idle; nor once a driver with a message begun is dropped.
    /// A large write is counted until written.
    #[tokio::test]
    async fn the_budget_counts_large_buffers_while_they_are_held() {
        const LEN: usize = 200 * 1024;
        let options = ConnectionOptions::new().max_buffered_bytes(1 << 30);
        let budget = options.settings().budget.clone().unwrap();
        let router = Router::new();
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let mut driver = Driver::new(ours, router.link(), options.clone());
        let mut message = (LEN as u32).to_be_bytes().to_vec();
        message.extend(std::iter::repeat_n(0xc0, LEN));
        peer.write_all(&message[..LEN / 2]).await.unwrap();
        assert!(poll_once(&mut driver).await);
        let held = budget.used();
        assert!((LEN / 2 - READ_BUFFER..=LEN).contains(&held), "{held}");
        peer.write_all(&message[LEN / 2..]).await.unwrap();
        assert!(poll_once(&mut driver).await);
        assert_eq!(budget.used(), 0, "after the message");
        peer.write_all(&message[..LEN / 2]).await.unwrap();
        assert!(poll_once(&mut driver).await);
        assert!(budget.used() > 0);
        drop(driver);
        assert_eq!(budget.used(), 0, "after the drop");

        // A large write, to a peer that does not read it yet.
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut driver = Driver::new(ours, router.link(), options);
        router.emit("big", ("x".repeat(LEN),)).unwrap();
        assert!(poll_once(&mut driver).await);
        assert!(budget.used() > LEN, "{}", budget.used());
        let mut sink = vec![0; 64 * 1024];
        while budget.used() > 0 {
            let _ = peer.read(&mut sink).await.unwrap();
            assert!(poll_once(&mut driver).await);
        }
    }

    #[tokio::test]
    async fn five_bytes_announcing_16_mib_hold_one_read_buffer() {
        let (mut driver, mut peer) = driver();
        peer.write_all(&[0x00, 0xff, 0xff, 0xff, 0x01])
            .await
            .unwrap();
        assert!(poll_once(&mut driver).await);
        let held = driver.reader.input.capacity();
        assert!(held <= READ_BUFFER, "5 bytes hold {held} bytes");
    }

    /// The buffer of a large message grows as its bytes arrive, and never
    /// beyond what its prefix announced.
    #[tokio::test]
    async fn a_large_message_grows_its_buffer_up_to_its_announced_length() {
        const LEN: usize = 1024 * 1024 + 1;
        let (mut driver, mut peer) = driver();
        peer.write_all(&(LEN as u32).to_be_bytes()).await.unwrap();
        let chunk = [7u8; 8 * 1024];
        let mut sent = 0;
        let mut most = 0;
        while sent + chunk.len() < LEN {
            peer.write_all(&chunk).await.unwrap();
            sent += chunk.len();
            assert!(poll_once(&mut driver).await);
            let held = driver.reader.input.capacity();
            most = most.max(held);
            // Doubling: at most twice what has arrived (or one read buffer).
            assert!(
                held <= (2 * sent).max(READ_BUFFER),
                "{sent} bytes hold {held}"
            );
        }
        assert_eq!(driver.reader.input.len(), sent);
        assert!(most <= LEN, "a message of {LEN} bytes held {most}");
    }

    /// A stream that counts the reads that gave bytes.
    struct CountingReads {
        inner: tokio::io::DuplexStream,
        reads: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl AsyncRead for CountingReads {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let before = buf.filled().len();
            let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
            if buf.filled().len() > before {
                self.reads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            polled
        }
    }

    impl AsyncWrite for CountingReads {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// A connection that wakes to a read buffer's worth of bytes reads them
    /// in one read, as it does with its buffer: the first read of a wake-up
    /// (made on the stack, when the connection holds no buffer) is not a
    /// smaller one that a second read must follow, a syscall more per
    /// wake-up of a busy connection.
    #[tokio::test]
    async fn a_wake_up_reads_a_read_buffer_of_bytes_in_one_read() {
        const ROUNDS: usize = 10;
        // `{"i":1,"e":"x"}`, length-prefixed: 12 bytes.
        const MESSAGE: [u8; 12] = [0, 0, 0, 8, 0x82, 0xa1, b'i', 1, 0xa1, b'e', 0xa1, b'x'];
        let router = Router::new();
        let heard = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = heard.clone();
        router.on("x", move |_args: crate::Args| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        let (ours, mut peer) = tokio::io::duplex(64 * 1024);
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stream = CountingReads {
            inner: ours,
            reads: reads.clone(),
        };
        let mut driver = Driver::new(stream, router.link(), ConnectionOptions::default());
        // Just under a read buffer of whole messages.
        let per_round = (READ_BUFFER - 64) / MESSAGE.len();
        let bytes = MESSAGE.repeat(per_round);
        for round in 1..=ROUNDS {
            peer.write_all(&bytes).await.unwrap();
            for _ in 0..100 {
                assert!(poll_once(&mut driver).await);
                if heard.load(std::sync::atomic::Ordering::Relaxed) == round * per_round {
                    break;
                }
            }
            assert_eq!(
                heard.load(std::sync::atomic::Ordering::Relaxed),
                round * per_round
            );
            // Idle again: the connection holds no read buffer.
            assert_eq!(driver.reader.input.capacity(), 0);
        }
        assert_eq!(
            reads.load(std::sync::atomic::Ordering::Relaxed),
            ROUNDS,
            "{ROUNDS} wake-ups of {} bytes each",
            bytes.len()
        );
    }
}
