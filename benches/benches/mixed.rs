//! Mixed load: 64 client tasks on tokio with 2 workers, each making calls over 1,000 keys
//! (a per-task pseudo-random sequence); the work is one `yield_now`, so flights overlap and
//! callers really coalesce. Criterion reports throughput in calls per second. The report
//! (`--bin report`) runs the full 64 × 20,000; here each sample is 64 × 2,000.
#![allow(
    missing_docs,
    reason = "criterion_group! generates undocumented functions"
)]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use singleflight_benches::scenarios::{self, MIXED_TASKS};

const CALLS: usize = 2_000;

fn mixed(c: &mut Criterion) {
    let runtime = scenarios::two_workers();
    let mut group = c.benchmark_group("mixed");
    group.sample_size(10);
    group.throughput(Throughput::Elements((MIXED_TASKS * CALLS) as u64));
    for contender in singleflight_benches::peers::async_contenders() {
        group.bench_function(contender.name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| (contender.mixed)(&runtime, CALLS))
                    .sum::<Duration>()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, mixed);
criterion_main!(benches);
