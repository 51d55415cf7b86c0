//! shared-call-py's `mock_db_query` on tokio: 100 concurrent requests for the same row hit
//! a database with a pool of 10 connections, whose queries take 50 ms + 10 ms × the
//! queries running at that moment. First every request queries, then they coalesce
//! through a `singleflight_tokio::Group`.
//!
//! Run: `cargo run --release -p singleflight-examples --example mock_db_query`
//! (`--quick` or `SCALE=0.1` shrink the latencies; the counts stay the same).

use std::sync::Arc;
use std::time::Instant;

use async_lock::Barrier;
use singleflight_examples::mock_db::MockDb;
use singleflight_examples::report::{Latencies, Run, print_improvement};
use singleflight_examples::scale::Scale;
use singleflight_tokio::Group;

const REQUESTS: usize = 100;
const CONNECTIONS: usize = 10;
const USER: u64 = 42;

/// Fires `REQUESTS` concurrent requests for `USER`, released together, each through
/// `group` if there is one and straight to the database otherwise.
async fn run(scale: Scale, group: Option<Group<u64, String>>) -> Run {
    let db = Arc::new(MockDb::new(CONNECTIONS, scale));
    let start_line = Arc::new(Barrier::new(REQUESTS));
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let (db, group, start_line) = (Arc::clone(&db), group.clone(), Arc::clone(&start_line));
            tokio::spawn(async move {
                start_line.wait().await;
                let started = Instant::now();
                let row = match &group {
                    Some(group) => group
                        .call(&USER, || db.query(USER))
                        .await
                        .expect("no panics here"),
                    None => db.query(USER).await,
                };
                assert_eq!(row, "user 42: Ada Lovelace");
                (started, started.elapsed())
            })
        })
        .collect();
    let mut first = None::<Instant>;
    let mut latencies = Vec::with_capacity(REQUESTS);
    for task in tasks {
        let (started, latency) = task.await.expect("request task");
        first = Some(first.map_or(started, |f| f.min(started)));
        latencies.push(latency);
    }
    let first = first.expect("at least one request");
    Run {
        requests: REQUESTS,
        queries: db.queries(),
        total: first.elapsed(),
        latencies: Latencies::new(latencies),
    }
}

#[tokio::main]
async fn main() {
    let scale = Scale::from_env();
    println!(
        "Scenario: {REQUESTS} concurrent requests hit a database with a pool of {CONNECTIONS} connections\n\
         (each query takes 50 ms + 10 ms x queries running at that moment){}\n",
        scale.note()
    );
    let without = run(scale, None).await;
    without.print("WITHOUT request coalescing", "DB queries");
    let with = run(scale, Some(Group::new())).await;
    with.print("WITH request coalescing (singleflight-tokio)", "DB queries");
    print_improvement(&without, &with, "DB queries");
}
