//! Serves `singleflight-stats` metrics in the Prometheus text format from a real HTTP
//! endpoint on loopback, while background traffic coalesces through two groups.
//!
//! Each group reports through a `MetricsObserver` (the `metrics` feature of
//! `singleflight-stats`) to the `metrics` facade, whose recorder here is
//! `metrics-exporter-prometheus`: it renders the exposition text for each scrape.
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
//! Next to each `MetricsObserver` (through a `Fanout`), a `Stats` records the groups' keys
//! in a shared `HotKeys`; once the traffic has stopped, a last herd of 16 callers asks for
//! user 42 at once, and the five hottest keys are printed. They are never exported: keys
//! are the application's data, and each would be a time series. The groups opt in to
//! showing them (`with_key_format`); without it, a `HotKeys` holds each key as a hash.
//!
//! The server is std only: one thread, `TcpListener`, `Connection: close` (the exporter's own
//! HTTP listener would bring hyper and tokio for three lines of HTTP).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use singleflight_blocking::Group;
use singleflight_stats::{Fanout, HotKeys, MetricsObserver, Stats};

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

/// Answers one request: `GET /metrics` gets the counters, anything else a 404.
fn serve(mut stream: TcpStream, metrics: &PrometheusHandle) -> std::io::Result<()> {
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
        ("200 OK", metrics.render())
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
    // The recorder first: a `MetricsObserver` registers its handles with the recorder in
    // effect when it is created.
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .map_err(std::io::Error::other)?;
    MetricsObserver::describe();
    // Each group's metrics, and its keys in one record of hot keys shared by both.
    let hot = Arc::new(HotKeys::new(100));
    let stats = Arc::new(Stats::new().with_hot_keys(hot.clone()));
    let observe = |group: &str| {
        Arc::new(Fanout::new([
            Arc::new(MetricsObserver::new(group.to_owned())) as _,
            stats.clone() as _,
        ]))
    };
    let users = Group::<u32, String>::new()
        .with_name("users")
        .with_key_format(|id, f| write!(f, "{id}"))
        .with_observer(observe("users"));
    let quotes = Group::<String, Result<u32, String>>::new()
        .with_name("quotes")
        .with_key_format(|symbol, f| f.write_str(symbol))
        .with_observer(observe("quotes"));

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

    let mut served = 0;
    for stream in listener.incoming() {
        // Histograms are summarised over a window; upkeep drains old samples.
        metrics.run_upkeep();
        if let Err(e) = stream.and_then(|stream| serve(stream, &metrics)) {
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
            "singleflight_execution_seconds_count",
        ] {
            assert!(
                body.contains(&format!("{family}{{group=\"users\"}} ")),
                "{family} in {body}"
            );
        }
    }
    println!("served {served} requests");

    // The herd: 16 callers for user 42, the first one's query held until the other 15
    // have joined it.
    const HERD: usize = 16;
    thread::scope(|s| {
        for _ in 0..HERD {
            s.spawn(|| {
                let user = users.call(&42, || {
                    while users.waiters(&42) < HERD - 1 {
                        thread::yield_now();
                    }
                    "user 42".to_string()
                });
                assert_eq!(user.as_deref(), Ok("user 42"));
            });
        }
    });
    let top = stats.hot_keys(5);
    println!("Hot keys (top 5 by joins, never exported):");
    for (rank, hot) in top.joins.iter().enumerate() {
        let key = String::from_utf8_lossy(&hot.key);
        println!("   {}. {key:<14} {} joins", rank + 1, hot.count);
    }
    let herd = top
        .joins
        .iter()
        .find(|hot| hot.key == b"users/42")
        .expect("the herd's key among the hottest");
    assert_eq!(herd.count, HERD as u64 - 1);
    Ok(())
}
