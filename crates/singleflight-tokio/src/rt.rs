//! tokio's implementations of the core's runtime seam.

use std::future::Future;
use std::time::Duration;

use singleflight_core::rt::{Spawn, SpawnBlocking, Timer};

/// Spawns detached work with [`tokio::spawn`] and blocking work with
/// [`tokio::task::spawn_blocking`], on the runtime of the task that starts it.
///
/// Dropping a tokio `JoinHandle` detaches the task, so the work runs to its end.
///
/// # Panics
///
/// Spawning panics outside a tokio runtime (tokio's own rule).
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct TokioSpawner;

impl TokioSpawner {
    /// The spawner.
    pub fn new() -> Self {
        Self
    }
}

impl Spawn for TokioSpawner {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(tokio::spawn(future));
    }
}

impl SpawnBlocking for TokioSpawner {
    fn spawn_blocking<F>(&self, f: F)
    where
        F: FnOnce() + Send + 'static,
    {
        drop(tokio::task::spawn_blocking(f));
    }
}

/// Times out calls with [`tokio::time::sleep`], so a paused clock (`tokio::time::pause`)
/// applies to them.
///
/// # Panics
///
/// Sleeping panics outside a tokio runtime with the time driver enabled (tokio's own rule).
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct TokioTimer;

impl TokioTimer {
    /// The timer.
    pub fn new() -> Self {
        Self
    }
}

impl Timer for TokioTimer {
    type Sleep = tokio::time::Sleep;

    fn sleep(&self, duration: Duration) -> tokio::time::Sleep {
        tokio::time::sleep(duration)
    }
}
