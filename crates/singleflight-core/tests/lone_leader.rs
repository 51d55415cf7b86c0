//! A lone caller allocates nothing: an uncontended call with a word-sized key whose work is
//! ready at once registers in its shard's inline slots, runs the work inline in its own
//! future and ends, with no heap allocation at all (blocking or async). Counted by a counting
//! allocator over many calls, so a single allocation per call would show. And the other side
//! of that choice: a large work future is boxed by the leader, so that no call, leading or
//! waiting, holds room for more than a small one.
// What these tests use (blocking waits, panic payloads, deadlines, a counting allocator
// over the system one) exists with `std` only.
#![cfg(feature = "std")]

use std::alloc::System;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use singleflight_core::Group;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

// The workspace's one watchdog: a hang (a lost wake-up, say) fails this binary in bounded
// time instead of stalling the run.
#[path = "support/watchdog.rs"]
mod watchdog;
pub use watchdog::{TEST_LIMIT, Watchdog};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CALLS: u64 = 10_000;
/// Allocations another thread of the process may make during a count: far fewer than one a
/// call.
const STRAY: usize = 8;

fn allocations() -> usize {
    ALLOCATOR.stats().allocations + ALLOCATOR.stats().reallocations
}

fn ready<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a lone call whose work is ready at once is ready at once"),
    }
}

// One test function: the allocator's counts are process-wide, and tests run in parallel.
#[test]
fn a_lone_call_allocates_nothing() {
    let _watchdog = watchdog!();
    lone_async_calls();
    lone_blocking_calls();
    // Last: boxing allocates, which the counts above must not see.
    a_large_work_future_is_boxed_and_calls_stay_small();
}

fn lone_async_calls() {
    let group = Group::<u64, [u64; 8]>::new();
    // The group's shards exist already; one call first, in case anything is made lazily.
    assert_eq!(ready(group.call(&0, || async { [0; 8] })), Ok([0; 8]));
    let before = allocations();
    for key in 1..=CALLS {
        // A work future larger than a pointer: it lives in the call, not in a box.
        let value = ready(group.call(&key, move || async move { [key; 8] }));
        assert_eq!(value, Ok([key; 8]));
    }
    // The counts are process-wide: the harness's and the watchdog's threads may allocate
    // once or twice meanwhile, while one allocation per call would show as 10,000.
    let allocated = allocations() - before;
    assert!(
        allocated < STRAY,
        "{allocated} allocations over {CALLS} lone async calls"
    );
    assert_eq!(group.in_flight(), 0);
}

fn lone_blocking_calls() {
    let group = Group::<u64, u64>::new();
    let before = allocations();
    for key in 0..CALLS {
        let Ok(singleflight_core::Entered::Leader(leader)) = group.enter(&key) else {
            panic!("a lone caller leads");
        };
        assert_eq!(leader.run(|| key * 2, |_| false), key * 2);
    }
    let allocated = allocations() - before;
    assert!(
        allocated < STRAY,
        "{allocated} allocations over {CALLS} lone blocking calls"
    );
}

/// The other side of keeping a small work future inline: a large one is boxed by the
/// caller that leads, so that every call holds the same small room for the work, and a
/// herd of waiting calls stays small without the work boxing its own future.
fn a_large_work_future_is_boxed_and_calls_stay_small() {
    async fn large() -> [u8; 4] {
        let buffer = [7u8; 4096];
        std::future::ready(()).await;
        let buffer = std::hint::black_box(buffer);
        [buffer[0]; 4]
    }
    let group = Group::<u64, [u8; 4]>::new();
    let large_call = group.call(&1, large);
    let small_call = group.call(&2, || async { [7u8; 4] });
    let boxed_by_hand = group.call(&3, || Box::pin(large()));
    // Every byte here is paid by each waiting task of a herd, and crossing a size class
    // costs far more than a byte: at 8 bytes more, the benchmark herd's tokio task cells
    // (128-byte aligned) grew from 256 to 384 bytes each. 72 = 32 bytes of room for the
    // work + the leader's guard (32) and the state's tag (8).
    assert!(
        size_of_val(&large_call) <= 72,
        "{} bytes",
        size_of_val(&large_call)
    );
    assert_eq!(size_of_val(&large_call), size_of_val(&small_call));
    assert_eq!(size_of_val(&large_call), size_of_val(&boxed_by_hand));
    let before = allocations();
    assert_eq!(ready(large_call), Ok([7; 4]));
    assert!(allocations() > before, "the leader boxed the large future");
    assert_eq!(ready(small_call), Ok([7; 4]));
    assert_eq!(ready(boxed_by_hand), Ok([7; 4]));
}
