//! Callbacks: [`Callback<A>`], passed as an argument or received as one, and
//! [`RemoteCallback`], the dynamic handle to a callback a peer sent.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::sync::oneshot;

use crate::args::{Args, FromArgs, IntoArgs, Received};
use crate::error::Error;
use crate::frame::OutKind;
use crate::sync::MutexExt;

/// A callback this side sent, waiting in the router's table for the peer to invoke it.
pub trait LocalCallback: Send + 'static {
    /// The peer invoked it with `args`. An `Err` is reported to the router's error hook.
    fn invoke(self: Box<Self>, args: Args) -> Result<(), Error>;
    /// It will never be invoked: timeout, disconnect or close.
    fn fail(self: Box<Self>, error: Error);
}

/// A callback with typed arguments `A` (a tuple, or [`Args`] for the dynamic form).
///
/// On the sending side it wraps a closure ([`Callback::new`]) or a one-shot
/// future ([`Callback::once`]); put it in an argument list and the peer can
/// invoke it. On the receiving side (a handler's parameter, or an argument of
/// another callback) it is the peer's callback, and [`Callback::call`] sends the
/// arguments back. `call` takes `self`, so a callback is invoked at most once by
/// construction.
///
/// ```
/// use nmsg::{args, Callback};
/// // A callback whose first argument is a string and whose second is a callback again.
/// let cb = Callback::new(|(text, more): (String, Callback<(u32,)>)| {
///     println!("{text}");
///     let _ = more.call((7,));
/// });
/// let list = args![cb];
/// # let _ = list;
/// ```
pub struct Callback<A = Args> {
    kind: Kind<A>,
}

enum Kind<A> {
    Closure(Box<dyn FnOnce(A) + Send>),
    Once(oneshot::Sender<Result<A, Error>>),
    Remote(RemoteCallback),
}

impl<A> fmt::Debug for Callback<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Closure(_) => "closure",
            Kind::Once(_) => "once",
            Kind::Remote(_) => "remote",
        };
        f.debug_struct("Callback").field("kind", &kind).finish()
    }
}

impl<A: FromArgs + Send> Callback<A> {
    /// A callback that runs `f` when invoked. If the peer never invokes it, `f`
    /// is dropped when the frame's timeout passes. If the peer's arguments do
    /// not convert into `A`, `f` does not run and the router's error hook gets
    /// the error.
    pub fn new<F>(f: F) -> Self
    where
        F: FnOnce(A) + Send + 'static,
    {
        Callback {
            kind: Kind::Closure(Box::new(f)),
        }
    }

    /// A callback and a future of its arguments. The future ends with
    /// [`Error::Timeout`], [`Error::Disconnected`] or [`Error::Closed`] if the peer
    /// never invokes it, and with [`Error::Argument`] if its arguments do not
    /// convert into `A`.
    pub fn once() -> (Self, Reply<A>) {
        let (tx, rx) = oneshot::channel();
        (
            Callback {
                kind: Kind::Once(tx),
            },
            Reply { rx },
        )
    }

    pub(crate) fn into_local(self) -> Box<dyn LocalCallback> {
        match self.kind {
            Kind::Closure(f) => Box::new(ClosureCallback(f)),
            Kind::Once(tx) => Box::new(OnceCallback(tx)),
            Kind::Remote(remote) => Box::new(Forward::<A>(remote, PhantomData)),
        }
    }
}

impl<A> Callback<A> {
    pub(crate) fn remote(remote: RemoteCallback) -> Self {
        Callback {
            kind: Kind::Remote(remote),
        }
    }

    /// Invokes the callback: sends `args` to the peer that passed it, or runs the
    /// local closure. Fails if the arguments cannot be encoded or sent; then
    /// nothing was sent.
    pub fn call(self, args: A) -> Result<(), Error>
    where
        A: IntoArgs<'static>,
    {
        match self.kind {
            Kind::Closure(f) => {
                f(args);
                Ok(())
            }
            Kind::Once(tx) => {
                let _ = tx.send(Ok(args));
                Ok(())
            }
            Kind::Remote(remote) => remote.call(args),
        }
    }

    /// The peer's callback behind this one, if it came from the peer.
    pub fn as_remote(&self) -> Option<&RemoteCallback> {
        match &self.kind {
            Kind::Remote(r) => Some(r),
            _ => None,
        }
    }
}

struct ClosureCallback<A>(Box<dyn FnOnce(A) + Send>);

impl<A: FromArgs + Send> LocalCallback for ClosureCallback<A> {
    fn invoke(self: Box<Self>, args: Args) -> Result<(), Error> {
        let a = A::from_args(&args)?;
        (self.0)(a);
        Ok(())
    }

