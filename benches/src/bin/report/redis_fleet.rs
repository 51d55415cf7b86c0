//! The Redis scenario: what `singleflight-redis` adds to a call on loopback, in units of a
//! Redis `PING` round trip measured in the same run over the same kind of connection.
//!
//! It starts its own `redis-server` (from `SF_REDIS_SERVER`, else the `PATH`) on a free
//! loopback port and stops it at the end; without one it prints a one-line notice and the
//! report goes on. Everything runs on one current-thread tokio runtime, and the rounds
//! interleave the figures so that a slow minute slows them all:
//!
//! * **`PING`**: one `PING` over a RESP3 `ConnectionManager`, as the group uses.
//! * **leader's added latency**: a `RedisGroup` call that leads its flight (no other
//!   process wants the key), minus an in-process `singleflight-tokio` call; the work is
//!   ready at once, so the difference is the fleet layer's Redis round trips and work.
//! * **follower's delivery**: two groups with their own connections stand for two
//!   processes. The follower waits on the leader's flight; the figure is the time from the
//!   leader's work returning to the follower's call returning the value: the leader's
//!   publish going out, Redis pushing it, the follower decoding it.
//! * **commands per flight**: what each group's connection sends, as the server's
//!   `MONITOR` sees it (untimed, after the timed rounds), and the server's own time per
//!   call of each command (`INFO commandstats`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use singleflight_redis::{Config, Outcome, RedisGroup};
use tokio::sync::oneshot;

/// The targets, in `PING` round trips.
const LEADER_TARGET: f64 = 2.0;
const FOLLOWER_TARGET: f64 = 1.5;

/// How many samples of each figure a round takes.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    rounds: usize,
    calls: usize,
    follows: usize,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                rounds: 5,
                calls: 200,
                follows: 40,
            }
        } else {
            Self {
                rounds: 9,
                calls: 1_000,
                follows: 200,
            }
        }
    }
}

/// The scenario's figures (medians over every sample of every round, in µs).
#[derive(Debug)]
pub(crate) struct Figures {
    server: String,
    samples: Sizes,
    ping: f64,
    plain: f64,
    leader: f64,
    follower: f64,
    /// Commands a leader sends per flight, by name, as the server saw them.
    leader_commands: BTreeMap<String, f64>,
    /// Commands a follower sends per flight, by name.
    follower_commands: BTreeMap<String, f64>,
    /// The server's own time per call (µs) of `PING` and of each script call.
    server_time: BTreeMap<String, f64>,
    /// Calls that did not lead or follow as planned (a fallback), by what they got.
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
        sizes.rounds, sizes.calls, sizes.follows
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
    match figures {
        Ok(figures) => Some(figures),
        Err(error) => {
            eprintln!("redis: skipped ({error})");
            None
        }
    }
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
    let config = || Config::new("report").op_timeout(Duration::from_secs(2));
    let leader = RedisGroup::<u64>::open(url, config()).expect("a group");
    let follower = RedisGroup::<u64>::open(url, config()).expect("a group");
    let plain = singleflight_tokio::Group::<String, u64>::new();
    let mut surprises = Vec::new();

    // Untimed: connect both groups and load the scripts (a first call pays NOSCRIPT).
    lead(&leader, "warm", &mut surprises).await;
    follow(&leader, &follower, "warm", &mut surprises).await;
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await?;

    let (mut pings, mut plains, mut leads, mut follows) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..sizes.rounds {
        for _ in 0..sizes.calls {
            let started = Instant::now();
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            pings.push(micros(started.elapsed()));
        }
        for _ in 0..sizes.calls {
            let started = Instant::now();
            let value = plain.call("plain", || async { 1 }).await;
            std::hint::black_box(value.ok());
            plains.push(micros(started.elapsed()));
        }
        for _ in 0..sizes.calls {
            let started = Instant::now();
            lead(&leader, "lead", &mut surprises).await;
            leads.push(micros(started.elapsed()));
        }
        for _ in 0..sizes.follows {
            if let Some(delivery) = follow(&leader, &follower, "follow", &mut surprises).await {
                follows.push(micros(delivery));
            }
        }
    }

