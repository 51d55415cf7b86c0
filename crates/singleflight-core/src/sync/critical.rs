//! The critical section a `critical-section` build holds while any of its locks is held.
//! The one place in the crate outside the `work` module with `unsafe` code: two calls.
//!
//! `critical_section::with` scopes a critical section to a closure, but the crate's locks
//! hand out guards (a guard is passed between functions, and two guards of different locks
//! may be dropped in either order), so a guard must enter the critical section in `lock()`
//! and leave it in its `Drop`: `critical_section::acquire` and `release`, which are `unsafe`
//! because their contract can't be checked by the compiler:
//!
//! 1. each `acquire` is paired with exactly one `release`, on the same thread;
//! 2. `release` gets the restore state of its own `acquire`;
//! 3. pairs are properly nested: `a = acquire(); b = acquire(); release(a); release(b)` is
//!    undefined behaviour.
//!
//! Guards dropped in any order would break rule 3 if each released its own restore state.
//! So a [`Section`] doesn't: the first section of a context stores its restore state in
//! [`NESTING`] and counts itself; a section entered while the critical section is already
//! held by this context (the count is non-zero: inside the critical section nobody else can
//! have a section) releases its own nested entry at once, which is the innermost pair, and
//! only counts itself; whichever section brings the count back to zero releases the stored
//! state, the outermost pair. Every pair is then nested, whatever the order the guards go
//! in. A section is neither `Send` nor `Sync`, so it is dropped on the thread that entered
//! it (rule 1). A section that is leaked (`mem::forget`) leaves the critical section held:
//! a hang, not undefined behaviour.
//!
//! The data the locks guard never depends on this module for its exclusion: each lock is
//! still a spin lock, which the critical section only keeps from ever being contended.
//!
//! The tests below run on the host with critical-section's `std` implementation (a global
//! reentrant lock): `cargo test -p singleflight-core --no-default-features --features
//! critical-section --lib`. They check nesting, out-of-order release, exclusion of other
//! threads' critical sections while any guard lives, and that a panic in `lock()` leaves
//! nothing entered. Under Miri: `cargo +nightly miri test -p singleflight-core
//! --no-default-features --features critical-section --lib sync::`.

use core::marker::PhantomData;

use critical_section::RestoreState;

/// How many sections the context inside the critical section holds, and the restore state
/// of the first one's `acquire`. Read and written only inside the critical section, so its
/// spin lock is never contended.
struct Nesting {
    depth: usize,
    outer: RestoreState,
}

static NESTING: spin::Mutex<Nesting> = spin::Mutex::new(Nesting {
    depth: 0,
    outer: RestoreState::invalid(),
});

/// One hold on the critical section: entered by [`enter`](Self::enter), left by `Drop`.
/// The critical section stays entered while any `Section` of this context lives.
pub(crate) struct Section {
    /// Neither `Send` nor `Sync`: released on the thread that entered it.
    _not_send: PhantomData<*const ()>,
}

impl Section {
    /// Enters the critical section (or counts one more hold on it, if this context is
    /// already inside).
    #[inline]
    pub(crate) fn enter() -> Self {
        // SAFETY: paired with exactly one `release` on this thread: below, if this context
        // already held the critical section, else in the `Drop` of whichever `Section`
        // brings the depth back to zero (sections are not `Send`). The module docs show
        // why every pair is properly nested.
        let state = unsafe { critical_section::acquire() };
        let mut nesting = NESTING.lock();
        if nesting.depth == 0 {
            nesting.outer = state;
        } else {
            // SAFETY: releases the `acquire` just above, the innermost pair, with its own
            // restore state; the outer pair stays entered and is released by the last
            // section to go.
            unsafe { critical_section::release(state) };
        }
        nesting.depth += 1;
        Self {
            _not_send: PhantomData,
        }
    }
}

impl Drop for Section {
    #[inline]
    fn drop(&mut self) {
        let mut nesting = NESTING.lock();
        nesting.depth -= 1;
        if nesting.depth == 0 {
            let outer = nesting.outer;
            nesting.outer = RestoreState::invalid();
            drop(nesting);
            // SAFETY: this is the last section of this context, so every nested `acquire`
            // since the first was already released (in `enter`): `outer` is the first
            // section's restore state, released once, on its thread, as the outermost pair.
            unsafe { critical_section::release(outer) };
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use core::panic::AssertUnwindSafe;
    use core::sync::atomic::{AtomicUsize, Ordering};
    use std::panic::catch_unwind;
    use std::thread;
    use std::vec::Vec;

    use super::NESTING;
    use crate::sync::Mutex;

    fn depth() -> usize {
        NESTING.lock().depth
    }

    #[test]
    fn guards_dropped_out_of_order_keep_the_section_until_the_last() {
        let a = Mutex::new(1);
        let b = Mutex::new(2);
        let first = a.lock();
        let second = b.lock();
        // Inside the critical section nobody else can change the count.
        assert_eq!(depth(), 2);
        drop(first);
        assert_eq!(depth(), 1, "the first guard out must not leave the section");
        assert_eq!(*second, 2);
        drop(second);
        // Another thread's critical section can run now (a section left entered would
        // hang it); inside it, this thread holds nothing.
        let other = thread::spawn(|| critical_section::with(|_| depth()));
        assert_eq!(other.join().unwrap(), 0);
    }

    #[test]
    fn a_lock_inside_a_callers_critical_section_nests_in_it() {
        let a = Mutex::new(0u8);
        critical_section::with(|_| {
            let mut guard = a.lock();
            *guard += 1;
            assert_eq!(depth(), 1);
            drop(guard);
            assert_eq!(depth(), 0);
        });
        assert_eq!(*a.lock(), 1);
    }

    /// While any guard of a thread lives, no other thread runs a critical section: a
    /// read-yield-write increment of a plain counter, made only while holding a guard (the
    /// second of two, after the first was dropped) or inside `critical_section::with`,
    /// loses no update.
    #[test]
    fn no_other_critical_section_runs_while_any_guard_lives() {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        const THREADS: usize = 4;
        const ROUNDS: usize = if cfg!(miri) { 20 } else { 500 };
        fn bump() {
            let seen = COUNTER.load(Ordering::Relaxed);
            thread::yield_now();
            COUNTER.store(seen + 1, Ordering::Relaxed);
        }
        let a = Mutex::new(());
        let b = Mutex::new(());
        thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|index| {
                    let (a, b) = (&a, &b);
                    scope.spawn(move || {
                        for round in 0..ROUNDS {
                            if (index + round) % 2 == 0 {
                                let first = a.lock();
                                let second = b.lock();
                                drop(first);
                                bump();
                                drop(second);
                            } else {
                                critical_section::with(|_| bump());
                            }
                        }
                    })
                })
                .collect();
            for handle in handles {
                handle.join().unwrap();
            }
        });
        assert_eq!(COUNTER.load(Ordering::Relaxed), THREADS * ROUNDS);
    }

    #[test]
    fn a_lock_taken_again_by_its_holder_panics_and_leaves_nothing_entered() {
        let a = Mutex::new(());
        let held = a.lock();
        let again = catch_unwind(AssertUnwindSafe(|| drop(a.lock())));
        assert!(again.is_err(), "a second lock by the holder must panic");
        assert_eq!(depth(), 1, "the failed lock left its hold on the section");
        drop(held);
        let other = thread::spawn(|| critical_section::with(|_| depth()));
        assert_eq!(other.join().unwrap(), 0);
        drop(a.lock());
    }
}
