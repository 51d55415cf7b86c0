//! The layer mounted every way users mount it, served the way users serve it
//! (`axum::serve(listener, app)` on a plain `Router`, or hyper-util's server), and hit over
//! loopback by 500 concurrent clients: one execution per resource, whatever the framework
//! does with the layer.
//!
//! Ordering comes from gates, never from sleeping: each execution waits on a semaphore that
//! the test opens once every request is either running the handler or waiting for a flight.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::OriginalUri;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use singleflight_tower::CoalesceLayer;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::Layer as _;

const N: usize = 500;

/// Executions per resource (the original URI and the `Host`), each held at a gate.
struct Backend {
    executions: Mutex<HashMap<String, usize>>,
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
    async fn handle(&self, uri: &http::Uri, host: Option<&str>) -> String {
        let resource = format!("{} {}", host.unwrap_or("-"), uri);
        *self
            .executions
            .lock()
            .unwrap()
            .entry(resource.clone())
            .or_default() += 1;
        self.gate.acquire().await.expect("gate open").forget();
        resource
    }

    fn executions(&self) -> usize {
        self.executions.lock().unwrap().values().sum()
    }

    fn per_resource(&self) -> HashMap<String, usize> {
        self.executions.lock().unwrap().clone()
    }
}

/// An axum handler over `backend`: it answers the URI the client asked for and its `Host`.
fn handler(backend: &Arc<Backend>) -> axum::routing::MethodRouter {
    let backend = backend.clone();
    get(
        move |OriginalUri(uri): OriginalUri, headers: http::HeaderMap| {
            let backend = backend.clone();
            async move {
                let host = headers.get("host").map(|h| h.to_str().unwrap().to_owned());
                backend.handle(&uri, host.as_deref()).await
            }
        },
    )
}

