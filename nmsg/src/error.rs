//! Error types, one per layer.

use std::time::Duration;

/// A message or frame that does not follow the wire protocol.
///
/// Reported to the router's error hook; the offending frame is skipped and the
/// router goes on with the next one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The payload could not be decoded by the codec at all.
    #[error("undecodable {codec} payload: {reason}")]
    Undecodable {
        /// The codec's name.
        codec: &'static str,
        /// What the codec reported.
        reason: String,
    },
    /// The message is neither a frame (a map) nor a bulk (an array of frames).
    #[error("a message must be a frame (map) or a bulk (array of frames), got {found}")]
    NotAMessage {
        /// The kind of value that was found.
        found: &'static str,
    },
    /// An element of a bulk message is not a frame.
    #[error("bulk element {index} is not a frame (map), got {found}")]
    NotAFrame {
        /// Position of the element in the bulk.
        index: usize,
        /// The kind of value that was found.
        found: &'static str,
    },
    /// A required key is missing.
    #[error("frame lacks the required key `{key}`")]
    MissingKey {
        /// The one-letter key.
        key: &'static str,
    },
    /// A key holds a value of the wrong type.
    #[error("frame key `{key}` must be {expected}")]
    WrongType {
        /// The one-letter key.
        key: &'static str,
        /// What the protocol expects there.
        expected: &'static str,
    },
    /// A key appears twice in one frame.
    #[error("frame key `{key}` appears twice")]
    DuplicateKey {
        /// The one-letter key.
        key: &'static str,
    },
    /// Callback positions are not strictly ascending.
    #[error("callback positions must be strictly ascending, got {previous} then {next}")]
    CallbackOrder {
        /// The earlier position.
        previous: u64,
        /// The position that does not exceed it.
        next: u64,
    },
    /// A callback position points past the end of the argument list.
    #[error("callback position {position} is past the end of the {len} arguments")]
    CallbackOutOfRange {
        /// The position.
        position: u64,
        /// The length of the full argument list.
        len: usize,
    },
    /// Data nests deeper than the codec allows.
    #[error("data nests deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// A frame has neither an event name nor a response target.
    #[error("frame has no `e` (event) and no `r`/`f` (response)")]
    NeitherEventNorResponse,
}

/// A failure to encode an outgoing frame.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The JSON codec was given binary data, which has no JSON form.
    #[error("binary data has no JSON form: use the MsgPack codec, or encode the bytes (base64, an array of numbers) yourself")]
    BinaryInJson,
    /// The value could not be serialized.
    #[error("cannot serialize argument: {0}")]
    Serialize(String),
    /// The encoded message exceeds the maximum message size.
    #[error("encoded message is {size} bytes, more than the maximum of {max}")]
    TooLarge {
        /// Encoded size in bytes.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
}

/// A failure of the length-prefixed framing of a stream.
///
/// Framing errors close the connection they happen on: the stream is out of sync.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// A length prefix announced more than the maximum message size.
    #[error("length prefix announces more than the maximum message size of {max} bytes")]
    TooLarge {
        /// The configured maximum.
        max: usize,
    },
    /// A length prefix of zero, which the protocol does not allow.
    #[error("zero-length message")]
    Empty,
    /// The stream ended in the middle of a message.
    #[error("stream ended in the middle of a message")]
    Truncated,
    /// An I/O error on the stream.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A message begun was not whole within the connection's
    /// [`partial_message_timeout`](crate::transport::ConnectionOptions::partial_message_timeout):
    /// the peer sends too slowly or stopped in the middle of a message.
    #[error("a message begun was not whole within {timeout:?} (the partial message timeout; raise it for slow peers sending large messages)")]
    Stalled {
        /// The timeout.
        timeout: Duration,
    },
}

