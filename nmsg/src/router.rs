//! The router: ids, the callback table with timeouts, event routing, and the
//! outgoing queue with optional bulk buffering.
//!
//! A router knows nothing of sockets. A transport hands it incoming messages
//! ([`Router::dispatch`]) and takes outgoing bytes from it
//! ([`Router::next_outgoing`]), already length-prefixed and ready to write.

use crate::sync::MutexExt;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::args::{Arg, Args, FromArgs, IntoArgs, OutArgs, Received};
use crate::callback::{Answer, AnswerSink, Local};
use crate::codec::{Codec, MsgPack};
use crate::error::Error;
use crate::frame::{FrameKind, OutFrame, OutKind, DEFAULT_TIMEOUT_SECS, MAX_ID};
use crate::framing::{check_size, DEFAULT_MAX_MESSAGE_SIZE, PREFIX_LEN};
use crate::handler::{panic_message, ErasedHandler, FnHandler, HandlerReturn, Outcome};

/// The wildcard event name: its handler sees every event, with the name first.
pub const WILDCARD: &str = "*";

/// Default [`RouterBuilder::max_pending`].
pub const DEFAULT_MAX_PENDING: usize = 65_536;
/// Default [`RouterBuilder::max_queued_frames`].
pub const DEFAULT_MAX_QUEUED_FRAMES: usize = 10_000;
/// Default [`RouterBuilder::max_queued_bytes`].
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
/// Default [`RouterBuilder::latency_allowance`], as in the original.
pub const DEFAULT_LATENCY_ALLOWANCE: Duration = Duration::from_millis(500);

/// How a router sends its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Buffering {
    /// Every frame is a message of its own (frames queued together still go
    /// out in one write).
    #[default]
    Off,
    /// Frames are sent as bulk messages: whatever is queued when the writer is
    /// ready goes out as one bulk. Adds no delay.
    Idle,
    /// Frames are collected for a fixed cycle after the first one, then sent
    /// as one bulk, as the original's buffered router does (10 ms there).
    Cycle(Duration),
}

/// What a wiretap tells the router to do with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Route the event as usual.
    Continue,
    /// Stop here: no handler sees the event.
    Stop,
}

type ErrorHook = Arc<dyn Fn(Error) + Send + Sync>;
type Wiretap = Arc<dyn Fn(&Args) -> Flow + Send + Sync>;

/// A table of handlers that many routers can share (a server serves every
/// socket with one). A method in the router's `Api` takes precedence over the
/// router's own `on` handlers for that event.
///
/// ```
/// let api = nmsg::Api::new();
/// api.on("ping", |args: nmsg::Args| -> Result<(), nmsg::Error> {
///     args.callback(0)?.call(("pong",))
/// });
/// assert!(api.contains("ping"));
/// ```
#[derive(Clone, Default)]
pub struct Api {
    /// Replaced whole when a method is set or removed (copy on write), so the
    /// routers that share it look methods up without a lock or a shared write.
    table: Arc<ArcSwap<HandlerMap>>,
}

/// Handlers by event name, hashed with foldhash under a fixed seed: a fast,
/// non-cryptographic hash is safe here because only this side adds names, so a
/// peer cannot fill a bucket (it only looks names up), and a fixed seed takes no
/// room in each table (a `RandomState` takes 16 bytes). With SipHash, routing
/// an event took 145 instructions more (3,657 against 3,512 per `fire` event in
/// `examples/cost.rs`).
type HandlerMap = HashMap<String, Arc<dyn ErasedHandler>, foldhash::fast::FixedState>;

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.table.load().keys()).finish()
    }
}

impl Api {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the method for `event`, replacing any earlier one.
    pub fn on<F, R, M>(&self, event: impl Into<String>, handler: F) -> &Self
    where
        F: Fn(Args) -> R + Send + Sync + 'static,
        R: HandlerReturn<M>,
        M: 'static,
    {
        let event = event.into();
        let handler: Arc<dyn ErasedHandler> = Arc::new(FnHandler::new(handler));
        self.table.rcu(|table| {
            let mut table = HandlerMap::clone(table);
            table.insert(event.clone(), handler.clone());
            table
        });
        self
    }

    /// Removes the method for `event`; true if there was one.
    pub fn off(&self, event: &str) -> bool {
        let mut removed = false;
        self.table.rcu(|table| {
            let mut table = HandlerMap::clone(table);
            removed = table.remove(event).is_some();
            table
        });
        removed
    }

    /// True if the table has a method for `event`.
    pub fn contains(&self, event: &str) -> bool {
        self.get(event).is_some()
    }

    fn get(&self, event: &str) -> Option<Arc<dyn ErasedHandler>> {
        self.table.load().get(event).cloned()
    }
}

/// Options of a [`Router`]; start with [`Router::builder`].
///
/// The routers built from one builder share one copy of its options (a
/// server's sockets all do, and so do all routers left at the defaults); a
/// setter called on a shared copy makes the builder a copy of its own.
#[derive(Clone)]
pub struct RouterBuilder {
    opts: Arc<Options>,
}

#[derive(Clone)]
struct Options {
    codec: Arc<dyn Codec>,
    buffering: Buffering,
    default_timeout: Duration,
    latency_allowance: Duration,
    max_pending: usize,
    max_message_size: usize,
    max_queued_frames: usize,
    max_queued_bytes: usize,
    /// `None`: the connection's default rule (see [`RouterBuilder::dispatch_burst`]).
    dispatch_burst: Option<usize>,
}

impl fmt::Debug for RouterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &*self.opts;
        f.debug_struct("RouterBuilder")
            .field("codec", &o.codec)
            .field("buffering", &o.buffering)
            .field("default_timeout", &o.default_timeout)
            .field("latency_allowance", &o.latency_allowance)
            .field("max_pending", &o.max_pending)
            .field("max_message_size", &o.max_message_size)
            .field("max_queued_frames", &o.max_queued_frames)
            .field("max_queued_bytes", &o.max_queued_bytes)
            .field("dispatch_burst", &o.dispatch_burst)
            .finish()
    }
}

