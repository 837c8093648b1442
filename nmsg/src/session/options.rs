//! [`SessionOptions`]: the bounds and timers of sessions, with their defaults.

use std::time::Duration;

/// Default [`SessionOptions::max_replay_messages`].
pub const DEFAULT_MAX_REPLAY_MESSAGES: usize = 10_000;
/// Default [`SessionOptions::max_replay_bytes`]: 64 MiB.
pub const DEFAULT_MAX_REPLAY_BYTES: usize = 64 << 20;
/// Default [`SessionOptions::max_replay_age`]: 2 minutes.
pub const DEFAULT_MAX_REPLAY_AGE: Duration = Duration::from_secs(120);
/// Default [`SessionOptions::window`]: 2 minutes.
pub const DEFAULT_SESSION_WINDOW: Duration = Duration::from_secs(120);
/// Default [`SessionOptions::ack_delay`]: 100 ms.
pub const DEFAULT_ACK_DELAY: Duration = Duration::from_millis(100);
/// Default [`SessionOptions::ack_count`].
pub const DEFAULT_ACK_COUNT: u64 = 2048;
/// Default [`SessionOptions::heartbeat_interval`]: 25 s.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(25);
/// Default [`SessionOptions::heartbeat_timeout`]: 20 s.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(20);
/// Default [`SessionOptions::hello_timeout`]: 5 s.
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`SessionOptions::hello_wait`]: 1 s.
pub const DEFAULT_HELLO_WAIT: Duration = Duration::from_secs(1);

/// What becomes of the plain emits (events without callbacks) that the peer
/// had not acknowledged when a session is lost (its window passed, the
/// server restarted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Unacked {
    /// Sent again on the new session: at least once, so the peer may see
    /// some twice; counted as possibly duplicated (default).
    #[default]
    Resend,
    /// Dropped, and counted as lost.
    Drop,
}

/// The options of sessions ([`ClientBuilder::session`](crate::ClientBuilder::session),
/// [`ServerBuilder::session`](crate::ServerBuilder::session)): a handshake,
/// numbered messages kept until acknowledged, resume after a broken
/// connection, heartbeats. See [`protocol`](crate::protocol#sessions) for the
/// wire form.
///
/// ```
/// use std::time::Duration;
/// let options = nmsg::SessionOptions::default()
///     .window(Duration::from_secs(30))
///     .heartbeat_interval(Duration::from_secs(10));
/// let client = nmsg::Client::tcp("127.0.0.1:8081").session(options);
/// # drop(client);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SessionOptions {
    pub(crate) max_replay_messages: usize,
    pub(crate) max_replay_bytes: usize,
    pub(crate) max_replay_age: Duration,
    pub(crate) window: Duration,
    pub(crate) ack_delay: Duration,
    pub(crate) ack_count: u64,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) heartbeat_timeout: Duration,
    pub(crate) hello_timeout: Duration,
    pub(crate) hello_wait: Duration,
    pub(crate) unacked: Unacked,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            max_replay_messages: DEFAULT_MAX_REPLAY_MESSAGES,
            max_replay_bytes: DEFAULT_MAX_REPLAY_BYTES,
            max_replay_age: DEFAULT_MAX_REPLAY_AGE,
            window: DEFAULT_SESSION_WINDOW,
            ack_delay: DEFAULT_ACK_DELAY,
            ack_count: DEFAULT_ACK_COUNT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            hello_timeout: DEFAULT_HELLO_TIMEOUT,
            hello_wait: DEFAULT_HELLO_WAIT,
            unacked: Unacked::Resend,
        }
    }
}

impl SessionOptions {
    /// Bytes received unacknowledged at which an acknowledgement goes alone.
    pub(crate) fn ack_bytes(&self) -> usize {
        (self.max_replay_bytes / 8).max(1)
    }

    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most this many messages written and not yet acknowledged are kept
    /// for resending (default [`DEFAULT_MAX_REPLAY_MESSAGES`], 10,000). When
    /// the replay buffer is full, writing pauses until acknowledgements come:
    /// nothing is dropped, and the outgoing queue's own bounds apply to what
    /// waits (`emit` fails with `QueueFull`, `emit_wait` waits).
    pub fn max_replay_messages(mut self, max: usize) -> Self {
        self.max_replay_messages = max.max(1);
        self
    }

