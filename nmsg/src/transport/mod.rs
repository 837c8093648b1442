//! Transports: how a router's messages move over a byte stream.
//!
//! [`Connection::spawn`] drives one router over any `AsyncRead + AsyncWrite`
//! stream: it reads length-prefixed messages into [`Router::dispatch`] and
//! writes what [`Router::next_outgoing`] gives. [`memory`] links two routers in
//! one process. [`Connector`], [`Binder`] and [`Acceptor`] are the traits a
//! client and a server open streams with; [`Tcp`], [`Unix`] and
//! [`memory::Network`] implement them, and so can a user's own transport.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Notify};
use tokio_util::codec::FramedRead;

use crate::error::Error;
use crate::framing::MessageCodec;
use crate::router::Router;

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
        let stop = Arc::new(Notify::new());
        let (tx, done) = watch::channel(None);
        let (go, held) = tokio::sync::oneshot::channel::<()>();
        let driver = drive(stream, router.clone(), stop.clone(), tx);
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

async fn drive<S>(
    stream: S,
    router: Router,
    stop: Arc<Notify>,
    done: watch::Sender<Option<CloseReason>>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let mut frames = FramedRead::new(rd, MessageCodec::new(router.max_message_size()));
    let reading = async {
        while let Some(message) = frames.next().await {
            match message {
                Ok(payload) => router.dispatch(payload),
                Err(crate::error::FramingError::Io(e)) => return CloseReason::Io(e.to_string()),
                Err(e) => {
                    let reason = CloseReason::Framing(e.to_string());
                    router.report(Error::Framing(e));
                    return reason;
                }
            }
        }
        CloseReason::PeerClosed
    };
    let writing = async {
        loop {
            // A write, once started, is never cancelled: a stop request is
            // looked at only between writes, so the peer never sees half a message.
            let (bytes, stopping) = tokio::select! {
                bytes = router.next_outgoing() => (bytes, false),
                _ = stop.notified() => (router.take_outgoing(), true),
            };
            let closed = bytes.is_none();
            if let Some(bytes) = bytes {
                if let Err(e) = wr.write_all(&bytes).await {
                    return CloseReason::Io(e.to_string());
                }
            }
            if stopping || closed {
                return CloseReason::Local;
            }
        }
    };
    let reason = tokio::select! {
        reason = reading => reason,
        reason = writing => reason,
    };
    let _ = wr.shutdown().await;
    tracing::debug!(%reason, "nmsg connection closed");
    router.connection_lost(&reason.to_string());
    let _ = done.send(Some(reason));
}
