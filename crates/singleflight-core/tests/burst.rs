//! Memory follows load: after a burst of a million distinct keys, a group gives back what
//! the burst made it allocate (DESIGN.md rule 15). Counted by a counting allocator, not by
//! resident memory, so the figure is exact and the check can be tight.
//!
//! Twice: once with every flight of the burst ending (then each shard frees its table), and
//! once with a few long flights that outlive it, started mid-burst so that they sit in the
//! spill tables the burst grew (then those tables must shrink while they still hold a
//! flight, not stay at the burst's size until they empty).
//!
//! And once with a reuse window (DESIGN.md rule 16): a million values kept for the window
//! are given back after it, with no background thread, either by the calls that follow (each
//! drops a few expired values) or by one `purge_expired()`.
//!
//! `cargo test -p singleflight-core --test burst -- --nocapture` prints the figures.
// What these tests use (blocking waits, panic payloads, deadlines, a counting allocator
// over the system one) exists with `std` only.
#![cfg(feature = "std")]

use std::alloc::System;
use std::time::Duration;

use singleflight_core::{Entered, Group, Waited};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

// The workspace's one watchdog: a hang (a lost wake-up, say) fails this binary in bounded
// time instead of stalling the run.
#[path = "support/watchdog.rs"]
mod watchdog;
pub use watchdog::{TEST_LIMIT, Watchdog};

