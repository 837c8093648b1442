//! The outgoing queue: complete length-prefixed messages ready to write, the
//! open bulk of a buffered router, the queue's bounds, and the wake-ups of the
//! writer and of the callers waiting for room.

use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use crate::codec::{Bulk, Codec};
use crate::error::Error;
use crate::framing::put_message;
use crate::sync::MutexExt;

use super::flow::ReadGate;
use super::options::{Buffering, Options};
use super::pending::{drop_table, Table};

/// A router's outgoing queue.
pub(super) struct Outbox {
    queue: Mutex<Queue>,
    /// Wakes the callers of [`Router::emit_wait`](super::Router::emit_wait)
    /// when the queue was taken (or closed).
    space: Notify,
    /// Whether the transport may read now, as far as the queue's level says
    /// ([`ReadGate`]): raised by a push, lowered by a take.
    pub(super) gate: ReadGate,
}

/// What [`Outbox`] guards: the queue, and the callback table of the frames
/// in it and before it (owned by [`Pending`](super::pending::Pending), which
/// alone reads and changes it), under one lock because a frame is registered
/// and queued in one step.
#[derive(Default)]
pub(super) struct Queue {
    /// Complete length-prefixed messages, ready to write.
    ready: BytesMut,
    /// The open bulk (buffered routers).
    bulk: Bulk,
    queued_frames: usize,
    queued_bytes: usize,
    /// Frames ever queued, and the sequence number up to which a transport took them.
    seq: u64,
    taken: u64,
    /// The transport waiting for outgoing bytes ([`Outbox::poll_queued`]);
    /// cleared while a connection task runs ([`Outbox::writer_running`]).
    writer_waker: Option<Waker>,
    closed: bool,
    table: Table,
}

impl Drop for Queue {
    fn drop(&mut self) {
        drop_table(&mut self.table);
    }
}

impl Queue {
    /// Whether a frame of `len` bytes may be queued now.
    pub(super) fn admit(&self, len: usize, opts: &Options) -> Result<(), Error> {
        if self.closed {
            return Err(Error::Closed);
        }
        if len > opts.max_queued_bytes {
            return Err(Error::FrameExceedsQueue {
                size: len,
                max_queued_bytes: opts.max_queued_bytes,
            });
        }
        if self.queued_frames + 1 > opts.max_queued_frames
            || self.queued_bytes + len > opts.max_queued_bytes
        {
            return Err(Error::QueueFull {
                frames: self.queued_frames,
                bytes: self.queued_bytes,
            });
        }
        Ok(())
    }

    /// The callback table ([`Pending`](super::pending::Pending)'s).
    pub(super) fn table(&self) -> &Table {
        &self.table
    }

    pub(super) fn table_mut(&mut self) -> &mut Table {
        &mut self.table
    }

    /// The sequence number up to which a transport took frames.
    pub(super) fn taken(&self) -> u64 {
        self.taken
    }

    /// Closes the queue (what is in it can still be taken). Gives the writer
    /// to wake.
    pub(super) fn close(&mut self) -> Option<Waker> {
        self.closed = true;
        self.writer_waker.take()
    }

    /// Frames and bytes queued now.
    pub(super) fn level(&self) -> (usize, usize) {
        (self.queued_frames, self.queued_bytes)
    }

    /// The sequence number the next frame queued gets.
    pub(super) fn next_seq(&self) -> u64 {
        self.seq + 1
    }

    /// Queues an encoded frame (admitted): as a message of its own, or into
    /// the open bulk, sealing it first when the frame would make it too
    /// large. Gives the writer to wake (once no lock is held).
    pub(super) fn push(&mut self, frame: &[u8], opts: &Options) -> Option<Waker> {
        self.seq += 1;
        self.queued_frames += 1;
        self.queued_bytes += frame.len();
        let codec = &*opts.codec;
        if opts.buffering == Buffering::Off {
            // Checked against the maximum when it was encoded: cannot fail.
            let _ = put_message(&mut self.ready, frame, opts.max_message_size);
        } else {
            if !self.bulk.fits(codec, frame.len(), opts.max_message_size) {
                self.bulk.seal(codec, &mut self.ready);
            }
            self.bulk.push(codec, frame);
        }
        self.writer_waker.take()
    }
}

impl Outbox {
    pub(super) fn new() -> Self {
        Outbox {
            queue: Mutex::new(Queue::default()),
            space: Notify::new(),
            gate: ReadGate::default(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.locked()
    }

    /// A future that is ready once the queue was taken or closed; made before
    /// a refused frame is tried again, so that no wake-up is missed.
    pub(super) fn room(&self) -> tokio::sync::futures::Notified<'_> {
        self.space.notified()
    }

    /// Takes all that is queued (sealing the open bulk); `None` if nothing is.
    pub(super) fn take(&self, codec: &dyn Codec) -> Option<Bytes> {
        let (out, lowered) = {
            let mut guard = self.lock();
            let q = &mut *guard;
            if q.queued_frames == 0 {
                return None;
            }
            if !q.bulk.is_empty() {
                q.bulk.seal(codec, &mut q.ready);
            }
            q.queued_frames = 0;
            q.queued_bytes = 0;
            q.taken = q.seq;
            (q.ready.split().freeze(), self.gate.lower())
        };
        self.space.notify_waiters();
        if lowered {
            self.gate.wake_reader();
        }
        Some(out)
    }

    /// See [`Link::writer_running`](super::Link::writer_running).
    pub(super) fn writer_running(&self) {
        self.lock().writer_waker = None;
    }

    /// Ready with `true` when outgoing bytes are queued, `false` when the
    /// queue is closed and nothing is; otherwise the task is woken by the
    /// next frame queued (one task at a time: the last one to poll).
    pub(super) fn poll_queued(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut q = self.lock();
        if q.queued_frames > 0 {
            return Poll::Ready(true);
        }
        if q.closed {
            return Poll::Ready(false);
        }
        match &mut q.writer_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    pub(super) fn notify_space(&self) {
        self.space.notify_waiters();
    }

    pub(super) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub(super) fn queued_frames(&self) -> usize {
        self.lock().queued_frames
    }
}
