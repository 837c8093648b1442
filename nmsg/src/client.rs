//! The client: connects in the background with exponential backoff, reconnects
//! after any disconnect, and queues what is emitted while disconnected.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::auth::{HelloFailed, DEFAULT_AUTH_TIMEOUT};
use crate::backoff::Backoff;
use crate::codec::Codec;
use crate::lifecycle::{Ending, Events, Lifecycle, Status};
use crate::router::{BadRequestOwner, BadRequestSink, Buffering, Router, RouterBuilder};
use crate::session::{Notice, Session, SessionOptions, State};
use crate::sync::MutexExt;
use crate::transport::{
    Address, BoxStream, CloseReason, ConnectionOptions, Connector, Driver, Tcp, Unix,
};

/// How many lifecycle events a slow [`Client::events`] receiver may fall behind.
const EVENT_CAPACITY: usize = 256;

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
    /// [`Error::Disconnected`](crate::Error::Disconnected). What was lost
    /// with it, if anything, follows as [`ClientEvent::Lost`].
    Disconnected {
        /// Why.
        reason: String,
    },
    /// Frames were lost with a connection, at a disconnect or at the stop:
    /// the messages it had taken from the queue and not written whole (a
    /// message written in part is lost whole; "written" means the stream
    /// took the bytes, not that the server read them), and the responses
    /// still queued for it (answers to the server's requests on that
    /// connection, which mean nothing to the next one). Frames still queued
    /// otherwise are not lost: they go out on the next connection, or are
    /// counted as `unsent` at the stop.
    Lost {
        /// How many frames.
        frames: usize,
        /// Their bytes as they would have gone on the wire (length prefixes
        /// and bulk headers included).
        bytes: usize,
        /// Why the connection ended.
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
    /// A request's arguments did not fit the typed handler of its event
    /// (`#[nmsg::events]`): the handler did not run, an error-first method
    /// answered `cb(message)`, and the router's error hook got the error.
    BadRequest {
        /// The event.
        event: String,
        /// What did not fit.
        error: String,
    },
    /// A session began (a client with sessions,
    /// [`ClientBuilder::session`]): the server welcomed a new one.
    SessionStarted {
        /// The session id.
        session: String,
    },
    /// The session resumed on a new connection: what either side had not
    /// received is sent again, and pending replies and callbacks go on.
    Resumed {
        /// The session id.
        session: String,
        /// Messages this side wrote again (written before, not acknowledged).
        resent: usize,
    },
    /// The session could not resume (its window passed on the server, or
    /// the server restarted): the server welcomed a new one. Frames that
    /// waited for answers failed with
    /// [`Error::SessionLost`](crate::Error::SessionLost); of the frames
    /// written and not acknowledged, the plain emits were written again
    /// (`resent`: the server may see them twice) or dropped, by option
    /// ([`SessionOptions::unacked`]), and the others dropped (`dropped`).
    /// Responses still queued for the old session come in a
    /// [`ClientEvent::Lost`].
    SessionLost {
        /// The session that was lost.
        old: String,
        /// The new session (empty when the server could not resume the
        /// session it said it had: the next connection asks for a new one,
        /// and [`ClientEvent::SessionStarted`] names it).
        session: String,
        /// Frames written again on the new session, possibly duplicated.
        resent: usize,
        /// Frames dropped.
        dropped: usize,
    },
    /// The server rejected the client's credentials
    /// ([`ClientBuilder::credentials`]) and closed the connection; the
    /// router's error hook gets [`Error::AuthRejected`](crate::Error::AuthRejected),
    /// and the client tries again after its backoff (a
    /// [`ClientEvent::Reconnecting`] follows), asking for credentials anew.
    AuthRejected {
        /// The server's reason.
        reason: String,
    },
    /// The client stopped.
    Stopped {
        /// Frames still in the client's queue when its router closed, never
        /// handed to a connection: exactly the frames emitted and neither
        /// written nor reported in a [`ClientEvent::Lost`] (frames a
        /// connection took but could not write within the stop timeout come
        /// in the `Lost` just before).
        unsent: usize,
    },
}

/// Options of a [`Client`]; [`Client::tcp`], [`Client::unix`] or [`Client::builder`].
#[must_use = "a ClientBuilder does nothing until `start` is called"]
pub struct ClientBuilder {
    connector: Arc<dyn Connector>,
    router: RouterBuilder,
    connection: ConnectionOptions,
    backoff: Backoff,
    session: Option<SessionOptions>,
    credentials: Option<crate::auth::CredentialsFn>,
    auth_timeout: Duration,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("address", &self.connector.address())
            .field("router", &self.router)
            .field("backoff", &self.backoff)
            .field("credentials", &self.credentials.is_some())
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

