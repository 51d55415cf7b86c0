//! A cache stampede, and what a reuse window does to it: 10,000 callers of one key arrive
//! spread evenly over 50 ms on tokio with 2 workers, and the work sleeps 10 ms.
//!
//! * `stampede/load/*`: the whole load, from the first arrival to the last caller's
//!   return, for a group without a window (each flight serves only the callers that overlap
//!   it, so the work runs about once per 10 ms of arrivals), a group with
//!   `reuse_for(50 ms)` (the first flight's value serves every later caller) and moka's
//!   `get_with` with a 50 ms time-to-live (the usual hand-made cache, as the anchor). The
//!   executions of each contender are printed once, on stderr.
//! * `stampede/call/*`: the cost of one call, on one thread: an uncontended call (fresh
//!   key, ready work, no window), a reuse hit (a key whose value is in the window), and moka's
//!   `get_with` on a present key. A reuse hit should cost no more than an uncontended call.
#![allow(
    missing_docs,
    reason = "criterion_group! generates undocumented functions"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use singleflight_benches::ours::Ours;
use singleflight_benches::scenarios;
use singleflight_tokio::Group;
use tokio::runtime::Runtime;

/// Callers in one stampede.
const CALLERS: u32 = 10_000;
/// The span over which they arrive.
const SPREAD: Duration = Duration::from_millis(50);
/// What the work takes.
const WORK: Duration = Duration::from_millis(10);
/// The reuse window and moka's time-to-live.
const WINDOW: Duration = Duration::from_millis(50);

/// One contender of the load: makes a fresh instance and answers one call.
trait Load: Send + Sync + 'static {
    fn call(self: Arc<Self>, runs: Arc<AtomicUsize>) -> impl Future<Output = u64> + Send;
}

struct Coalesced(Group<u64, u64>);

impl Load for Coalesced {
    async fn call(self: Arc<Self>, runs: Arc<AtomicUsize>) -> u64 {
        self.0
            .call(&1, || async move {
                runs.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(WORK).await;
                7
            })
            .await
            .expect("the work returns")
    }
}

struct Moka(moka::future::Cache<u64, u64>);

impl Load for Moka {
    async fn call(self: Arc<Self>, runs: Arc<AtomicUsize>) -> u64 {
        self.0
            .get_with(1, async move {
                runs.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(WORK).await;
                7
            })
            .await
    }
}

/// Runs one stampede on `rt`; returns its duration and the executions of the work.
fn stampede<L: Load>(rt: &Runtime, load: L) -> (Duration, usize) {
    let load = Arc::new(load);
    let runs = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let start = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..CALLERS)
            .map(|i| {
                let (load, runs) = (load.clone(), runs.clone());
                let at = start + SPREAD * i / CALLERS;
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    load.call(runs).await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("no caller panics"), 7);
        }
        (start.elapsed(), runs.load(Ordering::Relaxed))
    })
}

fn no_window() -> Coalesced {
    Coalesced(Group::new())
}

fn window() -> Coalesced {
    Coalesced(Group::new().reuse_for(WINDOW))
}

fn moka() -> Moka {
    Moka(
        moka::future::Cache::builder()
            .max_capacity(4096)
            .time_to_live(WINDOW)
            .build(),
    )
}

fn load(c: &mut Criterion) {
    let rt = scenarios::two_workers();
    let mut group = c.benchmark_group("stampede/load");
    group.sample_size(10);
    // Each contender's executions, printed once: the table's first column.
    macro_rules! contender {
        ($name:literal, $make:expr) => {{
            let (took, runs) = stampede(&rt, $make);
            eprintln!("stampede/{}: {runs} execution(s), {took:.1?}", $name);
            group.bench_function($name, |b| {
                b.iter_custom(|iters| (0..iters).map(|_| stampede(&rt, $make).0).sum());
            });
        }};
    }
    contender!("no window", no_window());
    contender!("reuse_for(50 ms)", window());
    contender!("moka get_with (ttl 50 ms)", moka());
    group.finish();
}

fn call(c: &mut Criterion) {
    let rt = scenarios::current_thread();
    let mut group = c.benchmark_group("stampede/call");
    group.bench_function("uncontended (fresh key, no window)", |b| {
        b.iter_custom(|iters| scenarios::uncontended_async::<Ours>(&rt, iters));
    });
    group.bench_function("reuse hit", |b| {
        // A window far longer than the measurement, so that every call is a hit.
        let group = Group::<u64, u64>::new().reuse_for(Duration::from_secs(3600));
        b.iter_custom(|iters| {
            rt.block_on(async {
                group.call(&1, || async { 7 }).await.expect("stored");
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(group.call(black_box(&1), || async { 8 }).await.ok());
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("moka get_with (present)", |b| {
        let cache = moka::future::Cache::<u64, u64>::new(4096);
        b.iter_custom(|iters| {
            rt.block_on(async {
                cache.insert(1, 7).await;
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(cache.get_with(black_box(1), async { 8 }).await);
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

criterion_group!(benches, load, call);
criterion_main!(benches);
