//! Sending: encoding a frame (into this thread's scratch buffer), queueing it
//! with its callbacks registered, and the `emit` family built on the two.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use crate::args::{Arg, FromArgs, IntoArgs, OutArgs};
use crate::callback::{Answer, AnswerSink, Registered};
use crate::error::Error;
use crate::frame::{OutFrame, OutKind, DEFAULT_TIMEOUT_SECS};
use crate::framing::check_size;

use super::options::Buffering;
use super::pending::{fail_all, FrameCallbacks, Registration};
use super::Router;

/// An outgoing frame, encoded, with the callbacks it carries. Its buffer goes
/// back to the thread's scratch when it is dropped.
pub(super) struct Encoded {
    id: u32,
    bytes: Vec<u8>,
    callbacks: FrameCallbacks,
    timeout: Duration,
    /// For a response: the connection epoch of the frame it answers; queued
    /// only while that connection lasts.
    epoch: Option<u64>,
}

impl Drop for Encoded {
    fn drop(&mut self) {
        scratch_give_back(std::mem::take(&mut self.bytes));
    }
}

/// The largest encoding buffer a thread keeps for its next frame.
const SCRATCH_KEEP: usize = 16 * 1024;

thread_local! {
    /// The buffer the next frame encoded on this thread goes into. A frame is
    /// encoded, then copied into its router's queue; the buffer comes back here,
    /// so encoding a frame takes no allocation of its own.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// An empty buffer to encode a frame into: this thread's spare, or a new one.
fn scratch_take() -> Vec<u8> {
    let mut bytes = SCRATCH.try_with(Cell::take).unwrap_or_default();
    if bytes.capacity() == 0 {
        bytes.reserve(64);
    }
    bytes
}

/// Keeps `bytes` (its frame already copied into a queue) as this thread's spare,
/// unless it grew beyond [`SCRATCH_KEEP`] (or never had room).
fn scratch_give_back(mut bytes: Vec<u8>) {
    if bytes.capacity() != 0 && bytes.capacity() <= SCRATCH_KEEP {
        bytes.clear();
        let _ = SCRATCH.try_with(|spare| spare.set(bytes));
    }
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
        Error::FrameExceedsQueue {
            size,
            max_queued_bytes,
        } => Error::FrameExceedsQueue {
            size: *size,
            max_queued_bytes: *max_queued_bytes,
        },
        Error::NoRuntime => Error::NoRuntime,
        Error::Disconnected(why) => Error::Disconnected(why.clone()),
        _ => Error::Closed,
    }
}

impl Router {
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
    /// cannot take (larger than `max_queued_bytes`) fails at once with
    /// [`Error::FrameExceedsQueue`], as with `emit`: no room would ever come for it.
    // Inlined, so that the future is built in place in the caller's (a
    // returned future is copied whole).
    #[inline]
    pub fn emit_wait<'a>(
        &self,
        event: &str,
        args: impl IntoArgs<'a>,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send + 'static {
        self.send_wait(OutKind::Event(event), args.into_args(), None)
    }

