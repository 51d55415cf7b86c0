//! A thundering herd on std threads: 100 threads ask for the same row at once, first
//! without coalescing, then through a `singleflight_blocking::Group`.
//!
//! Run: `cargo run --release -p singleflight-examples --example blocking_herd`
//! (`--quick` or `SCALE` shrink the query's latency, as in every example; `HERD_CALLERS`
//! and `HERD_QUERY_MS` set the herd's size and the unscaled latency).

use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use singleflight_blocking::Group;
use singleflight_examples::scale::Scale;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The expensive query every caller wants.
fn query(queries: &AtomicUsize, latency: Duration) -> String {
    queries.fetch_add(1, Ordering::SeqCst);
    thread::sleep(latency);
    "row 42".to_string()
}

struct Run {
    queries: usize,
    leaders: usize,
    elapsed: Duration,
}

fn herd(callers: usize, latency: Duration, coalesce: bool) -> Run {
    let group = Group::<String, String>::new();
    let queries = AtomicUsize::new(0);
    let leaders = AtomicUsize::new(0);
    let start_line = Barrier::new(callers);
    let start = Instant::now();
    thread::scope(|s| {
        for _ in 0..callers {
            s.spawn(|| {
                start_line.wait();
                if coalesce {
                    let (row, role) = group
                        .request("user:42")
                        .with_role()
                        .call(|| query(&queries, latency));
                    assert_eq!(row.as_deref(), Ok("row 42"));
                    if role.is_leader() {
                        leaders.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    assert_eq!(query(&queries, latency), "row 42");
                }
            });
        }
    });
    Run {
        queries: queries.into_inner(),
        leaders: leaders.into_inner(),
        elapsed: start.elapsed(),
    }
}

fn main() {
    let callers = env("HERD_CALLERS", 100) as usize;
    let scale = Scale::from_env();
    let latency = scale.ms(env("HERD_QUERY_MS", 50) as f64);
    println!(
        "{callers} threads ask for user:42 at once; the query takes {latency:?}{}\n",
        scale.note()
    );

    let without = herd(callers, latency, false);
    println!("WITHOUT coalescing");
    println!("   Queries run:     {}", without.queries);
    println!("   Total duration:  {:.3?}\n", without.elapsed);

    let with = herd(callers, latency, true);
    println!("WITH coalescing (singleflight-blocking)");
    println!("   Queries run:     {}", with.queries);
    println!(
        "   Leaders:         {} (the rest shared a result)",
        with.leaders
    );
    println!("   Total duration:  {:.3?}\n", with.elapsed);

    println!(
        "Queries eliminated: {} of {}",
        without.queries - with.queries,
        without.queries
    );
}
