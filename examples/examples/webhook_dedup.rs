//! shared-call-py's fourth story, "Deduplicate Background Jobs": *if duplicate webhooks
//! arrive, only process once*.
//!
//! A payment provider delivers each event to an axum receiver and, as providers do,
//! delivers it again: three copies at once (a retry storm after a slow answer), one a second
//! later (a redelivery), and, for `evt_1`, one more after the reuse window. The receiver's
//! handler "processes" a delivery in 200 ms and counts how often it processed each event.
//!
//! * Without a reuse window, coalescing catches the copies that overlap the first
//!   delivery's processing, and the redelivery a second later is processed again.
//! * With `CoalesceLayer::reuse_for(2 s)`, the redelivery is answered with the first
//!   delivery's response: each event is processed once within the window (and once more
//!   only after it, for `evt_1`).
//!
//! The key is the delivery id the provider sends (`X-Delivery-Id`), and nothing else: a
//! webhook is a POST whose meaning is that id. So the signature is checked *outside* the
//! coalescing layer (a forged delivery never reaches a key), and the layer is told to
//! coalesce POSTs on this route only.
//!
//! ```text
//! cargo run --release -p singleflight-examples --example webhook_dedup
//! ```
//!
//! Then three worker processes behind one Redis get it too: when `redis-server` is on the
//! `PATH`, the example starts one on a free loopback port and three worker processes (this
//! binary, re-invoked as `webhook_dedup worker <redis url> <window ms>`), each a receiver
//! whose handler coalesces through a `singleflight-redis` group keyed by the delivery id.
//! The provider's copies are spread over the three (the three concurrent copies reach one
//! process each), and each event is processed once per flight without a window, and once
//! per window with `Config::reuse_for(2 s)`, whichever process a redelivery reaches. Without
//! `redis-server`, that half says so and is skipped.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use singleflight_examples::load;
use singleflight_redis::{Config, RedisGroup};
use singleflight_tower::CoalesceLayer;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// How long a delivery's processing takes.
const PROCESSING: Duration = Duration::from_millis(200);
/// How long a processed delivery's answer is reused.
const WINDOW: Duration = Duration::from_secs(2);

/// Deliveries and processings per event id.
#[derive(Default)]
struct Ledger {
    processed: Mutex<BTreeMap<String, usize>>,
    delivered: Mutex<BTreeMap<String, usize>>,
}

/// The handler: processes the event (once per call) and acknowledges it.
async fn receive(ledger: Arc<Ledger>, headers: HeaderMap) -> (StatusCode, String) {
    let id = headers["x-delivery-id"].to_str().unwrap_or("?").to_owned();
    *ledger
        .processed
        .lock()
        .unwrap()
        .entry(id.clone())
        .or_default() += 1;
    tokio::time::sleep(PROCESSING).await; // charge the card, send the e-mail, …
    (StatusCode::OK, format!("processed {id}"))
}

/// Rejects a delivery whose signature does not check out, before it reaches the key.
async fn verify(request: Request, next: Next) -> Result<Response, StatusCode> {
    match request.headers().get("x-signature") {
        Some(signature) if signature == "valid" => Ok(next.run(request).await),
        _ => Err(StatusCode::UNAUTHORIZED),
    }
}

