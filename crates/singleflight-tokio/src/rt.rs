//! tokio's implementations of the core's runtime seam.

use std::future::Future;
use std::time::Duration;

use std::sync::OnceLock;

use singleflight_core::rt::{Clock, Spawn, SpawnBlocking, Timer};

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

/// Times out calls with [`tokio::time::sleep`], and tells the time of reuse windows with
/// [`tokio::time::Instant`], so a paused clock (`tokio::time::pause`) applies to both.
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

impl Clock for TokioTimer {
    fn now(&self) -> Duration {
        tokio::time::Instant::now()
            .into_std()
            .saturating_duration_since(epoch())
    }
}

/// The origin of [`TokioTimer`]'s clock: an instant well before the first reading. A paused
/// runtime's clock starts at the real time the runtime was built, which may come before the
/// first reading; an origin taken at that reading would make its early instants read as
/// zero.
fn epoch() -> std::time::Instant {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| {
        let now = std::time::Instant::now();
        [86_400 * 365, 86_400, 3_600, 60]
            .into_iter()
            .find_map(|secs| now.checked_sub(Duration::from_secs(secs)))
            .unwrap_or(now)
    })
}
