//! Against a real Redis Cluster on loopback, started here: three primaries and three
//! replicas (`redis-server --cluster-enabled yes`, joined by `redis-cli --cluster
//! create`). A fleet of worker processes over keys in every shard; a slot migrated while
//! waiters wait on it; a primary killed while a leader's lease lives on it.
//!
//! Run with `--nocapture` for the figures.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use singleflight_redis::{
    Cluster, Config, Error, FallbackReason, FleetRole, RedisGroup, SubscriptionLoss,
};
use support::{ClusterDeployment, Gate, Paired, Worker, WorkerSpec, ask, temp_log, wait_until};
use tokio::sync::watch;

/// Keys per round in the fleet test.
const KEYS: usize = 64;

fn config(namespace: &str) -> Config {
    Config::new(namespace)
        .lease_ttl(Duration::from_secs(1))
        .poll(Duration::from_millis(20), Duration::from_millis(200))
        .op_timeout(Duration::from_millis(200))
        .wait_timeout(Duration::from_secs(10))
        .breaker(3, Duration::from_millis(300))
        .reconnect(Duration::from_millis(20), Duration::from_millis(200))
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

/// The worker process: `SF_ROUNDS` rounds of `SF_CALLERS` callers of each of [`KEYS`]
/// keys (`<SF_KEY>-<n>`), on the cluster whose seeds are `SF_URL` (comma-separated).
/// Round `r` starts at the `r`-th `next` line and its work waits for the `r+1`-th `go`.
/// Prints `SF ready <keys led>`, then `SF result <fleet_role>=<count>,...
/// failed=<failed calls>`, then `SF done`, per round. A no-op unless `SF_WORKER` is set.
#[test]
fn worker_process_entry() {
    if std::env::var_os("SF_WORKER").is_none() {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(worker_main());
    std::process::exit(0);
}

async fn worker_main() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} unset"));
    let callers: usize = var("SF_CALLERS").parse().expect("callers");
    let rounds: usize = var("SF_ROUNDS").parse().expect("rounds");
    let lease = Duration::from_millis(var("SF_LEASE_MS").parse().expect("lease"));
    let (prefix, log) = (var("SF_KEY"), var("SF_LOG"));
    let seeds: Vec<String> = var("SF_URL").split(',').map(str::to_owned).collect();
    let group = RedisGroup::<String, String>::open_cluster(
        &Cluster::new(seeds),
        // Eight processes of 1,600 callers beside six servers on a shared machine: a
        // generous deadline, so a starved scheduler is not taken for a sick Redis.
        config(&var("SF_NS"))
            .lease_ttl(lease)
            .op_timeout(Duration::from_secs(1)),
    )
    .expect("group");

    let (go_tx, go_rx) = watch::channel(0usize);
    let (next_tx, mut next_rx) = watch::channel(0usize);
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match line.as_str() {
                "go" => go_tx.send_modify(|n| *n += 1),
                "next" => next_tx.send_modify(|n| *n += 1),
                _ => {}
            }
        }
    });

    for round in 0..rounds {
        next_rx.wait_for(|&n| n >= round).await.expect("next");
        let led = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for n in 0..KEYS {
            let key = format!("{prefix}-{n}");
            for _ in 0..callers {
                let (group, key, log) = (group.clone(), key.clone(), log.clone());
                let (led, mut go) = (Arc::clone(&led), go_rx.clone());
                tasks.push(tokio::spawn(async move {
                    let work_key = key.clone();
                    group
                        .try_call(&key, || async move {
                            use std::io::Write;
                            let mut file = std::fs::OpenOptions::new()
                                .create(true)
                                .append(true)
                                .open(&log)
                                .expect("log");
                            // One write per line: lines from other processes never split it.
                            let line = format!("{round} {work_key} {}\n", std::process::id());
                            file.write_all(line.as_bytes()).expect("log");
                            led.fetch_add(1, Ordering::SeqCst);
                            go.wait_for(|&n| n > round).await.expect("go");
                            Ok(format!("value-{round}-{work_key}"))
                        })
                        .with_role()
                        .await
                        .paired()
                }));
            }
        }
        let keys: Vec<String> = (0..KEYS).map(|n| format!("{prefix}-{n}")).collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let joined = keys.iter().all(|k| group.waiters(k) == callers - 1);
            if joined && led.load(Ordering::SeqCst) + group.fleet_waiting() == KEYS {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: callers never joined: led {}, fleet_waiting {}, stats {:?}",
                led.load(Ordering::SeqCst),
                group.fleet_waiting(),
                group.fleet_stats()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        println!("SF ready {}", led.load(Ordering::SeqCst));
        let mut fleet_roles: HashMap<String, usize> = HashMap::new();
        let mut failed = 0;
        for (at, task) in tasks.into_iter().enumerate() {
            match task.await.expect("caller") {
                Ok((value, fleet_role)) => {
                    assert_eq!(value, format!("value-{round}-{prefix}-{}", at / callers));
                    *fleet_roles.entry(label(fleet_role)).or_default() += 1;
                }
                Err(Error::Remote(_) | Error::Failed(_)) | Err(_) => failed += 1,
            }
        }
        let mut summary: Vec<String> = fleet_roles
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        summary.sort();
        println!("SF result {} failed={failed}", summary.join(","));
        println!("SF done");
    }
}

