//! Sessions: delivery that survives a broken connection (see
//! [`protocol`](crate::protocol#sessions) for the wire form, and
//! [`SessionOptions`] for the bounds).
//!
//! A session's state ([`State`]) outlives its connections: the messages
//! written and not acknowledged (the replay buffer, encoded, as written),
//! the counts of messages written and received, and the session id. While
//! a connection is up its [`Driver`](crate::transport::Driver) holds the
//! state in a [`Session`], one box beside the plain connection's fields, so
//! that a plain connection pays one null check per read and write batch:
//! the handshake, the numbering (a count: nothing is added to data
//! messages), acknowledgements, heartbeats and resending are all here.
//!
//! The router knows nothing of sessions, but for two things: a broken
//! connection of a live session is not a lost connection (no callback
//! fails, no response is dropped, the epoch stays), and a lost session
//! fails what waits with [`Error::SessionLost`](crate::Error::SessionLost)
//! ([`Link::session_lost`](crate::router::Link)).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use tokio::time::{Instant, Sleep};

use crate::error::Disconnect;
use crate::frame::{FrameKind, Message};
use crate::framing::PREFIX_LEN;
use crate::router::Link;
use crate::sync::MutexExt;
use crate::transport::{Address, CloseReason};

pub(crate) mod handshake;
mod options;
pub(crate) mod wire;

pub use options::{
    SessionOptions, Unacked, DEFAULT_ACK_COUNT, DEFAULT_ACK_DELAY, DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_HEARTBEAT_TIMEOUT, DEFAULT_HELLO_TIMEOUT, DEFAULT_HELLO_WAIT, DEFAULT_MAX_REPLAY_AGE,
    DEFAULT_MAX_REPLAY_BYTES, DEFAULT_MAX_REPLAY_MESSAGES, DEFAULT_SESSION_WINDOW,
};
use wire::{Ext, Form, Outcome};

/// A new session id: 128 random bits, as 32 hex characters.
pub(crate) fn new_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// What a session tells its owner (a client's or a server's events).
#[derive(Debug, Clone)]
pub(crate) enum Notice {
    /// A handshake made a new session.
    Started { id: String },
    /// A handshake resumed the session; `resent` messages were written
    /// again (a server's: on a new connection from `peer`).
    Resumed {
        id: String,
        resent: usize,
        peer: Option<Address>,
    },
    /// The session `old` was lost; `id` is the new one. Of the frames
    /// written and not acknowledged, `resent` plain emits were written again
    /// on the new session (maybe twice, then) and `dropped` were dropped.
    Lost {
        old: String,
        id: String,
        resent: usize,
        dropped: usize,
    },
    /// The connection broke; the session is kept (a server's, for its window).
    Away { reason: String },
    /// A server's session: the window passed without the client coming back.
    Expired,
    /// A client's: the server rejected its credentials, saying why.
    Denied { reason: String },
}

/// The most bytes of messages written that a session keeps as a copy (with an
/// acknowledgement after them, when one is due, in the same write); more are
/// kept as they came from the queue. A copy of this much costs less than the
/// queue's allocating a new buffer (the old one kept), or a write of its own
/// for the acknowledgement.
const COPY_WITHIN: usize = 16 * 1024;

/// Unacknowledged messages received at which an acknowledgement rides on the
/// next data written ([`SessionOptions::ack_count`] if that is lower).
const ACK_RIDES_AFTER: u64 = 32;

/// Where a session's notices go.
pub(crate) type Notify = Arc<dyn Fn(Notice) + Send + Sync>;

/// Messages written together (one take of the router's queue), kept until
/// acknowledged, with when they were written. One entry per write, not per
/// message: keeping a message costs no reference count of its own, and an
/// acknowledgement drops whole writes at a time.
struct Kept {
    /// The messages not acknowledged yet, length-prefixed, as written.
    bytes: Bytes,
    /// How many messages `bytes` holds (at least one).
    count: u64,
    at: Instant,
}

impl Kept {
    /// The messages, one at a time.
    fn messages(&self) -> impl Iterator<Item = Bytes> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= self.bytes.len() {
                return None;
            }
            let end = message_end(&self.bytes, at);
            let message = self.bytes.slice(at..end);
            at = end;
            Some(message)
        })
    }
}

/// Where the length-prefixed message at `at` of `bytes` ends (at most at
/// the end of `bytes`).
fn message_end(bytes: &[u8], at: usize) -> usize {
    match bytes.get(at..at + PREFIX_LEN) {
        Some(&[a, b, c, d]) => {
            (at + PREFIX_LEN + u32::from_be_bytes([a, b, c, d]) as usize).min(bytes.len())
        }
        _ => bytes.len(),
    }
}

