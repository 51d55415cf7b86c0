//! A statistics report after a thundering herd, in the spirit of shared-call-py's
//! `get_stats()`: 100 threads ask for the same user at once, then the same number ask a
//! flaky service that fails, and each group's `Stats` (plus a shared total) is printed,
//! then the hottest keys both groups saw. The groups opt in to showing their keys
//! (`with_key_format`): without it, a `HotKeys` holds each key as a hash only.
//!
//! Run: `cargo run --release -p singleflight-examples --example stats_report`
//! (`HERD_CALLERS` and `HERD_QUERY_MS` shrink it).

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use singleflight_blocking::Group;
use singleflight_stats::{HotKeys, Snapshot, Stats, TopKeys};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `callers` threads call `call` at the same moment.
fn herd(callers: usize, call: impl Fn() + Sync) {
    let start_line = Barrier::new(callers);
    thread::scope(|s| {
        for _ in 0..callers {
            s.spawn(|| {
                start_line.wait();
                call();
            });
        }
    });
}

fn report(title: &str, s: &Snapshot) {
    println!("{title}");
    println!("   Hit Rate:        {:.1}%", s.hit_rate() * 100.0);
    println!("   Hits:            {}", s.hits);
    println!("   Misses:          {}", s.misses);
    println!("   Errors:          {}", s.errors);
    println!("   Panics:          {}", s.panics);
    println!("   Active Calls:    {}", s.active);
    println!(
        "   Work Time:       {:.1} ms total, {:.1} ms longest",
        s.work_time.as_secs_f64() * 1e3,
        s.max_work_time.as_secs_f64() * 1e3
    );
    println!();
}

/// The hottest keys by joins, each with its executions, keys as the groups formatted them
/// (`group/key`).
fn report_hot_keys(top: &TopKeys) {
    println!("🔥 Hot keys (top {} by joins)", top.joins.len());
    for (rank, hot) in top.joins.iter().enumerate() {
        let key = String::from_utf8_lossy(&hot.key);
        let executions = top
            .executions
            .iter()
            .find(|e| e.key == hot.key)
            .map_or(0, |e| e.count);
        println!(
            "   {}. {key:<16} {} joins, {executions} execution(s)",
            rank + 1,
            hot.count
        );
    }
    println!();
}

fn main() {
    let callers = env("HERD_CALLERS", 100) as usize;
    let latency = Duration::from_millis(env("HERD_QUERY_MS", 50));

    // One total for the service, and each group's own numbers adding up into it.
    let total = Arc::new(Stats::new());
    // Both groups record their keys in one fixed-size record of hot keys (100 slots per
    // ranking, every call recorded), as `group/key` since each is named and formats keys.
    let hot = Arc::new(HotKeys::new(100));
    let users_stats = Arc::new(
        Stats::with_parent(total.clone())
            .timed()
            .with_hot_keys(hot.clone()),
    );
    let flaky_stats = Arc::new(
        Stats::with_parent(total.clone())
            .timed()
            .with_hot_keys(hot.clone()),
    );
    let users = Group::<String, String>::new()
        .with_name("users")
        .with_key_format(|key, f| f.write_str(key))
        .with_observer(users_stats.clone());
    let flaky = Group::<String, Result<String, String>>::new()
        .with_name("flaky")
        .with_key_format(|key, f| f.write_str(key))
        .with_observer(flaky_stats.clone());

    println!("{callers} concurrent requests for user 42 ({latency:?} query)\n");
    herd(callers, || {
        let user = users.call("user:42", || {
            thread::sleep(latency);
            "Ada".to_string()
        });
        assert_eq!(user.as_deref(), Ok("Ada"));
    });
    report("📊 users", &users_stats.snapshot());

    println!("{callers} concurrent requests to a failing upstream\n");
    herd(callers, || {
        let reply = flaky.try_call("quote", || {
            thread::sleep(latency);
            Err("503 Service Unavailable".to_string())
        });
        assert!(reply.is_err_and(|e| e.is_failed()));
    });
    report("📊 flaky upstream", &flaky_stats.snapshot());

    let all = total.snapshot();
    report("📊 all groups", &all);
    // Either group's `Stats` reads the shared record.
    let top = users_stats.hot_keys(5);
    report_hot_keys(&top);
    let joins: u64 = top.joins.iter().map(|hot| hot.count).sum();
    assert_eq!(joins, all.hits, "every join recorded, under its own key");
    assert_eq!(
        all.calls(),
        2 * callers as u64,
        "every call is a hit or a miss"
    );
    assert_eq!(all.active, 0);

    println!(
        "Work runs eliminated: {} of {} calls",
        all.hits,
        all.calls()
    );
    // `reset_stats()`: counters start over; the active gauge follows live flights only.
    total.reset();
    assert_eq!(total.snapshot().calls(), 0);
    println!("After reset: {:?}", total.snapshot());
}
