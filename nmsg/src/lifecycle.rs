//! The lifecycle of a task that runs in the background: a client's
//! (connecting, connected, stopped), a server's (binding, listening,
//! stopped) and a connection's (open, or closed for a reason), one mechanism
//! for the three, learnt once.
//!
//! A [`Lifecycle`] holds three things that the task's handles and the task
//! share:
//!
//! - the **status**, which any handle reads ([`Lifecycle::status`]) or waits
//!   on ([`Lifecycle::wait_for`]); where a task ends for a reason, the status
//!   carries it (a connection's is `Option<CloseReason>`);
//! - the **requests** ([`Signal`] flags that stay raised: the stop, and a
//!   held connection's start), raised from any handle ([`Lifecycle::request_stop`],
//!   [`Lifecycle::raise`]) and seen by the one task, which polls it by hand in its own futures
//!   ([`Lifecycle::poll_stop`]) or wraps a wait in it
//!   ([`Lifecycle::unless_stopped`]);
//! - the **end**, recorded once ([`Lifecycle::end`]; the first end stands,
//!   and the status changes no more): the task holds its shared state through
//!   an [`Ending`] guard, dropped last, which ends the lifecycle with
//!   [`Status::ENDED`] however the task ends (it returns, panics, or its
//!   runtime shuts down), unless the task recorded an end of its own before.
//!   A `stop` waits for the end, so it returns once the task has done
//!   everything else.
//!
//! Nothing here is on the path of a message: a lifecycle changes when a
//! connection comes or goes, never per frame.
//!
//! Lifecycle events ([`Events`]) are a broadcast channel, created at the first
//! subscription: a channel allocates all its slots up front (a client's, about
//! 18 KB), which an application with thousands of clients that never listen
//! should not pay. Until then events are dropped, as a channel with no
//! receiver drops them.

use std::future::Future;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::sync::{broadcast, Notify};

use crate::sync::MutexExt;

/// Default bound on how long [`Client::stop`](crate::Client::stop) and
/// [`Server::stop`](crate::Server::stop) spend writing what is queued.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// [`Signal`] flag: the task may begin (a connection made held waits for it).
pub(crate) const START: u8 = 1;
/// [`Signal`] flag: stop (a connection: close gracefully).
pub(crate) const STOP: u8 = 2;

/// Requests to one task, raised from anywhere: flags that stay set, and the
/// task's waker, woken when one is raised. Small enough to keep for every
/// connection (a `Notify` and the `Notified` future its task would hold take
/// about 100 bytes, a oneshot channel another allocation).
#[derive(Default)]
pub(crate) struct Signal {
    flags: AtomicU8,
    task: AtomicWaker,
}

impl std::fmt::Debug for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signal")
            .field("flags", &self.flags.load(Ordering::Relaxed))
            .finish()
    }
}

impl Signal {
    /// Sets `flag` and wakes the task.
    pub(crate) fn raise(&self, flag: u8) {
        self.flags.fetch_or(flag, Ordering::AcqRel);
        self.task.wake();
    }

    /// True if `flag` is set.
    pub(crate) fn is_raised(&self, flag: u8) -> bool {
        self.flags.load(Ordering::Acquire) & flag != 0
    }

    /// For the task: true if `flag` is set; otherwise the task is woken when a
    /// flag is raised.
    pub(crate) fn poll_raised(&self, flag: u8, cx: &mut Context<'_>) -> bool {
        self.task.register(cx.waker());
        self.is_raised(flag)
    }
}

/// The status type of a [`Lifecycle`].
pub(crate) trait Status: Clone {
    /// The status of a task that has ended, set by its [`Ending`] guard
    /// unless the task recorded another end.
    const ENDED: Self;
}

/// The status and whether it is the end.
struct Current<S> {
    status: S,
    ended: bool,
}

/// The status of a background task, its stop request, and its end (see the
/// module docs).
pub(crate) struct Lifecycle<S> {
    current: Mutex<Current<S>>,
    /// Wakes the callers of [`Lifecycle::wait_for`] when the status changes.
    changed: Notify,
    /// The stop request, raised from any handle, polled by the task.
    requests: Signal,
}

impl<S: Status> Lifecycle<S> {
    pub(crate) fn new(status: S) -> Self {
        Lifecycle {
            current: Mutex::new(Current {
                status,
                ended: false,
            }),
            changed: Notify::new(),
            requests: Signal::default(),
        }
    }

    /// The status now.
    pub(crate) fn status(&self) -> S {
        self.current.locked().status.clone()
    }

    /// Sets the status and wakes the waiters; nothing once it has ended.
    pub(crate) fn set(&self, status: S) {
        self.record(status, false);
    }

    /// Ends with `status`, and wakes the waiters; nothing if it has ended
    /// already (the first end stands).
    pub(crate) fn end(&self, status: S) {
        self.record(status, true);
    }

    fn record(&self, status: S, end: bool) {
        let mut current = self.current.locked();
        if current.ended {
            return;
        }
        *current = Current { status, ended: end };
        drop(current);
        self.changed.notify_waiters();
    }

    /// Waits until `ready` gives a value for the status, and returns it.
    pub(crate) async fn wait_for<T>(&self, mut ready: impl FnMut(&S) -> Option<T>) -> T {
        self.wait(|current| ready(&current.status)).await
    }

    /// Waits until it has ended, and gives the status it ended with.
    pub(crate) async fn ended(&self) -> S {
        self.wait(|current| current.ended.then(|| current.status.clone()))
            .await
    }

    async fn wait<T>(&self, mut ready: impl FnMut(&Current<S>) -> Option<T>) -> T {
        loop {
            // Taken before the status is read: a change between the two wakes it.
            let changed = self.changed.notified();
            if let Some(value) = ready(&self.current.locked()) {
                return value;
            }
            changed.await;
        }
    }

