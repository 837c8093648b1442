//! Tracing spans and metrics: what nmsg tells the observability stacks an
//! application already has.
//!
//! nmsg installs neither a subscriber nor a recorder: it speaks through the
//! [`tracing`] and [`metrics`] facades, and costs nothing more than a check
//! per message when nobody listens (no span is built, no field formatted,
//! nothing allocated).
//!
//! ## Spans
//!
//! At `DEBUG` level, with the fields OpenTelemetry layers (such as
//! `tracing-opentelemetry`) read: `otel.name`, `otel.kind`, `rpc.system =
//! "nmsg"`, `rpc.method`, and `network.peer.address` when the router belongs
//! to a client's or a server's connection made while `DEBUG` tracing was on
//! (a connection keeps no copy of its peer's address otherwise).
//!
//! | span | when | `otel.kind` | fields |
//! | --- | --- | --- | --- |
//! | `nmsg.emit` | an event is emitted (`emit`, `request`, …) | `client` with callbacks, `producer` without | `nmsg.event`, `nmsg.frame_id` |
//! | `nmsg.handle` | a handler runs for an incoming event (an async one: each poll) | `server` with callbacks, `consumer` without | `nmsg.event`, `nmsg.frame_id` |
//! | `nmsg.callback` | a callback of ours runs, invoked by the peer | `server` with callbacks, `consumer` without | `nmsg.frame_id`, `nmsg.callback.frame`, `nmsg.callback.position` |
//! | `nmsg.respond` | we invoke a callback of the peer's (a response goes out) | `client` with callbacks, `producer` without | `nmsg.frame_id`, `nmsg.callback.frame`, `nmsg.callback.position` |
//!
//! The connection lifecycle comes as events with fields (`peer`, `address`,
//! `reason`, `error`, `attempt`, `delay`): `nmsg client connected` (with
//! `reconnect`), `nmsg client cannot connect`, `nmsg client disconnected`,
//! `nmsg client backing off`, `nmsg server listening`, `nmsg server accepted
//! a connection`, `nmsg connection closed` (all `DEBUG`), and `nmsg server
//! refused a connection: at its limit` (`WARN`).
//!
//! ## Metrics
//!
//! Through the [`metrics`] facade, without labels. The handles are
//! registered once per process, not looked up per message: when the first
//! router is built (a client's when the client is made, a server's socket's
//! when it is accepted); every router counts into them, and an idle
//! connection holds none. So install the recorder before making routers,
//! clients and servers. [`describe_metrics`] gives the recorder the descriptions and units.
//!
//! | name | kind | what |
//! | --- | --- | --- |
//! | `nmsg_frames_received_total` | counter | frames received (each frame of a bulk) |
//! | `nmsg_bytes_received_total` | counter | bytes of the messages received, length prefixes included |
//! | `nmsg_frames_sent_total` | counter | frames taken by a transport to write |
//! | `nmsg_bytes_sent_total` | counter | bytes taken by a transport to write, length prefixes included |
//! | `nmsg_calls_in_flight` | gauge | frames sent with callbacks that wait for an answer |
//! | `nmsg_queued_frames` | gauge | frames in outgoing queues, not yet taken by a transport |
//! | `nmsg_callback_timeouts_total` | counter | frames whose callbacks timed out unanswered |
//! | `nmsg_frames_lost_total` | counter | frames lost with a connection (taken and not written whole, or queued for it and dropped) |
//! | `nmsg_bytes_lost_total` | counter | their bytes |
//! | `nmsg_reconnects_total` | counter | connections a client made after its first |
//! | `nmsg_connections` | gauge | connections open on servers |
//! | `nmsg_connections_refused_total` | counter | connections a server refused at its limit |
//!
//! Per message, the counting is one branch per handle when no recorder is
//! installed; outgoing frames and bytes are counted once per batch a
//! transport takes.

use std::fmt;

use metrics::{Counter, Gauge, Unit};

/// Frames received (each frame of a bulk).
pub const FRAMES_RECEIVED: &str = "nmsg_frames_received_total";
/// Bytes of the messages received, length prefixes included.
pub const BYTES_RECEIVED: &str = "nmsg_bytes_received_total";
/// Frames taken by a transport to write.
pub const FRAMES_SENT: &str = "nmsg_frames_sent_total";
/// Bytes taken by a transport to write, length prefixes included.
pub const BYTES_SENT: &str = "nmsg_bytes_sent_total";
/// Frames sent with callbacks that wait for an answer (a gauge).
pub const CALLS_IN_FLIGHT: &str = "nmsg_calls_in_flight";
/// Frames in outgoing queues, not yet taken by a transport (a gauge).
pub const QUEUED_FRAMES: &str = "nmsg_queued_frames";
/// Frames whose callbacks timed out unanswered.
pub const CALLBACK_TIMEOUTS: &str = "nmsg_callback_timeouts_total";
/// Frames lost with a connection.
pub const FRAMES_LOST: &str = "nmsg_frames_lost_total";
/// Bytes of the frames lost with a connection.
pub const BYTES_LOST: &str = "nmsg_bytes_lost_total";
/// Connections a client made after its first.
pub const RECONNECTS: &str = "nmsg_reconnects_total";
/// Connections open on servers (a gauge).
pub const CONNECTIONS: &str = "nmsg_connections";
/// Connections a server refused: at its limit, or a peer `allow_uids` does not allow.
pub const CONNECTIONS_REFUSED: &str = "nmsg_connections_refused_total";