    /// [`Router::emit_wait`] for any frame: an event, or a response when
    /// `epoch` is given ([`Router::send_response_wait`]). Encoded at once (in
    /// its span when spans are wanted); the future only waits for room.
    #[inline]
    fn send_wait(
        &self,
        kind: OutKind<'_>,
        args: OutArgs<'_>,
        epoch: Option<u64>,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send + 'static {
        let router = self.clone();
        let encoded = if crate::observe::spans_wanted() {
            self.encode_traced(kind, args, epoch)
        } else {
            self.encode(kind, args, None, None, epoch)
        };
        async move {
            let mut encoded = encoded?;
            // The wait for room is made only once the queue was found full,
            // before the frame is tried again (so that no wake-up is missed).
            let mut room = None;
            loop {
                match router.enqueue(&mut encoded) {
                    Ok(()) => return Ok(()),
                    Err(Error::QueueFull { frames, .. }) if frames > 0 => match room.take() {
                        None => room = Some(router.inner.outbox.room()),
                        Some(room) => room.await,
                    },
                    Err(e) => {
                        fail_all(std::mem::take(&mut encoded.callbacks), || refusal(&e));
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Emits `event` with `args` plus a trailing callback, and waits for the
    /// peer to invoke it; gives the callback's arguments as `R` (a tuple, or
    /// [`Args`](crate::Args)). Ends with an error on timeout, disconnect,
    /// close, or when the arguments do not convert into `R`.
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

    /// Sends a response (`kind` is [`OutKind::Response`]) to a frame received
    /// in connection epoch `epoch`: refused with [`Error::Disconnected`] once
    /// that connection is lost, checked under the queue's lock, so that no
    /// response is queued for the connection after it (the queue drops the
    /// responses queued before it at the loss).
    pub(crate) fn send_response(
        &self,
        kind: OutKind<'_>,
        args: OutArgs<'_>,
        epoch: u64,
    ) -> Result<(), Error> {
        self.send_from(kind, args, None, None, Some(epoch))
    }

    /// [`Router::send_response`], waiting for room when the outgoing queue is
    /// full, as [`Router::emit_wait`] does. The frame is encoded at once.
    pub(crate) fn send_response_wait(
        &self,
        kind: OutKind<'_>,
        args: OutArgs<'_>,
        epoch: u64,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send + 'static {
        self.send_wait(kind, args, Some(epoch))
    }

    /// [`Router::send`], with `answer` as a last callback after `args`.
    fn send_with(
        &self,
        kind: OutKind<'_>,
        args: OutArgs<'_>,
        timeout: Option<Duration>,
        answer: Option<Arc<dyn AnswerSink>>,
    ) -> Result<(), Error> {
        self.send_from(kind, args, timeout, answer, None)
    }

    /// [`Router::send_with`], for a response when `epoch` is given.
    fn send_from(
        &self,
        kind: OutKind<'_>,
        args: OutArgs<'_>,
        timeout: Option<Duration>,
        answer: Option<Arc<dyn AnswerSink>>,
        epoch: Option<u64>,
    ) -> Result<(), Error> {
        if crate::observe::spans_wanted() {
            return self.send_traced(kind, args, timeout, answer, epoch);
        }
        let mut encoded = self.encode(kind, args, timeout, answer, epoch)?;
        self.enqueue(&mut encoded).inspect_err(|e| {
            fail_all(std::mem::take(&mut encoded.callbacks), || refusal(e));
        })
    }

    /// [`Router::send_from`] in its span.
    #[cold]
    #[inline(never)]
    fn send_traced(
        &self,
        kind: OutKind<'_>,
        args: OutArgs<'_>,
        timeout: Option<Duration>,
        answer: Option<Arc<dyn AnswerSink>>,
        epoch: Option<u64>,
    ) -> Result<(), Error> {
        let span = self.send_span(kind, &args, answer.is_some());
        let _entered = span.enter();
        let mut encoded = self.encode(kind, args, timeout, answer, epoch)?;
        span.record("nmsg.frame_id", encoded.id);
        self.enqueue(&mut encoded).inspect_err(|e| {
            fail_all(std::mem::take(&mut encoded.callbacks), || refusal(e));
        })
    }

    /// [`Router::encode`] for [`Router::send_wait`], in its span.
    #[cold]
    #[inline(never)]
    fn encode_traced(
        &self,
        kind: OutKind<'_>,
        args: OutArgs<'_>,
        epoch: Option<u64>,
    ) -> Result<Encoded, Error> {
        let span = self.send_span(kind, &args, false);
        let _entered = span.enter();
        let encoded = self.encode(kind, args, None, None, epoch);
        if let Ok(encoded) = &encoded {
            span.record("nmsg.frame_id", encoded.id);
        }
        encoded
    }

    /// The span of a frame sent: `nmsg.emit` for an event, `nmsg.respond`
    /// for a response ([`crate::observe`]).
    #[cold]
    fn send_span(&self, kind: OutKind<'_>, args: &OutArgs<'_>, answer: bool) -> tracing::Span {
        use crate::observe::outgoing_kind;
        use tracing::field::Empty;
        let with_callbacks = || answer || args.items.iter().any(|a| matches!(a, Arg::Callback(_)));
        match kind {
            OutKind::Event(event) => tracing::debug_span!(
                "nmsg.emit",
                otel.name = event,
                otel.kind = outgoing_kind(with_callbacks()),
                rpc.system = "nmsg",
                rpc.method = event,
                nmsg.event = event,
                nmsg.frame_id = Empty,
                network.peer.address = self.peer(),
            ),
            OutKind::Response { to, position } => tracing::debug_span!(
                "nmsg.respond",
                otel.name = "nmsg.respond",
                otel.kind = outgoing_kind(with_callbacks()),
                rpc.system = "nmsg",
                nmsg.frame_id = Empty,
                nmsg.callback.frame = to,
                nmsg.callback.position = position,
                network.peer.address = self.peer(),
            ),
        }
    }

    /// Encodes a frame of `args`, and of `answer` as a last callback if given,
    /// under an id no frame that waits for answers has.
    fn encode(
        &self,
        kind: OutKind<'_>,
        args: OutArgs<'_>,
        timeout: Option<Duration>,
        answer: Option<Arc<dyn AnswerSink>>,
        epoch: Option<u64>,
    ) -> Result<Encoded, Error> {
        let opts = &*self.inner.opts;
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
        let id = (self.inner.pending).allocate_id(!positions.is_empty(), &self.inner.outbox);
        let mut bytes = scratch_take();
        let frame = OutFrame {
            id,
            kind,
            data: &items,
            callbacks: &positions,
            timeout: wire_timeout,
        };
        let result = opts.codec.encode_frame(&frame, &mut bytes).and_then(|()| {
            // room for a bulk's start and end when buffered
            let overhead = match opts.buffering {
                Buffering::Off => 0,
                _ => opts.codec.bulk_overhead(),
            };
            check_size(bytes.len() + overhead, opts.max_message_size)
        });
        drop(items);
        let mut callbacks: FrameCallbacks = if positions.len() > answer.is_some() as usize {
            args.items
                .into_iter()
                .enumerate()
                .filter_map(|(position, arg)| match arg {
                    Arg::Callback(cb) => Some((position as u32, Some(Registered::Boxed(cb)))),
                    Arg::Data(_) => None,
                })
                .collect()
        } else {
            FrameCallbacks::new()
        };
        if let Some(answer) = answer {
            callbacks.push((answer_position, Some(Registered::Answer(answer))));
        }
        let encoded = Encoded {
            id,
            bytes,
            callbacks,
            timeout,
            epoch,
        };
        match result {
            Ok(()) => Ok(encoded),
            Err(e) => {
                let mut encoded = encoded;
                fail_all(std::mem::take(&mut encoded.callbacks), || {
                    Error::Encode(e.clone())
                });
                Err(e.into())
            }
        }
    }

    /// Queues an encoded frame, registering its callbacks (taken from it once
    /// queued). On refusal the frame keeps them, for the caller to fail or to
    /// try again.
    fn enqueue(&self, encoded: &mut Encoded) -> Result<(), Error> {
        let inner = &*self.inner;
        let opts = &*inner.opts;
        let mut queue = inner.outbox.lock();
        queue.admit(encoded.bytes.len(), opts)?;
        let response = encoded.epoch.is_some();
        if response && encoded.epoch != Some(inner.pending.epoch()) {
            return Err(Error::disconnected(
                "the connection this callback came on has closed",
            ));
        }
        let timer = if encoded.callbacks.is_empty() {
            None
        } else {
            // Under the queue's lock: the frame's sequence number is the one
            // it is queued with just below.
            let seq = queue.next_seq();
            let frame = Registration {
                id: encoded.id,
                callbacks: &mut encoded.callbacks,
                timeout: encoded.timeout,
                latency_allowance: opts.latency_allowance,
                max_pending: opts.max_pending,
                seq,
                response,
            };
            let timer = (inner.pending).register(queue.table_mut(), frame, &self.inner)?;
            crate::observe::meters().in_flight.increment(1.0);
            timer
        };
        let writer = queue.push(&encoded.bytes, response, opts);
        crate::observe::meters().queued.increment(1.0);
        inner.outbox.gate.raise_at(queue.level(), opts);
        drop(queue);
        if let Some(waker) = writer {
            waker.wake();
        }
        if let Some(timer) = timer {
            timer.wake();
        }
        Ok(())
    }
}