    fn fail(self: Box<Self>, error: Error) {
        tracing::debug!(%error, "callback dropped without being invoked");
    }
}

struct OnceCallback<A>(oneshot::Sender<Result<A, Error>>);

impl<A: FromArgs + Send> LocalCallback for OnceCallback<A> {
    fn invoke(self: Box<Self>, args: Args) -> Result<(), Error> {
        let _ = self.0.send(A::from_args(&args));
        Ok(())
    }

    fn fail(self: Box<Self>, error: Error) {
        let _ = self.0.send(Err(error));
    }
}

/// A peer's callback passed on to another peer: invoking it forwards the
/// arguments' data (callbacks cannot be forwarded twice).
struct Forward<A>(RemoteCallback, PhantomData<fn(A)>);

impl<A: Send + 'static> LocalCallback for Forward<A> {
    fn invoke(self: Box<Self>, args: Args) -> Result<(), Error> {
        let mut out = crate::args::OutArgs::new();
        for i in 0..args.len() {
            if args.is_callback(i) {
                return Err(Error::argument(
                    i,
                    "a forwarded callback cannot carry callbacks",
                ));
            }
            out.push(args.value(i)?);
        }
        self.0.call(out)
    }

    fn fail(self: Box<Self>, error: Error) {
        tracing::debug!(%error, "forwarded callback dropped without being invoked");
    }
}

/// A callback in the router's table: a boxed [`LocalCallback`] (anything passed
/// as an argument), or the answer slot of a request, which the caller's future
/// shares (one allocation for both, where a `Callback::once` takes a channel and
/// a box).
pub(crate) enum Registered {
    Boxed(Box<dyn LocalCallback>),
    Answer(Arc<dyn AnswerSink>),
}

impl Registered {
    pub(crate) fn invoke(self, args: Args) -> Result<(), Error> {
        match self {
            Registered::Boxed(cb) => cb.invoke(args),
            Registered::Answer(slot) => {
                slot.invoke(args);
                Ok(())
            }
        }
    }

    pub(crate) fn fail(self, error: Error) {
        match self {
            Registered::Boxed(cb) => cb.fail(error),
            Registered::Answer(slot) => slot.fail(error),
        }
    }
}

/// The router's side of an [`Answer`]: fills the slot.
pub(crate) trait AnswerSink: Send + Sync {
    /// The peer invoked the request's callback with `args`.
    fn invoke(&self, args: Args);
    /// The callback will never be invoked.
    fn fail(&self, error: Error);
}

/// What a request's answer slot holds.
enum AnswerState<A> {
    /// No answer yet; the waiting task, once it has polled.
    Waiting(Option<Waker>),
    Ready(Result<A, Error>),
    /// The answer was taken by the future.
    Taken,
}

/// The answer slot of a request, shared by the router's table and the
/// [`Answer`] future.
pub(crate) struct AnswerSlot<A> {
    slot: Mutex<AnswerState<A>>,
}

