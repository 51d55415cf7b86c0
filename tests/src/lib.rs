//! Shared fixtures for the behavioural tests: gates that order threads and tasks without
//! sleeping, polling helpers that wait for observable state (waiter counts) instead of
//! guessing durations, and the [`watchdog!`] every test arms, so that a hang fails the run
//! with the test's name instead of waiting for CI's outer timeout.

pub mod embassy;
pub mod hostile;
pub mod setups;
mod watchdog;

pub use singleflight_conformance::{Gate, panic_message};
pub use watchdog::{TEST_LIMIT, Watchdog};

use std::time::{Duration, Instant};

/// How long a test may wait for a condition before failing instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Spins (yielding the thread) until `condition` holds, panicking with `what` after
/// [`PATIENCE`]. This observes state; it does not order anything by time.
#[track_caller]
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting until {what}");
        std::thread::yield_now();
    }
}

/// Silences panics whose message starts with `expected:` (tests that panic on purpose),
/// leaving every other panic to the default hook. Installed once per test binary.
pub fn quiet_expected_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !panic_message(info.payload()).starts_with("expected:") {
                default(info);
            }
        }));
    });
}

/// A statistics snapshot's counters, in the order
/// `[hits, misses, errors, panics, leader_drops, takeovers, timeouts, active]`.
pub fn counts(s: &singleflight_stats::Snapshot) -> [u64; 8] {
    [
        s.hits,
        s.misses,
        s.errors,
        s.panics,
        s.leader_drops,
        s.takeovers,
        s.timeouts,
        s.active,
    ]
}

/// Asserts the counters of `stats` (see [`counts`] for the order).
#[track_caller]
pub fn assert_counts(stats: &singleflight_stats::Stats, expected: [u64; 8]) {
    let snapshot = stats.snapshot();
    assert_eq!(
        counts(&snapshot),
        expected,
        "[hits, misses, errors, panics, leader_drops, takeovers, timeouts, active] of {snapshot:?}"
    );
}
