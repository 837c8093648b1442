//! The frames this side sent with callbacks: their ids, the table of
//! callbacks waiting for answers, deadlines and the timer task that expires
//! them, and what a lost connection or a close does to them.

use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use metrics::Gauge;
use tokio::time::Instant;

use crate::callback::Registered;
use crate::error::Error;
use crate::frame::MAX_ID;

use super::outbox::Outbox;
use super::Inner;

/// A frame's callbacks by position; `None` once invoked. Inline for one, as
/// a request has: no allocation for the list.
pub(super) type FrameCallbacks = smallvec::SmallVec<[(u32, Option<Registered>); 1]>;

/// The callback table: made with the first frame that has callbacks, so that
/// a router that never sends a callback (many a server's socket) holds none
/// of it. It lives under the outgoing queue's lock ([`Outbox`]): a frame is
/// registered here and queued there in one step, and a lost connection fails
/// exactly the frames a transport took from the queue.
pub(super) type Table = Option<Box<Calls>>;

/// Ids, the callback table's rules and the connection epoch of one router.
pub(super) struct Pending {
    next_id: AtomicU32,
    /// Set once the id counter has passed [`MAX_ID`]: from then on an id may
    /// still belong to a live frame, and [`Pending::allocate_id`] looks.
    wrapped: AtomicBool,
    /// Bumped whenever a connection is lost; callbacks from an older epoch are dead.
    epoch: AtomicU64,
}

/// A frame this side sent with callbacks, waiting for the peer to invoke them.
struct Waiting {
    callbacks: FrameCallbacks,
    left: usize,
    deadline: Instant,
    timeout: Duration,
    /// Outgoing sequence number of the frame, to tell whether a connection took it.
    seq: u64,
    /// The frame is a response: it means something on its connection only,
    /// and is dropped, not kept for the next, when that connection is lost.
    response: bool,
}

/// The frames that wait for answers, their deadlines, and the timer task that
/// enforces them.
///
/// The deadlines are kept in the waiting frames only, not in a sorted index: a
/// frame costs no insertion and no removal there. The timer knows the earliest
/// deadline (`earliest`, a lower bound once frames are answered) and looks
/// through the waiting frames when it comes; with the usual single timeout that
/// is about once per timeout, since by then the frames it saw are answered. A
/// look-through that finds nothing due sets `earliest` to the true minimum.
/// Look-throughs are at least [`SCAN_GAP`] apart, so frames whose deadlines are
/// spread out expire up to that much late, and never cost more than a pass over
/// the waiting frames per gap.
#[derive(Default)]
pub(super) struct Calls {
    waiting: HashMap<u32, Waiting, BuildHasherDefault<IdHasher>>,
    /// No waiting frame has an earlier deadline; `None` with none waiting.
    earliest: Option<Instant>,
    timer_running: bool,
    /// The deadline the timer task sleeps until; `None` while it sleeps without
    /// one. A new frame wakes the timer only when its deadline comes earlier,
    /// not once per frame: a wake per call cost a cross-thread wake-up per call.
    timer_armed: Option<Instant>,
    /// The timer task, while it sleeps.
    timer: Option<Waker>,
}

/// A frame to register: its id, callbacks and timeout.
pub(super) struct Registration<'a> {
    pub(super) id: u32,
    pub(super) callbacks: &'a mut FrameCallbacks,
    pub(super) timeout: Duration,
    pub(super) latency_allowance: Duration,
    pub(super) max_pending: usize,
    /// The frame's outgoing sequence number.
    pub(super) seq: u64,
    /// The frame is a response (see [`Waiting`]).
    pub(super) response: bool,
}

impl Pending {
    pub(super) fn new() -> Self {
        Pending {
            next_id: AtomicU32::new(0),
            wrapped: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
        }
    }