    // Before the counting: a `MONITOR` slows every command down.
    let server_time = server_time(&mut conn).await?;
    let (leader_commands, follower_commands) = count_commands(
        url,
        &mut conn,
        &leader,
        &follower,
        sizes.follows,
        &mut surprises,
    )
    .await?;

    surprises.sort();
    surprises.dedup();
    Ok(Figures {
        server,
        samples: sizes,
        ping: median(pings),
        plain: median(plains),
        leader: median(leads),
        follower: median(follows),
        leader_commands,
        follower_commands,
        server_time,
        surprises,
    })
}

/// One call that should lead its flight.
async fn lead(group: &RedisGroup<u64>, key: &str, surprises: &mut Vec<String>) {
    match group.call(key, || async { 1 }).await {
        Ok((_, Outcome::Leader { .. })) => {}
        other => surprises.push(format!("a leader got {other:?}")),
    }
}

/// One flight led in `leader` and followed in `follower`; returns the time from the
/// leader's work returning to the follower having the value.
async fn follow(
    leader: &RedisGroup<u64>,
    follower: &RedisGroup<u64>,
    key: &'static str,
    surprises: &mut Vec<String>,
) -> Option<Duration> {
    let (open, gate) = oneshot::channel::<()>();
    let (running, mut is_running) = oneshot::channel::<()>();
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
                .await
        }
    });
    while is_running.try_recv().is_err() {
        tokio::task::yield_now().await;
    }
    let follow = tokio::spawn({
        let follower = follower.clone();
        async move {
            let result = follower.call(key, || async { 2 }).await;
            (result, Instant::now())
        }
    });
    while follower.fleet_waiting() == 0 && !follow.is_finished() {
        tokio::task::yield_now().await;
    }
    let _ = open.send(());
    let (result, received) = follow.await.expect("the follower's task");
    let led = lead.await.expect("the leader's task");
    if !matches!(led, Ok((_, Outcome::Leader { .. }))) {
        surprises.push(format!("a leader got {led:?}"));
    }
    match result {
        Ok((1, Outcome::Follower { .. })) => {
            let ended = ended.lock().unwrap().expect("the leader's work ended");
            Some(received.saturating_duration_since(ended))
        }
        other => {
            surprises.push(format!("a follower got {other:?}"));
            None
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
/// the server's `MONITOR`: `flights` flights led alone, then `flights` with a follower.
async fn count_commands(
    url: &str,
    conn: &mut ConnectionManager,
    leader: &RedisGroup<u64>,
    follower: &RedisGroup<u64>,
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
        follow(leader, follower, "count-follow", surprises).await;
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

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
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
        "Against a {} on 127.0.0.1 started for the run; one current-thread tokio runtime; \
         medians of every sample over {} interleaved rounds ({} calls and {} followed \
         flights each). The unit is a `PING` round trip over the same kind of connection.",
        f.server, f.samples.rounds, f.samples.calls, f.samples.follows
    );
    println!();
    println!("| figure | µs | `PING` round trips | target |");
    println!("|---|---:|---:|---|");
    println!("| `PING` round trip | {:.1} | 1.00 | |", f.ping);
    println!(
        "| in-process call (singleflight-tokio), for scale | {:.2} | {:.3} | |",
        f.plain,
        f.plain / f.ping
    );
    let added = f.leader - f.plain;
    let verdict = |ratio: f64, target: f64| {
        if ratio <= target {
            format!("≤ {target} : **met**")
        } else {
            format!("≤ {target} : **not met**")
        }
    };
    println!(
        "| leader's added latency (a leading call − an in-process call) | {:.1} | {:.2} | {} |",
        added,
        added / f.ping,
        verdict(added / f.ping, LEADER_TARGET)
    );
    println!(
        "| follower's delivery (leader's work returns → follower has the value) | {:.1} | {:.2} | {} |",
        f.follower,
        f.follower / f.ping,
        verdict(f.follower / f.ping, FOLLOWER_TARGET)
    );
    println!();
    println!(
        "Commands sent per flight, as the server's `MONITOR` saw them (a script's own \
         commands left out): a leader's {}; a follower's {}.",
        commands(&f.leader_commands),
        commands(&f.follower_commands)
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
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
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
