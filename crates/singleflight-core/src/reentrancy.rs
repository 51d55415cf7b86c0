//! Same-thread re-entrancy detection (`std` only).
//!
//! While a thread runs (or polls) the work of a flight, the pair (group, flight id) sits on a
//! thread-local stack. A call that would join a flight on that stack is a call from inside
//! the flight's own work: it could only wait for itself, so it fails with
//! [`Error::Reentrant`](crate::Error::Reentrant) instead.

use core::cell::RefCell;
use std::vec::Vec;

#[cfg(not(loom))]
std::thread_local! {
    static LEADING: RefCell<Vec<(usize, u64)>> = const { RefCell::new(Vec::new()) };
}

// Loom runs its model threads on one OS thread: each needs its own stack.
#[cfg(loom)]
loom::thread_local! {
    static LEADING: RefCell<Vec<(usize, u64)>> = RefCell::new(Vec::new());
}

/// Marks the current thread as running flight `id` of `group` until dropped.
pub(crate) struct Scope {
    entry: (usize, u64),
}

impl Scope {
    #[inline]
    pub(crate) fn enter(group: usize, id: u64) -> Self {
        let entry = (group, id);
        // If the thread-local is already destroyed (thread exit), detection is skipped.
        let _ = LEADING.try_with(|stack| stack.borrow_mut().push(entry));
        Self { entry }
    }
}

impl Drop for Scope {
    #[inline]
    fn drop(&mut self) {
        let _ = LEADING.try_with(|stack| {
            let mut stack = stack.borrow_mut();
            // Scopes nest, so ours is almost always on top: pop it without a search or a
            // (zero-length) shift of the elements above it.
            if stack.last() == Some(&self.entry) {
                stack.pop();
            } else if let Some(at) = stack.iter().rposition(|&entry| entry == self.entry) {
                stack.remove(at);
            }
        });
    }
}

/// Is the current thread running flight `id` of `group`?
pub(crate) fn is_leading(group: usize, id: u64) -> bool {
    LEADING
        .try_with(|stack| stack.borrow().contains(&(group, id)))
        .unwrap_or(false)
}