/// The receiver, with the coalescing layer (and a reuse window, if any) on its route.
async fn receiver(ledger: Arc<Ledger>, window: Option<Duration>) -> SocketAddr {
    let mut layer = CoalesceLayer::new()
        // A webhook is a POST; it coalesces on this route only, keyed by its delivery id.
        .methods([Method::POST])
        .key_fn(|parts| {
            let id = parts.headers.get("x-delivery-id")?;
            Some([b"/webhook ".as_slice(), id.as_bytes()].concat())
        });
    if let Some(window) = window {
        layer = layer.reuse_for(window);
    }
    let handler_ledger = ledger.clone();
    let app = Router::new()
        .route(
            "/webhook",
            post(move |headers: HeaderMap| receive(handler_ledger.clone(), headers)),
        )
        .route_layer(layer)
        // Added last, so it runs first: a forged delivery never reaches the key.
        .route_layer(middleware::from_fn(verify));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The provider's delivery schedule: (seconds after the first delivery, event id, copies).
fn schedule() -> Vec<(f64, &'static str, usize)> {
    vec![
        (0.0, "evt_1", 3),
        (0.0, "evt_2", 3),
        (1.0, "evt_1", 1),
        (1.0, "evt_2", 1),
        (WINDOW.as_secs_f64() + 1.0, "evt_1", 1),
    ]
}

/// Delivers the schedule, the `n`-th delivery to `receivers[n % receivers.len()]`: with
/// three receivers, the three concurrent copies of an event reach one each.
async fn deliver(receivers: &[SocketAddr], ledger: &Arc<Ledger>) {
    let start = Instant::now();
    let mut deliveries = JoinSet::new();
    let mut sent = 0;
    for (at, id, copies) in schedule() {
        let due = start + Duration::from_secs_f64(at);
        tokio::time::sleep_until(due.into()).await;
        for _ in 0..copies {
            let addr = receivers[sent % receivers.len()];
            sent += 1;
            *ledger
                .delivered
                .lock()
                .unwrap()
                .entry(id.to_owned())
                .or_default() += 1;
            deliveries.spawn(async move {
                let headers = [("X-Delivery-Id", id), ("X-Signature", "valid")];
                let response = load::post(addr, "/webhook", &headers, "{\"paid\":true}")
                    .await
                    .expect("the receiver answers");
                assert_eq!(response.status, 200, "{response:?}");
                assert_eq!(response.body, format!("processed {id}"));
            });
        }
    }
    while let Some(delivery) = deliveries.join_next().await {
        delivery.expect("a delivery");
    }
    // A forged delivery is refused before it can share anything.
    for &addr in receivers {
        let forged = load::post(addr, "/webhook", &[("X-Delivery-Id", "evt_1")], "{}")
            .await
            .expect("the receiver answers");
        assert_eq!(forged.status, 401);
    }
}

fn print(ledger: &Ledger) {
    let delivered = ledger.delivered.lock().unwrap();
    let processed = ledger.processed.lock().unwrap();
    for (id, deliveries) in delivered.iter() {
        let times = processed.get(id).copied().unwrap_or(0);
        println!("webhook {id}: processed {times} time(s) for {deliveries} deliveries");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match args.as_slice() {
        [worker, url, window] if worker == "worker" => {
            let window = window.parse().expect("a window in milliseconds");
            runtime.block_on(worker_main(url, Duration::from_millis(window)));
        }
        _ => runtime.block_on(async {
            in_process().await;
            fleet().await;
        }),
    }
}

async fn in_process() {
    println!("== without a reuse window (coalescing only)");
    let ledger = Arc::new(Ledger::default());
    let addr = receiver(ledger.clone(), None).await;
    deliver(&[addr], &ledger).await;
    print(&ledger);

    println!(
        "== with reuse_for({} s): a redelivery inside the window is answered, not processed",
        WINDOW.as_secs()
    );
    let ledger = Arc::new(Ledger::default());
    let addr = receiver(ledger.clone(), Some(WINDOW)).await;
    deliver(&[addr], &ledger).await;
    print(&ledger);
}

// The fleet-wide half: three worker processes behind one Redis.

/// How many worker processes receive the deliveries.
const WORKERS: usize = 3;

/// The `redis-server` on the `PATH`, if there is one.
fn redis_server() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("redis-server"))
        .find(|path| path.is_file())
}

