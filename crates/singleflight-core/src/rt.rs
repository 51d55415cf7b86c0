//! The runtime seam: the two things a front-end needs from an executor — spawn a detached
//! task, sleep for a while — as traits, and the runtime-free pieces built on them, so that
//! each runtime's front-end is a few lines of trait impls around [`RuntimeGroup`].
//!
//! * [`Spawn`], [`SpawnBlocking`], [`Timer`], [`Clock`]: implemented by the front-ends'
//!   small `<Runtime><Role>` types (`TokioSpawner`, `SmolTimer`, …).
//! * [`Timeout`]: a per-call timeout over any [`CallFuture`](crate::CallFuture) and a sleep.
//! * [`Detached`]: a call whose work is handed to a spawned task (or a blocking thread), so it
//!   runs exactly once and finishes even if every caller goes away.
//! * [`RuntimeGroup`]: a group bound to a spawner and a timer, with the whole front-end
//!   surface; each runtime crate wraps it in its own `Group`, whose methods forward to it.
//! * [`Request`]: a call being set up (where its work runs, its timeout, its role), the one
//!   way to reach every kind of call; the groups' named methods are shorthands for it.
//!
//! Nothing here needs `std`, except that catching a panic of detached work needs it: without
//! `std` a panic unwinds through (or aborts) the task, and its callers see
//! [`Error::Panicked`](crate::Error::Panicked) when the runtime drops the task.

use core::future::Future;
use core::time::Duration;

mod detached;
mod front_end;
mod group;
pub mod request;
mod timeout;

pub use detached::{Detached, Launch, SpawnBlockingWork, SpawnWork, TryDetached};
pub use group::RuntimeGroup;
pub use request::Request;
pub use timeout::Timeout;

/// Runs a future in the background, detached from whoever spawned it (hyper's `Executor`).
///
/// The future must run to completion even if nobody waits for it: a runtime whose task
/// handles cancel on drop must detach them (smol's `Task::detach`). If the runtime drops the
/// future unfinished (when it shuts down), callers of its flight get
/// [`Error::Panicked`](crate::Error::Panicked).
pub trait Spawn {
    /// Spawns `future` as a detached task.
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static;
}

/// Runs a blocking closure on a thread where blocking is allowed (tokio's `spawn_blocking`).
pub trait SpawnBlocking {
    /// Runs `f` on a blocking thread, detached from whoever called this.
    fn spawn_blocking<F>(&self, f: F)
    where
        F: FnOnce() + Send + 'static;
}

/// The runtime's timer (hyper's `Timer`, reduced to the one thing timeouts need).
pub trait Timer {
    /// The future that completes after the duration; its output is ignored.
    type Sleep: Future;

    /// Returns a future that completes once `duration` has passed on the runtime's clock.
    fn sleep(&self, duration: Duration) -> Self::Sleep;
}

/// The runtime's clock, for the reuse window (a group's `reuse_for`): the core keeps no
/// clock of its own, so that it stays `no_std` and follows the runtime's notion of time
/// (tokio's paused clock in tests, embassy-time on a target).
///
/// The front-ends implement it on their timers (`TokioTimer` reads tokio's clock,
/// `EmbassyTimer` embassy-time's).
pub trait Clock {
    /// The time elapsed since a fixed origin of this clock's choosing (a process-wide
    /// instant, the time driver's start). It never decreases.
    fn now(&self) -> Duration;
}
