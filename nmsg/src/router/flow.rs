//! Flow control: whether the transport may read more from its peer now, and
//! the router's async handlers that run (counted, and cancelled when the
//! router closes).
//!
//! Reading waits while the outgoing queue holds half of one of its bounds or
//! more (the peer does not read its answers), or while
//! [`max_running_handlers`](super::RouterBuilder::max_running_handlers) async
//! handlers run (the peer sends faster than they finish). Both are known
//! without a lock: a flag the queue raises when a push reaches its high-water
//! mark and lowers when it is taken, and a count of the running handlers that
//! only async handlers touch (once when spawned, once when they end). One
//! waker, the transport's, is woken when either changes back.
//!
//! The running handlers' tasks are cancelled when the router closes: a server
//! socket's router closes with its connection, and at the server's stop. A
//! client's router outlives each of its connections, so its handlers run on
//! across a reconnection (still within the bound), until the client stops.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::task::JoinHandle;

use crate::sync::MutexExt;

use super::options::Options;
use super::{Link, Router};

/// The queue's part of the read gate: raised while the queue is at or above
/// its high-water mark, and the transport's task waiting to read. Lives in the
/// [`Outbox`](super::outbox::Outbox), which raises and lowers it under its lock.
#[derive(Default)]
pub(super) struct ReadGate {
    high: AtomicBool,
    /// Not the gate's: the outbox's `bulk_form` is keyed, read without the
    /// queue's lock so that a bulk received in the form already used takes
    /// none. Kept here, where it fits in the padding after `high`, to keep
    /// the router small.
    pub(super) keyed: AtomicBool,
    reader: AtomicWaker,
}

/// Where reading pauses: half of a queue bound (rounded up, at least 1).
fn high_water(bound: usize) -> usize {
    (bound - bound / 2).max(1)
}

impl ReadGate {
    /// After a push (under the queue's lock), with the queue's frames and
    /// bytes: raised once either reaches half of its bound.
    pub(super) fn raise_at(&self, (frames, bytes): (usize, usize), opts: &Options) {
        if (frames >= high_water(opts.max_queued_frames)
            || bytes >= high_water(opts.max_queued_bytes))
            && !self.high.load(Ordering::Relaxed)
        {
            self.high.store(true, Ordering::Release);
        }
    }

    /// At a take (under the queue's lock, which empties it): lowered. True if
    /// it was raised; then wake the reader ([`ReadGate::wake_reader`]).
    pub(super) fn lower(&self) -> bool {
        let raised = self.high.load(Ordering::Relaxed);
        if raised {
            self.high.store(false, Ordering::Release);
        }
        raised
    }

    /// Wakes the transport's task if it waits to read.
    pub(super) fn wake_reader(&self) {
        self.reader.wake();
    }

    fn is_high(&self) -> bool {
        self.high.load(Ordering::Acquire)
    }
}

/// The router's async handlers that run: how many, and their tasks, to
/// cancel when the router closes.
#[derive(Default)]
pub(super) struct Handlers {
    /// A `u32` (no process runs 4 billion tasks), to pair with `unhandled`
    /// and keep the router small.
    running: AtomicU32,
    /// Events that arrived with no handler, and were ignored (the route
    /// table's count, kept here beside `running`); saturates at `u32::MAX`.
    pub(super) unhandled: AtomicU32,
    /// Made at the first async handler, or at the close: a router that runs
    /// none (most of a server's sockets) keeps one word for it.
    tasks: Mutex<Option<Box<Tasks>>>,
}

struct Tasks {
    /// The tasks spawned, some of them finished: pruned when the list has
    /// doubled since the last pruning, so it holds about twice the running ones.
    handles: Vec<JoinHandle<()>>,
    prune_at: usize,
    /// The router is closed: a task spawned now is cancelled at once.
    closed: bool,
}

impl Tasks {
    fn new() -> Box<Tasks> {
        Box::new(Tasks {
            handles: Vec::new(),
            prune_at: PRUNE_MIN,
            closed: false,
        })
    }
}

/// The least length of the task list before it is pruned.
const PRUNE_MIN: usize = 64;