/// How many length-prefixed messages `bytes` holds.
fn count_messages(bytes: &[u8]) -> u64 {
    let (mut at, mut count) = (0, 0);
    while at < bytes.len() {
        at = message_end(bytes, at);
        count += 1;
    }
    count
}

/// What a session keeps across its connections.
pub(crate) struct State {
    pub(crate) id: String,
    /// Data messages written (numbered 1 to `sent`).
    sent: u64,
    /// Acknowledged by the peer: `replay` holds `acked + 1 ..= sent`.
    acked: u64,
    /// Data messages received and handed on.
    received: u64,
    replay: VecDeque<Kept>,
    /// The bytes `replay` holds.
    replay_bytes: usize,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("id", &self.id)
            .field("sent", &self.sent)
            .field("acked", &self.acked)
            .field("received", &self.received)
            .finish()
    }
}

impl State {
    pub(crate) fn new(id: String) -> Box<State> {
        Box::new(State {
            id,
            sent: 0,
            acked: 0,
            received: 0,
            replay: VecDeque::new(),
            replay_bytes: 0,
        })
    }

    /// Keeps `bytes`, complete length-prefixed messages just written, for
    /// resending; numbers them.
    fn keep(&mut self, bytes: Bytes, at: Instant) {
        let count = count_messages(&bytes);
        if count == 0 {
            return;
        }
        self.sent += count;
        self.replay_bytes += bytes.len();
        self.replay.push_back(Kept { bytes, count, at });
    }

    /// Messages written and not acknowledged.
    fn unacked(&self) -> u64 {
        self.sent - self.acked
    }

    /// The peer acknowledged `n` messages: those are dropped from the
    /// replay buffer (the writes it acknowledged whole, and the first
    /// messages of the one it acknowledged in part). `false` if `n` is
    /// more than was written.
    fn ack(&mut self, n: u64) -> bool {
        if n > self.sent {
            return false;
        }
        while self.acked < n {
            let Some(front) = self.replay.front_mut() else {
                self.acked = n;
                break;
            };
            let left = n - self.acked;
            if front.count <= left {
                self.acked += front.count;
                self.replay_bytes -= front.bytes.len();
                self.replay.pop_front();
            } else {
                let mut offset = 0;
                for _ in 0..left {
                    offset = message_end(&front.bytes, offset);
                }
                bytes::Buf::advance(&mut front.bytes, offset);
                front.count -= left;
                self.replay_bytes -= offset;
                self.acked = n;
            }
        }
        true
    }

    /// Whether the peer's count `n` lets the session resume: not more than
    /// was written, not less than what was dropped already.
    fn can_resume(&self, n: u64) -> bool {
        n >= self.acked && n <= self.sent
    }

    /// Appends every kept message to `out`, to be written again now (their
    /// age counts from now: the peer could not acknowledge them while
    /// away); how many.
    fn resend_into(&mut self, out: &mut BytesMut) -> usize {
        let now = Instant::now();
        for kept in &mut self.replay {
            out.extend_from_slice(&kept.bytes);
            kept.at = now;
        }
        self.unacked() as usize
    }
}

/// The hand-over of a resuming client's new stream to the task of its
/// session (a server's socket): set by the server's handshake, taken by the
/// driver, which may still be on the old stream (a half-open connection it
/// has not noticed) or away.
///
/// Streams are ordered by when the server accepted them: a client opens
/// its next connection only once it gave up on the last, so the newest is
/// the one it uses. The handshakes run on tasks of their own, in any order
/// (a busy server may read the hello of a connection cut before its
/// welcome after that of the next one), so a stream older than one handed
/// over before is stale: dropped, not resumed. (Resumed, it would take the
/// session away from the live connection, and its count, older than what
/// the client acknowledged since, would end the session.)
pub(crate) struct Handover {
    ready: AtomicBool,
    slot: Mutex<Slot>,
    waker: AtomicWaker,
    /// The session has ended: no stream is taken any more.
    ended: AtomicBool,
}

/// What a [`Handover`] holds.
struct Slot {
    /// The stream (the driver's type, boxed as `Any`: a server's is a
    /// `BoxStream`), the client's count, its address.
    given: Option<(AnyStream, u64, Address)>,
    /// The accept order of the newest stream of the session: its first,
    /// or the last handed over.
    newest: u64,
}

/// A stream handed over, of the driver's stream type.
pub(crate) type AnyStream = Box<dyn std::any::Any + Send>;

impl Handover {
    /// The hand-over of a session whose first stream the server accepted
    /// `order`th.
    pub(crate) fn new(order: u64) -> Arc<Self> {
        Arc::new(Handover {
            ready: AtomicBool::new(false),
            slot: Mutex::new(Slot {
                given: None,
                newest: order,
            }),
            waker: AtomicWaker::new(),
            ended: AtomicBool::new(false),
        })
    }