fn free_port() -> u16 {
    StdListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A child process killed (and reaped) when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `redis-server` on a free loopback port, without persistence, once it answers `PING`.
fn start_redis(binary: &PathBuf) -> (Process, String) {
    let port = free_port();
    let child = Command::new(binary)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let server = Process(child);
    let pings = || {
        let Ok(mut stream) = StdStream::connect((Ipv4Addr::LOCALHOST, port)) else {
            return false;
        };
        let mut reply = [0; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pings() {
        assert!(
            Instant::now() < deadline,
            "redis-server did not answer PING"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (server, format!("redis://127.0.0.1:{port}/"))
}

/// A worker process: this binary re-invoked; it prints its address and runs until its
/// stdin closes.
struct Worker {
    addr: SocketAddr,
    // Dropped first: the worker exits when its stdin closes (and is killed if it did not).
    _stdin: ChildStdin,
    _process: Process,
}

fn spawn_worker(url: &str, window: Option<Duration>) -> Worker {
    let window = window.map_or(0, |w| w.as_millis());
    let mut child = Command::new(std::env::current_exe().expect("this example's binary"))
        .args(["worker", url, &window.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn a worker");
    let stdin = child.stdin.take().expect("the worker's stdin");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("the worker's stdout"))
        .read_line(&mut line)
        .expect("the worker's address");
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("a worker said {line:?}"));
    Worker {
        addr,
        _stdin: stdin,
        _process: Process(child),
    }
}

/// The worker: a receiver whose handler coalesces through a Redis group keyed by the
/// delivery id, with the reuse window (none if zero); `GET /ledger` says how often it
/// processed each event.
async fn worker_main(url: &str, window: Duration) {
    let mut config = Config::new(if window.is_zero() {
        "webhooks:coalesce"
    } else {
        "webhooks:reuse"
    });
    if !window.is_zero() {
        config = config.reuse_for(window);
    }
    let group = RedisGroup::<String>::open(url, config).expect("a redis group");
    let ledger = Arc::new(Ledger::default());
    let handler_ledger = ledger.clone();
    let app = Router::new()
        .route(
            "/webhook",
            post(move |headers: HeaderMap| {
                let (group, ledger) = (group.clone(), handler_ledger.clone());
                async move {
                    let id = headers["x-delivery-id"].to_str().unwrap_or("?").to_owned();
                    let answer = group
                        .call(&id, || async move { receive(ledger, headers).await.1 })
                        .await
                        .expect("the work does not fail");
                    (StatusCode::OK, answer)
                }
            }),
        )
        .route_layer(middleware::from_fn(verify))
        .route(
            "/ledger",
            get(move || async move {
                let processed = ledger.processed.lock().unwrap();
                processed
                    .iter()
                    .map(|(id, times)| format!("{id} {times}\n"))
                    .collect::<String>()
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("listening {}", listener.local_addr().unwrap());
    std::io::stdout().flush().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // Until the parent closes stdin (or exits).
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
        .await
        .ok();
    std::process::exit(0);
}

/// Three workers on one Redis get the schedule; their ledgers are summed.
async fn deliver_to_fleet(url: &str, window: Option<Duration>) {
    let workers: Vec<Worker> = (0..WORKERS).map(|_| spawn_worker(url, window)).collect();
    let addrs: Vec<SocketAddr> = workers.iter().map(|w| w.addr).collect();
    let ledger = Arc::new(Ledger::default());
    deliver(&addrs, &ledger).await;
    for &addr in &addrs {
        let response = load::get(addr, "/ledger")
            .await
            .expect("the worker answers");
        for line in response.body.lines() {
            let (id, times) = line.split_once(' ').expect("a ledger line");
            *ledger
                .processed
                .lock()
                .unwrap()
                .entry(id.to_owned())
                .or_default() += times.parse::<usize>().expect("a count");
        }
    }
    print(&ledger);
}

async fn fleet() {
    println!("== then {WORKERS} worker processes behind one Redis get it too");
    let Some(binary) = redis_server() else {
        println!("redis-server is not on the PATH: skipping the fleet-wide half");
        return;
    };
    let (_server, url) = start_redis(&binary);
    println!("== {WORKERS} workers without a reuse window (coalescing across processes)");
    deliver_to_fleet(&url, None).await;
    println!(
        "== {WORKERS} workers with Config::reuse_for({} s): a redelivery to any of them inside the window is answered, not processed",
        WINDOW.as_secs()
    );
    deliver_to_fleet(&url, Some(WINDOW)).await;
}
