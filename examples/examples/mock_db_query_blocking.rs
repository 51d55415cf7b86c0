//! shared-call-py's `mock_db_query` on std threads: 100 threads ask for the same row from a
//! database with a pool of 10 connections, whose queries take 50 ms + 10 ms × the queries
//! running at that moment. First every thread queries, then they coalesce through a
//! `singleflight_blocking::Group`.
//!
//! Run: `cargo run --release -p singleflight-examples --example mock_db_query_blocking`
//! (`--quick` or `SCALE=0.1` shrink the latencies; the counts stay the same).

use std::sync::Barrier;
use std::thread;
use std::time::Instant;

use singleflight_blocking::Group;
use singleflight_examples::mock_db::MockDb;
use singleflight_examples::report::{Latencies, Run, print_improvement};
use singleflight_examples::scale::Scale;

const REQUESTS: usize = 100;
const CONNECTIONS: usize = 10;
const USER: u64 = 42;

/// Runs `REQUESTS` threads, released together, each through `group` if there is one and
/// straight to the database otherwise.
fn run(scale: Scale, group: Option<&Group<u64, String>>) -> Run {
    let db = MockDb::new(CONNECTIONS, scale);
    let start_line = Barrier::new(REQUESTS);
    let times: Vec<_> = thread::scope(|s| {
        let threads: Vec<_> = (0..REQUESTS)
            .map(|_| {
                s.spawn(|| {
                    start_line.wait();
                    let started = Instant::now();
                    let row = match group {
                        Some(group) => group
                            .call(&USER, || db.query_blocking(USER))
                            .expect("no panics here"),
                        None => db.query_blocking(USER),
                    };
                    assert_eq!(row, "user 42: Ada Lovelace");
                    (started, started.elapsed())
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("request thread"))
            .collect()
    });
    let first = times
        .iter()
        .map(|&(started, _)| started)
        .min()
        .expect("a request");
    Run {
        requests: REQUESTS,
        queries: db.queries(),
        total: first.elapsed(),
        latencies: Latencies::new(times.into_iter().map(|(_, latency)| latency).collect()),
    }
}

fn main() {
    let scale = Scale::from_env();
    println!(
        "Scenario: {REQUESTS} threads hit a database with a pool of {CONNECTIONS} connections\n\
         (each query takes 50 ms + 10 ms x queries running at that moment){}\n",
        scale.note()
    );
    let without = run(scale, None);
    without.print("WITHOUT request coalescing", "DB queries");
    let group = Group::new();
    let with = run(scale, Some(&group));
    with.print(
        "WITH request coalescing (singleflight-blocking)",
        "DB queries",
    );
    print_improvement(&without, &with, "DB queries");
}