    /// The next id of the counter: 1 to [`MAX_ID`], then 1 again.
    fn next_id(&self) -> u32 {
        let prev = self
            .next_id
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |id| {
                if id >= MAX_ID {
                    // Before the counter shows the wrap: a thread that reads
                    // the counter after it also sees `wrapped`.
                    self.wrapped.store(true, Ordering::Relaxed);
                    Some(1)
                } else {
                    Some(id + 1)
                }
            })
            .unwrap_or(0);
        if prev >= MAX_ID {
            1
        } else {
            prev + 1
        }
    }

    /// The id for a frame about to be encoded. A frame with callbacks never
    /// gets the id of a frame that still waits for answers: until the counter
    /// first wraps (after a billion frames) none can have it; after, the
    /// table is looked at, and taken ids skipped.
    pub(super) fn allocate_id(&self, with_callbacks: bool, outbox: &Outbox) -> u32 {
        let id = self.next_id();
        if !with_callbacks || !self.wrapped.load(Ordering::Relaxed) {
            return id;
        }
        let queue = outbox.lock();
        let Some(calls) = queue.table().as_ref() else {
            return id;
        };
        let mut id = id;
        // At most as many tries as frames wait: one of that many more ids is free.
        for _ in 0..=calls.waiting.len() {
            if !calls.waiting.contains_key(&id) {
                break;
            }
            id = self.next_id();
        }
        id
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Registers a frame's callbacks (taken from `frame.callbacks` on
    /// success), starting the timer task with the first. Gives back the timer
    /// task to wake, when the frame's deadline comes before the one it sleeps
    /// until (wake it once no lock is held). Refused when too many frames
    /// wait, when the id is taken (only if another frame took it since
    /// [`Pending::allocate_id`], after a wrap of the counter) or without a
    /// runtime for the timer.
    pub(super) fn register(
        &self,
        table: &mut Table,
        frame: Registration<'_>,
        router: &Arc<Inner>,
    ) -> Result<Option<Waker>, Error> {
        let calls = table.get_or_insert_with(Box::default);
        if calls.waiting.len() >= frame.max_pending || calls.waiting.contains_key(&frame.id) {
            return Err(Error::TooManyPending {
                limit: frame.max_pending,
            });
        }
        if !calls.timer_running {
            let handle = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
            calls.timer_running = true;
            handle.spawn(run_timer(Arc::downgrade(router)));
        }
        let deadline = deadline_after(frame.timeout.saturating_add(frame.latency_allowance));
        let timer = match calls.timer_armed {
            Some(armed) if deadline >= armed => None,
            _ => calls.timer.take(),
        };
        calls.earliest = Some(calls.earliest.map_or(deadline, |e| e.min(deadline)));
        let callbacks = std::mem::take(frame.callbacks);
        calls.waiting.insert(
            frame.id,
            Waiting {
                left: callbacks.len(),
                callbacks,
                deadline,
                timeout: frame.timeout,
                seq: frame.seq,
                response: frame.response,
            },
        );
        Ok(timer)
    }

    /// Takes the callback at `position` of frame `to`, if it still waits.
    pub(super) fn take_callback(
        &self,
        outbox: &Outbox,
        to: u32,
        position: u32,
        in_flight: &Gauge,
    ) -> Option<Registered> {
        let mut queue = outbox.lock();
        let calls = queue.table_mut().as_mut()?;
        let waiting = calls.waiting.get_mut(&to)?;
        let cb = waiting
            .callbacks
            .iter_mut()
            .find(|(pos, _)| *pos == position)?
            .1
            .take()?;
        waiting.left -= 1;
        if waiting.left == 0 {
            calls.waiting.remove(&to);
            in_flight.decrement(1.0);
        }
        Some(cb)
    }

    /// A connection is gone: a new epoch begins, and the frames a transport
    /// took (sequence number up to `taken`) stop waiting, and so do the
    /// responses still queued, which the queue drops (every response belongs
    /// to the connection that is gone). Gives their callbacks.
    pub(super) fn connection_lost(
        &self,
        table: &mut Table,
        taken: u64,
        in_flight: &Gauge,
    ) -> Vec<(u32, Option<Registered>)> {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let mut failed = Vec::new();
        if let Some(calls) = table.as_mut() {
            let before = calls.waiting.len();
            calls.waiting.retain(|_, waiting| {
                let lost = waiting.seq <= taken || waiting.response;
                if lost {
                    failed.extend(std::mem::take(&mut waiting.callbacks));
                }
                !lost
            });
            in_flight.decrement((before - calls.waiting.len()) as f64);
        }
        failed
    }

    /// The router is closed: every frame stops waiting. Gives their
    /// callbacks, and the timer task to wake.
    pub(super) fn close(
        &self,
        table: &mut Table,
        in_flight: &Gauge,
    ) -> (Vec<(u32, Option<Registered>)>, Option<Waker>) {
        match table.as_mut() {
            Some(calls) => {
                calls.earliest = None;
                in_flight.decrement(calls.waiting.len() as f64);
                let failed = calls
                    .waiting
                    .drain()
                    .flat_map(|(_, waiting)| waiting.callbacks)
                    .collect();
                (failed, calls.timer.take())
            }
            None => (Vec::new(), None),
        }
    }

    /// Frames that wait for answers.
    pub(super) fn len(&self, outbox: &Outbox) -> usize {
        outbox
            .lock()
            .table()
            .as_ref()
            .map_or(0, |c| c.waiting.len())
    }
}

