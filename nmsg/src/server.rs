//! The server: binds with exponential backoff, gives every accepted
//! connection a socket with its own router, and serves them all with a shared
//! [`Api`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::auth::{
    write_ext, Authenticator, ServerAuth, DEFAULT_AUTH_TIMEOUT, DEFAULT_MAX_CREDENTIALS_SIZE,
};
use crate::backoff::Backoff;
use crate::codec::Codec;
use crate::error::Error;
use crate::handler::HandlerReturn;
use crate::lifecycle::{Ending, Events, Lifecycle, Status, DEFAULT_STOP_TIMEOUT};
use crate::router::{
    Api, BadRequestOwner, BadRequestSink, Buffering, InitialRoutes, Router, RouterBuilder,
};
use crate::session::handshake::{first_message, First, MAX_HELLO};
use crate::session::wire::Ext;
use crate::session::{Handover, Notice, Session, SessionOptions};
use crate::sync::MutexExt;
use crate::transport::{
    Accepted, Acceptor, Address, Binder, BoxFuture, BoxStream, CloseReason, Connection,
    ConnectionOptions, PeerIdentity, Tcp, Unix,
};
use crate::{Args, AuthIdentity, AuthRequest, Reject};

/// Default [`ServerBuilder::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Default [`ServerBuilder::max_buffered_bytes`]: 1 GiB.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 1 << 30;

/// How many lifecycle events a slow [`Server::events`] receiver may fall
/// behind (more than a client's: one server reports the connections of many
/// peers).
const EVENT_CAPACITY: usize = 1024;

/// Something that happened to a server.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// The server is bound and accepting.
    Started {
        /// The address it listens on (with the real port when bound to port 0).
        address: Address,
    },
    /// Binding failed in a way that retrying may fix (for example, the
    /// address is taken); the next attempt comes after `delay`.
    BindFailed {
        /// How many attempts failed in a row.
        attempt: u32,
        /// The wait before the next attempt.
        delay: Duration,
        /// Why the last attempt failed.
        error: String,
    },
    /// Binding failed in a way that retrying cannot fix (see
    /// [`Server::started`]): the server stops, and `started` gives the error.
    StartFailed {
        /// Why.
        error: String,
    },
    /// Accepting a connection failed. When the process or the system ran out
    /// of file descriptors or memory, accepting waits `delay` (growing from
    /// 10 ms to 1 s while it goes on); any other failure concerns one
    /// connection only (it was aborted before it was accepted, a socket
    /// option could not be set on it), and the next one is accepted at once
    /// (`delay` zero).
    AcceptFailed {
        /// Why.
        error: String,
        /// The wait before accepting again.
        delay: Duration,
    },
    /// A connection was accepted.
    Connected {
        /// The socket's id.
        socket: u64,
        /// The peer's address.
        peer: Address,
    },
    /// A connection was refused: the server has `max_connections` already,
    /// or the peer is not allowed ([`ServerBuilder::allow_uids`]).
    Refused {
        /// The peer's address.
        peer: Address,
        /// Why.
        reason: String,
    },
    /// A connection's handshake failed (TLS: a client that does not speak
    /// TLS, a certificate the server does not trust, no certificate where
    /// one is required, the handshake timeout); the connection is dropped.
    HandshakeFailed {
        /// The peer's address.
        peer: Address,
        /// Why, saying which check failed.
        error: String,
    },
    /// A request's arguments did not fit the typed handler of its event
    /// (`#[nmsg::events]`): the handler did not run, an error-first method
    /// answered `cb(message)`, and the socket's error hook got the error.
    BadRequest {
        /// The socket's id.
        socket: u64,
        /// The peer's address.
        peer: Address,
        /// The event.
        event: String,
        /// What did not fit.
        error: String,
    },
    /// A connection ended. What was lost with it, if anything, follows as
    /// [`ServerEvent::Lost`].
    Disconnected {
        /// The socket's id.
        socket: u64,
        /// Why.
        reason: String,
    },
    /// Frames were lost with a socket's connection when it ended (a
    /// disconnect, [`Socket::close`], the server's stop): the messages it had
    /// taken from its queue and not written whole (a message written in part
    /// is lost whole; "written" means the stream took the bytes, not that the
    /// peer read them), including what the stop timeout cut off, and every
    /// frame still in its queue. The socket's error hook gets the same count
    /// as [`Error::FramesLost`].
    Lost {
        /// The socket's id.
        socket: u64,
        /// How many frames.
        frames: usize,
        /// Their bytes as they would have gone on the wire (length prefixes
        /// and bulk headers included).
        bytes: usize,
        /// Why the connection ended.
        reason: String,
    },
    /// A connection was refused by a server that authenticates
    /// ([`ServerBuilder::authenticate`]): the authenticator rejected its
    /// credentials, its hello had none, its first message was not a hello
    /// (a client without authentication, the JavaScript original), or
    /// nothing came within the [`auth_timeout`](ServerBuilder::auth_timeout).
    /// No socket was made.
    AuthRejected {
        /// The peer's address.
        peer: Address,
        /// Why.
        reason: String,
    },
    /// A session began on a new socket (a server with sessions,
    /// [`ServerBuilder::session`]), just after its
    /// [`ServerEvent::Connected`].
    SessionStarted {
        /// The socket's id.
        socket: u64,
        /// The session id.
        session: String,
        /// The client asked to resume a session this server does not have
        /// (its window passed, or the server restarted): this is a new
        /// session instead, and the client's pending replies of the old one
        /// failed with [`Error::SessionLost`].
        expired: bool,
    },
    /// A session socket's connection broke: the socket, its router and its
    /// queue are kept for the [window](SessionOptions::window), emits to
    /// it queue, and the client may resume.
    Away {
        /// The socket's id.
        socket: u64,
        /// Why the connection broke.
        reason: String,
    },
    /// A session socket's client came back on a new connection: what it had
    /// not received is sent again, and the socket goes on.
    Resumed {
        /// The socket's id.
        socket: u64,
        /// The new connection's peer address.
        peer: Address,
        /// Messages written again (written before, not acknowledged).
        resent: usize,
    },
    /// A session socket's window passed without the client coming back:
    /// the socket ends ([`ServerEvent::Disconnected`] follows, and
    /// [`ServerEvent::Lost`] with what was still queued).
    SessionExpired {
        /// The socket's id.
        socket: u64,
    },
    /// The server stopped.
    Stopped,
}

