//! [`ConnectionOptions`]: what a connection does on its side of the router.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::sync::MutexExt;

/// Default [`ConnectionOptions::partial_message_timeout`]: 30 s.
pub const DEFAULT_PARTIAL_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of one connection: how it reads and when it writes, as opposed to
/// the router's options (codec, buffering, bounds of the queue). A
/// [`Client`](crate::Client) and a [`Server`](crate::Server) pass theirs on to
/// every connection they make; [`Connection::spawn_with`](super::Connection::spawn_with)
/// takes them for a stream of one's own.
///
/// Cheap to clone: the connections made with one set of options share one
/// copy of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionOptions {
    settings: Arc<Settings>,
}

impl Default for ConnectionOptions {
    /// The defaults, one copy shared by every connection left at them (so a
    /// client made with the defaults allocates none).
    fn default() -> Self {
        static DEFAULT: std::sync::OnceLock<Arc<Settings>> = std::sync::OnceLock::new();
        ConnectionOptions {
            settings: DEFAULT.get_or_init(Arc::default).clone(),
        }
    }
}

/// What [`ConnectionOptions`] set, shared by the connections made with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    /// `None`: the router's [`max_message_size`](crate::RouterBuilder::max_message_size).
    max_message_size: Option<usize>,
    /// `None`: the default rule (see [`ConnectionOptions::dispatch_burst`]).
    dispatch_burst: Option<usize>,
    pub(crate) partial_message_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    /// Shared by every connection made with these options (and their clones).
    pub(crate) budget: Option<Arc<Budget>>,
    /// `None`: [`DEFAULT_STOP_TIMEOUT`](crate::DEFAULT_STOP_TIMEOUT).
    stop_timeout: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_message_size: None,
            dispatch_burst: None,
            partial_message_timeout: DEFAULT_PARTIAL_MESSAGE_TIMEOUT,
            idle_timeout: None,
            budget: None,
            stop_timeout: None,
        }
    }
}

impl ConnectionOptions {
    /// The defaults: messages up to the router's maximum size are accepted,
    /// the dispatch burst follows the machine, a message begun must be whole
    /// within 30 s, and a connection may stay idle for ever.
    pub fn new() -> Self {
        Self::default()
    }

    fn edit(mut self, edit: impl FnOnce(&mut Settings)) -> Self {
        edit(Arc::make_mut(&mut self.settings));
        self
    }

    /// The largest message the connection accepts; a peer that announces a
    /// larger one is disconnected (default: the router's
    /// [`max_message_size`](crate::RouterBuilder::max_message_size)).
    pub fn max_message_size(self, max: usize) -> Self {
        self.edit(|s| s.max_message_size = Some(max.min(crate::framing::MAX_MESSAGE_SIZE_LIMIT)))
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
    /// depends on where the two ends run and how many calls are in flight;
    /// BENCHMARKS.md (item 13) has the measurements behind the default, and
    /// `examples/burst.rs` measures it.
    pub fn dispatch_burst(self, messages: usize) -> Self {
        self.edit(|s| s.dispatch_burst = Some(messages.max(1)))
    }

    /// How long a message may take to arrive whole once its first byte has
    /// (default [`DEFAULT_PARTIAL_MESSAGE_TIMEOUT`], 30 s). A peer that
    /// begins a message and then sends too slowly, or not at all, holds a
    /// connection slot and the message's buffer: past this time the
    /// connection is closed ([`CloseReason::Framing`](super::CloseReason::Framing),
    /// and [`FramingError::Stalled`](crate::FramingError::Stalled) to the
    /// error hook). `Duration::MAX` waits for ever.
    ///
    /// The time counts while the connection reads: while it does not (its
    /// router's queue is full or its handlers are at their bound, see
    /// [`Link::poll_read_ready`](super::Link::poll_read_ready)) it stops, and
    /// the message gets the whole time again once reading goes on. Raise it
    /// for peers that send messages of many megabytes over slow links.
    pub fn partial_message_timeout(self, timeout: Duration) -> Self {
        self.edit(|s| s.partial_message_timeout = timeout)
    }

    /// Closes the connection when no byte has arrived for this long
    /// (default: none, an idle connection stays open). The connection ends
    /// with [`CloseReason::Io`](super::CloseReason::Io) of kind `TimedOut`.
    /// As for [`partial_message_timeout`](Self::partial_message_timeout),
    /// the time counts only while the connection reads. A client that only
    /// listens learns this way that its server is gone (with TCP keepalive,
    /// [`Tcp::keepalive`](super::Tcp::keepalive), the system notices a dead
    /// peer, however long the connection is quiet).
    pub fn idle_timeout(self, timeout: Duration) -> Self {
        self.edit(|s| s.idle_timeout = Some(timeout))
    }

    /// At most this many bytes buffered by all the connections made with
    /// these options (and their clones) together, beyond one read buffer
    /// (8 KiB) each: the buffers of large messages being received, and what
    /// was taken from the routers' queues to write, in chunks of more than
    /// 8 KiB, and is not written yet (default: no bound; a
    /// [`Server`](crate::Server)'s sockets share one of 1 GiB, see
    /// [`ServerBuilder::max_buffered_bytes`](crate::ServerBuilder::max_buffered_bytes)).
    ///
    /// While the total is over it, a connection whose message needs a larger
    /// buffer waits for room before it reads on (its partial message timeout
    /// runs meanwhile, so that the ones that hold the budget and never finish
    /// let it go), and a connection with such a chunk unwritten pauses
    /// reading. Small messages and small writes never wait for it: what
    /// passes through one read buffer costs no shared counter. A message
    /// larger than the whole budget is read when nothing else holds any.
    pub fn max_buffered_bytes(self, max: usize) -> Self {
        self.edit(|s| s.budget = Some(Arc::new(Budget::new(max))))
    }

    /// How long a graceful close ([`Connection::close`](super::Connection::close))
    /// may take: writing what is queued, shutting the stream down, and reading
    /// (and discarding) what the peer still sends until it closes its side.
    /// At the bound the connection is dropped; what it had not written is
    /// counted as lost ([`Error::FramesLost`](crate::Error::FramesLost)).
    /// Default [`DEFAULT_STOP_TIMEOUT`](crate::DEFAULT_STOP_TIMEOUT), 5 s. A
    /// server's sockets take the server's
    /// [`stop_timeout`](crate::ServerBuilder::stop_timeout) instead.
    pub fn stop_timeout(self, timeout: Duration) -> Self {
        self.edit(|s| s.stop_timeout = Some(timeout))
    }

    /// The bound of a graceful close, the default applied.
    pub(crate) fn stop_bound(&self) -> Duration {
        self.settings
            .stop_timeout
            .unwrap_or(crate::lifecycle::DEFAULT_STOP_TIMEOUT)
    }

    /// The read limit for a connection of a router whose limit is `router_max`.
    pub(crate) fn max_message_size_for(&self, router_max: usize) -> usize {
        self.settings.max_message_size.unwrap_or(router_max)
    }

    /// The shared settings, for a connection's driver.
    pub(crate) fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }
}

