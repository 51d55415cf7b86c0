//! A clock and a spawner the tests drive by hand, for the reuse window and its refreshes.
//!
//! One file, included with `#[path]` by the core's suites that need them (`reuse`,
//! `refresh`, `burst`, `model_reuse`), as `watchdog.rs` is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use singleflight_core::rt::{Clock, SpawnBlocking};

/// A clock the test moves by hand ([`advance`](Self::advance)); it starts at zero.
#[derive(Clone, Debug, Default)]
pub struct Manual(Arc<AtomicU64>);

impl Manual {
    /// Moves the clock on by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos =
            u64::try_from(by.as_nanos()).expect("a test moves the clock by less than 584 years");
        self.0.fetch_add(nanos, Ordering::SeqCst);
    }
}

impl Clock for Manual {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

/// What [`Held`] keeps: a spawned closure, not yet run.
pub type Job = Box<dyn FnOnce() + Send>;

/// A spawner that keeps what it is asked to spawn (a refresh), for the test to run or drop
/// when it chooses.
#[derive(Clone, Default)]
pub struct Held(Arc<Mutex<Vec<Job>>>);

impl Held {
    /// How many jobs are held.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The one job held.
    ///
    /// # Panics
    ///
    /// Unless exactly one is held.
    pub fn take(&self) -> Job {
        let mut jobs = self.0.lock().unwrap();
        assert_eq!(jobs.len(), 1, "one refresh held");
        jobs.pop().unwrap()
    }

    /// Every job held, in the order they were spawned.
    pub fn drain(&self) -> Vec<Job> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Held").field(&self.len()).finish()
    }
}

impl SpawnBlocking for Held {
    fn spawn_blocking<F>(&self, f: F)
    where
        F: FnOnce() + Send + 'static,
    {
        self.0.lock().unwrap().push(Box::new(f));
    }
}
