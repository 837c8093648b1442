//! The client: connects in the background with exponential backoff, reconnects
//! after any disconnect, and queues what is emitted while disconnected.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch, Notify};

use crate::backoff::Backoff;
use crate::codec::Codec;
use crate::router::{Buffering, Router, RouterBuilder};
use crate::transport::{run_stream, Address, Connector, Tcp, Unix};

/// How many lifecycle events a slow [`Client::events`] receiver may fall behind.
const EVENT_CAPACITY: usize = 256;

/// Default bound on how long [`Client::stop`] spends writing what is queued.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Something that happened to a client's connection.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A connection is up; what was queued goes out now.
    Connected {
        /// The server's address.
        address: Address,
    },
    /// The connection ended. Frames with callbacks sent on it failed with
    /// [`Error::Disconnected`](crate::Error::Disconnected).
    Disconnected {
        /// Why.
        reason: String,
    },
    /// A connection attempt failed; the next one comes after `delay`.
    Reconnecting {
        /// How many attempts failed in a row.
        attempt: u32,
        /// The wait before the next attempt.
        delay: Duration,
        /// Why the last attempt failed.
        error: String,
    },
    /// The client stopped.
    Stopped {
        /// Frames still queued at the stop that were never sent (the client was
        /// not connected, or writing them took longer than the stop timeout).
        unsent: usize,
    },
}

/// Options of a [`Client`]; [`Client::tcp`], [`Client::unix`] or [`Client::builder`].
#[must_use = "a ClientBuilder does nothing until `start` is called"]
pub struct ClientBuilder {
    connector: Arc<dyn Connector>,
    router: RouterBuilder,
    backoff: Backoff,
    stop_timeout: Duration,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("address", &self.connector.address())
            .field("router", &self.router)
            .field("backoff", &self.backoff)
            .finish()
    }
}

impl ClientBuilder {
    /// The codec (default MsgPack). The server must use the same.
    pub fn codec(mut self, codec: impl Codec) -> Self {
        self.router = self.router.codec(codec);
        self
    }

    /// Bulk buffering of outgoing frames (default [`Buffering::Off`]).
    pub fn buffering(mut self, buffering: Buffering) -> Self {
        self.router = self.router.buffering(buffering);
        self
    }

    /// The reconnection schedule (default [`Backoff::default`]: 1 s doubling up to 1 hour).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How many frames may wait while disconnected (default 10,000); beyond
    /// it `emit` fails with [`Error::QueueFull`](crate::Error::QueueFull) and
    /// `emit_wait` waits.
    pub fn max_queued_frames(mut self, max: usize) -> Self {
        self.router = self.router.max_queued_frames(max);
        self
    }

    /// The largest message sent or accepted (default 16 MiB).
    pub fn max_message_size(mut self, max: usize) -> Self {
        self.router = self.router.max_message_size(max);
        self
    }

    /// How long [`Client::stop`] may spend writing what is queued (default 5 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Any other router option (timeouts, bounds); replaces codec and
    /// buffering set before.
    pub fn router_options(mut self, router: RouterBuilder) -> Self {
        self.router = router;
        self
    }

