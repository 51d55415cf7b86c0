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

#[cfg(loom)]
pub(crate) use loom::sync::Arc;

#[cfg(not(loom))]
pub(crate) use alloc::sync::Arc;

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