/// Frames that wait for answers in `table`.
pub(super) fn waiting(table: &Table) -> usize {
    table.as_ref().map_or(0, |c| c.waiting.len())
}

/// The router is gone: lets the timer task see it.
pub(super) fn drop_table(table: &mut Table) {
    if let Some(timer) = table.as_mut().and_then(|calls| calls.timer.take()) {
        timer.wake();
    }
}

/// Ends each callback with `error()`.
pub(super) fn fail_all(
    callbacks: impl IntoIterator<Item = (u32, Option<Registered>)>,
    error: impl Fn() -> Error,
) {
    for cb in callbacks.into_iter().filter_map(|(_, cb)| cb) {
        cb.fail(error());
    }
}

/// The instant `after` from now. A timeout too long for the clock (such as
/// `Duration::MAX`, meaning "keep it") is held for 30 years instead of panicking.
fn deadline_after(after: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(after.min(FAR)).unwrap_or(now)
}

/// Hashes frame ids with one multiplication. The ids are this side's own
/// counter (a peer can look ids up but never add any), so SipHash's defence
/// against chosen keys buys nothing here, and it cost more than the lookup.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The least time between two look-throughs of the waiting frames by the
/// timer (see [`Calls`]): a frame may expire this much after its deadline.
const SCAN_GAP: Duration = Duration::from_millis(10);

