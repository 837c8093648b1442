//! [`Link`]: the side of a router that a transport drives.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::args::{Args, Received};
use crate::codec::{BulkForm, Decoded};
use crate::error::{Disconnect, Error, Panicked, ProtocolError};
use crate::frame::{Frame, FrameKind, REPORTED_FRAME_ERRORS};
use crate::framing::PREFIX_LEN;
use crate::handler::panic_message;

use super::options::Buffering;
use super::outbox::Unwritten;
use super::pending::fail_all;
use super::Router;

/// The transport's handle on a [`Router`] ([`Router::link`]): it hands the
/// router incoming messages ([`Link::dispatch`]), takes outgoing bytes from it
/// ([`Link::take_outgoing`], [`Link::next_outgoing`]), and tells it when the
/// connection is gone ([`Link::connection_lost`]). A
/// [`Connection`](crate::transport::Connection) drives one; a transport of
/// one's own can too. Cheap to clone.
///
/// One transport at a time should drive a router.
#[derive(Debug, Clone)]
pub struct Link {
    router: Router,
}

impl Router {
    /// The transport's handle on this router.
    pub fn link(&self) -> Link {
        Link {
            router: self.clone(),
        }
    }
}

impl Link {
    /// The router this link drives.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Routes one incoming message (the payload, without its length prefix).
    ///
    /// The frames of a bulk are routed as they are decoded, so a message
    /// costs memory for the frame at hand, not for its element count.
    /// Malformed messages and frames go to the error hook; the other frames of
    /// the message are still routed, and so are later messages. The bad frames
    /// of a bulk are reported once, after its good frames are routed: the bad
    /// frame's own error if there is one, else [`Error::MalformedFrames`]
    /// (how many, and the first few). A bulk that breaks off partway (cut
    /// short, trailing bytes) has the frames before the break routed, then the
    /// break reported. Sync handlers run before this returns.
    pub fn dispatch(&self, payload: Bytes) {
        let router = &self.router;
        let epoch = router.epoch();
        let mut bad = BadFrames::default();
        let meters = crate::observe::meters();
        meters
            .bytes_received
            .increment((PREFIX_LEN + payload.len()) as u64);
        let mut frames = 0u64;
        let decoded = router
            .inner
            .opts
            .codec
            .decode_message(&payload, &mut |frame| {
                frames += 1;
                match frame {
                    Ok(frame) => self.route_frame(payload.clone(), frame, epoch),
                    Err(e) => bad.add(e),
                }
            });
        match decoded {
            // A single frame (the common case) takes the payload, with no
            // call through the sink.
            Ok(Decoded::Single(Ok(frame))) => {
                meters.frames_received.increment(1);
                self.route_frame(payload, frame, epoch)
            }
            Ok(Decoded::Single(Err(e))) | Err(e) => {
                meters.frames_received.increment(frames.max(1));
                router.report(e.into())
            }
            // A peer is answered in the bulk form it uses (unless fixed).
            Ok(Decoded::Bulk(_)) => {
                meters.frames_received.increment(frames);
                self.heard_bulk(BulkForm::Array)
            }
            Ok(Decoded::KeyedBulk(_)) => {
                meters.frames_received.increment(frames);
                self.heard_bulk(BulkForm::Keyed)
            }
        }
        if let Some(e) = bad.into_error() {
            router.report(e);
        }
    }

    fn heard_bulk(&self, form: BulkForm) {
        let inner = &*self.router.inner;
        if inner.opts.bulk_form.is_none() {
            inner.outbox.learn_bulk_form(form);
        }
    }

    fn route_frame(&self, payload: Bytes, frame: Frame, epoch: u64) {
        let router = &self.router;
        let received = Received::new(router.clone(), payload, frame, epoch);
        match received.frame.kind {
            FrameKind::Event(_) => router.inner.routes.route_event(router, Args::new(received)),
            FrameKind::Response { to, position } => {
                self.route_response(to, position, Args::new(received))
            }
        }
    }

    /// Invokes the callback a response names; its errors and panics go to the
    /// error hook, as a handler's do.
    fn route_response(&self, to: u32, position: u32, args: Args) {
        if crate::observe::spans_wanted() {
            return self.route_response_traced(to, position, args);
        }
        self.invoke(to, position, args);
    }

