//! What counting and hot keys allocate on the uncontended call (one thread, a fresh key per
//! call), counted by a counting allocator over many calls so that one allocation a call
//! would show: nothing for a `Stats`, nothing for hot keys of a word-sized key, hashed or
//! formatted; one allocation per recorded call for a formatted key whose owned form
//! allocates (a `String`), since the group formats the owned form of the key.
#![cfg(feature = "std")]

use std::alloc::System;
use std::sync::Arc;

use singleflight_blocking::Group;
use singleflight_stats::{HotKeys, Stats};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CALLS: u64 = 10_000;
/// Allocations another thread of the process may make during a count: far fewer than one a
/// call.
const STRAY: u64 = 8;

fn allocations() -> u64 {
    let stats = ALLOCATOR.stats();
    (stats.allocations + stats.reallocations) as u64
}

/// The allocations of `CALLS` lone calls on a `u64`-keyed group observed by `stats`.
fn lone_u64_calls(stats: Stats, formatted: bool) -> u64 {
    let stats = Arc::new(stats);
    let mut group = Group::<u64, u64>::new().with_name("ids");
    if formatted {
        group = group.with_key_format(|id, f| write!(f, "{id}"));
    }
    let group = group.with_observer(stats.clone());
    // One call first, in case anything is made lazily.
    assert_eq!(group.call(&0, || 0), Ok(0));
    let before = allocations();
    for key in 1..=CALLS {
        assert_eq!(group.call(&key, || key * 2), Ok(key * 2));
    }
    let allocated = allocations() - before;
    assert_eq!(stats.snapshot().misses, CALLS + 1);
    allocated
}

/// The allocations of `CALLS` lone calls on a `String`-keyed group (called with `&str`
/// keys) observed by `stats`.
fn lone_string_calls(stats: Stats) -> u64 {
    let stats = Arc::new(stats);
    let group = Group::<String, u64>::new()
        .with_name("users")
        .with_key_format(|key, f| f.write_str(key))
        .with_observer(stats.clone());
    let keys: Vec<String> = (0..=CALLS).map(|i| format!("user:{i}")).collect();
    assert_eq!(group.call(keys[0].as_str(), || 0), Ok(0));
    let before = allocations();
    for key in &keys[1..] {
        assert_eq!(group.call(key.as_str(), || 1), Ok(1));
    }
    allocations() - before
}

// One test function: the allocator's counts are process-wide, and tests run in parallel.
#[test]
fn what_counting_and_hot_keys_allocate_per_call() {
    let every_call = || Arc::new(HotKeys::new(256));
    for (what, stats, formatted) in [
        ("no hot keys", Stats::new(), false),
        (
            "hot keys, hashed",
            Stats::new().with_hot_keys(every_call()),
            false,
        ),
        (
            "hot keys, formatted",
            Stats::new().with_hot_keys(every_call()),
            true,
        ),
    ] {
        let allocated = lone_u64_calls(stats, formatted);
        assert!(
            allocated < STRAY,
            "{what}: {allocated} allocations over {CALLS} lone calls"
        );
    }

    // A `String` key: the group owns one copy per flight either way; formatting it for the
    // record makes one more (the owned form, from the borrowed `&str`), once per call
    // recorded: every call here, one in 64 sampled.
    let baseline = lone_string_calls(Stats::new());
    let every = lone_string_calls(Stats::new().with_hot_keys(every_call())) - baseline;
    assert!(
        (CALLS - STRAY..CALLS + STRAY).contains(&every),
        "{every} more allocations over {CALLS} calls, each recorded"
    );
    let sampled = Arc::new(HotKeys::new(256).sampled(64));
    let one_in_64 = lone_string_calls(Stats::new().with_hot_keys(sampled)).saturating_sub(baseline);
    assert!(
        one_in_64 < CALLS / 64 * 2 + STRAY,
        "{one_in_64} more allocations over {CALLS} calls, one in 64 recorded"
    );
}
