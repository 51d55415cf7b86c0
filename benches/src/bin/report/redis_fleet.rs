//! The Redis scenario: what `singleflight-redis` adds to a call on loopback, in units of a
//! Redis `PING` round trip measured in the same run over the same kind of connection.
//!
//! It starts its own `redis-server` (from `SF_REDIS_SERVER`, else the `PATH`) on a free
//! loopback port and stops it at the end; without one it prints a one-line notice and the
//! report goes on. All but the waiter run on one current-thread tokio runtime; samples
//! interleave call by call, so that a busy moment weighs on every figure alike:
//!
//! * **`PING`**: one `PING` over a RESP3 `ConnectionManager`, as the group uses.
//! * **leader's added latency**: a `RedisGroup` call that leads its flight (no other
//!   process wants the key), minus an in-process `singleflight-tokio` call; the work is
//!   ready at once, so the difference is the fleet layer's Redis round trips and work.
//! * **waiter's delivery**: two groups with their own connections, the waiter's on a
//!   thread and runtime of its own, stand for two processes. The waiter waits on the leader's flight; the figure is the time from the
//!   leader's work returning to the waiter's call returning the value: the leader's
//!   completion going out, Redis running it and pushing the message, the waiter
//!   decoding it. For scale, a plain pattern subscriber on a third connection notes when
//!   the same message reaches it.
//! * **commands per flight**: what each group's connection sends, as the server's
//!   `MONITOR` sees it (untimed, after the timed rounds), and the server's own time per
//!   call of each command (`INFO commandstats`).
//! * **on a Redis Cluster** (when `redis-cli` is on the `PATH` too): the leader's added
//!   latency and the waiter's delivery again, on a local cluster of three primaries
//!   (`redis-cli --cluster create`), in units of a `PING` to the node that serves the
//!   key's slot, sampled the same way.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use singleflight_redis::{Cluster, Config, FleetRole, RedisGroup};
use tokio::sync::oneshot;

/// The targets, in `PING` round trips.
const LEADER_TARGET: f64 = 2.0;
const WAITER_TARGET: f64 = 1.5;

/// How many samples of each figure a round takes.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    rounds: usize,
    calls: usize,
    waits: usize,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                rounds: 5,
                calls: 1_000,
                waits: 200,
            }
        } else {
            Self {
                rounds: 9,
                calls: 2_000,
                waits: 500,
            }
        }
    }
}

/// The scenario's figures (medians over every sample of every round, in µs).
#[derive(Debug)]
pub(crate) struct Figures {
    server: String,
    samples: Sizes,
    ping: Spread,
    plain: Spread,
    leader: Spread,
    waiter: Spread,
    /// When the plain subscriber had the leader's message, after the leader's work.
    heard: Spread,
    /// Commands a leader sends per flight, by name, as the server saw them.
    leader_commands: BTreeMap<String, f64>,
    /// Commands a waiter sends per flight, by name.
    waiter_commands: BTreeMap<String, f64>,
    /// The server's own time per call (µs) of `PING` and of each script call.
    server_time: BTreeMap<String, f64>,
    /// Calls that did not lead or wait as planned (a fallback), by what they got.
    surprises: Vec<String>,
    /// The same on a Redis Cluster, or why not.
    cluster: Result<ClusterFigures, String>,
}

/// The leader's and the waiter's figures on a cluster of three primaries (µs).
#[derive(Debug)]
pub(crate) struct ClusterFigures {
    /// A `PING` to the node serving the key's slot.
    ping: Spread,
    plain: Spread,
    leader: Spread,
    waiter: Spread,
    surprises: Vec<String>,
}

