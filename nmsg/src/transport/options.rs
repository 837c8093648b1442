//! [`ConnectionOptions`]: what a connection does on its side of the router.

/// Options of one connection: how it reads and when it writes, as opposed to
/// the router's options (codec, buffering, bounds of the queue). A
/// [`Client`](crate::Client) and a [`Server`](crate::Server) pass theirs on to
/// every connection they make; [`Connection::spawn_with`](super::Connection::spawn_with)
/// takes them for a stream of one's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// `None`: the router's [`max_message_size`](crate::RouterBuilder::max_message_size).
    max_message_size: Option<usize>,
    /// `None`: the default rule (see [`ConnectionOptions::dispatch_burst`]).
    dispatch_burst: Option<usize>,
}

impl ConnectionOptions {
    /// The defaults: messages up to the router's maximum size are accepted,
    /// and the dispatch burst follows the machine.
    pub fn new() -> Self {
        Self::default()
    }

    /// The largest message the connection accepts; a peer that announces a
    /// larger one is disconnected (default: the router's
    /// [`max_message_size`](crate::RouterBuilder::max_message_size)).
    pub fn max_message_size(mut self, max: usize) -> Self {
        self.max_message_size = Some(max.min(crate::framing::MAX_MESSAGE_SIZE_LIMIT));
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
    /// depends on where the two ends run and how many calls are in flight;
    /// BENCHMARKS.md (item 13) has the measurements behind the default, and
    /// `examples/burst.rs` measures it.
    pub fn dispatch_burst(mut self, messages: usize) -> Self {
        self.dispatch_burst = Some(messages.max(1));
        self
    }

    /// The read limit for a connection of a router whose limit is `router_max`.
    pub(crate) fn max_message_size_for(&self, router_max: usize) -> usize {
        self.max_message_size.unwrap_or(router_max)
    }

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
