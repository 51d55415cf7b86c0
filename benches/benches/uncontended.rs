//! Uncontended cost per call: one thread, a fresh key per call, work that returns at once.
//! What a coalescer adds to every call that turns out not to need it.
#![allow(
    missing_docs,
    reason = "criterion_group! generates undocumented functions"
)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use singleflight_benches::baseline::MutexCondvarGroup;

fn blocking(c: &mut Criterion) {
    let mut group = c.benchmark_group("uncontended/blocking");

    group.bench_function("no-coalescing", |b| {
        let mut key = 0u64;
        b.iter(|| {
            key += 1;
            black_box(black_box(key) * 2)
        });
    });

    group.bench_function("singleflight-blocking", |b| {
        let flights = singleflight_blocking::Group::<u64, u64>::new();
        let mut key = 0u64;
        b.iter(|| {
            key += 1;
            flights.call(&key, || black_box(key) * 2)
        });
    });

    group.bench_function("mutex-condvar-baseline", |b| {
        let flights = MutexCondvarGroup::<u64, u64>::new();
        let mut key = 0u64;
        b.iter(|| {
            key += 1;
            flights.call(&key, || black_box(key) * 2)
        });
    });

    group.finish();
}

criterion_group!(benches, blocking);
criterion_main!(benches);