    /// Asks the task to stop. The request stays: the task sees it at its next poll.
    pub(crate) fn request_stop(&self) {
        self.raise(STOP);
    }

    /// Raises a request flag ([`START`], [`STOP`]) and wakes the task.
    pub(crate) fn raise(&self, flag: u8) {
        self.requests.raise(flag);
    }

    /// True if the request `flag` is raised.
    pub(crate) fn is_raised(&self, flag: u8) -> bool {
        self.requests.is_raised(flag)
    }

    /// For the task: true if the request `flag` is raised; otherwise the task
    /// is woken when a flag is raised.
    pub(crate) fn poll_raised(&self, flag: u8, cx: &mut Context<'_>) -> bool {
        self.requests.poll_raised(flag, cx)
    }

    /// Asks the task to stop, and waits until it has ended: the task ends
    /// the lifecycle as the last thing it does.
    pub(crate) async fn stop(&self) -> S {
        self.request_stop();
        self.ended().await
    }

    /// For the task: true once a stop is requested; otherwise the task is
    /// woken when one is.
    pub(crate) fn poll_stop(&self, cx: &mut Context<'_>) -> bool {
        self.requests.poll_raised(STOP, cx)
    }

    /// For the task: runs `work` until it completes (`Some` of its output) or
    /// a stop is requested (`None`), whichever comes first; a stop requested
    /// before wins.
    pub(crate) async fn unless_stopped<F: Future>(&self, work: F) -> Option<F::Output> {
        let mut work = std::pin::pin!(work);
        std::future::poll_fn(|cx| match self.poll_stop(cx) {
            true => Poll::Ready(None),
            false => work.as_mut().poll(cx).map(Some),
        })
        .await
    }
}

impl<S: Status + std::fmt::Debug> std::fmt::Debug for Lifecycle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.status().fmt(f)
    }
}

/// What a background task holds its shared state `T` by, and drops last:
/// then `T`'s lifecycle has ended ([`Status::ENDED`], unless the task ended it
/// otherwise), with everything else the task does done, however it ends.
pub(crate) struct Ending<T: AsRef<Lifecycle<S>>, S: Status> {
    shared: Arc<T>,
    status: PhantomData<fn() -> S>,
}

impl<T: AsRef<Lifecycle<S>>, S: Status> Ending<T, S> {
    pub(crate) fn new(shared: Arc<T>) -> Self {
        Ending {
            shared,
            status: PhantomData,
        }
    }

    /// The shared state, to hand on.
    pub(crate) fn shared(&self) -> &Arc<T> {
        &self.shared
    }
}

impl<T: AsRef<Lifecycle<S>>, S: Status> Deref for Ending<T, S> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.shared
    }
}

impl<T: AsRef<Lifecycle<S>>, S: Status> Drop for Ending<T, S> {
    fn drop(&mut self) {
        (*self.shared).as_ref().end(S::ENDED);
    }
}

/// A lifecycle's events, for any number of subscribers, each of which may
/// fall `capacity` events behind before it loses the oldest (tokio's
/// broadcast semantics). The channel is created by the first subscription
/// (see the module docs).
pub(crate) struct Events<E> {
    capacity: usize,
    sender: Mutex<Option<broadcast::Sender<E>>>,
}

impl<E: Clone> Events<E> {
    pub(crate) fn new(capacity: usize) -> Self {
        Events {
            capacity,
            sender: Mutex::new(None),
        }
    }

    /// Events from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<E> {
        self.sender
            .locked()
            .get_or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe()
    }

    /// Sends `event` to the subscribers there are.
    pub(crate) fn send(&self, event: E) {
        if let Some(sender) = &*self.sender.locked() {
            let _ = sender.send(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Phase {
        Starting,
        Up,
        Done(u8),
    }

    impl Status for Phase {
        const ENDED: Self = Phase::Done(0);
    }

    struct Shared(Lifecycle<Phase>);

    impl AsRef<Lifecycle<Phase>> for Shared {
        fn as_ref(&self) -> &Lifecycle<Phase> {
            &self.0
        }
    }

    #[tokio::test]
    async fn waiters_see_the_changes_and_the_first_end_stands() {
        let shared = Arc::new(Shared(Lifecycle::new(Phase::Starting)));
        let up = tokio::spawn({
            let shared = shared.clone();
            async move { shared.0.wait_for(|p| (*p == Phase::Up).then_some(())).await }
        });
        tokio::task::yield_now().await;
        shared.0.set(Phase::Up);
        up.await.unwrap();
        let task = Ending::new(shared.clone());
        task.0.end(Phase::Done(7));
        task.0.set(Phase::Up);
        drop(task);
        assert_eq!(shared.0.status(), Phase::Done(7));
        assert_eq!(shared.0.ended().await, Phase::Done(7));
    }

    #[tokio::test]
    async fn the_guard_ends_a_task_that_stops_and_a_stop_before_the_work_wins() {
        let shared = Arc::new(Shared(Lifecycle::new(Phase::Starting)));
        let task = Ending::new(shared.clone());
        let run = tokio::spawn(async move {
            let never = std::future::pending::<()>();
            assert_eq!(task.0.unless_stopped(never).await, None);
            assert_eq!(task.0.unless_stopped(async { 1 }).await, None);
        });
        assert_eq!(shared.0.stop().await, Phase::ENDED);
        run.await.unwrap();
    }

    #[tokio::test]
    async fn events_reach_the_subscribers_there_are() {
        let events = Events::new(2);
        events.send(1);
        let mut rx = events.subscribe();
        events.send(2);
        assert_eq!(rx.try_recv(), Ok(2));
    }
}