impl<A> AnswerSlot<A> {
    fn lock(&self) -> std::sync::MutexGuard<'_, AnswerState<A>> {
        self.slot.locked()
    }

    fn complete(&self, result: Result<A, Error>) {
        let waker = {
            let mut slot = self.lock();
            match &mut *slot {
                AnswerState::Waiting(waker) => {
                    let waker = waker.take();
                    *slot = AnswerState::Ready(result);
                    waker
                }
                // Filled once only: the table hands the slot out once.
                AnswerState::Ready(_) | AnswerState::Taken => None,
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<A: FromArgs + Send> AnswerSink for AnswerSlot<A> {
    fn invoke(&self, args: Args) {
        self.complete(A::from_args(&args));
    }

    fn fail(&self, error: Error) {
        self.complete(Err(error));
    }
}

/// The future of a request's answer: the arguments the peer invoked the
/// request's callback with, converted into `A`, or why it never was
/// ([`Error::Timeout`], [`Error::Disconnected`], [`Error::Closed`]).
pub(crate) struct Answer<A> {
    slot: Arc<AnswerSlot<A>>,
}

impl<A: FromArgs + Send> Answer<A> {
    /// An answer slot for the table, and the future that waits for it.
    pub(crate) fn new() -> (Arc<dyn AnswerSink>, Self) {
        let slot = Arc::new(AnswerSlot {
            slot: Mutex::new(AnswerState::Waiting(None)),
        });
        (slot.clone(), Answer { slot })
    }
}

impl<A> Future for Answer<A> {
    type Output = Result<A, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.slot.lock();
        match std::mem::replace(&mut *slot, AnswerState::Taken) {
            AnswerState::Ready(result) => Poll::Ready(result),
            AnswerState::Waiting(waker) => {
                let waker = match waker {
                    Some(w) if w.will_wake(cx.waker()) => w,
                    _ => cx.waker().clone(),
                };
                *slot = AnswerState::Waiting(Some(waker));
                Poll::Pending
            }
            // Polled again after it was ready.
            AnswerState::Taken => Poll::Ready(Err(Error::Closed)),
        }
    }
}

/// The future of a [`Callback::once`]: the arguments the peer invoked it with.
#[derive(Debug)]
#[must_use = "a Reply does nothing unless awaited"]
pub struct Reply<A> {
    rx: oneshot::Receiver<Result<A, Error>>,
}

impl<A> Future for Reply<A> {
    type Output = Result<A, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

/// A callback the peer passed in a frame; [`RemoteCallback::call`] sends a
/// response frame that invokes it.
///
/// Clones share one "invoked" flag: the first call sends, every later call
/// (from any clone) fails with [`Error::AlreadyInvoked`] and sends nothing.
#[derive(Clone)]
pub struct RemoteCallback {
    received: Arc<Received>,
    slot: usize,
}

impl fmt::Debug for RemoteCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteCallback")
            .field("frame", &self.frame_id())
            .field("position", &self.position())
            .field("invoked", &self.is_invoked())
            .finish()
    }
}

impl RemoteCallback {
    pub(crate) fn new(received: Arc<Received>, slot: usize) -> Self {
        RemoteCallback { received, slot }
    }

    /// The id of the frame the callback came with.
    pub fn frame_id(&self) -> u32 {
        self.received.frame.id
    }

    /// The callback's position in that frame's argument list.
    pub fn position(&self) -> u32 {
        self.received.frame.callbacks[self.slot]
    }

    /// True once the callback has been invoked (by this handle or a clone).
    pub fn is_invoked(&self) -> bool {
        self.received.is_invoked(self.slot)
    }

    /// Invokes the callback with `args`, which may contain callbacks again.
    ///
    /// Errors: [`Error::AlreadyInvoked`] on a second call, [`Error::Disconnected`]
    /// if the connection the callback came on is gone, or an encoding or queue
    /// error; in each case nothing is sent.
    pub fn call<'a>(&self, args: impl IntoArgs<'a>) -> Result<(), Error> {
        let received = &self.received;
        if !received.claim(self.slot) {
            return Err(Error::AlreadyInvoked {
                frame: self.frame_id(),
                position: self.position(),
            });
        }
        if received.router.epoch() != received.epoch {
            return Err(Error::disconnected(
                "the connection this callback came on has closed",
            ));
        }
        let kind = OutKind::Response {
            to: self.frame_id(),
            position: self.position(),
        };
        received
            .router
            .send_response(kind, args.into_args(), received.epoch)
            .inspect_err(|_| received.release(self.slot))
    }

    /// [`call`](Self::call), but waits for room when the outgoing queue is
    /// full instead of failing with [`Error::QueueFull`], as
    /// [`Router::emit_wait`](crate::Router::emit_wait) does for events. The
    /// arguments are encoded at once; the future (`Send` and `'static`) only
    /// waits for room. A response that an empty queue cannot take fails at
    /// once, and one whose connection closes while it waits fails with
    /// [`Error::Disconnected`]. When it fails, or is dropped before it
    /// completes, nothing was sent and the callback may be called again.
    pub fn call_wait<'a>(
        &self,
        args: impl IntoArgs<'a>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let received = &self.received;
        let send = if !received.claim(self.slot) {
            Err(Error::AlreadyInvoked {
                frame: self.frame_id(),
                position: self.position(),
            })
        } else {
            let claim = Claim {
                received: received.clone(),
                slot: self.slot,
                sent: false,
            };
            if received.router.epoch() != received.epoch {
                Err(Error::disconnected(
                    "the connection this callback came on has closed",
                ))
            } else {
                let kind = OutKind::Response {
                    to: self.frame_id(),
                    position: self.position(),
                };
                let args = args.into_args();
                let sending = received
                    .router
                    .send_response_wait(kind, args, received.epoch);
                Ok((claim, sending))
            }
        };
        async move {
            let (mut claim, sending) = send?;
            sending.await?;
            claim.sent = true;
            Ok(())
        }
    }
}

/// A callback's slot claimed by [`RemoteCallback::call_wait`]: released
/// again when dropped before its response was queued.
struct Claim {
    received: Arc<Received>,
    slot: usize,
    sent: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.sent {
            self.received.release(self.slot);
        }
    }
}