/// Runs the scenario, or says in one line why it cannot and returns `None`.
pub(crate) fn run(quick: bool) -> Option<Figures> {
    let Some(binary) = server_binary() else {
        eprintln!(
            "redis: skipped (no redis-server on the PATH; install it or set SF_REDIS_SERVER)"
        );
        return None;
    };
    let sizes = Sizes::new(quick);
    eprintln!(
        "redis ({} rounds of {} calls and {} followed flights)…",
        sizes.rounds, sizes.calls, sizes.waits
    );
    let server = match Server::start(&binary) {
        Ok(server) => server,
        Err(why) => {
            eprintln!("redis: skipped ({why})");
            return None;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let figures = runtime.block_on(measure(&server.url(), sizes));
    drop(server);
    match figures {
        Ok(mut figures) => {
            figures.cluster = LocalCluster::start(&binary).and_then(|cluster| {
                eprintln!("redis cluster (3 primaries)…");
                runtime
                    .block_on(measure_cluster(&cluster.seeds, sizes))
                    .map_err(|e| e.to_string())
            });
            if let Err(why) = &figures.cluster {
                eprintln!("redis cluster: skipped ({why})");
            }
            Some(figures)
        }
        Err(error) => {
            eprintln!("redis: skipped ({error})");
            None
        }
    }
}

/// The leader's added latency and the waiter's delivery on a cluster, in `PING`s to the
/// node serving the key's slot. One key, and one namespace, for both: a flight ends
/// before the next starts, and nothing is reused without a reuse window.
async fn measure_cluster(seeds: &[String], sizes: Sizes) -> redis::RedisResult<ClusterFigures> {
    let config = || Config::new("report").op_timeout(Duration::from_secs(2));
    let open = |seeds: Vec<String>| {
        move || RedisGroup::<u64>::open_cluster(&Cluster::new(seeds), config()).expect("a group")
    };
    let leader = open(seeds.to_vec())();
    let waiter = Remote::with(open(seeds.to_vec())).await;
    let plain = singleflight_tokio::Group::<String, u64>::new();
    let heard: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut surprises = Vec::new();
    // Untimed: read the slot map, connect, load the scripts on the key's node.
    lead(&leader, "k", &mut surprises).await;
    lead_and_wait(&leader, &waiter, "k", &heard, &mut surprises).await;
    // The node serving the key's slot: the one holding its generation counter.
    let mut node = None;
    for seed in seeds {
        let client = redis::Client::open(format!("redis://{seed}/?protocol=resp3"))?;
        let mut conn = ConnectionManager::new(client).await?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("sf:{report:*}:gen")
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            node = Some(conn);
        }
    }
    let Some(mut conn) = node else {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "no node holds the key's generation counter",
        )));
    };
    let (mut pings, mut plains, mut leads, mut waits) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..sizes.rounds {
        for _ in 0..sizes.calls {
            pings.push(ping(&mut conn).await?);
            let started = Instant::now();
            let value = plain.call("plain", || async { 1 }).await;
            std::hint::black_box(value.ok());
            plains.push(micros(started.elapsed()));
            let started = Instant::now();
            lead(&leader, "k", &mut surprises).await;
            leads.push(micros(started.elapsed()));
        }
        for _ in 0..sizes.waits {
            pings.push(ping(&mut conn).await?);
            let flight = lead_and_wait(&leader, &waiter, "k", &heard, &mut surprises).await;
            if let Some((delivery, _)) = flight {
                waits.push(micros(delivery));
            }
        }
    }
    surprises.sort();
    surprises.dedup();
    Ok(ClusterFigures {
        ping: Spread::of(pings),
        plain: Spread::of(plains),
        leader: Spread::of(leads),
        waiter: Spread::of(waits),
        surprises,
    })
}

