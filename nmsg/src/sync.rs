//! Locking that outlives a panic.
//!
//! A handler that panics while nmsg holds one of its locks poisons that lock.
//! The state behind every nmsg lock is left consistent at each point where a
//! user's code can run, so a poisoned lock is taken as it is: one panicking
//! handler must not make every later call on the router or server panic too.

use std::sync::{Mutex, MutexGuard};

/// [`Mutex`] access that ignores poisoning (see the module docs).
pub(crate) trait MutexExt<T> {
    /// Locks the mutex, poisoned or not.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> MutexExt<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|e| e.into_inner())
    }
}
