//! Through Redis Sentinel, against real processes on loopback started per test (one
//! primary, one replica, three `redis-sentinel`s; `down-after-milliseconds` 1000,
//! `failover-timeout` 3000) and stopped by their pids. Faults are what hosts do to a
//! primary: `SIGKILL`, and `SIGSTOP` past `down-after` then `SIGCONT` after the promotion.
//! Without the binaries the tests skip loudly, and fail under `CI=true`.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use singleflight_redis::{
    Config, FallbackReason, FleetRole, OpenError, ReconnectReason, RedisGroup, Sentinel,
};
use support::{Deployment, Gate, Paired, role, wait_until};

const LEASE: Duration = Duration::from_secs(1);
const OP_TIMEOUT: Duration = Duration::from_millis(200);
const RECONNECT_CAP: Duration = Duration::from_millis(500);

fn config() -> Config {
    Config::new("sentinel")
        .lease_ttl(LEASE)
        .poll(Duration::from_millis(20), Duration::from_millis(200))
        .op_timeout(OP_TIMEOUT)
        .wait_timeout(Duration::from_secs(5))
        .reconnect(Duration::from_millis(50), RECONNECT_CAP)
        .breaker(3, Duration::from_secs(1))
}

fn label(fleet_role: FleetRole) -> String {
    match fleet_role {
        FleetRole::Leader { .. } => "leader".to_owned(),
        FleetRole::Waiter { .. } => "waiter".to_owned(),
        FleetRole::Reelected { .. } => "reelected".to_owned(),
        FleetRole::Fallback(reason) => format!("fallback:{reason:?}"),
        _ => "other".to_owned(),
    }
}

/// One round: every group calls key `k` (each group has its own connection, as a process
/// does). The first group's work waits until every other group has either joined a
/// flight (it waits on the fleet) or run the work itself.
struct Round {
    executions: usize,
    failed: usize,
    fleet_roles: Vec<String>,
    /// When every other group was seen waiting on the fleet.
    joined_at: Option<Instant>,
}

impl Round {
    /// All groups shared one execution across Redis.
    fn coalesced(&self) -> bool {
        self.executions == 1
            && self.failed == 0
            && !self.fleet_roles.iter().any(|o| o.starts_with("fallback"))
    }
}

async fn round(groups: &[&RedisGroup<u64>], round: u64) -> Round {
    let gate = Gate::new();
    let ran: Vec<Arc<AtomicBool>> = groups.iter().map(|_| Arc::default()).collect();
    let runs = Arc::new(AtomicUsize::new(0));
    let call = |at: usize| {
        let (group, gate) = (groups[at].clone(), gate.clone());
        let (ran, runs) = (Arc::clone(&ran[at]), Arc::clone(&runs));
        tokio::spawn(async move {
            group
                .call("k", || async move {
                    ran.store(true, Ordering::SeqCst);
                    runs.fetch_add(1, Ordering::SeqCst);
                    gate.wait().await;
                    round
                })
                .with_role()
                .await
                .paired()
        })
    };
    let first = call(0);
    wait_until("the first group runs the work", || {
        ran[0].load(Ordering::SeqCst) || first.is_finished()
    })
    .await;
    let mut tasks = vec![first];
    tasks.extend((1..groups.len()).map(call));
    let mut joined_at = None;
    wait_until("every other group waits or runs the work", || {
        let all_wait = (1..groups.len()).all(|at| groups[at].fleet_waiting() == 1);
        if all_wait && joined_at.is_none() {
            joined_at = Some(Instant::now());
        }
        (1..groups.len())
            .all(|at| groups[at].fleet_waiting() == 1 || ran[at].load(Ordering::SeqCst))
            || tasks
                .iter()
                .skip(1)
                .all(tokio::task::JoinHandle::is_finished)
    })
    .await;
    gate.open();
    let mut failed = 0;
    let mut fleet_roles = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok((value, settled)) => {
                failed += usize::from(value != round);
                fleet_roles.push(label(settled));
            }
            Err(e) => {
                failed += 1;
                fleet_roles.push(format!("error: {e}"));
            }
        }
    }
    Round {
        executions: runs.load(Ordering::SeqCst),
        failed,
        fleet_roles,
        joined_at,
    }
}

/// Rounds, executions and failed calls of one phase.
#[derive(Default, Debug)]
struct Phase {
    rounds: usize,
    executions: usize,
    failed: usize,
    coalesced: usize,
    /// The most executions in one round.
    most: usize,
}

