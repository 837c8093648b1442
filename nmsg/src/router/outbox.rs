//! The outgoing queue: complete length-prefixed messages ready to write, the
//! open bulk of a buffered router, the queue's bounds, and the wake-ups of the
//! writer and of the callers waiting for room; what a lost connection loses:
//! the responses still queued, and what the connection took and did not write.
//!
//! Responses ({r, f}) mean something on one connection only: the peer that
//! sent the frame they answer. At a loss every queued response belongs to the
//! lost connection (a response to a frame of an older connection is refused
//! when it is queued), so all of them are dropped then, and the rest stays
//! for the next connection. To find them without a cost per frame while
//! none is queued, the queue describes its messages as [`Run`]s only while
//! it must: a buffered router keeps one run per bulk (its frame count, and
//! whether it holds responses: responses and other frames never share a
//! bulk); an unbuffered one keeps runs only from the first response queued
//! to the next take, one per stretch of responses or of other frames.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use crate::codec::{Bulk, BulkForm, Codec};
use crate::error::Disconnect;
use crate::error::Error;
use crate::framing::{put_message, PREFIX_LEN};
use crate::sync::MutexExt;

use super::flow::ReadGate;
use super::options::{Buffering, Options};
use super::pending::{drop_table, Table};

/// Frames and their bytes, counted (bytes as they go on the wire: length
/// prefixes and bulk headers included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) frames: usize,
    pub(crate) bytes: usize,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.frames += other.frames;
        self.bytes += other.bytes;
    }
}

/// A stretch of consecutive messages of the queue (see the module docs):
/// where it ends in `ready`, its frames, their encoded bytes (without
/// prefixes or bulk headers: what the byte bound counts), and whether they
/// are responses.
#[derive(Debug, Clone, Copy)]
struct Run {
    end: usize,
    frames: usize,
    frame_bytes: usize,
    response: bool,
}

/// What one take gave out: where its bytes are (to know it again when a
/// connection hands them back at its loss), its frames, and with bulks one
/// run per bulk (the frames of each).
#[derive(Default)]
struct Given {
    addr: usize,
    len: usize,
    frames: usize,
    runs: Vec<Run>,
    /// Taken after [`Ledger::stopping`]: may be a connection's tail, taken
    /// while it still wrote the take before.
    after_stop: bool,
}

impl Given {
    fn whole(&self) -> Tally {
        Tally {
            frames: self.frames,
            bytes: self.len,
        }
    }

    fn is(&self, bytes: &[u8]) -> bool {
        self.len != 0 && self.addr == bytes.as_ptr() as usize && self.len == bytes.len()
    }

    /// What of `bytes` (this take) is lost when its first `written` bytes
    /// were written: every message from the first not written whole.
    fn unwritten(&self, bytes: &[u8], written: usize, bulks: bool) -> Tally {
        let (mut at, mut index) = (0, 0);
        while at + PREFIX_LEN <= bytes.len() {
            let end = message_end(bytes, at);
            if end > written {
                let before = if bulks {
                    self.runs.iter().take(index).map(|r| r.frames).sum()
                } else {
                    index
                };
                return Tally {
                    frames: self.frames.saturating_sub(before),
                    bytes: bytes.len() - at,
                };
            }
            at = end;
            index += 1;
        }
        Tally::default()
    }
}

/// Where the length-prefixed message at `at` of `bytes` ends.
fn message_end(bytes: &[u8], at: usize) -> usize {
    let prefix = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
    (at + PREFIX_LEN + u32::from_be_bytes(prefix) as usize).min(bytes.len())
}

/// The last two takes. A connection holds at most two takes it has not
/// written: the one it writes, and the tail it takes at a stop request;
/// every other take comes after the one before was written.
#[derive(Default)]
struct Ledger {
    older: Given,
    last: Given,
    /// A stop was requested of a connection that may be aborted
    /// ([`Link::stopping`](super::Link::stopping)).
    stopping: bool,
}

impl Ledger {
    /// Records a take; `runs` (the queue's) are moved in, and get the room
    /// of the oldest record's in exchange.
    fn record(&mut self, addr: usize, len: usize, frames: usize, runs: &mut Vec<Run>) {
        let mut spare = std::mem::replace(&mut self.older, std::mem::take(&mut self.last));
        spare.runs.clear();
        std::mem::swap(&mut spare.runs, runs);
        self.last = Given {
            addr,
            len,
            frames,
            runs: spare.runs,
            after_stop: self.stopping,
        };
    }

    /// Nothing given out is unwritten any more: the taker wrote all it took
    /// ([`Outbox::poll_queued`]), or its loss was counted.
    fn forget(&mut self) {
        self.older.len = 0;
        self.older.frames = 0;
        self.last.len = 0;
        self.last.frames = 0;
    }

