//! Who may receive whose response, checked the user's way: an axum router served with
//! `axum::serve`, the layer mounted with `route_layer(CoalesceLayer::new())`, and concurrent
//! `curl` processes as the clients.
//!
//! Ordering comes from gates: each execution waits on a semaphore the test opens once every
//! request is either running the handler or waiting for a flight.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use http::{HeaderMap, HeaderName};
use singleflight_tower::CoalesceLayer;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const ROLE: HeaderName = HeaderName::from_static("x-coalesced");

struct Backend {
    executions: AtomicUsize,
    gate: Semaphore,
}

impl Backend {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            executions: AtomicUsize::new(0),
            gate: Semaphore::new(0),
        })
    }

    /// Counts an execution, waits for the gate, and returns the execution's number (0 first).
    async fn enter(&self) -> usize {
        let n = self.executions.fetch_add(1, Ordering::SeqCst);
        self.gate.acquire().await.expect("gate open").forget();
        n
    }

    fn executions(&self) -> usize {
        self.executions.load(Ordering::SeqCst)
    }
}

/// `/session` gives each new visitor a fresh session cookie; `/hello` answers in the
/// caller's `Accept-Language` and says `Vary: Accept-Language`.
async fn serve(backend: &Arc<Backend>, layer: CoalesceLayer) -> SocketAddr {
    let (b1, b2, b3) = (backend.clone(), backend.clone(), backend.clone());
    let app = Router::new()
        .route(
            "/session",
            get(move || {
                let b = b1.clone();
                async move {
                    let n = b.enter().await;
                    (
                        [("set-cookie", format!("session=visitor-{n}; HttpOnly"))],
                        format!("welcome, visitor {n}"),
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/hello",
            get(move |headers: HeaderMap| {
                let b = b2.clone();
                async move {
                    b.enter().await;
                    let french = headers
                        .get("accept-language")
                        .is_some_and(|l| l.to_str().unwrap().starts_with("fr"));
                    (
                        [("vary", "Accept-Language")],
                        if french { "bonjour" } else { "hello" },
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/compressed",
            // As a compression layer inside this one answers: encoded for a caller that
            // accepts gzip, and says so with `Vary`.
            get(move |headers: HeaderMap| {
                let b = b3.clone();
                async move {
                    b.enter().await;
                    let gzip = headers
                        .get("accept-encoding")
                        .is_some_and(|e| e.to_str().unwrap().contains("gzip"));
                    let encoding = if gzip { "gzip" } else { "identity" };
                    (
                        [("vary", "Accept-Encoding"), ("content-encoding", encoding)],
                        format!("body encoded as {encoding}"),
                    )
                        .into_response()
                }
            }),
        )
        .route_layer(layer.debug_header(ROLE));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A response as curl printed it: lower-cased header names, and the body.
#[derive(Debug)]
struct Reply {
    headers: HashMap<String, String>,
    body: String,
}

/// Runs `curl -si` for `url` with `headers`, in a process of its own.
async fn curl(url: String, headers: Vec<String>) -> Reply {
    let mut command = Command::new("curl");
    command.args(["-si", "--max-time", "60"]);
    for header in &headers {
        command.args(["-H", header]);
    }
    let output = command.arg(&url).output().await.expect("curl runs");
    assert!(output.status.success(), "curl failed: {output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Reply {
        headers,
        body: body.to_owned(),
    }
}

/// Sends every request at once, lets the handler answer once each request runs it or
/// waits, and returns the replies in the order of `requests`.
async fn burst(
    backend: &Backend,
    layer: &CoalesceLayer,
    requests: Vec<(String, Vec<String>)>,
) -> Vec<Reply> {
    let total = requests.len();
    let mut set = JoinSet::new();
    for (i, (url, headers)) in requests.into_iter().enumerate() {
        set.spawn(async move { (i, curl(url, headers).await) });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while backend.executions() + layer.waiting() < total {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the clients"
        );
        tokio::task::yield_now().await;
    }
    // Each waiter that runs its own request needs a permit of its own.
    backend.gate.add_permits(total);
    let mut replies: Vec<_> = set.join_all().await;
    replies.sort_by_key(|(i, _)| *i);
    replies.into_iter().map(|(_, reply)| reply).collect()
}

/// Ten anonymous visitors at once: each gets a session of its own, never another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_visitors_get_distinct_cookies() {
    const N: usize = 10;
    let backend = Backend::new();
    let layer = CoalesceLayer::new();
    let addr = serve(&backend, layer.clone()).await;
    let requests = (0..N)
        .map(|_| (format!("http://{addr}/session"), vec![]))
        .collect();
    let replies = burst(&backend, &layer, requests).await;
    let mut cookies: Vec<_> = replies
        .iter()
        .map(|r| r.headers.get("set-cookie").expect("a cookie").clone())
        .collect();
    for reply in &replies {
        let cookie = &reply.headers["set-cookie"];
        let n = cookie
            .strip_prefix("session=visitor-")
            .and_then(|c| c.split(';').next())
            .unwrap();
        assert_eq!(reply.body, format!("welcome, visitor {n}"));
    }
    cookies.sort();
    cookies.dedup();
    assert_eq!(cookies.len(), N, "every visitor has a session of its own");
    assert_eq!(backend.executions(), N);
    let roles: Vec<_> = replies
        .iter()
        .map(|r| r.headers[ROLE.as_str()].as_str())
        .collect();
    assert_eq!(roles.iter().filter(|r| **r == "led").count(), 1);
    assert_eq!(roles.iter().filter(|r| **r == "own").count(), N - 1);
}

/// The opt-in shares a cookie response, as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_set_cookie_opts_in() {
    const N: usize = 5;
    let backend = Backend::new();
    let layer = CoalesceLayer::new().share_set_cookie(true);
    let addr = serve(&backend, layer.clone()).await;
    let requests = (0..N)
        .map(|_| (format!("http://{addr}/session"), vec![]))
        .collect();
    let replies = burst(&backend, &layer, requests).await;
    assert_eq!(backend.executions(), 1);
    assert!(
        replies
            .iter()
            .all(|r| r.headers["set-cookie"] == replies[0].headers["set-cookie"])
    );
}

/// `Vary: Accept-Language`: an English and a French visitor never share; two visitors with
/// the same language do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_separates_languages_and_joins_equal_ones() {
    const N: usize = 10;
    let backend = Backend::new();
    let layer = CoalesceLayer::new();
    let addr = serve(&backend, layer.clone()).await;
    let language = |i: usize| if i % 2 == 0 { "en-GB" } else { "fr-FR" };
    let requests = (0..N)
        .map(|i| {
            (
                format!("http://{addr}/hello"),
                vec![format!("Accept-Language: {}", language(i))],
            )
        })
        .collect();
    let replies = burst(&backend, &layer, requests).await;
    let mut led = None;
    for (i, reply) in replies.iter().enumerate() {
        let expected = if language(i) == "fr-FR" {
            "bonjour"
        } else {
            "hello"
        };
        assert_eq!(reply.body, expected, "visitor {i} ({})", language(i));
        if reply.headers[ROLE.as_str()] == "led" {
            led = Some(language(i));
        }
    }
    let led = led.expect("one request led");
    for (i, reply) in replies.iter().enumerate() {
        // The leader's language joined its flight; the other ran its own.
        let role = &reply.headers[ROLE.as_str()];
        if role != "led" {
            let expected = if language(i) == led { "joined" } else { "own" };
            assert_eq!(role, expected, "visitor {i} ({})", language(i));
        }
    }
    assert_eq!(backend.executions(), 1 + N / 2);
}

/// A response encoded for one caller's `Accept-Encoding` never reaches a caller that did
/// not accept that encoding; callers that accept the same one share it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_response_reaches_only_callers_that_accept_it() {
    let backend = Backend::new();
    let layer = CoalesceLayer::new();
    let addr = serve(&backend, layer.clone()).await;
    let gzip = || {
        (
            format!("http://{addr}/compressed"),
            vec!["Accept-Encoding: gzip".to_owned()],
        )
    };
    let plain = || {
        (
            format!("http://{addr}/compressed"),
            vec!["Accept-Encoding: identity".to_owned()],
        )
    };
    let replies = burst(&backend, &layer, vec![gzip(), gzip(), plain(), plain()]).await;
    for (i, reply) in replies.iter().enumerate() {
        let expected = if i < 2 { "gzip" } else { "identity" };
        assert_eq!(reply.headers["content-encoding"], expected, "caller {i}");
        assert_eq!(reply.body, format!("body encoded as {expected}"));
    }
    // One execution for the leader's encoding, one for each caller of the other.
    assert_eq!(backend.executions(), 3);
}