    /// At most this many bytes of messages written and not yet acknowledged
    /// are kept (default [`DEFAULT_MAX_REPLAY_BYTES`], 64 MiB); full, writing
    /// pauses as with [`max_replay_messages`](Self::max_replay_messages). One
    /// message is always let through, however large.
    pub fn max_replay_bytes(mut self, max: usize) -> Self {
        self.max_replay_bytes = max;
        self
    }

    /// A message not acknowledged this long after it was written (default
    /// [`DEFAULT_MAX_REPLAY_AGE`], 2 minutes) means the peer is not
    /// acknowledging: the connection is closed, and the client resumes (the
    /// peer acknowledges on resume what it has, or the session is lost).
    pub fn max_replay_age(mut self, age: Duration) -> Self {
        self.max_replay_age = age;
        self
    }

    /// How long a server keeps the session of a socket whose connection
    /// broke (default [`DEFAULT_SESSION_WINDOW`], 2 minutes): its router,
    /// handlers' state and queue; emits to it queue, and arrive when the
    /// client resumes. Past it the socket ends as a plain one does, and a
    /// client that comes back gets a new session
    /// ([`Error::SessionLost`](crate::Error::SessionLost) for its pending replies).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Received messages are acknowledged after the next data written once
    /// 32 of them (or [`ack_count`](Self::ack_count), if lower) are not
    /// acknowledged, or alone this long after the first one not acknowledged
    /// arrived (default [`DEFAULT_ACK_DELAY`], 100 ms), so that an idle
    /// connection still acknowledges.
    pub fn ack_delay(mut self, delay: Duration) -> Self {
        self.ack_delay = delay;
        self
    }

    /// ... or alone as soon as this many received messages are not
    /// acknowledged (default [`DEFAULT_ACK_COUNT`], 2,048), or their bytes
    /// reach an eighth of [`max_replay_bytes`](Self::max_replay_bytes) (8 MiB
    /// by default), whichever comes first: the peer keeps what it wrote until
    /// then. An acknowledgement alone is a write (a system call) on one side
    /// and a read on the other; on a connection busy in one direction,
    /// fewer cost less, and the peer keeps more.
    pub fn ack_count(mut self, count: u64) -> Self {
        self.ack_count = count.max(1);
        self
    }

    /// A connection that wrote nothing for this long sends a `ping` (default
    /// [`DEFAULT_HEARTBEAT_INTERVAL`], 25 s), which the peer answers at once.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// Nothing received this long after a `ping` (default
    /// [`DEFAULT_HEARTBEAT_TIMEOUT`], 20 s) closes the connection, and the
    /// client resumes: a half-open connection is found within interval +
    /// timeout.
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = timeout;
        self
    }

    /// A client waits this long for the server's `welcome` (default
    /// [`DEFAULT_HELLO_TIMEOUT`], 5 s); without one it closes the connection
    /// with an error saying the server does not support sessions, and backs off.
    pub fn hello_timeout(mut self, timeout: Duration) -> Self {
        self.hello_timeout = timeout;
        self
    }

    /// A server with sessions waits this long for the first message of a new
    /// connection (default [`DEFAULT_HELLO_WAIT`], 1 s) before it takes the
    /// connection as a plain one: a `hello` makes it a session connection,
    /// any other message a plain one at once. Until then the socket is not
    /// made ([`ServerEvent::Connected`](crate::ServerEvent::Connected) and
    /// the `on_socket` hook wait), so nothing is written to a client that
    /// may still say hello; a plain client that only listens gets the
    /// server's emits after this wait.
    pub fn hello_wait(mut self, wait: Duration) -> Self {
        self.hello_wait = wait;
        self
    }

    /// What becomes of unacknowledged plain emits when the session is lost
    /// (default [`Unacked::Resend`]).
    pub fn unacked(mut self, unacked: Unacked) -> Self {
        self.unacked = unacked;
        self
    }
}