    /// [`Link::route_response`] in an `nmsg.callback` span ([`crate::observe`]).
    #[cold]
    #[inline(never)]
    fn route_response_traced(&self, to: u32, position: u32, args: Args) {
        let frame = &args.received.frame;
        let span = tracing::debug_span!(
            "nmsg.callback",
            otel.name = "nmsg.callback",
            otel.kind = crate::observe::incoming_kind(!frame.callbacks.is_empty()),
            rpc.system = "nmsg",
            nmsg.frame_id = frame.id,
            nmsg.callback.frame = to,
            nmsg.callback.position = position,
            network.peer.address = self.router.peer(),
        );
        span.in_scope(|| self.invoke(to, position, args));
    }

    fn invoke(&self, to: u32, position: u32, args: Args) {
        let router = &self.router;
        let inner = &*router.inner;
        match (inner.pending).take_callback(
            &inner.outbox,
            to,
            position,
            &crate::observe::meters().in_flight,
        ) {
            Some(cb) => match std::panic::catch_unwind(AssertUnwindSafe(|| cb.invoke(args))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => router.report(e),
                Err(panic) => router.report(Error::HandlerPanicked {
                    what: Panicked::Callback,
                    event: String::new(),
                    message: panic_message(&*panic),
                }),
            },
            None => router.report(Error::StrayResponse {
                frame: to,
                position,
            }),
        }
    }

    /// Takes what is queued without waiting: complete length-prefixed
    /// messages, ready to write in one go; `None` if nothing is.
    pub fn take_outgoing(&self) -> Option<Bytes> {
        let inner = &*self.router.inner;
        let (bytes, frames) = inner.outbox.take(&*inner.opts.codec)?;
        // Counted once per take, not per frame.
        let meters = crate::observe::meters();
        meters.frames_sent.increment(frames as u64);
        meters.bytes_sent.increment(bytes.len() as u64);
        meters.queued.decrement(frames as f64);
        Some(bytes)
    }