async fn measure(url: &str, sizes: Sizes) -> redis::RedisResult<Figures> {
    let client = redis::Client::open(format!("{url}?protocol=resp3"))?;
    let mut conn = ConnectionManager::new(client).await?;
    let server = info_field(&mut conn, "server", "redis_version")
        .await?
        .map_or_else(
            || "redis-server".to_owned(),
            |v| format!("redis-server {v}"),
        );
    let config = |namespace| Config::new(namespace).op_timeout(Duration::from_secs(2));
    let leader = RedisGroup::<u64>::open(url, config("report")).expect("a group");
    let waiter = {
        let url = url.to_owned();
        Remote::with(move || RedisGroup::<u64>::open(&url, config("report")).expect("a group"))
            .await
    };
    // The timed leader calls' own namespace, which the plain subscriber below does not
    // hear: its message handling would fall into the next sample's time.
    let soloist = RedisGroup::<u64>::open(url, config("report-solo")).expect("a group");
    let plain = singleflight_tokio::Group::<String, u64>::new();
    let mut surprises = Vec::new();
    // A plain pattern subscriber of every flight channel of the followed flights'
    // namespace: when the leader's message reaches a client at all, for scale.
    let heard: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut plain_subscriber = {
        let heard = Arc::clone(&heard);
        let push = move |info: redis::PushInfo| -> Result<(), ()> {
            if info.kind == redis::PushKind::PMessage {
                *heard.lock().unwrap() = Some(Instant::now());
            }
            Ok(())
        };
        let client = redis::Client::open(format!("{url}?protocol=resp3"))?;
        let config = redis::aio::ConnectionManagerConfig::new().set_push_sender(push);
        ConnectionManager::new_with_config(client, config).await?
    };
    plain_subscriber.psubscribe("sf:{report:*").await?;

    // Untimed: connect both groups and load the scripts (a first call pays NOSCRIPT).
    lead(&soloist, "warm", &mut surprises).await;
    lead_and_wait(&leader, &waiter, "warm", &heard, &mut surprises).await;
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await?;

    let (mut pings, mut plains, mut leads, mut waits, mut hears) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Interleaved call by call, so that the machine's load, which changes from one
    // millisecond to the next here, weighs on every figure alike.
    for _ in 0..sizes.rounds {
        for _ in 0..sizes.calls {
            pings.push(ping(&mut conn).await?);
            let started = Instant::now();
            let value = plain.call("plain", || async { 1 }).await;
            std::hint::black_box(value.ok());
            plains.push(micros(started.elapsed()));
            let started = Instant::now();
            lead(&soloist, "lead", &mut surprises).await;
            leads.push(micros(started.elapsed()));
        }
        for _ in 0..sizes.waits {
            pings.push(ping(&mut conn).await?);
            let flight = lead_and_wait(&leader, &waiter, "wait", &heard, &mut surprises).await;
            if let Some((delivery, heard)) = flight {
                waits.push(micros(delivery));
                hears.push(micros(heard));
            }
        }
    }

    // Before the counting: a `MONITOR` slows every command down.
    let server_time = server_time(&mut conn).await?;
    let (leader_commands, waiter_commands) = count_commands(
        url,
        &mut conn,
        &leader,
        &waiter,
        sizes.waits,
        &mut surprises,
    )
    .await?;

    surprises.sort();
    surprises.dedup();
    Ok(Figures {
        server,
        samples: sizes,
        ping: Spread::of(pings),
        plain: Spread::of(plains),
        leader: Spread::of(leads),
        waiter: Spread::of(waits),
        heard: Spread::of(hears),
        leader_commands,
        waiter_commands,
        server_time,
        surprises,
        cluster: Err("not measured".to_owned()),
    })
}

/// One `PING` round trip, in µs.
async fn ping(conn: &mut ConnectionManager) -> redis::RedisResult<f64> {
    let started = Instant::now();
    let _: String = redis::cmd("PING").query_async(conn).await?;
    Ok(micros(started.elapsed()))
}

/// One call that should lead its flight.
async fn lead(group: &RedisGroup<u64>, key: &str, surprises: &mut Vec<String>) {
    match group.call(key, || async { 1 }).with_role().await {
        (Ok(_), Some(FleetRole::Leader { .. })) => {}
        other => surprises.push(format!("a leader got {other:?}")),
    }
}

