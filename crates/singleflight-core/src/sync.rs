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
//! The lock order, what each lock guards and where user code may run are stated once, in
//! the `flight` module's implementation notes (`src/flight/mod.rs`, "Locks and user code").

#[cfg(loom)]
pub(crate) use loom::sync::Arc;

#[cfg(not(loom))]
pub(crate) use alloc::sync::Arc;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