impl Default for RouterBuilder {
    fn default() -> Self {
        static DEFAULT: std::sync::OnceLock<Arc<Options>> = std::sync::OnceLock::new();
        let opts = DEFAULT.get_or_init(|| {
            Arc::new(Options {
                codec: Arc::new(MsgPack),
                buffering: Buffering::Off,
                default_timeout: Duration::from_secs_f64(DEFAULT_TIMEOUT_SECS),
                latency_allowance: DEFAULT_LATENCY_ALLOWANCE,
                max_pending: DEFAULT_MAX_PENDING,
                max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                max_queued_frames: DEFAULT_MAX_QUEUED_FRAMES,
                max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
                dispatch_burst: None,
            })
        });
        RouterBuilder { opts: opts.clone() }
    }
}

impl RouterBuilder {
    /// The codec (default [`MsgPack`]). Both ends must use the same.
    pub fn codec(mut self, codec: impl Codec) -> Self {
        Arc::make_mut(&mut self.opts).codec = Arc::new(codec);
        self
    }

    /// The codec, shared.
    pub fn codec_arc(mut self, codec: Arc<dyn Codec>) -> Self {
        Arc::make_mut(&mut self.opts).codec = codec;
        self
    }

    /// Bulk buffering of outgoing frames (default [`Buffering::Off`]).
    pub fn buffering(mut self, buffering: Buffering) -> Self {
        Arc::make_mut(&mut self.opts).buffering = buffering;
        self
    }

    /// How long the callbacks of an outgoing frame stay alive when the call
    /// does not say (default 15 s, the protocol's default; sent as `t` when it differs).
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        Arc::make_mut(&mut self.opts).default_timeout = timeout;
        self
    }

    /// Extra time on top of a frame's timeout before its callbacks are
    /// dropped, for the answer's travel (default 500 ms, as the original).
    pub fn latency_allowance(mut self, allowance: Duration) -> Self {
        Arc::make_mut(&mut self.opts).latency_allowance = allowance;
        self
    }

    /// At most this many outgoing frames with callbacks may wait for answers
    /// (default [`DEFAULT_MAX_PENDING`], 65,536); beyond it, emitting a frame
    /// with callbacks fails with [`Error::TooManyPending`].
    pub fn max_pending(mut self, max: usize) -> Self {
        Arc::make_mut(&mut self.opts).max_pending = max;
        self
    }

    /// The largest message this router encodes, and its transports accept
    /// (default 16 MiB).
    pub fn max_message_size(mut self, max: usize) -> Self {
        Arc::make_mut(&mut self.opts).max_message_size =
            max.min(crate::framing::MAX_MESSAGE_SIZE_LIMIT);
        self
    }

    /// At most this many frames wait in the outgoing queue, for example while
    /// a client is disconnected (default [`DEFAULT_MAX_QUEUED_FRAMES`], 10,000).
    pub fn max_queued_frames(mut self, max: usize) -> Self {
        Arc::make_mut(&mut self.opts).max_queued_frames = max;
        self
    }

    /// At most this many bytes wait in the outgoing queue (default
    /// [`DEFAULT_MAX_QUEUED_BYTES`], 64 MiB).
    pub fn max_queued_bytes(mut self, max: usize) -> Self {
        Arc::make_mut(&mut self.opts).max_queued_bytes = max;
        self
    }

    /// How many received messages a connection handles, when more have
    /// arrived, before it writes what their handlers queued. A peer that sends
    /// many requests at once then gets the first answers while the rest are
    /// handled, so on a machine with more than one CPU both ends work at the
    /// same time; each early write costs a system call. `usize::MAX` writes
    /// only once everything that has arrived is handled; 0 is taken as 1.
    ///
    /// By default 14, or no limit where this process may use one CPU only (its
    /// affinity or its cgroup's quota, as `std::thread::available_parallelism`
    /// reports them), since there no peer can run meanwhile. The best value
    /// depends on where the two ends run and how many calls are in flight.
    /// With 64 on one loopback connection on two CPUs, 14 came within 6% of
    /// the best of 8, 12, 14, 16 and 32 with client and server in two
    /// processes, on a runtime each, or on one runtime with the calls made from
    /// a spawned task, and 17% behind 32 with the calls made from `block_on`
    /// (BENCHMARKS.md, item 13; `examples/burst.rs` measures it). The
    /// benchmark, with both ends on one runtime, measures 8 about 12% faster
    /// than 14; set 8 where client and server share a runtime and that matters.
    pub fn dispatch_burst(mut self, messages: usize) -> Self {
        Arc::make_mut(&mut self.opts).dispatch_burst = Some(messages.max(1));
        self
    }

    /// Builds the router.
    pub fn build(self) -> Router {
        Router {
            inner: Arc::new(Inner {
                opts: self.opts,
                routes: ArcSwap::new(Routes::empty()),
                next_id: AtomicU32::new(0),
                epoch: AtomicU64::new(0),
                state: Mutex::new(State::default()),
                space: Notify::new(),
            }),
        }
    }
}

/// What routes an incoming event, and the error hook. Replaced whole (copy
/// on write) when one of them changes, which is rare: routing an event takes
/// no lock and clones no handler, and a handler may change the routes while it
/// runs. Routers with none share one empty table.
#[derive(Clone, Default)]
struct Routes {
    by_event: HandlerMap,
    api: Option<Api>,
    /// Boxed, and made when one of them is set: most routers have none.
    rare: Option<Box<RareRoutes>>,
}

#[derive(Clone, Default)]
struct RareRoutes {
    wildcard: Option<Arc<dyn ErasedHandler>>,
    wiretap: Option<Wiretap>,
    error_hook: Option<ErrorHook>,
}

impl Routes {
    /// The empty table, shared.
    fn empty() -> Arc<Routes> {
        static EMPTY: std::sync::OnceLock<Arc<Routes>> = std::sync::OnceLock::new();
        EMPTY.get_or_init(|| Arc::new(Routes::default())).clone()
    }

    fn rare(&self) -> Option<&RareRoutes> {
        self.rare.as_deref()
    }

    fn rare_mut(&mut self) -> &mut RareRoutes {
        self.rare.get_or_insert_with(Box::default)
    }
}