/// One flight led in `leader` and followed in `waiter`; returns the time from the
/// leader's work returning to the waiter having the value.
async fn lead_and_wait(
    leader: &RedisGroup<u64>,
    waiter: &Remote,
    key: &'static str,
    heard: &Mutex<Option<Instant>>,
    surprises: &mut Vec<String>,
) -> Option<(Duration, Duration)> {
    *heard.lock().unwrap() = None;
    let (open, gate) = oneshot::channel::<()>();
    let (running, is_running) = oneshot::channel::<()>();
    let ended: Arc<Mutex<Option<Instant>>> = Arc::default();
    let lead = tokio::spawn({
        let (leader, ended) = (leader.clone(), Arc::clone(&ended));
        async move {
            leader
                .call(key, || async move {
                    let _ = running.send(());
                    let _ = gate.await;
                    *ended.lock().unwrap() = Some(Instant::now());
                    1
                })
                .with_role()
                .await
        }
    });
    let _ = is_running.await;
    let wait = waiter.runtime.spawn({
        let waiter = waiter.group.clone();
        async move {
            let result = waiter.call(key, || async { 2 }).with_role().await;
            (result, Instant::now())
        }
    });
    // Untimed: leaves the cores to the waiter's thread and the server meanwhile.
    while waiter.group.fleet_waiting() == 0 && !wait.is_finished() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = open.send(());
    let (result, received) = wait.await.expect("the waiter's task");
    let led = lead.await.expect("the leader's task");
    if !matches!(led, (Ok(_), Some(FleetRole::Leader { .. }))) {
        surprises.push(format!("a leader got {led:?}"));
    }
    match result {
        (Ok(1), Some(FleetRole::Waiter { .. })) => {
            let ended = ended.lock().unwrap().expect("the leader's work ended");
            let heard = heard.lock().unwrap().unwrap_or(received);
            Some((
                received.saturating_duration_since(ended),
                heard.saturating_duration_since(ended),
            ))
        }
        other => {
            surprises.push(format!("a waiter got {other:?}"));
            None
        }
    }
}

/// A group on a thread and current-thread runtime of its own, as in another process;
/// dropping it stops the thread.
struct Remote {
    group: RedisGroup<u64>,
    runtime: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Remote {
    /// The group `open` makes, on its own thread and runtime.
    async fn with(open: impl FnOnce() -> RedisGroup<u64> + Send + 'static) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let (started, handle) = oneshot::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime");
            let _ = started.send(runtime.handle().clone());
            runtime.block_on(async {
                let _ = stopped.await;
            });
        });
        let runtime = handle.await.expect("the remote's runtime");
        let group = runtime
            .spawn(async move { open() })
            .await
            .expect("the remote's task");
        Self {
            group,
            runtime,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits until every command of the flights so far has reached the server: no channel is
/// subscribed any more (unsubscribing is the last thing a flight does, in the background).
async fn quiesce(conn: &mut ConnectionManager) -> redis::RedisResult<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .query_async(conn)
            .await?;
        if channels.is_empty() || Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `INFO <section>`'s `field`.
async fn info_field(
    conn: &mut ConnectionManager,
    section: &str,
    field: &str,
) -> redis::RedisResult<Option<String>> {
    let info: String = redis::cmd("INFO").arg(section).query_async(conn).await?;
    Ok(info.lines().find_map(|line| {
        line.strip_prefix(field)?
            .strip_prefix(':')
            .map(|v| v.trim().to_owned())
    }))
}

/// Counts the commands each group sends per flight (scripts' own commands left out), with
/// the server's `MONITOR`: `flights` flights led alone, then `flights` with a waiter.
async fn count_commands(
    url: &str,
    conn: &mut ConnectionManager,
    leader: &RedisGroup<u64>,
    waiter: &Remote,
    flights: usize,
    surprises: &mut Vec<String>,
) -> redis::RedisResult<(BTreeMap<String, f64>, BTreeMap<String, f64>)> {
    const MARK: &str = "singleflight-report";
    let own: String = redis::cmd("CLIENT").arg("INFO").query_async(conn).await?;
    let own = field(&own, "addr").unwrap_or_default();
    let monitor = redis::Client::open(url)?.get_async_monitor().await?;
    let seen = tokio::spawn(async move {
        let mut lines = Vec::new();
        let mut stream = monitor.into_on_message::<String>();
        while let Some(line) = stream.next().await {
            let end = line.contains(&format!("\"{MARK} end\""));
            lines.push(line);
            if end {
                break;
            }
        }
        lines
    });
    let mark = |conn: &mut ConnectionManager, what: &'static str| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("ECHO")
                .arg(format!("{MARK} {what}"))
                .query_async::<String>(&mut conn)
                .await
        }
    };
    mark(conn, "alone").await?;
    for _ in 0..flights {
        lead(leader, "count-lead", surprises).await;
    }
    quiesce(conn).await?;
    mark(conn, "followed").await?;
    for _ in 0..flights {
        lead_and_wait(leader, waiter, "count-wait", &Mutex::new(None), surprises).await;
    }
    quiesce(conn).await?;
    mark(conn, "end").await?;
    let lines = seen.await.expect("the monitor's task");