/// The error type of nmsg's public API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A received message or frame broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// Several frames of one bulk message broke the protocol: reported once,
    /// as a summary, when the message has been routed (its good frames were).
    /// A message with one bad frame reports [`Error::Protocol`] instead.
    #[error("{count} frames of a bulk message broke the protocol; the first: {}", list_errors(.first))]
    MalformedFrames {
        /// How many frames of the message were bad.
        count: usize,
        /// The errors of the first of them, in order: at most
        /// [`REPORTED_FRAME_ERRORS`](crate::frame::REPORTED_FRAME_ERRORS).
        first: Vec<ProtocolError>,
    },
    /// An outgoing frame could not be encoded; nothing was sent.
    #[error("encode error: {0}")]
    Encode(#[from] EncodeError),
    /// The byte stream's framing broke; the connection was closed.
    #[error("framing error: {0}")]
    Framing(#[from] FramingError),
    /// A received argument is missing or does not have the type asked for.
    #[error("argument {index}: {reason}")]
    Argument {
        /// Position in the full argument list.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A callback was invoked a second time; nothing was sent.
    #[error("callback at position {position} of frame {frame} was already invoked; a callback can be invoked once")]
    AlreadyInvoked {
        /// The id of the frame the callback came with.
        frame: u32,
        /// Its position in that frame's arguments.
        position: u32,
    },
    /// Too many frames with callbacks are waiting for answers.
    #[error("{limit} frames with callbacks are already pending; wait for answers or raise `max_pending`")]
    TooManyPending {
        /// The configured limit.
        limit: usize,
    },
    /// The outgoing queue is full.
    #[error("outgoing queue is full ({frames} frames, {bytes} bytes queued); wait for the connection or use `emit_wait`")]
    QueueFull {
        /// Frames queued.
        frames: usize,
        /// Bytes queued.
        bytes: usize,
    },
    /// One frame is larger than the outgoing queue's byte bound
    /// ([`max_queued_bytes`](crate::RouterBuilder::max_queued_bytes)): no
    /// room will ever come for it, so `emit` and `emit_wait` refuse it at once.
    #[error("a frame of {size} bytes can never fit the outgoing queue (max_queued_bytes = {max_queued_bytes})")]
    FrameExceedsQueue {
        /// The encoded frame's size.
        size: usize,
        /// The queue's byte bound.
        max_queued_bytes: usize,
    },
    /// Frames were lost with a connection: reported to the error hook of a
    /// router that a [`Connection`](crate::transport::Connection) drives (a
    /// [`Client`](crate::Client) reports them as
    /// [`ClientEvent::Lost`](crate::ClientEvent::Lost) instead; a server
    /// socket's router gets one count when the socket ends, with the frames
    /// still queued then, also sent as
    /// [`ServerEvent::Lost`](crate::ServerEvent::Lost)). They are the
    /// messages the connection had taken and not written whole (a message
    /// written in part is lost whole), and the responses still queued for
    /// it, which mean nothing on another connection. Frames with callbacks
    /// among them also fail their callbacks with [`Error::Disconnected`].
    #[error("{frames} frames ({bytes} bytes) were lost with the connection: {reason}")]
    FramesLost {
        /// How many frames.
        frames: usize,
        /// Their bytes as they would have gone on the wire (length prefixes
        /// and bulk headers included).
        bytes: usize,
        /// Why the connection ended.
        reason: Disconnect,
    },
    /// A callback was not invoked by the peer before its timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection that carried the frame dropped before the answer came.
    #[error("disconnected before the answer came: {0}")]
    Disconnected(Disconnect),
    /// The session that carried the frame was lost (its window passed on
    /// the server, or the server restarted), so the answer will never come.
    /// Within a session, a broken connection fails nothing: the client
    /// resumes and the answer comes then ([`crate::SessionOptions`]).
    #[error("the session was lost before the answer came ({reason}); the call may or may not have run on the peer")]
    SessionLost {
        /// Why the session was lost.
        reason: String,
    },
    /// A client with sessions connected to a server that did not answer its
    /// `hello` within the hello timeout: the server does not support
    /// sessions. Start the server with sessions, or the client without.
    #[error("the server does not support sessions: no welcome within {0:?}; start the server with `.session(..)`, or the client without it")]
    SessionsUnsupported(Duration),
    /// The server rejected this client's credentials
    /// ([`ClientBuilder::credentials`](crate::ClientBuilder::credentials)),
    /// or found none where it requires them; it closed the connection. The
    /// client tries again after its backoff, with credentials asked anew.
    #[error("the server rejected the authentication: {reason}")]
    AuthRejected {
        /// The server's reason.
        reason: String,
    },
    /// The router was closed.
    #[error("the router is closed")]
    Closed,
    /// A handler returned an error.
    #[error("handler for `{event}` failed: {source}")]
    Handler {
        /// The event whose handler failed.
        event: String,
        /// The handler's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A handler, wiretap, callback or hook panicked. The connection goes on.
    #[error("{} panicked: {message}", .what.subject(event))]
    HandlerPanicked {
        /// What panicked.
        what: Panicked,
        /// The event whose handler or wiretap panicked; empty for a callback
        /// and for the server's `on_socket` hook.
        event: String,
        /// The panic message, if it was a string.
        message: String,
    },
    /// No handler serves an event. A router does not report this: it
    /// ignores such events and counts them
    /// ([`Router::unhandled_events`](crate::Router::unhandled_events)).
    #[error("no handler for event `{0}`")]
    Unhandled(String),
    /// A response arrived for a frame or callback that is unknown, finished or already answered.
    #[error("response to frame {frame} position {position}, which has no live callback")]
    StrayResponse {
        /// The frame id the response names.
        frame: u32,
        /// The callback position it names.
        position: u32,
    },
    /// A server could not bind its address, and retrying cannot fix it (see
    /// [`Server::started`](crate::Server::started)).
    #[error("cannot bind {address}: {source}")]
    Bind {
        /// The address, as its transport writes it.
        address: String,
        /// The error of the bind.
        source: std::sync::Arc<std::io::Error>,
    },
    /// A callback needs a tokio runtime for its timeout, and none is running.
    #[error("callbacks need a tokio runtime: emit from within one")]
    NoRuntime,
}

/// The errors of [`Error::MalformedFrames`], joined for its message.
fn list_errors(errors: &[ProtocolError]) -> String {
    let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    list.join("; ")
}

impl Error {
    /// True for errors that mean the peer is gone or never answered
    /// (`Timeout`, `Disconnected`, `SessionLost`, `Closed`).
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            Error::Timeout(_) | Error::Disconnected(_) | Error::SessionLost { .. } | Error::Closed
        )
    }

    /// [`Error::Disconnected`] for a connection that ended for `reason`,
    /// not an I/O error.
    pub(crate) fn disconnected(reason: impl Into<String>) -> Self {
        Error::Disconnected(Disconnect::new(None, reason))
    }

    pub(crate) fn argument(index: usize, reason: impl std::fmt::Display) -> Self {
        Error::Argument {
            index,
            reason: reason.to_string(),
        }
    }
}

/// What panicked, in an [`Error::HandlerPanicked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Panicked {
    /// The handler of an event (set with `on`, an [`Api`](crate::Api) method
    /// or the wildcard's).
    Handler,
    /// The router's wiretap.
    Wiretap,
    /// A callback this side sent, invoked by the peer.
    Callback,
    /// The server's `on_socket` hook.
    SocketHook,
}