/// A frame this side sent with callbacks, waiting for the peer to invoke them.
struct Pending {
    callbacks: LocalCallbacks,
    left: usize,
    deadline: Instant,
    timeout: Duration,
    /// Outgoing sequence number of the frame, to tell whether a connection took it.
    seq: u64,
}

#[derive(Default)]
struct State {
    /// Complete length-prefixed messages, ready to write.
    ready: BytesMut,
    /// The open bulk (buffered routers): encoded frames with separators.
    bulk: Vec<u8>,
    bulk_frames: usize,
    queued_frames: usize,
    queued_bytes: usize,
    /// Frames ever queued, and the sequence number up to which a transport took them.
    seq: u64,
    taken: u64,
    /// Made with the first frame that has callbacks.
    calls: Option<Box<Calls>>,
    /// The transport waiting for outgoing bytes ([`Router::poll_queued`]);
    /// cleared while a connection task runs ([`Router::writer_running`]).
    writer_waker: Option<Waker>,
    closed: bool,
}

/// The frames this side sent with callbacks that wait for answers, their
/// deadlines, and the timer task that enforces them. Boxed, and made with the
/// first such frame: a router that never sends a callback (many a server's
/// socket) holds none of it.
///
/// The deadlines are kept in the pending frames only, not in a sorted index: a
/// frame costs no insertion and no removal there. The timer knows the earliest
/// deadline (`earliest`, a lower bound once frames are answered) and looks
/// through the pending frames when it comes; with the usual single timeout that
/// is about once per timeout, since by then the frames it saw are answered. A
/// look-through that finds nothing due sets `earliest` to the true minimum.
/// Look-throughs are at least [`SCAN_GAP`] apart, so frames whose deadlines are
/// spread out expire up to that much late, and never cost more than a pass over
/// the pending frames per gap.
#[derive(Default)]
struct Calls {
    pending: HashMap<u32, Pending, BuildHasherDefault<IdHasher>>,
    /// No pending frame has an earlier deadline; `None` with none pending.
    earliest: Option<Instant>,
    timer_running: bool,
    /// The deadline the timer task sleeps until; `None` while it sleeps without
    /// one. A new frame wakes the timer only when its deadline comes earlier,
    /// not once per frame: a wake per call cost a cross-thread wake-up per call.
    timer_armed: Option<Instant>,
    /// The timer task, while it sleeps.
    timer: Option<Waker>,
}

struct Inner {
    opts: Arc<Options>,
    routes: ArcSwap<Routes>,
    next_id: AtomicU32,
    /// Bumped whenever a connection is lost; callbacks from an older epoch are dead.
    epoch: AtomicU64,
    state: Mutex<State>,
    /// Wakes the callers of [`Router::emit_wait`] when the queue was taken.
    space: Notify,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Let the timer task see that the router is gone.
        let st = self.state.locked_mut();
        if let Some(timer) = st.calls.as_mut().and_then(|calls| calls.timer.take()) {
            timer.wake();
        }
    }
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

/// A frame's local callbacks by position; `None` once invoked. Inline for one,
/// as a request has: no allocation for the list.
type LocalCallbacks = smallvec::SmallVec<[(u32, Option<Local>); 1]>;

/// An outgoing frame, encoded, with the callbacks it carries.
struct Encoded {
    id: u32,
    bytes: Vec<u8>,
    callbacks: LocalCallbacks,
    timeout: Duration,
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

    /// The router's codec.
    pub fn codec(&self) -> Arc<dyn Codec> {
        self.inner.opts.codec.clone()
    }

    pub(crate) fn codec_ref(&self) -> &Arc<dyn Codec> {
        &self.inner.opts.codec
    }

    /// The largest message this router sends or accepts.
    pub fn max_message_size(&self) -> usize {
        self.inner.opts.max_message_size
    }

    /// The router's buffering mode.
    pub fn buffering(&self) -> Buffering {
        self.inner.opts.buffering
    }

    /// The dispatch burst set with [`RouterBuilder::dispatch_burst`], if any.
    pub(crate) fn dispatch_burst(&self) -> Option<usize> {
        self.inner.opts.dispatch_burst
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
        let event = event.into();
        let handler: Arc<dyn ErasedHandler> = Arc::new(FnHandler::new(handler));
        self.change_routes(|r| {
            if event == WILDCARD {
                r.rare_mut().wildcard = Some(handler.clone());
            } else {
                r.by_event.insert(event.clone(), handler.clone());
            }
        });
        self
    }

    /// Removes the handler for `event` (or the wildcard, for `"*"`); true if there was one.
    pub fn off(&self, event: &str) -> bool {
        let mut removed = false;
        self.change_routes(|r| {
            removed = if event == WILDCARD {
                r.rare.as_mut().and_then(|r| r.wildcard.take()).is_some()
            } else {
                r.by_event.remove(event).is_some()
            };
        });
        removed
    }

    /// Applies `change` to a copy of the routes and puts the copy in place
    /// (`change` runs again if another thread changed them meanwhile).
    fn change_routes(&self, mut change: impl FnMut(&mut Routes)) {
        self.inner.routes.rcu(|routes| {
            let mut routes = Routes::clone(routes);
            change(&mut routes);
            routes
        });
    }

    /// Serves this router with a shared [`Api`]: its methods take precedence
    /// over `on` handlers. `None` removes it.
    pub fn set_api(&self, api: Option<Api>) {
        self.change_routes(|r| r.api = api.clone());
    }

    /// Sets a wiretap that sees every incoming event first; returning
    /// [`Flow::Stop`] ends its routing.
    pub fn set_wiretap<F>(&self, tap: F)
    where
        F: Fn(&Args) -> Flow + Send + Sync + 'static,
    {
        let tap: Wiretap = Arc::new(tap);
        self.change_routes(|r| r.rare_mut().wiretap = Some(tap.clone()));
    }

    /// Sets the error hook, which receives protocol errors, handler errors and
    /// panics, unhandled events and stray responses. Without one, they are
    /// logged with `tracing`.
    pub fn on_error<F>(&self, hook: F)
    where
        F: Fn(Error) + Send + Sync + 'static,
    {
        let hook: ErrorHook = Arc::new(hook);
        self.change_routes(|r| r.rare_mut().error_hook = Some(hook.clone()));
    }

