//! The fleet layer against an in-memory Redis ([`FakeRedis`]) under a paused clock: each
//! [`Fleet`] on its own [`FakeConn`] stands for one process.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Failure, Fleet};
use crate::config::Config;
use crate::envelope::{Keys, Sealer};
use crate::fake::{FakeConn, FakeRedis};
use crate::report::{FallbackReason, FleetRole};

type TestFleet = Arc<Fleet<FakeConn>>;

fn config() -> Config {
    Config::new("t")
        .lease_ttl(Duration::from_secs(3))
        .poll(Duration::from_millis(100), Duration::from_secs(1))
        .op_timeout(Duration::from_millis(250))
        .wait_timeout(Duration::from_secs(30))
}

fn process(redis: &Arc<FakeRedis>, config: Config) -> (TestFleet, FakeConn) {
    let conn = redis.connect();
    (Arc::new(Fleet::new(conn.clone(), config)), conn)
}

/// Counts executions; the work waits for the gate to open and returns `value`.
#[derive(Clone)]
struct Work {
    runs: Arc<AtomicUsize>,
    gate: watch::Sender<bool>,
}

impl Work {
    fn new() -> Self {
        Self {
            runs: Arc::new(AtomicUsize::new(0)),
            gate: watch::channel(false).0,
        }
    }

    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    fn open(&self) {
        self.gate.send_replace(true);
    }

    fn run(
        &self,
        fleet: &TestFleet,
        result: Result<u32, &'static str>,
    ) -> JoinHandle<Result<(u32, FleetRole), Failure<&'static str>>> {
        let (fleet, runs, mut gate) = (
            Arc::clone(fleet),
            Arc::clone(&self.runs),
            self.gate.subscribe(),
        );
        tokio::spawn(async move {
            fleet
                .run("key", || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    gate.wait_for(|open| *open).await.unwrap();
                    result
                })
                .await
        })
    }
}

