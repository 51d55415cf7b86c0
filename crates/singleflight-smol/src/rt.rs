//! smol's implementations of the core's runtime seam.

use std::future::Future;
use std::time::Duration;

use std::sync::OnceLock;
use std::time::Instant;

use singleflight_core::rt::{Clock, Spawn, SpawnBlocking, Timer};

/// Spawns detached work on smol's global executor ([`smol::spawn`]) and blocking work on its
/// blocking pool ([`smol::unblock`]).
///
/// Both tasks are `detach()`ed: dropping a smol `Task` would cancel the work.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct SmolSpawner;

impl SmolSpawner {
    /// The spawner.
    pub fn new() -> Self {
        Self
    }
}

impl Spawn for SmolSpawner {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        smol::spawn(future).detach();
    }
}

impl SpawnBlocking for SmolSpawner {
    fn spawn_blocking<F>(&self, f: F)
    where
        F: FnOnce() + Send + 'static,
    {
        smol::unblock(f).detach();
    }
}

/// Times out calls with [`smol::Timer`].
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct SmolTimer;

impl SmolTimer {
    /// The timer.
    pub fn new() -> Self {
        Self
    }
}

impl Timer for SmolTimer {
    type Sleep = smol::Timer;

    fn sleep(&self, duration: Duration) -> smol::Timer {
        smol::Timer::after(duration)
    }
}

/// Tells the time of reuse windows on the monotonic clock (`std::time::Instant`), from an
/// origin taken at the first reading in the process.
impl Clock for SmolTimer {
    fn now(&self) -> Duration {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let epoch = *EPOCH.get_or_init(Instant::now);
        Instant::now().saturating_duration_since(epoch)
    }
}
