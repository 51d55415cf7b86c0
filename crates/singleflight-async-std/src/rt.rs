//! async-std's implementations of the core's runtime seam.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use std::sync::OnceLock;
use std::time::Instant;

use singleflight_core::rt::{Clock, Spawn, SpawnBlocking, Timer};

/// Spawns detached work with [`async_std::task::spawn`] and blocking work with
/// [`async_std::task::spawn_blocking`]; dropping their handles detaches them.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct AsyncStdSpawner;

impl AsyncStdSpawner {
    /// The spawner.
    pub fn new() -> Self {
        Self
    }
}

impl Spawn for AsyncStdSpawner {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(async_std::task::spawn(future));
    }
}

impl SpawnBlocking for AsyncStdSpawner {
    fn spawn_blocking<F>(&self, f: F)
    where
        F: FnOnce() + Send + 'static,
    {
        drop(async_std::task::spawn_blocking(f));
    }
}

/// Times out calls with [`async_std::task::sleep`].
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct AsyncStdTimer;

impl AsyncStdTimer {
    /// The timer.
    pub fn new() -> Self {
        Self
    }
}

/// async-std's sleep future has no name, so it is boxed (one allocation per timed call).
type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Timer for AsyncStdTimer {
    type Sleep = Sleep;

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(async_std::task::sleep(duration))
    }
}

/// Tells the time of reuse windows on the monotonic clock (`std::time::Instant`), from an
/// origin taken at the first reading in the process.
impl Clock for AsyncStdTimer {
    fn now(&self) -> Duration {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let epoch = *EPOCH.get_or_init(Instant::now);
        Instant::now().saturating_duration_since(epoch)
    }
}
