//! The one place that chooses synchronization primitives.
//!
//! Everything else in the crate imports `Arc` and `Mutex` from here, so a loom build
//! (`RUSTFLAGS="--cfg loom"`) swaps every primitive at once.
//!
//! | build            | `Mutex`                      |
//! |------------------|------------------------------|
//! | `cfg(loom)`      | `loom::sync::Mutex`          |
//! | `std`            | `std::sync::Mutex` (futex)   |
//! | neither          | `spin::Mutex`                |
//!
//! The locks guard O(1) map and queue updates only; no lock is ever held while the work
//! runs or while a caller waits, so the spin lock of a `no_std` build never spins for long.
//!
//! # Lock order and user code
//!
//! There are three kinds of lock, always taken in this order and never the reverse:
//!
//! 1. a **shard lock** (`group.rs`, `table.rs`): one shard's table of flights;
//! 2. a **flight's state lock** (`flight.rs`): its queue of waiters, counts and promotion;
//! 3. a **flight's outcome lock** (`flight.rs`): its published outcome and reader count,
//!    and the blocked threads asleep on the flight's condition variable.
//!
//! No user code runs under a shard lock or a state lock but the key's `Eq`, during a
//! probe, which changes nothing: a panic there leaves every table as it was. Keys are
//! hashed before locking, cloned (`ToOwned`) with no lock held and dropped after the
//! guard; wakers are cloned before locking and woken or dropped after; observers are called
//! with no lock held. The value's `Clone` runs under the outcome lock, held alone, which
//! guards nothing user code sees but the outcome (see `flight.rs` for why). The outcome lock
//! is taken under a state lock only to publish or to count a promotion, and clones run only
//! after publication, when no promotion can come: so no shard or state lock ever waits for a
//! clone. Every guard is
//! dropped explicitly before the code that follows it could call out.

#[cfg(loom)]
pub(crate) use loom::sync::Arc;

#[cfg(not(loom))]
pub(crate) use alloc::sync::Arc;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicUsize, Ordering};

/// A mutual-exclusion lock with the same API on every backend. Poisoning is ignored: every
/// critical section in this crate leaves the state consistent before anything can panic.
pub(crate) struct Mutex<T>(Inner<T>);

#[cfg(loom)]
type Inner<T> = loom::sync::Mutex<T>;
#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

#[cfg(all(not(loom), feature = "std"))]
type Inner<T> = std::sync::Mutex<T>;
#[cfg(all(not(loom), feature = "std"))]
pub(crate) type MutexGuard<'a, T> = std::sync::MutexGuard<'a, T>;

#[cfg(all(not(loom), not(feature = "std")))]
type Inner<T> = spin::Mutex<T>;
#[cfg(all(not(loom), not(feature = "std")))]
pub(crate) type MutexGuard<'a, T> = spin::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(Inner::new(value))
    }

    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(any(loom, feature = "std"))]
        {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
        #[cfg(not(any(loom, feature = "std")))]
        {
            self.0.lock()
        }
    }
}

/// A condition variable over [`Mutex`], poisoning ignored as the lock's is.
#[cfg(feature = "std")]
pub(crate) struct Condvar(CondvarInner);

#[cfg(all(loom, feature = "std"))]
type CondvarInner = loom::sync::Condvar;
#[cfg(all(not(loom), feature = "std"))]
type CondvarInner = std::sync::Condvar;

#[cfg(feature = "std")]
impl Condvar {
    pub(crate) fn new() -> Self {
        Self(CondvarInner::new())
    }

    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0
            .wait(guard)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(not(loom))]
    pub(crate) fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: core::time::Duration,
    ) -> MutexGuard<'a, T> {
        match self.0.wait_timeout(guard, timeout) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }

    /// loom models no time: a model that waits with a deadline would never end.
    ///
    /// # Panics
    ///
    /// Always: no loom model may block with a deadline (`Waiter::wait_deadline`).
    #[cfg(loom)]
    pub(crate) fn wait_timeout<'a, T>(
        &self,
        _: MutexGuard<'a, T>,
        _: core::time::Duration,
    ) -> MutexGuard<'a, T> {
        panic!("a loom model blocked with a deadline, and loom models no time")
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
}