impl Phase {
    fn add(&mut self, round: &Round) {
        self.rounds += 1;
        self.executions += round.executions;
        self.failed += round.failed;
        self.coalesced += usize::from(round.coalesced());
        self.most = self.most.max(round.executions);
    }
}

fn table(title: &str, phases: &[(&str, &Phase)]) {
    println!("{title}");
    println!(
        "| phase | rounds | executions | most in one round | failed calls | coalesced rounds |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, phase) in phases {
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            phase.rounds, phase.executions, phase.most, phase.failed, phase.coalesced
        );
    }
}

/// Rounds run back to back (not for ordering: each round waits on states; the pause
/// only keeps a round count meaningful while calls fall back at once).
async fn pace() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// Records the moment the sentinels name `port` as the primary and it says so itself
/// (`ROLE`), polling every 20 ms.
fn watch_promotion(deployment: &Deployment, port: u16) -> Arc<OnceLock<Instant>> {
    let promoted = Arc::new(OnceLock::new());
    let sentinel_ports = deployment.sentinel_ports.clone();
    tokio::spawn({
        let promoted = Arc::clone(&promoted);
        async move {
            loop {
                let mut named = None;
                for &sentinel in &sentinel_ports {
                    let answer: Option<Option<(String, u16)>> = support::ask(
                        sentinel,
                        &["SENTINEL", "get-master-addr-by-name", Deployment::SERVICE],
                    )
                    .await;
                    if let Some(Some((_, primary))) = answer {
                        named = Some(primary);
                        break;
                    }
                }
                if named == Some(port) && role(port).await.as_deref() == Some("master") {
                    let _ = promoted.set(Instant::now());
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    promoted
}

fn open(deployment: &Deployment) -> RedisGroup<u64> {
    let sentinel = Sentinel::new(Deployment::SERVICE, deployment.addresses());
    RedisGroup::open_sentinel(&sentinel, config()).expect("group")
}

/// `SIGKILL` of the primary: the sentinels promote the replica. No call fails at any
/// point, and the two groups share one execution again within one lease (plus the
/// reconnect cap and three command deadlines) of the promotion; `fleet_stats` names the
/// promoted server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_over_without_a_failed_call_and_coalescing_returns() {
    let Some(mut deployment) = Deployment::start(1000, 3000).await else {
        return;
    };
    let (old, new) = (deployment.primary.port, deployment.replica.port);
    let (a, b) = (open(&deployment), open(&deployment));
    let mut n = 0;
    let mut before = Phase::default();
    for _ in 0..3 {
        n += 1;
        let r = round(&[&a, &b], n).await;
        before.add(&r);
        assert!(r.coalesced(), "healthy: {:?}", r.fleet_roles);
    }
    assert_eq!(a.fleet_stats().primary, Some(format!("127.0.0.1:{old}")));

    let promoted = watch_promotion(&deployment, new);
    deployment.primary.kill();
    let killed = Instant::now();
    let mut during = Phase::default();
    while promoted.get().is_none() {
        n += 1;
        during.add(&round(&[&a, &b], n).await);
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no promotion 30 s after the kill"
        );
        pace().await;
    }
    let promoted_at = *promoted.get().expect("promoted");
    let failover = promoted_at - killed;

    let mut after = Phase::default();
    let bound = LEASE + RECONNECT_CAP + 3 * OP_TIMEOUT;
    let back = loop {
        n += 1;
        let r = round(&[&a, &b], n).await;
        after.add(&r);
        if r.coalesced() {
            break r.joined_at.expect("joined") - promoted_at;
        }
        assert!(
            promoted_at.elapsed() < bound * 4,
            "not coalescing {:?} after the promotion: {:?}",
            promoted_at.elapsed(),
            r.fleet_roles
        );
        pace().await;
    };
    let mut steady = Phase::default();
    for _ in 0..3 {
        n += 1;
        steady.add(&round(&[&a, &b], n).await);
    }
    let stats = [a.fleet_stats(), b.fleet_stats()];
    table(
        &format!(
            "SIGKILL of the primary, two groups through Sentinel (down-after 1000 ms, failover-timeout 3000 ms, lease {LEASE:?}, op_timeout {OP_TIMEOUT:?}, reconnect cap {RECONNECT_CAP:?}):"
        ),
        &[
            ("before", &before),
            ("killed, until the promotion", &during),
            ("after the promotion, until coalesced", &after),
            ("then", &steady),
        ],
    );
    println!(
        "failover (kill to promotion) {} ms; coalescing back {} ms after the promotion (bound {} ms); primaries: {:?}; replaced per reason: {:?}",
        failover.as_millis(),
        back.as_millis(),
        bound.as_millis(),
        stats.each_ref().map(|s| s.primary.clone()),
        stats.each_ref().map(|s| s.reconnects)
    );
    let failed = before.failed + during.failed + after.failed + steady.failed;
    assert_eq!(failed, 0, "no call fails");
    assert!(back <= bound, "{back:?} > {bound:?}");
    assert_eq!(steady.coalesced, 3, "{steady:?}");
    for s in &stats {
        assert_eq!(s.primary, Some(format!("127.0.0.1:{new}")), "{s:?}");
        assert_eq!(s.primary_changes, 1, "{s:?}");
    }
}

/// `SIGSTOP` of the primary for longer than `down-after`: the sentinels promote the
/// replica; `SIGCONT` after the promotion brings the old primary back, believing itself
/// the primary until the sentinels demote it. A third group, idle while the primary was
/// stopped, still holds a connection to it: it follows the sentinels' `+switch-master`
/// (or a `READONLY`, or the demotion's disconnect) to the new primary. No call fails, and
/// no round runs the work more than twice (one extra execution per key at most).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_primary_is_replaced_and_on_its_return_demoted_without_a_failed_call() {
    let Some(deployment) = Deployment::start(1000, 3000).await else {
        return;
    };
    let (old, new) = (deployment.primary.port, deployment.replica.port);
    let (a, b, idle) = (open(&deployment), open(&deployment), open(&deployment));
    let mut n = 0;
    let mut before = Phase::default();
    for _ in 0..3 {
        n += 1;
        let r = round(&[&a, &b, &idle], n).await;
        before.add(&r);
        assert!(r.coalesced(), "healthy: {:?}", r.fleet_roles);
    }

    let promoted = watch_promotion(&deployment, new);
    deployment.primary.signal("STOP");
    let stopped = Instant::now();
    let mut during = Phase::default();
    while promoted.get().is_none() {
        n += 1;
        during.add(&round(&[&a, &b], n).await);
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "no promotion 30 s after the stop"
        );
        pace().await;
    }
    let promoted_at = *promoted.get().expect("promoted");
    let failover = promoted_at - stopped;
    let mut recovered = Phase::default();
    let bound = LEASE + RECONNECT_CAP + 3 * OP_TIMEOUT;
    let back = loop {
        n += 1;
        let r = round(&[&a, &b], n).await;
        recovered.add(&r);
        if r.coalesced() {
            break r.joined_at.expect("joined") - promoted_at;
        }
        assert!(
            promoted_at.elapsed() < bound * 4,
            "not coalescing {:?} after the promotion: {:?}",
            promoted_at.elapsed(),
            r.fleet_roles
        );
        pace().await;
    };

    deployment.primary.signal("CONT");
    let resumed = Instant::now();
    // Until the sentinels demote the old primary, it takes writes from whoever is still
    // connected to it: the idle group was, until the sentinels announced the new one.
    let mut overlap = Phase::default();
    let demoted = loop {
        n += 1;
        let r = round(&[&a, &b, &idle], n).await;
        overlap.add(&r);
        if role(old).await.as_deref() == Some("slave") {
            break resumed.elapsed();
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(30),
            "the old primary was not demoted within 30 s of its return"
        );
        pace().await;
    };
    let mut after = Phase::default();
    for _ in 0..3 {
        n += 1;
        after.add(&round(&[&a, &b, &idle], n).await);
    }
    let stats = [a.fleet_stats(), b.fleet_stats(), idle.fleet_stats()];
    table(
        &format!(
            "SIGSTOP of the primary until the promotion, then SIGCONT (down-after 1000 ms, failover-timeout 3000 ms, lease {LEASE:?}, op_timeout {OP_TIMEOUT:?}, reconnect cap {RECONNECT_CAP:?}); rounds of groups a and b, and of a third group too before the stop and after the return:"
        ),
        &[
            ("before", &before),
            ("stopped, until the promotion", &during),
            ("after the promotion, until coalesced", &recovered),
            ("old primary back (SIGCONT), until demoted", &overlap),
            ("after the demotion", &after),
        ],
    );
    println!(
        "failover (stop to promotion) {} ms; coalescing back {} ms after the promotion (bound {} ms); old primary demoted {} ms after SIGCONT; primaries: {:?}; replaced per reason: {:?}",
        failover.as_millis(),
        back.as_millis(),
        bound.as_millis(),
        demoted.as_millis(),
        stats.each_ref().map(|s| s.primary.clone()),
        stats.each_ref().map(|s| s.reconnects)
    );
    let failed = before.failed + during.failed + recovered.failed + overlap.failed + after.failed;
    assert_eq!(failed, 0, "no call fails");
    assert!(
        overlap.most <= 2 && after.most <= 2,
        "at most one extra execution per key: {overlap:?} {after:?}"
    );
    assert_eq!(after.coalesced, 3, "{after:?}");
    assert!(back <= bound, "{back:?} > {bound:?}");
    for s in &stats {
        assert_eq!(s.primary, Some(format!("127.0.0.1:{new}")), "{s:?}");
    }
    // The idle group left the old primary although it never saw a command time out.
    assert!(
        stats[2].reconnects(ReconnectReason::Failover)
            + stats[2].reconnects(ReconnectReason::ReadOnly)
            + stats[2].reconnects(ReconnectReason::Closed)
            >= 1,
        "{:?}",
        stats[2]
    );
}

/// Settings that cannot work are refused when the group opens, naming the setting; a
/// service no sentinel knows, or no sentinel at all, makes calls run locally at once
/// (bounded by the command deadline per sentinel), never hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sentinel_settings_are_refused_and_an_unknown_service_never_hangs() {
    for (sentinel, setting) in [
        (
            Sentinel::new("m", Vec::<String>::new()),
            "sentinel addresses",
        ),
        (Sentinel::new("m", ["127.0.0.1"]), "sentinel addresses"),
        (Sentinel::new("", ["127.0.0.1:26379"]), "sentinel service"),
    ] {
        match RedisGroup::<u64>::open_sentinel(&sentinel, config()) {
            Err(OpenError::Config(e)) => assert_eq!(e.setting(), setting, "{e}"),
            other => panic!("{setting}: {:?}", other.map(|_| ())),
        }
    }
    let Some(deployment) = Deployment::start(1000, 3000).await else {
        return;
    };
    let nobody = support::free_port();
    for (service, addresses) in [
        ("not-monitored", deployment.addresses()),
        (Deployment::SERVICE, vec![format!("127.0.0.1:{nobody}")]),
    ] {
        let group = RedisGroup::<u64>::open_sentinel(&Sentinel::new(service, addresses), config())
            .expect("group");
        let started = Instant::now();
        let (value, fleet_role) = group
            .call("k", || async { 7 })
            .with_role()
            .await
            .paired()
            .expect("value");
        assert_eq!(
            (value, fleet_role),
            (7, FleetRole::Fallback(FallbackReason::RedisUnavailable)),
            "{service}"
        );
        assert!(
            started.elapsed() < OP_TIMEOUT * 4,
            "{service}: {:?}",
            started.elapsed()
        );
    }
}

