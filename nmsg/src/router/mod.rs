//! The router: ids, the callback table with timeouts, event routing, and the
//! outgoing queue with optional bulk buffering.
//!
//! A router knows nothing of sockets. A transport drives it through its
//! [`Link`] ([`Router::link`]): it hands the router incoming messages
//! ([`Link::dispatch`]) and takes outgoing bytes from it
//! ([`Link::next_outgoing`]), already length-prefixed and ready to write.
//!
//! The parts, each the one owner of its state:
//! - `options`: [`RouterBuilder`], the defaults, [`Buffering`];
//! - `routes`: [`Api`], the handlers, wiretap and error hook, running handlers;
//! - `send`: encoding a frame and queueing it, the `emit` family;
//! - `outbox`: the outgoing queue, bulks, bounds and wake-ups;
//! - `pending`: ids, the callback table, deadlines, expiry, a lost connection;
//! - `link`: the transport's side;
//! - `flow`: whether the transport may read more now, and the async handlers
//!   that run (counted, cancelled when the router closes).
//!
//! Routes take no lock; the queue and the callback table share the queue's
//! lock, because a frame is registered and queued in one step (one lock per
//! frame, and a lost connection fails exactly the frames a transport took).

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::args::Args;
use crate::codec::Codec;
use crate::error::Error;
use crate::handler::HandlerReturn;
use crate::observe::meters;
use crate::transport::Address;

mod flow;
mod link;
mod options;
mod outbox;
mod pending;
mod routes;
mod send;

pub use link::Link;
pub(crate) use link::Pacer;
pub use options::{
    Buffering, RouterBuilder, DEFAULT_LATENCY_ALLOWANCE, DEFAULT_MAX_PENDING,
    DEFAULT_MAX_QUEUED_BYTES, DEFAULT_MAX_QUEUED_FRAMES, DEFAULT_MAX_RUNNING_HANDLERS,
};
pub(crate) use routes::InitialRoutes;
pub use routes::{Api, Flow, WILDCARD};

use options::Options;
use outbox::Outbox;
pub(crate) use outbox::Tally;
use pending::{fail_all, Pending};
use routes::RouteTable;

/// What a router's handles share: its options and its parts.
struct Inner {
    opts: Arc<Options>,
    routes: RouteTable,
    outbox: Outbox,
    pending: Pending,
    /// The client or server the router is one's, told of requests a typed
    /// handler refused ([`Router::bad_request`]); one word while unset.
    owner: ArcSwapOption<BadRequestSink>,
    /// What the router knows of its connection's peer ([`PeerInfo`]); one
    /// word while it knows nothing.
    peer: ArcSwapOption<PeerInfo>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // What the gauges still count of this router goes with it.
        let queue = self.outbox.lock();
        let (queued, _) = queue.level();
        meters().queued.decrement(queued as f64);
        let waiting = pending::waiting(queue.table());
        meters().in_flight.decrement(waiting as f64);
    }
}

/// What a router knows of its connection's peer, in one allocation made
/// only when there is something to know (an idle plain connection has none).
struct PeerInfo {
    /// The peer's address, for spans: kept only while debug tracing is on
    /// ([`Router::set_peer`]).
    address: Option<Address>,
    /// What the transport verified about the peer ([`Router::peer_identity`]).
    identity: Option<Arc<crate::transport::PeerIdentity>>,
    /// Who the peer authenticated as ([`Router::auth_identity`]).
    auth: Option<Arc<crate::AuthIdentity>>,
}

/// Told of a request whose arguments did not fit its typed handler: the
/// router it came on, the event and the error (a client's or server's
/// `BadRequest` event). A server's sockets share one. It holds its owner
/// weakly (the owner holds the router), and is the one allocation a client
/// pays for it.
pub(crate) struct BadRequestSink(pub(crate) std::sync::Weak<dyn BadRequestOwner>);

/// The client or server a [`BadRequestSink`] tells.
pub(crate) trait BadRequestOwner: Send + Sync {
    fn bad_request(&self, router: &Router, event: &str, error: &Error);
}

/// Routes events and callbacks for one connection (or one client across its
/// reconnections). Cheap to clone; usable from any task.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nmsg::Error> {
/// use nmsg::{args, Router};
/// let (a, b) = (Router::new(), Router::new());
/// let _link = nmsg::transport::memory::link(&a, &b);
/// b.on("echo", |args: nmsg::Args| -> Result<(), nmsg::Error> {
///     let text: String = args.get(0)?;
///     args.callback(1)?.call((text,))
/// });
/// let (reply,): (String,) = a.request("echo", args!["hi"]).await?;
/// assert_eq!(reply, "hi");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("codec", &self.inner.opts.codec.name())
            .field("buffering", &self.inner.opts.buffering)
            .field("pending", &self.pending_frames())
            .field("queued", &self.queued_frames())
            .finish()
    }
}

impl Default for Router {
    fn default() -> Self {
        Router::new()
    }
}