/// Waits for a state; lets the paused clock advance (by 100 µs steps) when nothing
/// else is runnable.
async fn until(mut condition: impl FnMut() -> bool) {
    while !condition() {
        tokio::task::yield_now().await;
        if !condition() {
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
    }
}

fn keys() -> Keys {
    Keys::new("t", 0, "key")
}

#[tokio::test(start_paused = true)]
async fn one_leader_one_waiter_one_execution() {
    let redis = FakeRedis::new();
    let ((a, a_conn), (b, b_conn)) = (process(&redis, config()), process(&redis, config()));
    let work = Work::new();
    let lead = work.run(&a, Ok(7));
    until(|| work.runs() == 1).await;
    let wait = work.run(&b, Ok(8));
    until(|| b.waiting() == 1).await;
    work.open();
    let (value, role) = wait.await.unwrap().unwrap();
    assert_eq!((value, role), (7, FleetRole::Waiter { generation: 1 }));
    assert_eq!(
        lead.await.unwrap().unwrap(),
        (7, FleetRole::Leader { generation: 1 })
    );
    assert_eq!(work.runs(), 1);
    assert!(!redis.lock_held(&keys()), "the lease is released");
    assert_eq!(b.waiting(), 0);
    assert_eq!(a_conn.subscribes(), 0, "a leader never subscribes");
    assert_eq!(b_conn.subscribes(), 1);
    // A later flight is a new flight (no hidden cache): a new generation.
    let again = Work::new();
    again.open();
    let (_, role) = again.run(&b, Ok(9)).await.unwrap().unwrap();
    assert_eq!(role, FleetRole::Leader { generation: 2 });
}

/// A waiter joins before it subscribes: a result published in between is not
/// pushed to it, and must be found at once by the re-check that follows the
/// subscription, not at the next poll (a minute away here).
#[tokio::test(start_paused = true)]
async fn a_result_published_before_the_waiter_subscribed_is_found_at_once() {
    let redis = FakeRedis::new();
    let minute = Duration::from_secs(60);
    let (a, _) = process(&redis, config());
    let (b, b_conn) = process(&redis, config().poll(minute, minute));
    let work = Work::new();
    let lead = work.run(&a, Ok(7));
    until(|| work.runs() == 1).await;
    let subscribed = b_conn.hold_subscribe();
    let wait = work.run(&b, Ok(8));
    until(|| b_conn.subscribes() == 1).await;
    assert_eq!(b.waiting(), 0, "not waiting before the re-check");
    work.open();
    assert_eq!(
        lead.await.unwrap().unwrap(),
        (7, FleetRole::Leader { generation: 1 })
    );
    let published = Instant::now();
    subscribed.send_replace(true);
    assert_eq!(
        wait.await.unwrap().unwrap(),
        (7, FleetRole::Waiter { generation: 1 })
    );
    assert_eq!(published.elapsed(), Duration::ZERO, "not at a poll");
    assert_eq!(work.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_leader_error_reaches_the_waiter_without_any_timer() {
    let redis = FakeRedis::new();
    let ((a, _), (b, _)) = (process(&redis, config()), process(&redis, config()));
    let work = Work::new();
    let lead = work.run(&a, Err("boom"));
    until(|| work.runs() == 1).await;
    let wait = work.run(&b, Ok(8));
    until(|| b.waiting() == 1).await;
    let opened = Instant::now();
    work.open();
    match wait.await.unwrap() {
        Err(Failure::Remote(e, role)) => {
            assert_eq!(e.message(), "boom");
            assert_eq!(role, FleetRole::Waiter { generation: 1 });
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(opened.elapsed(), Duration::ZERO, "pushed, not polled");
    assert!(matches!(
        lead.await.unwrap(),
        Err(Failure::Local("boom", FleetRole::Leader { generation: 1 }))
    ));
    assert_eq!(work.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_leader_hands_over_at_once() {
    let redis = FakeRedis::new();
    let ((a, _), (b, _)) = (process(&redis, config()), process(&redis, config()));
    let work = Work::new();
    let lead = work.run(&a, Ok(1));
    until(|| work.runs() == 1).await;
    let wait = work.run(&b, Ok(2));
    until(|| b.waiting() == 1).await;
    let cancelled = Instant::now();
    lead.abort();
    until(|| work.runs() == 2).await;
    assert!(
        cancelled.elapsed() < Duration::from_millis(1),
        "not at lease expiry"
    );
    work.open();
    assert_eq!(
        wait.await.unwrap().unwrap(),
        (2, FleetRole::Reelected { generation: 2 })
    );
}

#[tokio::test(start_paused = true)]
async fn a_crashed_leader_is_replaced_after_its_lease_by_one_process() {
    let redis = FakeRedis::new();
    let (a, a_conn) = process(&redis, config());
    let waiters: Vec<_> = (0..5).map(|_| process(&redis, config()).0).collect();
    let work = Work::new();
    let lead = work.run(&a, Ok(1));
    until(|| work.runs() == 1).await;
    let waits: Vec<_> = waiters.iter().map(|f| work.run(f, Ok(2))).collect();
    until(|| waiters.iter().all(|f| f.waiting() == 1)).await;
    // The process dies: nothing more reaches Redis from it.
    let crashed = Instant::now();
    a_conn.hang();
    lead.abort();
    until(|| work.runs() == 2).await;
    let took = crashed.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "not before the lease expired: {took:?}"
    );
    assert!(
        took <= Duration::from_secs(3) + Duration::from_millis(1200),
        "{took:?}"
    );
    work.open();
    let mut roles = Vec::new();
    for wait in waits {
        roles.push(wait.await.unwrap().unwrap());
    }
    assert_eq!(work.runs(), 2, "exactly one re-execution");
    assert_eq!(
        roles
            .iter()
            .filter(|(_, o)| *o == FleetRole::Reelected { generation: 2 })
            .count(),
        1
    );
    assert_eq!(
        roles
            .iter()
            .filter(|(_, o)| *o == FleetRole::Waiter { generation: 2 })
            .count(),
        4
    );
    assert!(roles.iter().all(|(v, _)| *v == 2));
}

#[tokio::test(start_paused = true)]
async fn a_late_leader_never_overwrites_a_newer_result() {
    let redis = FakeRedis::new();
    let (a, a_conn) = process(&redis, config());
    let (b, _) = process(&redis, config());
    let (old, new) = (Work::new(), Work::new());
    let late = old.run(&a, Ok(1));
    until(|| old.runs() == 1).await;
    // Partitioned: its lease expires, and b leads a new generation.
    a_conn.down();
    tokio::time::sleep(Duration::from_secs(4)).await;
    new.open();
    assert_eq!(
        new.run(&b, Ok(2)).await.unwrap().unwrap(),
        (2, FleetRole::Leader { generation: 2 })
    );
    a_conn.up();
    tokio::time::sleep(Duration::from_secs(1)).await; // one renewal period
    old.open();
    assert_eq!(
        late.await.unwrap().unwrap(),
        (1, FleetRole::Leader { generation: 1 })
    );
    let (generation, envelope) = redis.result(&keys()).unwrap();
    assert_eq!(generation, 2);
    let sealer = Sealer::new(crate::config::Codec::Json, "t", None);
    assert_eq!(sealer.open(&envelope, "key").unwrap().payload, b"2");
    assert_eq!(a.stats().leases_lost, 1, "its renewal found the lease gone");
}

#[tokio::test(start_paused = true)]
async fn a_redis_restart_never_hands_out_a_generation_twice() {
    let redis = FakeRedis::new();
    let ((a, _), (b, _)) = (process(&redis, config()), process(&redis, config()));
    let work = Work::new();
    let lead = work.run(&a, Ok(1));
    until(|| work.runs() == 1).await;
    redis.flush();
    work.open();
    assert_eq!(
        lead.await.unwrap().unwrap(),
        (1, FleetRole::Leader { generation: 1 })
    );
    // The next flight gets a new generation, and its waiter never takes the
    // previous flight's lingering result for its own.
    let next = Work::new();
    let lead = next.run(&a, Ok(2));
    until(|| next.runs() == 1).await;
    let wait = next.run(&b, Ok(3));
    until(|| b.waiting() == 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // several re-checks
    next.open();
    assert_eq!(
        lead.await.unwrap().unwrap(),
        (2, FleetRole::Leader { generation: 2 })
    );
    assert_eq!(
        wait.await.unwrap().unwrap(),
        (2, FleetRole::Waiter { generation: 2 })
    );
    // A waiter that re-elects after a restart starts above the generation it saw.
    redis.flush();
    let third = Work::new();
    third.open();
    let (_, role) = third.run(&b, Ok(4)).await.unwrap().unwrap();
    assert_eq!(
        role,
        FleetRole::Leader { generation: 1 },
        "a fresh key starts at 1"
    );
}

#[tokio::test(start_paused = true)]
async fn long_work_keeps_its_lease() {
    let redis = FakeRedis::new();
    let ((a, _), (b, _)) = (process(&redis, config()), process(&redis, config()));
    let work = Work::new();
    let lead = work.run(&a, Ok(1));
    until(|| work.runs() == 1).await;
    let wait = work.run(&b, Ok(2));
    until(|| b.waiting() == 1).await;
    tokio::time::sleep(Duration::from_secs(20)).await; // lease: 3 s
    assert!(redis.lock_held(&keys()));
    work.open();
    assert_eq!(
        wait.await.unwrap().unwrap(),
        (1, FleetRole::Waiter { generation: 1 })
    );
    assert!(lead.await.unwrap().is_ok());
    assert_eq!(work.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn renewal_stops_after_max_hold() {
    let redis = FakeRedis::new();
    let (a, _) = process(&redis, config().max_hold(Duration::from_secs(10)));
    let work = Work::new();
    let _lead = work.run(&a, Ok(1));
    until(|| work.runs() == 1).await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(redis.lock_held(&keys()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!redis.lock_held(&keys()), "a wedged leader lets go");
}

#[tokio::test(start_paused = true)]
async fn a_hung_redis_costs_one_deadline_then_the_breaker_opens() {
    let redis = FakeRedis::new();
    let (a, conn) = process(&redis, config());
    conn.hang();
    for _ in 0..3 {
        let started = Instant::now();
        let work = Work::new();
        work.open();
        let (_, role) = work.run(&a, Ok(1)).await.unwrap().unwrap();
        assert_eq!(role, FleetRole::Fallback(FallbackReason::RedisTimeout));
        assert_eq!(started.elapsed(), Duration::from_millis(250));
    }
    let work = Work::new();
    work.open();
    let started = Instant::now();
    let (_, role) = work.run(&a, Ok(1)).await.unwrap().unwrap();
    assert_eq!(role, FleetRole::Fallback(FallbackReason::CircuitOpen));
    assert_eq!(started.elapsed(), Duration::ZERO);
    conn.up();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, role) = work.run(&a, Ok(1)).await.unwrap().unwrap();
    assert_eq!(
        role,
        FleetRole::Leader { generation: 1 },
        "the probe closes it"
    );
    let stats = a.stats();
    assert_eq!(stats.fallbacks(FallbackReason::RedisTimeout), 3);
    assert_eq!(stats.fallbacks(FallbackReason::CircuitOpen), 1);
    assert_eq!(stats.leaders, 1);
}

#[tokio::test(start_paused = true)]
async fn a_join_that_timed_out_after_taking_the_lease_releases_it() {
    let redis = FakeRedis::new();
    let (a, a_conn) = process(&redis, config());
    let (b, _) = process(&redis, config());
    a_conn.apply_then_hang_once();
    let work = Work::new();
    work.open();
    let (_, role) = work.run(&a, Ok(1)).await.unwrap().unwrap();
    assert_eq!(role, FleetRole::Fallback(FallbackReason::RedisTimeout));
    until(|| !redis.lock_held(&keys())).await;
    let started = Instant::now();
    let (_, role) = work.run(&b, Ok(2)).await.unwrap().unwrap();
    assert_eq!(role, FleetRole::Leader { generation: 2 });
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "not after the lease"
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_while_its_join_is_on_its_way_releases_the_lease_at_once() {
    let redis = FakeRedis::new();
    let (a, a_conn) = process(&redis, config());
    let (b, _) = process(&redis, config());
    a_conn.apply_then_hang_once();
    let (dropped, work) = (Work::new(), Work::new());
    let call = dropped.run(&a, Ok(1));
    until(|| redis.lock_held(&keys())).await;
    let wait = work.run(&b, Ok(2));
    until(|| b.waiting() == 1).await;
    let cancelled = Instant::now();
    call.abort(); // a client timeout, before the join's answer
    until(|| work.runs() == 1).await;
    assert_eq!(cancelled.elapsed(), Duration::ZERO, "not at lease expiry");
    work.open();
    assert_eq!(
        wait.await.unwrap().unwrap(),
        (2, FleetRole::Reelected { generation: 2 })
    );
    assert_eq!(dropped.runs(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_runs_locally_at_its_wait_timeout() {
    let redis = FakeRedis::new();
    let (a, _) = process(&redis, config());
    let (b, _) = process(&redis, config().wait_timeout(Duration::from_secs(7)));
    let (stuck, mine) = (Work::new(), Work::new());
    let _lead = stuck.run(&a, Ok(1));
    until(|| stuck.runs() == 1).await;
    mine.open();
    let started = Instant::now();
    let (value, role) = mine.run(&b, Ok(2)).await.unwrap().unwrap();
    assert_eq!(
        (value, role),
        (2, FleetRole::Fallback(FallbackReason::WaitTimeout))
    );
    assert_eq!(started.elapsed(), Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn one_failed_recheck_is_forgiven_two_in_a_row_are_not() {
    let redis = FakeRedis::new();
    let (a, _) = process(&redis, config());
    let (b, b_conn) = process(&redis, config());
    let work = Work::new();
    let lead = work.run(&a, Ok(1));
    until(|| work.runs() == 1).await;
    let wait = work.run(&b, Ok(2));
    until(|| b.waiting() == 1).await;
    b_conn.down();
    b_conn.blip(); // re-check at once: fails
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(b.waiting(), 1, "still waiting");
    b_conn.up();
    work.open();
    assert_eq!(
        wait.await.unwrap().unwrap(),
        (1, FleetRole::Waiter { generation: 1 })
    );
    assert!(lead.await.unwrap().is_ok());

    let again = Work::new();
    let lead = again.run(&a, Ok(3));
    until(|| again.runs() == 1).await;
    let mine = Work::new();
    mine.open();
    let wait = mine.run(&b, Ok(4));
    until(|| b.waiting() == 1).await;
    b_conn.down();
    b_conn.blip(); // fails; the next poll fails too
    let (value, role) = wait.await.unwrap().unwrap();
    assert_eq!(
        (value, role),
        (4, FleetRole::Fallback(FallbackReason::RedisUnavailable))
    );
    again.open();
    assert!(lead.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_disconnect_makes_the_waiter_recheck_at_once() {
    let redis = FakeRedis::new();
    let (a, a_conn) = process(&redis, config());
    let (b, b_conn) = process(
        &redis,
        config().poll(Duration::from_secs(60), Duration::from_secs(60)),
    );
    let work = Work::new();
    let lead = work.run(&a, Ok(1));
    until(|| work.runs() == 1).await;
    let wait = work.run(&b, Ok(2));
    until(|| b.waiting() == 1).await;
    // The leader finishes while b's connection is away: b misses the push...
    b_conn.down();
    work.open();
    assert!(lead.await.unwrap().is_ok());
    drop(a_conn);
    // ...and on reconnecting re-checks at once, finding the stored result.
    b_conn.up();
    let blipped = Instant::now();
    b_conn.blip();
    assert_eq!(
        wait.await.unwrap().unwrap(),
        (1, FleetRole::Waiter { generation: 1 })
    );
    assert_eq!(blipped.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_value_is_reused_for_its_window_from_publication_and_not_after() {
    let redis = FakeRedis::new();
    let window = Duration::from_secs(2);
    let (a, _) = process(&redis, config().reuse_for(window));
    let (b, _) = process(&redis, config().reuse_for(window));
    let (plain, _) = process(&redis, config());
    let work = Work::new();
    work.open();
    assert_eq!(
        work.run(&a, Ok(1)).await.unwrap().unwrap(),
        (1, FleetRole::Leader { generation: 1 })
    );
    // A process without a window of its own does not reuse.
    assert_eq!(
        work.run(&plain, Ok(2)).await.unwrap().unwrap(),
        (2, FleetRole::Leader { generation: 2 })
    );
    let almost = window - Duration::from_millis(1);
    tokio::time::sleep(almost).await;
    assert_eq!(
        work.run(&b, Ok(3)).await.unwrap().unwrap(),
        (
            1,
            FleetRole::Reused {
                generation: 1,
                age: almost
            }
        )
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        work.run(&b, Ok(4)).await.unwrap().unwrap(),
        (4, FleetRole::Leader { generation: 3 })
    );
    assert_eq!(work.runs(), 3);
    assert_eq!((b.stats().reused, b.stats().leaders), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_forgotten_flight_is_not_waited_for_and_keeps_nothing() {
    let redis = FakeRedis::new();
    let window = Duration::from_secs(60);
    let (a, _) = process(&redis, config().reuse_for(window));
    let (b, _) = process(&redis, config().reuse_for(window));
    let old = Work::new();
    let lead = old.run(&a, Ok(1));
    until(|| old.runs() == 1).await;
    b.forget("key").await.unwrap();
    let new = Work::new();
    new.open();
    let started = Instant::now();
    assert_eq!(
        new.run(&b, Ok(2)).await.unwrap().unwrap(),
        (2, FleetRole::Leader { generation: 2 })
    );
    assert_eq!(started.elapsed(), Duration::ZERO, "not after the old lease");
    // The old leader finds its lease taken over at its next renewal (a third of 3 s).
    until(|| a.stats().leases_lost == 1).await;
    assert!(
        started.elapsed() <= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    old.open();
    assert_eq!(
        lead.await.unwrap().unwrap(),
        (1, FleetRole::Leader { generation: 1 })
    );
    // The forgotten flight completed after the new one: the new value is the one kept.
    let (value, role) = new.run(&a, Ok(3)).await.unwrap().unwrap();
    assert_eq!(value, 2);
    assert!(
        matches!(role, FleetRole::Reused { generation: 2, .. }),
        "{role:?}"
    );
}