    /// The reconnection schedule (default [`Backoff::default`]: 1 s doubling up to 1 hour, each delay shortened by up to 20 %).
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

    /// How many received messages the connection handles before it writes
    /// what their handlers queued, when more have arrived (see
    /// [`ConnectionOptions::dispatch_burst`]).
    pub fn dispatch_burst(mut self, messages: usize) -> Self {
        self.connection = self.connection.dispatch_burst(messages);
        self
    }

    /// How long a message may take to arrive whole once its first byte has
    /// (default 30 s); past it the connection closes (see
    /// [`ConnectionOptions::partial_message_timeout`]).
    pub fn partial_message_timeout(mut self, timeout: Duration) -> Self {
        self.connection = self.connection.partial_message_timeout(timeout);
        self
    }

    /// Closes the connection when no byte has arrived for this long (default: none;
    /// see [`ConnectionOptions::idle_timeout`]).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.connection = self.connection.idle_timeout(timeout);
        self
    }

    /// How long [`Client::stop`] may spend closing its connection (default
    /// 5 s): writing what is queued, shutting the stream down, and reading
    /// (and discarding) what the server still sends until it closes its side.
    /// What it could not write by then is reported in a [`ClientEvent::Lost`].
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.connection = self.connection.stop_timeout(timeout);
        self
    }

    /// Opens every connection with a session handshake (default: none, a
    /// plain client): messages are numbered and kept until the server
    /// acknowledges them, and after a break the client reconnects at once
    /// and resumes, so that every message arrives once, in order, both ways,
    /// and pending replies and callbacks survive the break. The server must
    /// have sessions too ([`ServerBuilder::session`](crate::ServerBuilder::session));
    /// one without does not answer the hello, and each attempt fails after
    /// the [hello timeout](SessionOptions::hello_timeout) with
    /// [`Error::SessionsUnsupported`](crate::Error::SessionsUnsupported)'s
    /// message in a [`ClientEvent::Reconnecting`].
    pub fn session(mut self, options: SessionOptions) -> Self {
        self.session = Some(options);
        self
    }

    /// Authenticates every connection with the credentials `credentials`
    /// gives (default: none, a client that does not authenticate). It is
    /// called on every connect and reconnect, so that a token can be
    /// refreshed; what it gives (any serializable value: a token string in
    /// most setups) rides on the hello, the first message of the connection
    /// (with sessions, the session's hello; without, a hello of its own
    /// that the server answers before anything else is written). The server
    /// must authenticate ([`ServerBuilder::authenticate`](crate::ServerBuilder::authenticate)).
    /// A rejection closes the connection, comes as a
    /// [`ClientEvent::AuthRejected`] and [`Error::AuthRejected`](crate::Error::AuthRejected)
    /// to the router's error hook, and counts as a failed attempt: the
    /// client backs off. Without sessions a [`ClientEvent::Connected`]
    /// means the server accepted the credentials; with sessions it comes
    /// at the connection, and the verdict with the welcome
    /// ([`ClientEvent::SessionStarted`] or [`ClientEvent::Resumed`]) or the
    /// rejection.
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() {
    /// let client = nmsg::Client::tcp("127.0.0.1:8081")
    ///     .credentials(|| std::env::var("TOKEN").unwrap_or_default())
    ///     .start();
    /// # client.stop().await;
    /// # }
    /// ```
    pub fn credentials<F, T>(self, credentials: F) -> Self
    where
        F: Fn() -> T + Send + Sync + 'static,
        T: serde::Serialize,
    {
        self.credentials_fn(crate::auth::credentials_fn(credentials))
    }

    /// [`credentials`](Self::credentials) from an async closure (a token
    /// fetched anew for each connection). Its error fails the attempt, which
    /// is retried after the backoff.
    pub fn credentials_async<F, Fut, T>(self, credentials: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, crate::Error>> + Send + 'static,
        T: serde::Serialize,
    {
        self.credentials_fn(crate::auth::credentials_async_fn(credentials))
    }

    fn credentials_fn(mut self, credentials: crate::auth::CredentialsFn) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// How long a client with credentials and without sessions waits for
    /// the server's answer to its hello (default 5 s,
    /// [`DEFAULT_AUTH_TIMEOUT`](crate::DEFAULT_AUTH_TIMEOUT)); past it the
    /// attempt fails (the server does not authenticate) and the client
    /// backs off. With sessions, the
    /// [hello timeout](SessionOptions::hello_timeout) bounds the same wait.
    pub fn auth_timeout(mut self, timeout: Duration) -> Self {
        self.auth_timeout = timeout;
        self
    }

    /// Any other router option (timeouts, bounds), set on the client's own
    /// router options, so that what was set before stays:
    /// `.router(|r| r.max_pending(100))`.
    pub fn router(mut self, edit: impl FnOnce(RouterBuilder) -> RouterBuilder) -> Self {
        self.router = edit(self.router);
        self
    }

    /// Starts the client and returns at once: it connects in the background.
    /// Its router is usable now; what is emitted before the connection is up
    /// is queued. Needs a tokio runtime.
    pub fn start(self) -> Client {
        let inner = Arc::new(ClientInner::new(self));
        let me = Arc::downgrade(&inner);
        if let Some(session) = inner.session() {
            let me = me.clone();
            let notify: crate::session::Notify = Arc::new(move |notice| {
                if let Some(inner) = me.upgrade() {
                    inner.session_notice(notice);
                }
            });
            // Set before the task starts: no connection reads it before.
            session.notify.set(notify).ok();
        }
        let me: std::sync::Weak<dyn BadRequestOwner> = me as _;
        inner.router.set_owner(Arc::new(BadRequestSink(me)));
        tokio::spawn(run(Ending::new(inner.clone())));
        Client { inner }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientStatus {
    Connecting,
    Connected,
    Stopped,
}

impl Status for ClientStatus {
    const ENDED: Self = ClientStatus::Stopped;
}

/// What a client's handles and its task share. The connection itself lives
/// on the task.
struct ClientInner {
    router: Router,
    connection: ConnectionOptions,
    connector: Arc<dyn Connector>,
    backoff: Backoff,
    /// The status, stopped by [`Client::stop`].
    life: Lifecycle<ClientStatus>,
    events: Events<ClientEvent>,
    /// Sessions and authentication, in one box made for a client with
    /// either (a plain client keeps one word for them).
    extensions: Option<Box<Extensions>>,
}

/// What a client with sessions or authentication has.
struct Extensions {
    /// Sessions' options and state, for a client with sessions.
    session: Option<ClientSession>,
    /// A client that authenticates.
    auth: Option<ClientAuth>,
}

/// A client's authentication: where its credentials come from, and the
/// bound on the answer to a plain hello.
struct ClientAuth {
    credentials: crate::auth::CredentialsFn,
    timeout: Duration,
    /// With sessions: the credentials asked for this connection, until its
    /// session's hello takes them.
    for_session: std::sync::Mutex<Option<crate::Value>>,
}

impl ClientAuth {
    /// Asks for credentials; without sessions, says hello with them on
    /// `stream` and reads the answer. Gives the credentials for the
    /// session's hello (with sessions).
    async fn connect(&self, inner: &ClientInner) -> std::io::Result<(BoxStream, Address)> {
        let (stream, address) = inner.connector.connect().await?;
        self.open(inner, stream)
            .await
            .map_err(|failed| {
                if let HelloFailed::Rejected(crate::Error::AuthRejected { reason }) = &failed {
                    inner.rejected(reason.clone());
                }
                std::io::Error::other(failed.to_string())
            })
            .map(|stream| (stream, address))
    }

    async fn open(
        &self,
        inner: &ClientInner,
        mut stream: BoxStream,
    ) -> Result<BoxStream, HelloFailed> {
        let k = (self.credentials)()
            .await
            .map_err(|e| HelloFailed::Other(format!("the credentials closure failed: {e}")))?;
        if inner.session().is_some() {
            *self.for_session.locked() = Some(k);
            return Ok(stream);
        }
        let codec = inner.router.codec_ref().name();
        crate::auth::plain_hello(&mut stream, k, codec, self.timeout).await?;
        Ok(stream)
    }

    /// The credentials asked for the session's hello of this connection.
    fn session_credentials(&self) -> Option<crate::Value> {
        self.for_session.locked().take()
    }
}

/// A client's sessions: their options, and the state of the session that
/// goes on between two connections.
struct ClientSession {
    options: Arc<SessionOptions>,
    state: std::sync::Mutex<Option<Box<State>>>,
    /// Where sessions' notices go (set at the start).
    notify: std::sync::OnceLock<crate::session::Notify>,
}

impl ClientInner {
    /// The client's sessions, if it has them.
    fn session(&self) -> Option<&ClientSession> {
        self.extensions.as_ref()?.session.as_ref()
    }

    /// The client's authentication, if it authenticates.
    fn auth(&self) -> Option<&ClientAuth> {
        self.extensions.as_ref()?.auth.as_ref()
    }

    fn new(builder: ClientBuilder) -> Self {
        let router = builder.router.build();
        router.keep_losses();
        let auth = builder.credentials.map(|credentials| ClientAuth {
            credentials,
            timeout: builder.auth_timeout,
            for_session: std::sync::Mutex::new(None),
        });
        let session = builder.session.map(|options| ClientSession {
            options: Arc::new(options),
            state: std::sync::Mutex::new(None),
            notify: std::sync::OnceLock::new(),
        });
        let extensions =
            (auth.is_some() || session.is_some()).then(|| Box::new(Extensions { session, auth }));
        ClientInner {
            extensions,
            router,
            connection: builder.connection,
            connector: builder.connector,
            backoff: builder.backoff,
            life: Lifecycle::new(ClientStatus::Connecting),
            events: Events::new(EVENT_CAPACITY),
        }
    }

    /// Sends the client event of a session's notice.
    fn session_notice(&self, notice: Notice) {
        let event = match notice {
            Notice::Started { id } => ClientEvent::SessionStarted { session: id },
            Notice::Resumed { id, resent, .. } => ClientEvent::Resumed {
                session: id,
                resent,
            },
            Notice::Lost {
                old,
                id,
                resent,
                dropped,
            } => ClientEvent::SessionLost {
                old,
                session: id,
                resent,
                dropped,
            },
            Notice::Denied { reason } => return self.rejected(reason),
            Notice::Away { .. } | Notice::Expired => return,
        };
        self.events.send(event);
    }

    /// The server rejected the credentials: the event, the error hook, a log.
    fn rejected(&self, reason: String) {
        tracing::warn!(%reason, address = %self.connector.address(), "nmsg client: the server rejected the authentication");
        self.events.send(ClientEvent::AuthRejected {
            reason: reason.clone(),
        });
        self.router.report(crate::Error::AuthRejected { reason });
    }

    /// Sends a [`ClientEvent::Lost`] for what was lost since the last one.
    fn report_loss(&self) {
        if let Some((lost, reason)) = self.router.take_loss() {
            self.events.send(ClientEvent::Lost {
                frames: lost.frames,
                bytes: lost.bytes,
                reason: reason.to_string(),
            });
        }
    }
}

impl BadRequestOwner for ClientInner {
    fn bad_request(&self, _: &Router, event: &str, error: &crate::Error) {
        self.events.send(ClientEvent::BadRequest {
            event: event.to_owned(),
            error: error.to_string(),
        });
    }
}

impl AsRef<Lifecycle<ClientStatus>> for ClientInner {
    fn as_ref(&self) -> &Lifecycle<ClientStatus> {
        &self.life
    }
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
            .field("status", &self.inner.life)
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

    /// A TLS client over TCP for `addr` (feature `tls`), expecting a server
    /// certificate valid for `server_name` (a DNS name or an IP address),
    /// with this rustls configuration
    /// ([`tls::client_config`](crate::transport::tls::client_config) builds
    /// one from PEM files, with a client certificate for mutual TLS). A
    /// failed handshake (an untrusted or expired certificate, a wrong name, a
    /// server that does not speak TLS) fails the attempt, with an error that
    /// says which ([`ClientEvent::Reconnecting`]), and the client retries
    /// with its backoff. The handshake is bounded by
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`](crate::transport::tls::DEFAULT_HANDSHAKE_TIMEOUT)
    /// (10 s; [`TlsConnector::handshake_timeout`](crate::transport::tls::TlsConnector::handshake_timeout)
    /// sets another, through [`Client::builder`]).
    #[cfg(feature = "tls")]
    pub fn tls(
        addr: impl Into<String>,
        server_name: impl Into<String>,
        config: impl Into<Arc<crate::transport::tls::ClientConfig>>,
    ) -> ClientBuilder {
        Client::builder(crate::transport::tls::TlsConnector::tcp(
            addr,
            server_name,
            config,
        ))
    }

    /// A client over any transport.
    pub fn builder(connector: impl Connector) -> ClientBuilder {
        ClientBuilder {
            connector: Arc::new(connector),
            router: RouterBuilder::default(),
            connection: ConnectionOptions::default(),
            backoff: Backoff::default(),
            session: None,
            credentials: None,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
        }
    }

    /// The client's router: `emit`, `on`, `request`. Usable at once, across reconnections.
    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// Lifecycle events from now on. A receiver that falls more than 256
    /// events behind loses the oldest (tokio's broadcast semantics).
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.inner.events.subscribe()
    }

    /// True while a connection is up.
    pub fn is_connected(&self) -> bool {
        self.inner.life.status() == ClientStatus::Connected
    }

    /// Waits until a connection is up. Returns at once if one is; returns when
    /// the client stops otherwise.
    pub async fn connected(&self) {
        let life = &self.inner.life;
        life.wait_for(|s| (*s != ClientStatus::Connecting).then_some(()))
            .await;
    }

    /// Stops: writes what is queued if connected (within the stop timeout),
    /// closes the connection cleanly, and closes the router, so later emits
    /// fail with [`Error::Closed`](crate::Error::Closed). Idempotent. What
    /// could not be written comes in a [`ClientEvent::Lost`], what was never
    /// handed to a connection as [`ClientEvent::Stopped`]'s `unsent`.
    pub async fn stop(&self) {
        self.inner.life.stop().await;
    }
}

/// The client's task: connects, runs the connection, reconnects, until
/// stopped. It holds the client through `task`, dropped last: the status says
/// stopped once the task has done everything else, however it ends (a stop, a
/// panic, the runtime shutting down). [`Client::stop`] waits for that.
async fn run(task: Ending<ClientInner, ClientStatus>) {
    let inner = &*task;
    let mut failures: u32 = 0;
    // Connected before: the next connections are reconnections.
    let mut reconnect = false;
    loop {
        // The task's future is as large as its largest state: the connection
        // is awaited in place (through `&mut`), and nothing else that is large
        // is held across that await.
        // A client that authenticates connects, then says hello: one boxed
        // future as the connector's, so that the task's future is as small.
        let connect: crate::transport::BoxFuture<'_, _> = match inner.auth() {
            None => inner.connector.connect(),
            Some(auth) => Box::pin(auth.connect(inner)),
        };
        let mut connection = match inner.life.unless_stopped(connect).await {
            None => break,
            Some(Ok((stream, address))) => {
                let k = inner.auth().and_then(|a| a.session_credentials());
                connected(inner, &address, reconnect);
                reconnect = true;
                inner.life.set(ClientStatus::Connected);
                inner.events.send(ClientEvent::Connected { address });
                // The connection runs on this task: a client holds one task, not two.
                Ok(Connected::new(inner, stream, k))
            }
            Some(Err(error)) => {
                cannot_connect(inner, &error);
                Err(error.to_string())
            }
        };
        let error = match &mut connection {
            Err(error) => std::mem::take(error),
            Ok(connected) => {
                let Some(reason) = (&mut *connected).await else {
                    break;
                };
                let reason = match reason {
                    // A session's hello denied: the error's own words.
                    CloseReason::Io {
                        kind: std::io::ErrorKind::PermissionDenied,
                        message,
                    } => message,
                    reason => reason.to_string(),
                };
                disconnected(inner, &reason);
                inner.life.set(ClientStatus::Connecting);
                inner.events.send(ClientEvent::Disconnected {
                    reason: reason.clone(),
                });
                inner.report_loss();
                // A connection that lived a while resets the schedule and is retried
                // at once; one the server dropped right away counts as a failed
                // attempt, so a server that accepts and closes is not hammered.
                // A session's handshake that completed does too: a link that
                // flaps costs a reconnection per break, not a backoff.
                if connected.driver.handshake_completed()
                    || (inner.session().is_none()
                        && connected.since.elapsed() >= inner.backoff.initial)
                {
                    failures = 0;
                    continue;
                }
                reason
            }
        };
        // Not held across the wait: the task's future would need room for both.
        drop(connection);
        let delay = inner.backoff.delay(failures);
        failures = failures.saturating_add(1);
        backing_off(inner, failures, delay, &error);
        inner.events.send(ClientEvent::Reconnecting {
            attempt: failures,
            delay,
            error,
        });
        // Boxed: the task's future is as large as its largest state, and this
        // one would be larger than a connection's.
        let sleep = Box::pin(tokio::time::sleep(delay));
        if inner.life.unless_stopped(sleep).await.is_none() {
            break;
        }
    }
    inner.report_loss();
    let unsent = inner.router.close_counting().frames;
    inner.events.send(ClientEvent::Stopped { unsent });
    // The guard's drop sets the status to stopped, with everything else done.
}

/// A connection is up: the lifecycle event, the reconnection counted, the
/// peer named for spans. (Functions of their own, not lines of [`run`]: their
/// temporaries would grow its future.)
fn connected(inner: &ClientInner, address: &Address, reconnect: bool) {
    tracing::debug!(peer = %address, reconnect, "nmsg client connected");
    if reconnect {
        metrics::counter!(crate::observe::RECONNECTS).increment(1);
    }
    inner.router.set_peer(address, None, None);
}

fn cannot_connect(inner: &ClientInner, error: &std::io::Error) {
    let peer = || inner.connector.address();
    tracing::debug!(peer = %peer(), %error, "nmsg client cannot connect");
}

fn disconnected(inner: &ClientInner, reason: &str) {
    let peer = || inner.connector.address();
    tracing::debug!(peer = %peer(), reason, "nmsg client disconnected");
}

/// The wait before attempt `attempt`.
fn backing_off(inner: &ClientInner, attempt: u32, delay: Duration, error: &str) {
    let peer = || inner.connector.address();
    tracing::debug!(peer = %peer(), attempt, ?delay, error, "nmsg client backing off");
}

/// One connection of a client, until it ends (with the reason) or the client
/// is stopped (`None`): then it writes what is queued and closes, within the
/// stop timeout (the driver drops the connection at the bound and counts
/// what it did not write).
struct Connected<'a> {
    inner: &'a ClientInner,
    /// When it connected.
    since: tokio::time::Instant,
    driver: Driver<BoxStream>,
    /// Set at the stop request.
    stopping: bool,
}

impl<'a> Connected<'a> {
    /// `k`: the credentials for the session's hello.
    fn new(inner: &'a ClientInner, stream: BoxStream, k: Option<crate::Value>) -> Self {
        let mut driver = Driver::new(stream, inner.router.link(), inner.connection.clone());
        if let Some((session, notify)) = inner
            .session()
            .and_then(|session| Some((session, session.notify.get()?)))
        {
            let state = session.state.locked().take();
            let codec = inner.router.codec_ref().name();
            driver.set_session(Session::client(
                state,
                session.options.clone(),
                codec,
                notify.clone(),
                k,
            ));
        }
        Connected {
            inner,
            since: tokio::time::Instant::now(),
            driver,
            stopping: false,
        }
    }
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        // The session goes on to the next connection.
        if let (Some(session), Some(state)) = (self.inner.session(), self.driver.take_session()) {
            *session.state.locked() = Some(state.into_state());
        }
    }
}

impl Future for Connected<'_> {
    type Output = Option<CloseReason>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<CloseReason>> {
        let this = self.get_mut();
        if !this.stopping && this.inner.life.poll_stop(cx) {
            this.stopping = true;
            this.driver.stop(this.inner.connection.stop_bound());
        }
        let reason = std::task::ready!(this.driver.poll_run(cx));
        Poll::Ready((!this.stopping).then_some(reason))
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// tokio keeps a task's whole future in the task's allocation, with 96
    /// bytes of its own, rounded up to a multiple of 128 on x86-64: a client's
    /// task future of at most 280 bytes takes 384, one byte more takes 512.
    /// Every client holds one (`idle10k` in BENCHMARKS.md).
    /// A client's shared part is one `Arc` allocation of 16 bytes of counts
    /// and `ClientInner`; glibc serves a request of n bytes from a chunk of
    /// n + 8 rounded up to 16: up to 200 bytes of `ClientInner` take 224,
    /// 201 to 216 take 240 (`idle10k`: every client has one).
    #[test]
    fn a_client_stays_small() {
        let size = std::mem::size_of::<ClientInner>();
        assert!(size <= 200, "a client takes {size} bytes");
    }

    #[test]
    fn the_task_of_a_client_stays_small() {
        let inner = Arc::new(ClientInner::new(Client::tcp("127.0.0.1:1")));
        let size = std::mem::size_of_val(&run(Ending::new(inner)));
        assert!(size <= 280, "a client's task future takes {size} bytes");
    }
}
