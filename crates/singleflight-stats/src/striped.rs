//! The counters every call touches, striped by thread, so that counting a call is a plain
//! load and store to memory no other thread writes rather than a locked read-modify-write.
//!
//! # Implementation
//!
//! Each thread that counts takes a *slot* on its first count: a small number, unique among
//! the threads alive, the lowest free one, given back when the thread exits. A [`Striped`]
//! has one stripe per slot, up to a count fixed when it is made (twice the available
//! parallelism, from 4 to 64), each stripe on a cache line of its own; a thread whose slot
//! is past them, a thread whose slot is already given back (it is exiting), and builds
//! without `std` count into a shared stripe with `fetch_add` instead.
//!
//! A stripe is written by its slot's thread only, so a load and a store lose no update.
//! A slot passes from an exiting thread to a new one through the slots' lock, which orders
//! the old thread's last store before the new thread's first load. Readers sum the
//! stripes: each total is exact once the counting threads are done, and a sum taken while
//! they count is made of values each of them did hold.

use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering;
#[cfg(feature = "std")]
use core::sync::atomic::Ordering::Relaxed;

#[cfg(feature = "std")]
use alloc::boxed::Box;

/// A counter kept striped.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Hot {
    /// Calls that joined a flight.
    Hits,
    /// Executions started.
    Misses,
    /// Flights finished.
    Finished,
    /// Calls served from the reuse window.
    Reused,
}

const HOT: usize = 4;

/// One thread's counters, on a cache line of their own.
#[derive(Default)]
#[repr(align(64))]
struct Stripe([AtomicU64; HOT]);

impl Stripe {
    fn get(&self, counter: Hot) -> &AtomicU64 {
        &self.0[counter as usize]
    }
}

/// The striped counters.
pub(crate) struct Striped {
    /// One stripe per thread slot, up to [`stripes`].
    #[cfg(feature = "std")]
    own: Box<[Stripe]>,
    /// For the threads without a stripe of their own.
    shared: Stripe,
}

impl Default for Striped {
    fn default() -> Self {
        Self::new()
    }
}

impl Striped {
    pub(crate) fn new() -> Self {
        Self {
            #[cfg(feature = "std")]
            own: (0..slot::stripes()).map(|_| Stripe::default()).collect(),
            shared: Stripe::default(),
        }
    }

    /// Adds one to `counter`, with `ordering` (`Relaxed` or `Release`).
    #[inline]
    pub(crate) fn add(&self, counter: Hot, ordering: Ordering) {
        #[cfg(feature = "std")]
        {
            if let Some(stripe) = self.own.get(slot::held().wrapping_sub(1)) {
                // Only this thread writes this stripe (see the module docs).
                let count = stripe.get(counter);
                count.store(count.load(Relaxed).wrapping_add(1), ordering);
                return;
            }
            self.add_slowly(counter, ordering);
        }
        #[cfg(not(feature = "std"))]
        self.shared.get(counter).fetch_add(1, ordering);
    }

    /// [`add`](Self::add) for a thread without a stripe, or without a slot yet (then
    /// this takes one), kept out of line so that the common case stays a leaf.
    #[cfg(feature = "std")]
    #[cold]
    #[inline(never)]
    fn add_slowly(&self, counter: Hot, ordering: Ordering) {
        if let Some(stripe) = self.own.get(slot::current().wrapping_sub(1)) {
            let count = stripe.get(counter);
            count.store(count.load(Relaxed).wrapping_add(1), ordering);
            return;
        }
        self.shared.get(counter).fetch_add(1, ordering);
    }

    /// The total of `counter`, read with `ordering` (`Relaxed` or `Acquire`).
    pub(crate) fn sum(&self, counter: Hot, ordering: Ordering) -> u64 {
        let total = self.shared.get(counter).load(ordering);
        #[cfg(feature = "std")]
        let total = self.own.iter().fold(total, |total, stripe| {
            total.wrapping_add(stripe.get(counter).load(ordering))
        });
        total
    }
}

/// Thread slots.
#[cfg(feature = "std")]
mod slot {
    use core::cell::Cell;
    use std::collections::BTreeSet;
    use std::sync::{Mutex, OnceLock, PoisonError};

    /// The slots taken so far (`0..next`), and those given back.
    struct Slots {
        next: usize,
        free: BTreeSet<usize>,
    }

    static SLOTS: Mutex<Slots> = Mutex::new(Slots {
        next: 0,
        free: BTreeSet::new(),
    });

    std::thread_local! {
        /// This thread's slot plus one: `0` until the thread first counts, `usize::MAX`
        /// once it has given its slot back (it is exiting). Constant-initialised and
        /// without a destructor, so reading it is one load, at any time.
        static SLOT: Cell<usize> = const { Cell::new(0) };
        /// Gives the thread's slot back when the thread exits (it keeps its own copy, for
        /// platforms where `SLOT` may be gone by then).
        static HELD: Held = const { Held(Cell::new(0)) };
    }

