//! The layer over real HTTP on loopback: every scenario runs twice, behind an axum router
//! (`Router::route_layer`) and behind hyper's own HTTP/1 server (hyper-util's
//! `TowerToHyperService`, no framework), with requests from hyper-util's client.
//!
//! Ordering comes from gates, never from sleeping: a handler waits on a semaphore the test
//! opens once the layer reports that the expected number of requests have joined the flight.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use singleflight_stats::Stats;
use singleflight_tower::CoalesceLayer;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::{Layer as _, Service};

const ROLE: HeaderName = HeaderName::from_static("x-coalesced");
/// A body of 2 MiB: larger than any one read, so it reaches the callers in many chunks.
const BIG: usize = 2 << 20;

/// What the handler does, the same behind either server.
struct Backend {
    /// Executions per path.
    executions: Mutex<HashMap<String, usize>>,
    /// Each execution takes a permit before it answers.
    gate: Semaphore,
}

impl Default for Backend {
    fn default() -> Self {
        Self {
            executions: Mutex::default(),
            gate: Semaphore::new(0),
        }
    }
}

impl Backend {
    fn executions(&self, path: &str) -> usize {
        self.executions
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// `/gated`: a body naming the execution and the caller's `Authorization`; `/big`: a body
    /// over the layer's limit; `/panic`: the first execution panics.
    async fn handle(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> (StatusCode, Bytes) {
        let n = {
            let mut executions = self.executions.lock().unwrap();
            let n = executions.entry(path.to_owned()).or_default();
            *n += 1;
            *n
        };
        self.gate.acquire().await.expect("gate open").forget();
        let user = headers
            .get("authorization")
            .map_or("nobody", |v| v.to_str().unwrap());
        match path {
            "/big" => (StatusCode::OK, Bytes::from(vec![b'x'; BIG])),
            "/panic" if n == 1 => panic!("the handler failed"),
            _ => (
                StatusCode::OK,
                Bytes::from(format!("{method} {path} execution {n} for {user}")),
            ),
        }
    }
}

/// Counts the response futures the server holds, around the layer: it falls when the
/// server drops one (a client that went away).
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    live: Arc<AtomicUsize>,
}

struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<S, R> Service<R> for Tracked<S>
where
    S: Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.live.fetch_add(1, Ordering::SeqCst);
        let live = Live(self.live.clone());
        let future = self.inner.call(request);
        Box::pin(async move {
            let _live = live;
            future.await
        })
    }
}

#[derive(Clone, Copy, Debug)]
enum Stack {
    Axum,
    Hyper,
}

/// A server on a loopback port with the layer in front of [`Backend`].
struct Harness {
    addr: SocketAddr,
    layer: CoalesceLayer,
    backend: Arc<Backend>,
    live: Arc<AtomicUsize>,
    client: Client<HttpConnector, Empty<Bytes>>,
    server: tokio::task::JoinHandle<()>,
}

impl Harness {
    async fn start(stack: Stack, layer: CoalesceLayer) -> Self {
        let layer = layer.debug_header(ROLE);
        let backend = Arc::new(Backend::default());
        let live = Arc::new(AtomicUsize::new(0));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = match stack {
            Stack::Axum => {
                let b = backend.clone();
                let router = axum::Router::new()
                    .route(
                        "/{*path}",
                        axum::routing::any(move |request: axum::extract::Request| {
                            let b = b.clone();
                            async move {
                                let (status, body) = b
                                    .handle(
                                        request.method(),
                                        request.uri().path(),
                                        request.headers(),
                                    )
                                    .await;
                                (status, body)
                            }
                        }),
                    )
                    .route_layer(layer.clone());
                let app = Tracked {
                    inner: router,
                    live: live.clone(),
                };
                tokio::spawn(async move {
                    let app = axum::ServiceExt::<axum::extract::Request>::into_make_service(app);
                    axum::serve(listener, app).await.unwrap();
                })
            }
            Stack::Hyper => {
                let b = backend.clone();
                let handler = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let b = b.clone();
                    async move {
                        let (status, body) = b
                            .handle(request.method(), request.uri().path(), request.headers())
                            .await;
                        let mut response = Response::new(Full::new(body));
                        *response.status_mut() = status;
                        Ok::<_, Infallible>(response)
                    }
                });
                let service = Tracked {
                    inner: layer.layer(handler),
                    live: live.clone(),
                };
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
                })
            }
        };
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self {
            addr,
            layer,
            backend,
            live,
            client,
            server,
        }
    }

    fn request(&self, method: Method, path: &str, user: Option<&str>) -> Request<Empty<Bytes>> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(user) = user {
            request = request.header("authorization", user);
        }
        request.body(Empty::new()).unwrap()
    }

    /// Sends `count` requests at once, each on its own task; the returned set yields
    /// (status, role header, body) as they finish.
    fn fire(
        &self,
        count: usize,
        method: Method,
        path: &str,
        user: Option<&str>,
    ) -> JoinSet<(StatusCode, String, Bytes)> {
        let mut set = JoinSet::new();
        for _ in 0..count {
            let client = self.client.clone();
            let request = self.request(method.clone(), path, user);
            set.spawn(async move {
                let response = client.request(request).await.expect("a response");
                let status = response.status();
                let role = response
                    .headers()
                    .get(ROLE)
                    .map_or(String::new(), |v| v.to_str().unwrap().to_owned());
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, role, body)
            });
        }
        set
    }

    /// Lets `n` more executions answer.
    fn open(&self, n: usize) {
        self.backend.gate.add_permits(n);
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Waits (yielding, never sleeping) until `ready` holds; fails after sixty seconds.
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::task::yield_now().await;
    }
}

