//! The one place that chooses synchronization primitives.
//!
//! Everything else in the crate imports `Arc` and `Mutex` from here, so a loom build
//! (`RUSTFLAGS="--cfg loom"`) swaps every primitive at once.
//!
//! | build                              | `Mutex`                                            |
//! |------------------------------------|----------------------------------------------------|
//! | `cfg(loom)`                        | `loom::sync::Mutex`                                |
//! | `std`                              | `std::sync::Mutex` (futex)                         |
//! | `critical-section`, without `std`  | `spin::Mutex` taken inside a critical section      |
//! | neither                            | `spin::Mutex`                                      |
//!
//! The locks guard O(1) map and queue updates only; no lock is ever held while the work
//! runs or while a caller waits, so the spin lock of a `no_std` build never spins for long.
//!
//! A bare spin lock can't be shared across interrupt priorities: a handler that preempts
//! the holder on its core spins forever, since the holder can't run until the handler
//! returns. With `critical-section`, every guard holds the critical section (on a
//! single-core target: interrupts masked) from `lock()` until the guard is dropped, so no
//! holder is ever preempted by another user of the lock, and the spin lock inside is
//! never contended at all: another core or thread waits on the critical section first. The
//! critical section is the `critical` module's, which keeps it entered while any guard of
//! this context lives, in whatever order guards are dropped. With `std` as well, `std`'s
//! locks stay: blocking waits need their condition variable, and a hosted program has no
//! interrupt handlers to guard against.
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
#[cfg(all(not(loom), not(feature = "std"), not(feature = "critical-section")))]
pub(crate) type MutexGuard<'a, T> = spin::MutexGuard<'a, T>;

#[cfg(all(not(loom), not(feature = "std"), feature = "critical-section"))]
#[allow(
    unsafe_code,
    reason = "critical-section's `acquire` and `release` are `unsafe`: the one way to keep a \
              critical section entered for as long as a lock guard lives"
)]
mod critical;

/// A guard of a [`Mutex`] in a `critical-section` build: the spin lock's guard, and this
/// context's hold on the critical section. Fields drop in order: the spin lock is released
/// while the critical section is still held.
#[cfg(all(not(loom), not(feature = "std"), feature = "critical-section"))]
pub(crate) struct MutexGuard<'a, T> {
    data: spin::MutexGuard<'a, T>,
    _section: critical::Section,
}

#[cfg(all(not(loom), not(feature = "std"), feature = "critical-section"))]
impl<T> core::ops::Deref for MutexGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.data
    }
}

#[cfg(all(not(loom), not(feature = "std"), feature = "critical-section"))]
impl<T> core::ops::DerefMut for MutexGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.data
    }
}

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(Inner::new(value))
    }

    /// Takes the lock.
    ///
    /// # Panics
    ///
    /// In a `critical-section` build, if this context already holds this lock (a lock
    /// taken again from user code that runs under it): inside the critical section nobody
    /// else can hold it, so a wait would never end. `std`'s lock may panic or deadlock
    /// there, and a bare spin lock deadlocks.
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(any(loom, feature = "std"))]
        {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
        #[cfg(all(not(any(loom, feature = "std")), feature = "critical-section"))]
        {
            let section = critical::Section::enter();
            let data = self
                .0
                .try_lock()
                .expect("a lock was taken again by the context that holds it");
            MutexGuard {
                data,
                _section: section,
            }
        }
        #[cfg(all(not(any(loom, feature = "std")), not(feature = "critical-section")))]
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