impl Handlers {
    /// Cancels every running handler (the router closed): each task is
    /// dropped at its next `.await`; so is any spawned later.
    pub(super) fn cancel(&self) {
        let handles = {
            let mut tasks = self.tasks.locked();
            let tasks = tasks.get_or_insert_with(Tasks::new);
            tasks.closed = true;
            std::mem::take(&mut tasks.handles)
        };
        // Outside the lock: aborting may drop a task's future here, and its
        // drop may call into the router.
        for task in handles {
            task.abort();
        }
    }
}

/// Held by a running handler's task, dropped when it ends, is cancelled, or
/// is dropped unfinished with its runtime: counts it out, and wakes the
/// transport if the count was at the bound.
pub(super) struct Running(Router);

impl Running {
    /// The router the handler runs for.
    pub(super) fn router(&self) -> &Router {
        &self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let inner = &*self.0.inner;
        let before = inner.routes.handlers.running.fetch_sub(1, Ordering::AcqRel) as usize;
        if before >= inner.opts.max_running_handlers {
            inner.outbox.gate.wake_reader();
        }
    }
}

impl Router {
    /// Spawns the task of an async handler on `runtime`, counted among the
    /// running ones and cancelled when the router closes; `task` gets the
    /// handler's [`Running`] mark, and must hold it until it ends.
    pub(super) fn spawn_handler<T, F>(&self, runtime: &tokio::runtime::Handle, task: T)
    where
        T: FnOnce(Running) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let handlers = &self.inner.routes.handlers;
        handlers.running.fetch_add(1, Ordering::AcqRel);
        // Made before the task: a task dropped unpolled still counts out.
        let task = runtime.spawn(task(Running(self.clone())));
        let mut guard = handlers.tasks.locked();
        let tasks = guard.get_or_insert_with(Tasks::new);
        if tasks.closed {
            drop(guard);
            return task.abort();
        }
        if tasks.handles.len() >= tasks.prune_at {
            tasks.handles.retain(|t| !t.is_finished());
            tasks.prune_at = (tasks.handles.len() * 2).max(PRUNE_MIN);
        }
        tasks.handles.push(task);
    }

    /// How many of this router's async handlers run now (spawned and not
    /// ended). At most [`max_running_handlers`](super::RouterBuilder::max_running_handlers)
    /// when the transport waits for [`Link::poll_read_ready`] before each message.
    pub fn running_handlers(&self) -> usize {
        self.inner.routes.handlers.running.load(Ordering::Acquire) as usize
    }

    /// True when the transport may read: the queue is below its high-water
    /// mark and fewer than the bound of async handlers run.
    fn may_read(&self) -> bool {
        let inner = &*self.inner;
        !inner.outbox.gate.is_high()
            && (inner.routes.handlers.running.load(Ordering::Acquire) as usize)
                < inner.opts.max_running_handlers
    }
}

impl Link {
    /// Ready when the transport may read and dispatch more messages; pending
    /// (the task woken once it may) while the router is over one of its
    /// bounds, so that a peer that sends faster than its requests are handled
    /// or answered waits instead of growing this process:
    ///
    /// - the outgoing queue holds half of
    ///   [`max_queued_frames`](crate::RouterBuilder::max_queued_frames) or of
    ///   [`max_queued_bytes`](crate::RouterBuilder::max_queued_bytes) or more
    ///   (until it is taken);
    /// - [`max_running_handlers`](crate::RouterBuilder::max_running_handlers)
    ///   of the router's async handlers run (until one ends).
    ///
    /// Cheap (two atomic loads while it is ready): a transport asks before
    /// each message it dispatches. One task at a time may wait on it.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let router = self.router();
        if router.may_read() {
            return Poll::Ready(());
        }
        router.inner.outbox.gate.reader.register(cx.waker());
        // Looked at again after the waker is in place: a change in between
        // would otherwise wake no one.
        if router.may_read() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::high_water;

    #[test]
    fn the_high_water_mark_is_half_a_bound_and_never_zero() {
        assert_eq!(high_water(10_000), 5_000);
        assert_eq!(high_water(3), 2);
        assert_eq!(high_water(1), 1);
        assert_eq!(high_water(0), 1);
        assert_eq!(high_water(usize::MAX), usize::MAX / 2 + 1);
    }
}
