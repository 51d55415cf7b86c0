//! A thundering herd: 100, 1,000 and 10,000 tasks call one key at once on tokio with 2
//! workers, and the work sleeps 20 ms. Criterion measures the time beyond the work (the
//! herd's overhead); a contender that ran the work more than once in a herd (late callers
//! arriving after it finished) is reported on stderr. Peak memory is in the report
//! (`--bin report`), which runs each herd in a fresh process.
#![allow(
    missing_docs,
    reason = "criterion_group! generates undocumented functions"
)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use singleflight_benches::scenarios::{self, HERD_SIZES};

fn herd(c: &mut Criterion) {
    let runtime = scenarios::two_workers();
    for n in HERD_SIZES {
        let mut group = c.benchmark_group(format!("herd/{n}"));
        group.sample_size(10);
        for contender in singleflight_benches::peers::async_contenders() {
            group.bench_function(BenchmarkId::from_parameter(contender.name), |b| {
                b.iter_custom(|iters| {
                    let mut overhead = Duration::ZERO;
                    for _ in 0..iters {
                        let run = (contender.herd)(&runtime, n);
                        if run.executions != 1 {
                            eprintln!(
                                "{}: herd of {n} ran the work {}×",
                                contender.name, run.executions
                            );
                        }
                        overhead += run.overhead();
                    }
                    overhead
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, herd);
criterion_main!(benches);
