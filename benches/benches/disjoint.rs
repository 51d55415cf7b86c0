//! Disjoint keys: 2 threads hammer one shared coalescer, each with fresh keys the other
//! never uses: the cost of sharing the map (lock and cache-line contention) when nothing
//! coalesces. Async contenders run a current-thread runtime on each thread. Criterion's
//! figure is wall time per call of one thread (both run at once).
#![allow(
    missing_docs,
    reason = "criterion_group! generates undocumented functions"
)]

use criterion::{Criterion, criterion_group, criterion_main};

fn asynchronous(c: &mut Criterion) {
    let mut group = c.benchmark_group("disjoint/async");
    for contender in singleflight_benches::peers::async_contenders() {
        group.bench_function(contender.name, |b| {
            b.iter_custom(|iters| (contender.disjoint)(iters));
        });
    }
    group.finish();
}

fn blocking(c: &mut Criterion) {
    let mut group = c.benchmark_group("disjoint/blocking");
    for contender in singleflight_benches::peers::blocking_contenders() {
        group.bench_function(contender.name, |b| {
            b.iter_custom(|iters| (contender.disjoint)(iters));
        });
    }
    group.finish();
}

criterion_group!(benches, asynchronous, blocking);
criterion_main!(benches);
