//! One round of our scenarios, for A/B runs of two copies of the library
//! (`benches/compare.sh <git-ref>` builds this binary against each and interleaves their
//! rounds, one process per round). It includes the scenario sources rather than the
//! benches library, so that it builds against any copy of the library with the same API.
//!
//! ```text
//! ab round [--quick]             one round: `name value` lines
//! ab count async|blocking N      N uncontended calls (run under callgrind)
//! ab count mixed N                the mixed scenario, N calls per task (for a profiler)
//! ```

#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the report: this binary runs a subset"
)]
#[path = "../blocking_herd.rs"]
mod blocking_herd;
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the report: this binary runs a subset"
)]
#[path = "../coalescer.rs"]
mod coalescer;
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the report: this binary runs a subset"
)]
#[path = "../ours.rs"]
mod ours;
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the report: this binary runs a subset"
)]
#[path = "../scenarios.rs"]
mod scenarios;

use std::hint::black_box;
use std::time::Duration;

use coalescer::Payload;
use ours::{Ours, OursBlocking};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("round") => round(args.iter().any(|a| a == "--quick")),
        Some("count") => {
            let n: u64 = args[2].parse().expect("a call count");
            match args[1].as_str() {
                "async" => {
                    black_box(scenarios::uncontended_async::<Ours>(
                        &scenarios::current_thread(),
                        n,
                    ));
                }
                "blocking" => {
                    black_box(scenarios::uncontended_blocking::<OursBlocking>(n));
                }
                // `n` calls per task of the mixed scenario (for a sampling profiler).
                "mixed" => {
                    black_box(scenarios::mixed::<Ours>(
                        &scenarios::two_workers(),
                        n as usize,
                    ));
                }
                other => panic!("no such kind: {other}"),
            }
        }
        _ => eprintln!("usage: ab round [--quick] | ab count async|blocking|mixed N"),
    }
}

fn ns(d: Duration, calls: u64) -> f64 {
    d.as_nanos() as f64 / calls as f64
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One round of every scenario, in a fixed order; figures on stdout as `name value`.
fn round(quick: bool) {
    let iters = if quick { 100_000 } else { 300_000 };
    let current = scenarios::current_thread();
    // Untimed first touches.
    scenarios::uncontended_async::<Ours>(&current, iters / 10);
    scenarios::uncontended_blocking::<OursBlocking>(iters / 10);
    let figure = |name: &str, value: f64| println!("{name} {value:.4}");
    figure(
        "uncontended_async_ns",
        ns(scenarios::uncontended_async::<Ours>(&current, iters), iters),
    );
    figure(
        "uncontended_blocking_ns",
        ns(
            scenarios::uncontended_blocking::<OursBlocking>(iters),
            iters,
        ),
    );
    drop(current);

    let workers = scenarios::two_workers();
    scenarios::herd::<Ours<Payload>>(&workers, 100);
    let before = proc_status_kib("VmRSS");
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let run = scenarios::herd::<Ours<Payload>>(&workers, 10_000);
    let peak = proc_status_kib("VmHWM");
    figure(
        "herd_call_future_bytes",
        scenarios::herd_call_bytes::<Ours<Payload>>() as f64,
    );
    figure("herd10k_last_arrival_ms", ms(run.last_arrival));
    figure("herd10k_executions", run.executions as f64);
    figure("herd10k_overhead_ms", ms(run.overhead()));
    figure("herd10k_fan_out_ms", ms(run.fan_out));
    figure(
        "herd10k_peak_rss_mib",
        peak.saturating_sub(before) as f64 / 1024.0,
    );
    let mixed_calls = if quick { 500 } else { 2_000 };
    let took = scenarios::mixed::<Ours>(&workers, mixed_calls);
    figure(
        "mixed_mcalls_per_s",
        (scenarios::MIXED_TASKS * mixed_calls) as f64 / took.as_secs_f64() / 1e6,
    );
    drop(workers);
    figure(
        "disjoint_async_ns",
        ns(scenarios::disjoint_async::<Ours>(iters), iters * 2),
    );
    figure(
        "disjoint_blocking_ns",
        ns(
            scenarios::disjoint_blocking::<OursBlocking>(iters),
            iters * 2,
        ),
    );

    // A few blocking herds per size: a single one is too noisy to stand for a round.
    let herds = if quick { 3 } else { 5 };
    for n in blocking_herd::BLOCKING_HERD_SIZES {
        let runs: Vec<_> = (0..herds)
            .map(|_| blocking_herd::blocking_herd::<OursBlocking>(n))
            .collect();
        let us = |f: fn(&blocking_herd::FanOut) -> Duration| {
            median(runs.iter().map(|r| f(r).as_secs_f64() * 1e6).collect())
        };
        figure(
            &format!("blocking{n}_last_arrival_us"),
            us(|r| r.last_arrival),
        );
        figure(&format!("blocking{n}_overhead_us"), us(|r| r.overhead));
        figure(&format!("blocking{n}_fan_out_us"), us(|r| r.last));
        figure(
            &format!("blocking{n}_executions"),
            runs.iter().map(|r| r.executions).sum::<usize>() as f64 / herds as f64,
        );
    }
}

fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