type SocketHook = Arc<dyn Fn(Socket) + Send + Sync>;

/// Options of a [`Server`]; [`Server::tcp`], [`Server::unix`] or [`Server::builder`].
#[must_use = "a ServerBuilder does nothing until `start` is called"]
pub struct ServerBuilder {
    binder: Arc<dyn Binder>,
    router: RouterBuilder,
    connection: ConnectionOptions,
    backoff: Backoff,
    max_connections: usize,
    api: Api,
    stop_timeout: Duration,
    session: Option<SessionOptions>,
    authenticator: Option<Authenticator>,
    auth_timeout: Duration,
    max_credentials_size: usize,
    allowed_uids: Option<Box<[u32]>>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("address", &self.binder.address())
            .field("router", &self.router)
            .field("backoff", &self.backoff)
            .field("max_connections", &self.max_connections)
            .field("authenticates", &self.authenticator.is_some())
            .field("allowed_uids", &self.allowed_uids)
            .finish()
    }
}

impl ServerBuilder {
    /// The codec (default MsgPack). Clients must use the same.
    pub fn codec(mut self, codec: impl Codec) -> Self {
        self.router = self.router.codec(codec);
        self
    }

    /// Bulk buffering of each socket's outgoing frames (default
    /// [`Buffering::Idle`]: bulk messages, as the original's TCP server sends, without its 10 ms delay).
    pub fn buffering(mut self, buffering: Buffering) -> Self {
        self.router = self.router.buffering(buffering);
        self
    }

    /// The bind retry schedule (default [`Backoff::default`]).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// At most this many connections at once (default
    /// [`DEFAULT_MAX_CONNECTIONS`], 10,000), those still in their handshake
    /// (TLS, or a server with sessions or authentication) included; further
    /// ones are closed at once and reported as [`ServerEvent::Refused`].
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// The largest message a socket sends or accepts (default 16 MiB); a peer
    /// that announces a larger one is disconnected.
    pub fn max_message_size(mut self, max: usize) -> Self {
        self.router = self.router.max_message_size(max);
        self
    }

    /// How many received messages each socket handles before it writes what
    /// their handlers queued, when more have arrived (see
    /// [`ConnectionOptions::dispatch_burst`]).
    pub fn dispatch_burst(mut self, messages: usize) -> Self {
        self.connection = self.connection.dispatch_burst(messages);
        self
    }

    /// How long a message may take to arrive whole once its first byte has
    /// (default 30 s); past it each socket closes (see
    /// [`ConnectionOptions::partial_message_timeout`]).
    pub fn partial_message_timeout(mut self, timeout: Duration) -> Self {
        self.connection = self.connection.partial_message_timeout(timeout);
        self
    }

    /// At most this many bytes buffered by all the sockets together (default
    /// [`DEFAULT_MAX_BUFFERED_BYTES`], 1 GiB): the buffers of large messages
    /// being received and of large writes not written yet, beyond one read
    /// buffer (8 KiB) per socket. Over it, sockets that need more wait: see
    /// [`ConnectionOptions::max_buffered_bytes`]. Keep it above the largest
    /// message size (16 MiB by default) times the large messages expected at
    /// once.
    pub fn max_buffered_bytes(mut self, max: usize) -> Self {
        self.connection = self.connection.max_buffered_bytes(max);
        self
    }