    /// Waits for outgoing bytes and takes all that are queued (with
    /// [`Buffering::Cycle`], at the end of the cycle the first of them
    /// opened). `None` once the router is closed and everything queued was
    /// taken.
    pub async fn next_outgoing(&self) -> Option<Bytes> {
        let mut pacer = Pacer::default();
        std::future::poll_fn(|cx| loop {
            if let Some(bytes) = pacer.poll_take(self, cx) {
                return Poll::Ready(Some(bytes));
            }
            if pacer.is_timing() {
                return Poll::Pending;
            }
            match self.poll_queued(cx) {
                Poll::Ready(true) => continue,
                Poll::Ready(false) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await
    }

    /// For a connection task that polls [`Link::poll_queued`]: it is running,
    /// so frames queued from now on (by the handlers it runs) need not wake it;
    /// it takes them before it waits again. A task woken while it runs is
    /// rescheduled as if it yielded, which wakes an idle worker thread: once
    /// per call, that cross-thread wake-up cost more than the call itself.
    pub(crate) fn writer_running(&self) {
        self.router.inner.outbox.writer_running();
    }

    /// Ready with `true` when outgoing bytes are queued, `false` when the
    /// router is closed and nothing is; otherwise the task is woken by the
    /// next frame queued (one task at a time: the last one to poll).
    pub(crate) fn poll_queued(&self, cx: &mut Context<'_>) -> Poll<bool> {
        self.router.inner.outbox.poll_queued(cx)
    }

    /// Tells the router that its connection is gone: frames with callbacks that
    /// a transport already took fail with [`Error::Disconnected`], and callbacks
    /// received on that connection can no longer be invoked. The responses
    /// still queued (answers to that connection's frames) are dropped, with
    /// the callbacks they carry, and reported as lost
    /// ([`Error::FramesLost`] to the error hook); what else is still queued
    /// stays queued, for the next connection.
    pub fn connection_lost(&self, reason: &str) {
        self.lose(Disconnect::new(None, reason), Unwritten::Nothing);
    }

    /// [`Link::connection_lost`], for a transport that took `taken` (complete
    /// length-prefixed messages, from [`Link::take_outgoing`]) and wrote only
    /// its first `written` bytes: the messages from the first not written
    /// whole are lost too, and counted (with the tail it took at a stop
    /// request, when it was still at `taken`).
    pub(crate) fn lost_with(&self, why: Disconnect, taken: &[u8], written: usize) {
        self.lose(why, Unwritten::Chunk { taken, written })
    }

    /// [`Link::connection_lost`], for a connection whose task is gone and
    /// cannot say what it wrote: what it took since it last had nothing to
    /// write counts as lost, whole (and the take before that, when a stop
    /// request ([`Link::stopping`]) may have taken a tail while it was still
    /// written).
    pub(crate) fn lost(&self, why: Disconnect) {
        self.lose(why, Unwritten::Unknown)
    }

    /// The connection is asked to stop and may be dropped before it writes
    /// all it took ([`Connection::close_within`](crate::transport::Connection::close_within)):
    /// a take from now on may be its tail, taken while the take before is
    /// still written, so a loss that cannot say what was written counts both.
    pub(crate) fn stopping(&self) {
        self.router.inner.outbox.lock().stopping();
    }

    fn lose(&self, why: Disconnect, unwritten: Unwritten<'_>) {
        let router = &self.router;
        let inner = &*router.inner;
        let opts = &*inner.opts;
        let (failed, lost) = {
            // The queue's lock, held while the frames it gave out are failed:
            // none is taken meanwhile.
            let mut queue = inner.outbox.lock();
            let bulks = opts.buffering != Buffering::Off;
            let (queued, _) = queue.level();
            let lost = queue.lose(unwritten, &why, &*opts.codec, bulks);
            // The responses it dropped leave the queue.
            let (left, _) = queue.level();
            crate::observe::meters()
                .queued
                .decrement((queued - left) as f64);
            let taken = queue.taken();
            let in_flight = &crate::observe::meters().in_flight;
            (
                inner
                    .pending
                    .connection_lost(queue.table_mut(), taken, in_flight),
                lost,
            )
        };
        fail_all(failed, || Error::Disconnected(why.clone()));
        // The dropped responses made room.
        inner.outbox.notify_space();
        if let Some(lost) = lost {
            router.report(Error::FramesLost {
                frames: lost.frames,
                bytes: lost.bytes,
                reason: why,
            });
        }
    }

    /// Closes the router, as [`Router::close`].
    pub fn close(&self) {
        self.router.close();
    }
}

/// The bad frames of one bulk message: counted, the first few kept, and
/// reported once when the message is routed.
#[derive(Default)]
struct BadFrames {
    count: usize,
    first: Vec<ProtocolError>,
}

impl BadFrames {
    fn add(&mut self, e: ProtocolError) {
        self.count += 1;
        if self.first.len() < REPORTED_FRAME_ERRORS {
            self.first.push(e);
        }
    }

    /// The report: none, the one bad frame's error, or a summary.
    fn into_error(mut self) -> Option<Error> {
        match self.count {
            0 => None,
            1 => self.first.pop().map(Error::Protocol),
            count => Some(Error::MalformedFrames {
                count,
                first: self.first,
            }),
        }
    }
}

/// Takes a router's outgoing bytes when its [`Buffering`] says: at once, or,
/// with [`Buffering::Cycle`], at the end of the cycle that the first frame
/// queued opened. The one implementation of the cycle, for
/// [`Link::next_outgoing`] and a connection's task.
#[derive(Default)]
pub(crate) struct Pacer {
    /// The end of the open cycle; boxed, as only `Cycle` routers make one.
    cycle: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Pacer {
    /// What may be written now: `None` when nothing is queued, or the cycle
    /// is still open (then the task is woken at its end).
    pub(crate) fn poll_take(&mut self, link: &Link, cx: &mut Context<'_>) -> Option<Bytes> {
        let Buffering::Cycle(cycle) = link.router.buffering() else {
            return link.take_outgoing();
        };
        if self.cycle.is_none() && link.router.queued_frames() > 0 {
            self.cycle = Some(Box::pin(tokio::time::sleep(cycle)));
        }
        match self.cycle.as_mut().map(|t| t.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => {
                self.cycle = None;
                link.take_outgoing()
            }
            _ => None,
        }
    }

    /// True while a cycle is open.
    pub(crate) fn is_timing(&self) -> bool {
        self.cycle.is_some()
    }
}