impl Router {
    /// A router with default options: MsgPack, unbuffered.
    pub fn new() -> Router {
        RouterBuilder::default().build()
    }

    /// Options for a router.
    pub fn builder() -> RouterBuilder {
        RouterBuilder::default()
    }

    fn with_options(opts: Arc<Options>) -> Router {
        Router::with_routes(opts, RouteTable::new())
    }

    fn with_routes(opts: Arc<Options>, routes: RouteTable) -> Router {
        let outbox = Outbox::new();
        if let Some(form) = opts.bulk_form {
            outbox.learn_bulk_form(form);
        }
        // The process's metrics handles are registered with the first router.
        meters();
        Router {
            inner: Arc::new(Inner {
                opts,
                routes,
                outbox,
                pending: Pending::new(),
                owner: ArcSwapOption::empty(),
                peer: ArcSwapOption::empty(),
            }),
        }
    }

    /// The router's codec.
    pub fn codec(&self) -> Arc<dyn Codec> {
        self.inner.opts.codec.clone()
    }

    pub(crate) fn codec_ref(&self) -> &Arc<dyn Codec> {
        &self.inner.opts.codec
    }

    /// The largest message this router sends, and by default accepts.
    pub fn max_message_size(&self) -> usize {
        self.inner.opts.max_message_size
    }

    /// The router's buffering mode.
    pub fn buffering(&self) -> Buffering {
        self.inner.opts.buffering
    }

    /// True if both handles are the same router.
    pub fn same(&self, other: &Router) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    // ----- handlers -----

    /// Sets the handler for `event`, replacing any earlier one (as the original
    /// does). The event `"*"` is the wildcard: its handler runs after the
    /// event's own handler, for every event, with the event name as the first
    /// argument.
    ///
    /// A handler is a closure taking [`Args`] and returning `()`,
    /// `Result<(), E>`, or a future of either (spawned on the runtime). Sync
    /// handlers run on the connection's reader task, so they should not block.
    /// Errors and panics go to the error hook; the connection goes on.
    pub fn on<F, R, M>(&self, event: impl Into<String>, handler: F) -> &Self
    where
        F: Fn(Args) -> R + Send + Sync + 'static,
        R: HandlerReturn<M>,
        M: 'static,
    {
        self.inner.routes.on(event.into(), routes::erase(handler));
        self
    }

    /// Removes the handler for `event` (or the wildcard, for `"*"`); true if there was one.
    pub fn off(&self, event: &str) -> bool {
        self.inner.routes.off(event)
    }

    /// Serves this router with a shared [`Api`]: its methods take precedence
    /// over `on` handlers. `None` removes it.
    pub fn set_api(&self, api: Option<Api>) {
        self.inner.routes.set_api(api);
    }

    /// Sets a wiretap that sees every incoming event first; returning
    /// [`Flow::Stop`] ends its routing.
    pub fn set_wiretap<F>(&self, tap: F)
    where
        F: Fn(&Args) -> Flow + Send + Sync + 'static,
    {
        self.inner.routes.set_wiretap(Arc::new(tap));
    }

    /// Sets the error hook, which receives protocol errors, handler errors and
    /// panics, unhandled events and stray responses. Without one, they are
    /// logged with `tracing`.
    pub fn on_error<F>(&self, hook: F)
    where
        F: Fn(Error) + Send + Sync + 'static,
    {
        self.inner.routes.set_error_hook(Arc::new(hook));
    }

    /// Reports an error to the error hook.
    pub fn report(&self, error: Error) {
        self.inner.routes.report(error);
    }

    // ----- state -----

    pub(crate) fn epoch(&self) -> u64 {
        self.inner.pending.epoch()
    }

    /// Closes the router: emitting fails with [`Error::Closed`], pending
    /// callbacks fail, the async handlers still running are cancelled
    /// (dropped at their next `.await`), and [`Link::next_outgoing`] returns
    /// what is still queued, then `None`.
    pub fn close(&self) {
        self.close_counting();
    }

    /// [`Router::close`]; gives what was queued at the close (frames, and
    /// their bytes as they would go on the wire), counted under the same
    /// lock, so that no frame queued meanwhile is missed.
    pub(crate) fn close_counting(&self) -> Tally {
        let inner = &*self.inner;
        let (queued, waiting_writer, (failed, timer)) = {
            let mut queue = inner.outbox.lock();
            let writer = queue.close();
            let queued = queue.queued_on_wire(&*inner.opts.codec);
            (
                queued,
                writer,
                inner.pending.close(queue.table_mut(), &meters().in_flight),
            )
        };
        fail_all(failed, || Error::Closed);
        for waker in [waiting_writer, timer].into_iter().flatten() {
            waker.wake();
        }
        inner.outbox.notify_space();
        inner.routes.handlers.cancel();
        queued
    }

