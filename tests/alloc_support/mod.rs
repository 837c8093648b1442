//! A global allocator for tests that measure memory: it counts the bytes
//! live on each thread and the peak since the last [`reset_peak`], and
//! refuses a thread more than [`CAP`] bytes, so that a test of code that
//! wants gigabytes aborts instead of taking the machine's memory.
//!
//! `mod alloc_support;` in a test file installs it for that test binary.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// A thread that goes over this many live bytes gets no more memory.
pub const CAP: isize = 1 << 30;

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// Counts `delta` bytes more for this thread; false (and nothing counted)
/// if that would take it over [`CAP`].
fn note(delta: isize) -> bool {
    LIVE.try_with(|live| {
        let now = live.get() + delta;
        if delta > 0 && now > CAP {
            return false;
        }
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        true
    })
    .unwrap_or(true)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size() as isize) {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size() as isize) {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !note(new_size as isize - layout.size() as isize) {
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The bytes live on this thread now.
pub fn live_bytes() -> isize {
    LIVE.with(Cell::get)
}

/// Starts counting the peak from what is live now; gives that base.
pub fn reset_peak() -> isize {
    let live = live_bytes();
    PEAK.with(|peak| peak.set(live));
    live
}

/// The most bytes live at once on this thread since [`reset_peak`] gave
/// `base`, above it.
pub fn peak_above(base: isize) -> isize {
    PEAK.with(Cell::get) - base
}

/// The most bytes live at once on this thread while `f` ran, above what was
/// live when it started.
pub fn peak_growth(f: impl FnOnce()) -> isize {
    let base = reset_peak();
    f();
    peak_above(base)
}