    // `<time> [<db> <addr>] "<COMMAND>" ...`; scripts' commands show `lua` as the address.
    let mut phase = "";
    let mut leader_addr = None;
    let (mut alone, mut led, mut followed) = (
        BTreeMap::<String, f64>::new(),
        BTreeMap::<String, f64>::new(),
        BTreeMap::<String, f64>::new(),
    );
    for line in &lines {
        if let Some(at) = line.find(&format!("\"{MARK} ")) {
            phase = line[at + MARK.len() + 2..].trim_end_matches('"');
            continue;
        }
        let Some((addr, command)) = line.split_once("] \"").and_then(|(head, rest)| {
            let addr = head.rsplit(' ').next()?;
            Some((addr, rest.split('"').next()?.to_lowercase()))
        }) else {
            continue;
        };
        if addr == "lua" || addr == own {
            continue;
        }
        let each = 1.0 / flights as f64;
        match phase {
            "alone" => {
                leader_addr.get_or_insert_with(|| addr.to_owned());
                *alone.entry(command).or_default() += each;
            }
            "followed" if Some(addr) == leader_addr.as_deref() => {
                *led.entry(command).or_default() += each;
            }
            "followed" => *followed.entry(command).or_default() += each,
            _ => {}
        }
    }
    if led != alone {
        surprises.push(format!(
            "a followed leader sent {} per flight, one alone {}",
            commands(&led),
            commands(&alone)
        ));
    }
    Ok((alone, followed))
}

/// `name=value` out of a `CLIENT INFO` line.
fn field(info: &str, name: &str) -> Option<String> {
    info.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .map(str::to_owned)
}

/// The server's time per call, in µs (`INFO commandstats`), of the commands a flight
/// sends that take time on the server, and of `PING` for scale.
async fn server_time(conn: &mut ConnectionManager) -> redis::RedisResult<BTreeMap<String, f64>> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    Ok(info
        .lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let per_call = stats
                .split(',')
                .find_map(|s| s.strip_prefix("usec_per_call="))?;
            Some((name.to_owned(), per_call.parse().ok()?))
        })
        .filter(|(name, _)| matches!(name.as_str(), "ping" | "evalsha" | "subscribe" | "hget"))
        .collect())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The median and the 90th percentile of some samples (NaN without samples).
#[derive(Clone, Copy, Debug)]
struct Spread {
    median: f64,
    p90: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Self {
        if values.is_empty() {
            return Self {
                median: f64::NAN,
                p90: f64::NAN,
            };
        }
        values.sort_by(f64::total_cmp);
        let mid = values.len() / 2;
        let median = if values.len() % 2 == 0 {
            (values[mid - 1] + values[mid]) / 2.0
        } else {
            values[mid]
        };
        Self {
            median,
            p90: values[(values.len() * 9 / 10).min(values.len() - 1)],
        }
    }
}

