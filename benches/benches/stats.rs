//! What statistics add to a call: the uncontended call (one thread, a fresh key per call,
//! work that returns at once) on the blocking front-end, with no observer and with a
//! `Stats` attached (counters only, the default), and with a `timed` `Stats` (counters plus
//! two clock reads per execution). The gap is the whole cost of counting, since every hook
//! runs and no wait hides it. Target: `stats` within 15% of `no-observer`.
#![allow(
    missing_docs,
    reason = "criterion_group! defines an undocumented public function"
)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use singleflight_blocking::Group;
use singleflight_stats::Stats;

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("stats/uncontended/blocking");

    group.bench_function("no-observer", |b| {
        let flights = Group::<u64, u64>::new();
        let mut key = 0u64;
        b.iter(|| {
            key += 1;
            flights.call(&key, || black_box(key) * 2)
        });
    });

    group.bench_function("stats", |b| {
        let stats = Arc::new(Stats::new());
        let flights = Group::<u64, u64>::new().with_observer(stats.clone());
        let mut key = 0u64;
        b.iter(|| {
            key += 1;
            flights.call(&key, || black_box(key) * 2)
        });
        black_box(stats.snapshot());
    });

    group.bench_function("stats-timed", |b| {
        let stats = Arc::new(Stats::new().timed());
        let flights = Group::<u64, u64>::new().with_observer(stats.clone());
        let mut key = 0u64;
        b.iter(|| {
            key += 1;
            flights.call(&key, || black_box(key) * 2)
        });
        black_box(stats.snapshot());
    });

    group.finish();
}

criterion_group!(benches, uncontended);
criterion_main!(benches);