    /// Closes each socket when no byte has arrived for this long (default: none;
    /// see [`ConnectionOptions::idle_timeout`]).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.connection = self.connection.idle_timeout(timeout);
        self
    }

    /// The shared handler table that serves every socket (default: an empty
    /// one, reachable with [`Server::api`]). Takes an [`Api`] or anything that
    /// converts into one, such as the `<Trait>Api` that `#[nmsg::events]` generates.
    pub fn api(mut self, api: impl Into<Api>) -> Self {
        self.api = api.into();
        self
    }

    /// How long [`Server::stop`] and [`Socket::close`] may spend closing a
    /// socket (default 5 s): writing what it has queued, shutting the stream
    /// down, and reading (and discarding) what the peer still sends until it
    /// closes its side. At the bound the connection is dropped; what it did
    /// not write is reported in a [`ServerEvent::Lost`].
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Serves clients with sessions (default: none, plain sockets only):
    /// a client that opens its connection with a hello gets a session
    /// socket, which is kept for the [window](SessionOptions::window) when
    /// its connection breaks, so that the client can resume it. Plain
    /// clients are served as by a server without sessions, but that their
    /// socket is made once their first message arrived, or after the
    /// [hello wait](SessionOptions::hello_wait). A session socket lives as
    /// long as its session: [`Socket::closed`] waits for the session's end
    /// (the window passed, [`Socket::close`], the server's stop), not for
    /// a connection's.
    pub fn session(mut self, options: SessionOptions) -> Self {
        self.session = Some(options);
        self
    }

    /// Serves only clients that authenticate (default: any client): the
    /// first message of a connection must be a hello with credentials
    /// ([`ClientBuilder::credentials`](crate::ClientBuilder::credentials)),
    /// which `check` accepts, with the [`AuthIdentity`] handlers read
    /// ([`Socket::auth_identity`], [`Router::auth_identity`],
    /// [`Peer::auth_identity`](crate::Peer::auth_identity)), or rejects: the
    /// client is told the reason in a `deny` frame and the connection
    /// closes. A client that sends anything else first (an nmsg client
    /// without credentials, the JavaScript original), or nothing within the
    /// [`auth_timeout`](Self::auth_timeout), is refused. Every refusal is a
    /// [`ServerEvent::AuthRejected`] with its reason, and a warning in the
    /// logs. No socket is made, and no handler runs, before `check` accepts.
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() {
    /// use nmsg::{AuthIdentity, AuthRequest, Reject};
    /// let server = nmsg::Server::tcp("127.0.0.1:8081")
    ///     .authenticate(|request: AuthRequest| async move {
    ///         match request.credentials.as_str() {
    ///             Some("secret") => Ok(Some(AuthIdentity::new("ann".to_string()))),
    ///             _ => Err(Reject::new("unknown token")),
    ///         }
    ///     })
    ///     .start();
    /// # server.stop().await;
    /// # }
    /// ```
    pub fn authenticate<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn(AuthRequest) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Option<AuthIdentity>, Reject>> + Send + 'static,
    {
        self.authenticator = Some(Arc::new(move |request| Box::pin(check(request))));
        self
    }

    /// How long a server that authenticates gives a new connection to be
    /// accepted (default 5 s, [`DEFAULT_AUTH_TIMEOUT`](crate::DEFAULT_AUTH_TIMEOUT)):
    /// its hello to arrive and the authenticator to answer. Past it the
    /// connection is refused.
    pub fn auth_timeout(mut self, timeout: Duration) -> Self {
        self.auth_timeout = timeout;
        self
    }

    /// The largest hello a server that authenticates reads, credentials
    /// included (default 64 KiB,
    /// [`DEFAULT_MAX_CREDENTIALS_SIZE`](crate::DEFAULT_MAX_CREDENTIALS_SIZE));
    /// a larger first message is refused from its length prefix alone.
    pub fn max_credentials_size(mut self, max: usize) -> Self {
        self.max_credentials_size = max;
        self
    }

    /// Serves only peers whose Unix credentials name one of these user ids
    /// (default: any peer). For Unix socket servers, where the system says
    /// which user the peer process runs as ([`PeerIdentity::Unix`]); a peer
    /// of another transport has no uid, and is refused too. A refused peer
    /// is closed at once, reported as [`ServerEvent::Refused`] with the
    /// reason, and logged.
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() {
    /// // Only processes of the user this server runs as.
    /// let me = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap();
    /// let server = nmsg::Server::unix("/tmp/app.sock").allow_uids([me]).start();
    /// # }
    /// ```
    pub fn allow_uids(mut self, uids: impl IntoIterator<Item = u32>) -> Self {
        self.allowed_uids = Some(uids.into_iter().collect());
        self
    }

    /// Any other option of the sockets' routers (timeouts, bounds), set on
    /// the server's own router options, so that what was set before and the
    /// server's defaults stay: `.router(|r| r.max_pending(100))`.
    pub fn router(mut self, edit: impl FnOnce(RouterBuilder) -> RouterBuilder) -> Self {
        self.router = edit(self.router);
        self
    }

    /// Starts the server and returns at once: it binds in the background,
    /// retrying with backoff. Needs a tokio runtime.
    pub fn start(self) -> Server {
        let inner = Arc::new_cyclic(|me: &std::sync::Weak<ServerInner>| ServerInner {
            routes: InitialRoutes::with_api(self.api.clone()),
            api: self.api,
            bad_request: Arc::new(BadRequestSink(
                me.clone() as std::sync::Weak<dyn BadRequestOwner>
            )),
            router: self.router,
            connection: self.connection.stop_timeout(self.stop_timeout),
            max_connections: self.max_connections,
            allowed_uids: self.allowed_uids,
            sockets: Mutex::new(Sockets::default()),
            life: Lifecycle::new(ServerStatus::Binding),
            events: Events::new(EVENT_CAPACITY),
            next_id: AtomicU64::new(1),
            handshakes: std::sync::atomic::AtomicUsize::new(0),
            sessions: self.session.map(|options| {
                Box::new(Sessions {
                    options: Arc::new(options),
                    table: Mutex::new(HashMap::new()),
                })
            }),
            auth: self.authenticator.map(|check| {
                Box::new(ServerAuth {
                    check,
                    timeout: self.auth_timeout,
                    max_hello: self.max_credentials_size,
                })
            }),
        });
        tokio::spawn(run(Ending::new(inner.clone()), self.binder, self.backoff));
        Server { inner }
    }
}

#[derive(Debug, Clone)]
enum ServerStatus {
    Binding,
    Listening(Address),
    /// Binding failed in a way retrying cannot fix; the server stopped.
    Failed {
        address: String,
        error: Arc<std::io::Error>,
    },
    Stopped,
}

impl Status for ServerStatus {
    const ENDED: Self = ServerStatus::Stopped;
}

impl ServerStatus {
    fn address(&self) -> Option<Address> {
        match self {
            ServerStatus::Listening(address) => Some(address.clone()),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Sockets {
    live: HashMap<u64, Socket>,
    hook: Option<SocketHook>,
}

struct ServerInner {
    api: Api,
    /// The routes every socket's router starts with (the `api`), one table
    /// that they share until a socket sets its own handlers.
    routes: InitialRoutes,
    /// Sends [`ServerEvent::BadRequest`]; every socket's router has it.
    bad_request: Arc<BadRequestSink>,
    /// The options of every socket's router (one copy, which they share).
    router: RouterBuilder,
    /// The options of every socket's connection.
    connection: ConnectionOptions,
    max_connections: usize,
    /// [`ServerBuilder::allow_uids`].
    allowed_uids: Option<Box<[u32]>>,
    sockets: Mutex<Sockets>,
    /// The status, stopped by [`Server::stop`].
    life: Lifecycle<ServerStatus>,
    events: Events<ServerEvent>,
    next_id: AtomicU64,
    /// Connections in a handshake (TLS's, or the wait for a first message: a
    /// hello, credentials): they count toward `max_connections`, so that
    /// silent peers cannot pile up tasks while they wait out a handshake
    /// timeout, the auth timeout or the hello wait.
    handshakes: std::sync::atomic::AtomicUsize,
    /// A server with sessions: their options, and the live ones.
    sessions: Option<Box<Sessions>>,
    /// A server that authenticates.
    auth: Option<Box<ServerAuth>>,
}

/// A server's sessions: their options, and the hand-over of each live
/// session's socket by session id, with the socket's id.
struct Sessions {
    options: Arc<SessionOptions>,
    table: Mutex<HashMap<String, (u64, Arc<Handover>)>>,
}

impl AsRef<Lifecycle<ServerStatus>> for ServerInner {
    fn as_ref(&self) -> &Lifecycle<ServerStatus> {
        &self.life
    }
}

/// One accepted connection: its router, its peer, its id.
#[derive(Clone)]
pub struct Socket {
    id: u64,
    peer: Address,
    conn: Arc<Connection>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("identity", &self.identity())
            .finish()
    }
}

impl Socket {
    /// The socket's id, unique within its server.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The peer's address.
    pub fn peer(&self) -> &Address {
        &self.peer
    }

    /// Who the peer authenticated as: what the server's authenticator
    /// attached ([`ServerBuilder::authenticate`]). Handlers read the same
    /// through [`Router::auth_identity`] and
    /// [`Peer::auth_identity`](crate::Peer::auth_identity).
    pub fn auth_identity(&self) -> Option<Arc<AuthIdentity>> {
        self.router().auth_identity()
    }

    /// What the transport verified about the peer: the certificate of a
    /// mutual TLS client ([`PeerIdentity::Certificate`]), the credentials of
    /// a Unix socket's peer process ([`PeerIdentity::Unix`]). Handlers read
    /// the same through [`Router::peer_identity`] and
    /// [`Peer::identity`](crate::Peer::identity).
    pub fn identity(&self) -> Option<Arc<PeerIdentity>> {
        self.router().peer_identity()
    }

    /// The socket's router: `emit` to this peer, `on` for this peer only.
    pub fn router(&self) -> &Router {
        self.conn.router()
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// Waits until the connection ends, and says why.
    pub async fn closed(&self) -> CloseReason {
        self.conn.closed().await
    }

    /// Closes the connection gracefully, within the server's
    /// [`stop_timeout`](ServerBuilder::stop_timeout), as
    /// [`Connection::close`] does: what it could not write by then is
    /// reported in a [`ServerEvent::Lost`].
    pub async fn close(&self) -> CloseReason {
        self.conn.close().await
    }
}

/// A server: accepts connections and serves each with its own router.
///
/// It runs until [`Server::stop`] is called; dropping its handles does not stop it.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() {
/// let server = nmsg::Server::tcp("127.0.0.1:8081").start();
/// server.on("ping", |_args: nmsg::Args| println!("Ping received!"));
/// server.on_socket(|socket| {
///     let _ = socket.router().emit("welcome", ("hello",));
/// });
/// # server.stop().await;
/// # }
/// ```
#[derive(Clone)]
pub struct Server {
    inner: Arc<ServerInner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("status", &self.inner.life)
            .field("sockets", &self.socket_count())
            .finish()
    }
}

impl Server {
    /// A TCP server on `addr` (`host:port`; port 0 picks a free port, see [`Server::started`]).
    pub fn tcp(addr: impl Into<String>) -> ServerBuilder {
        Server::builder(Tcp::new(addr))
    }

    /// A Unix domain socket server on `path`. Each socket has the peer
    /// process's credentials ([`Socket::identity`]); see also
    /// [`ServerBuilder::allow_uids`].
    pub fn unix(path: impl Into<std::path::PathBuf>) -> ServerBuilder {
        Server::builder(Unix::new(path))
    }

    /// A TLS server over TCP on `addr` (feature `tls`), with this rustls
    /// configuration ([`tls::server_config`](crate::transport::tls::server_config)
    /// builds one from PEM files). The handshake is bounded by
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`](crate::transport::tls::DEFAULT_HANDSHAKE_TIMEOUT)
    /// (10 s; [`TlsBinder::handshake_timeout`](crate::transport::tls::TlsBinder::handshake_timeout)
    /// sets another, through [`Server::builder`]). With mutual TLS, each
    /// socket has the client's verified certificate ([`Socket::identity`]).
    #[cfg(feature = "tls")]
    pub fn tls(
        addr: impl Into<String>,
        config: impl Into<Arc<crate::transport::tls::ServerConfig>>,
    ) -> ServerBuilder {
        Server::builder(crate::transport::tls::TlsBinder::tcp(addr, config))
    }

    /// A server over any transport.
    pub fn builder(binder: impl Binder) -> ServerBuilder {
        ServerBuilder {
            binder: Arc::new(binder),
            router: RouterBuilder::default().buffering(Buffering::Idle),
            connection: ConnectionOptions::default().max_buffered_bytes(DEFAULT_MAX_BUFFERED_BYTES),
            backoff: Backoff::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            api: Api::new(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            session: None,
            authenticator: None,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            max_credentials_size: DEFAULT_MAX_CREDENTIALS_SIZE,
            allowed_uids: None,
        }
    }

    /// The shared handler table that serves every socket.
    pub fn api(&self) -> &Api {
        &self.inner.api
    }

    /// Sets the handler for `event` in the shared [`Api`], for every socket.
    pub fn on<F, R, M>(&self, event: impl Into<String>, handler: F) -> &Self
    where
        F: Fn(Args) -> R + Send + Sync + 'static,
        R: HandlerReturn<M>,
        M: 'static,
    {
        self.inner.api.on(event, handler);
        self
    }

    /// Calls `hook` with every socket: the ones already connected now, and each
    /// new one as it is accepted. Replaces an earlier hook.
    pub fn on_socket<F>(&self, hook: F)
    where
        F: Fn(Socket) + Send + Sync + 'static,
    {
        let hook: SocketHook = Arc::new(hook);
        let existing: Vec<Socket> = {
            let mut sockets = self.inner.sockets.locked();
            sockets.hook = Some(hook.clone());
            sockets.live.values().cloned().collect()
        };
        for socket in existing {
            hook(socket);
        }
    }

    /// The sockets connected now.
    pub fn sockets(&self) -> Vec<Socket> {
        let sockets = self.inner.sockets.locked();
        sockets.live.values().cloned().collect()
    }

    /// The number of sockets connected now.
    pub fn socket_count(&self) -> usize {
        self.inner.sockets.locked().live.len()
    }

    /// Emits `event` to every connected socket; returns how many it was queued for.
    pub fn broadcast<A>(&self, event: &str, args: A) -> usize
    where
        A: Clone + for<'a> crate::IntoArgs<'a>,
    {
        self.sockets()
            .iter()
            .filter(|s| s.router().emit(event, args.clone()).is_ok())
            .count()
    }

    /// Lifecycle events from now on (started, bind failures, connections,
    /// stopped). A receiver that falls more than 1024 events behind loses the
    /// oldest (tokio's broadcast semantics).
    pub fn events(&self) -> broadcast::Receiver<ServerEvent> {
        self.inner.events.subscribe()
    }

    /// Waits until the server listens, and gives its address.
    ///
    /// Binding is retried with the server's backoff while retrying may help:
    /// the address is in use (another server holds it), or another error that
    /// may pass (too many open files, no buffer space, an interrupted call,
    /// any other error of a binder of one's own). It is not retried, and this
    /// gives [`Error::Bind`] with the cause, when retrying cannot fix it:
    ///
    /// - the name does not resolve (also when no name service is reachable),
    ///   or resolves to no address;
    /// - permission denied (`EACCES`, `EPERM`: a privileged port, a directory
    ///   the process may not write);
    /// - the address is not one of this machine's (`EADDRNOTAVAIL`);
    /// - the address is not valid (`EINVAL`, text that is not `host:port`),
    ///   or not supported;
    /// - a Unix socket's directory does not exist, is not a directory, or is
    ///   on a read-only file system.
    ///
    /// Gives [`Error::Closed`] if the server was stopped before it listened,
    /// and after it stopped.
    pub async fn started(&self) -> Result<Address, Error> {
        let life = &self.inner.life;
        life.wait_for(|s| match s {
            ServerStatus::Binding => None,
            ServerStatus::Listening(address) => Some(Ok(address.clone())),
            ServerStatus::Failed { address, error } => Some(Err(Error::Bind {
                address: address.clone(),
                source: error.clone(),
            })),
            ServerStatus::Stopped => Some(Err(Error::Closed)),
        })
        .await
    }

    /// The address it listens on, if it is listening.
    pub fn local_addr(&self) -> Option<Address> {
        self.inner.life.status().address()
    }

    /// Stops: no more connections are accepted, every socket writes what it
    /// has queued, shuts its side down and reads (discarding) until the peer
    /// closes its side, within the stop timeout, and closes. What a socket
    /// could not write is reported in a [`ServerEvent::Lost`]. Idempotent.
    pub async fn stop(&self) {
        self.inner.life.stop().await;
    }
}

/// The server's task: binds, accepts, until stopped. It holds the server
/// through `inner`, dropped last (parameters drop in reverse order): the
/// status says stopped once the task has done everything else, however it
/// ends. [`Server::stop`] waits for that.
async fn run(inner: Ending<ServerInner, ServerStatus>, binder: Arc<dyn Binder>, backoff: Backoff) {
    let life = &inner.life;
    let emit = |e: ServerEvent| inner.events.send(e);
    let mut failures = 0u32;
    let mut acceptor: Box<dyn Acceptor> = loop {
        let Some(attempt) = life.unless_stopped(binder.bind()).await else {
            return finish(&inner, None).await;
        };
        match attempt {
            Ok(acceptor) => break acceptor,
            Err(error) if !retrying_may_fix(&error) => {
                let address = binder.address();
                tracing::warn!(%address, %error, "nmsg server cannot bind, and retrying cannot fix it");
                emit(ServerEvent::StartFailed {
                    error: error.to_string(),
                });
                finish(&inner, None).await;
                life.end(ServerStatus::Failed {
                    address,
                    error: Arc::new(error),
                });
                return;
            }
            Err(error) => {
                let delay = backoff.delay(failures);
                failures = failures.saturating_add(1);
                tracing::debug!(address = %binder.address(), attempt = failures, ?delay, %error, "nmsg server cannot bind");
                emit(ServerEvent::BindFailed {
                    attempt: failures,
                    delay,
                    error: error.to_string(),
                });
                if life
                    .unless_stopped(tokio::time::sleep(delay))
                    .await
                    .is_none()
                {
                    return finish(&inner, None).await;
                }
            }
        }
    };
    let address = acceptor.local_addr();
    tracing::debug!(%address, "nmsg server listening");
    life.set(ServerStatus::Listening(address.clone()));
    emit(ServerEvent::Started { address });
    // Failures in a row: of resource exhaustion (they grow the wait), and
    // of any kind (a listener that fails every time is not spun on).
    let mut exhausted = 0u32;
    let mut in_a_row = 0u32;
    // Connections accepted: each one's place in the order (a resuming
    // client's newest connection is the one it uses, see `Handover`).
    let mut order = 0u64;
    loop {
        let Some(accepted) = life.unless_stopped(acceptor.accept_peer()).await else {
            break;
        };
        match accepted {
            Ok(accepted) => {
                exhausted = 0;
                in_a_row = 0;
                order += 1;
                let open =
                    inner.sockets.locked().live.len() + inner.handshakes.load(Ordering::Relaxed);
                let full = open >= inner.max_connections;
                if full {
                    let peer = match accepted {
                        Accepted::Ready { peer, .. } | Accepted::Handshake { peer, .. } => peer,
                    };
                    let reason = format!(
                        "the server has {} connections, its limit (max_connections)",
                        inner.max_connections
                    );
                    tracing::warn!(%peer, limit = inner.max_connections, "nmsg server refused a connection: at its limit");
                    metrics::counter!(crate::observe::CONNECTIONS_REFUSED).increment(1);
                    emit(ServerEvent::Refused { peer, reason });
                    continue;
                }
                match accepted {
                    Accepted::Ready {
                        stream,
                        peer,
                        identity,
                    } => admit(inner.shared(), stream, peer, identity, order),
                    Accepted::Handshake { peer, handshake } => {
                        inner.handshakes.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(handshake_then_admit(
                            inner.shared().clone(),
                            peer,
                            handshake,
                            order,
                        ));
                    }
                }
            }
            Err(error) => {
                in_a_row = in_a_row.saturating_add(1);
                // Out of file descriptors or memory: wait a little, growing,
                // for some to be freed. Anything else concerns the one
                // connection (aborted before it was accepted, a socket option
                // that could not be set): accept the next at once.
                let delay = if is_exhaustion(&error) || in_a_row > SPIN_LIMIT {
                    let delay = ACCEPT_BACKOFF.delay(exhausted);
                    exhausted = exhausted.saturating_add(1);
                    tracing::warn!(%error, ?delay, "nmsg server accept failed");
                    delay
                } else {
                    tracing::debug!(%error, "nmsg server accept failed for one connection");
                    Duration::ZERO
                };
                emit(ServerEvent::AcceptFailed {
                    error: error.to_string(),
                    delay,
                });
                let wait = async {
                    if delay.is_zero() {
                        // Lets the rest of the runtime run between failures.
                        tokio::task::yield_now().await
                    } else {
                        tokio::time::sleep(delay).await
                    }
                };
                if life.unless_stopped(wait).await.is_none() {
                    break;
                }
            }
        }
    }
    finish(&inner, Some(acceptor)).await;
}

/// The wait after an accept that failed for want of file descriptors or
/// memory: 10 ms, doubling up to 1 s while it goes on.
const ACCEPT_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(10),
    factor: 2.0,
    max: Duration::from_secs(1),
    jitter: 0.0,
    seed: None,
};

/// Accept failures of one connection each, in a row, beyond which they wait
/// as resource exhaustion does: a listener that fails every time is not spun on.
const SPIN_LIMIT: u32 = 1_000;

/// `errno` values of resource exhaustion (the same on Linux, macOS and the
/// BSDs, but for `ENOBUFS`).
#[cfg(unix)]
mod errno {
    pub(super) const ENFILE: i32 = 23;
    pub(super) const EMFILE: i32 = 24;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) const ENOBUFS: i32 = 105;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) const ENOBUFS: i32 = 55;
}

/// True when an accept failed because the process or the system ran out of
/// file descriptors (`EMFILE`, `ENFILE`), buffer space (`ENOBUFS`) or memory.
fn is_exhaustion(error: &std::io::Error) -> bool {
    if error.kind() == std::io::ErrorKind::OutOfMemory {
        return true;
    }
    #[cfg(unix)]
    {
        matches!(
            error.raw_os_error(),
            Some(errno::ENFILE | errno::EMFILE | errno::ENOBUFS)
        )
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Whether a failed bind may succeed when tried again (see
/// [`Server::started`] for which errors are which).
fn retrying_may_fix(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    match error.kind() {
        PermissionDenied | AddrNotAvailable | InvalidInput | Unsupported | NotFound
        | NotADirectory | ReadOnlyFilesystem => false,
        AddrInUse | Interrupted | WouldBlock | TimedOut | OutOfMemory | Other => true,
        // The other errors of the system (too many open files, no buffer
        // space, ...) may pass. Without a code of the system, and of no kind
        // a binder of one's own would pick, it is the name service's: the
        // name does not resolve (std: "failed to lookup address information").
        _ => error.raw_os_error().is_some(),
    }
}

/// Sends a [`ServerEvent::BadRequest`] for a request one of the server's
/// sockets refused.
impl BadRequestOwner for ServerInner {
    fn bad_request(&self, router: &Router, event: &str, error: &Error) {
        // Rare: a look through the live sockets finds the one of the router.
        let socket = self
            .sockets
            .locked()
            .live
            .values()
            .find(|s| s.router().same(router))
            .map(|s| (s.id, s.peer.clone()));
        if let Some((socket, peer)) = socket {
            self.events.send(ServerEvent::BadRequest {
                socket,
                peer,
                event: event.to_owned(),
                error: error.to_string(),
            });
        }
    }
}

/// A server with sessions or authentication: the first message of a new
/// connection decides (a hello for a session, anything else, or nothing
/// within the hello wait, for a plain socket); a hello that resumes a live
/// session hands the stream to its socket. With authentication, the hello
/// must come within the auth timeout with credentials the authenticator
/// accepts; anything else is refused. `order`: the connection's place in
/// the order of acceptance.
async fn handshake(
    inner: Arc<ServerInner>,
    stream: BoxStream,
    peer: Address,
    transport_identity: Option<Arc<PeerIdentity>>,
    order: u64,
) {
    /// The handshake ends (a socket counts from then on), however it ends.
    struct Counted<'a>(&'a ServerInner);
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.handshakes.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let _counted = Counted(&inner);
    let codec = inner.router.codec_name();
    let (wait, max) = match (&inner.auth, &inner.sessions) {
        (Some(auth), _) => (auth.timeout, auth.max_hello),
        (None, Some(sessions)) => (sessions.options.hello_wait, MAX_HELLO),
        (None, None) => return,
    };
    let begun = tokio::time::Instant::now();
    let first = first_message(stream, wait, codec, max).await;
    if inner.life.is_raised(crate::lifecycle::STOP) {
        return;
    }
    let (s, n, plain, mut stream, identity) = match (first, &inner.auth) {
        (First::Gone, None) => return,
        (First::Plain(stream) | First::Silent(stream), None) => {
            return accept(&inner, stream, peer, None, None, transport_identity)
        }
        (First::Gone, Some(_)) => {
            return refuse_auth(&inner, peer, "the connection ended before its hello".into())
        }
        (First::Plain(_), Some(_)) => {
            return refuse_auth(
                &inner,
                peer,
                "its first message was not a hello with credentials (a client without \
                 authentication: an nmsg client without credentials, or the JavaScript \
                 original), and this server requires authentication"
                    .into(),
            )
        }
        (First::Silent(_), Some(auth)) => {
            return refuse_auth(
                &inner,
                peer,
                format!(
                    "no hello with credentials within {:?} (auth_timeout), and this server \
                     requires authentication",
                    auth.timeout
                ),
            )
        }
        (
            First::Hello {
                s,
                n,
                k,
                plain,
                mut stream,
            },
            auth,
        ) => {
            let identity = match auth {
                None => None,
                Some(auth) => match auth.verdict(k, &peer, begun).await {
                    Ok(identity) => identity.map(Arc::new),
                    Err(reject) => {
                        let deny = Ext::Deny(reject.reason().to_owned());
                        let _ = write_ext(&mut stream, codec, &deny, auth.timeout).await;
                        return refuse_auth(&inner, peer, reject.reason().to_owned());
                    }
                },
            };
            (s, n, plain, stream, identity)
        }
    };
    // The verdict may come after the server's stop: nobody is served then.
    if inner.life.is_raised(crate::lifecycle::STOP) {
        return;
    }
    let Some(sessions) = inner.sessions.as_ref().filter(|_| !plain) else {
        // A welcome without a session, then a plain socket.
        let bound = inner.auth.as_ref().map_or(wait, |a| a.timeout);
        if write_ext(&mut stream, codec, &Ext::Admit, bound)
            .await
            .is_ok()
            && !inner.life.is_raised(crate::lifecycle::STOP)
        {
            accept(&inner, stream, peer, None, identity, transport_identity);
        }
        return;
    };
    let mut expired = false;
    if let Some(s) = s {
        let handover = sessions.table.locked().get(&s).map(|(_, h)| h.clone());
        if let Some(handover) = handover {
            // Given back when the session has just ended: a new one.
            match handover.give(Box::new(stream), n, peer.clone(), order) {
                Ok(()) => return,
                Err(back) => match back.downcast::<BoxStream>() {
                    Ok(back) => stream = *back,
                    Err(_) => return,
                },
            }
        }
        expired = true;
    }
    let session = NewSession { expired, order };
    accept(
        &inner,
        stream,
        peer,
        Some(session),
        identity,
        transport_identity,
    );
}

/// A connection refused by a server that authenticates: reported and logged.
fn refuse_auth(inner: &ServerInner, peer: Address, reason: String) {
    tracing::warn!(%peer, %reason, "nmsg server refused a connection: authentication");
    inner
        .events
        .send(ServerEvent::AuthRejected { peer, reason });
}

/// Runs the handshake of an accepted stream (on a task of its own: a slow
/// peer holds up no other), then serves it; a failed handshake is reported.
async fn handshake_then_admit(
    inner: Arc<ServerInner>,
    peer: Address,
    handshake: BoxFuture<'static, std::io::Result<(BoxStream, Option<PeerIdentity>)>>,
    order: u64,
) {
    // Not `life.unless_stopped`: the stop request wakes one task, the
    // server's. A handshake that ends after the stop is not served
    // (`accept`); one in flight then ends within its own bound.
    let done = handshake.await;
    inner.handshakes.fetch_sub(1, Ordering::Relaxed);
    match done {
        Ok((stream, identity)) => admit(&inner, stream, peer, identity, order),
        Err(error) => {
            tracing::warn!(%peer, %error, "nmsg server: a connection's handshake failed");
            inner.events.send(ServerEvent::HandshakeFailed {
                peer,
                error: error.to_string(),
            });
        }
    }
}

/// Serves an accepted stream whose peer the server allows; refuses it
/// otherwise (closes it, and reports why).
fn admit(
    inner: &Arc<ServerInner>,
    stream: BoxStream,
    peer: Address,
    identity: Option<PeerIdentity>,
    order: u64,
) {
    if let Some(allowed) = &inner.allowed_uids {
        let uid = identity.as_ref().and_then(|i| i.unix()).map(|c| c.uid);
        let refused = match uid {
            Some(uid) if allowed.contains(&uid) => None,
            Some(uid) => Some(format!(
                "the peer's uid {uid} is not one of the allowed uids {allowed:?} (allow_uids)"
            )),
            None => Some(format!(
                "the peer has no Unix credentials, and only uids {allowed:?} are allowed \
                 (allow_uids applies to Unix socket servers)"
            )),
        };
        if let Some(reason) = refused {
            tracing::warn!(%peer, %reason, "nmsg server refused a connection");
            metrics::counter!(crate::observe::CONNECTIONS_REFUSED).increment(1);
            drop(stream);
            inner.events.send(ServerEvent::Refused { peer, reason });
            return;
        }
    }
    let identity = identity.map(Arc::new);
    if inner.sessions.is_some() || inner.auth.is_some() {
        inner.handshakes.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(handshake(inner.clone(), stream, peer, identity, order));
    } else {
        accept(inner, stream, peer, None, None, identity);
    }
}

/// A new session, for [`accept`]: whether the client asked to resume a
/// session this server does not have, and the place of its first
/// connection in the order of acceptance.
struct NewSession {
    expired: bool,
    order: u64,
}

/// Makes the socket of an accepted connection; `session`: a session socket
/// (a [`NewSession`]); `auth`: who the peer authenticated as; `identity`:
/// what the transport verified about it.
fn accept(
    inner: &Arc<ServerInner>,
    stream: BoxStream,
    peer: Address,
    session: Option<NewSession>,
    auth: Option<Arc<AuthIdentity>>,
    identity: Option<Arc<PeerIdentity>>,
) {
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    let router = inner.router.build_with(&inner.routes);
    router.set_peer(&peer, identity, auth);
    tracing::debug!(%peer, socket = id, "nmsg server accepted a connection");
    metrics::gauge!(crate::observe::CONNECTIONS).increment(1.0);
    // Reported at the socket's end, with what is still queued (`on_close`).
    router.keep_losses();
    router.set_owner(inner.bad_request.clone());
    let mut started = None;
    let session = match (session, &inner.sessions) {
        (Some(NewSession { expired, order }), Some(sessions)) => {
            let handover = Handover::new(order);
            let session_id = crate::session::new_id();
            sessions
                .table
                .locked()
                .insert(session_id.clone(), (id, handover.clone()));
            started = Some(ServerEvent::SessionStarted {
                socket: id,
                session: session_id.clone(),
                expired,
            });
            Some(Session::server(
                sessions.options.clone(),
                router.codec_ref().name(),
                session_notices(inner, id),
                handover,
                session_id,
                expired,
            ))
        }
        _ => None,
    };
    // Held until the on_socket hook has set its handlers, so that no message
    // from this peer is routed before them.
    let (conn, start) = Connection::spawn_held_then(
        stream,
        router,
        inner.connection.clone(),
        on_close(inner, id),
        session,
    );
    let conn = Arc::new(conn);
    let socket = Socket {
        id,
        peer: peer.clone(),
        conn: conn.clone(),
    };
    let hook = {
        let mut sockets = inner.sockets.locked();
        // After a handshake, on a task of its own, the server may be
        // stopping: its end closes the sockets it finds under this lock,
        // after the stop request, so one that comes later is not served.
        if inner.life.is_raised(crate::lifecycle::STOP) {
            drop(sockets);
            // Aborted before it started: its `on_close` does not run.
            conn.abort();
            metrics::gauge!(crate::observe::CONNECTIONS).decrement(1.0);
            return;
        }
        sockets.live.insert(id, socket.clone());
        sockets.hook.clone()
    };
    inner
        .events
        .send(ServerEvent::Connected { socket: id, peer });
    if let Some(started) = started {
        inner.events.send(started);
    }
    if let Some(hook) = hook {
        if let Err(panic) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(socket.clone())))
        {
            socket.router().report(Error::HandlerPanicked {
                what: crate::error::Panicked::SocketHook,
                event: String::new(),
                message: crate::handler::panic_message(&*panic),
            });
        }
    }
    start.start();
}

/// Where the notices of socket `id`'s session go: the server's events.
fn session_notices(inner: &Arc<ServerInner>, socket: u64) -> crate::session::Notify {
    let watcher = Arc::downgrade(inner);
    Arc::new(move |notice| {
        let Some(inner) = watcher.upgrade() else {
            return;
        };
        let event = match notice {
            Notice::Away { reason } => ServerEvent::Away { socket, reason },
            Notice::Resumed { resent, peer, .. } => ServerEvent::Resumed {
                socket,
                peer: peer.unwrap_or_else(|| Address::Other(String::new())),
                resent,
            },
            Notice::Expired => ServerEvent::SessionExpired { socket },
            Notice::Started { .. } | Notice::Lost { .. } | Notice::Denied { .. } => return,
        };
        inner.events.send(event);
    })
}

/// The bookkeeping when socket `id` ends, run on its connection's task.
fn on_close(
    inner: &Arc<ServerInner>,
    id: u64,
) -> impl FnOnce(&Router, &CloseReason) + Send + Unpin + 'static {
    let watcher = Arc::downgrade(inner);
    move |router: &Router, reason: &CloseReason| {
        // What the connection lost, and what is still queued: no other
        // connection will send it.
        let queued = router.close_counting();
        let (frames, bytes) = match router.take_loss() {
            Some((lost, _)) => (lost.frames + queued.frames, lost.bytes + queued.bytes),
            None => (queued.frames, queued.bytes),
        };
        metrics::gauge!(crate::observe::CONNECTIONS).decrement(1.0);
        crate::observe::lost(queued.frames as u64, queued.bytes as u64);
        if frames > 0 {
            router.report(Error::FramesLost {
                frames,
                bytes,
                reason: reason.disconnect(),
            });
        }
        if let Some(inner) = watcher.upgrade() {
            inner.sockets.locked().live.remove(&id);
            if let Some(sessions) = &inner.sessions {
                sessions
                    .table
                    .locked()
                    .retain(|_, (socket, _)| *socket != id);
            }
            inner.events.send(ServerEvent::Disconnected {
                socket: id,
                reason: reason.to_string(),
            });
            if frames > 0 {
                inner.events.send(ServerEvent::Lost {
                    socket: id,
                    frames,
                    bytes,
                    reason: reason.to_string(),
                });
            }
        }
    }
}

/// Closes the acceptor and every socket; the status says stopped after this,
/// when the task drops the server.
async fn finish(inner: &ServerInner, acceptor: Option<Box<dyn Acceptor>>) {
    if let Some(mut acceptor) = acceptor {
        acceptor.close();
    }
    let sockets: Vec<Socket> = {
        let mut s = inner.sockets.locked();
        s.live.drain().map(|(_, s)| s).collect()
    };
    // Each bounded by the stop timeout (the sockets' connection options).
    futures_util::future::join_all(sockets.iter().map(|s| s.conn.close())).await;
    for s in &sockets {
        s.router().close();
    }
    inner.events.send(ServerEvent::Stopped);
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// tokio keeps a task's whole future in the task's allocation, with 96
    /// bytes of its own, rounded up to a multiple of 128 on x86-64: a socket's
    /// task future of at most 152 bytes takes 256, one byte more takes 384.
    /// Every open connection holds one (`idle10k` in BENCHMARKS.md).
    #[tokio::test]
    async fn the_task_of_a_socket_stays_small() {
        let server = Server::tcp("127.0.0.1:0").start();
        let size = crate::transport::task_future_size::<crate::transport::BoxStream, _>(&on_close(
            &server.inner,
            1,
        ));
        assert!(size <= 152, "a socket's task future takes {size} bytes");
        server.stop().await;
    }
}

#[cfg(test)]
mod builder_tests {
    use super::*;

    /// `.router(..)` edits the builders' own router options: a server's
    /// default buffering and what was set before stay.
    #[test]
    fn router_options_are_edited_in_place() {
        let server = Server::tcp("127.0.0.1:0")
            .max_message_size(1000)
            .router(|r| r.max_pending(3));
        let options = format!("{:?}", server.router);
        for set in [
            "buffering: Idle",
            "max_pending: 3",
            "max_message_size: 1000",
        ] {
            assert!(options.contains(set), "{set} in {options}");
        }
        let client = crate::Client::tcp("127.0.0.1:1")
            .codec(crate::Json)
            .router(|r| r.max_pending(3));
        let options = format!("{client:?}");
        for set in ["Json", "max_pending: 3"] {
            assert!(options.contains(set), "{set} in {options}");
        }
    }
}