/// Executions of `key` in round `round` (log lines `"<round> <key> <pid>"`).
fn executions_of(log: &std::path::Path, round: usize, key: &str) -> usize {
    let prefix = format!("{round} {key} ");
    std::fs::read_to_string(log).map_or(0, |s| s.lines().filter(|l| l.starts_with(&prefix)).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_over_every_shard_runs_each_key_once_per_round() {
    let Some(cluster) = ClusterDeployment::start(3, 1, 2000).await else {
        return;
    };
    let started = Instant::now();
    let (processes, callers, rounds) = (8, 25, 2);
    let spec = WorkerSpec {
        url: cluster.seeds().join(","),
        namespace: "test:cluster-fleet".to_owned(),
        key: "hot".to_owned(),
        callers,
        work_ms: 0,
        behaviour: "ok",
        lease_ms: 2000,
        log: temp_log("cluster-fleet"),
        rounds,
        breaker_ms: 300,
    };
    // The primaries holding the round's leases (the names carry a hash of the key).
    let mut owners = std::collections::HashSet::new();
    let mut workers: Vec<Worker> = (0..processes).map(|_| Worker::spawn(&spec)).collect();
    println!(
        "| round | keys | executions fleet-wide | keys run more than once | failed calls | fleet_roles |"
    );
    println!("|---|---|---|---|---|---|");
    for round in 0..rounds {
        if round > 0 {
            for worker in &mut workers {
                worker.next().await;
            }
        }
        let mut led = 0;
        for worker in &mut workers {
            let line = worker.expect("ready").await;
            led += line["ready ".len()..].parse::<usize>().expect("count");
        }
        if round == 0 {
            for server in &cluster.servers {
                let names: Option<Vec<String>> =
                    ask(server.port, &["KEYS", "sf:{test:cluster-fleet:*}:lock"]).await;
                if names.is_some_and(|n| !n.is_empty())
                    && support::role(server.port).await.as_deref() == Some("master")
                {
                    owners.insert(server.port);
                }
            }
        }
        for worker in &mut workers {
            worker.go().await;
        }
        let mut fleet_roles: HashMap<String, usize> = HashMap::new();
        let mut failed = 0;
        for worker in &mut workers {
            let line = worker.expect("result").await;
            let (counts, fail) = line["result ".len()..]
                .split_once(" failed=")
                .expect("summary");
            failed += fail.parse::<usize>().expect("failed");
            for pair in counts.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').expect("pair");
                *fleet_roles.entry(k.to_owned()).or_default() += v.parse::<usize>().expect("n");
            }
            worker.expect("done").await;
        }
        let per_key: Vec<usize> = (0..KEYS)
            .map(|n| executions_of(&spec.log, round, &format!("hot-{n}")))
            .collect();
        let total: usize = per_key.iter().sum();
        let twice = per_key.iter().filter(|&&e| e > 1).count();
        let mut summary: Vec<String> = fleet_roles
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        summary.sort();
        println!(
            "| {round} | {KEYS} | {total} | {twice} | {failed} | {} |",
            summary.join(", ")
        );
        assert_eq!(failed, 0);
        assert_eq!(led, KEYS, "one leader per key fleet-wide");
        assert!(per_key.iter().all(|&e| e == 1), "{per_key:?}");
    }
    println!(
        "fleet: {processes} processes x {callers} callers x {KEYS} keys, {rounds} rounds; leases on {} of 3 primaries; {:.1} s",
        owners.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(owners.len(), 3, "the keys' leases span every primary");
    for worker in workers {
        worker.wait().await;
    }
}

/// Finds the flight's lease key (`sf:{<namespace>:<hash>}:lock`) on whichever primary
/// holds it: its name, and the port of the node holding it.
async fn lease_key(cluster: &ClusterDeployment, namespace: &str) -> (String, u16) {
    let pattern = format!("sf:{{{namespace}:*}}:lock");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for server in &cluster.servers {
            let names: Option<Vec<String>> = ask(server.port, &["KEYS", &pattern]).await;
            if let Some(name) = names.and_then(|n| n.into_iter().next()) {
                let role = support::role(server.port).await;
                if role.as_deref() == Some("master") {
                    return (name, server.port);
                }
            }
        }
        assert!(Instant::now() < deadline, "no lease key found");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A leader in group `a`, waiters in `waiters`, all on `key`: returns the leader's
/// task, the waiters' tasks (each also returns how long after `released` it got its
/// value), the executions counter and the gate.
type Called = Result<(u64, FleetRole), Error<std::convert::Infallible>>;

struct Flight {
    runs: Arc<AtomicUsize>,
    gate: Gate,
    leader: tokio::task::JoinHandle<Called>,
    /// Each waiter's result and when it had it.
    waiters: Vec<tokio::task::JoinHandle<(Called, Instant)>>,
}

async fn flight(leader: &RedisGroup<u64>, waiters: &[RedisGroup<u64>], key: &str) -> Flight {
    let (gate, runs) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    let work = |runs: Arc<AtomicUsize>, gate: Gate| async move {
        runs.fetch_add(1, Ordering::SeqCst);
        gate.wait().await;
        7
    };
    let lead = tokio::spawn({
        let (group, key, runs, gate) = (
            leader.clone(),
            key.to_owned(),
            Arc::clone(&runs),
            gate.clone(),
        );
        async move {
            group
                .call(&key, || work(runs, gate))
                .with_role()
                .await
                .paired()
        }
    });
    wait_until("the leader runs", || runs.load(Ordering::SeqCst) == 1).await;
    let mut tasks = Vec::new();
    for group in waiters {
        let (group, key, runs, gate) = (
            group.clone(),
            key.to_owned(),
            Arc::clone(&runs),
            gate.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let result = group
                .call(&key, || work(runs, gate))
                .with_role()
                .await
                .paired();
            (result, Instant::now())
        }));
    }
    for group in waiters {
        wait_until("the waiter waits", || group.fleet_waiting() == 1).await;
    }
    Flight {
        runs,
        gate,
        leader: lead,
        waiters: tasks,
    }
}

/// The node id of the server on `port`.
async fn node_id(port: u16) -> String {
    ask::<String>(port, &["CLUSTER", "MYID"])
        .await
        .expect("CLUSTER MYID")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrated_under_waiters_is_followed_to_its_new_node() {
    let Some(cluster) = ClusterDeployment::start(3, 1, 2000).await else {
        return;
    };
    let namespace = "test:cluster-migrate";
    let open = || {
        RedisGroup::<u64>::open_cluster(&Cluster::new(cluster.seeds()), config(namespace))
            .expect("group")
    };
    let leader = open();
    let waiters: Vec<RedisGroup<u64>> = (0..4).map(|_| open()).collect();
    let flight = flight(&leader, &waiters, "k").await;
    let (lock, source) = lease_key(&cluster, namespace).await;
    let slot = cluster.slot(&lock).await;
    let nodes = cluster.nodes(source).await.expect("nodes");
    let target = nodes
        .iter()
        .find(|n| n.primary && n.port != source)
        .expect("another primary")
        .port;
    let (source_id, target_id) = (node_id(source).await, node_id(target).await);
    let slot_text = slot.to_string();
    // The migration, as `redis-cli --cluster reshard` does it.
    let ok = |reply: Option<String>, what: &str| assert_eq!(reply.as_deref(), Some("OK"), "{what}");
    ok(
        ask(
            target,
            &["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &source_id],
        )
        .await,
        "IMPORTING",
    );
    ok(
        ask(
            source,
            &["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &target_id],
        )
        .await,
        "MIGRATING",
    );
    let keys: Vec<String> = ask(source, &["CLUSTER", "GETKEYSINSLOT", &slot_text, "100"])
        .await
        .expect("keys in slot");
    let port = target.to_string();
    let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
    migrate.extend(keys.iter().map(String::as_str));
    ok(ask(source, &migrate).await, "MIGRATE");
    let moved_at = Instant::now();
    ok(
        ask(
            target,
            &["CLUSTER", "SETSLOT", &slot_text, "NODE", &target_id],
        )
        .await,
        "SETSLOT NODE (target)",
    );
    ok(
        ask(
            source,
            &["CLUSTER", "SETSLOT", &slot_text, "NODE", &target_id],
        )
        .await,
        "SETSLOT NODE (source)",
    );
    // The waiters were subscribed on the source, which dropped their subscriptions
    // (SUNSUBSCRIBE) when the slot left it: they subscribe again on the target.
    let channel = lock.trim_end_matches(":lock").to_owned() + ":done";
    let deadline = Instant::now() + Duration::from_secs(5);
    let resubscribed = loop {
        let counts: Option<Vec<redis::Value>> =
            ask(target, &["PUBSUB", "SHARDNUMSUB", &channel]).await;
        let n = match counts.as_deref() {
            Some([_, redis::Value::Int(n)]) => *n,
            _ => 0,
        };
        if n == i64::try_from(waiters.len()).expect("count") {
            break moved_at.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "waiters did not subscribe on the new node: {n}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let released = Instant::now();
    flight.gate.open();
    let mut failed = 0;
    let mut slowest = Duration::ZERO;
    let mut fleet_roles = Vec::new();
    for task in flight.waiters {
        let (result, at) = task.await.expect("waiter");
        slowest = slowest.max(at.saturating_duration_since(released));
        match result {
            Ok((value, fleet_role)) => {
                assert_eq!(value, 7);
                fleet_roles.push(label(fleet_role));
            }
            Err(_) => failed += 1,
        }
    }
    assert!(flight.leader.await.expect("leader").is_ok());
    let executions = flight.runs.load(Ordering::SeqCst);
    println!(
        "| slot migration (slot {slot}, {source} -> {target}) | executions | failed calls | waiters subscribed again on the new node after | slowest waiter after release |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {} waiters | {executions} | {failed} | {} ms | {} ms |",
        waiters.len(),
        resubscribed.as_millis(),
        slowest.as_millis()
    );
    println!("waiter fleet_roles: {fleet_roles:?}");
    // Each waiter's process counted the subscription it lost (once, whichever sign of
    // the move came first), and names the primaries of the map it reads.
    for waiter in &waiters {
        let stats = waiter.fleet_stats();
        println!("lost subscriptions: {:?}", stats.lost_subscriptions);
        assert_eq!(stats.total_lost_subscriptions(), 1, "{stats:?}");
        assert!(
            stats.lost_subscriptions(SubscriptionLoss::Resubscribe) == 0,
            "{stats:?}"
        );
    }
    assert_eq!(failed, 0);
    assert!(executions <= 2, "{executions}");
    assert!(
        slowest < Duration::from_millis(200 + 200),
        "a waiter waited past its poll cap: {slowest:?}"
    );
    // A new flight on the migrated slot coalesces on its new node.
    let again = flight_after(&leader, &waiters, "k").await;
    println!("after the migration: a new flight runs {again} time(s)");
    assert_eq!(again, 1);
    let mut primaries: Vec<String> = nodes
        .iter()
        .filter(|n| n.primary)
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    primaries.sort();
    wait_until("the map names every primary", || {
        leader.fleet_stats().primaries == primaries
    })
    .await;
}

/// The number in `errorstat_<code>:count=<n>` of the server's `INFO errorstats`.
async fn errors(port: u16, code: &str) -> u64 {
    let info: String = ask(port, &["INFO", "errorstats"]).await.unwrap_or_default();
    let prefix = format!("errorstat_{code}:count=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|n| n.trim().split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// `PTTL key` on a node importing the key's slot (after `ASKING`, as a redirected client).
async fn pttl_asking(port: u16, key: &str) -> Option<i64> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let (ttl,): (i64,) = redis::pipe()
        .cmd("ASKING")
        .ignore()
        .cmd("PTTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .ok()?;
    Some(ttl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_mid_migration_answers_tryagain_and_ask_and_no_call_fails() {
    let Some(cluster) = ClusterDeployment::start(3, 0, 2000).await else {
        return;
    };
    let namespace = "test:cluster-ask";
    let open = || {
        RedisGroup::<u64>::open_cluster(&Cluster::new(cluster.seeds()), config(namespace))
            .expect("group")
    };
    let (a, b) = (open(), open());
    // A flight in progress: its lease and generation counter are on the slot's node.
    let flight = flight(&a, &[], "k").await;
    let (lock, source) = lease_key(&cluster, namespace).await;
    let slot = cluster.slot(&lock).await;
    let target = cluster
        .nodes(source)
        .await
        .expect("nodes")
        .into_iter()
        .find(|n| n.primary && n.port != source)
        .expect("another primary")
        .port;
    let (source_id, target_id) = (node_id(source).await, node_id(target).await);
    let slot_text = slot.to_string();
    let ok = |reply: Option<String>, what: &str| assert_eq!(reply.as_deref(), Some("OK"), "{what}");
    let setslot = |port: u16, state: &'static str, id: String| {
        let slot_text = slot_text.clone();
        async move { ask::<String>(port, &["CLUSTER", "SETSLOT", &slot_text, state, &id]).await }
    };
    ok(
        setslot(target, "IMPORTING", source_id.clone()).await,
        "IMPORTING",
    );
    ok(
        setslot(source, "MIGRATING", target_id.clone()).await,
        "MIGRATING",
    );

    // TRYAGAIN: the source has some of the keys a join names (the lease, the counter) and
    // not the others. The join is sent again, paced, within its deadline, then the call
    // runs its work locally: no error, no hang.
    let before = errors(source, "TRYAGAIN").await;
    let started = Instant::now();
    let (value, role) = b
        .call("k", || async { 2 })
        .with_role()
        .await
        .paired()
        .expect("a value");
    let took = started.elapsed();
    let tries = errors(source, "TRYAGAIN").await - before;
    println!("TRYAGAIN: {tries} tries in {took:?}, then {role:?}");
    assert_eq!(
        (value, role),
        (2, FleetRole::Fallback(FallbackReason::RedisUnavailable))
    );
    assert!(tries >= 2, "sent again after TRYAGAIN: {tries}");
    assert!(
        took <= Duration::from_millis(200 + 100),
        "within the deadline: {took:?}"
    );

    // ASK: every key of the slot moves to the target, the slot still the source's. The
    // leader's renewals (one key: its lease) follow ASK to the target (ASKING, then the
    // script), so the lease outlives its TTL (1 s) there.
    let keys: Vec<String> = ask(source, &["CLUSTER", "GETKEYSINSLOT", &slot_text, "100"])
        .await
        .expect("keys in slot");
    assert!(keys.contains(&lock), "{keys:?}");
    let port = target.to_string();
    let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
    migrate.extend(keys.iter().map(String::as_str));
    let asked_before = errors(source, "ASK").await;
    ok(ask(source, &migrate).await, "MIGRATE");
    let migrated = Instant::now();
    while migrated.elapsed() < Duration::from_millis(1500) {
        let ttl = pttl_asking(target, &lock).await;
        assert!(
            ttl.is_some_and(|ms| ms > 0),
            "the lease expired on the target after {:?}: {ttl:?}",
            migrated.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let asked = errors(source, "ASK").await - asked_before;
    println!("ASK: {asked} renewals redirected in 1.5 s");
    assert!(asked >= 2, "renewals followed ASK: {asked}");
    assert_eq!(a.fleet_stats().leases_lost, 0);

    // The migration ends; the leader's completion follows MOVED to the target.
    ok(
        setslot(target, "NODE", target_id.clone()).await,
        "NODE (target)",
    );
    ok(setslot(source, "NODE", target_id).await, "NODE (source)");
    flight.gate.open();
    assert_eq!(flight.leader.await.expect("leader").expect("value").0, 7);
    assert_eq!(flight.runs.load(Ordering::SeqCst), 1);
    let ttl = pttl_asking(target, &lock).await;
    assert_eq!(ttl, Some(-2), "the lease was released on the target");
    assert_eq!(flight_after(&a, std::slice::from_ref(&b), "k").await, 1);
}

/// A new flight of `key`: the executions.
async fn flight_after(leader: &RedisGroup<u64>, waiters: &[RedisGroup<u64>], key: &str) -> usize {
    let flight = flight(leader, waiters, key).await;
    flight.gate.open();
    for task in flight.waiters {
        let (result, _) = task.await.expect("waiter");
        assert!(result.is_ok());
    }
    assert!(flight.leader.await.expect("leader").is_ok());
    flight.runs.load(Ordering::SeqCst)
}

/// One round of `key` in every group at once, the work held until every group runs it or
/// waits on the fleet: (executions, failed calls, fleet_roles).
struct Round {
    executions: usize,
    failed: usize,
    fleet_roles: Vec<String>,
}

impl Round {
    fn coalesced(&self) -> bool {
        self.executions == 1 && self.failed == 0
    }
}

/// Starts a round; returns once every group runs the work or waits on the fleet, with
/// what ends it.
async fn start_round(
    groups: &[RedisGroup<u64>],
    key: &str,
) -> (Gate, Arc<AtomicUsize>, Vec<tokio::task::JoinHandle<Called>>) {
    let (gate, runs) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for group in groups {
        let (group, key, runs, gate) = (
            group.clone(),
            key.to_owned(),
            Arc::clone(&runs),
            gate.clone(),
        );
        tasks.push(tokio::spawn(async move {
            group
                .call(&key, || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    gate.wait().await;
                    7
                })
                .with_role()
                .await
                .paired()
        }));
    }
    wait_until("every group runs the work or waits on the fleet", || {
        runs.load(Ordering::SeqCst) + groups.iter().map(RedisGroup::fleet_waiting).sum::<usize>()
            == groups.len()
    })
    .await;
    (gate, runs, tasks)
}

async fn end_round(
    (gate, runs, tasks): (Gate, Arc<AtomicUsize>, Vec<tokio::task::JoinHandle<Called>>),
) -> Round {
    gate.open();
    let (mut failed, mut fleet_roles) = (0, Vec::new());
    for task in tasks {
        match task.await.expect("caller") {
            Ok((7, fleet_role)) => fleet_roles.push(label(fleet_role)),
            _ => failed += 1,
        }
    }
    fleet_roles.sort();
    Round {
        executions: runs.load(Ordering::SeqCst),
        failed,
        fleet_roles,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_under_a_leader_fails_over_without_a_failed_call() {
    let node_timeout = 1000;
    let Some(mut cluster) = ClusterDeployment::start(3, 1, node_timeout).await else {
        return;
    };
    let namespace = "test:cluster-failover";
    let lease = Duration::from_secs(1);
    let groups: Vec<RedisGroup<u64>> = (0..4)
        .map(|_| {
            RedisGroup::<u64>::open_cluster(
                &Cluster::new(cluster.seeds()),
                config(namespace).lease_ttl(lease),
            )
            .expect("group")
        })
        .collect();
    let before = end_round(start_round(&groups, "k").await).await;
    assert!(before.coalesced(), "{:?}", before.fleet_roles);

    // A flight whose leader's lease lives on the primary about to die.
    let round = start_round(&groups, "k").await;
    let (_, primary) = lease_key(&cluster, namespace).await;
    let primary_id = node_id(primary).await;
    let replica = cluster
        .nodes(primary)
        .await
        .expect("nodes")
        .into_iter()
        .find(|n| n.replica_of.as_deref() == Some(primary_id.as_str()))
        .expect("the primary's replica")
        .port;
    let killed = Instant::now();
    cluster.server(primary).kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    while support::role(replica).await.as_deref() != Some("master") {
        assert!(Instant::now() < deadline, "the replica was not promoted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let promoted = Instant::now();
    let during = end_round(round).await;

    // Rounds until the fleet coalesces again, timed from the promotion.
    let mut after = Vec::new();
    let back = loop {
        let round = end_round(start_round(&groups, "k").await).await;
        let coalesced = round.coalesced();
        after.push(round);
        if coalesced {
            break promoted.elapsed();
        }
        assert!(
            promoted.elapsed() < Duration::from_secs(15),
            "no coalescing 15 s after the promotion"
        );
    };
    let failed: usize = after.iter().map(|r| r.failed).sum::<usize>() + during.failed;
    println!(
        "| failover (primary {primary} killed, replica {replica} promoted after {} ms; node timeout {node_timeout} ms, lease {} ms) | executions | failed calls | fleet_roles |",
        promoted.duration_since(killed).as_millis(),
        lease.as_millis()
    );
    println!("|---|---|---|---|");
    println!(
        "| before | {} | {} | {:?} |",
        before.executions, before.failed, before.fleet_roles
    );
    println!(
        "| leader's flight across the kill | {} | {} | {:?} |",
        during.executions, during.failed, during.fleet_roles
    );
    for (n, round) in after.iter().enumerate() {
        println!(
            "| after, round {} | {} | {} | {:?} |",
            n + 1,
            round.executions,
            round.failed,
            round.fleet_roles
        );
    }
    println!(
        "coalescing back {} ms after the promotion (target: within one lease, {} ms); {} round(s); stats {:?}",
        back.as_millis(),
        lease.as_millis(),
        after.len(),
        groups[0].fleet_stats().fallbacks
    );
    assert_eq!(failed, 0);
    assert!(back <= lease + Duration::from_millis(500), "{back:?}");
}
