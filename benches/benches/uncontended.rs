//! Uncontended cost per call: one thread, a fresh key per call, work that returns at once.
//! What a coalescer adds to every call that turns out not to need it. Async contenders run
//! on a current-thread tokio runtime, blocking ones on this thread.
#![allow(
    missing_docs,
    reason = "criterion_group! generates undocumented functions"
)]

use criterion::{Criterion, criterion_group, criterion_main};
use singleflight_benches::peers::NoCoalescing;
use singleflight_benches::scenarios::{self, async_contender, blocking_contender};

fn asynchronous(c: &mut Criterion) {
    let mut group = c.benchmark_group("uncontended/async");
    let runtime = scenarios::current_thread();
    let mut contenders = singleflight_benches::peers::async_contenders();
    contenders.push(async_contender::<NoCoalescing, NoCoalescing>());
    for contender in contenders {
        group.bench_function(contender.name, |b| {
            b.iter_custom(|iters| (contender.uncontended)(&runtime, iters));
        });
    }
    group.finish();
}

fn blocking(c: &mut Criterion) {
    let mut group = c.benchmark_group("uncontended/blocking");
    let mut contenders = singleflight_benches::peers::blocking_contenders();
    contenders.push(blocking_contender::<NoCoalescing>());
    for contender in contenders {
        group.bench_function(contender.name, |b| {
            b.iter_custom(|iters| (contender.uncontended)(iters));
        });
    }
    group.finish();
}

criterion_group!(benches, asynchronous, blocking);
criterion_main!(benches);
