//! HTTP coalescing on loopback: a route whose handler works 50 ms, hit by 1,000 concurrent
//! identical GETs (each on its own HTTP/1.1 keep-alive connection from hyper-util's client),
//! served by hyper's HTTP/1 server three ways — the plain handler, the handler behind
//! `singleflight-tower`'s layer, and behind `tower-resilience-coalesce` — and a fourth:
//! the layer as the README mounts it, `route_layer` on a plain axum `Router` served by
//! `axum::serve`; and then the
//! layer's cost on a route where nothing coalesces, in process.
//!
//! ```text
//! cargo run --release -p singleflight-benches --bin http [-- --quick] [--overhead-only]
//! ```
//!
//! Per variant: requests per second (requests / wall time of the burst), p99 latency, the
//! process's CPU time for the burst (client and server: the client's share is the same for
//! every variant) and the handler executions. Rounds are interleaved after one untimed
//! round per variant (which also opens the 1,000 connections); medians are printed, never
//! asserted. See `benches/README.md`.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use singleflight_tower::CoalesceLayer;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::{Layer as _, Service, ServiceExt as _};

/// The handler's work.
const WORK: Duration = Duration::from_millis(50);
/// Concurrent identical requests per burst.
const CLIENTS: usize = 1000;
/// The response body.
static BODY: [u8; 1024] = [b'r'; 1024];

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Plain,
    Layer,
    AxumRouteLayer,
    Resilience,
}

impl Variant {
    const ALL: [Self; 4] = [
        Self::Plain,
        Self::Layer,
        Self::AxumRouteLayer,
        Self::Resilience,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain handler",
            Self::Layer => "singleflight-tower",
            Self::AxumRouteLayer => "singleflight-tower, `route_layer` on a plain axum Router",
            Self::Resilience => "tower-resilience-coalesce 0.14",
        }
    }
}

/// The route: 50 ms of (asynchronous) work, then 1 KiB.
async fn work(executions: &AtomicUsize) -> Bytes {
    executions.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(WORK).await;
    Bytes::from_static(&BODY)
}

/// Serves `service` with hyper's HTTP/1 server on a loopback port.
async fn serve<S, B>(service: S) -> SocketAddr
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn start(variant: Variant, executions: Arc<AtomicUsize>) -> SocketAddr {
    let plain = {
        let executions = executions.clone();
        tower::service_fn(move |_: Request<Incoming>| {
            let executions = executions.clone();
            async move { Ok::<_, Infallible>(Response::new(Full::new(work(&executions).await))) }
        })
    };
    match variant {
        Variant::Plain => serve(plain).await,
        Variant::Layer => serve(CoalesceLayer::new().layer(plain)).await,
        Variant::AxumRouteLayer => {
            // As the README mounts it: no state, served by `axum::serve`.
            let app = axum::Router::new()
                .route(
                    "/report",
                    axum::routing::get(move || {
                        let executions = executions.clone();
                        async move { work(&executions).await }
                    }),
                )
                .route_layer(CoalesceLayer::new());
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            addr
        }
        Variant::Resilience => {
            // Its responses must be `Clone` (an `http::Response` is not): the body is
            // coalesced, and the response made around it.
            let bytes = tower::service_fn(move |_: Request<Incoming>| {
                let executions = executions.clone();
                async move { Ok::<_, Infallible>(work(&executions).await) }
            });
            let coalesced =
                tower_resilience_coalesce::CoalesceLayer::new(|request: &Request<Incoming>| {
                    (request.method().clone(), request.uri().to_string())
                })
                .layer(bytes);
            serve(coalesced.map_response(|bytes| Response::new(Full::new(bytes)))).await
        }
    }
}

/// One burst's figures.
#[derive(Clone, Copy, Debug)]
struct Burst {
    per_second: f64,
    p99: Duration,
    cpu: Duration,
    executions: usize,
}