impl Settings {
    /// The dispatch burst, the default rule applied.
    pub(crate) fn burst(&self) -> usize {
        self.dispatch_burst.unwrap_or_else(default_dispatch_burst)
    }
}

/// Messages a connection dispatches before it writes what their handlers
/// queued, even when more have arrived, unless its options say otherwise
/// ([`ConnectionOptions::dispatch_burst`]). Why 14: BENCHMARKS.md, item 13.
const DISPATCH_BURST: usize = 14;

/// [`DISPATCH_BURST`], or no limit when this process can use one CPU only:
/// no peer can run meanwhile, and the extra writes are pure cost.
fn default_dispatch_burst() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| match std::thread::available_parallelism() {
        Ok(cpus) if cpus.get() == 1 => usize::MAX,
        _ => DISPATCH_BURST,
    })
}

/// A byte budget shared by connections ([`ConnectionOptions::max_buffered_bytes`]):
/// a counter, and the tasks waiting for it to fall. Touched only when a
/// buffer beyond a read buffer is made or let go, never per message.
pub(crate) struct Budget {
    max: usize,
    used: AtomicUsize,
    /// Some task waits in `waiting`: a release wakes them.
    has_waiting: AtomicBool,
    waiting: Mutex<Vec<Waker>>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("max", &self.max)
            .field("used", &self.used())
            .finish()
    }
}

/// Budgets are the same when they are one budget.
impl PartialEq for Budget {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Budget {}

impl Budget {
    pub(crate) fn new(max: usize) -> Self {
        Budget {
            max,
            used: AtomicUsize::new(0),
            has_waiting: AtomicBool::new(false),
            waiting: Mutex::new(Vec::new()),
        }
    }

    /// The bytes counted now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// True while more than the budget is counted.
    pub(crate) fn is_over(&self) -> bool {
        self.used() > self.max
    }

    /// Counts `bytes` more, whatever the total.
    pub(crate) fn charge(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Counts `bytes` more if they fit (or nothing else is counted); else
    /// pending, the task woken when some are released.
    pub(crate) fn poll_charge(&self, bytes: usize, cx: &mut Context<'_>) -> Poll<()> {
        if self.try_charge(bytes) {
            return Poll::Ready(());
        }
        self.wait(cx);
        // Looked at again once the waker is in: a release in between woke no one.
        if self.try_charge(bytes) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn try_charge(&self, bytes: usize) -> bool {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            if used != 0 && used.saturating_add(bytes) > self.max {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Ready once the total is within the budget; else the task is woken
    /// when some bytes are released.
    pub(crate) fn poll_within(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.is_over() {
            return Poll::Ready(());
        }
        self.wait(cx);
        if self.is_over() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    fn wait(&self, cx: &mut Context<'_>) {
        let mut waiting = self.waiting.locked();
        if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
            waiting.push(cx.waker().clone());
        }
        self.has_waiting.store(true, Ordering::Release);
    }

    /// Counts `bytes` fewer, and wakes the tasks that wait for room.
    pub(crate) fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        if self.has_waiting.load(Ordering::Acquire) {
            let woken = {
                let mut waiting = self.waiting.locked();
                self.has_waiting.store(false, Ordering::Release);
                std::mem::take(&mut *waiting)
            };
            for waker in woken {
                waker.wake();
            }
        }
    }
}