async fn all(mut set: JoinSet<(StatusCode, String, Bytes)>) -> Vec<(StatusCode, String, Bytes)> {
    let mut out = Vec::new();
    while let Some(result) = set.join_next().await {
        out.push(result.expect("a client task"));
    }
    out
}

fn count(results: &[(StatusCode, String, Bytes)], role: &str) -> usize {
    results.iter().filter(|(_, r, _)| r == role).count()
}

/// 1,000 concurrent identical GETs, each on its own HTTP/1.1 connection: one execution,
/// 1,000 × 200 with one body.
async fn herd(stack: Stack) {
    const N: usize = 1000;
    let stats = Arc::new(Stats::new());
    let h = Harness::start(stack, CoalesceLayer::new().observer(stats.clone())).await;
    let set = h.fire(N, Method::GET, "/gated", None);
    until("every request to join the first", || {
        h.layer.waiting() == N - 1 && h.backend.executions("/gated") == 1
    })
    .await;
    assert_eq!(h.layer.running(), 1);
    h.open(1);
    let results = all(set).await;
    assert_eq!(results.len(), N);
    assert!(
        results
            .iter()
            .all(|(status, _, _)| *status == StatusCode::OK)
    );
    let body = &results[0].2;
    assert_eq!(body.as_ref(), b"GET /gated execution 1 for nobody");
    assert!(results.iter().all(|(_, _, b)| b == body));
    assert_eq!(
        (count(&results, "led"), count(&results, "joined")),
        (1, N - 1)
    );
    assert_eq!(h.backend.executions("/gated"), 1);
    let snapshot = stats.snapshot();
    assert_eq!((snapshot.misses, snapshot.hits), (1, N as u64 - 1));
    until("the flight to end", || {
        h.layer.running() == 0 && h.layer.waiting() == 0
    })
    .await;
}

/// POSTs pass through: all of them run, at the same time.
async fn posts_pass_through(stack: Stack) {
    const N: usize = 20;
    let h = Harness::start(stack, CoalesceLayer::new()).await;
    let set = h.fire(N, Method::POST, "/gated", None);
    // All N executions are inside the handler at once: none waited for another.
    until("every POST to run", || h.backend.executions("/gated") == N).await;
    assert_eq!(h.layer.waiting(), 0);
    h.open(N);
    let results = all(set).await;
    assert!(
        results
            .iter()
            .all(|(status, role, _)| *status == StatusCode::OK && role.is_empty())
    );
    let mut bodies: Vec<_> = results.iter().map(|(_, _, b)| b.clone()).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), N, "each POST got its own execution");
}

/// Two users with different `Authorization` headers: two flights, never one.
async fn users_never_share(stack: Stack) {
    const N: usize = 50;
    let h = Harness::start(stack, CoalesceLayer::new()).await;
    let alice = h.fire(N, Method::GET, "/gated", Some("Bearer alice"));
    let bob = h.fire(N, Method::GET, "/gated", Some("Bearer bob"));
    until("both flights to gather", || {
        h.backend.executions("/gated") == 2 && h.layer.waiting() == 2 * N - 2
    })
    .await;
    h.open(2);
    for (results, user) in [(all(alice).await, "alice"), (all(bob).await, "bob")] {
        assert_eq!(results.len(), N);
        let body = std::str::from_utf8(&results[0].2).unwrap().to_owned();
        assert!(
            body.ends_with(&format!("for Bearer {user}")),
            "{user} got {body}"
        );
        assert!(
            results
                .iter()
                .all(|(s, _, b)| *s == StatusCode::OK && b == body.as_bytes())
        );
    }
    assert_eq!(h.backend.executions("/gated"), 2);
}