    /// Hands `stream` (accepted `order`th, whose hello said the client
    /// received `n` messages) to the session's task; drops it if the
    /// session has a newer one (it is stale). Gives it back if the session
    /// has ended.
    pub(crate) fn give(
        &self,
        stream: AnyStream,
        n: u64,
        peer: Address,
        order: u64,
    ) -> Result<(), AnyStream> {
        let mut slot = self.slot.locked();
        if self.ended.load(Ordering::Acquire) {
            return Err(stream);
        }
        if order < slot.newest {
            drop(slot);
            tracing::debug!(%peer, n, "nmsg session: a stale connection's hello, read after a newer one's, is dropped");
            return Ok(());
        }
        slot.newest = order;
        // A stream handed over before and not taken yet is dropped: the newest wins.
        slot.given = Some((stream, n, peer));
        self.ready.store(true, Ordering::Release);
        drop(slot);
        self.waker.wake();
        Ok(())
    }

    fn poll_take(&self, cx: &mut Context<'_>) -> Option<(AnyStream, u64, Address)> {
        self.waker.register(cx.waker());
        if !self.ready.load(Ordering::Acquire) {
            return None;
        }
        self.ready.store(false, Ordering::Relaxed);
        self.slot.locked().given.take()
    }

    fn end(&self) {
        let mut slot = self.slot.locked();
        self.ended.store(true, Ordering::Release);
        slot.given.take();
    }
}

/// Which end of the session a connection is.
enum Role {
    Client,
    Server(Arc<Handover>),
}

/// What the driver does with a message read on a session connection.
pub(crate) enum Read {
    /// A data message: dispatch it.
    Data,
    /// An extension frame, handled.
    Handled,
    /// The connection must close.
    Close(CloseReason),
}

/// A session connection's state in its [`Driver`](crate::transport::Driver).
pub(crate) struct Session {
    state: Box<State>,
    opts: Arc<SessionOptions>,
    form: Form,
    role: Role,
    notify: Notify,
    /// A client: the welcome arrived on this connection (a server: always).
    welcomed: bool,
    /// A handshake completed on this connection (a client resets its backoff).
    pub(crate) completed: bool,
    /// Extension frames and resent messages to write before new data.
    ctl: BytesMut,
    /// Received messages acknowledged so far.
    ack_sent: u64,
    /// Bytes of the messages received since the last acknowledgement.
    unacked_bytes: usize,
    ack_due: Option<Instant>,
    hello_due: Option<Instant>,
    last_write: Instant,
    pong_due: Option<Instant>,
    /// Wakes the task at the earliest deadline, or before it (moved back
    /// only when it fires, so that writes cost no timer update).
    sleep: Option<Pin<Box<Sleep>>>,
    /// A stop was asked: the session ends with this connection.
    pub(crate) stopped: bool,
    /// A server's session away: when its window ends.
    away_until: Option<Instant>,
}

impl Session {
    /// A client's session on a new connection: writes the hello (to resume
    /// `state` if it has an id) and waits for the welcome.
    /// `k`: the credentials the hello carries (a client with authentication).
    pub(crate) fn client(
        state: Option<Box<State>>,
        opts: Arc<SessionOptions>,
        codec: &str,
        notify: Notify,
        k: Option<rmpv::Value>,
    ) -> Box<Self> {
        let state = state.unwrap_or_else(|| State::new(String::new()));
        let form = Form::of(codec);
        let mut ctl = BytesMut::new();
        let s = (!state.id.is_empty()).then(|| state.id.clone());
        wire::put(
            form,
            &Ext::Hello {
                s,
                n: state.received,
                k,
                plain: false,
            },
            &mut ctl,
        );
        let now = Instant::now();
        Box::new(Session {
            ack_sent: state.received,
            unacked_bytes: 0,
            state,
            hello_due: Some(now + opts.hello_timeout),
            opts,
            form,
            role: Role::Client,
            notify,
            welcomed: false,
            completed: false,
            ctl,
            ack_due: None,
            last_write: now,
            pong_due: None,
            sleep: None,
            stopped: false,
            away_until: None,
        })
    }

