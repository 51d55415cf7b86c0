//! Same-thread re-entrancy detection (`std` only).
//!
//! While a thread runs (or polls) the work of a flight, the pair (group, flight id) sits on a
//! thread-local stack. A call that would join a flight on that stack is a call from inside
//! the flight's own work: it could only wait for itself, so it fails with
//! [`Error::Reentrant`](crate::Error::Reentrant) instead.
//!
//! Every leader pays for a push and a pop, so the stack's first [`INLINE`] frames live in
//! plain `Cell`s (a thread-local without a destructor, which costs a load to reach); only
//! work nested deeper than that spills into a `Vec`.

use core::cell::{Cell, RefCell};
use std::vec::Vec;

/// How many nested flights a thread tracks without touching the spill `Vec`.
const INLINE: usize = 8;

type Frame = (usize, u64);

struct Frames {
    depth: Cell<usize>,
    inline: [Cell<Frame>; INLINE],
}

impl Frames {
    const fn new() -> Self {
        Self {
            depth: Cell::new(0),
            inline: [const { Cell::new((0, 0)) }; INLINE],
        }
    }
}

#[cfg(not(loom))]
std::thread_local! {
    static FRAMES: Frames = const { Frames::new() };
    static SPILLED: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

// Loom runs its model threads on one OS thread: each needs its own stack.
#[cfg(loom)]
loom::thread_local! {
    static FRAMES: Frames = Frames::new();
    static SPILLED: RefCell<Vec<Frame>> = RefCell::new(Vec::new());
}

/// Marks the current thread as running flight `id` of `group` until dropped.
///
/// Scopes are strictly nested: each lives in one function body (a poll, or a blocking run)
/// and is dropped, by return or by unwinding, before its caller's scope is.
pub(crate) struct Scope(());

impl Scope {
    #[inline]
    pub(crate) fn enter(group: usize, id: u64) -> Self {
        FRAMES.with(|frames| {
            let depth = frames.depth.get();
            match frames.inline.get(depth) {
                Some(frame) => frame.set((group, id)),
                None => spill((group, id)),
            }
            frames.depth.set(depth + 1);
        });
        Self(())
    }
}

impl Drop for Scope {
    #[inline]
    fn drop(&mut self) {
        FRAMES.with(|frames| {
            let depth = frames.depth.get() - 1;
            frames.depth.set(depth);
            if depth >= INLINE {
                unspill();
            }
        });
    }
}

// If the spill stack is already destroyed (thread exit), a frame is not tracked: detection
// is skipped, while the depth still counts it.
#[cold]
#[inline(never)]
fn spill(frame: Frame) {
    let _ = SPILLED.try_with(|spilled| spilled.borrow_mut().push(frame));
}

#[cold]
#[inline(never)]
fn unspill() {
    let _ = SPILLED.try_with(|spilled| spilled.borrow_mut().pop());
}

/// Is the current thread running flight `id` of `group`?
pub(crate) fn is_leading(group: usize, id: u64) -> bool {
    FRAMES.with(|frames| {
        let depth = frames.depth.get();
        let inline = &frames.inline[..depth.min(INLINE)];
        inline.iter().any(|frame| frame.get() == (group, id))
            || (depth > INLINE
                && SPILLED
                    .try_with(|spilled| spilled.borrow().contains(&(group, id)))
                    .unwrap_or(false))
    })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn frames_nested_past_the_inline_ones_are_still_found() {
        let scopes: Vec<Scope> = (0..INLINE as u64 + 4)
            .map(|id| Scope::enter(1, id))
            .collect();
        assert!((0..INLINE as u64 + 4).all(|id| is_leading(1, id)));
        assert!(!is_leading(2, 0));
        assert!(!is_leading(1, INLINE as u64 + 4));
        drop(scopes.into_iter().rev().collect::<Vec<_>>());
        assert!(!is_leading(1, 0));
        assert!(!is_leading(1, INLINE as u64 + 1));
    }
}
