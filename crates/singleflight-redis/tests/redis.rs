//! Against a real `redis-server` on loopback, started per test and stopped by its pid.
//! Processes are this test binary re-executed (`worker_process_entry`); faults are
//! injected with signals and `CLIENT KILL`. Without a server the tests skip loudly, and
//! fail under `CI=true`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use singleflight_redis::{Config, Error, FallbackReason, FleetRole, ReconnectReason, RedisGroup};
use support::{
    Fault, Gate, Paired, Proxy, Server, Worker, WorkerSpec, executions, fast, lead_and_wait,
    temp_log, wait_until,
};
use tokio::sync::watch;

fn label(fleet_role: FleetRole) -> String {
    match fleet_role {
        FleetRole::Leader { .. } => "leader".to_owned(),
        FleetRole::Waiter { .. } => "waiter".to_owned(),
        FleetRole::Reelected { .. } => "reelected".to_owned(),
        FleetRole::Fallback(reason) => format!("fallback:{reason:?}"),
        _ => "other".to_owned(),
    }
}

/// The worker process: runs `SF_ROUNDS` rounds of `SF_CALLERS` concurrent callers of one
/// key; round `r > 0` starts at the `r`-th `next` line on stdin and its work waits for
/// the `r+1`-th `go` line. Prints
/// `SF ready leader|waiter`, then one `SF result <fleet_role> ok|err <text> <ms after go>`
/// per caller, then `SF done`. A no-op unless `SF_WORKER` is set.
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
    // The stdin reader sits in tokio's blocking pool, which a runtime waits for on drop.
    std::process::exit(0);
}

