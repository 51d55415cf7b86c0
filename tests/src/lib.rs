//! Shared fixtures for the behavioural tests: gates that order threads and tasks without
//! sleeping, polling helpers that wait for observable state (waiter counts) instead of
//! guessing durations, and the [`watchdog!`] every test arms, so that a hang fails the run
//! with the test's name instead of waiting for CI's outer timeout.

pub mod embassy;
pub mod hostile;
pub mod setups;
// The one watchdog, shared with the core's own integration tests.
#[path = "../../crates/singleflight-core/tests/support/watchdog.rs"]
mod watchdog;

pub use singleflight_conformance::{Gate, PATIENCE, panic_message};
pub use watchdog::{TEST_LIMIT, Watchdog};

use std::time::Instant;

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