    /// Reports an error to the error hook.
    pub fn report(&self, error: Error) {
        let hook = self
            .inner
            .routes
            .load()
            .rare()
            .and_then(|r| r.error_hook.clone());
        match hook {
            Some(hook) => hook(error),
            None => match &error {
                Error::Unhandled(_) | Error::StrayResponse { .. } => {
                    tracing::debug!(%error, "nmsg")
                }
                _ => tracing::warn!(%error, "nmsg"),
            },
        }
    }

    // ----- sending -----

    /// Emits `event` with `args` (data and callbacks in any positions). The
    /// frame's callbacks stay alive for the router's default timeout.
    ///
    /// Returns once the frame is queued; fails at once, with nothing sent, if it
    /// cannot be encoded, the queue is full, or too many frames with callbacks
    /// are pending.
    pub fn emit<'a>(&self, event: &str, args: impl IntoArgs<'a>) -> Result<(), Error> {
        self.send(OutKind::Event(event), args.into_args(), None)
    }

    /// [`Router::emit`] with this frame's callback timeout, sent to the peer as `t`.
    pub fn emit_with_timeout<'a>(
        &self,
        event: &str,
        args: impl IntoArgs<'a>,
        timeout: Duration,
    ) -> Result<(), Error> {
        self.send(OutKind::Event(event), args.into_args(), Some(timeout))
    }

    /// [`Router::emit`], but waits for room when the outgoing queue is full
    /// instead of failing. The frame is encoded at once; the future (which is
    /// `Send` and `'static`) only waits for room. A frame that an empty queue
    /// cannot take (larger than `max_queued_bytes`) fails with
    /// [`Error::QueueFull`], as with `emit`: no room would ever come for it.
    pub fn emit_wait<'a>(
        &self,
        event: &str,
        args: impl IntoArgs<'a>,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send + 'static {
        let router = self.clone();
        let encoded = self.encode(OutKind::Event(event), args.into_args(), None, None);
        async move {
            let mut encoded = encoded?;
            loop {
                let room = router.inner.space.notified();
                match router.enqueue(encoded).map_err(|refused| *refused) {
                    Ok(()) => return Ok(()),
                    Err((Error::QueueFull { frames, .. }, back)) if frames > 0 => {
                        encoded = back;
                        room.await;
                    }
                    Err((e, back)) => {
                        fail_all(back.callbacks, || refusal(&e));
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Emits `event` with `args` plus a trailing callback, and waits for the
    /// peer to invoke it; gives the callback's arguments as `R` (a tuple, or
    /// [`Args`]). Ends with an error on timeout, disconnect, close, or when the
    /// arguments do not convert into `R`.
    ///
    /// The frame is queued at once, when `request` is called; the future
    /// (`Send` and `'static`) waits for the answer.
    pub fn request<'a, R>(
        &self,
        event: &str,
        args: impl IntoArgs<'a>,
    ) -> impl std::future::Future<Output = Result<R, Error>> + Send + 'static
    where
        R: FromArgs + Send,
    {
        let answer = self.call(event, args.into_args(), None);
        async move { answer?.await }
    }

    /// Emits `event` with `args` and a trailing callback whose arguments the
    /// returned future gives, as `R`. The callback is an answer slot the future
    /// shares with the callback table: one allocation, no channel and no box.
    pub(crate) fn call<R: FromArgs + Send>(
        &self,
        event: &str,
        args: OutArgs<'_>,
        timeout: Option<Duration>,
    ) -> Result<Answer<R>, Error> {
        let (sink, answer) = Answer::new();
        self.send_with(OutKind::Event(event), args, timeout, Some(sink))?;
        Ok(answer)
    }

    pub(crate) fn send(
        &self,
        kind: OutKind<'_>,
        args: OutArgs<'_>,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        self.send_with(kind, args, timeout, None)
    }

    /// [`Router::send`], with `answer` as a last callback after `args`.
    fn send_with(
        &self,
        kind: OutKind<'_>,
        args: OutArgs<'_>,
        timeout: Option<Duration>,
        answer: Option<Arc<dyn AnswerSink>>,
    ) -> Result<(), Error> {
        let encoded = self.encode(kind, args, timeout, answer)?;
        self.enqueue(encoded).map_err(|refused| {
            let (e, back) = *refused;
            fail_all(back.callbacks, || refusal(&e));
            e
        })
    }

    fn next_id(&self) -> u32 {
        let prev = self
            .inner
            .next_id
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |id| {
                Some(if id >= MAX_ID { 1 } else { id + 1 })
            })
            .unwrap_or(0);
        if prev >= MAX_ID {
            1
        } else {
            prev + 1
        }
    }

    /// Encodes a frame of `args`, and of `answer` as a last callback if given.
    fn encode(
        &self,
        kind: OutKind<'_>,
        args: OutArgs<'_>,
        timeout: Option<Duration>,
        answer: Option<Arc<dyn AnswerSink>>,
    ) -> Result<Encoded, Error> {
        let opts = &self.inner.opts;
        // The data arguments, borrowed, and the callbacks' positions, inline up
        // to 4: they live only while the frame is encoded, and nearly every
        // frame has fewer (no allocation for them).
        let mut items = smallvec::SmallVec::<[&dyn erased_serde::Serialize; 4]>::new();
        let mut positions = smallvec::SmallVec::<[u32; 4]>::new();
        for (position, arg) in args.items.iter().enumerate() {
            match arg {
                Arg::Data(d) => items.push(&**d),
                Arg::Callback(_) => positions.push(position as u32),
            }
        }
        let answer_position = args.items.len() as u32;
        if answer.is_some() {
            positions.push(answer_position);
        }
        let timeout = timeout.unwrap_or(opts.default_timeout);
        let wire_timeout = (!positions.is_empty()
            && timeout != Duration::from_secs_f64(DEFAULT_TIMEOUT_SECS))
        .then_some(timeout.as_secs_f64());
        let id = self.next_id();
        let mut bytes = scratch_take();
        let frame = OutFrame {
            id,
            kind,
            data: &items,
            callbacks: &positions,
            timeout: wire_timeout,
        };
        let result = opts.codec.encode_frame(&frame, &mut bytes).and_then(|()| {
            // room for a bulk's header when buffered
            let overhead = if opts.buffering == Buffering::Off {
                0
            } else {
                6
            };
            check_size(bytes.len() + overhead, opts.max_message_size)
        });
        drop(items);
        let mut callbacks: LocalCallbacks = if positions.len() > answer.is_some() as usize {
            args.items
                .into_iter()
                .enumerate()
                .filter_map(|(position, arg)| match arg {
                    Arg::Callback(cb) => Some((position as u32, Some(Local::Boxed(cb)))),
                    Arg::Data(_) => None,
                })
                .collect()
        } else {
            LocalCallbacks::new()
        };
        if let Some(answer) = answer {
            callbacks.push((answer_position, Some(Local::Answer(answer))));
        }
        if let Err(e) = result {
            fail_all(callbacks, || Error::Encode(e.clone()));
            return Err(e.into());
        }
        Ok(Encoded {
            id,
            bytes,
            callbacks,
            timeout,
        })
    }

    /// Queues an encoded frame; on refusal gives it back with the reason (boxed:
    /// the refusal is rare and the frame large).
    fn enqueue(&self, mut encoded: Encoded) -> Result<(), Box<(Error, Encoded)>> {
        let inner = &*self.inner;
        let opts = &inner.opts;
        let mut st = inner.state.locked();
        if st.closed {
            return Err(Box::new((Error::Closed, encoded)));
        }
        if st.queued_frames + 1 > opts.max_queued_frames
            || st.queued_bytes + encoded.bytes.len() > opts.max_queued_bytes
        {
            let e = Error::QueueFull {
                frames: st.queued_frames,
                bytes: st.queued_bytes,
            };
            return Err(Box::new((e, encoded)));
        }
        let mut timer = None;
        if !encoded.callbacks.is_empty() {
            let seq = st.seq + 1;
            let calls = st.calls.get_or_insert_with(Box::default);
            if calls.pending.len() >= opts.max_pending {
                return Err(Box::new((
                    Error::TooManyPending {
                        limit: opts.max_pending,
                    },
                    encoded,
                )));
            }
            if calls.pending.contains_key(&encoded.id) {
                // The counter wrapped onto a frame that is still alive (possible only
                // with very long timeouts): give this frame the next id. Both of our
                // codecs write `i` first, so the id is rewritten in place.
                drop(st);
                encoded.id = self.next_id();
                if rewrite_first_id(&mut encoded.bytes, encoded.id).is_none() {
                    return Err(Box::new((
                        Error::TooManyPending {
                            limit: opts.max_pending,
                        },
                        encoded,
                    )));
                }
                return self.enqueue(encoded);
            }
            let deadline = deadline_after(encoded.timeout.saturating_add(opts.latency_allowance));
            if calls.timer_armed.is_none_or(|armed| deadline < armed) {
                timer = calls.timer.take();
            }
            calls.earliest = Some(calls.earliest.map_or(deadline, |e| e.min(deadline)));
            let left = encoded.callbacks.len();
            calls.pending.insert(
                encoded.id,
                Pending {
                    callbacks: std::mem::take(&mut encoded.callbacks),
                    left,
                    deadline,
                    timeout: encoded.timeout,
                    seq,
                },
            );
            if !calls.timer_running {
                match tokio::runtime::Handle::try_current() {
                    Ok(handle) => {
                        calls.timer_running = true;
                        handle.spawn(run_timer(Arc::downgrade(&self.inner)));
                    }
                    Err(_) => {
                        let pending = calls.pending.remove(&encoded.id).expect("just inserted");
                        encoded.callbacks = pending.callbacks;
                        return Err(Box::new((Error::NoRuntime, encoded)));
                    }
                }
            }
        }
        let s = &mut *st;
        s.seq += 1;
        s.queued_frames += 1;
        s.queued_bytes += encoded.bytes.len();
        if opts.buffering == Buffering::Off {
            s.ready.reserve(PREFIX_LEN + encoded.bytes.len());
            s.ready.put_u32(encoded.bytes.len() as u32);
            s.ready.put_slice(&encoded.bytes);
        } else {
            let sep = opts.codec.bulk_separator();
            // 5 bytes of array header, 1 of closing bracket: the most a codec of ours adds.
            if s.bulk_frames > 0
                && s.bulk.len() + sep.len() + encoded.bytes.len() + 6 > opts.max_message_size
            {
                seal_bulk(s, &*opts.codec);
            }
            if s.bulk_frames > 0 {
                s.bulk.extend_from_slice(sep);
            }
            s.bulk.extend_from_slice(&encoded.bytes);
            s.bulk_frames += 1;
        }
        let waiting_writer = s.writer_waker.take();
        drop(st);
        scratch_give_back(std::mem::take(&mut encoded.bytes));
        if let Some(waker) = waiting_writer {
            waker.wake();
        }
        if let Some(timer) = timer {
            timer.wake();
        }
        Ok(())
    }

    // ----- the transport's side -----

    /// Waits for outgoing bytes and takes all that are queued: complete
    /// length-prefixed messages, ready to write in one go. `None` once the
    /// router is closed and everything queued was taken.
    ///
    /// One transport at a time should take from a router.
    pub async fn next_outgoing(&self) -> Option<Bytes> {
        if !std::future::poll_fn(|cx| self.poll_queued(cx)).await {
            return None;
        }
        if let Buffering::Cycle(cycle) = self.inner.opts.buffering {
            tokio::time::sleep(cycle).await;
        }
        self.take_outgoing()
    }

    /// For a connection task that polls [`Router::poll_queued`]: it is running,
    /// so frames queued from now on (by the handlers it runs) need not wake it;
    /// it takes them before it waits again. A task woken while it runs is
    /// rescheduled as if it yielded, which wakes an idle worker thread: once
    /// per call, that cross-thread wake-up cost more than the call itself.
    pub(crate) fn writer_running(&self) {
        let mut st = self.inner.state.locked();
        st.writer_waker = None;
    }

    /// Ready with `true` when outgoing bytes are queued, `false` when the
    /// router is closed and nothing is; otherwise the task is woken by the
    /// next frame queued (one task at a time: the last one to poll).
    pub(crate) fn poll_queued(&self, cx: &mut std::task::Context<'_>) -> Poll<bool> {
        let mut st = self.inner.state.locked();
        if st.queued_frames > 0 {
            return Poll::Ready(true);
        }
        if st.closed {
            return Poll::Ready(false);
        }
        match &mut st.writer_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Takes what is queued without waiting; `None` if nothing is.
    pub fn take_outgoing(&self) -> Option<Bytes> {
        let inner = &*self.inner;
        let mut st = inner.state.locked();
        if st.queued_frames == 0 {
            return None;
        }
        if st.bulk_frames > 0 {
            seal_bulk(&mut st, &*inner.opts.codec);
        }
        st.queued_frames = 0;
        st.queued_bytes = 0;
        st.taken = st.seq;
        let out = st.ready.split().freeze();
        drop(st);
        inner.space.notify_waiters();
        Some(out)
    }

    /// Routes one incoming message (the payload, without its length prefix).
    ///
    /// Malformed messages and frames go to the error hook; the other frames of
    /// the message are still routed, and so are later messages. Sync handlers
    /// run before this returns.
    pub fn dispatch(&self, payload: Bytes) {
        let message = match self.inner.opts.codec.decode_message(&payload) {
            Ok(m) => m,
            Err(e) => return self.report(e.into()),
        };
        let epoch = self.epoch();
        // A single frame (the common case) takes the payload without a list around it.
        match message {
            crate::frame::Message::Single(frame) => self.route_frame(payload, frame, epoch),
            crate::frame::Message::Bulk(frames) => {
                for frame in frames {
                    self.route_frame(payload.clone(), frame, epoch);
                }
            }
        }
    }

    fn route_frame(
        &self,
        payload: Bytes,
        frame: Result<crate::frame::Frame, crate::error::ProtocolError>,
        epoch: u64,
    ) {
        match frame {
            Ok(frame) => {
                let received = Received::new(self.clone(), payload, frame, epoch);
                match received.frame.kind {
                    FrameKind::Event(_) => self.route_event(Args::new(received)),
                    FrameKind::Response { to, position } => {
                        self.route_response(to, position, Args::new(received))
                    }
                }
            }
            Err(e) => self.report(e.into()),
        }
    }

    fn route_event(&self, args: Args) {
        // Held while the handlers run: a handler that changes the routes
        // replaces them without waiting for this snapshot to go.
        let routes = self.inner.routes.load();
        // The name is copied (inline up to 24 bytes), not shared: `args` goes
        // to the handler, and the name is needed after it for error reports.
        let event = match &args.received.frame.kind {
            FrameKind::Event(name) => name.clone(),
            FrameKind::Response { .. } => Default::default(),
        };
        let rare = routes.rare();
        if let Some(tap) = rare.and_then(|r| r.wiretap.as_ref()) {
            // A panicking wiretap is reported like a panicking handler, and the
            // event goes no further; unwinding would end the connection's task
            // without telling the router.
            match std::panic::catch_unwind(AssertUnwindSafe(|| tap(&args))) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => return,
                Err(panic) => {
                    return self.report(Error::HandlerPanicked {
                        event: event.into(),
                        message: format!("wiretap: {}", panic_message(&*panic)),
                    })
                }
            }
        }
        if let Some(api) = &routes.api {
            if let Some(method) = api.table.load().get(event.as_str()) {
                return self.run(&event, &**method, args);
            }
        }
        let handler = routes.by_event.get(event.as_str());
        match (handler, rare.and_then(|r| r.wildcard.as_ref())) {
            (None, None) => self.report(Error::Unhandled(event.into())),
            (Some(handler), None) => self.run(&event, &**handler, args),
            (handler, Some(wildcard)) => {
                if let Some(handler) = handler {
                    self.run(&event, &**handler, args.clone());
                }
                self.run(&event, &**wildcard, args.with_event_name());
            }
        }
    }

    fn run(&self, event: &str, handler: &dyn ErasedHandler, args: Args) {
        match std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(args))) {
            Ok(Outcome::Done(Ok(()))) => {}
            Ok(Outcome::Done(Err(e))) => self.report(handler_error(event, e)),
            Ok(Outcome::Later(future)) => {
                let router = self.clone();
                let event = event.to_owned();
                let task = async move {
                    match AssertUnwindSafe(future).catch_unwind().await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => router.report(handler_error(&event, e)),
                        Err(panic) => router.report(Error::HandlerPanicked {
                            event,
                            message: panic_message(&*panic),
                        }),
                    }
                };
                match tokio::runtime::Handle::try_current() {
                    Ok(handle) => {
                        handle.spawn(task);
                    }
                    Err(_) => self.report(Error::NoRuntime),
                }
            }
            Err(panic) => self.report(Error::HandlerPanicked {
                event: event.to_owned(),
                message: panic_message(&*panic),
            }),
        }
    }

    fn route_response(&self, to: u32, position: u32, args: Args) {
        let callback = {
            let mut st = self.inner.state.locked();
            st.calls.as_mut().and_then(|calls| {
                let p = calls.pending.get_mut(&to)?;
                let cb = p
                    .callbacks
                    .iter_mut()
                    .find(|(pos, _)| *pos == position)?
                    .1
                    .take()?;
                p.left -= 1;
                if p.left == 0 {
                    calls.pending.remove(&to);
                }
                Some(cb)
            })
        };
        match callback {
            Some(cb) => match std::panic::catch_unwind(AssertUnwindSafe(|| cb.invoke(args))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.report(e),
                Err(panic) => self.report(Error::HandlerPanicked {
                    event: "callback".into(),
                    message: panic_message(&*panic),
                }),
            },
            None => self.report(Error::StrayResponse {
                frame: to,
                position,
            }),
        }
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::Acquire)
    }

    /// Tells the router that its connection is gone: frames with callbacks that
    /// a transport already took fail with [`Error::Disconnected`], and callbacks
    /// received on that connection can no longer be invoked. What is still queued
    /// stays queued, for the next connection.
    pub fn connection_lost(&self, reason: &str) {
        self.inner.epoch.fetch_add(1, Ordering::AcqRel);
        let failed = {
            let mut st = self.inner.state.locked();
            let st = &mut *st;
            let taken = st.taken;
            let mut failed = Vec::new();
            if let Some(calls) = st.calls.as_mut() {
                let ids: Vec<u32> = calls
                    .pending
                    .iter()
                    .filter(|(_, p)| p.seq <= taken)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    if let Some(p) = calls.pending.remove(&id) {
                        failed.extend(p.callbacks);
                    }
                }
            }
            failed
        };
        fail_all(failed, || Error::disconnected(reason));
    }

    /// Closes the router: emitting fails with [`Error::Closed`], pending
    /// callbacks fail, and [`Router::next_outgoing`] returns what is still queued, then `None`.
    pub fn close(&self) {
        let (failed, waiting_writer, timer) = {
            let mut st = self.inner.state.locked();
            st.closed = true;
            let (failed, timer) = match st.calls.as_mut() {
                Some(calls) => {
                    calls.earliest = None;
                    let failed = calls
                        .pending
                        .drain()
                        .flat_map(|(_, p)| p.callbacks)
                        .collect::<Vec<_>>();
                    (failed, calls.timer.take())
                }
                None => (Vec::new(), None),
            };
            (failed, st.writer_waker.take(), timer)
        };
        fail_all(failed, || Error::Closed);
        for waker in [waiting_writer, timer].into_iter().flatten() {
            waker.wake();
        }
        self.inner.space.notify_waiters();
    }

    /// True once [`Router::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.state.locked().closed
    }

    /// Frames with callbacks that wait for answers.
    pub fn pending_frames(&self) -> usize {
        self.inner
            .state
            .locked()
            .calls
            .as_ref()
            .map_or(0, |calls| calls.pending.len())
    }

    /// Frames in the outgoing queue.
    pub fn queued_frames(&self) -> usize {
        self.inner.state.locked().queued_frames
    }
}

