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
//! so the next message is read as usual. (PROTOCOL.md allows closing the
//! connection for an undecodable payload; nmsg keeps it, so that one bad message
//! costs the peer nothing else.)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Notify};
use tokio_util::codec::FramedRead;

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
    stop: Arc<Notify>,
    done: watch::Receiver<Option<CloseReason>>,
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
        Connection::spawn_held_then(stream, router, None)
    }

    /// [`Connection::spawn_held`], and `on_close` runs on the connection's task
    /// once it has ended (a server's bookkeeping, without a task of its own
    /// per connection to wait for the end).
    pub(crate) fn spawn_held_then<S>(
        stream: S,
        router: Router,
        on_close: Option<OnClose>,
    ) -> (Connection, Start)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let stop = Arc::new(Notify::new());
        let (tx, done) = watch::channel(None);
        let (go, held) = tokio::sync::oneshot::channel::<()>();
        let driver = drive(stream, router.clone(), stop.clone(), tx, on_close);
        let task = tokio::spawn(async move {
            let _ = held.await;
            driver.await
        })
        .abort_handle();
        let conn = Connection {
            router,
            stop,
            done,
            task,
        };
        (conn, Start(go))
    }

    /// The router this connection drives.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.done.borrow().is_some()
    }

    /// Waits until the connection ends, and says why.
    pub async fn closed(&self) -> CloseReason {
        let mut done = self.done.clone();
        loop {
            if let Some(reason) = done.borrow_and_update().clone() {
                return reason;
            }
            if done.changed().await.is_err() {
                return CloseReason::Local;
            }
        }
    }

    /// Closes gracefully: writes what is queued, shuts the stream down, and
    /// waits for the task to end.
    pub async fn close(&self) -> CloseReason {
        self.stop.notify_one();
        self.closed().await
    }

    /// Closes gracefully, as [`Connection::close`], but if writing what is queued
    /// takes longer than `bound`, drops the connection there.
    pub async fn close_within(&self, bound: std::time::Duration) -> CloseReason {
        self.stop.notify_one();
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
        self.stop.notify_one();
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
pub struct Start(tokio::sync::oneshot::Sender<()>);

impl Start {
    /// Begins reading and writing.
    pub fn start(self) {
        let _ = self.0.send(());
    }
}

/// What runs when a connection has ended, with the reason.
pub(crate) type OnClose = Box<dyn FnOnce(&CloseReason) + Send>;

async fn drive<S>(
    stream: S,
    router: Router,
    stop: Arc<Notify>,
    done: watch::Sender<Option<CloseReason>>,
    on_close: Option<OnClose>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let reason = run_stream(stream, &router, &stop).await;
    if let Some(on_close) = on_close {
        on_close(&reason);
    }
    let _ = done.send(Some(reason));
}

/// Drives `router` over `stream` until the stream ends or `stop` is notified
/// (then it writes what is queued and shuts the stream down), tells the router
/// the connection is lost, and says why it ended. A client runs this on its own
/// task; [`Connection`] runs it on a task of its own.
pub(crate) async fn run_stream<S>(stream: S, router: &Router, stop: &Notify) -> CloseReason
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    // One task reads and writes the unsplit stream. After it dispatches the
    // messages that have arrived (at most DISPATCH_BURST at a time), it writes
    // what their handlers queued in the same turn: an answer costs no wake-up
    // of its own, and the answers to a batch of requests go out together.
    // Reading goes on while a write waits for room, so two peers that both
    // send much never block each other.
    let mut frames = FramedRead::new(
        Box::pin(stream),
        MessageCodec::new(router.max_message_size()),
    );
    let cycle = match router.buffering() {
        Buffering::Cycle(cycle) => Some(cycle),
        _ => None,
    };
    let mut cycle_timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut out = Bytes::new();
    // A write, once started, is never cancelled. After a stop request nothing
    // more is read; what was queued at the request is written last.
    let mut stopping = false;
    let mut tail: Option<Bytes> = None;
    let mut stop_requested = std::pin::pin!(stop.notified());
    let reason = std::future::poll_fn(|cx| {
        router.writer_running();
        loop {
            let mut progress = false;
            if !stopping && stop_requested.as_mut().poll(cx).is_ready() {
                stopping = true;
                tail = router.take_outgoing();
            }
            // Read and dispatch what has arrived; nothing more after a stop request.
            if !stopping {
                // Messages dispatched since the last write (see DISPATCH_BURST).
                let mut burst = 0;
                loop {
                    if frames.read_buffer().capacity() == 0 {
                        frames.read_buffer_mut().reserve(READ_BUFFER);
                    }
                    let polled = frames.poll_next_unpin(cx);
                    if polled.is_pending() && frames.read_buffer().is_empty() {
                        // Idle: give the read buffer back; an idle connection holds none.
                        *frames.read_buffer_mut() = bytes::BytesMut::new();
                    }
                    match polled {
                        Poll::Ready(Some(Ok(payload))) => {
                            router.dispatch(payload);
                            progress = true;
                            burst += 1;
                            if burst == DISPATCH_BURST || !holds_message(frames.read_buffer()) {
                                break;
                            }
                        }
                        Poll::Ready(Some(Err(FramingError::Io(e)))) => {
                            return Poll::Ready(CloseReason::Io(e.to_string()))
                        }
                        Poll::Ready(Some(Err(e))) => {
                            let reason = CloseReason::Framing(e.to_string());
                            router.report(Error::Framing(e));
                            return Poll::Ready(reason);
                        }
                        Poll::Ready(None) => return Poll::Ready(CloseReason::PeerClosed),
                        Poll::Pending => break,
                    }
                }
            }
            loop {
                if out.is_empty() {
                    let next = if stopping {
                        tail.take()
                    } else if let Some(cycle) = cycle {
                        // Buffering::Cycle: the first frame queued starts the
                        // cycle; what is queued when it ends goes out together.
                        if cycle_timer.is_none() && router.queued_frames() > 0 {
                            cycle_timer = Some(Box::pin(tokio::time::sleep(cycle)));
                        }
                        match cycle_timer.as_mut().map(|t| t.as_mut().poll(cx)) {
                            Some(Poll::Ready(())) => {
                                cycle_timer = None;
                                router.take_outgoing()
                            }
                            _ => None,
                        }
                    } else {
                        router.take_outgoing()
                    };
                    match next {
                        Some(bytes) => out = bytes,
                        None => break,
                    }
                }
                match frames.get_mut().as_mut().poll_write(cx, &out) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(CloseReason::Io("the stream took no bytes".into()))
                    }
                    Poll::Ready(Ok(n)) => {
                        out.advance(n);
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(CloseReason::Io(e.to_string())),
                    Poll::Pending => break,
                }
            }
            if stopping && out.is_empty() && tail.is_none() {
                return Poll::Ready(CloseReason::Local);
            }
            if progress {
                continue;
            }
            // Nothing moved: wait for bytes to read, room to write, a frame to
            // send, the cycle's end or a stop request (all registered above).
            if out.is_empty() && !stopping && cycle_timer.is_none() {
                match router.poll_queued(cx) {
                    Poll::Ready(true) => continue,
                    Poll::Ready(false) => return Poll::Ready(CloseReason::Local),
                    Poll::Pending => {}
                }
            }
            return Poll::Pending;
        }
    })
    .await;
    let _ = frames.get_mut().shutdown().await;
    tracing::debug!(%reason, "nmsg connection closed");
    router.connection_lost(&reason.to_string());
    reason
}

/// Messages a connection dispatches before it writes what their handlers
/// queued, even when more have arrived. A peer that sends many requests at
/// once gets the first answers while the rest are still being handled, so on
/// a machine with more than one CPU both ends work at the same time instead of
/// taking turns. Measured with 64 calls in flight on one connection, client and
/// server in one process: on two CPUs about 1.7 times the calls per second of
/// no limit; on a single CPU, where nothing runs in parallel and the extra
/// writes are pure cost, about 0.77 times. 16 gave 1.5 and 0.9.
const DISPATCH_BURST: usize = 8;

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