fn commands(counts: &BTreeMap<String, f64>) -> String {
    let total: f64 = counts.values().sum();
    let each: Vec<String> = counts
        .iter()
        .map(|(name, n)| format!("`{}` ×{}", name.to_uppercase(), trim(*n)))
        .collect();
    format!("{} ({})", trim(total), each.join(", "))
}

fn trim(n: f64) -> String {
    if (n - n.round()).abs() < 0.005 {
        format!("{n:.0}")
    } else {
        format!("{n:.2}")
    }
}

/// Prints the Redis section of the report.
pub(crate) fn print(figures: Option<&Figures>) {
    println!();
    println!("## Redis (`singleflight-redis` on loopback)");
    println!();
    let Some(f) = figures else {
        println!("Not measured: no `redis-server` to start (see the notice above).");
        return;
    };
    println!(
        "Against a {} on 127.0.0.1 started for the run; current-thread tokio runtimes; \
         medians of every sample over {} interleaved rounds ({} calls and {} followed \
         flights each). The unit is a `PING` round trip over the same kind of connection.",
        f.server, f.samples.rounds, f.samples.calls, f.samples.waits
    );
    println!();
    println!(
        "| figure | µs, median | µs, 90th percentile | `PING` round trips (medians) | target |"
    );
    println!("|---|---:|---:|---:|---|");
    let ping = f.ping.median;
    println!(
        "| `PING` round trip | {:.1} | {:.1} | 1.00 | |",
        ping, f.ping.p90
    );
    println!(
        "| in-process call (singleflight-tokio), for scale | {:.2} | {:.2} | {:.3} | |",
        f.plain.median,
        f.plain.p90,
        f.plain.median / ping
    );
    let verdict = |ratio: f64, target: f64| {
        if ratio <= target {
            format!("≤ {target}: **met**")
        } else {
            format!("≤ {target}: **not met**")
        }
    };
    let added = f.leader.median - f.plain.median;
    println!(
        "| leader's added latency (a leading call − an in-process call) | {:.1} | {:.1} | {:.2} | {} |",
        added,
        f.leader.p90 - f.plain.median,
        added / ping,
        verdict(added / ping, LEADER_TARGET)
    );
    println!(
        "| waiter's delivery (leader's work returns → waiter has the value) | {:.1} | {:.1} | {:.2} | {} |",
        f.waiter.median,
        f.waiter.p90,
        f.waiter.median / ping,
        verdict(f.waiter.median / ping, WAITER_TARGET)
    );
    println!(
        "| a plain subscriber of the channel has the same message, for scale | {:.1} | {:.1} | {:.2} | |",
        f.heard.median,
        f.heard.p90,
        f.heard.median / ping
    );
    println!();
    println!(
        "The waiter's group runs on a thread and runtime of its own, as in another \
         process; the plain subscriber shares the leader's."
    );
    println!();
    println!(
        "Commands sent per flight, as the server's `MONITOR` saw them (a script's own \
         commands left out): a leader's {}; a waiter's {}.",
        commands(&f.leader_commands),
        commands(&f.waiter_commands)
    );
    let times: Vec<String> = f
        .server_time
        .iter()
        .map(|(name, us)| format!("`{}` {us:.1}", name.to_uppercase()))
        .collect();
    println!(
        "The server's own time per call, µs (`INFO commandstats`): {}.",
        times.join(", ")
    );
    for surprise in &f.surprises {
        println!("- unexpected, figures suspect: {surprise}");
    }
    println!();
    match &f.cluster {
        Ok(c) => print_cluster(c),
        Err(why) => println!("On a Redis Cluster: not measured ({why})."),
    }
}