    /// A server's new session, on its first connection: writes the welcome
    /// (`expired` when the client asked for a session the server does not have).
    pub(crate) fn server(
        opts: Arc<SessionOptions>,
        codec: &str,
        notify: Notify,
        handover: Arc<Handover>,
        id: String,
        expired: bool,
    ) -> Box<Self> {
        let form = Form::of(codec);
        let mut ctl = BytesMut::new();
        let z = if expired {
            Outcome::Expired
        } else {
            Outcome::New
        };
        wire::put(
            form,
            &Ext::Welcome {
                s: id.clone(),
                n: 0,
                z,
            },
            &mut ctl,
        );
        Box::new(Session {
            state: State::new(id),
            opts,
            form,
            role: Role::Server(handover),
            notify,
            welcomed: true,
            completed: true,
            ctl,
            ack_sent: 0,
            unacked_bytes: 0,
            ack_due: None,
            hello_due: None,
            last_write: Instant::now(),
            pong_due: None,
            sleep: None,
            stopped: false,
            away_until: None,
        })
    }

    /// The state, for the next connection (a client's).
    pub(crate) fn into_state(self) -> Box<State> {
        self.state
    }

    /// True for a server's session, whose socket waits for the client to
    /// come back after a break.
    pub(crate) fn waits_away(&self) -> bool {
        matches!(self.role, Role::Server(_)) && !self.stopped
    }

    /// A break of a session that goes on: told to the owner; a server's
    /// waits for the window.
    pub(crate) fn broke(&mut self, reason: &CloseReason) {
        (self.notify)(Notice::Away {
            reason: reason.to_string(),
        });
        if let Role::Server(_) = self.role {
            self.away_until = Some(Instant::now() + self.opts.window);
        }
    }

    /// The session ends for good: a server's takes no stream any more.
    pub(crate) fn end(&mut self) {
        if let Role::Server(handover) = &self.role {
            handover.end();
        }
    }