    /// The router's owner reports what is lost with a connection itself
    /// (a client, as [`ClientEvent::Lost`](crate::ClientEvent::Lost)): from
    /// now on losses are kept for [`Router::take_loss`] instead of going to
    /// the error hook as [`Error::FramesLost`].
    pub(crate) fn keep_losses(&self) {
        self.inner.outbox.lock().keep_losses();
    }

    /// What was lost with connections since the last call (see
    /// [`Router::keep_losses`]), with the reason of the last loss.
    pub(crate) fn take_loss(&self) -> Option<(Tally, crate::error::Disconnect)> {
        self.inner.outbox.lock().take_loss()
    }

    /// True once [`Router::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.outbox.is_closed()
    }

    /// Frames with callbacks that wait for answers.
    pub fn pending_frames(&self) -> usize {
        self.inner.pending.len(&self.inner.outbox)
    }

    /// Frames in the outgoing queue.
    pub fn queued_frames(&self) -> usize {
        self.inner.outbox.queued_frames()
    }

    /// A request on this router whose arguments did not fit its typed
    /// handler: tells the client's or server's events, if the router is one's.
    pub(crate) fn bad_request(&self, event: &str, error: &Error) {
        let owner = self.inner.owner.load().as_ref().and_then(|s| s.0.upgrade());
        if let Some(owner) = owner {
            owner.bad_request(self, event, error);
        }
    }

    /// Tells the router who its connection's peer is (a client's or a
    /// server socket's, at each connection): its address, for the spans'
    /// `network.peer.address`, kept only while debug tracing is on (so that a
    /// connection pays for no copy of it otherwise; spans of a connection
    /// made before a subscriber was installed name no peer); what the
    /// transport verified about it; who it authenticated as. One allocation,
    /// made only when there is something to keep.
    pub(crate) fn set_peer(
        &self,
        peer: &Address,
        identity: Option<Arc<crate::transport::PeerIdentity>>,
        auth: Option<Arc<crate::AuthIdentity>>,
    ) {
        let address = tracing::enabled!(tracing::Level::DEBUG).then(|| peer.clone());
        let known = address.is_some() || identity.is_some() || auth.is_some();
        let info = known.then(|| {
            Arc::new(PeerInfo {
                address,
                identity,
                auth,
            })
        });
        self.inner.peer.store(info);
    }

    /// The peer's address, if set: for span fields, read only when a span
    /// is enabled.
    pub(crate) fn peer(&self) -> Option<tracing::field::DisplayValue<Address>> {
        let info = self.inner.peer.load();
        info.as_ref()
            .and_then(|info| info.address.clone())
            .map(tracing::field::display)
    }

    /// Who the peer of this router's connection authenticated as: what the
    /// server's authenticator attached
    /// ([`ServerBuilder::authenticate`](crate::ServerBuilder::authenticate)).
    /// Set on a server's sockets; `None` on other routers and for peers
    /// accepted without an identity.
    pub fn auth_identity(&self) -> Option<Arc<crate::AuthIdentity>> {
        let info = self.inner.peer.load();
        info.as_ref().and_then(|info| info.auth.clone())
    }

    /// Tells `sink` of the requests a typed handler refuses on this router.
    pub(crate) fn set_owner(&self, sink: Arc<BadRequestSink>) {
        self.inner.owner.store(Some(sink));
    }

    /// What the transport verified about the peer of this router's
    /// connection: the certificate of a mutual TLS client, the credentials
    /// of a Unix socket's peer process. Set on a server's sockets; `None` on
    /// other routers, and for peers the transport knows nothing of.
    pub fn peer_identity(&self) -> Option<Arc<crate::transport::PeerIdentity>> {
        self.inner.peer.load().as_ref()?.identity.clone()
    }

    /// How many events arrived with no handler for them (no handler of the
    /// router's, its [`Api`]'s or a wildcard). They are ignored, with a debug
    /// log and no report to the error hook: a peer may emit events this side
    /// does not serve, and the original's first TCP server even writes every
    /// message back to its sender. The count stops at `u32::MAX`.
    pub fn unhandled_events(&self) -> u64 {
        self.inner.routes.unhandled()
    }

    /// The events starting with `prefix` that this router serves, by its own
    /// handlers or its [`Api`]'s, sorted, each once (the contract listing).
    pub(crate) fn handled_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.inner.routes.handled_with_prefix(prefix)
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod size {
    /// Every connection has a router on each end (`idle10k` in
    /// BENCHMARKS.md). Its `Arc` allocation is the two counts (16 bytes) and
    /// `Inner`; glibc's malloc rounds a request of n bytes up to a chunk of
    /// n + 8 rounded up to 16: an `Inner` of 328 bytes takes a 352-byte
    /// chunk, one of 329 to 344 takes 368, and the 376 it once had took 400.
    #[test]
    fn a_router_stays_small() {
        let size = std::mem::size_of::<super::Inner>();
        assert!(size <= 328, "a router takes {size} bytes");
    }
}