/// The cluster rows: the same figures in `PING`s to the node serving the key's slot.
fn print_cluster(c: &ClusterFigures) {
    println!(
        "On a Redis Cluster of three primaries (started for the run; the same sampling), in \
         units of a `PING` to the node serving the key's slot:"
    );
    println!();
    println!(
        "| figure on the cluster | µs, median | µs, 90th percentile | `PING`s to the key's node (medians) | target |"
    );
    println!("|---|---:|---:|---:|---|");
    let ping = c.ping.median;
    println!(
        "| `PING` to the key's node | {:.1} | {:.1} | 1.00 | |",
        ping, c.ping.p90
    );
    let verdict = |ratio: f64, target: f64| {
        if ratio <= target {
            format!("≤ {target}: **met**")
        } else {
            format!("≤ {target}: **not met**")
        }
    };
    let added = c.leader.median - c.plain.median;
    println!(
        "| leader's added latency | {:.1} | {:.1} | {:.2} | {} |",
        added,
        c.leader.p90 - c.plain.median,
        added / ping,
        verdict(added / ping, LEADER_TARGET)
    );
    println!(
        "| waiter's delivery (sharded pub/sub) | {:.1} | {:.1} | {:.2} | {} |",
        c.waiter.median,
        c.waiter.p90,
        c.waiter.median / ping,
        verdict(c.waiter.median / ping, WAITER_TARGET)
    );
    for surprise in &c.surprises {
        println!("- unexpected on the cluster, figures suspect: {surprise}");
    }
}

/// `redis-cli` on the `PATH` (next to `SF_REDIS_SERVER`'s directory first).
fn cli_binary() -> Option<PathBuf> {
    let beside = std::env::var_os("SF_REDIS_SERVER")
        .map(PathBuf::from)
        .and_then(|server| Some(server.parent()?.join("redis-cli")));
    beside.filter(|path| path.is_file()).or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join("redis-cli"))
            .find(|path| path.is_file())
    })
}

/// Three `redis-server`s joined into a cluster of three primaries, each killed on drop.
struct LocalCluster {
    seeds: Vec<String>,
    _servers: Vec<Server>,
    dir: PathBuf,
}

impl LocalCluster {
    fn start(binary: &PathBuf) -> Result<Self, String> {
        let cli = cli_binary().ok_or("no redis-cli on the PATH")?;
        let dir = std::env::temp_dir().join(format!("sf-report-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("no temporary directory: {e}"))?;
        let mut cluster = Self {
            seeds: Vec::new(),
            _servers: Vec::new(),
            dir,
        };
        for n in 0..3 {
            // The bus's default port (the node's + 10000) may not exist: a free one.
            let bus = free_port()?.to_string();
            let config_file = format!("nodes-{n}.conf");
            let dir = cluster
                .dir
                .to_str()
                .ok_or("a temporary directory that is not UTF-8")?;
            let server = Server::start_with(
                binary,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus,
                    "--cluster-config-file",
                    &config_file,
                    "--dir",
                    dir,
                ],
            )?;
            cluster.seeds.push(format!("127.0.0.1:{}", server.port));
            cluster._servers.push(server);
        }
        let created = Command::new(&cli)
            .args(["--cluster", "create"])
            .args(&cluster.seeds)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("redis-cli did not run: {e}"))?;
        if !created.success() {
            return Err("redis-cli --cluster create failed".to_owned());
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for seed in &cluster.seeds {
            let (host, port) = seed.rsplit_once(':').ok_or("a seed without a port")?;
            loop {
                let info = Command::new(&cli)
                    .args(["-h", host, "-p", port, "cluster", "info"])
                    .output()
                    .map_err(|e| format!("redis-cli did not run: {e}"))?;
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("{seed} never said cluster_state:ok"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(cluster)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self._servers.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16, String> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port())
}

/// The server binary: `SF_REDIS_SERVER`, or `redis-server` on the `PATH`.
fn server_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SF_REDIS_SERVER") {
        return Some(PathBuf::from(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("redis-server"))
        .find(|path| path.is_file())
}

/// A `redis-server` child on a free loopback port, killed (by its handle) on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(binary: &PathBuf) -> Result<Self, String> {
        Self::start_with(binary, &[])
    }

    /// [`start`](Self::start) with more `redis-server` arguments.
    fn start_with(binary: &PathBuf, args: &[&str]) -> Result<Self, String> {
        let port = free_port()?;
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{} did not start: {e}", binary.display()))?;
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not listen within 10 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
