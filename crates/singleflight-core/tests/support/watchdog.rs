//! A watchdog for every test: a test that hangs fails the run within a bounded time, naming
//! itself, instead of waiting for CI's outer timeout.
//!
//! A hung thread cannot be interrupted, so on expiry the watchdog ends the whole test
//! process (exit code 101, the code of a failed test run) after printing the test's name
//! straight to stderr, past the test harness's output capture.
//!
//! One file, included with `#[path]` by every suite that arms it: the core's integration
//! tests (`crates/singleflight-core/tests/`) and the workspace's behavioural tests
//! (`tests/src/lib.rs`). Once [`Watchdog::new`] returns, the watchdog allocates nothing
//! until it fires or is dropped, so the tests that count the heap (`burst`, `lone_leader`)
//! can arm it before they take their baseline.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long a test may run before its [`Watchdog`] fails the run (the conformance kit's
/// limit, `singleflight_conformance::WATCHDOG`, is the same).
pub const TEST_LIMIT: Duration = Duration::from_secs(120);

/// Guards one test: if it is still alive after its limit, the process exits with code 101
/// after printing ``watchdog: `NAME` hung for LIMIT`` to stderr. Dropping it (the test
/// returned or panicked) disarms it.
///
/// Made by [`watchdog!`](crate::watchdog!), which names it after the enclosing function.
#[derive(Debug)]
#[must_use = "the watchdog is disarmed as soon as it is dropped"]
pub struct Watchdog {
    disarmed: Arc<AtomicBool>,
    thread: Thread,
}

impl Watchdog {
    /// Arms a watchdog for the test `name`, to fire after `limit`. Returns once the
    /// watchdog's thread is running, so that nothing it does later allocates.
    ///
    /// # Panics
    ///
    /// If the watchdog's thread cannot be spawned.
    pub fn new(name: &str, limit: Duration) -> Self {
        let disarmed = Arc::new(AtomicBool::new(false));
        let started = Arc::new(Barrier::new(2));
        let name = name.to_owned();
        let thread = thread::Builder::new()
            .name(format!("watchdog of {name}"))
            .spawn({
                let disarmed = Arc::clone(&disarmed);
                let started = Arc::clone(&started);
                move || {
                    started.wait();
                    let deadline = Instant::now() + limit;
                    while !disarmed.load(Ordering::Acquire) {
                        let now = Instant::now();
                        if now >= deadline {
                            // Not `eprintln!`: this thread inherits the test's output
                            // capture, whose buffer would never be printed.
                            let _ = writeln!(
                                std::io::stderr(),
                                "watchdog: `{name}` hung for {limit:?}; failing the test run"
                            );
                            std::process::exit(101);
                        }
                        thread::park_timeout(deadline - now);
                    }
                }
            })
            .expect("spawn a watchdog thread")
            .thread()
            .clone();
        started.wait();
        Self { disarmed, thread }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.disarmed.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// The path of the function this expands in (`golang::test_do`), for naming a test.
#[doc(hidden)]
#[macro_export]
macro_rules! __function_name {
    () => {{
        fn here() {}
        let name = ::std::any::type_name_of_val(&here);
        name.strip_suffix("::here").unwrap_or(name)
    }};
}

/// Arms a [`Watchdog`] named after the enclosing test function, for [`TEST_LIMIT`] or the
/// given limit. Keep it alive for the whole test:
///
/// ```
/// # use std::time::Duration;
/// let _watchdog = singleflight_tests::watchdog!();
/// let _slow = singleflight_tests::watchdog!(Duration::from_secs(600));
/// ```
#[macro_export]
macro_rules! watchdog {
    () => {
        $crate::watchdog!($crate::TEST_LIMIT)
    };
    ($limit:expr) => {
        $crate::Watchdog::new($crate::__function_name!(), $limit)
    };
}