/// The client whose request leads goes away mid-flight: the others still get its response,
/// from its one execution.
async fn dropped_client_cancels_nothing(stack: Stack) {
    const N: usize = 10;
    let h = Harness::start(stack, CoalesceLayer::new()).await;
    let mut leader = h.fire(1, Method::GET, "/gated", None);
    until("the leader to run", || h.backend.executions("/gated") == 1).await;
    let waiters = h.fire(N, Method::GET, "/gated", None);
    until("the others to join", || h.layer.waiting() == N).await;
    // Drop the leading client (its connection closes) and wait for the server to drop its
    // response future.
    leader.abort_all();
    assert!(
        leader
            .join_next()
            .await
            .unwrap()
            .unwrap_err()
            .is_cancelled()
    );
    until("the server to see the client leave", || {
        h.live.load(Ordering::SeqCst) == N
    })
    .await;
    assert_eq!(h.layer.running(), 1, "the shared request goes on");
    h.open(1);
    let results = all(waiters).await;
    assert_eq!(results.len(), N);
    assert!(results.iter().all(|(s, role, b)| {
        *s == StatusCode::OK
            && role == "joined"
            && b.as_ref() == b"GET /gated execution 1 for nobody"
    }));
    assert_eq!(h.backend.executions("/gated"), 1);
}

/// A large body is shared too: one execution, and every caller gets all of it.
async fn big_body_is_shared(stack: Stack) {
    const N: usize = 10;
    let h = Harness::start(stack, CoalesceLayer::new()).await;
    let set = h.fire(N, Method::GET, "/big", None);
    until("the waiters to join", || {
        h.layer.waiting() == N - 1 && h.backend.executions("/big") == 1
    })
    .await;
    h.open(1);
    let results = all(set).await;
    assert_eq!(results.len(), N);
    assert!(
        results.iter().all(|(s, _, b)| *s == StatusCode::OK
            && b.len() == BIG
            && b.iter().all(|&x| x == b'x'))
    );
    assert_eq!(
        (count(&results, "led"), count(&results, "joined")),
        (1, N - 1)
    );
    assert_eq!(h.backend.executions("/big"), 1);
}

/// A panicking handler: every caller of its flight gets the configured status, and the next
/// request runs the handler again.
async fn panic_answers_everyone_then_runs_again(stack: Stack) {
    const N: usize = 10;
    let layer = CoalesceLayer::new().panic_status(StatusCode::BAD_GATEWAY);
    let h = Harness::start(stack, layer).await;
    let set = h.fire(N, Method::GET, "/panic", None);
    until("the waiters to join", || {
        h.layer.waiting() == N - 1 && h.backend.executions("/panic") == 1
    })
    .await;
    h.open(1);
    let results = all(set).await;
    assert_eq!(results.len(), N);
    assert!(
        results
            .iter()
            .all(|(s, _, b)| *s == StatusCode::BAD_GATEWAY && b.is_empty())
    );
    assert_eq!(h.backend.executions("/panic"), 1);
    h.open(1);
    let again = all(h.fire(1, Method::GET, "/panic", None)).await;
    assert_eq!(again[0].0, StatusCode::OK);
    assert_eq!(again[0].2.as_ref(), b"GET /panic execution 2 for nobody");
}

/// Each scenario, once behind axum and once behind hyper alone.
macro_rules! on_both_stacks {
    ($($name:ident => $scenario:expr;)*) => {
        mod axum_router {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    ($scenario)(Stack::Axum).await;
                }
            )*
        }
        mod hyper_server {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    ($scenario)(Stack::Hyper).await;
                }
            )*
        }
    };
}

on_both_stacks! {
    a_thousand_identical_gets_run_once => herd;
    posts_never_coalesce => posts_pass_through;
    different_authorization_never_shares => users_never_share;
    a_dropped_client_cancels_nothing => dropped_client_cancels_nothing;
    a_large_body_is_shared => big_body_is_shared;
    a_panic_answers_everyone_and_the_next_request_runs => panic_answers_everyone_then_runs_again;
}
