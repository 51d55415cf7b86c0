//! Large bodies are coalesced and streamed: one execution, every caller gets the whole body,
//! the first bytes reach every caller before the handler's body ends, a request that
//! arrives while the body streams joins it from byte 0, and a reader that stalls slows no
//! one (past the memory budget it is cut off).
//!
//! Ordering comes from gates: a body sends its chunks only as the test releases them.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use singleflight_stats::Stats;
use singleflight_tower::{BodyError, CoalesceLayer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tower::{Layer as _, ServiceExt as _};

const ROLE: HeaderName = HeaderName::from_static("x-coalesced");
const CHUNK: usize = 64 * 1024;

/// A body whose chunks arrive on a channel.
struct Chunks {
    rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// A handler whose body is `chunks` chunks of `CHUNK` bytes (chunk `i` filled with byte
/// `i`), each sent when the test adds a permit to `gate`; it counts its executions.
#[derive(Clone)]
struct Report {
    chunks: usize,
    executions: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

impl Report {
    fn new(chunks: usize) -> Self {
        Self {
            chunks,
            executions: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
        }
    }

    fn executions(&self) -> usize {
        self.executions.load(Ordering::SeqCst)
    }

    fn expected(&self) -> Vec<u8> {
        (0..self.chunks)
            .flat_map(|i| vec![i as u8; CHUNK])
            .collect()
    }

    fn respond(&self) -> Response<Chunks> {
        self.executions.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel(1);
        let (chunks, gate) = (self.chunks, self.gate.clone());
        tokio::spawn(async move {
            for i in 0..chunks {
                gate.acquire().await.unwrap().forget();
                let chunk = Bytes::from(vec![i as u8; CHUNK]);
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        Response::builder()
            .header("content-length", (chunks * CHUNK).to_string())
            .body(Chunks { rx })
            .unwrap()
    }
}

/// Serves `report` behind `layer` with hyper's HTTP/1 server on loopback.
async fn serve(report: &Report, layer: &CoalesceLayer) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let r = report.clone();
    let handler = tower::service_fn(move |_: Request<hyper::body::Incoming>| {
        let r = r.clone();
        async move { Ok::<_, Infallible>(r.respond()) }
    });
    let service = layer.clone().debug_header(ROLE).layer(handler);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
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

async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::task::yield_now().await;
    }
}

/// 50 concurrent GETs for a 2 MiB report: one execution; every client has its first bytes
/// while the handler's body has not ended; every client gets all 2 MiB. (The handler
/// answers its head at once, so most requests join the response while its body streams.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_of_a_two_mib_body_share_one_execution_and_its_first_bytes_early() {
    const N: usize = 50;
    let report = Report::new(32);
    let layer = CoalesceLayer::new();
    let addr = serve(&report, &layer).await;
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let first_bytes = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..N {
        let (client, first_bytes, heads) = (client.clone(), first_bytes.clone(), heads.clone());
        let request = Request::get(format!("http://{addr}/report"))
            .body(Empty::new())
            .unwrap();
        set.spawn(async move {
            let response = client.request(request).await.expect("a response");
            assert_eq!(response.status(), StatusCode::OK);
            heads.fetch_add(1, Ordering::SeqCst);
            let role = response.headers()[&ROLE].to_str().unwrap().to_owned();
            let mut body = response.into_body();
            let mut bytes = Vec::new();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    if bytes.is_empty() && !data.is_empty() {
                        first_bytes.fetch_add(1, Ordering::SeqCst);
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            (role, bytes)
        });
    }
    until("every client's response head", || {
        heads.load(Ordering::SeqCst) == N
    })
    .await;
    assert_eq!(report.executions(), 1);
    // Only the first chunk is out: every client must have it before the body goes on.
    let released = Instant::now();
    report.gate.add_permits(1);
    until("every client's first bytes", || {
        first_bytes.load(Ordering::SeqCst) == N
    })
    .await;
    println!(
        "{N} clients: the handler's first chunk reached every client {:.2} ms after it was sent, \
         with the rest of the body still held back",
        released.elapsed().as_secs_f64() * 1e3
    );
    report.gate.add_permits(report.chunks - 1);
    let results = set.join_all().await;
    let expected = report.expected();
    assert!(results.iter().all(|(_, bytes)| *bytes == expected));
    assert_eq!(results.iter().filter(|(role, _)| role == "led").count(), 1);
    assert_eq!(
        results.iter().filter(|(role, _)| role == "joined").count(),
        N - 1
    );
    assert_eq!(report.executions(), 1);
}

/// In process, through `oneshot`: a reading of `service`'s response body, frame by frame.
async fn frames(
    response: Response<singleflight_tower::CoalesceBody<Chunks>>,
    mut each: impl FnMut(&Bytes),
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let mut body = response.into_body();
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            each(&data);
            len += data.len();
        }
    }
    Ok(len)
}

type Inner = tower::util::BoxCloneSyncService<Request<()>, Response<Chunks>, Infallible>;

fn in_process(report: &Report, layer: &CoalesceLayer) -> singleflight_tower::Coalesce<Inner> {
    let r = report.clone();
    let inner = Inner::new(tower::service_fn(move |_: Request<()>| {
        let r = r.clone();
        async move { Ok::<_, Infallible>(r.respond()) }
    }));
    layer.clone().debug_header(ROLE).layer(inner)
}

fn get() -> Request<()> {
    Request::get("/report").body(()).unwrap()
}

/// A request that arrives after the head, while the body streams, joins from byte 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_during_the_body_joins_it_from_byte_zero() {
    let report = Report::new(4);
    let stats = Arc::new(Stats::new());
    let layer = CoalesceLayer::new().observer(stats.clone());
    let service = in_process(&report, &layer);
    let first = service.clone().oneshot(get()).await.unwrap();
    assert_eq!(first.headers()[&ROLE], "led");
    report.gate.add_permits(2);
    // The first reader has read two chunks: the body is half way.
    let mut first_body = first.into_body();
    for _ in 0..2 {
        first_body.frame().await.unwrap().unwrap();
    }
    let late = service.clone().oneshot(get()).await.unwrap();
    assert_eq!(late.headers()[&ROLE], "joined");
    assert_eq!(report.executions(), 1);
    // The observer counts the late request as a hit of the one execution.
    let counted = stats.snapshot();
    assert_eq!((counted.hits, counted.misses), (1, 1));
    report.gate.add_permits(2);
    let mut late_bytes = Vec::new();
    frames(late, |d| late_bytes.extend_from_slice(d))
        .await
        .unwrap();
    assert_eq!(late_bytes, report.expected());
    while let Some(frame) = first_body.frame().await {
        frame.unwrap();
    }
    // Once the body has ended, the next request starts a new flight.
    let after = service.clone().oneshot(get()).await.unwrap();
    assert_eq!(after.headers()[&ROLE], "led");
    assert_eq!(report.executions(), 2);
}

/// A reader that stalls slows no one: the other reader gets the whole body while it
/// stalls; once the layer holds more than its budget, the stalled reader is cut off with
/// an error (its connection closes), never handed a silently short body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_slows_no_one_and_is_cut_at_the_budget() {
    // 64 chunks of 64 KiB: 4 MiB, against a budget of 1 MiB.
    let report = Report::new(64);
    let layer = CoalesceLayer::new().memory_budget(1 << 20);
    let service = in_process(&report, &layer);
    let (a, b) = tokio::join!(service.clone().oneshot(get()), async {
        until("the first call to lead", || report.executions() == 1).await;
        service.clone().oneshot(get()).await
    });
    let (a, b) = (a.unwrap(), b.unwrap());
    report.gate.add_permits(report.chunks);
    // The stalled reader takes one frame and then reads nothing.
    let mut stalled = b.into_body();
    stalled.frame().await.unwrap().unwrap();
    let mut fast = Vec::new();
    frames(a, |d| fast.extend_from_slice(d)).await.unwrap();
    assert_eq!(
        fast,
        report.expected(),
        "the fast reader got the whole body"
    );
    // The stalled reader resumes: it was cut off, and says so.
    let mut rest = 0;
    let error = loop {
        match stalled.frame().await {
            Some(Ok(frame)) => rest += frame.into_data().map_or(0, |d| d.len()),
            Some(Err(error)) => break error,
            None => panic!("a stalled reader past the budget must not end cleanly"),
        }
    };
    let error = error.downcast::<BodyError>().expect("the layer's error");
    assert!(error.is_cut(), "{error}");
    assert!(CHUNK + rest < report.chunks * CHUNK);
    assert_eq!(report.executions(), 1);
}