/// Fires `CLIENTS` identical GETs at once and waits for every answer.
async fn burst(
    client: &Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    executions: &AtomicUsize,
) -> Burst {
    let before = executions.load(Ordering::Relaxed);
    let cpu = cpu_time();
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..CLIENTS {
        let client = client.clone();
        set.spawn(async move {
            let sent = Instant::now();
            let request = Request::get(format!("http://{addr}/report"))
                .body(Empty::new())
                .unwrap();
            let response = client.request(request).await.expect("a response");
            assert_eq!(response.status(), StatusCode::OK);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body.len(), BODY.len());
            sent.elapsed()
        });
    }
    let mut latencies = Vec::with_capacity(CLIENTS);
    while let Some(latency) = set.join_next().await {
        latencies.push(latency.expect("a client task"));
    }
    let wall = started.elapsed();
    latencies.sort();
    Burst {
        per_second: CLIENTS as f64 / wall.as_secs_f64(),
        p99: latencies[(latencies.len() * 99).div_ceil(100) - 1],
        cpu: cpu_time().saturating_sub(cpu),
        executions: executions.load(Ordering::Relaxed) - before,
    }
}

/// The CPU time of every live thread of this process (user and system), from
/// `/proc/self/task/*/schedstat` (nanoseconds); zero where that does not exist.
fn cpu_time() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// The CPU time of this thread, from `/proc/thread-self/schedstat` (nanoseconds on the
/// CPU, so time other processes take on a shared machine is not counted); the wall clock
/// since the first call where that file does not exist.
fn thread_cpu_time() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .map_or_else(
            || START.get_or_init(Instant::now).elapsed(),
            Duration::from_nanos,
        )
}

fn median<T: Copy + PartialOrd>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

fn herd(rounds: usize) -> String {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut servers = Vec::new();
        for variant in Variant::ALL {
            let executions = Arc::new(AtomicUsize::new(0));
            let addr = start(variant, executions.clone()).await;
            let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
            // Untimed: opens the connections and warms everything up.
            burst(&client, addr, &executions).await;
            servers.push((variant, addr, executions, client, Vec::new()));
        }
        for _ in 0..rounds {
            for (_, addr, executions, client, bursts) in &mut servers {
                bursts.push(burst(client, *addr, executions).await);
            }
        }
        let mut out = format!(
            "{CLIENTS} concurrent identical GETs, handler work {} ms, HTTP/1.1 on loopback, \
             tokio with 2 workers, median of {rounds} rounds\n\n\
             | variant | requests/s | p99 latency | CPU time per burst | handler executions per burst |\n\
             |---|---:|---:|---:|---:|\n",
            WORK.as_millis()
        );
        for (variant, _, _, _, bursts) in servers {
            let per_second = median(bursts.iter().map(|b| b.per_second).collect());
            let p99 = median(bursts.iter().map(|b| b.p99).collect());
            let cpu = median(bursts.iter().map(|b| b.cpu).collect());
            let executions = median(bursts.iter().map(|b| b.executions).collect());
            writeln!(
                out,
                "| {} | {per_second:.0} | {:.1} ms | {:.0} ms | {executions} |",
                variant.name(),
                p99.as_secs_f64() * 1e3,
                cpu.as_secs_f64() * 1e3,
            )
            .unwrap();
        }
        out
    })
}

/// The in-process variants of the overhead measurement.
#[derive(Clone, Copy, Debug)]
enum Inline {
    Plain,
    LayerUniqueGets,
    LayerAttachedUniqueGets,
    LayerPassthrough,
    ResilienceUniqueGets,
}