    /// Starts the client and returns at once: it connects in the background.
    /// Its router is usable now; what is emitted before the connection is up
    /// is queued. Needs a tokio runtime.
    pub fn start(self) -> Client {
        let router = self.router.build();
        let (status_tx, status) = watch::channel(Status::Connecting);
        let inner = Arc::new(ClientInner {
            router: router.clone(),
            stop: Notify::new(),
            status,
            events: Mutex::new(None),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(run(
            self.connector,
            router,
            self.backoff,
            self.stop_timeout,
            inner.clone(),
            status_tx,
        ));
        *inner.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Client { inner }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Connecting,
    Connected,
    Stopped,
}

struct ClientInner {
    router: Router,
    stop: Notify,
    status: watch::Receiver<Status>,
    /// Created by the first [`Client::events`] call: a broadcast channel
    /// allocates all its slots up front, about 18 KB per client, which an
    /// application with thousands of clients that never listen should not pay.
    events: Mutex<Option<broadcast::Sender<ClientEvent>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A client: one router that lives across reconnections.
///
/// The client runs (and reconnects) until [`Client::stop`] is called; dropping
/// its handles does not stop it, as a started Node.js client keeps running.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), nmsg::Error> {
/// let client = nmsg::Client::tcp("127.0.0.1:8081").start();
/// client.router().emit("ping", ())?; // queued until the server is up
/// client.stop().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("status", &*self.inner.status.borrow())
            .field("router", &self.inner.router)
            .finish()
    }
}

impl Client {
    /// A TCP client for `addr` (`host:port`).
    pub fn tcp(addr: impl Into<String>) -> ClientBuilder {
        Client::builder(Tcp::new(addr))
    }

    /// A Unix domain socket client for `path`.
    pub fn unix(path: impl Into<std::path::PathBuf>) -> ClientBuilder {
        Client::builder(Unix::new(path))
    }

    /// A client over any transport.
    pub fn builder(connector: impl Connector) -> ClientBuilder {
        ClientBuilder {
            connector: Arc::new(connector),
            router: RouterBuilder::default(),
            backoff: Backoff::default(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
        }
    }

    /// The client's router: `emit`, `on`, `request`. Usable at once, across reconnections.
    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// Lifecycle events from now on. A receiver that falls more than 256
    /// events behind loses the oldest (tokio's broadcast semantics).
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        let mut events = self.inner.events.lock().unwrap_or_else(|e| e.into_inner());
        events
            .get_or_insert_with(|| broadcast::channel(EVENT_CAPACITY).0)
            .subscribe()
    }

    /// True while a connection is up.
    pub fn is_connected(&self) -> bool {
        *self.inner.status.borrow() == Status::Connected
    }

    /// Waits until a connection is up. Returns at once if one is; returns when
    /// the client stops otherwise.
    pub async fn connected(&self) {
        let mut status = self.inner.status.clone();
        let _ = status.wait_for(|s| *s != Status::Connecting).await;
    }

    /// Stops: writes what is queued if connected (within the stop timeout),
    /// closes the connection cleanly, and closes the router, so later emits
    /// fail with [`Error::Closed`](crate::Error::Closed). Idempotent.
    pub async fn stop(&self) {
        self.inner.stop.notify_one();
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        } else {
            let mut status = self.inner.status.clone();
            let _ = status.wait_for(|s| *s == Status::Stopped).await;
        }
    }
}

async fn run(
    connector: Arc<dyn Connector>,
    router: Router,
    backoff: Backoff,
    stop_timeout: Duration,
    inner: Arc<ClientInner>,
    status: watch::Sender<Status>,
) {
    let emit = |e: ClientEvent| {
        if let Some(events) = &*inner.events.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = events.send(e);
        }
    };
    let mut failures: u32 = 0;
    loop {
        let attempt = tokio::select! {
            r = connector.connect() => r,
            _ = inner.stop.notified() => break,
        };
        match attempt {
            Ok((stream, address)) => {
                tracing::debug!(%address, "nmsg client connected");
                let since = tokio::time::Instant::now();
                let _ = status.send(Status::Connected);
                emit(ClientEvent::Connected { address });
                // The connection runs on this task: a client holds one task, not two.
                let closing = Notify::new();
                let mut connection = std::pin::pin!(run_stream(stream, &router, &closing));
                tokio::select! {
                    reason = &mut connection => {
                        let _ = status.send(Status::Connecting);
                        emit(ClientEvent::Disconnected { reason: reason.to_string() });
                        // A connection that lived a while resets the schedule and is retried
                        // at once; one the server dropped right away counts as a failed
                        // attempt, so a server that accepts and closes is not hammered.
                        if since.elapsed() >= backoff.initial {
                            failures = 0;
                            continue;
                        }
                        let delay = backoff.delay(failures);
                        failures = failures.saturating_add(1);
                        emit(ClientEvent::Reconnecting { attempt: failures, delay, error: reason.to_string() });
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = inner.stop.notified() => break,
                        }
                    }
                    _ = inner.stop.notified() => {
                        // Write what is queued, within the bound, then close.
                        closing.notify_one();
                        if tokio::time::timeout(stop_timeout, &mut connection).await.is_err() {
                            router.connection_lost(&format!("could not write what was queued within {stop_timeout:?}"));
                        }
                        break;
                    }
                }
            }
            Err(error) => {
                let delay = backoff.delay(failures);
                failures = failures.saturating_add(1);
                tracing::debug!(%error, ?delay, address = %connector.address(), "nmsg client cannot connect");
                emit(ClientEvent::Reconnecting {
                    attempt: failures,
                    delay,
                    error: error.to_string(),
                });
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = inner.stop.notified() => break,
                }
            }
        }
    }
    let unsent = router.queued_frames();
    router.close();
    let _ = status.send(Status::Stopped);
    emit(ClientEvent::Stopped { unsent });
}
