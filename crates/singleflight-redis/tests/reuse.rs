//! The fleet-wide reuse window (`Config::reuse_for`) and `forget`, against a real
//! `redis-server` on loopback: groups on their own connections stand in for processes,
//! and three worker processes (this test binary re-executed) receive one webhook delivery.
//! Without a server the tests skip loudly, and fail under `CI=true`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use singleflight_redis::{Error, FallbackReason, FleetRole, RedisGroup};
use support::{Gate, Paired, Server, Worker, executions, fast, temp_log, wait_until};

/// A group on its own connection: another process, as far as Redis can tell.
fn process(server: &Server, namespace: &str, window: Option<Duration>) -> RedisGroup<u64> {
    let mut config = fast(namespace);
    if let Some(window) = window {
        config = config.reuse_for(window);
    }
    RedisGroup::open(&server.url(), config).expect("group")
}

/// A call whose work counts its runs and returns `value`.
async fn call(group: &RedisGroup<u64>, runs: &AtomicUsize, value: u64) -> (u64, FleetRole) {
    group
        .call("k", || async move {
            runs.fetch_add(1, Ordering::SeqCst);
            value
        })
        .with_role()
        .await
        .paired()
        .expect("value")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_is_reused_by_other_processes_within_the_window_and_not_after() {
    let Some(server) = Server::start() else {
        return;
    };
    let window = Duration::from_millis(600);
    let a = process(&server, "reuse:window", Some(window));
    let b = process(&server, "reuse:window", Some(window));
    let plain = process(&server, "reuse:window", None);
    let runs = AtomicUsize::new(0);

    let started = Instant::now();
    let (value, fleet_role) = call(&a, &runs, 1).await;
    let returned = Instant::now();
    assert_eq!(
        (value, fleet_role),
        (1, FleetRole::Leader { generation: 1 })
    );

    // A group without a window never reuses (and, leading, keeps nothing for reuse).
    let (value, fleet_role) = call(&plain, &runs, 2).await;
    assert_eq!(
        (value, fleet_role),
        (2, FleetRole::Leader { generation: 2 })
    );

    // Within the window, another process gets the first value without running the work,
    // and its age is measured from the publication, in Redis.
    let (value, fleet_role) = call(&b, &runs, 3).await;
    assert_eq!(value, 1);
    let FleetRole::Reused { generation, age } = fleet_role else {
        panic!("{fleet_role:?}");
    };
    assert_eq!(generation, 1);
    assert!(age < window, "{age:?}");
    assert!(
        age <= started.elapsed() + Duration::from_millis(2),
        "{age:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // Calls keep reusing it until it expires in Redis, then one leads: not before the
    // window has passed since the first call started (the value was published after
    // that), and within a stated bound after it.
    let led_at = loop {
        let before = Instant::now();
        let (value, fleet_role) = call(&b, &runs, 4).await;
        match fleet_role {
            FleetRole::Reused { generation: 1, age } => {
                assert_eq!(value, 1);
                assert!(age < window, "{age:?}");
            }
            FleetRole::Leader { generation: 3 } => {
                assert_eq!(value, 4);
                break before;
            }
            other => panic!("{other:?}"),
        }
        assert!(
            returned.elapsed() < window + Duration::from_secs(2),
            "still reused {:?} after the window",
            returned.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let reused_for = led_at.saturating_duration_since(started);
    assert!(
        reused_for + Duration::from_millis(2) >= window,
        "a call led {reused_for:?} after the first started"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    let stats = b.fleet_stats();
    assert!(stats.reused >= 1, "{stats:?}");
    assert_eq!(stats.leaders, 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_never_reused() {
    let Some(server) = Server::start() else {
        return;
    };
    let window = Duration::from_secs(60);
    let config = fast("reuse:errors").reuse_for(window);
    let a = RedisGroup::<u64, String>::open(&server.url(), config.clone()).expect("group");
    let b = RedisGroup::<u64, String>::open(&server.url(), config).expect("group");
    // An error still says which role the call played.
    let (failed, role) = a
        .try_call("k", || async { Err("boom".to_owned()) })
        .with_role()
        .await;
    assert!(
        matches!(failed, Err(Error::Failed(ref e)) if e == "boom"),
        "{failed:?}"
    );
    assert_eq!(role, Some(FleetRole::Leader { generation: 1 }));
    let (value, fleet_role) = b
        .try_call("k", || async { Ok(7) })
        .with_role()
        .await
        .paired()
        .expect("value");
    assert_eq!(
        (value, fleet_role),
        (7, FleetRole::Leader { generation: 2 })
    );
    // The success is.
    let (value, fleet_role) = a
        .try_call("k", || async { Ok(8) })
        .with_role()
        .await
        .paired()
        .expect("value");
    assert_eq!(value, 7);
    assert!(fleet_role.is_reused(), "{fleet_role:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_value_is_verified_like_a_pushed_one() {
    let Some(server) = Server::start() else {
        return;
    };
    let window = Duration::from_secs(60);
    let signed = |secret: &[u8; 32]| {
        let config = fast("reuse:signed").reuse_for(window).secret(*secret);
        RedisGroup::<u64>::open(&server.url(), config).expect("group")
    };
    let (a, same, other) = (signed(&[1; 32]), signed(&[1; 32]), signed(&[2; 32]));
    let runs = AtomicUsize::new(0);
    assert_eq!(
        call(&a, &runs, 1).await,
        (1, FleetRole::Leader { generation: 1 })
    );
    let (value, fleet_role) = call(&same, &runs, 2).await;
    assert_eq!(value, 1);
    assert!(fleet_role.is_reused(), "{fleet_role:?}");
    assert_eq!(
        call(&other, &runs, 3).await,
        (3, FleetRole::Fallback(FallbackReason::Unverified))
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forget_in_one_process_makes_the_next_call_in_another_lead() {
    let Some(server) = Server::start() else {
        return;
    };
    let window = Duration::from_secs(60);
    let a = process(&server, "reuse:forget", Some(window));
    let b = process(&server, "reuse:forget", Some(window));
    let runs = AtomicUsize::new(0);
    assert_eq!(
        call(&a, &runs, 1).await,
        (1, FleetRole::Leader { generation: 1 })
    );
    assert!(call(&b, &runs, 2).await.1.is_reused());

    a.forget("k").await.expect("forget reaches redis");
    assert_eq!(
        call(&b, &runs, 3).await,
        (3, FleetRole::Leader { generation: 2 }),
        "the next call leads"
    );
    // The new flight's value is reusable again, everywhere.
    let (value, fleet_role) = call(&a, &runs, 4).await;
    assert_eq!(value, 3);
    assert!(
        matches!(fleet_role, FleetRole::Reused { generation: 2, .. }),
        "{fleet_role:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forget_racing_a_flight_never_leaves_its_value_reusable() {
    let Some(server) = Server::start() else {
        return;
    };
    let window = Duration::from_secs(60);
    let a = process(&server, "reuse:race", Some(window));
    let b = process(&server, "reuse:race", Some(window));
    let c = process(&server, "reuse:race", Some(window));
    let (gate, started) = (Gate::new(), Arc::new(AtomicBool::new(false)));
    let lead = tokio::spawn({
        let (a, gate, started) = (a.clone(), gate.clone(), Arc::clone(&started));
        async move {
            a.call("k", || async move {
                started.store(true, Ordering::SeqCst);
                gate.wait().await;
                1
            })
            .with_role()
            .await
            .paired()
        }
    });
    wait_until("the flight runs", || started.load(Ordering::SeqCst)).await;

    // Forgotten while it runs, in another process: the next call does not wait for it.
    b.forget("k").await.expect("forget reaches redis");
    let runs = AtomicUsize::new(0);
    let (value, fleet_role) = call(&c, &runs, 2).await;
    assert_eq!(
        (value, fleet_role),
        (2, FleetRole::Leader { generation: 2 })
    );

    // The forgotten flight completes afterwards: its value is not kept for reuse, and does
    // not replace the newer flight's.
    gate.open();
    assert_eq!(
        lead.await.expect("task").expect("value"),
        (1, FleetRole::Leader { generation: 1 })
    );
    let (value, fleet_role) = call(&b, &runs, 3).await;
    assert_eq!(value, 2, "{fleet_role:?}");
    assert!(
        matches!(fleet_role, FleetRole::Reused { generation: 2, .. }),
        "{fleet_role:?}"
    );

    // Forgotten again while a flight runs, with nothing newer: nothing is left to reuse.
    let gate = Gate::new();
    started.store(false, Ordering::SeqCst);
    a.forget("k").await.expect("forget");
    let lead = tokio::spawn({
        let (a, gate, started) = (a.clone(), gate.clone(), Arc::clone(&started));
        async move {
            a.call("k", || async move {
                started.store(true, Ordering::SeqCst);
                gate.wait().await;
                4
            })
            .with_role()
            .await
            .paired()
        }
    });
    wait_until("the flight runs", || started.load(Ordering::SeqCst)).await;
    b.forget("k").await.expect("forget");
    gate.open();
    assert_eq!(
        lead.await.expect("task").expect("value"),
        (4, FleetRole::Leader { generation: 3 })
    );
    let (value, fleet_role) = call(&c, &runs, 5).await;
    assert_eq!(
        (value, fleet_role),
        (5, FleetRole::Leader { generation: 4 }),
        "the forgotten flight's value is not reused"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// The worker process of [`three_workers_process_one_delivery_once`]: a webhook receiver
/// with a reuse window of `SF_REUSE_MS`. On `hold <id>` it receives a delivery whose
/// processing waits for the next `go` line, printing `SF ready <id> leader|waiter` once
/// it processes it or waits for another process; on `deliver <id>`, one that is processed
/// at once. Each delivery ends with `SF result <id> <fleet_role>`; each processing appends
/// `<id> <pid>` to `SF_LOG`. A no-op unless `SF_WORKER` is set.
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
    use tokio::io::AsyncBufReadExt;
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} unset"));
    let window = Duration::from_millis(var("SF_REUSE_MS").parse().expect("window"));
    let config = fast(&var("SF_NS")).reuse_for(window);
    let group = RedisGroup::<String>::open(&var("SF_URL"), config).expect("group");
    let log = var("SF_LOG");
    let go = Gate::new();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let (verb, id) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let held = match verb {
            "go" => {
                go.open();
                continue;
            }
            "hold" => true,
            "deliver" => false,
            _ => continue,
        };
        let (group, log, go, id) = (group.clone(), log.clone(), go.clone(), id.to_owned());
        let started = Arc::new(AtomicBool::new(false));
        let delivery = tokio::spawn({
            let (group, started, id) = (group.clone(), Arc::clone(&started), id.clone());
            async move {
                group
                    .call(&id.clone(), || async move {
                        use std::io::Write;
                        let mut file = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&log)
                            .expect("log");
                        writeln!(file, "{id} {}", std::process::id()).expect("log");
                        started.store(true, Ordering::SeqCst);
                        if held {
                            go.wait().await;
                        }
                        format!("processed {id}")
                    })
                    .with_role()
                    .await
                    .paired()
            }
        });
        tokio::spawn(async move {
            if held {
                let deadline = Instant::now() + Duration::from_secs(20);
                let role = loop {
                    if started.load(Ordering::SeqCst) {
                        break "leader";
                    }
                    if group.fleet_waiting() == 1 {
                        break "waiter";
                    }
                    assert!(Instant::now() < deadline, "never led nor waited");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                };
                println!("SF ready {id} {role}");
            }
            let (value, fleet_role) = delivery.await.expect("delivery").expect("value");
            assert_eq!(value, format!("processed {id}"));
            let label = match fleet_role {
                FleetRole::Leader { .. } => "leader",
                FleetRole::Waiter { .. } => "waiter",
                FleetRole::Reused { .. } => "reused",
                _ => "other",
            };
            println!("SF result {id} {label}");
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_process_one_delivery_once() {
    let Some(server) = Server::start() else {
        return;
    };
    let log = temp_log("webhook");
    let (url, log_path) = (server.url(), log.to_str().expect("utf-8").to_owned());
    let env = [
        ("SF_URL", url.as_str()),
        ("SF_NS", "reuse:webhook"),
        ("SF_REUSE_MS", "1500"),
        ("SF_LOG", log_path.as_str()),
    ];
    let mut workers: Vec<Worker> = (0..3).map(|_| Worker::spawn_with(&env)).collect();

    // The same delivery reaches the three workers at once: one processes it.
    for worker in &mut workers {
        worker.send("hold evt_1").await;
    }
    let mut roles = Vec::new();
    for worker in &mut workers {
        let line = worker.expect("ready evt_1").await;
        roles.push(line.rsplit(' ').next().expect("role").to_owned());
    }
    roles.sort();
    assert_eq!(roles, ["leader", "waiter", "waiter"]);
    for worker in &mut workers {
        worker.send("go").await;
    }
    let mut fleet_roles = Vec::new();
    for worker in &mut workers {
        let line = worker.expect("result evt_1").await;
        fleet_roles.push(line.rsplit(' ').next().expect("fleet_role").to_owned());
    }
    fleet_roles.sort();
    assert_eq!(fleet_roles, ["leader", "waiter", "waiter"]);
    assert_eq!(executions(&log), 1);

    // Redelivered to each of them within the window: answered, not processed.
    for worker in &mut workers {
        worker.send("deliver evt_1").await;
        assert_eq!(worker.expect("result evt_1").await, "result evt_1 reused");
    }
    assert_eq!(executions(&log), 1, "processed once for six deliveries");

    // After the window, a redelivery is processed again, once.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        workers[0].send("deliver evt_1").await;
        let line = workers[0].expect("result evt_1").await;
        if line == "result evt_1 leader" {
            break;
        }
        assert_eq!(line, "result evt_1 reused");
        assert!(Instant::now() < deadline, "still reused after 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(executions(&log), 2);
    drop(workers);
    let _ = std::fs::remove_file(&log);
}