impl Panicked {
    /// What the error's message names.
    fn subject(self, event: &str) -> String {
        match self {
            Panicked::Handler => format!("handler for `{event}`"),
            Panicked::Wiretap => format!("wiretap for `{event}`"),
            Panicked::Callback => "callback".to_owned(),
            Panicked::SocketHook => "on_socket hook".to_owned(),
        }
    }
}

/// Why the connection of an [`Error::Disconnected`] ended.
///
/// ```
/// # fn check(error: nmsg::Error) {
/// if let nmsg::Error::Disconnected(why) = &error {
///     if why.kind() == Some(std::io::ErrorKind::ConnectionReset) {
///         // The peer reset the connection.
///     }
///     println!("{why}");
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    kind: Option<std::io::ErrorKind>,
    reason: String,
}

impl Disconnect {
    /// A connection that ended for `reason`; `kind` when an I/O error of that
    /// kind ended it.
    pub fn new(kind: Option<std::io::ErrorKind>, reason: impl Into<String>) -> Self {
        Disconnect {
            kind,
            reason: reason.into(),
        }
    }

    /// The kind of the I/O error that ended the connection, when one did
    /// (not when the peer closed it or it was closed here).
    pub fn kind(&self) -> Option<std::io::ErrorKind> {
        self.kind
    }

    /// Why the connection ended, as the connection says it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl std::fmt::Display for Disconnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl From<&std::io::Error> for Disconnect {
    fn from(error: &std::io::Error) -> Self {
        Disconnect::new(Some(error.kind()), error.to_string())
    }
}
