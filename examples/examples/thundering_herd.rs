//! shared-call-py's `thundering_herd` on tokio: a popular endpoint's cache entry has just
//! expired when 100 users hit it at once; refilling it takes a 2-second query. Without
//! protection every user misses the cache and runs the query; with a
//! `singleflight_tokio::Group` one of them refills it and the others share the result.
//!
//! Run: `cargo run --release -p singleflight-examples --example thundering_herd`
//! (`--quick` or `SCALE=0.1` shrink the query; the counts stay the same).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_lock::Barrier;
use singleflight_examples::report::percent;
use singleflight_examples::scale::Scale;
use singleflight_stats::Stats;
use singleflight_tokio::Group;

const USERS: usize = 100;
const KEY: &str = "popular-items";

/// The endpoint's cache and the database behind it.
struct Backend {
    /// The cached value and when it expires.
    cache: Mutex<Option<(String, Instant)>>,
    ttl: Duration,
    query_time: Duration,
    queries: AtomicUsize,
    refills: AtomicUsize,
}

impl Backend {
    /// A backend whose cache entry has just expired.
    fn expired(scale: Scale) -> Self {
        Self {
            cache: Mutex::new(Some(("yesterday's items".into(), Instant::now()))),
            ttl: Duration::from_secs(300),
            query_time: scale.ms(2000.0),
            queries: AtomicUsize::new(0),
            refills: AtomicUsize::new(0),
        }
    }

    fn cached(&self) -> Option<String> {
        let cache = self.cache.lock().expect("cache lock");
        cache
            .as_ref()
            .filter(|(_, expires)| Instant::now() < *expires)
            .map(|(value, _)| value.clone())
    }

    /// The expensive query, then the cache refill.
    async fn refill(&self) -> String {
        self.queries.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.query_time).await;
        let value = "today's popular items".to_string();
        *self.cache.lock().expect("cache lock") = Some((value.clone(), Instant::now() + self.ttl));
        self.refills.fetch_add(1, Ordering::SeqCst);
        value
    }
}

/// The endpoint: the cache, or on a miss the refill (coalesced if there is a group).
async fn endpoint(backend: Arc<Backend>, group: Option<Group<String, String>>) -> String {
    if let Some(value) = backend.cached() {
        return value;
    }
    match group {
        // Detached: the refill finishes and fills the cache even if every user gives up.
        Some(group) => group
            .call_detached(KEY, move || async move { backend.refill().await })
            .await
            .expect("the refill does not panic"),
        None => backend.refill().await,
    }
}

async fn herd(scale: Scale, group: Option<Group<String, String>>) -> (Arc<Backend>, Duration) {
    let backend = Arc::new(Backend::expired(scale));
    let start_line = Arc::new(Barrier::new(USERS + 1));
    let users: Vec<_> = (0..USERS)
        .map(|_| {
            let (backend, group, start_line) =
                (Arc::clone(&backend), group.clone(), Arc::clone(&start_line));
            tokio::spawn(async move {
                start_line.wait().await;
                endpoint(backend, group).await
            })
        })
        .collect();
    start_line.wait().await;
    let start = Instant::now();
    for user in users {
        assert_eq!(user.await.expect("user task"), "today's popular items");
    }
    (backend, start.elapsed())
}

#[tokio::main]
async fn main() {
    let scale = Scale::from_env();
    println!(
        "Scenario: {USERS} users hit an endpoint at once, just as its cache entry expires\n\
         (the refill query takes {:.1?}){}\n",
        scale.ms(2000.0),
        scale.note()
    );

    let (backend, elapsed) = herd(scale, None).await;
    let queries = backend.queries.load(Ordering::SeqCst);
    println!("WITHOUT protection");
    println!("   Duration:           {:.3}s", elapsed.as_secs_f64());
    println!("   DB queries:         {queries} (every user hit the database)");
    println!("   Wasted queries:     {}", queries - 1);
    println!(
        "   Cache refills:      {}\n",
        backend.refills.load(Ordering::SeqCst)
    );

    let stats = Arc::new(Stats::new());
    let group = Group::new().with_observer(stats.clone());
    let (backend, elapsed) = herd(scale, Some(group)).await;
    let queries = backend.queries.load(Ordering::SeqCst);
    let snapshot = stats.snapshot();
    println!("WITH protection (singleflight-tokio)");
    println!("   Duration:           {:.3}s", elapsed.as_secs_f64());
    println!("   DB queries:         {queries} (only the leader ran it)");
    println!(
        "   Coalescing rate:    {:.1}% ({} of {} calls joined a flight)",
        snapshot.hit_rate() * 100.0,
        snapshot.hits,
        snapshot.calls()
    );
    println!("   Queries prevented:  {}", USERS - queries);
    println!(
        "   Cache refills:      {}",
        backend.refills.load(Ordering::SeqCst)
    );
    println!(
        "\nThe database saw {:.1}% of the load.",
        percent(queries, USERS)
    );
}
