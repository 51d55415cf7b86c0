//! A blocking herd: 16 and 64 threads call one key at once and the work sleeps 20 ms.
//! Criterion measures the fan-out, from the work's end until the last thread has its value,
//! for ours, the blocking peers and a bare `Mutex` + `Condvar` `notify_all` (the floor). A
//! contender that ran the work more than once in a herd is reported on stderr.
#![allow(
    missing_docs,
    reason = "criterion_group! generates undocumented functions"
)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use singleflight_benches::blocking_herd::BLOCKING_HERD_SIZES;
use singleflight_benches::peers::blocking_herd_contenders;

fn blocking_herd(c: &mut Criterion) {
    for n in BLOCKING_HERD_SIZES {
        let mut group = c.benchmark_group(format!("blocking_herd/{n}"));
        group.sample_size(10);
        for contender in blocking_herd_contenders() {
            group.bench_function(BenchmarkId::from_parameter(contender.name), |b| {
                b.iter_custom(|iters| {
                    let mut fan_out = Duration::ZERO;
                    for _ in 0..iters {
                        let run = (contender.run)(n);
                        if run.executions != 1 {
                            eprintln!(
                                "{}: herd of {n} ran the work {}×",
                                contender.name, run.executions
                            );
                        }
                        fan_out += run.last;
                    }
                    fan_out
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, blocking_herd);
criterion_main!(benches);