/// Gives the installed recorder the description and unit of every metric
/// nmsg records (the table above). Optional: the metrics are recorded
/// without it.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        FRAMES_RECEIVED,
        Unit::Count,
        "Frames received (each frame of a bulk)."
    );
    describe_counter!(
        BYTES_RECEIVED,
        Unit::Bytes,
        "Bytes of the messages received, length prefixes included."
    );
    describe_counter!(
        FRAMES_SENT,
        Unit::Count,
        "Frames taken by a transport to write."
    );
    describe_counter!(
        BYTES_SENT,
        Unit::Bytes,
        "Bytes taken by a transport to write, length prefixes included."
    );
    describe_gauge!(
        CALLS_IN_FLIGHT,
        Unit::Count,
        "Frames sent with callbacks that wait for an answer."
    );
    describe_gauge!(
        QUEUED_FRAMES,
        Unit::Count,
        "Frames in outgoing queues, not yet taken by a transport."
    );
    describe_counter!(
        CALLBACK_TIMEOUTS,
        Unit::Count,
        "Frames whose callbacks timed out unanswered."
    );
    describe_counter!(FRAMES_LOST, Unit::Count, "Frames lost with a connection.");
    describe_counter!(
        BYTES_LOST,
        Unit::Bytes,
        "Bytes of the frames lost with a connection."
    );
    describe_counter!(
        RECONNECTS,
        Unit::Count,
        "Connections a client made after its first."
    );
    describe_gauge!(CONNECTIONS, Unit::Count, "Connections open on servers.");
    describe_counter!(
        CONNECTIONS_REFUSED,
        Unit::Count,
        "Connections a server refused: at its limit, or not allowed."
    );
}

/// True when a subscriber may want nmsg's `DEBUG` spans: a load and a
/// compare (the global level filter is off, or below `DEBUG`, when nobody
/// listens). The spans are built on paths of their own behind it, so that
/// the path of a message with nobody listening builds, enters and drops no
/// span at all. (`tracing::debug_span!` alone would build a disabled span
/// and, when tracing's `log` feature is on, as tarpc turns it on in this
/// workspace, and no subscriber was ever set, evaluate and record every
/// field of it.)
#[inline]
pub(crate) fn spans_wanted() -> bool {
    tracing::Level::DEBUG <= tracing::level_filters::STATIC_MAX_LEVEL
        && tracing::Level::DEBUG <= tracing::level_filters::LevelFilter::current()
}

/// The handles routers count their messages with, registered once ([`meters`]):
/// counting a message is no key lookup, and, with no recorder installed, one
/// branch per handle.
pub(crate) struct Meters {
    pub(crate) frames_received: Counter,
    pub(crate) bytes_received: Counter,
    pub(crate) frames_sent: Counter,
    pub(crate) bytes_sent: Counter,
    pub(crate) in_flight: Gauge,
    pub(crate) queued: Gauge,
}

impl Meters {
    pub(crate) fn register() -> Meters {
        Meters {
            frames_received: metrics::counter!(FRAMES_RECEIVED),
            bytes_received: metrics::counter!(BYTES_RECEIVED),
            frames_sent: metrics::counter!(FRAMES_SENT),
            bytes_sent: metrics::counter!(BYTES_SENT),
            in_flight: metrics::gauge!(CALLS_IN_FLIGHT),
            queued: metrics::gauge!(QUEUED_FRAMES),
        }
    }
}

/// The process's metrics handles, registered with the recorder in place when
/// the first router is made (the metrics carry no labels: every router counts
/// into the same ones).
pub(crate) fn meters() -> &'static Meters {
    static METERS: std::sync::OnceLock<Meters> = std::sync::OnceLock::new();
    METERS.get_or_init(Meters::register)
}

impl fmt::Debug for Meters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Meters").finish_non_exhaustive()
    }
}

/// Frames whose callbacks timed out (rare: the handle is looked up then).
pub(crate) fn callback_timeouts(frames: u64) {
    if frames > 0 {
        metrics::counter!(CALLBACK_TIMEOUTS).increment(frames);
    }
}

/// Frames lost with a connection, and their bytes (rare: looked up then).
pub(crate) fn lost(frames: u64, bytes: u64) {
    if frames > 0 {
        metrics::counter!(FRAMES_LOST).increment(frames);
        metrics::counter!(BYTES_LOST).increment(bytes);
    }
}

/// The `otel.kind` of a span for a frame sent, with callbacks or not.
pub(crate) fn outgoing_kind(with_callbacks: bool) -> &'static str {
    if with_callbacks {
        "client"
    } else {
        "producer"
    }
}

/// The `otel.kind` of a span for a frame received, with callbacks or not.
pub(crate) fn incoming_kind(with_callbacks: bool) -> &'static str {
    if with_callbacks {
        "server"
    } else {
        "consumer"
    }
}
