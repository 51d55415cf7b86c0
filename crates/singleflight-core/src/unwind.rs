//! The one place that catches and resumes panics, as `sync.rs` is the one place that picks
//! locks: every `catch_unwind` in the crate goes through [`catch`], and the `cfg(std)` forks
//! live here.
//!
//! | build   | [`catch`]                 | [`Payload`]            | [`unwinding`]              |
//! |---------|---------------------------|------------------------|----------------------------|
//! | `std`   | `std::panic::catch_unwind`| `Box<dyn Any + Send>`  | `std::thread::panicking()` |
//! | no_std  | runs the closure          | `Infallible`: nothing is ever caught | `false`      |
//!
//! Why the crate catches panics at all: user code (the work, a value's `Clone`, an observer
//! hook) may panic while a flight still owes its waiters an outcome, or under a lock. The
//! panic is caught, the flight is brought to a consistent state (waiters woken, locks
//! released), and only then is the panic resumed on the call whose code panicked. Catching
//! first also means waiters are woken from a thread that is not unwinding, where a waker
//! that panicked too would abort the process.

use crate::error::PanicMessage;

/// A panic caught from user code, to be resumed once the group is consistent. Without
/// `std` nothing can be caught: the type has no values.
#[cfg(feature = "std")]
pub(crate) type Payload = std::boxed::Box<dyn core::any::Any + Send>;
/// A panic caught from user code, to be resumed once the group is consistent. Without
/// `std` nothing can be caught: the type has no values.
#[cfg(not(feature = "std"))]
pub(crate) type Payload = core::convert::Infallible;

/// Whether [`catch`] catches: with `std` only. Without it a panic of user code unwinds (or
/// aborts) through whatever the caller holds, so guards must sit where unwinding drops them
/// in the right order.
pub(crate) const CATCHES: bool = cfg!(feature = "std");

/// Runs `f`, handing back its panic (with `std`) instead of unwinding. The caller must leave
/// what `f` touched consistent whether or not it panicked: the closure is asserted to be
/// unwind-safe because every caller resumes or reports the panic after cleaning up.
#[inline]
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Payload> {
    #[cfg(feature = "std")]
    {
        std::panic::catch_unwind(core::panic::AssertUnwindSafe(f))
    }
    #[cfg(not(feature = "std"))]
    {
        Ok(f())
    }
}

/// Resumes a panic [`catch`] handed back.
#[inline]
pub(crate) fn resume(payload: Payload) -> ! {
    #[cfg(feature = "std")]
    {
        std::panic::resume_unwind(payload)
    }
    #[cfg(not(feature = "std"))]
    {
        match payload {}
    }
}

/// The message waiters receive for a caught panic.
pub(crate) fn message(payload: &Payload) -> PanicMessage {
    #[cfg(feature = "std")]
    {
        PanicMessage::from_payload(&**payload)
    }
    #[cfg(not(feature = "std"))]
    {
        match *payload {}
    }
}

/// Whether this thread is already unwinding (always `false` without `std`, where nothing
/// can tell): a second panic now would abort the process.
#[inline]
pub(crate) fn unwinding() -> bool {
    #[cfg(feature = "std")]
    {
        std::thread::panicking()
    }
    #[cfg(not(feature = "std"))]
    {
        false
    }
}

/// Runs `f` from a `Drop` (or a guard that may run while unwinding): if this thread is
/// already unwinding, a panic of `f` is caught and discarded, since a second panic would
/// abort; otherwise it goes on as usual.
#[inline]
pub(crate) fn in_drop(f: impl FnOnce()) {
    if unwinding() {
        let _ = catch(f);
    } else {
        f();
    }
}
