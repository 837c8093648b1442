//! [`ConnectionOptions`]: what a connection does on its side of the router.

use std::sync::Arc;
use std::time::Duration;

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionOptions {
    settings: Arc<Settings>,
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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_message_size: None,
            dispatch_burst: None,
            partial_message_timeout: DEFAULT_PARTIAL_MESSAGE_TIMEOUT,
            idle_timeout: None,
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