/// The largest encoding buffer a thread keeps for its next frame.
const SCRATCH_KEEP: usize = 16 * 1024;

thread_local! {
    /// The buffer the next frame encoded on this thread goes into. A frame is
    /// encoded, then copied into its router's queue; the buffer comes back here,
    /// so encoding a frame takes no allocation of its own.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// An empty buffer to encode a frame into: this thread's spare, or a new one.
fn scratch_take() -> Vec<u8> {
    let mut bytes = SCRATCH.try_with(std::cell::Cell::take).unwrap_or_default();
    if bytes.capacity() == 0 {
        bytes.reserve(64);
    }
    bytes
}

/// Keeps `bytes` (its frame already copied into a queue) as this thread's spare,
/// unless it grew beyond [`SCRATCH_KEEP`].
fn scratch_give_back(mut bytes: Vec<u8>) {
    if bytes.capacity() <= SCRATCH_KEEP {
        bytes.clear();
        let _ = SCRATCH.try_with(|spare| spare.set(bytes));
    }
}

/// The instant `after` from now. A timeout too long for the clock (such as
/// `Duration::MAX`, meaning "keep it") is held for 30 years instead of panicking.
fn deadline_after(after: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(after.min(FAR)).unwrap_or(now)
}

/// Replaces the id that starts an encoded frame (MsgPack `{"i": n, ..}` or JSON `{"i":n,..}`).
fn rewrite_first_id(bytes: &mut Vec<u8>, id: u32) -> Option<()> {
    if bytes.starts_with(b"{\"i\":") {
        let end = bytes[5..].iter().position(|b| !b.is_ascii_digit())? + 5;
        bytes.splice(5..end, id.to_string().into_bytes());
        return Some(());
    }
    // MsgPack: map header (1, 3 or 5 bytes), then 0xa1 'i', then a uint.
    let start = match bytes.first()? {
        0x80..=0x8f => 1,
        0xde => 3,
        0xdf => 5,
        _ => return None,
    };
    if bytes.get(start..start + 2)? != [0xa1, b'i'] {
        return None;
    }
    let at = start + 2;
    let len = match *bytes.get(at)? {
        0x00..=0x7f => 1,
        0xcc => 2,
        0xcd => 3,
        0xce => 5,
        0xcf => 9,
        _ => return None,
    };
    let mut fresh = Vec::new();
    let _ = rmp::encode::write_uint(&mut fresh, id as u64);
    bytes.splice(at..at + len, fresh);
    Some(())
}

/// Hashes frame ids with one multiplication. The ids are this side's own
/// counter (a peer can look ids up but never add any), so SipHash's defence
/// against chosen keys buys nothing here, and it cost more than the lookup.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

fn seal_bulk(st: &mut State, codec: &dyn Codec) {
    // The bulk's tail and head are appended to its frames, in the same buffer,
    // and copied out in order: no buffer of their own per message.
    let frames = st.bulk.len();
    codec.bulk_end(&mut st.bulk);
    let tail = st.bulk.len();
    codec.bulk_start(st.bulk_frames, &mut st.bulk);
    let len = st.bulk.len();
    st.ready.reserve(PREFIX_LEN + len);
    st.ready.put_u32(len as u32);
    st.ready.put_slice(&st.bulk[tail..]);
    st.ready.put_slice(&st.bulk[..frames]);
    st.ready.put_slice(&st.bulk[frames..tail]);
    st.bulk.clear();
    st.bulk_frames = 0;
}

/// The error the callbacks of a frame that could not be queued end with: the
/// same one `emit` returned (a `Reply` saying "closed" for a full queue would
/// send its reader after the wrong cause).
fn refusal(e: &Error) -> Error {
    match e {
        Error::TooManyPending { limit } => Error::TooManyPending { limit: *limit },
        Error::QueueFull { frames, bytes } => Error::QueueFull {
            frames: *frames,
            bytes: *bytes,
        },
        Error::NoRuntime => Error::NoRuntime,
        _ => Error::Closed,
    }
}

fn fail_all(callbacks: impl IntoIterator<Item = (u32, Option<Local>)>, error: impl Fn() -> Error) {
    for cb in callbacks.into_iter().filter_map(|(_, cb)| cb) {
        cb.fail(error());
    }
}

fn handler_error(event: &str, source: crate::handler::BoxError) -> Error {
    Error::Handler {
        event: event.to_owned(),
        source,
    }
}

/// The least time between two look-throughs of the pending frames by the
/// timer (see [`Calls`]): a frame may expire this much after its deadline.
const SCAN_GAP: Duration = Duration::from_millis(10);

/// Drops pending frames whose deadline passed. One task per router, started
/// with the first frame that has callbacks; ends when the router is dropped.
async fn run_timer(router: Weak<Inner>) {
    // Made for the first deadline, then moved to each next one.
    let mut sleep: Option<Pin<Box<tokio::time::Sleep>>> = None;
    // No look-through before this instant (see `Calls`).
    let mut quiet_until: Option<Instant> = None;
    std::future::poll_fn(|cx| loop {
        let Some(inner) = router.upgrade() else {
            return Poll::Ready(());
        };
        let now = Instant::now();
        let (expired, next) = {
            let mut st = inner.state.locked();
            let calls = st.calls.get_or_insert_with(Box::default);
            let mut expired = Vec::new();
            let due = calls.earliest.is_some_and(|e| e <= now);
            if due && quiet_until.is_none_or(|q| q <= now) {
                quiet_until = Some(now + SCAN_GAP);
                let mut earliest = None::<Instant>;
                calls.pending.retain(|_, p| {
                    if p.deadline <= now {
                        expired.push((p.timeout, std::mem::take(&mut p.callbacks)));
                        false
                    } else {
                        earliest = Some(earliest.map_or(p.deadline, |e| e.min(p.deadline)));
                        true
                    }
                });
                calls.earliest = earliest;
            }
            // A due deadline waits for the end of the quiet time.
            let next = calls.earliest.map(|e| quiet_until.map_or(e, |q| e.max(q)));
            calls.timer_armed = next;
            // Registered under the lock that `enqueue` checks `timer_armed`
            // under: an earlier deadline queued from now on wakes this task.
            match &calls.timer {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => calls.timer = Some(cx.waker().clone()),
            }
            (expired, next)
        };
        drop(inner);
        for (timeout, callbacks) in expired {
            fail_all(callbacks, || Error::Timeout(timeout));
        }
        let Some(deadline) = next else {
            return Poll::Pending;
        };
        let sleep = match &mut sleep {
            Some(sleep) => {
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => sleep.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // The deadline has passed: look again.
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_wrap_after_a_billion_and_skip_zero() {
        let r = Router::new();
        r.inner.next_id.store(MAX_ID - 1, Ordering::Relaxed);
        assert_eq!(r.next_id(), MAX_ID);
        assert_eq!(r.next_id(), 1);
        assert_eq!(r.next_id(), 2);
    }

    /// A frame decoded with its data arguments as values (the byte ranges of a
    /// received frame move when its id changes width).
    fn decoded(codec: &dyn Codec, bytes: &[u8]) -> (crate::frame::Frame, Vec<crate::Value>) {
        let mut frames = codec.decode_message(bytes).unwrap().into_frames();
        assert_eq!(frames.len(), 1, "{}", codec.name());
        let frame = frames.pop().unwrap().unwrap();
        let data = frame
            .data
            .iter()
            .map(|r| crate::codec::decode_arg(codec, &bytes[r.clone()]).unwrap())
            .collect();
        (frame, data)
    }

    #[test]
    fn rewriting_the_id_of_encoded_frames() {
        // Ids that grow, shrink and keep their encoded width, in both codecs:
        // MsgPack fixint (< 128), uint8, uint16 and uint32; JSON 1 to 10 digits.
        let ids: [(u32, u32); 10] = [
            (7, 123_456),
            (123_456, 7),
            (5, 9),
            (200, 250),
            (127, 128),
            (300, 65_535),
            (65_536, 255),
            (1_000_000_000, 1),
            (1, 1_000_000_000),
            (99, 100),
        ];
        let text = "some text";
        let list = vec![1u32, 2, 3];
        let number = -2.5f64;
        for codec in [&MsgPack as &dyn Codec, &crate::codec::Json] {
            let data: [&dyn erased_serde::Serialize; 3] = [&text, &list, &number];
            let kinds = [
                OutKind::Event("an event"),
                OutKind::Response {
                    to: 77_000,
                    position: 3,
                },
            ];
            for kind in kinds {
                for (from, to) in ids {
                    let frame = OutFrame {
                        id: from,
                        kind,
                        data: &data,
                        callbacks: &[0, 2],
                        timeout: Some(2.5),
                    };
                    let mut bytes = Vec::new();
                    codec.encode_frame(&frame, &mut bytes).unwrap();
                    let (before, before_data) = decoded(codec, &bytes);
                    assert_eq!(before.id, from);
                    rewrite_first_id(&mut bytes, to).unwrap();
                    let (after, after_data) = decoded(codec, &bytes);
                    let what = format!("{}: {kind:?}, id {from} to {to}", codec.name());
                    assert_eq!(after.id, to, "{what}");
                    assert_eq!(after.kind, before.kind, "{what}");
                    assert_eq!(after.callbacks, before.callbacks, "{what}");
                    assert_eq!(after.timeout, before.timeout, "{what}");
                    assert_eq!(after_data, before_data, "{what}");
                    assert_eq!(
                        after_data,
                        [
                            crate::to_value(&text).unwrap(),
                            crate::to_value(&list).unwrap(),
                            crate::to_value(&number).unwrap()
                        ],
                        "{what}"
                    );
                    // The frame is the one encoded with the new id, byte for byte.
                    let mut direct = Vec::new();
                    codec
                        .encode_frame(&OutFrame { id: to, ..frame }, &mut direct)
                        .unwrap();
                    assert_eq!(bytes, direct, "{what}");
                }
            }
        }
    }
}
