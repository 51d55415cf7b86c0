//! Counts from many threads at once, more than a `Stats` has stripes, through a chain of
//! parents: every call is counted exactly once at every level, and the flights in
//! progress come back to zero.
#![cfg(feature = "std")]

use std::sync::{Arc, Barrier};
use std::thread;

use singleflight_blocking::Group;
use singleflight_stats::Stats;

#[test]
fn calls_from_more_threads_than_stripes_are_counted_once_at_every_level() {
    // Twice the available parallelism, at most 64, is the most stripes a `Stats` has.
    let threads = thread::available_parallelism()
        .map_or(4, |n| n.get() * 2)
        .clamp(4, 64)
        * 2
        + 3;
    const CALLS: u64 = 2_000;
    let root = Arc::new(Stats::new());
    let parent = Arc::new(Stats::with_parent(root.clone()));
    let child = Arc::new(Stats::with_parent(parent.clone()));
    let group = Group::<u64, u64>::new().with_observer(child.clone());
    // All threads alive at once, so that some have no stripe of their own.
    let barrier = Barrier::new(threads);
    thread::scope(|s| {
        for thread in 0..threads as u64 {
            let (group, barrier) = (&group, &barrier);
            s.spawn(move || {
                barrier.wait();
                for i in 0..CALLS {
                    // Keys of this thread only: every call runs its work.
                    let key = thread * CALLS + i;
                    assert_eq!(group.call(&key, || key), Ok(key));
                }
            });
        }
    });
    for stats in [&child, &parent, &root] {
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.misses, threads as u64 * CALLS, "{snapshot:?}");
        assert_eq!(snapshot.hits, 0);
        assert_eq!(snapshot.active, 0);
    }
    child.reset();
    assert_eq!(child.snapshot().calls(), 0);
    assert_eq!(root.snapshot().calls(), threads as u64 * CALLS);
}