    /// A server's session: a resuming client's new stream, if one came.
    pub(crate) fn poll_handover(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Option<(AnyStream, u64, Address)> {
        match &self.role {
            Role::Server(handover) => handover.poll_take(cx),
            Role::Client => None,
        }
    }

    /// A server's session away: ready once its window has passed.
    pub(crate) fn poll_window(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(until) = self.away_until else {
            return Poll::Pending;
        };
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        if sleep.deadline() != until {
            sleep.as_mut().reset(until);
        }
        sleep.as_mut().poll(cx)
    }

    /// The window's length, for the reason a session expired.
    pub(crate) fn window(&self) -> std::time::Duration {
        self.opts.window
    }

    /// A server's session resumes on a new stream, whose client received
    /// `n` messages: the welcome, then what it has not received. `false`
    /// when `n` does not fit (the session cannot resume).
    pub(crate) fn resume(&mut self, n: u64, peer: Address) -> bool {
        if !self.state.can_resume(n) {
            return false;
        }
        self.state.ack(n);
        self.ctl.clear();
        let welcome = Ext::Welcome {
            s: self.state.id.clone(),
            n: self.state.received,
            z: Outcome::Resumed,
        };
        wire::put(self.form, &welcome, &mut self.ctl);
        self.ack_sent = self.state.received;
        self.unacked_bytes = 0;
        let resent = self.state.resend_into(&mut self.ctl);
        self.restart_timers();
        (self.notify)(Notice::Resumed {
            id: self.state.id.clone(),
            resent,
            peer: Some(peer),
        });
        true
    }

    /// A server's session: the window passed; it ends. What it wrote and
    /// the client never acknowledged is counted as lost, with `why`.
    pub(crate) fn expired(&mut self, link: &Link, why: Disconnect) {
        self.stopped = true;
        let codec = link.router().codec();
        let (mut frames, mut bytes) = (0, 0);
        for kept in std::mem::take(&mut self.state.replay) {
            for message in kept.messages() {
                frames += match codec.decode_all(&message[PREFIX_LEN..]) {
                    Ok(Message::Bulk(list)) => list.len(),
                    _ => 1,
                };
            }
            bytes += kept.bytes.len();
        }
        self.state.replay_bytes = 0;
        link.unacknowledged_lost(frames, bytes, why);
        (self.notify)(Notice::Expired);
    }

    fn restart_timers(&mut self) {
        let now = Instant::now();
        self.last_write = now;
        self.ack_due = None;
        self.pong_due = None;
        self.away_until = None;
        // Its deadline may be later than the next one: made again.
        self.sleep = None;
    }

    /// What to write next, when what was taken is written: extension frames
    /// and resent messages first; then, once the handshake is done and the
    /// replay buffer has room, what `take` gives (the router's queue), kept
    /// for resending and numbered, with an acknowledgement riding along.
    pub(crate) fn next_out(&mut self, take: impl FnOnce() -> Option<Bytes>) -> Option<Bytes> {
        if !self.ctl.is_empty() {
            return Some(self.ctl.split().freeze());
        }
        if !self.may_take() {
            return None;
        }
        let chunk = take()?;
        let at = Instant::now();
        // An ack rides on traffic once `ACK_RIDES_AFTER` messages (or
        // `ack_count`, if fewer) are unacknowledged, after the messages.
        let due = self.opts.ack_count.min(ACK_RIDES_AFTER);
        if self.state.received - self.ack_sent >= due {
            self.put_ack();
        }
        if chunk.len() <= COPY_WITHIN {
            // A few messages: kept and written as a copy of their own size,
            // with the ack if one is due. The queue's buffer they came in is
            // free again once `chunk` drops, and the queue reuses it, as on
            // a plain connection; kept, it would make the queue allocate a
            // new one for every write.
            let mut copy = BytesMut::with_capacity(chunk.len() + self.ctl.len());
            copy.extend_from_slice(&chunk);
            copy.extend_from_slice(&self.ctl);
            self.ctl.clear();
            let copy = copy.freeze();
            self.state.keep(copy.slice(..chunk.len()), at);
            return Some(copy);
        }
        // Many: kept as they are (no copy); an ack goes in the next write.
        self.state.keep(chunk.clone(), at);
        Some(chunk)
    }

    /// Whether new data may be taken now: the handshake is done and the
    /// replay buffer has room (else the task is woken by what arrives).
    pub(crate) fn may_take(&self) -> bool {
        self.welcomed
            && self.state.unacked() < self.opts.max_replay_messages as u64
            && (self.state.replay_bytes < self.opts.max_replay_bytes
                || self.state.replay.is_empty())
    }

    /// Something was written.
    pub(crate) fn wrote(&mut self) {
        self.last_write = Instant::now();
    }

    fn put_ack(&mut self) {
        self.ack_sent = self.state.received;
        self.unacked_bytes = 0;
        self.ack_due = None;
        wire::put(self.form, &Ext::Ack(self.state.received), &mut self.ctl);
    }

    /// Bytes arrived: the heartbeat's deadline is off.
    pub(crate) fn heard(&mut self) {
        self.pong_due = None;
    }

    /// A message read on the connection. Inline for the common case, a data
    /// message once welcomed: a count and a few byte compares.
    #[inline]
    pub(crate) fn read(&mut self, payload: &[u8], link: &Link) -> Read {
        if self.welcomed && !wire::is_ext(payload) {
            self.state.received += 1;
            self.unacked_bytes += payload.len();
            return Read::Data;
        }
        self.read_other(payload, link)
    }

    /// [`Session::read`] for an extension frame, or data before the welcome.
    #[inline(never)]
    fn read_other(&mut self, payload: &[u8], link: &Link) -> Read {
        if !wire::is_ext(payload) {
            if !self.welcomed {
                return Read::Close(CloseReason::Framing(
                    "the server sent data before its welcome".into(),
                ));
            }
            self.state.received += 1;
            return Read::Data;
        }
        let Some(ext) = wire::decode(self.form, payload) else {
            return Read::Handled;
        };
        let acked = match ext {
            Ext::Ack(n) | Ext::Pong(n) => n,
            Ext::Ping(n) => {
                let pong = Ext::Pong(self.state.received);
                self.ack_sent = self.state.received;
                self.unacked_bytes = 0;
                self.ack_due = None;
                wire::put(self.form, &pong, &mut self.ctl);
                n
            }
            Ext::Welcome { s, n, z } => return self.welcome(s, n, z, link),
            Ext::Deny(reason) if !self.welcomed => {
                let error = crate::Error::AuthRejected { reason };
                let message = error.to_string();
                if let crate::Error::AuthRejected { reason } = error {
                    (self.notify)(Notice::Denied { reason });
                }
                return Read::Close(CloseReason::Io {
                    kind: std::io::ErrorKind::PermissionDenied,
                    message,
                });
            }
            Ext::Admit if !self.welcomed => {
                return Read::Close(CloseReason::Io {
                    kind: std::io::ErrorKind::Unsupported,
                    message: "the server answered the session hello with a welcome without a \
                              session: it authenticates but does not support sessions; start \
                              it with `.session(..)`, or the client without"
                        .into(),
                })
            }
            Ext::Hello { .. } | Ext::Admit | Ext::Deny(_) | Ext::Other => return Read::Handled,
        };
        if self.welcomed && !self.state.ack(acked) {
            return Read::Close(CloseReason::Framing(format!(
                "the peer acknowledged {acked} messages of {} written",
                self.state.sent
            )));
        }
        Read::Handled
    }

    /// A client's welcome: resumes, starts, or (the session asked for is
    /// gone) loses the old session and starts the new one.
    fn welcome(&mut self, s: String, n: u64, z: Outcome, link: &Link) -> Read {
        if self.welcomed || matches!(self.role, Role::Server(_)) {
            return Read::Handled;
        }
        self.welcomed = true;
        self.completed = true;
        self.hello_due = None;
        self.restart_timers();
        let state = &mut *self.state;
        let same = z == Outcome::Resumed && s == state.id;
        if same && state.can_resume(n) {
            state.ack(n);
            let resent = state.resend_into(&mut self.ctl);
            (self.notify)(Notice::Resumed {
                id: s,
                resent,
                peer: None,
            });
            return Read::Handled;
        }
        if state.id.is_empty() {
            // A new session; what a session lost before it kept to resend
            // (its plain emits) goes out first.
            state.id = s.clone();
            state.resend_into(&mut self.ctl);
            (self.notify)(Notice::Started { id: s });
            return Read::Handled;
        }
        if same {
            // The server counts what this side never wrote, or what it
            // dropped already: the session cannot resume. It is lost here,
            // and the next connection asks for a new one.
            let old = std::mem::take(&mut state.id);
            let (resent, dropped) = self.lose(link, &old);
            self.ctl.clear();
            (self.notify)(Notice::Lost {
                old,
                id: String::new(),
                resent,
                dropped,
            });
            return Read::Close(CloseReason::Framing(format!(
                "the server resumed the session having received {n} messages, which does not fit what was written"
            )));
        }
        let old = std::mem::replace(&mut state.id, s.clone());
        let (resent, dropped) = self.lose(link, &old);
        (self.notify)(Notice::Lost {
            old,
            id: s,
            resent,
            dropped,
        });
        Read::Handled
    }

    /// The session `old` is lost: what waits for answers fails with
    /// `SessionLost`, the responses queued are dropped (counted by the
    /// router), and of the messages not acknowledged the plain emits are
    /// kept to resend on the new session (or dropped, by option), the rest
    /// dropped. Gives the frames resent and dropped.
    fn lose(&mut self, link: &Link, old: &str) -> (usize, usize) {
        let codec = link.router().codec();
        let state = &mut *self.state;
        let kept = std::mem::take(&mut state.replay);
        let (mut resent, mut dropped) = (0, 0);
        let now = Instant::now();
        state.sent = 0;
        state.acked = 0;
        state.received = 0;
        state.replay_bytes = 0;
        self.ack_sent = 0;
        self.unacked_bytes = 0;
        for message in kept.iter().flat_map(Kept::messages) {
            let (frames, plain) = match codec.decode_all(&message[PREFIX_LEN..]) {
                Ok(Message::Single(frame)) => (1, frame.is_ok_and(is_plain_emit)),
                Ok(Message::Bulk(frames)) => {
                    let n = frames.len();
                    (n, frames.into_iter().all(|f| f.is_ok_and(is_plain_emit)))
                }
                Err(_) => (1, false),
            };
            if plain && self.opts.unacked == Unacked::Resend {
                resent += frames;
                self.ctl.extend_from_slice(&message);
                state.keep(message, now);
            } else {
                dropped += frames;
            }
        }
        link.session_lost(Disconnect::new(
            None,
            format!("the server no longer has session {old} (its window passed, or it restarted)"),
        ));
        (resent, dropped)
    }

    /// After a batch of reads of which some were data: acknowledges now
    /// (the count is reached) or arms the delay.
    pub(crate) fn received_batch(&mut self) {
        let unacked = self.state.received - self.ack_sent;
        if unacked == 0 {
            return;
        }
        if unacked >= self.opts.ack_count || self.unacked_bytes >= self.opts.ack_bytes() {
            self.put_ack();
        } else if self.ack_due.is_none() {
            self.ack_due = Some(Instant::now() + self.opts.ack_delay);
        }
    }

    /// The session's deadlines: queues an ack or a ping when theirs comes;
    /// ready with the reason to close when the welcome, the heartbeat or
    /// the acknowledgement of the oldest message is late.
    pub(crate) fn poll_timers(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        loop {
            let mut deadline: Option<Instant> = None;
            let mut at = |t: Option<Instant>| {
                if let Some(t) = t {
                    deadline = Some(deadline.map_or(t, |d| d.min(t)));
                }
            };
            at(self.hello_due);
            at(self.ack_due);
            at(self.pong_due);
            if self.welcomed {
                at(self.last_write.checked_add(self.opts.heartbeat_interval));
                at(self
                    .state
                    .replay
                    .front()
                    .and_then(|k| k.at.checked_add(self.opts.max_replay_age)));
            }
            let Some(deadline) = deadline else {
                return Poll::Pending;
            };
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if sleep.deadline() > deadline {
                sleep.as_mut().reset(deadline);
            }
            std::task::ready!(sleep.as_mut().poll(cx));
            let now = Instant::now();
            if sleep.deadline() < deadline && now < deadline {
                sleep.as_mut().reset(deadline);
                continue;
            }
            if self.hello_due.is_some_and(|t| t <= now) {
                return Poll::Ready(CloseReason::Io {
                    kind: std::io::ErrorKind::Unsupported,
                    message: crate::Error::SessionsUnsupported(self.opts.hello_timeout).to_string(),
                });
            }
            if self.pong_due.is_some_and(|t| t <= now) {
                return Poll::Ready(CloseReason::Io {
                    kind: std::io::ErrorKind::TimedOut,
                    message: format!(
                        "no heartbeat: nothing arrived within {:?} of a ping",
                        self.opts.heartbeat_timeout
                    ),
                });
            }
            if self.welcomed {
                if let Some(kept) = self.state.replay.front() {
                    if kept.at + self.opts.max_replay_age <= now {
                        return Poll::Ready(CloseReason::Io {
                            kind: std::io::ErrorKind::TimedOut,
                            message: format!(
                                "the peer acknowledged nothing within {:?}",
                                self.opts.max_replay_age
                            ),
                        });
                    }
                }
            }
            if self.ack_due.is_some_and(|t| t <= now) {
                self.put_ack();
            }
            if self.welcomed && self.last_write + self.opts.heartbeat_interval <= now {
                wire::put(self.form, &Ext::Ping(self.state.received), &mut self.ctl);
                self.ack_sent = self.state.received;
                self.unacked_bytes = 0;
                self.ack_due = None;
                self.last_write = now;
                if self.pong_due.is_none() {
                    self.pong_due = Some(now + self.opts.heartbeat_timeout);
                }
            }
            // Set again for the next deadline.
            self.sleep = None;
        }
    }
}

/// An event frame without callbacks: what [`Unacked::Resend`] writes again
/// when a session is lost.
fn is_plain_emit(frame: crate::frame::Frame) -> bool {
    matches!(frame.kind, FrameKind::Event(_)) && frame.callbacks.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Length-prefixed messages of one byte each: `b"a"`, `b"b"`, ...
    fn messages(letters: &str) -> Bytes {
        let mut out = Vec::new();
        for letter in letters.bytes() {
            out.extend_from_slice(&1u32.to_be_bytes());
            out.push(letter);
        }
        Bytes::from(out)
    }

    fn resent(state: &mut State) -> (usize, Bytes) {
        let mut out = BytesMut::new();
        let count = state.resend_into(&mut out);
        (count, out.freeze())
    }

    /// Writes are kept whole and numbered by their messages; an
    /// acknowledgement within a write drops its first messages and keeps
    /// the rest, which are what a resume writes again.
    #[test]
    fn an_ack_within_a_write_keeps_only_its_later_messages() {
        let mut state = State::new("s".into());
        let now = Instant::now();
        state.keep(messages("abc"), now);
        state.keep(messages("de"), now);
        assert_eq!(
            (state.sent, state.unacked(), state.replay_bytes),
            (5, 5, 25)
        );
        assert!(state.ack(2));
        assert_eq!((state.unacked(), state.replay_bytes), (3, 15));
        assert_eq!(resent(&mut state), (3, messages("cde")));
        assert!(state.ack(4));
        assert_eq!((state.unacked(), state.replay_bytes), (1, 5));
        assert_eq!(resent(&mut state), (1, messages("e")));
        // An old count changes nothing; a count beyond what was written is refused.
        assert!(state.ack(3));
        assert_eq!(state.unacked(), 1);
        assert!(!state.ack(6));
        assert!(state.ack(5));
        assert_eq!(
            (state.unacked(), state.replay_bytes, state.replay.len()),
            (0, 0, 0)
        );
        assert_eq!(resent(&mut state), (0, Bytes::new()));
    }

    /// A client's session, welcomed, that has received `received` messages.
    fn welcomed_client(received: u64) -> Box<Session> {
        welcomed_client_with(received, SessionOptions::default())
    }

    fn welcomed_client_with(received: u64, opts: SessionOptions) -> Box<Session> {
        let notify: Notify = Arc::new(|_| {});
        let opts = Arc::new(opts);
        let mut session = Session::client(None, opts, "msgpack", notify, None);
        session.ctl.clear();
        session.welcomed = true;
        session.state.received = received;
        session
    }

    /// An ack that is due rides in the write of the data it follows, not
    /// in a write of its own (a syscall more on a busy connection); after
    /// a large write it goes alone.
    #[test]
    fn a_due_ack_goes_out_in_the_same_write_as_the_data() {
        let due = ACK_RIDES_AFTER;
        let data = messages("ab");
        let mut session = welcomed_client(due);
        let written = session.next_out(|| Some(data.clone())).unwrap();
        let mut ack = BytesMut::new();
        wire::put(Form::MsgPack, &Ext::Ack(due), &mut ack);
        assert_eq!(&written[..data.len()], &data[..]);
        assert_eq!(&written[data.len()..], &ack[..]);
        assert!(session.ctl.is_empty());
        assert_eq!(session.state.sent, 2);

        // Not due yet: the data alone.
        let mut session = welcomed_client(due - 1);
        assert_eq!(session.next_out(|| Some(data.clone())).unwrap(), data);
        assert!(session.ctl.is_empty());

        // After a large write: the ack alone, next.
        let large = Bytes::from(vec![b'x'; COPY_WITHIN + 1]);
        let mut session = welcomed_client(due);
        assert_eq!(session.next_out(|| Some(large.clone())).unwrap(), large);
        assert_eq!(session.next_out(|| None).unwrap(), ack.freeze());
    }

    /// A data message is counted and handed on once the welcome came; one
    /// before the welcome closes the connection (the client cannot number
    /// it within a session yet). Extension frames are never handed on.
    #[test]
    fn data_before_the_welcome_closes_and_after_it_is_counted() {
        let router = crate::Router::new();
        let link = router.link();
        let data: &[u8] = &[0x81, 0xa1, b'i', 0xa1, b'e'];
        let notify: Notify = Arc::new(|_| {});
        let opts = Arc::new(SessionOptions::default());
        let mut session = Session::client(None, opts, "msgpack", notify, None);
        match session.read(data, &link) {
            Read::Close(CloseReason::Framing(why)) => assert!(why.contains("before its welcome")),
            _ => panic!("data before the welcome must close the connection"),
        }
        assert_eq!(session.state.received, 0);

        let mut session = welcomed_client(7);
        assert!(matches!(session.read(data, &link), Read::Data));
        assert_eq!(session.state.received, 8);
        let mut ack = BytesMut::new();
        wire::put(Form::MsgPack, &Ext::Ack(0), &mut ack);
        assert!(matches!(
            session.read(&ack[PREFIX_LEN..], &link),
            Read::Handled
        ));
        assert_eq!(session.state.received, 8);
    }

    /// A small write is kept as a copy: the buffer it came in (the queue's)
    /// is let go at once, for the queue to reuse. A large one is kept as it is.
    #[test]
    fn a_small_write_is_kept_as_a_copy_and_its_buffer_let_go() {
        let mut session = welcomed_client(0);
        let small = messages("ab");
        assert_eq!(session.next_out(|| Some(small.clone())).unwrap(), small);
        assert!(small.is_unique(), "the session holds the queue's buffer");
        assert_eq!(session.state.unacked(), 2);
        assert_eq!(resent(&mut session.state), (2, small));

        let large = Bytes::from(vec![b'x'; COPY_WITHIN + 1]);
        assert_eq!(session.next_out(|| Some(large.clone())).unwrap(), large);
        assert!(!large.is_unique());
    }

    /// Received messages are acknowledged alone once their bytes reach an
    /// eighth of the replay buffer's bound in bytes, however few they are
    /// (the peer keeps them until then, and pauses at its bound).
    #[test]
    fn an_ack_goes_alone_once_the_bytes_received_reach_an_eighth_of_the_replay_bound() {
        let router = crate::Router::new();
        let link = router.link();
        let opts = SessionOptions::default().max_replay_bytes(800);
        let mut session = welcomed_client_with(0, opts);
        let mut data = vec![0x81, 0xa1, b'i'];
        data.resize(60, 0);
        assert!(matches!(session.read(&data, &link), Read::Data));
        session.received_batch();
        assert!(session.ctl.is_empty(), "60 bytes of 100: no ack yet");
        assert!(matches!(session.read(&data, &link), Read::Data));
        session.received_batch();
        let mut ack = BytesMut::new();
        wire::put(Form::MsgPack, &Ext::Ack(2), &mut ack);
        assert_eq!(session.ctl, ack);
        assert_eq!(session.next_out(|| None).unwrap(), ack.freeze());
        // Counted from the ack on.
        assert!(matches!(session.read(&data, &link), Read::Data));
        session.received_batch();
        assert!(session.ctl.is_empty());
    }

    #[test]
    fn a_kept_write_gives_its_messages_one_at_a_time() {
        let kept = Kept {
            bytes: messages("xyz"),
            count: 3,
            at: Instant::now(),
        };
        let each: Vec<Bytes> = kept.messages().collect();
        assert_eq!(each, [messages("x"), messages("y"), messages("z")]);
        assert_eq!(count_messages(&messages("xyz")), 3);
        assert_eq!(count_messages(&[]), 0);
    }
}