/// Serves `app` as the axum docs do: `axum::serve(listener, app)`, nothing added.
async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Sends `count` GETs for each of `paths` at once (each request with `Host: host` when
/// given), lets the handler answer once every request runs it or waits, and returns the
/// bodies per path.
async fn burst(
    addr: SocketAddr,
    layer: &CoalesceLayer,
    backend: &Backend,
    requests: &[(&str, Option<&str>)],
    count: usize,
) -> Vec<Vec<String>> {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut sets = Vec::new();
    for (path, host) in requests {
        let mut set = JoinSet::new();
        for _ in 0..count {
            let mut request = Request::get(format!("http://{addr}{path}"));
            if let Some(host) = host {
                request = request.header("host", *host);
            }
            let request = request.body(Empty::new()).unwrap();
            let client = client.clone();
            set.spawn(async move {
                let response = client.request(request).await.expect("a response");
                assert_eq!(response.status(), StatusCode::OK);
                let body = response.into_body().collect().await.unwrap().to_bytes();
                String::from_utf8(body.to_vec()).unwrap()
            });
        }
        sets.push(set);
    }
    let total = requests.len() * count;
    let deadline = Instant::now() + Duration::from_secs(60);
    while backend.executions() + layer.waiting() < total {
        assert!(
            Instant::now() < deadline,
            "timed out: {} executions, {} waiting, of {total} requests",
            backend.executions(),
            layer.waiting()
        );
        tokio::task::yield_now().await;
    }
    backend.gate.add_permits(total);
    let mut out = Vec::new();
    for mut set in sets {
        let mut bodies = Vec::new();
        while let Some(body) = set.join_next().await {
            bodies.push(body.expect("a client task"));
        }
        out.push(bodies);
    }
    out
}

fn all_equal(bodies: &[String], expected: &str) {
    assert!(
        bodies.iter().all(|b| b == expected),
        "expected every body to be {expected:?}, got {:?}",
        bodies.iter().find(|b| *b != expected)
    );
}

async fn one_execution(app: impl FnOnce(&Arc<Backend>, CoalesceLayer) -> Router, path: &str) {
    let backend = Arc::new(Backend::default());
    let layer = CoalesceLayer::new();
    let addr = serve(app(&backend, layer.clone())).await;
    let bodies = burst(addr, &layer, &backend, &[(path, None)], N).await;
    assert_eq!(
        backend.executions(),
        1,
        "{N} identical GETs ran the handler {} times",
        backend.executions()
    );
    all_equal(&bodies[0], &format!("127.0.0.1:{} {path}", addr.port()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_layer_on_a_plain_router() {
    one_execution(
        |b, layer| {
            Router::new()
                .route("/report", handler(b))
                .route_layer(layer)
        },
        "/report",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_on_a_plain_router() {
    one_execution(
        |b, layer| Router::new().route("/report", handler(b)).layer(layer),
        "/report",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_layer_inside_a_nested_router() {
    one_execution(
        |b, layer| {
            Router::new().nest(
                "/api",
                Router::new()
                    .route("/report", handler(b))
                    .route_layer(layer),
            )
        },
        "/api/report",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_layer_inside_a_merged_router() {
    one_execution(
        |b, layer| {
            Router::new()
                .route("/other", get(|| async { "other" }))
                .merge(
                    Router::new()
                        .route("/report", handler(b))
                        .route_layer(layer),
                )
        },
        "/report",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_util_server() {
    let backend = Arc::new(Backend::default());
    let layer = CoalesceLayer::new();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let b = backend.clone();
    let service = layer.layer(tower::service_fn(
        move |request: Request<hyper::body::Incoming>| {
            let b = b.clone();
            async move {
                let host = request
                    .headers()
                    .get("host")
                    .map(|h| h.to_str().unwrap().to_owned());
                let body = b.handle(request.uri(), host.as_deref()).await;
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
            }
        },
    ));
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
    let bodies = burst(addr, &layer, &backend, &[("/report", None)], N).await;
    assert_eq!(backend.executions(), 1);
    all_equal(&bodies[0], &format!("127.0.0.1:{} /report", addr.port()));
}

/// One `route_layer` over two routes: one flight per route, never one for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_layer_over_two_routes_runs_each_once() {
    let backend = Arc::new(Backend::default());
    let layer = CoalesceLayer::new();
    let app = Router::new()
        .route("/a", handler(&backend))
        .route("/b", handler(&backend))
        .route_layer(layer.clone());
    let addr = serve(app).await;
    let bodies = burst(addr, &layer, &backend, &[("/a", None), ("/b", None)], N / 2).await;
    let port = addr.port();
    assert_eq!(
        backend.per_resource(),
        HashMap::from([
            (format!("127.0.0.1:{port} /a"), 1),
            (format!("127.0.0.1:{port} /b"), 1)
        ])
    );
    all_equal(&bodies[0], &format!("127.0.0.1:{port} /a"));
    all_equal(&bodies[1], &format!("127.0.0.1:{port} /b"));
}

/// One router, with its layer, nested under two prefixes: `/a/x` and `/b/x` reach the same
/// route as `/x`, yet they are two resources and never share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_router_nested_twice_never_shares_across_prefixes() {
    let backend = Arc::new(Backend::default());
    let layer = CoalesceLayer::new();
    let inner = Router::new()
        .route("/x", handler(&backend))
        .route_layer(layer.clone());
    let app = Router::new().nest("/a", inner.clone()).nest("/b", inner);
    let addr = serve(app).await;
    let bodies = burst(
        addr,
        &layer,
        &backend,
        &[("/a/x", None), ("/b/x", None)],
        50,
    )
    .await;
    let port = addr.port();
    assert_eq!(
        backend.per_resource(),
        HashMap::from([
            (format!("127.0.0.1:{port} /a/x"), 1),
            (format!("127.0.0.1:{port} /b/x"), 1)
        ])
    );
    all_equal(&bodies[0], &format!("127.0.0.1:{port} /a/x"));
    all_equal(&bodies[1], &format!("127.0.0.1:{port} /b/x"));
}

/// Two virtual hosts on one server: `/me` on each is its own resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_never_share() {
    let backend = Arc::new(Backend::default());
    let layer = CoalesceLayer::new();
    let app = Router::new()
        .route("/me", handler(&backend))
        .route_layer(layer.clone());
    let addr = serve(app).await;
    let bodies = burst(
        addr,
        &layer,
        &backend,
        &[("/me", Some("a.example")), ("/me", Some("b.example"))],
        50,
    )
    .await;
    assert_eq!(
        backend.per_resource(),
        HashMap::from([
            ("a.example /me".to_owned(), 1),
            ("b.example /me".to_owned(), 1)
        ])
    );
    all_equal(&bodies[0], "a.example /me");
    all_equal(&bodies[1], "b.example /me");
}

/// Two layers are two sets of flights, and so is a layer configured from a clone; a plain
/// clone shares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_share_and_new_layers_do_not() {
    use tower::{Service as _, ServiceExt as _};
    for (second, shares) in [
        (None, true),
        (Some(CoalesceLayer::new()), false),
        (Some(CoalesceLayer::new().memory_budget(1 << 20)), false),
    ] {
        let backend = Arc::new(Backend::default());
        let layer = CoalesceLayer::new();
        let other = second.unwrap_or_else(|| layer.clone());
        // The same inner service under each layer, called in process for one resource.
        let b = backend.clone();
        let inner = tower::service_fn(move |request: Request<()>| {
            let b = b.clone();
            async move {
                let body = b.handle(request.uri(), None).await;
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
            }
        });
        let mut calls = JoinSet::new();
        for layer in [&layer, &other] {
            let mut service = layer.layer(inner.clone());
            let call = service
                .ready()
                .await
                .unwrap()
                .call(Request::get("/r").body(()).unwrap());
            calls.spawn(call);
        }
        let expected = if shares { 1 } else { 2 };
        let deadline = Instant::now() + Duration::from_secs(60);
        while backend.executions() < expected || layer.waiting() + other.waiting() < 2 - expected {
            assert!(Instant::now() < deadline, "timed out");
            tokio::task::yield_now().await;
        }
        backend.gate.add_permits(2);
        while let Some(reply) = calls.join_next().await {
            assert_eq!(reply.unwrap().unwrap().status(), StatusCode::OK);
        }
        assert_eq!(backend.executions(), expected);
    }
}

/// The README's example is the `report` example, line for line: what CI serves and loads
/// with `ab` is what the README shows.
#[test]
fn the_readme_shows_the_report_example() {
    let readme = include_str!("../README.md");
    let example = include_str!("../examples/report.rs");
    let code: String = example
        .lines()
        .skip_while(|line| line.starts_with("//!") || line.is_empty())
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(
        readme.contains(&code),
        "README.md must show examples/report.rs (after its //! header) verbatim"
    );
}