async fn worker_main() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} unset"));
    let callers: usize = var("SF_CALLERS").parse().expect("callers");
    let rounds: usize = var("SF_ROUNDS").parse().expect("rounds");
    let work = Duration::from_millis(var("SF_WORK_MS").parse().expect("work"));
    let lease = Duration::from_millis(var("SF_LEASE_MS").parse().expect("lease"));
    let breaker = Duration::from_millis(var("SF_BREAKER_MS").parse().expect("breaker"));
    let behaviour = var("SF_BEHAVIOUR");
    let (key, log) = (var("SF_KEY"), var("SF_LOG"));
    let config = Config::new(var("SF_NS"))
        .lease_ttl(lease)
        .poll(Duration::from_millis(20), Duration::from_millis(200))
        .op_timeout(Duration::from_millis(300))
        .wait_timeout(Duration::from_secs(10))
        .breaker(3, breaker);
    let group = RedisGroup::<String, String>::open(&var("SF_URL"), config).expect("group");

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
        // Rounds start together: a process still in the previous round must not lend its
        // flight to one that is already in the next.
        next_rx.wait_for(|&n| n >= round).await.expect("next");
        let started = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..callers {
            let (group, key, log, behaviour) =
                (group.clone(), key.clone(), log.clone(), behaviour.clone());
            let (started, mut go) = (Arc::clone(&started), go_rx.clone());
            tasks.push(tokio::spawn(async move {
                let result = group
                    .try_call(&key, || async move {
                        use std::io::Write;
                        let mut file = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&log)
                            .expect("log");
                        writeln!(file, "{round} {}", std::process::id()).expect("log");
                        started.store(true, Ordering::SeqCst);
                        go.wait_for(|&n| n > round).await.expect("go");
                        tokio::time::sleep(work).await;
                        match behaviour.as_str() {
                            "err" => Err("boom".to_owned()),
                            _ => Ok(format!("value-{round}")),
                        }
                    })
                    .with_role()
                    .await
                    .paired();
                (result, Instant::now())
            }));
        }
        let joined = || {
            group.waiters(&key) == callers - 1
                && (group.fleet_waiting() == 1 || started.load(Ordering::SeqCst))
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !joined() {
            assert!(
                Instant::now() < deadline,
                "round {round}: callers never joined: waiters {}, fleet_waiting {}, started {}, stats {:?}",
                group.waiters(&key),
                group.fleet_waiting(),
                started.load(Ordering::SeqCst),
                group.fleet_stats()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let role = if started.load(Ordering::SeqCst) {
            "leader"
        } else {
            "waiter"
        };
        println!("SF ready {role}");
        let mut go = go_rx.clone();
        go.wait_for(|&n| n > round).await.expect("go");
        let go_at = Instant::now();
        for task in tasks {
            let (result, at) = task.await.expect("caller");
            let ms = at.saturating_duration_since(go_at).as_millis();
            match result {
                Ok((value, fleet_role)) => {
                    println!("SF result {} ok {value} {ms}", label(fleet_role))
                }
                Err(Error::Remote(e)) => println!("SF result remote err {} {ms}", e.message()),
                Err(Error::Failed(e)) => println!("SF result local err {e} {ms}"),
                Err(e) => println!("SF result other err {e} {ms}"),
            }
        }
        println!("SF done");
    }
}

struct Results {
    /// Per worker: (role, result lines).
    workers: Vec<(String, Vec<Vec<String>>)>,
}

impl Results {
    fn all(&self) -> impl Iterator<Item = &Vec<String>> {
        self.workers.iter().flat_map(|(_, lines)| lines)
    }
}

fn spec(server: &Server, name: &str, callers: usize) -> WorkerSpec {
    WorkerSpec {
        url: server.url(),
        namespace: format!("test:{name}"),
        key: "hot".to_owned(),
        callers,
        work_ms: 0,
        behaviour: "ok",
        lease_ms: 2000,
        log: temp_log(name),
        rounds: 1,
        breaker_ms: 5000,
    }
}

/// Waits for every worker's `ready` line; returns the roles.
async fn ready(workers: &mut [Worker]) -> Vec<String> {
    let mut roles = Vec::new();
    for worker in workers.iter_mut() {
        let line = worker.expect("ready").await;
        roles.push(line["ready ".len()..].to_owned());
    }
    roles
}

/// Collects `callers` result lines and `done` from each worker.
async fn collect(workers: &mut [Worker], roles: &[String], callers: usize) -> Results {
    let mut out = Vec::new();
    for (worker, role) in workers.iter_mut().zip(roles) {
        let mut lines = Vec::new();
        for _ in 0..callers {
            let line = worker.expect("result").await;
            lines.push(line.split(' ').skip(1).map(str::to_owned).collect());
        }
        worker.expect("done").await;
        out.push((role.clone(), lines));
    }
    Results { workers: out }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_of_25_callers_run_the_work_once() {
    let Some(server) = Server::start() else {
        return;
    };
    let spec = spec(&server, "fleet", 25);
    let mut workers: Vec<Worker> = (0..8).map(|_| Worker::spawn(&spec)).collect();
    let roles = ready(&mut workers).await;
    assert_eq!(
        roles.iter().filter(|r| *r == "leader").count(),
        1,
        "{roles:?}"
    );
    for worker in &mut workers {
        worker.go().await;
    }
    let results = collect(&mut workers, &roles, 25).await;
    for (role, lines) in &results.workers {
        for line in lines {
            assert_eq!(
                line[0],
                if role == "leader" { "leader" } else { "waiter" },
                "{line:?}"
            );
            assert_eq!((line[1].as_str(), line[2].as_str()), ("ok", "value-0"));
        }
    }
    assert_eq!(results.all().count(), 200);
    assert_eq!(
        executions(&spec.log),
        1,
        "one execution for 8 processes x 25 callers"
    );
    println!(
        "fleet: 200 callers in 8 processes, executions = {}",
        executions(&spec.log)
    );
    for worker in workers {
        worker.wait().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_error_reaches_waiters_at_once() {
    let Some(server) = Server::start() else {
        return;
    };
    let mut spec = spec(&server, "error", 5);
    spec.behaviour = "err";
    spec.lease_ms = 10_000;
    let mut workers: Vec<Worker> = (0..3).map(|_| Worker::spawn(&spec)).collect();
    let roles = ready(&mut workers).await;
    for worker in &mut workers {
        worker.go().await;
    }
    let results = collect(&mut workers, &roles, 5).await;
    for (role, lines) in &results.workers {
        for line in lines {
            let kind = if role == "leader" { "local" } else { "remote" };
            assert_eq!(
                (line[0].as_str(), line[1].as_str(), line[2].as_str()),
                (kind, "err", "boom")
            );
            let ms: u64 = line[3].parse().expect("ms");
            assert!(
                ms < 1000,
                "waiters must not wait out the 10 s lease: {ms} ms"
            );
        }
    }
    assert_eq!(executions(&spec.log), 1);
    let mut conn = server.connection().await;
    let locks: Vec<String> = redis::cmd("KEYS")
        .arg("sf:*:lock")
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert!(locks.is_empty(), "the lease is released: {locks:?}");
    for worker in workers {
        worker.wait().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_by_exactly_one_process() {
    let Some(server) = Server::start() else {
        return;
    };
    let mut spec = spec(&server, "kill", 5);
    spec.lease_ms = 1000;
    let mut workers: Vec<Worker> = (0..4).map(|_| Worker::spawn(&spec)).collect();
    let roles = ready(&mut workers).await;
    let leader = roles.iter().position(|r| r == "leader").expect("a leader");
    let mut dead = workers.remove(leader);
    let mut roles = roles;
    roles.remove(leader);
    dead.kill();
    let killed_at = Instant::now();
    for worker in &mut workers {
        worker.go().await;
    }
    let results = collect(&mut workers, &roles, 5).await;
    let elapsed = killed_at.elapsed();
    let mut reelected = 0;
    for (_, lines) in &results.workers {
        assert!(
            lines.iter().all(|l| l[1] == "ok" && l[2] == "value-0"),
            "{lines:?}"
        );
        let fleet_role = &lines[0][0];
        assert!(
            lines.iter().all(|l| &l[0] == fleet_role),
            "one fleet_role per process"
        );
        match fleet_role.as_str() {
            "reelected" => reelected += 1,
            "waiter" => {}
            other => panic!("unexpected fleet_role {other}"),
        }
    }
    assert_eq!(reelected, 1, "exactly one new leader, no herd");
    assert_eq!(
        executions(&spec.log),
        2,
        "the killed run and exactly one re-execution"
    );
    assert!(
        elapsed < Duration::from_millis(1000 + 1500),
        "took {elapsed:?}"
    );
    println!("leader killed: executions = 2, survivors done after {elapsed:?} (lease 1 s)");
    for worker in workers {
        worker.wait().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_work_renews_its_lease_and_runs_once() {
    let Some(server) = Server::start() else {
        return;
    };
    let mut spec = spec(&server, "renew", 5);
    spec.lease_ms = 300;
    spec.work_ms = 1500;
    let mut workers: Vec<Worker> = (0..3).map(|_| Worker::spawn(&spec)).collect();
    let roles = ready(&mut workers).await;
    for worker in &mut workers {
        worker.go().await;
    }
    let results = collect(&mut workers, &roles, 5).await;
    for (role, lines) in &results.workers {
        for line in lines {
            assert_eq!(
                line[0],
                if role == "leader" { "leader" } else { "waiter" },
                "{line:?}"
            );
            let ms: u64 = line[3].parse().expect("ms");
            assert!(ms >= 1400, "the work took its time: {ms}");
        }
    }
    assert_eq!(
        executions(&spec.log),
        1,
        "work of 5 leases, renewed, ran once"
    );
    for worker in workers {
        worker.wait().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_flight_still_answers_and_later_flights_coalesce() {
    let Some(mut server) = Server::start() else {
        return;
    };
    let mut spec = spec(&server, "restart", 5);
    spec.lease_ms = 1000;
    spec.rounds = 2;
    let mut workers: Vec<Worker> = (0..4).map(|_| Worker::spawn(&spec)).collect();
    let roles = ready(&mut workers).await;
    let connected = clients(&server).await;
    server.restart();
    let restarted = Instant::now();
    for worker in &mut workers {
        worker.go().await;
    }
    let results = collect(&mut workers, &roles, 5).await;
    assert!(
        results.all().all(|l| l[1] == "ok" && l[2] == "value-0"),
        "every caller got a value"
    );
    // Each worker's group reconnects in the background, one attempt at a time with
    // jittered, capped backoff; until it has, its calls run locally (and its breaker may be
    // open). The crate promises coalescing again within `lease_ttl + 3 × op_timeout +
    // reconnect cap` (1 s + 0.6 s + 1 s here) of the heal: round 2 starts once every worker
    // is connected again, which must happen within that bound (plus the time worker
    // processes need to be scheduled on a loaded machine).
    let bound = Duration::from_millis(spec.lease_ms) + Duration::from_millis(600 + 1000);
    loop {
        if clients(&server).await >= connected {
            break;
        }
        assert!(
            restarted.elapsed() < bound + Duration::from_secs(3),
            "the workers did not reconnect within {bound:?} of the restart"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "restart: every worker connected again {:.0} ms after the restart",
        restarted.elapsed().as_secs_f64() * 1e3
    );
    let first = support::executions_in(&spec.log, 0);
    assert!(
        (1..=4).contains(&first),
        "at most one execution per process: {first}"
    );
    println!("restart: round 1 executions = {first}");
    for worker in &mut workers {
        worker.next().await;
    }

    let roles = ready(&mut workers).await;
    for worker in &mut workers {
        worker.go().await;
    }
    let results = collect(&mut workers, &roles, 5).await;
    assert!(
        results.all().all(|l| l[1] == "ok" && l[2] == "value-1"),
        "{:?}",
        results.workers
    );
    assert_eq!(
        roles.iter().filter(|r| *r == "leader").count(),
        1,
        "{roles:?}"
    );
    assert_eq!(
        support::executions_in(&spec.log, 1),
        1,
        "coalesced again after the restart"
    );
    for worker in workers {
        worker.wait().await;
    }
}

/// The clients connected to `server` now (this query's own connection included).
async fn clients(server: &Server) -> usize {
    let mut connection = server.connection().await;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut connection)
        .await
        .expect("CLIENT LIST");
    list.lines().filter(|line| !line.is_empty()).count()
}

// ---- In-process cases: each `RedisGroup` has its own connection, like a process. ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_calls_run_locally_once_per_process_and_say_so() {
    let port = support::free_port(); // nothing listens here
    let group = RedisGroup::<u64>::open(
        &format!("redis://127.0.0.1:{port}/"),
        fast("absent").breaker(3, Duration::from_secs(60)),
    )
    .expect("group");
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Gate::new();
    let mut tasks = Vec::new();
    for _ in 0..25 {
        let (group, runs, gate) = (group.clone(), Arc::clone(&runs), gate.clone());
        tasks.push(tokio::spawn(async move {
            group
                .call("k", || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    gate.wait().await;
                    7
                })
                .with_role()
                .await
                .paired()
        }));
    }
    wait_until("callers joined", || {
        group.waiters("k") == 24 && runs.load(Ordering::SeqCst) == 1
    })
    .await;
    gate.open();
    for task in tasks {
        let (value, fleet_role) = task.await.expect("task").expect("value");
        assert_eq!(value, 7);
        // Refused at once, or still retrying the connection at the deadline.
        assert!(
            matches!(
                fleet_role,
                FleetRole::Fallback(
                    FallbackReason::RedisUnavailable | FallbackReason::RedisTimeout
                )
            ),
            "{fleet_role:?}"
        );
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "still coalesced within the process"
    );
    // Two more failures open the breaker; then Redis is not even tried.
    for _ in 0..2 {
        let (_, fleet_role) = group
            .call("k", || async { 1 })
            .with_role()
            .await
            .paired()
            .expect("value");
        assert!(!matches!(
            fleet_role,
            FleetRole::Fallback(FallbackReason::CircuitOpen)
        ));
    }
    let started = Instant::now();
    let (_, fleet_role) = group
        .call("k", || async { 1 })
        .with_role()
        .await
        .paired()
        .expect("value");
    let open_cost = started.elapsed();
    assert_eq!(fleet_role, FleetRole::Fallback(FallbackReason::CircuitOpen));
    assert!(open_cost < Duration::from_millis(50), "{open_cost:?}");
    let stats = group.fleet_stats();
    assert_eq!(
        stats.fallbacks(FallbackReason::RedisUnavailable)
            + stats.fallbacks(FallbackReason::RedisTimeout),
        3
    );
    assert_eq!(stats.fallbacks(FallbackReason::CircuitOpen), 1);
    println!("redis absent: circuit-open call took {open_cost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_at_most_the_deadline_and_service_resumes() {
    let Some(server) = Server::start() else {
        return;
    };
    let config = fast("frozen").breaker(2, Duration::from_millis(300));
    let group = RedisGroup::<u64>::open(&server.url(), config).expect("group");
    let (_, fleet_role) = group
        .call("k", || async { 1 })
        .with_role()
        .await
        .paired()
        .expect("value");
    assert!(
        matches!(fleet_role, FleetRole::Leader { .. }),
        "{fleet_role:?}"
    );
    server.signal("STOP");
    for _ in 0..2 {
        let started = Instant::now();
        let (value, fleet_role) = group
            .call("k", || async { 2 })
            .with_role()
            .await
            .paired()
            .expect("value");
        let took = started.elapsed();
        assert_eq!(
            (value, fleet_role),
            (2, FleetRole::Fallback(FallbackReason::RedisTimeout))
        );
        assert!(
            took < Duration::from_millis(200 + 300),
            "one deadline (200 ms), took {took:?}"
        );
    }
    let started = Instant::now();
    let (_, fleet_role) = group
        .call("k", || async { 3 })
        .with_role()
        .await
        .paired()
        .expect("value");
    assert_eq!(fleet_role, FleetRole::Fallback(FallbackReason::CircuitOpen));
    assert!(started.elapsed() < Duration::from_millis(50));
    server.signal("CONT");
    // After the cool-down a probe goes through and Redis is used again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, fleet_role) = group
            .call("k", || async { 4 })
            .with_role()
            .await
            .paired()
            .expect("value");
        if matches!(fleet_role, FleetRole::Leader { .. }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "redis never used again: {fleet_role:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn client_list(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(conn)
        .await
        .expect("client list");
    list.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_connection_is_killed_recovers() {
    let Some(server) = Server::start() else {
        return;
    };
    support::warnings::install();
    let leader = RedisGroup::<String>::open(&server.url(), fast("kill-sub")).expect("group");
    let waiter = RedisGroup::<String>::open(&server.url(), fast("kill-sub")).expect("group");
    let (gate, runs) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    let work = |gate: Gate, runs: Arc<AtomicUsize>| async move {
        runs.fetch_add(1, Ordering::SeqCst);
        gate.wait().await;
        "v".to_owned()
    };
    let lead = tokio::spawn({
        let (leader, gate, runs) = (leader.clone(), gate.clone(), Arc::clone(&runs));
        async move {
            leader
                .call("k", || work(gate, runs))
                .with_role()
                .await
                .paired()
        }
    });
    wait_until("leader runs", || runs.load(Ordering::SeqCst) == 1).await;
    let wait = tokio::spawn({
        let (waiter, gate, runs) = (waiter.clone(), gate.clone(), Arc::clone(&runs));
        async move {
            waiter
                .call("k", || work(gate, runs))
                .with_role()
                .await
                .paired()
        }
    });
    wait_until("waiter waits", || waiter.fleet_waiting() == 1).await;
    // The waiter's connection is the only subscribed one once the leader unsubscribed.
    let mut conn = server.connection().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let subscribed: Vec<String> = client_list(&mut conn)
            .await
            .into_iter()
            .filter(|line| line.contains(" sub=1 "))
            .collect();
        if let [line] = subscribed.as_slice() {
            break line
                .split(' ')
                .find_map(|f| f.strip_prefix("id="))
                .expect("id")
                .to_owned();
        }
        assert!(Instant::now() < deadline, "{subscribed:?}");
        tokio::task::yield_now().await;
    };
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&id)
        .query_async(&mut conn)
        .await
        .expect("kill");
    assert_eq!(killed, 1);
    wait_until("the killed connection is replaced", || {
        waiter.fleet_stats().reconnects(ReconnectReason::Closed) == 1
    })
    .await;
    // The count goes up before the warning is written: wait for the warning too.
    wait_until("the replacement's warning", || {
        support::warnings::logged(&["replaced (Closed)", "the server or the network closed it"])
    })
    .await;
    // The waiter re-checks on the disconnect, reconnects and resubscribes, and waits on.
    wait_until("resubscribed", || waiter.fleet_waiting() == 1).await;
    let resubscribed = Instant::now() + Duration::from_secs(10);
    while !client_list(&mut conn)
        .await
        .iter()
        .any(|l| l.contains(" sub=1 "))
    {
        assert!(Instant::now() < resubscribed, "never resubscribed");
        tokio::task::yield_now().await;
    }
    gate.open();
    let (value, fleet_role) = wait.await.expect("task").expect("value");
    assert_eq!(value, "v");
    assert!(
        matches!(fleet_role, FleetRole::Waiter { .. }),
        "{fleet_role:?}"
    );
    assert!(matches!(
        lead.await.expect("task").expect("value").1,
        FleetRole::Leader { .. }
    ));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_go_by_the_result_key_and_oversized_ones_run_locally() {
    let Some(server) = Server::start() else {
        return;
    };
    let sized = |ns| fast(ns).inline_max(1024).max_value(16 * 1024);
    let big = "x".repeat(8 * 1024);
    let (fleet_role, value, runs) = lead_and_wait(
        &server,
        sized("large"),
        sized("large"),
        big.clone(),
        String::new(),
        async |_| {},
        false,
    )
    .await;
    assert!(
        matches!(fleet_role, FleetRole::Waiter { .. }),
        "{fleet_role:?}"
    );
    assert_eq!((value, runs), (big, 1));

    let huge = "x".repeat(64 * 1024);
    let (fleet_role, value, runs) = lead_and_wait(
        &server,
        sized("huge"),
        sized("huge"),
        huge,
        "mine".to_owned(),
        async |_| {},
        false,
    )
    .await;
    assert_eq!(fleet_role, FleetRole::Fallback(FallbackReason::TooLarge));
    assert_eq!((value.as_str(), runs), ("mine", 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incompatible_and_corrupt_values_run_locally() {
    let Some(server) = Server::start() else {
        return;
    };
    // Another version of the value type under the same namespace.
    let (fleet_role, value, runs) = lead_and_wait(
        &server,
        fast("types"),
        fast("types"),
        "text".to_owned(),
        5u64,
        async |_| {},
        false,
    )
    .await;
    assert_eq!(fleet_role, FleetRole::Fallback(FallbackReason::Decode));
    assert_eq!((value, runs), (5, 2));

    // Garbage in the result key (with a generation the waiter accepts) and on the channel.
    let (fleet_role, value, runs) = lead_and_wait(
        &server,
        fast("corrupt"),
        fast("corrupt"),
        1u64,
        2u64,
        async |conn| {
            let locks: Vec<String> = redis::cmd("KEYS")
                .arg("sf:{corrupt:*:lock")
                .query_async(conn)
                .await
                .expect("keys");
            let base = locks[0].strip_suffix(":lock").expect("lock key").to_owned();
            let _: () = redis::cmd("PUBLISH")
                .arg(format!("{base}:done"))
                .arg("\u{0}garbage")
                .query_async(conn)
                .await
                .expect("publish");
            let _: () = redis::cmd("HSET")
                .arg(format!("{base}:res"))
                .arg("g")
                .arg(1_000_000)
                .arg("v")
                .arg("SF\u{1}garbage that is no envelope")
                .query_async(conn)
                .await
                .expect("hset");
        },
        true,
    )
    .await;
    assert_eq!(fleet_role, FleetRole::Fallback(FallbackReason::ForeignData));
    assert_eq!((value, runs), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_latency_on_loopback() {
    let Some(server) = Server::start() else {
        return;
    };
    const ROUNDS: u32 = 100;
    let local = singleflight_tokio::Group::<String, u64>::new();
    let started = Instant::now();
    for _ in 0..ROUNDS {
        local.call("k", || async { 1 }).await.expect("value");
    }
    let baseline = started.elapsed() / ROUNDS;
    let leader = RedisGroup::<u64>::open(&server.url(), fast("latency")).expect("group");
    let waiter = RedisGroup::<u64>::open(&server.url(), fast("latency")).expect("group");
    leader
        .call("warm", || async { 0 })
        .with_role()
        .await
        .paired()
        .expect("value");
    waiter
        .call("warm", || async { 0 })
        .with_role()
        .await
        .paired()
        .expect("value");
    let started = Instant::now();
    for _ in 0..ROUNDS {
        let (_, fleet_role) = leader
            .call("k", || async { 1 })
            .with_role()
            .await
            .paired()
            .expect("value");
        assert!(matches!(fleet_role, FleetRole::Leader { .. }));
    }
    let lead = started.elapsed() / ROUNDS;
    // Waiter: from the leader's work finishing to the waiter having the value.
    let mut wait = Duration::ZERO;
    for _ in 0..ROUNDS {
        let gate = Gate::new();
        let started_flag = Arc::new(AtomicBool::new(false));
        let lead_task = tokio::spawn({
            let (leader, gate, flag) = (leader.clone(), gate.clone(), Arc::clone(&started_flag));
            async move {
                leader
                    .call("f", || async move {
                        flag.store(true, Ordering::SeqCst);
                        gate.wait().await;
                        1
                    })
                    .with_role()
                    .await
                    .paired()
            }
        });
        wait_until("leader runs", || started_flag.load(Ordering::SeqCst)).await;
        let wait_task = tokio::spawn({
            let waiter = waiter.clone();
            async move { waiter.call("f", || async { 2 }).with_role().await.paired() }
        });
        wait_until("waiter waits", || waiter.fleet_waiting() == 1).await;
        let opened = Instant::now();
        gate.open();
        let (value, fleet_role) = wait_task.await.expect("task").expect("value");
        wait += opened.elapsed();
        assert_eq!(value, 1);
        assert!(matches!(fleet_role, FleetRole::Waiter { .. }));
        lead_task.await.expect("task").expect("value");
    }
    let wait = wait / ROUNDS;
    println!(
        "latency ({} build): in-process call {baseline:?}; leader call {lead:?} (+{:?}); waiter receives the value {wait:?} after the leader's work ends",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        lead.saturating_sub(baseline),
    );
    assert!(lead < Duration::from_millis(50) && wait < Duration::from_millis(50));
}

/// Commands only clients send (a script cannot send these), by name, as the server
/// counted them (`INFO commandstats`).
async fn client_commands(
    conn: &mut redis::aio::MultiplexedConnection,
) -> std::collections::BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("info");
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|s| s.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .filter(|(name, _): &(String, u64)| {
            matches!(
                name.as_str(),
                "evalsha" | "eval" | "subscribe" | "unsubscribe"
            ) || name.starts_with("script")
        })
        .collect()
}

/// What was sent between two counts.
fn sent(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> Vec<(String, u64)> {
    after
        .iter()
        .map(|(name, n)| (name.clone(), n - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The protocol's round trips, counted by the server: a leader sends two commands, its
/// join and its completion (no subscription); a waiter joins, subscribes, joins again,
/// gets the value by push (no read after it), and unsubscribes once it has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_sends_two_commands_and_a_waiter_four() {
    let Some(server) = Server::start() else {
        return;
    };
    // No timed re-check while the waiter waits.
    let config = || {
        fast("count")
            .poll(Duration::from_secs(60), Duration::from_secs(60))
            .wait_timeout(Duration::from_secs(120))
    };
    let mut conn = server.connection().await;
    let leader = RedisGroup::<u64>::open(&server.url(), config()).expect("group");
    // Loads the scripts (a first call meets NOSCRIPT and loads them).
    leader
        .call("warm", || async { 0 })
        .with_role()
        .await
        .paired()
        .expect("value");

    let before = client_commands(&mut conn).await;
    let (_, fleet_role) = leader
        .call("alone", || async { 1 })
        .with_role()
        .await
        .paired()
        .expect("value");
    assert!(
        matches!(fleet_role, FleetRole::Leader { .. }),
        "{fleet_role:?}"
    );
    let after = client_commands(&mut conn).await;
    assert_eq!(sent(&before, &after), [("evalsha".to_owned(), 2)]);

    let before = after;
    let (fleet_role, value, runs) = lead_and_wait(
        &server,
        config(),
        config(),
        1_u64,
        2_u64,
        async |_| {},
        false,
    )
    .await;
    assert_eq!(
        (fleet_role, value, runs),
        (FleetRole::Waiter { generation: 1 }, 1, 1)
    );
    // The waiter unsubscribes after it returned: wait for the server to have no
    // subscription left.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .query_async(&mut conn)
            .await
            .expect("pubsub");
        if channels.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still subscribed: {channels:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let after = client_commands(&mut conn).await;
    assert_eq!(
        sent(&before, &after),
        [
            ("evalsha".to_owned(), 2 + 2),
            ("subscribe".to_owned(), 1),
            ("unsubscribe".to_owned(), 1),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_leader_hands_over_at_once() {
    let Some(server) = Server::start() else {
        return;
    };
    let config = || fast("panic").lease_ttl(Duration::from_secs(10));
    let leader = RedisGroup::<u64>::open(&server.url(), config()).expect("group");
    let waiter = RedisGroup::<u64>::open(&server.url(), config()).expect("group");
    let (gate, runs) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    let lead = tokio::spawn({
        let (gate, runs) = (gate.clone(), Arc::clone(&runs));
        async move {
            leader
                .call("k", || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    gate.wait().await;
                    panic!("work failed hard")
                })
                .with_role()
                .await
                .paired()
        }
    });
    wait_until("leader runs", || runs.load(Ordering::SeqCst) == 1).await;
    let wait = tokio::spawn({
        let (waiter, runs) = (waiter.clone(), Arc::clone(&runs));
        async move {
            waiter
                .call("k", || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    2
                })
                .with_role()
                .await
                .paired()
        }
    });
    wait_until("waiter waits", || waiter.fleet_waiting() == 1).await;
    let opened = Instant::now();
    gate.open();
    assert!(
        lead.await
            .expect_err("the panic resumes in the leader")
            .is_panic()
    );
    let (value, fleet_role) = wait.await.expect("task").expect("value");
    let took = opened.elapsed();
    assert_eq!(value, 2);
    assert!(
        matches!(fleet_role, FleetRole::Reelected { generation: 2 }),
        "{fleet_role:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "not at the 10 s lease expiry: {took:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[cfg(feature = "msgpack")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_pack_values_are_shared() {
    let Some(server) = Server::start() else {
        return;
    };
    let config = || fast("msgpack").codec(singleflight_redis::Codec::MessagePack);
    let value = vec!["a".to_owned(), "b".to_owned()];
    let (fleet_role, got, runs) = lead_and_wait(
        &server,
        config(),
        config(),
        value.clone(),
        Vec::new(),
        async |_| {},
        false,
    )
    .await;
    assert!(
        matches!(fleet_role, FleetRole::Waiter { .. }),
        "{fleet_role:?}"
    );
    assert_eq!((got, runs), (value, 1));
}

/// One fault's run of the fleet scenario.
struct FaultRun {
    fault: &'static str,
    executions: usize,
    failed: usize,
    longest_ms: u64,
    /// From the fault's end to the end of the first round that is coalesced again (one
    /// execution fleet-wide, no call ran locally).
    back_after: Option<Duration>,
    /// Per recovery round: executions and the fleet_roles that were not coalesced.
    recovery: Vec<(usize, Vec<String>)>,
}

/// 8 worker processes x 25 callers reach Redis through a fault-injecting proxy. A healthy
/// round elects its leader; the fault starts while the work runs; then rounds run back to
/// back after the fault ends until one is coalesced again (one execution, no fallback).
async fn fleet_under(fault: Fault, name: &'static str, lease: Duration) -> FaultRun {
    const PROCESSES: usize = 8;
    const CALLERS: usize = 25;
    // Rounds run back to back until one is coalesced, for at most this long.
    const RECOVERY: Duration = Duration::from_secs(20);
    const RECOVERY_ROUNDS: usize = 200;
    let server = Server::start().expect("redis-server (checked by the caller)");
    let proxy = Proxy::start(server.port).await;
    let mut spec = spec(&server, name, CALLERS);
    spec.url = proxy.url();
    spec.work_ms = 100;
    spec.lease_ms = u64::try_from(lease.as_millis()).expect("lease");
    spec.breaker_ms = 1000;
    spec.rounds = 1 + RECOVERY_ROUNDS;
    let mut workers: Vec<Worker> = (0..PROCESSES).map(|_| Worker::spawn(&spec)).collect();
    let roles = ready(&mut workers).await;
    assert_eq!(
        roles.iter().filter(|r| *r == "leader").count(),
        1,
        "{roles:?}"
    );
    proxy.set(fault);
    for worker in &mut workers {
        worker.go().await;
    }
    let results = collect(&mut workers, &roles, CALLERS).await;
    let failed = results
        .all()
        .filter(|l| l[1] != "ok" || l[2] != "value-0")
        .count();
    let longest_ms = results
        .all()
        .map(|l| l[3].parse::<u64>().expect("ms"))
        .max()
        .expect("results");
    let executions = support::executions_in(&spec.log, 0);
    assert_eq!(results.all().count(), PROCESSES * CALLERS);
    proxy.set(Fault::None);
    let healed = Instant::now();
    let mut back_after = None;
    let mut recovery = Vec::new();
    for round in 1..=RECOVERY_ROUNDS {
        for worker in &mut workers {
            worker.next().await;
        }
        let roles = ready(&mut workers).await;
        for worker in &mut workers {
            worker.go().await;
        }
        let results = collect(&mut workers, &roles, CALLERS).await;
        let value = format!("value-{round}");
        assert!(
            results.all().all(|l| l[1] == "ok" && l[2] == value),
            "{name}: round {round}: {:?}",
            results.workers
        );
        let fallbacks: Vec<String> = results
            .all()
            .filter(|l| l[0].starts_with("fallback"))
            .map(|l| l[0].clone())
            .collect();
        let executions = support::executions_in(&spec.log, round);
        let coalesced = fallbacks.is_empty() && executions == 1;
        recovery.push((executions, fallbacks));
        if coalesced {
            back_after = Some(healed.elapsed());
            break;
        }
        if healed.elapsed() > RECOVERY {
            break;
        }
    }
    drop(workers);
    FaultRun {
        fault: name,
        executions,
        failed,
        longest_ms,
        back_after,
        recovery,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_through_a_faulty_network_never_fails_a_call_and_coalesces_again() {
    if Server::start().is_none() {
        return;
    }
    let lease = Duration::from_millis(2000);
    let mut runs = Vec::new();
    for (fault, name) in [
        (
            Fault::Latency(Duration::from_millis(50)),
            "latency 50 ms per chunk",
        ),
        (Fault::Stall, "stall"),
        (Fault::Reset, "reset mid-command"),
        (Fault::Blackhole, "blackhole"),
        (Fault::Silent, "silent (never reset)"),
    ] {
        runs.push(fleet_under(fault, name, lease).await);
    }
    // The crate docs' recovery target: lease + 3 command deadlines + the reconnect cap.
    let bound = lease + 3 * Duration::from_millis(300) + Duration::from_secs(1);
    println!(
        "fleet of 8 processes x 25 callers through a faulty proxy (lease {lease:?}, op_timeout 300 ms, breaker 3 failures / 1 s, reconnect cap 1 s, work 100 ms):"
    );
    println!(
        "| fault | executions fleet-wide | failed calls | longest call after the work was released | coalescing back after the fault ended (target {} ms) |",
        bound.as_millis()
    );
    println!("|---|---|---|---|---|");
    for run in &runs {
        println!(
            "| {} | {} | {} | {} ms | {} |",
            run.fault,
            run.executions,
            run.failed,
            run.longest_ms,
            match run.back_after {
                Some(after) => format!("{} ms", after.as_millis()),
                None => "not within 20 s".to_owned(),
            }
        );
    }
    for run in &runs {
        assert_eq!(run.failed, 0, "{}: no call fails", run.fault);
        assert!(
            (1..=8).contains(&run.executions),
            "{}: at most one execution per process: {}",
            run.fault,
            run.executions
        );
        assert!(
            run.back_after.is_some_and(|after| after <= bound),
            "{}: not coalesced again within {bound:?}: {:?} after: {:?}",
            run.fault,
            run.back_after,
            run.recovery
        );
    }
}

/// One round of two groups (each with its own connection, as two processes) calling one
/// key: `a` calls first, and its work waits until `b` has either joined a flight or
/// started work of its own.
struct PairRound {
    executions: usize,
    failed: usize,
    fleet_roles: [String; 2],
    /// When `b` was seen waiting on the fleet with `a`'s work running.
    joined_at: Option<Instant>,
}

impl PairRound {
    /// Both groups shared one execution across Redis.
    fn coalesced(&self) -> bool {
        self.executions == 1
            && self.failed == 0
            && self.fleet_roles.iter().any(|o| o == "waiter")
            && !self.fleet_roles.iter().any(|o| o.starts_with("fallback"))
    }
}

async fn pair_round(a: &RedisGroup<u64>, b: &RedisGroup<u64>, round: u64) -> PairRound {
    let (gate, runs) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    let call = |group: &RedisGroup<u64>| {
        let (group, gate, runs) = (group.clone(), gate.clone(), Arc::clone(&runs));
        tokio::spawn(async move {
            group
                .call("k", || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    gate.wait().await;
                    round
                })
                .with_role()
                .await
                .paired()
        })
    };
    let first = call(a);
    wait_until("a runs the work", || {
        runs.load(Ordering::SeqCst) >= 1 || first.is_finished()
    })
    .await;
    let second = call(b);
    let mut joined_at = None;
    wait_until("b waits or runs the work", || {
        if b.fleet_waiting() == 1 && joined_at.is_none() {
            joined_at = Some(Instant::now());
        }
        joined_at.is_some() || runs.load(Ordering::SeqCst) >= 2 || second.is_finished()
    })
    .await;
    gate.open();
    let mut failed = 0;
    let mut fleet_roles = [String::new(), String::new()];
    for (task, fleet_role) in [first, second].into_iter().zip(&mut fleet_roles) {
        match task.await.expect("task") {
            Ok((value, settled)) => {
                failed += usize::from(value != round);
                *fleet_role = label(settled);
            }
            Err(e) => {
                failed += 1;
                *fleet_role = format!("error: {e}");
            }
        }
    }
    PairRound {
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
}

impl Phase {
    fn add(&mut self, round: &PairRound) {
        self.rounds += 1;
        self.executions += round.executions;
        self.failed += round.failed;
        self.coalesced += usize::from(round.coalesced());
    }
}

/// The silent fault of a network: every open connection (and every one opened while it
/// lasts) stops carrying bytes for good, and nothing resets it. Each group replaces its
/// connection; after the network heals the two groups share one execution again within
/// the crate docs' recovery target, and no call fails at any point. The breaker's
/// cool-down (10 s here) is longer than the target: a replaced connection that answers
/// must not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_network_heals_to_coalescing_within_the_stated_bound_without_a_failed_call() {
    let Some(server) = Server::start() else {
        return;
    };
    support::warnings::install();
    let proxy = Proxy::start(server.port).await;
    let (lease, op_timeout, cap) = (
        Duration::from_secs(1),
        Duration::from_millis(200),
        Duration::from_secs(1),
    );
    let bound = lease + 3 * op_timeout + cap;
    let config = || {
        fast("silent")
            .lease_ttl(lease)
            .op_timeout(op_timeout)
            .reconnect(Duration::from_millis(100), cap)
            .breaker(3, Duration::from_secs(10))
    };
    let a = RedisGroup::<u64>::open(&proxy.url(), config()).expect("group");
    let b = RedisGroup::<u64>::open(&proxy.url(), config()).expect("group");
    let mut round = 0;
    let mut before = Phase::default();
    let first = pair_round(&a, &b, round).await;
    before.add(&first);
    assert!(first.coalesced(), "healthy: {:?}", first.fleet_roles);

    proxy.set(Fault::Silent);
    let silenced = Instant::now();
    let mut during = Phase::default();
    while silenced.elapsed() < Duration::from_secs(3) {
        round += 1;
        during.add(&pair_round(&a, &b, round).await);
    }
    for stats in [a.fleet_stats(), b.fleet_stats()] {
        // Replaced for its silence (never "closed": the proxy resets nothing), and said so.
        assert!(
            stats.reconnects(ReconnectReason::Timeouts)
                + stats.reconnects(ReconnectReason::HealthCheck)
                >= 1
                && stats.reconnects(ReconnectReason::Closed) == 0,
            "each group replaced its silent connection: {stats:?}"
        );
        assert!(matches!(
            stats.last_reconnect,
            Some((ReconnectReason::Timeouts | ReconnectReason::HealthCheck, _))
        ));
    }

    proxy.set(Fault::None);
    let healed = Instant::now();
    let mut after = Phase::default();
    let back_after = loop {
        round += 1;
        let result = pair_round(&a, &b, round).await;
        after.add(&result);
        if result.coalesced() {
            break result.joined_at.expect("joined") - healed;
        }
        assert!(
            healed.elapsed() < bound * 4,
            "not coalescing {:?} after the heal: {:?}",
            healed.elapsed(),
            result.fleet_roles
        );
    };
    let stats = [a.fleet_stats(), b.fleet_stats()];
    println!(
        "two groups through a proxy silenced for 3 s (lease {lease:?}, op_timeout {op_timeout:?}, reconnect cap {cap:?}, breaker open 10 s):"
    );
    println!("| phase | rounds | executions | failed calls | coalesced rounds |");
    println!("|---|---|---|---|---|");
    for (name, phase) in [
        ("before", &before),
        ("silent", &during),
        ("after the heal", &after),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            phase.rounds, phase.executions, phase.failed, phase.coalesced
        );
    }
    println!(
        "coalescing back {} ms after the heal (target {} ms); connections replaced per group: {:?}; failed connection attempts per group: {:?}",
        back_after.as_millis(),
        bound.as_millis(),
        stats.each_ref().map(|s| s.reconnects),
        stats.each_ref().map(|s| s.connect_failures)
    );
    assert_eq!(
        before.failed + during.failed + after.failed,
        0,
        "no call fails"
    );
    assert!(back_after <= bound, "{back_after:?} > {bound:?}");
    assert!(
        support::warnings::logged(&["redis connection", "replaced", "got no answer within"]),
        "the replacement and its reason are warned about"
    );
}
