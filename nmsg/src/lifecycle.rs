//! The lifecycle of a task that runs in the background: a client's
//! (connecting, connected, stopped) and a server's (binding, listening,
//! stopped), one mechanism for both, learnt once.
//!
//! A [`Lifecycle`] holds three things that the task's handles and the task
//! share:
//!
//! - the **status**, which any handle reads ([`Lifecycle::status`]) or waits
//!   on ([`Lifecycle::wait_for`]); where a task ends for a reason, the status
//!   carries it (a connection's would be `Option<CloseReason>`);
//! - the **stop request**, raised from any handle ([`Lifecycle::request_stop`])
//!   and seen by the one task, which polls it by hand in its own futures
//!   ([`Lifecycle::poll_stop`]) or wraps a wait in it
//!   ([`Lifecycle::unless_stopped`]);
//! - the **end**: the task holds its shared state through an [`Ending`]
//!   guard, dropped last, which sets the status to [`Status::ENDED`] however
//!   the task ends (it returns, panics, or its runtime shuts down). A `stop`
//!   waits for that status, so it returns once the task has done everything
//!   else.
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
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{broadcast, Notify};

use crate::sync::MutexExt;
use crate::transport::{Signal, STOP};

/// Default bound on how long [`Client::stop`](crate::Client::stop) and
/// [`Server::stop`](crate::Server::stop) spend writing what is queued.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The status type of a [`Lifecycle`].
pub(crate) trait Status: Clone {
    /// The status of a task that has ended, set by its [`Ending`] guard.
    const ENDED: Self;
}

/// The status of a background task, its stop request, and its end (see the
/// module docs).
pub(crate) struct Lifecycle<S> {
    status: Mutex<S>,
    /// Wakes the callers of [`Lifecycle::wait_for`] when the status changes.
    changed: Notify,
    /// The stop request, raised from any handle, polled by the task.
    requests: Signal,
}

impl<S: Status> Lifecycle<S> {
    pub(crate) fn new(status: S) -> Self {
        Lifecycle {
            status: Mutex::new(status),
            changed: Notify::new(),
            requests: Signal::default(),
        }
    }

    /// The status now.
    pub(crate) fn status(&self) -> S {
        self.status.locked().clone()
    }

    /// Sets the status and wakes the waiters.
    pub(crate) fn set(&self, status: S) {
        *self.status.locked() = status;
        self.changed.notify_waiters();
    }

    /// Waits until `ready` gives a value for the status, and returns it.
    pub(crate) async fn wait_for<T>(&self, mut ready: impl FnMut(&S) -> Option<T>) -> T {
        loop {
            // Taken before the status is read: a change between the two wakes it.
            let changed = self.changed.notified();
            if let Some(value) = ready(&self.status.locked()) {
                return value;
            }
            changed.await;
        }
    }

    /// Asks the task to stop. The request stays: the task sees it at its next poll.
    pub(crate) fn request_stop(&self) {
        self.requests.raise(STOP);
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
/// then the status of `T`'s lifecycle says [`Status::ENDED`], with everything
/// else the task does done, however it ends.
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
        (*self.shared).as_ref().set(S::ENDED);
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