/// Calls a ready handler `iters` times through `oneshot`, each request with a fresh path
/// (so nothing coalesces), reading each body; returns ns per call.
fn overhead(rt: &tokio::runtime::Runtime, variant: Inline, iters: usize) -> f64 {
    let handler = tower::service_fn(|_: Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
    });
    let layered = match variant {
        Inline::LayerAttachedUniqueGets => CoalesceLayer::new().detached(false),
        _ => CoalesceLayer::new(),
    }
    .layer(handler);
    let resilience =
        tower_resilience_coalesce::CoalesceLayer::new(|request: &Request<Empty<Bytes>>| {
            request.uri().path().to_owned()
        })
        .layer(tower::service_fn(|_: Request<Empty<Bytes>>| async {
            Ok::<_, Infallible>(Bytes::from_static(b"hello"))
        }));
    let paths: Vec<String> = (0..iters).map(|i| format!("/item/{i}")).collect();
    let method = match variant {
        Inline::LayerPassthrough => Method::POST,
        _ => Method::GET,
    };
    // The loop runs in a task, as a server's connection does: wake-ups between it and the
    // layer's spawned task stay in the scheduler's queue (a `block_on` future would be
    // woken through the I/O driver, a system call each time).
    let calls = rt.spawn(async move {
        let started = thread_cpu_time();
        for path in &paths {
            let request = Request::builder()
                .method(method.clone())
                .uri(path.as_str())
                .body(Empty::new())
                .unwrap();
            let len = match variant {
                Inline::Plain => {
                    let response = handler.oneshot(request).await.unwrap();
                    response
                        .into_body()
                        .collect()
                        .await
                        .unwrap()
                        .to_bytes()
                        .len()
                }
                Inline::LayerUniqueGets
                | Inline::LayerAttachedUniqueGets
                | Inline::LayerPassthrough => {
                    let response = layered.clone().oneshot(request).await.unwrap();
                    response
                        .into_body()
                        .collect()
                        .await
                        .unwrap()
                        .to_bytes()
                        .len()
                }
                Inline::ResilienceUniqueGets => {
                    let bytes = resilience.clone().oneshot(request).await.unwrap();
                    Response::new(Full::new(bytes))
                        .into_body()
                        .collect()
                        .await
                        .unwrap()
                        .to_bytes()
                        .len()
                }
            };
            assert_eq!(len, 5);
        }
        (thread_cpu_time() - started).as_nanos() as f64 / iters as f64
    });
    rt.block_on(calls).expect("the calls")
}

fn overheads(rounds: usize, iters: usize) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let variants = [
        (Inline::Plain, "plain handler"),
        (
            Inline::LayerUniqueGets,
            "singleflight-tower, GETs with distinct keys (each leads its own flight)",
        ),
        (
            Inline::LayerAttachedUniqueGets,
            "singleflight-tower `detached(false)`, GETs with distinct keys",
        ),
        (
            Inline::LayerPassthrough,
            "singleflight-tower, POSTs (pass through)",
        ),
        (
            Inline::ResilienceUniqueGets,
            "tower-resilience-coalesce 0.14, GETs with distinct keys",
        ),
    ];
    for (variant, _) in variants {
        overhead(&rt, variant, iters / 10);
    }
    let mut figures = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (i, (variant, _)) in variants.iter().enumerate() {
            figures[i].push(overhead(&rt, *variant, iters));
        }
    }
    let medians: Vec<f64> = figures.into_iter().map(median).collect();
    let mut out = format!(
        "\nA route where nothing coalesces, in process: `oneshot` on a current-thread runtime, \
         {iters} calls a round, each body read, CPU time of the runtime's thread, median of \
         {rounds} rounds\n\n\
         | variant | ns per request | over the plain handler |\n|---|---:|---:|\n"
    );
    for ((_, name), ns) in variants.iter().zip(&medians) {
        writeln!(out, "| {name} | {ns:.0} | {:+.0} ns |", ns - medians[0]).unwrap();
    }
    let over = medians[1] - medians[0];
    writeln!(
        out,
        "\ntarget: under 2 µs a request over the plain handler: {:.2} µs, {}",
        over / 1e3,
        if over < 2_000.0 { "met" } else { "NOT met" }
    )
    .unwrap();
    out
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, iters) = if quick { (3, 20_000) } else { (7, 100_000) };
    if !std::env::args().any(|a| a == "--overhead-only") {
        print!("{}", herd(rounds));
    }
    print!("{}", overheads(rounds, iters));
}