// The clock and the spawner the tests drive by hand.
#[path = "support/manual.rs"]
mod manual;
pub use manual::{Held, Job, Manual};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated now, by everything in this process. (`stats_alloc` counts a realloc's
/// growth in `bytes_allocated` and its shrinking in `bytes_deallocated` already;
/// `bytes_reallocated` is the same change again, not to be added.)
fn live() -> usize {
    let stats = ALLOCATOR.stats();
    stats
        .bytes_allocated
        .checked_sub(stats.bytes_deallocated)
        .expect("never more freed than allocated")
}

const KEYS: u64 = 1_000_000;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

// One test function: the allocator's counts are process-wide, and tests run in parallel.
#[test]
fn a_burst_of_a_million_keys_gives_its_memory_back() {
    let _watchdog = watchdog!();
    every_flight_of_the_burst_ends();
    a_few_long_flights_outlive_the_burst();
    kept_values_go_after_their_window();
}

fn every_flight_of_the_burst_ends() {
    let group = Group::<String, u64>::new();
    // Room for every caller, made before the baseline so it is not counted as the group's.
    let mut leaders = Vec::with_capacity(KEYS as usize);
    let mut waiters = Vec::with_capacity(KEYS as usize / 10);
    let baseline = live();

    for key in 0..KEYS {
        let key = key.to_string();
        let Ok(Entered::Leader(leader)) = group.enter(&key) else {
            panic!("key {key} starts a flight")
        };
        leaders.push(leader);
        // Every tenth flight is joined, so its shared part is allocated too.
        if key.ends_with('0') {
            let Ok(Entered::Waiter(waiter)) = group.enter(&key) else {
                panic!("key {key} is joined")
            };
            waiters.push(waiter);
        }
    }
    assert_eq!(group.in_flight(), KEYS as usize);
    let peak = live();

    for (value, leader) in (0..).zip(leaders.drain(..)) {
        assert_eq!(leader.complete(value), value);
    }
    for waiter in waiters.drain(..) {
        assert!(matches!(waiter.wait(), Waited::Outcome(Ok(_))));
    }
    assert_eq!(group.in_flight(), 0);
    let after = live();

    println!(
        "allocated by the group: before {:.2} MiB, at the peak {:.2} MiB ({} flights), after {:.3} MiB ({} bytes)",
        0.0,
        mib(peak - baseline),
        KEYS,
        mib(after.saturating_sub(baseline)),
        after.saturating_sub(baseline),
    );
    assert!(peak - baseline > 50 << 20, "the burst did allocate");
    // Every shard's table is freed once it empties; what may stay is a few spill tables of
    // hashbrown's smallest size (four buckets), never kept from the burst.
    assert!(
        after.saturating_sub(baseline) <= 64 << 10,
        "{} bytes stay allocated after the burst",
        after - baseline
    );
}

/// One flight in this many of the second burst outlives it.
const LONG_EVERY: u64 = 100_000;

fn a_few_long_flights_outlive_the_burst() {
    let group = Group::<String, u64>::new();
    let mut leaders = Vec::with_capacity(KEYS as usize);
    let mut long = Vec::with_capacity((KEYS / LONG_EVERY) as usize);
    let baseline = live();

    for n in 0..KEYS {
        let key = n.to_string();
        let Ok(Entered::Leader(leader)) = group.enter(&key) else {
            panic!("key {key} starts a flight")
        };
        // Mid-burst, every shard's inline slots are long taken: this flight goes into the
        // spill table the burst is growing.
        if n % LONG_EVERY == LONG_EVERY / 2 {
            long.push((key, leader));
        } else {
            leaders.push(leader);
        }
    }
    let peak = live();
    for leader in leaders.drain(..) {
        leader.complete(0);
    }
    assert_eq!(group.in_flight(), long.len());
    let after = live();

    println!(
        "with {} long flights left: at the peak {:.2} MiB, after {:.3} MiB ({} bytes)",
        long.len(),
        mib(peak - baseline),
        mib(after.saturating_sub(baseline)),
        after.saturating_sub(baseline),
    );
    // A table that still holds a flight shrinks with its load, to under 32 slots: a few
    // KiB for each long flight, where a table kept at the burst's size holds hundreds.
    assert!(
        after.saturating_sub(baseline) <= 64 << 10,
        "{} bytes stay allocated for {} flights after the burst",
        after - baseline,
        long.len()
    );

    // The long flights are still there for their callers and new ones.
    for (value, (key, leader)) in (1..).zip(long) {
        let Ok(Entered::Waiter(waiter)) = group.enter(&key) else {
            panic!("key {key} is still in flight")
        };
        assert_eq!(leader.complete(value), value);
        assert!(matches!(waiter.wait(), Waited::Outcome(Ok(v)) if v == value));
    }
    assert_eq!(group.in_flight(), 0);
}

const WINDOW: Duration = Duration::from_secs(30);

/// Calls after the window that give a burst's kept values back: each call that starts a
/// flight drops up to 4 expired values of its key's part of the store at its look-up, 4 more
/// when its flight is tracked, and every 64th look-up 256 of another part in turn, so about
/// 12 a call; a million values need about 84,000 calls.
const CALLS_AFTER: u64 = 100_000;

/// What may stay allocated by a store emptied after a burst: its parts' empty tables and
/// queues at their smallest sizes.
const STORE_TOLERANCE: usize = 64 << 10;

fn kept_values_go_after_their_window() {
    for by_calls in [true, false] {
        let clock = Manual::default();
        // Fallible work, so that the calls after the window (which fail) store nothing.
        let group = Group::<String, Result<u64, u64>>::new().reuse_for(WINDOW, clock.clone());
        let baseline = live();
        for n in 0..KEYS {
            let key = n.to_string();
            let Ok(Entered::Leader(leader)) = group.enter(&key) else {
                panic!("key {key} starts a flight")
            };
            assert_eq!(leader.complete(Ok(n)), Ok(n));
        }
        assert_eq!(group.reusable(), KEYS as usize);
        assert_eq!(group.in_flight(), 0);
        let peak = live();
        // Inside the window the values stay, whatever is called.
        assert!(matches!(group.enter("7"), Ok(Entered::Reused(_))));

        clock.advance(WINDOW);
        let how = if by_calls {
            for n in 0..CALLS_AFTER {
                let key = format!("after-{n}");
                let Ok(Entered::Leader(leader)) = group.enter(&key) else {
                    panic!("key {key} starts a flight")
                };
                let _ = leader.complete_failed(Err(n));
            }
            format!("{CALLS_AFTER} calls")
        } else {
            assert_eq!(group.purge_expired(), KEYS as usize);
            "one purge_expired()".to_owned()
        };
        assert_eq!(group.reusable(), 0, "after {how}");
        let after = live();
        println!(
            "reuse window, {KEYS} values: at the peak {:.2} MiB, after the window and {how} {:.3} MiB ({} bytes)",
            mib(peak - baseline),
            mib(after.saturating_sub(baseline)),
            after.saturating_sub(baseline),
        );
        assert!(peak - baseline > 50 << 20, "the burst did keep its values");
        assert!(
            after.saturating_sub(baseline) <= STORE_TOLERANCE,
            "{} bytes stay allocated after the window and {how}",
            after - baseline
        );
    }
}
