//! The router's options: [`RouterBuilder`], its defaults, and [`Buffering`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::{BulkForm, Codec, MsgPack};
use crate::frame::DEFAULT_TIMEOUT_SECS;
use crate::framing::DEFAULT_MAX_MESSAGE_SIZE;

use super::Router;

/// Default [`RouterBuilder::max_pending`].
pub const DEFAULT_MAX_PENDING: usize = 65_536;
/// Default [`RouterBuilder::max_queued_frames`].
pub const DEFAULT_MAX_QUEUED_FRAMES: usize = 10_000;
/// Default [`RouterBuilder::max_queued_bytes`].
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
/// Default [`RouterBuilder::max_running_handlers`].
pub const DEFAULT_MAX_RUNNING_HANDLERS: usize = 1_024;
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
    /// as one bulk, as the original's buffered router does (10 ms there). The
    /// router seals the bulk; the transport keeps the time
    /// ([`Link`](crate::transport::Link)).
    Cycle(Duration),
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

/// What a [`RouterBuilder`] sets; read by the router's parts.
#[derive(Clone)]
pub(super) struct Options {
    pub(super) codec: Arc<dyn Codec>,
    pub(super) buffering: Buffering,
    pub(super) default_timeout: Duration,
    pub(super) latency_allowance: Duration,
    pub(super) max_pending: usize,
    pub(super) max_message_size: usize,
    pub(super) max_queued_frames: usize,
    pub(super) max_queued_bytes: usize,
    pub(super) max_running_handlers: usize,
    /// `None`: the peer's (see [`RouterBuilder::bulk_form`]).
    pub(super) bulk_form: Option<BulkForm>,
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
            .field("max_running_handlers", &o.max_running_handlers)
            .field("bulk_form", &o.bulk_form)
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
                max_running_handlers: DEFAULT_MAX_RUNNING_HANDLERS,
                bulk_form: None,
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
    /// with callbacks fails with [`Error::TooManyPending`](crate::Error::TooManyPending).
    pub fn max_pending(mut self, max: usize) -> Self {
        Arc::make_mut(&mut self.opts).max_pending = max;
        self
    }

    /// The largest message this router encodes, and the default of what its
    /// connections accept (default 16 MiB;
    /// [`ConnectionOptions::max_message_size`](crate::transport::ConnectionOptions::max_message_size)
    /// sets a connection's own).
    pub fn max_message_size(mut self, max: usize) -> Self {
        Arc::make_mut(&mut self.opts).max_message_size =
            max.min(crate::framing::MAX_MESSAGE_SIZE_LIMIT);
        self
    }

    /// At most this many frames wait in the outgoing queue, for example while
    /// a client is disconnected (default [`DEFAULT_MAX_QUEUED_FRAMES`], 10,000).
    /// Once the queue holds half of this (or half of
    /// [`max_queued_bytes`](RouterBuilder::max_queued_bytes)), the transport
    /// reads nothing more from the peer until the queue is taken, so that a
    /// peer that does not read its answers waits, and the answers of what was
    /// read still find room.
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

    /// At most this many of the router's async handlers run at once (default
    /// [`DEFAULT_MAX_RUNNING_HANDLERS`], 1,024). While that many run, the
    /// transport reads nothing more from the peer
    /// ([`Link::poll_read_ready`](crate::transport::Link::poll_read_ready)),
    /// so a peer that sends requests faster than its handlers finish waits
    /// instead of growing this process. Sync handlers do not count. 0 is
    /// taken as 1.
    pub fn max_running_handlers(mut self, max: usize) -> Self {
        Arc::make_mut(&mut self.opts).max_running_handlers = max.max(1);
        self
    }

    /// Fixes the form of the bulk messages the router sends
    /// ([`Buffering::Idle`] and [`Buffering::Cycle`]). By default it sends
    /// its peer's: arrays until the peer sends a bulk, then the form of the
    /// peer's last bulk, so a peer of the original's first release (nmsg
    /// 1.0.2, whose bulks are `{"b": [frames]}` and which reads no other)
    /// gets bulks it reads once it has sent one, as it does first: it
    /// buffers everything. Fix [`BulkForm::Keyed`] for a router that may
    /// send a bulk to such a peer before hearing from it (a client whose
    /// buffering is on).
    pub fn bulk_form(mut self, form: BulkForm) -> Self {
        Arc::make_mut(&mut self.opts).bulk_form = Some(form);
        self
    }

    /// Builds the router.
    pub fn build(self) -> Router {
        Router::with_options(self.opts)
    }

    /// Builds a router that starts with the routes of `initial`, sharing
    /// them (no allocation) until it changes its own.
    pub(crate) fn build_with(&self, initial: &super::routes::InitialRoutes) -> Router {
        Router::with_routes(
            self.opts.clone(),
            super::routes::RouteTable::with_initial(initial),
        )
    }
}