/// A server demoted to a replica under a connection (`REPLICAOF`, as an operator or a
/// sentinel does it; clients stay connected) answers writes with `READONLY`: the
/// connection is replaced for that reason, calls run locally meanwhile without failing,
/// and once the server is a primary again the groups coalesce on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_answer_replaces_the_connection() {
    let Some(server) = support::Server::start() else {
        return;
    };
    let Some(other) = support::Server::start() else {
        return;
    };
    let (a, b) = (
        RedisGroup::<u64>::open(&server.url(), config()).expect("group"),
        RedisGroup::<u64>::open(&server.url(), config()).expect("group"),
    );
    assert!(round(&[&a, &b], 1).await.coalesced());
    let port = other.port.to_string();
    let _: () = support::ask(server.port, &["REPLICAOF", "127.0.0.1", &port])
        .await
        .expect("REPLICAOF");
    let r = round(&[&a, &b], 2).await;
    assert_eq!((r.failed, r.executions), (0, 2), "{:?}", r.fleet_roles);
    for stats in [a.fleet_stats(), b.fleet_stats()] {
        assert!(
            stats.reconnects(ReconnectReason::ReadOnly) >= 1,
            "{stats:?}"
        );
        assert_eq!(stats.primary, None, "a group on a URL names no primary");
    }
    let _: () = support::ask(server.port, &["REPLICAOF", "NO", "ONE"])
        .await
        .expect("REPLICAOF NO ONE");
    let mut n = 2;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        n += 1;
        let r = round(&[&a, &b], n).await;
        assert_eq!(r.failed, 0, "{:?}", r.fleet_roles);
        if r.coalesced() {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", r.fleet_roles);
        pace().await;
    }
}
