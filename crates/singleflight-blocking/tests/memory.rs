//! Resident memory stays flat: ten million calls with churn (fresh keys, shared flights,
//! timeouts, leader cancellations and takeovers) on the blocking front-end and on the core's
//! async future leave the process no bigger than it was after the first tenth.
//!
//! Its own binary, with one test, so nothing else allocates in the process meanwhile.
//! `MEMORY_CALLS` sets the calls per front-end: ten million in release builds (CI runs
//! `cargo test --release -p singleflight-blocking --test memory -- --nocapture`), a hundred
//! thousand in debug builds.

use std::io::Write as _;
use std::pin::pin;
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Resident set size of this process, in KiB (Linux), or `None` where it can't be read.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn calls() -> u64 {
    let default = if cfg!(debug_assertions) {
        100_000
    } else {
        10_000_000
    };
    std::env::var("MEMORY_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Growth allowed after the warm-up: allocator noise, not a per-call leak (a leak of even
/// 8 bytes per call would be 72 MiB over nine million calls).
const SLACK_KIB: u64 = 4 * 1024;

struct Samples {
    name: &'static str,
    warm: Option<u64>,
    peak: u64,
}

impl Samples {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            warm: None,
            peak: 0,
        }
    }

    fn sample(&mut self, done: u64, total: u64) {
        let Some(rss) = rss_kib() else { return };
        if done >= total / 10 && self.warm.is_none() {
            self.warm = Some(rss);
        }
        self.peak = self.peak.max(rss);
    }

    fn check(&self, total: u64) {
        let (Some(warm), Some(end)) = (self.warm, rss_kib()) else {
            eprintln!(
                "memory {}: resident size unavailable on this platform",
                self.name
            );
            return;
        };
        let peak = self.peak.max(end);
        eprintln!(
            "memory {}: {total} calls; RSS after 10%: {warm} KiB, peak: {peak} KiB, end: {end} KiB",
            self.name
        );
        assert!(
            peak <= warm + SLACK_KIB,
            "{}: RSS grew from {warm} KiB to {peak} KiB",
            self.name
        );
    }
}

#[test]
fn ten_million_calls_keep_resident_memory_flat() {
    let _watchdog = Watchdog::arm("ten_million_calls_keep_resident_memory_flat", LIMIT);
    let total = calls();

    // Blocking: fresh keys; every 64th call leads a flight that another thread joins with a
    // timeout that has already passed.
    let group = singleflight_blocking::Group::<u64, u64>::new();
    let mut samples = Samples::new("blocking");
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<u64>(0);
        let joiner = s.spawn(|| {
            for key in rx {
                let _ = group.call_timeout(&key, Duration::ZERO, || 0);
            }
        });
        for key in 0..total {
            if key % 64 == 0 {
                let value = group.call(&key, || {
                    tx.send(key).unwrap();
                    key
                });
                assert_eq!(value, Ok(key));
            } else {
                assert_eq!(group.call(&key, || key), Ok(key));
            }
            if key % (total / 100).max(1) == 0 {
                samples.sample(key, total);
            }
        }
        drop(tx);
        joiner.join().unwrap();
    });
    assert_eq!(group.in_flight(), 0);
    samples.check(total);

    // Async: the core's future on a plain poll loop; every 16th call is a leader cancelled
    // while a waiter waits, which then takes over.
    let group = singleflight_core::Group::<u64, u64>::new();
    let mut cx = Context::from_waker(Waker::noop());
    let mut samples = Samples::new("async");
    for key in 0..total {
        if key % 16 == 0 {
            let mut leader = Box::pin(group.call(&key, std::future::pending::<u64>));
            assert!(leader.as_mut().poll(&mut cx).is_pending());
            let mut waiter = pin!(group.call(&key, || async move { key }));
            assert!(waiter.as_mut().poll(&mut cx).is_pending());
            drop(leader);
            assert_eq!(waiter.as_mut().poll(&mut cx), Poll::Ready(Ok(key)));
        } else {
            let mut call = pin!(group.call(&key, || async move { key }));
            assert_eq!(call.as_mut().poll(&mut cx), Poll::Ready(Ok(key)));
        }
        if key % (total / 100).max(1) == 0 {
            samples.sample(key, total);
        }
    }
    assert_eq!(group.in_flight(), 0);
    samples.check(total);
}

/// How long the test may run before its watchdog fails it, as for every other suite (ten
/// million calls in release take a few seconds; a debug build runs a hundred thousand).
const LIMIT: Duration = Duration::from_secs(120);

/// Fails the test run, naming the test, if it is still running after its limit, instead of
/// leaving a hang to CI's outer timeout. A hung thread cannot be interrupted, so the
/// watchdog ends the process (exit code 101) after printing straight to stderr, past the
/// test harness's output capture. Dropping it disarms it.
struct Watchdog(#[allow(dead_code, reason = "dropping it disarms the watchdog")] Sender<()>);

impl Watchdog {
    fn arm(name: &'static str, limit: Duration) -> Self {
        let (armed, disarmed) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = disarmed.recv_timeout(limit) {
                let _ = writeln!(
                    std::io::stderr(),
                    "watchdog: `{name}` hung for {limit:?}; failing the test run"
                );
                std::process::exit(101);
            }
        });
        Self(armed)
    }
}
