//! Memory follows load: after a burst of a million distinct keys, a group gives back what
//! the burst made it allocate (DESIGN.md rule 15). Counted by a counting allocator, not by
//! resident memory, so the figure is exact and the check can be tight.
//!
//! `cargo test -p singleflight-core --test burst -- --nocapture` prints the figures.

use std::alloc::System;

use singleflight_core::{Entry, Group, Waited};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated now, by everything in this process.
fn live() -> usize {
    let stats = ALLOCATOR.stats();
    let live =
        stats.bytes_allocated as isize - stats.bytes_deallocated as isize + stats.bytes_reallocated;
    usize::try_from(live).expect("never more freed than allocated")
}

const KEYS: u64 = 1_000_000;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[test]
fn a_burst_of_a_million_keys_gives_its_memory_back() {
    let group = Group::<String, u64>::new();
    // Room for every caller, made before the baseline so it is not counted as the group's.
    let mut leaders = Vec::with_capacity(KEYS as usize);
    let mut waiters = Vec::with_capacity(KEYS as usize / 10);
    let baseline = live();

    for key in 0..KEYS {
        let key = key.to_string();
        let Ok(Entry::Leader(leader)) = group.enter(&key) else {
            panic!("key {key} starts a flight")
        };
        leaders.push(leader);
        // Every tenth flight is joined, so its shared part is allocated too.
        if key.ends_with('0') {
            let Ok(Entry::Waiter(waiter)) = group.enter(&key) else {
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
