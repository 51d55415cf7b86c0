//! Serves `singleflight-stats` counters in the Prometheus text format from a real HTTP
//! endpoint on loopback, while background traffic coalesces through two groups.
//!
//! Run: `cargo run -p singleflight-examples --example prometheus_stats`, then
//! `curl http://127.0.0.1:9898/metrics`.
//!
//! * `--addr ADDR` (or `PROMETHEUS_ADDR`): where to listen; loopback only, `127.0.0.1:9898`
//!   by default (`127.0.0.1:0` picks a free port).
//! * `--requests N` (or `PROMETHEUS_REQUESTS`): serve N requests, then exit.
//! * `--self-scrape`: scrape the endpoint N times over TCP from a thread of this program
//!   and check each reply (needs `--requests`), so CI can run it with no other tool:
//!   `cargo run -p singleflight-examples --example prometheus_stats -- --addr 127.0.0.1:0 --requests 3 --self-scrape`
//!
//! The server is std only: one thread, `TcpListener`, `Connection: close`.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use singleflight_blocking::Group;
use singleflight_stats::{Snapshot, Stats};

struct Options {
    addr: SocketAddr,
    requests: Option<usize>,
    self_scrape: bool,
}

fn options() -> Options {
    let mut addr = std::env::var("PROMETHEUS_ADDR").unwrap_or_else(|_| "127.0.0.1:9898".into());
    let mut requests = std::env::var("PROMETHEUS_REQUESTS").ok();
    let mut self_scrape = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().expect("--addr takes an address"),
            "--requests" => requests = Some(args.next().expect("--requests takes a number")),
            "--self-scrape" => self_scrape = true,
            other => panic!("unknown argument {other:?}"),
        }
    }
    let addr: SocketAddr = addr.parse().expect("a socket address");
    assert!(
        addr.ip().is_loopback(),
        "this example listens on loopback only"
    );
    let requests = requests.map(|n| n.parse().expect("--requests takes a number"));
    assert!(
        !self_scrape || requests.is_some(),
        "--self-scrape needs --requests"
    );
    Options {
        addr,
        requests,
        self_scrape,
    }
}

/// One metric family: `# HELP`, `# TYPE`, and a sample per group.
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    groups: &[(&str, Snapshot)],
    value: impl Fn(&Snapshot) -> f64,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (group, snapshot) in groups {
        let _ = writeln!(out, "{name}{{group=\"{group}\"}} {}", value(snapshot));
    }
}

/// A counter family: its name between `singleflight_` and `_total`, help text, and value.
type Counter = (&'static str, &'static str, fn(&Snapshot) -> u64);

#[allow(
    clippy::cast_precision_loss,
    reason = "Prometheus samples are floats; counts past 2^53 lose digits no scrape needs"
)]
fn render(groups: &[(&str, Snapshot)]) -> String {
    let mut out = String::new();
    let counters: [Counter; 7] = [
        ("hits", "Calls that joined another caller's flight.", |s| {
            s.hits
        }),
        ("misses", "Calls that ran the work.", |s| s.misses),
        ("errors", "Executions whose work returned an error.", |s| {
            s.errors
        }),
        ("panics", "Executions whose work panicked.", |s| s.panics),
        (
            "leader_drops",
            "Executions cancelled because the leader was dropped.",
            |s| s.leader_drops,
        ),
        ("takeovers", "Waiters promoted to run the work.", |s| {
            s.takeovers
        }),
        ("timeouts", "Callers whose timeout elapsed.", |s| s.timeouts),
    ];
    for (name, help, get) in counters {
        let name = format!("singleflight_{name}_total");
        family(&mut out, &name, "counter", help, groups, |s| get(s) as f64);
    }
    family(
        &mut out,
        "singleflight_active_flights",
        "gauge",
        "Flights in progress.",
        groups,
        |s| s.active as f64,
    );
    family(
        &mut out,
        "singleflight_hit_ratio",
        "gauge",
        "hits / (hits + misses).",
        groups,
        Snapshot::hit_rate,
    );
    family(
        &mut out,
        "singleflight_work_seconds_total",
        "counter",
        "Time spent running the work, one execution per flight.",
        groups,
        |s| s.work_time.as_secs_f64(),
    );
    family(
        &mut out,
        "singleflight_work_seconds_max",
        "gauge",
        "The longest execution.",
        groups,
        |s| s.max_work_time.as_secs_f64(),
    );
    out
}

/// Answers one request: `GET /metrics` gets the counters, anything else a 404.
fn serve(mut stream: TcpStream, groups: &[(&str, &Stats)]) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new((&stream).take(16 * 1024));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Skip the headers: up to the blank line.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let (status, body) = if request_line.starts_with("GET /metrics ") {
        let snapshots: Vec<_> = groups
            .iter()
            .map(|(name, s)| (*name, s.snapshot()))
            .collect();
        ("200 OK", render(&snapshots))
    } else {
        ("404 Not Found", "try /metrics\n".to_string())
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// Fetches `/metrics` over TCP, as a scraper would, and returns the body.
fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    let (_, body) = reply.split_once("\r\n\r\n").expect("headers end");
    Ok(body.to_string())
}

fn main() -> std::io::Result<()> {
    let options = options();
    let users_stats = Arc::new(Stats::new().timed());
    let quotes_stats = Arc::new(Stats::new().timed());
    let users = Arc::new(Group::<u32, String>::new().with_observer(users_stats.clone()));
    let quotes =
        Arc::new(Group::<String, Result<u32, String>>::new().with_observer(quotes_stats.clone()));

    // Background traffic: eight clients looking up a few hot users and a flaky quote feed.
    let stop = Arc::new(AtomicBool::new(false));
    let mut traffic = Vec::new();
    for client in 0..8u32 {
        let (users, quotes, stop) = (users.clone(), quotes.clone(), stop.clone());
        traffic.push(thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let id = (client + i) % 3;
                let _ = users.call(&id, || {
                    thread::sleep(Duration::from_millis(2));
                    format!("user {id}")
                });
                let _ = quotes.try_call("EURUSD", || {
                    thread::sleep(Duration::from_millis(3));
                    if i.is_multiple_of(5) {
                        Err("upstream 503".into())
                    } else {
                        Ok(108)
                    }
                });
                i = i.wrapping_add(1);
            }
        }));
    }

    let listener = TcpListener::bind(options.addr)?;
    let addr = listener.local_addr()?;
    println!("serving http://{addr}/metrics");
    let scraper = match options.requests {
        Some(n) if options.self_scrape => {
            Some(thread::spawn(move || -> std::io::Result<String> {
                let mut last = String::new();
                for _ in 0..n {
                    last = scrape(addr)?;
                }
                Ok(last)
            }))
        }
        _ => None,
    };

    let groups = [("users", &*users_stats), ("quotes", &*quotes_stats)];
    let mut served = 0;
    for stream in listener.incoming() {
        if let Err(e) = stream.and_then(|stream| serve(stream, &groups)) {
            eprintln!("request failed: {e}");
        }
        served += 1;
        if options.requests.is_some_and(|n| served >= n) {
            break;
        }
    }

    stop.store(true, Ordering::Relaxed);
    for client in traffic {
        client.join().expect("a traffic client");
    }
    if let Some(scraper) = scraper {
        let body = scraper.join().expect("the scraper")?;
        print!("{body}");
        for family in [
            "singleflight_hits_total",
            "singleflight_misses_total",
            "singleflight_active_flights",
        ] {
            assert!(
                body.contains(&format!("{family}{{group=\"users\"}} ")),
                "{family} in {body}"
            );
        }
    }
    println!("served {served} requests");
    Ok(())
}