    /// A thread's slot plus one (`0`: none), given back when the thread exits.
    struct Held(Cell<usize>);

    impl Drop for Held {
        fn drop(&mut self) {
            let _ = SLOT.try_with(|slot| slot.set(usize::MAX));
            let slot = self.0.replace(0);
            if slot != 0 {
                give_back(slot - 1);
            }
        }
    }

    fn give_back(slot: usize) {
        // Nothing panics under this lock; a poisoned set is still whole.
        let mut slots = SLOTS.lock().unwrap_or_else(PoisonError::into_inner);
        slots.free.insert(slot);
    }

    /// This thread's slot plus one, `0` if it has none yet, `usize::MAX` while the thread
    /// exits. (Plus one, so that the slot is `held().wrapping_sub(1)` and both a thread
    /// without a slot and an exiting one are past any stripe.)
    #[inline]
    pub(super) fn held() -> usize {
        SLOT.try_with(Cell::get).unwrap_or(usize::MAX)
    }

    /// [`held`], taking a slot if the thread has none yet.
    pub(super) fn current() -> usize {
        match held() {
            0 => take(),
            slot => slot,
        }
    }

    #[cold]
    #[inline(never)]
    fn take() -> usize {
        let mut slots = SLOTS.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = match slots.free.pop_first() {
            Some(slot) => slot,
            None => {
                slots.next += 1;
                slots.next - 1
            }
        };
        drop(slots);
        // The guard first: a thread whose guard is gone is exiting and keeps no slot.
        if HELD.try_with(|held| held.0.set(slot + 1)).is_err() {
            give_back(slot);
            let _ = SLOT.try_with(|held| held.set(usize::MAX));
            return usize::MAX;
        }
        if SLOT.try_with(|held| held.set(slot + 1)).is_err() {
            // The guard gives the slot back at exit.
            return usize::MAX;
        }
        slot + 1
    }

    /// How many slots were ever taken at once, at most (for tests).
    #[cfg(test)]
    pub(super) fn taken() -> usize {
        SLOTS.lock().unwrap_or_else(PoisonError::into_inner).next
    }

    /// How many stripes a `Striped` has: twice the available parallelism, from 4 to 64
    /// (asked once: it reads the process's CPU affinity and quota).
    pub(super) fn stripes() -> usize {
        static STRIPES: OnceLock<usize> = OnceLock::new();
        *STRIPES.get_or_init(|| {
            std::thread::available_parallelism()
                .map_or(4, |n| n.get().saturating_mul(2))
                .clamp(4, 64)
        })
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use core::sync::atomic::Ordering::{Acquire, Release};
    use std::sync::Barrier;
    use std::thread;

    #[test]
    fn counts_from_more_threads_than_stripes_add_up() {
        let striped = Striped::new();
        let threads = slot::stripes() * 2 + 3;
        let barrier = Barrier::new(threads);
        thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    // Every thread takes its slot before any exits and gives its slot
                    // back: some have no stripe of their own.
                    assert_ne!(slot::current(), usize::MAX);
                    barrier.wait();
                    for _ in 0..1_000 {
                        striped.add(Hot::Hits, Relaxed);
                    }
                    striped.add(Hot::Finished, Release);
                });
            }
        });
        assert_eq!(striped.sum(Hot::Hits, Relaxed), threads as u64 * 1_000);
        assert_eq!(striped.sum(Hot::Finished, Acquire), threads as u64);
        assert_eq!(striped.sum(Hot::Misses, Relaxed), 0);
        assert!(
            striped.shared.get(Hot::Hits).load(Relaxed) > 0,
            "the threads past the stripes share one"
        );
    }

    #[test]
    fn threads_give_their_slots_back() {
        let before = slot::taken();
        for _ in 0..200 {
            // One after another (a native join: the thread's destructors have run).
            thread::spawn(|| assert_ne!(slot::current(), usize::MAX))
                .join()
                .unwrap();
        }
        // Each took the lowest free slot; only the threads of tests running alongside
        // could have made it take a new one.
        assert!(
            slot::taken() - before < 100,
            "{before} -> {}",
            slot::taken()
        );
    }

    #[test]
    fn a_slot_given_back_keeps_its_counts() {
        let striped = Striped::new();
        for _ in 0..50 {
            // One thread after another: each takes the slot the last one gave back.
            thread::scope(|s| {
                s.spawn(|| striped.add(Hot::Misses, Relaxed));
            });
        }
        assert_eq!(striped.sum(Hot::Misses, Relaxed), 50);
    }
}
