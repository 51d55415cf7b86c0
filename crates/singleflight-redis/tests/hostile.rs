//! Faults, cancellations, bad settings, credentials and hostile data, against a real
//! `redis-server` on loopback started per test and stopped by its pid. Each group has its
//! own connection, like a process. Without a server the tests skip loudly, and fail under
//! `CI=true`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use singleflight_redis::{FallbackReason, FleetRole, OpenError, RedisGroup};
use support::{Gate, Paired, Server, fast, lead_and_wait, wait_until, warnings};

async fn query<T: redis::FromRedisValue>(server: &Server, args: &[&str]) -> T {
    let mut conn = server.connection().await;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut conn).await.expect(args[0])
}

/// The base name (`sf:{ns:hash}`) of the only flight in `namespace` that has a
/// generation counter.
async fn flight_base(server: &Server, namespace: &str) -> String {
    let keys: Vec<String> = query(server, &["KEYS", &format!("sf:{{{namespace}:*:gen")]).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    keys[0].strip_suffix(":gen").expect("counter").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_probe_does_not_leave_the_breaker_open() {
    let Some(server) = Server::start() else {
        return;
    };
    let config = fast("probe")
        .op_timeout(Duration::from_millis(500))
        .breaker(1, Duration::from_millis(100));
    let group = RedisGroup::<u64>::open(&server.url(), config).expect("group");
    let (_, role) = group
        .call("k", || async { 1 })
        .with_role()
        .await
        .paired()
        .expect("value");
    assert!(matches!(role, FleetRole::Leader { .. }), "{role:?}");
    server.signal("STOP");
    let (_, role) = group
        .call("k", || async { 2 })
        .with_role()
        .await
        .paired()
        .expect("value");
    assert_eq!(role, FleetRole::Fallback(FallbackReason::RedisTimeout));
    // Open: calls skip Redis. After the cool-down one call probes the frozen server, and
    // its client gives up on it after 50 ms.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout(
            Duration::from_millis(50),
            group.call("k", || async { 3 }).with_role(),
        )
        .await
        {
            Ok(result) => {
                let (_, role) = result.paired().expect("value");
                assert_eq!(role, FleetRole::Fallback(FallbackReason::CircuitOpen));
            }
            Err(_) => break,
        }
        assert!(Instant::now() < deadline, "no call ever probed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.signal("CONT");
    // The dropped probe ended with its call: a later call probes and closes the breaker.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, role) = group
            .call("k", || async { 4 })
            .with_role()
            .await
            .paired()
            .expect("value");
        if matches!(role, FleetRole::Leader { .. }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the breaker stayed open after Redis recovered: {role:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cancelled_during_its_join_releases_the_lease() {
    let Some(server) = Server::start() else {
        return;
    };
    // The lease (5 s) is what everyone would wait out if the cancelled join's lease were
    // never released; the pause (600 ms) is what they should wait instead.
    let config = || {
        fast("cancel-join")
            .lease_ttl(Duration::from_secs(5))
            .op_timeout(Duration::from_secs(2))
    };
    let a = RedisGroup::<u64>::open(&server.url(), config()).expect("group");
    let b = RedisGroup::<u64>::open(&server.url(), config()).expect("group");
    a.call("warm", || async { 0 })
        .with_role()
        .await
        .paired()
        .expect("value");
    b.call("warm", || async { 0 })
        .with_role()
        .await
        .paired()
        .expect("value");
    let runs = Arc::new(AtomicUsize::new(0));
    let work = |runs: Arc<AtomicUsize>| async move {
        runs.fetch_add(1, Ordering::SeqCst);
        9
    };
    let _: () = query(&server, &["CLIENT", "PAUSE", "600", "WRITE"]).await;
    let started = Instant::now();
    // a's first caller: its join waits on the paused server, and its client gives up.
    let cancelled = tokio::spawn({
        let (a, runs) = (a.clone(), Arc::clone(&runs));
        async move { tokio::time::timeout(Duration::from_millis(150), a.call("k", || work(runs))).await }
    });
    wait_until("a's first caller reached Redis", || a.in_flight() == 1).await;
    let promoted = tokio::spawn({
        let (a, runs) = (a.clone(), Arc::clone(&runs));
        async move { a.call("k", || work(runs)).with_role().await.paired() }
    });
    wait_until("a's second caller waits", || a.waiters("k") == 1).await;
    let other = tokio::spawn({
        let (b, runs) = (b.clone(), Arc::clone(&runs));
        async move { b.call("k", || work(runs)).with_role().await.paired() }
    });
    assert!(
        cancelled.await.expect("task").is_err(),
        "cancelled at 150 ms"
    );
    let (value, promoted_outcome) = promoted.await.expect("task").expect("value");
    let promoted_took = started.elapsed();
    let (other_value, other_outcome) = other.await.expect("task").expect("value");
    let other_took = started.elapsed();
    assert_eq!((value, other_value), (9, 9));
    assert!(
        !promoted_outcome.is_fallback() && !other_outcome.is_fallback(),
        "{promoted_outcome:?} {other_outcome:?}"
    );
    // One flight, or two if the first ended before Redis applied the cancelled join
    // (which then starts a new flight): never one per caller.
    assert!(runs.load(Ordering::SeqCst) <= 2, "{runs:?}");
    for took in [promoted_took, other_took] {
        assert!(
            took < Duration::from_secs(3),
            "waited {took:?}: the cancelled call's lease (5 s) was not released"
        );
    }
    println!(
        "cancelled join: promoted waiter done after {promoted_took:?}, other process after {other_took:?} (pause 600 ms, lease 5 s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_on_open_and_no_limit_never_panics() {
    let Some(server) = Server::start() else {
        return;
    };
    for (config, setting) in [
        (fast("s").poll(Duration::ZERO, Duration::ZERO), "poll"),
        (fast("s").lease_ttl(Duration::ZERO), "lease_ttl"),
        (fast("s").lease_ttl(Duration::MAX), "lease_ttl"),
        (fast("s").result_linger(Duration::MAX), "result_linger"),
        (fast("s{x}"), "namespace"),
    ] {
        match RedisGroup::<u64>::open(&server.url(), config) {
            Err(OpenError::Config(error)) => {
                assert_eq!(error.setting(), setting);
                assert!(error.to_string().contains(error.accepted()), "{error}");
            }
            other => panic!("{setting}: {:?}", other.map(|_| ())),
        }
    }
    // No limit on the waiter's wait and the leader's hold.
    let config = || {
        fast("nolimit")
            .wait_timeout(Duration::MAX)
            .max_hold(Duration::MAX)
            .warn_interval(Duration::MAX)
    };
    let (role, value, runs) =
        lead_and_wait(&server, config(), config(), 1u64, 2u64, async |_| {}, false).await;
    assert!(matches!(role, FleetRole::Waiter { .. }), "{role:?}");
    assert_eq!((value, runs), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_applies_its_own_max_value_before_decoding() {
    let Some(server) = Server::start() else {
        return;
    };
    let big = "x".repeat(20 * 1024);
    // Inline (in the message) and by the result key.
    for inline_max in [64 * 1024, 1024] {
        let leader = fast("max").inline_max(inline_max);
        let waiter = fast("max").inline_max(inline_max).max_value(1024);
        let (role, value, runs) = lead_and_wait(
            &server,
            leader,
            waiter,
            big.clone(),
            "mine".to_owned(),
            async |_| {},
            false,
        )
        .await;
        assert_eq!(role, FleetRole::Fallback(FallbackReason::TooLarge));
        assert_eq!((value.as_str(), runs), ("mine", 2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_data_at_our_keys_runs_locally_is_reported_and_heals_within_one_lease() {
    let Some(server) = Server::start() else {
        return;
    };
    warnings::install();
    let lease = Duration::from_millis(800);
    let config = fast("foreign")
        .lease_ttl(lease)
        .result_linger(lease)
        .warn_interval(Duration::ZERO);
    let group = RedisGroup::<u64>::open(&server.url(), config).expect("group");
    group
        .call("k", || async { 0 })
        .with_role()
        .await
        .paired()
        .expect("value");
    let base = flight_base(&server, "foreign").await;
    let lock = format!("{base}:lock");
    let counter = format!("{base}:gen");
    let result = format!("{base}:res");
    // (command, key, what) — each without a TTL, so it would stay forever.
    let cases: [(&[&str], &str); 7] = [
        (&["SET", &lock, "garbage"], "lease"),
        (&["SET", &lock, "abc:tok"], "lease"),
        (
            &["SET", &lock, "5:looks-like-ours-but-never-expires"],
            "lease",
        ),
        (&["HSET", &lock, "a", "b"], "lease"),
        (&["SET", &counter, "not a number"], "generation counter"),
        (&["SET", &result, "a string"], "result"),
        (&["HSET", &result, "g", "x", "v", "y"], "result"),
    ];
    for (command, what) in cases {
        let _: () = query(&server, &["DEL", &lock, &result]).await;
        let _: () = query(&server, &["SET", &counter, "7"]).await;
        let _: redis::Value = query(&server, command).await;
        let planted = Instant::now();
        let (value, role) = group
            .call("k", || async { 1 })
            .with_role()
            .await
            .paired()
            .expect("value");
        assert_eq!(
            (value, role),
            (1, FleetRole::Fallback(FallbackReason::ForeignData)),
            "{command:?}"
        );
        // It now expires within one lease (or the result linger), and then the key
        // coalesces again.
        let key = command[1];
        let ttl: i64 = query(&server, &["PTTL", key]).await;
        assert!(
            (0..=800).contains(&ttl),
            "{command:?}: the foreign key got no bounded TTL: {ttl}"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, role) = group
                .call("k", || async { 2 })
                .with_role()
                .await
                .paired()
                .expect("value");
            // Elected (a tamed lease that looks like ours is followed until it expires,
            // then replaced).
            if !role.is_fallback() {
                break;
            }
            assert_eq!(role, FleetRole::Fallback(FallbackReason::ForeignData));
            assert!(Instant::now() < deadline, "{command:?}: never healed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let healed = planted.elapsed();
        assert!(
            healed < lease + Duration::from_secs(2),
            "{command:?} healed after {healed:?}"
        );
        assert!(
            warnings::logged(&["holds data that is not", what]),
            "{what}"
        );
    }
    assert!(group.fleet_stats().fallbacks(FallbackReason::ForeignData) >= 7);
}

/// A result of a newer generation than a leader's own (planted here without a TTL, as
/// by a writer that is not us) is never overwritten by that leader, but its completion
/// makes it expire within one linger, so the key coalesces again after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_result_survives_a_late_leader_but_expires_within_a_linger() {
    let Some(server) = Server::start() else {
        return;
    };
    let linger = Duration::from_millis(800);
    let group =
        RedisGroup::<u64>::open(&server.url(), fast("newer").result_linger(linger)).expect("group");
    group
        .call("k", || async { 0 })
        .with_role()
        .await
        .paired()
        .expect("value");
    let base = flight_base(&server, "newer").await;
    let result = format!("{base}:res");
    let gate = Gate::new();
    let lead = tokio::spawn({
        let (group, gate) = (group.clone(), gate.clone());
        async move {
            group
                .call("k", || async move {
                    gate.wait().await;
                    1
                })
                .with_role()
                .await
                .paired()
        }
    });
    wait_until("the leader runs", || group.in_flight() == 1).await;
    let _: () = query(&server, &["DEL", &result]).await;
    let _: () = query(&server, &["HSET", &result, "g", "1000000", "v", "newer"]).await;
    assert_eq!(query::<i64>(&server, &["PTTL", &result]).await, -1);
    gate.open();
    let (_, role) = lead.await.expect("task").expect("value");
    assert_eq!(role, FleetRole::Leader { generation: 2 });
    let kept: Vec<String> = query(&server, &["HMGET", &result, "g", "v"]).await;
    assert_eq!(kept, ["1000000", "newer"], "not overwritten");
    let ttl: i64 = query(&server, &["PTTL", &result]).await;
    assert!((0..=800).contains(&ttl), "no bounded TTL: {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_errors_count_toward_the_breaker() {
    let Some(server) = Server::start() else {
        return;
    };
    let group = RedisGroup::<u64>::open(
        &server.url(),
        fast("oom").breaker(2, Duration::from_secs(60)),
    )
    .expect("group");
    group
        .call("k", || async { 0 })
        .with_role()
        .await
        .paired()
        .expect("value");
    // Every write now fails with OOM; subscriptions still work.
    let _: () = query(&server, &["CONFIG", "SET", "maxmemory", "1"]).await;
    for _ in 0..2 {
        let (_, role) = group
            .call("k", || async { 1 })
            .with_role()
            .await
            .paired()
            .expect("value");
        assert_eq!(role, FleetRole::Fallback(FallbackReason::RedisUnavailable));
    }
    let (_, role) = group
        .call("k", || async { 1 })
        .with_role()
        .await
        .paired()
        .expect("value");
    assert_eq!(
        role,
        FleetRole::Fallback(FallbackReason::CircuitOpen),
        "two script errors in a row open the breaker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_subscribes_as_the_last_one_leaves_keeps_its_subscription() {
    let Some(server) = Server::start() else {
        return;
    };
    // Results must come by push: the waiter's re-checks are a minute apart.
    let slow_poll = fast("resub")
        .poll(Duration::from_secs(60), Duration::from_secs(60))
        .wait_timeout(Duration::from_secs(120));
    let leader = RedisGroup::<u64>::open(&server.url(), fast("resub")).expect("group");
    let waiter = RedisGroup::<u64>::open(&server.url(), slow_poll).expect("group");
    const ROUNDS: u64 = 100;
    for round in 0..ROUNDS {
        let gate = Gate::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let lead = tokio::spawn({
            let (leader, gate, runs) = (leader.clone(), gate.clone(), Arc::clone(&runs));
            async move {
                leader
                    .call("k", || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        gate.wait().await;
                        round
                    })
                    .with_role()
                    .await
                    .paired()
            }
        });
        wait_until("leader runs", || runs.load(Ordering::SeqCst) == 1).await;
        let wait = |value| {
            let waiter = waiter.clone();
            async move {
                waiter
                    .call("k", || async move { value })
                    .with_role()
                    .await
                    .paired()
            }
        };
        let first = tokio::spawn(wait(1000));
        wait_until("waiter waits", || waiter.fleet_waiting() == 1).await;
        let second = tokio::spawn(wait(2000));
        wait_until("second joins", || waiter.waiters("k") == 1).await;
        // The first caller goes away: its subscription is the channel's last and is
        // unsubscribed while the second caller, promoted, subscribes anew.
        first.abort();
        wait_until("second waits for another process", || {
            waiter.waiters("k") == 0 && waiter.fleet_waiting() == 1
        })
        .await;
        gate.open();
        let got = tokio::time::timeout(Duration::from_secs(10), second).await;
        let (value, role) = got
            .unwrap_or_else(|_| {
                panic!("round {round}: no push in 10 s: the subscription was cancelled")
            })
            .expect("task")
            .expect("value");
        assert_eq!(value, round, "{role:?}");
        lead.await.expect("task").expect("value");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_and_acl_users_work_and_a_wrong_password_is_reported() {
    let Some(server) = Server::start_with(&["--requirepass", "s3cret"]) else {
        return;
    };
    warnings::install();
    let _: () = query(
        &server,
        &[
            "ACL", "SETUSER", "app", "on", ">app-pw", "~*", "&*", "+@all",
        ],
    )
    .await;
    // The least a user needs (as the crate docs list it).
    let _: () = query(
        &server,
        &[
            "ACL",
            "SETUSER",
            "least",
            "on",
            ">least-pw",
            "resetchannels",
            "~sf:*",
            "&sf:*",
            "-@all",
            "+hello",
            "+evalsha",
            "+eval",
            "+script|load",
            "+subscribe",
            "+unsubscribe",
            "+hget",
            "+get",
            "+set",
            "+pexpire",
            "+pttl",
            "+type",
            "+hmget",
            "+hset",
            "+del",
            "+publish",
        ],
    )
    .await;
    let port = server.port;
    for (url, name) in [
        (server.url(), "password"),
        (format!("redis://app:app-pw@127.0.0.1:{port}/"), "acl"),
        (format!("redis://least:least-pw@127.0.0.1:{port}/"), "least"),
    ] {
        let leader = RedisGroup::<u64>::open(&url, fast(name)).expect("group");
        let waiter = RedisGroup::<u64>::open(&url, fast(name)).expect("group");
        let (gate, runs) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
        let lead = tokio::spawn({
            let (gate, runs) = (gate.clone(), Arc::clone(&runs));
            async move {
                leader
                    .call("k", || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        gate.wait().await;
                        1
                    })
                    .with_role()
                    .await
                    .paired()
            }
        });
        wait_until("leader runs", || runs.load(Ordering::SeqCst) == 1).await;
        let wait = tokio::spawn({
            let waiter = waiter.clone();
            async move { waiter.call("k", || async { 2 }).with_role().await.paired() }
        });
        wait_until("waiter waits", || waiter.fleet_waiting() == 1).await;
        gate.open();
        let (value, role) = wait.await.expect("task").expect("value");
        assert_eq!(value, 1, "{name}");
        assert!(matches!(role, FleetRole::Waiter { .. }), "{name}: {role:?}");
        let (_, role) = lead.await.expect("task").expect("value");
        assert!(matches!(role, FleetRole::Leader { .. }), "{name}: {role:?}");
    }
    let denied: Vec<redis::Value> = query(&server, &["ACL", "LOG"]).await;
    assert!(denied.is_empty(), "{denied:?}");
    for (url, name) in [
        (
            format!("redis://:wrong@127.0.0.1:{port}/"),
            "wrong-password",
        ),
        (format!("redis://app:wrong@127.0.0.1:{port}/"), "wrong-acl"),
        (format!("redis://127.0.0.1:{port}/"), "no-password"),
    ] {
        let group = RedisGroup::<u64>::open(&url, fast(name)).expect("group");
        let started = Instant::now();
        let (value, role) = group
            .call("k", || async { 2 })
            .with_role()
            .await
            .paired()
            .expect("value");
        assert_eq!(
            (value, role),
            (2, FleetRole::Fallback(FallbackReason::AuthFailed)),
            "{name}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{name}");
    }
    assert!(warnings::logged(&["redis refused the credentials"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_results_are_shared_and_unsigned_or_foreign_signatures_are_refused() {
    let Some(server) = Server::start() else {
        return;
    };
    warnings::install();
    const SECRET: &[u8] = b"a shared secret of 32 bytes.....";
    let signed = |ns: &str| fast(ns).secret(SECRET).warn_interval(Duration::ZERO);
    // Inline in the message, and by the result key.
    for inline_max in [64 * 1024, 8] {
        let (role, value, runs) = lead_and_wait(
            &server,
            signed("signed").inline_max(inline_max),
            signed("signed").inline_max(inline_max),
            "v".to_owned(),
            "mine".to_owned(),
            async |_| {},
            false,
        )
        .await;
        assert!(matches!(role, FleetRole::Waiter { .. }), "{role:?}");
        assert_eq!((value.as_str(), runs), ("v", 1));
    }
    for (leader, name) in [
        (fast("unsigned"), "unsigned"),
        (
            fast("other").secret(*b"another secret, also long enough"),
            "other",
        ),
    ] {
        let (role, value, runs) = lead_and_wait(
            &server,
            leader,
            signed(name),
            "forged".to_owned(),
            "mine".to_owned(),
            async |_| {},
            false,
        )
        .await;
        assert_eq!(
            role,
            FleetRole::Fallback(FallbackReason::Unverified),
            "{name}"
        );
        assert_eq!((value.as_str(), runs), ("mine", 2), "{name}");
    }
    assert!(warnings::logged(&["not signed with this group's secret"]));
}

/// Pub/sub channels are server-wide, not per database: two deployments on one server that
/// differ only in their database number (same namespace, same key, no secret) must not
/// hand each other results. Database 1's leader finishes while database 2's waiter waits
/// on its own leader; the waiter gets its own leader's value, never database 1's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_never_crosses_from_one_database_to_another() {
    let Some(server) = Server::start() else {
        return;
    };
    let url = |db: u8| format!("redis://127.0.0.1:{}/{db}", server.port);
    let one = RedisGroup::<String>::open(&url(1), fast("shared")).expect("group");
    let two_leader = RedisGroup::<String>::open(&url(2), fast("shared")).expect("group");
    let two_waiter = RedisGroup::<String>::open(&url(2), fast("shared")).expect("group");
    let (gate_one, gate_two) = (Gate::new(), Gate::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let lead = |group: &RedisGroup<String>, gate: &Gate, value: &'static str| {
        let (group, gate, runs) = (group.clone(), gate.clone(), Arc::clone(&runs));
        tokio::spawn(async move {
            group
                .call("k", || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    gate.wait().await;
                    value.to_owned()
                })
                .with_role()
                .await
                .paired()
        })
    };
    let lead_one = lead(&one, &gate_one, "from database 1");
    wait_until("database 1's leader runs", || {
        runs.load(Ordering::SeqCst) == 1
    })
    .await;
    let lead_two = lead(&two_leader, &gate_two, "from database 2");
    wait_until("database 2's leader runs", || {
        runs.load(Ordering::SeqCst) == 2
    })
    .await;
    let wait = tokio::spawn({
        let group = two_waiter.clone();
        async move {
            group
                .call("k", || async { "the waiter's own".to_owned() })
                .with_role()
                .await
                .paired()
        }
    });
    wait_until("database 2's waiter waits", || {
        two_waiter.fleet_waiting() == 1
    })
    .await;
    // Both leaders hold generation 1 of the same key in their own database.
    gate_one.open();
    let (value, role) = lead_one.await.expect("task").expect("value");
    assert_eq!(
        (value.as_str(), role),
        ("from database 1", FleetRole::Leader { generation: 1 })
    );
    gate_two.open();
    let (value, role) = wait.await.expect("task").expect("value");
    assert_eq!(
        (value.as_str(), role),
        ("from database 2", FleetRole::Waiter { generation: 1 }),
        "database 2's waiter took only database 2's result"
    );
    assert!(lead_two.await.expect("task").is_ok());
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}