/// Drops waiting frames whose deadline passed. One task per router, started
/// with the first frame that has callbacks; ends when the router is dropped.
async fn run_timer(router: Weak<Inner>) {
    // Dropped when the task ends or is dropped unfinished (its runtime shut
    // down): the next frame with callbacks then starts a timer task again,
    // on its own runtime, instead of waiting on one that is gone.
    let _restart = TimerGone(router.clone());
    // Made for the first deadline, then moved to each next one.
    let mut sleep: Option<Pin<Box<tokio::time::Sleep>>> = None;
    // No look-through before this instant (see `Calls`).
    let mut quiet_until: Option<Instant> = None;
    std::future::poll_fn(|cx| loop {
        let Some(inner) = router.upgrade() else {
            return Poll::Ready(());
        };
        let now = Instant::now();
        let (expired, next) = {
            let mut queue = inner.outbox.lock();
            let calls = queue.table_mut().get_or_insert_with(Box::default);
            let mut expired = Vec::new();
            let due = calls.earliest.is_some_and(|e| e <= now);
            if due && quiet_until.is_none_or(|q| q <= now) {
                quiet_until = Some(now + SCAN_GAP);
                let mut earliest = None::<Instant>;
                calls.waiting.retain(|_, p| {
                    if p.deadline <= now {
                        expired.push((p.timeout, std::mem::take(&mut p.callbacks)));
                        false
                    } else {
                        earliest = Some(earliest.map_or(p.deadline, |e| e.min(p.deadline)));
                        true
                    }
                });
                calls.earliest = earliest;
            }
            // A due deadline waits for the end of the quiet time.
            let next = calls.earliest.map(|e| quiet_until.map_or(e, |q| e.max(q)));
            calls.timer_armed = next;
            // Registered under the lock that `register` checks `timer_armed`
            // under: an earlier deadline registered from now on wakes this task.
            match &calls.timer {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => calls.timer = Some(cx.waker().clone()),
            }
            (expired, next)
        };
        if !expired.is_empty() {
            crate::observe::meters()
                .in_flight
                .decrement(expired.len() as f64);
            crate::observe::callback_timeouts(expired.len() as u64);
        }
        drop(inner);
        for (timeout, callbacks) in expired {
            fail_all(callbacks, || Error::Timeout(timeout));
        }
        let Some(deadline) = next else {
            return Poll::Pending;
        };
        let sleep = match &mut sleep {
            Some(sleep) => {
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => sleep.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // The deadline has passed: look again.
    })
    .await
}

/// Marks a router's timer task as gone when dropped ([`run_timer`]).
struct TimerGone(Weak<Inner>);

impl Drop for TimerGone {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            let mut queue = inner.outbox.lock();
            if let Some(calls) = queue.table_mut().as_mut() {
                calls.timer_running = false;
                calls.timer = None;
                calls.timer_armed = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_wrap_after_a_billion_and_skip_zero() {
        let (p, o) = (Pending::new(), Outbox::new());
        p.next_id.store(MAX_ID - 1, Ordering::Relaxed);
        assert_eq!(p.allocate_id(false, &o), MAX_ID);
        assert_eq!(p.allocate_id(false, &o), 1);
        assert_eq!(p.allocate_id(false, &o), 2);
    }

    /// Makes frame `id` wait in the table (no timer: the test has no runtime).
    fn wait_on(outbox: &Outbox, id: u32) {
        let mut queue = outbox.lock();
        let calls = queue.table_mut().get_or_insert_with(Box::default);
        calls.waiting.insert(
            id,
            Waiting {
                callbacks: FrameCallbacks::new(),
                left: 1,
                deadline: Instant::now(),
                timeout: Duration::ZERO,
                seq: 0,
                response: false,
            },
        );
    }

    #[test]
    fn a_frame_never_gets_the_id_of_a_live_frame_across_the_wrap() {
        let (p, o) = (Pending::new(), Outbox::new());
        for id in [MAX_ID, 1, 2, 4] {
            wait_on(&o, id);
        }
        p.next_id.store(MAX_ID - 2, Ordering::Relaxed);
        assert_eq!(p.allocate_id(true, &o), MAX_ID - 1);
        // As if the counter had wrapped before (the live frames above were
        // put there by hand).
        p.wrapped.store(true, Ordering::Relaxed);
        // MAX_ID, 1 and 2 are live: the next free id is 3, then 5.
        assert_eq!(p.allocate_id(true, &o), 3);
        assert_eq!(p.allocate_id(true, &o), 5);
        // Frames without callbacks take the counter as it is.
        p.next_id.store(MAX_ID - 1, Ordering::Relaxed);
        assert_eq!(p.allocate_id(false, &o), MAX_ID);
        // The wrap itself, from MAX_ID to 1, skips the live ids.
        assert_eq!(p.allocate_id(true, &o), 3);
        let ids: Vec<u32> = (0..3).map(|_| p.allocate_id(true, &o)).collect();
        assert_eq!(ids, [5, 6, 7]);
    }

    #[test]
    fn the_wrap_is_noticed_by_the_counter() {
        let (p, o) = (Pending::new(), Outbox::new());
        wait_on(&o, 1);
        p.next_id.store(MAX_ID, Ordering::Relaxed);
        assert!(!p.wrapped.load(Ordering::Relaxed));
        // The counter wraps to 1, which is live: the frame gets 2.
        assert_eq!(p.allocate_id(true, &o), 2);
        assert!(p.wrapped.load(Ordering::Relaxed));
    }

    #[test]
    fn callbacks_time_out_after_the_runtime_of_the_first_timer_shut_down() {
        let router = crate::Router::builder()
            .default_timeout(Duration::from_secs(1))
            .build();
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        // The first request starts the timer task on `first`, which then shuts down.
        let early = {
            let _in_first = first.enter();
            router.request::<()>("early", ())
        };
        first.block_on(tokio::task::yield_now());
        drop(early);
        drop(first);
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        second.block_on(async {
            let reply = router.request::<()>("late", ());
            // Paused time runs on while nothing else can: a timer that is
            // alive fails the reply after 1 s (plus the latency allowance).
            let outcome = tokio::time::timeout(Duration::from_secs(60), reply).await;
            assert!(
                matches!(outcome, Ok(Err(Error::Timeout(_)))),
                "the reply did not time out: {outcome:?}"
            );
        });
    }

    #[tokio::test]
    async fn requests_find_free_ids_among_65536_live_ones_at_the_wrap() {
        // 65,536 requests kept waiting (long timeout) whose ids run across
        // the wrap: MAX_ID - 99 ..= MAX_ID, then 1 ..= 65,436. The counter is
        // then set back before them, so the next request meets the whole run
        // of live ids (it once recursed per live id and overflowed the stack).
        const LIVE: usize = 65_536;
        let router = crate::Router::builder()
            .max_pending(LIVE + 16)
            .max_queued_frames(LIVE + 16)
            .max_queued_bytes(usize::MAX)
            .default_timeout(Duration::from_secs(3600))
            .build();
        let pending = &router.inner.pending;
        pending.next_id.store(MAX_ID - 100, Ordering::Relaxed);
        let live: Vec<_> = (0..LIVE)
            .map(|n| router.request::<()>("live", (n as u32,)))
            .collect();
        assert!(pending.wrapped.load(Ordering::Relaxed));
        assert_eq!(router.queued_frames(), LIVE);
        router.link().take_outgoing().unwrap();
        pending.next_id.store(MAX_ID - 200, Ordering::Relaxed);
        let started = std::time::Instant::now();
        // The 100 ids below the run are free, then the run is skipped.
        let ids: Vec<u32> = (0..102)
            .map(|_| pending.allocate_id(true, &router.inner.outbox))
            .collect();
        assert_eq!(
            ids[..100],
            (MAX_ID - 199..=MAX_ID - 100).collect::<Vec<_>>()[..]
        );
        assert_eq!(ids[100..], [65_437, 65_438]);
        // A request through the send path meets the run too, and is queued.
        pending.next_id.store(MAX_ID - 100, Ordering::Relaxed);
        let _late = router.request::<()>("late", ());
        assert_eq!(router.queued_frames(), 1);
        // Bounded time: one table lookup per live id. A generous bound, for
        // a debug build on a busy machine; the run takes milliseconds.
        assert!(started.elapsed() < Duration::from_secs(10));
        drop(live);
    }

    #[tokio::test]
    async fn a_request_after_the_wrap_skips_the_id_of_one_still_waiting() {
        let router = crate::Router::new();
        let _first = router.request::<()>("first", ());
        router
            .inner
            .pending
            .next_id
            .store(MAX_ID, Ordering::Relaxed);
        let _second = router.request::<()>("second", ());
        router.emit("event", ()).unwrap();
        let mut out = router.link().take_outgoing().unwrap();
        let mut ids = Vec::new();
        while !out.is_empty() {
            let len = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
            let payload = out.split_to(crate::framing::PREFIX_LEN + len).split_off(4);
            match router.codec().decode_all(&payload).unwrap() {
                crate::frame::Message::Single(frame) => ids.push(frame.unwrap().id),
                crate::frame::Message::Bulk(_) => panic!("an unbuffered router sent a bulk"),
            }
        }
        // The second request wraps to 1, which the first still holds: it
        // gets 2; the event after it takes the counter as it is.
        assert_eq!(ids, [1, 2, 3]);
    }
}