    fn lost(&self, unwritten: Unwritten<'_>, bulks: bool) -> Tally {
        match unwritten {
            Unwritten::Chunk { taken, written } => {
                if self.last.is(taken) {
                    self.last.unwritten(taken, written, bulks)
                } else if self.older.is(taken) {
                    // Still at the older take: the last one is its tail.
                    let mut lost = self.older.unwritten(taken, written, bulks);
                    lost.add(self.last.whole());
                    lost
                } else {
                    // Not one of them: counted by a loss before.
                    Tally::default()
                }
            }
            Unwritten::Unknown => {
                let mut lost = self.last.whole();
                if self.last.after_stop {
                    lost.add(self.older.whole());
                }
                lost
            }
            Unwritten::Nothing => Tally::default(),
        }
    }
}

/// What a lost connection says of the bytes it took from the queue.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Unwritten<'a> {
    /// The last bytes it took, of which it wrote the first `written`.
    Chunk { taken: &'a [u8], written: usize },
    /// It cannot say (its task is gone): what it took since it last waited
    /// with nothing to write counts whole.
    Unknown,
    /// Nothing (a transport of one's own, which the queue cannot follow).
    Nothing,
}

/// Losses kept for the router's owner to report.
#[derive(Default)]
struct Kept {
    lost: Tally,
    reason: Option<Disconnect>,
}

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
    /// `ready` as consecutive runs of messages (see the module docs): always
    /// with bulks, one per bulk; unbuffered, only while a response is queued
    /// (and until the next take), else empty. When not empty, the last run
    /// ends where `ready` does.
    runs: Vec<Run>,
    /// The open bulk (buffered routers): its frames, their bytes, and whether
    /// they are responses.
    bulk: Bulk,
    /// The form the open bulk is sealed in: the peer's, or the one the
    /// options fix ([`Outbox::learn_bulk_form`]).
    bulk_form: BulkForm,
    bulk_frames: usize,
    bulk_bytes: usize,
    bulk_responses: bool,
    /// Response frames queued (in `ready` and the open bulk). A `u32`, which
    /// the queue's bounds keep far from full, to keep the router small.
    responses: u32,
    queued_frames: usize,
    queued_bytes: usize,
    /// What the last two takes gave out, for a lost connection to count what
    /// it did not write; made at the first take (a router that never sends,
    /// as many a server socket's, holds none).
    given: Option<Box<Ledger>>,
    /// Losses kept for the router's owner ([`Queue::keep_losses`]) instead
    /// of being reported to the error hook.
    kept: Option<Box<Kept>>,
    /// Set by [`Queue::keep_losses`]; `kept` is made at the first loss, so
    /// that a connection that loses nothing (a server socket's) costs none.
    keeps_losses: bool,
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

    /// A connection is lost: drops the queued responses and counts them with
    /// what the connection took and did not write. Gives the loss to report
    /// to the error hook, unless the owner keeps losses ([`Queue::keep_losses`])
    /// or nothing was lost.
    pub(super) fn lose(
        &mut self,
        unwritten: Unwritten<'_>,
        why: &Disconnect,
        codec: &dyn Codec,
        bulks: bool,
    ) -> Option<Tally> {
        let mut lost = Tally::default();
        if let Some(given) = &mut self.given {
            lost = given.lost(unwritten, bulks);
            given.forget();
            given.stopping = false;
        }
        lost.add(self.drop_responses(codec, bulks));
        if lost.frames == 0 {
            return None;
        }
        crate::observe::lost(lost.frames as u64, lost.bytes as u64);
        if !self.keeps_losses {
            return Some(lost);
        }
        let kept = self.kept.get_or_insert_with(Box::default);
        kept.lost.add(lost);
        kept.reason = Some(why.clone());
        None
    }

    /// From now on losses are kept for [`Queue::take_loss`], not reported.
    pub(super) fn keep_losses(&mut self) {
        self.keeps_losses = true;
    }

    /// The losses kept since the last call, with the reason of the last.
    pub(super) fn take_loss(&mut self) -> Option<(Tally, Disconnect)> {
        let kept = self.kept.as_mut()?;
        let reason = kept.reason.take()?;
        Some((std::mem::take(&mut kept.lost), reason))
    }

    /// See [`Link::stopping`](super::Link::stopping).
    pub(super) fn stopping(&mut self) {
        self.given.get_or_insert_with(Box::default).stopping = true;
    }

    /// What is queued: frames, and their bytes as they would go on the wire
    /// (length prefixes and bulk headers included: the open bulk is sealed).
    pub(super) fn queued_on_wire(&mut self, codec: &dyn Codec) -> Tally {
        if !self.bulk.is_empty() {
            self.seal_bulk(codec);
        }
        Tally {
            frames: self.queued_frames,
            bytes: self.ready.len(),
        }
    }

    /// What is queued: frames, and their encoded bytes.
    #[cfg(test)]
    pub(super) fn queued(&self) -> Tally {
        Tally {
            frames: self.queued_frames,
            bytes: self.queued_bytes,
        }
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
    /// large or is a response and the bulk holds other frames (or the other
    /// way round). Gives the writer to wake (once no lock is held).
    pub(super) fn push(&mut self, frame: &[u8], response: bool, opts: &Options) -> Option<Waker> {
        self.seq += 1;
        self.queued_frames += 1;
        self.queued_bytes += frame.len();
        self.responses += response as u32;
        let codec = &*opts.codec;
        if opts.buffering == Buffering::Off {
            let start = self.ready.len();
            // Checked against the maximum when it was encoded: cannot fail.
            let _ = put_message(&mut self.ready, frame, opts.max_message_size);
            if response || !self.runs.is_empty() {
                self.note_single(start, frame.len(), response);
            }
        } else {
            if !self.bulk.is_empty()
                && (self.bulk_responses != response
                    || !self.bulk.fits(codec, frame.len(), opts.max_message_size))
            {
                self.seal_bulk(codec);
            }
            self.bulk.push(codec, frame);
            self.bulk_frames += 1;
            self.bulk_bytes += frame.len();
            self.bulk_responses = response;
        }
        self.writer_waker.take()
    }

    /// Adds the single frame just put at `start` of `ready` (`len` bytes
    /// before its prefix) to the runs, starting them with a run of what was
    /// queued before it if there are none yet.
    fn note_single(&mut self, start: usize, len: usize, response: bool) {
        if self.runs.is_empty() && start > 0 {
            self.runs.push(Run {
                end: start,
                frames: self.queued_frames - 1,
                frame_bytes: self.queued_bytes - len,
                response: false,
            });
        }
        let end = self.ready.len();
        match self.runs.last_mut() {
            Some(run) if run.response == response => {
                run.end = end;
                run.frames += 1;
                run.frame_bytes += len;
            }
            _ => self.runs.push(Run {
                end,
                frames: 1,
                frame_bytes: len,
                response,
            }),
        }
    }

    /// Seals the open bulk (not empty) into `ready`, as a run of its own.
    fn seal_bulk(&mut self, codec: &dyn Codec) {
        self.bulk.seal(codec, self.bulk_form, &mut self.ready);
        self.runs.push(Run {
            end: self.ready.len(),
            frames: std::mem::take(&mut self.bulk_frames),
            frame_bytes: std::mem::take(&mut self.bulk_bytes),
            response: std::mem::take(&mut self.bulk_responses),
        });
    }

    /// Drops every queued response (see the module docs); gives what was
    /// dropped, bytes as they would have gone out (length prefixes and bulk
    /// headers included).
    fn drop_responses(&mut self, codec: &dyn Codec, bulks: bool) -> Tally {
        let mut dropped = Tally::default();
        if self.responses == 0 {
            return dropped;
        }
        if !self.bulk.is_empty() && self.bulk_responses {
            self.seal_bulk(codec);
        }
        let old = self.ready.split();
        let mut runs = std::mem::take(&mut self.runs);
        let (mut start, mut kept, mut dropped_frame_bytes) = (0, 0, 0);
        for i in 0..runs.len() {
            let run = runs[i];
            let bytes = &old[start..run.end];
            start = run.end;
            if run.response {
                dropped.frames += run.frames;
                dropped.bytes += bytes.len();
                dropped_frame_bytes += run.frame_bytes;
            } else {
                self.ready.extend_from_slice(bytes);
                runs[kept] = Run {
                    end: self.ready.len(),
                    ..run
                };
                kept += 1;
            }
        }
        // Unbuffered, runs are kept only while a response is queued: none is now.
        runs.truncate(if bulks { kept } else { 0 });
        self.runs = runs;
        self.queued_frames -= dropped.frames;
        self.queued_bytes -= dropped_frame_bytes;
        self.responses = 0;
        dropped
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

    /// Seals bulks in `form` from now on: the form the peer's last bulk had,
    /// unless the options fix one ([`RouterBuilder::bulk_form`](super::RouterBuilder::bulk_form)).
    pub(super) fn learn_bulk_form(&self, form: BulkForm) {
        let keyed = form == BulkForm::Keyed;
        if self.gate.keyed.load(Ordering::Relaxed) != keyed {
            self.lock().bulk_form = form;
            self.gate.keyed.store(keyed, Ordering::Relaxed);
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

    /// Takes all that is queued (sealing the open bulk), with its count of
    /// frames; `None` if nothing is.
    pub(super) fn take(&self, codec: &dyn Codec) -> Option<(Bytes, usize)> {
        let (out, lowered) = {
            let mut guard = self.lock();
            let q = &mut *guard;
            if q.queued_frames == 0 {
                return None;
            }
            if !q.bulk.is_empty() {
                q.seal_bulk(codec);
            }
            let frames = std::mem::take(&mut q.queued_frames);
            q.queued_bytes = 0;
            q.responses = 0;
            q.taken = q.seq;
            let out = q.ready.split().freeze();
            let given = q.given.get_or_insert_with(Box::default);
            given.record(out.as_ptr() as usize, out.len(), frames, &mut q.runs);
            ((out, frames), self.gate.lower())
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
    ///
    /// The taker asks when it has written all it took: from then on a loss
    /// counts none of it.
    pub(super) fn poll_queued(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut q = self.lock();
        if let Some(given) = &mut q.given {
            given.forget();
        }
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use crate::codec::MsgPack;
    use crate::error::Error;
    use crate::frame::{FrameKind, OutKind};
    use crate::router::{Buffering, Router};
    use crate::{args, Codec};

    /// Events (`true`) and responses (`false`), in the order queued below.
    const MIXED: [bool; 8] = [true, true, false, true, false, false, true, false];

    /// Queues [`MIXED`], each frame with its position as its one argument.
    fn queue_mixed(router: &Router) {
        let epoch = router.epoch();
        for (n, &event) in MIXED.iter().enumerate() {
            if event {
                router.emit("n", args![n as u64]).unwrap();
            } else {
                let kind = OutKind::Response {
                    to: 100 + n as u32,
                    position: 0,
                };
                router.send_response(kind, args![n as u64], epoch).unwrap();
            }
        }
    }

    /// Each frame of what `router` has queued: (is an event, its argument).
    fn taken(router: &Router) -> Vec<(bool, u64)> {
        let Some(bytes) = router.link().take_outgoing() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let payload = &bytes[at + 4..at + 4 + len];
            for frame in MsgPack.decode_all(payload).unwrap().into_frames() {
                let frame = frame.unwrap();
                let n = crate::codec::decode_arg(&MsgPack, &payload[frame.data[0].clone()]);
                out.push((matches!(frame.kind, FrameKind::Event(_)), n.unwrap()));
            }
            at += 4 + len;
        }
        out
    }

    /// The router's queued frames and their encoded bytes.
    fn queued(router: &Router) -> (usize, usize) {
        let q = router.inner.outbox.lock().queued();
        (q.frames, q.bytes)
    }

    #[tokio::test]
    async fn a_loss_drops_every_queued_response_and_keeps_the_rest_in_order() {
        let routers = [
            Router::new(),
            Router::builder().buffering(Buffering::Idle).build(),
            // bulks of a frame or two
            Router::builder()
                .buffering(Buffering::Idle)
                .max_message_size(30)
                .build(),
        ];
        for router in routers {
            // What the events alone cost the byte bound.
            let events_only = Router::builder()
                .buffering(router.buffering())
                .max_message_size(router.max_message_size())
                .build();
            for (n, _) in MIXED.iter().enumerate().filter(|(_, &e)| e) {
                events_only.emit("n", args![n as u64]).unwrap();
            }
            let lost = Arc::new(Mutex::new(Vec::new()));
            let hook = lost.clone();
            router.on_error(move |e| {
                if let Error::FramesLost { frames, .. } = e {
                    hook.lock().unwrap().push(frames);
                }
            });
            queue_mixed(&router);
            router.link().connection_lost("gone");
            assert_eq!(*lost.lock().unwrap(), [4], "{:?}", router.buffering());
            assert_eq!(queued(&router), queued(&events_only));
            // A response of the connection that is gone is refused.
            let kind = OutKind::Response { to: 1, position: 0 };
            let stale = router.send_response(kind, args![0u64], router.epoch() - 1);
            assert!(matches!(stale, Err(Error::Disconnected(_))), "{stale:?}");
            // Frames queued after the loss join the kept ones.
            router.emit("n", args![99u64]).unwrap();
            let epoch = router.epoch();
            router.send_response(kind, args![100u64], epoch).unwrap();
            assert_eq!(
                taken(&router),
                [
                    (true, 0),
                    (true, 1),
                    (true, 3),
                    (true, 6),
                    (true, 99),
                    (false, 100)
                ]
            );
            // Nothing is queued: a loss now drops nothing.
            router.link().connection_lost("gone again");
            assert_eq!(lost.lock().unwrap().len(), 1);
        }
    }

    #[tokio::test]
    async fn responses_taken_before_a_loss_are_not_dropped_again() {
        let router = Router::new();
        queue_mixed(&router);
        assert_eq!(taken(&router).len(), MIXED.len());
        router.emit("n", args![7u64]).unwrap();
        router.link().connection_lost("gone");
        assert_eq!(taken(&router), [(true, 7)]);
    }
}
