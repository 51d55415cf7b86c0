//! Conditional and range requests through the layer: every caller gets the answer to the
//! question it asked (a `304`, a `206`, a `416` or the full `200`), computed from one
//! shared execution, and equal to what the origin alone answers to that request.
//!
//! Over loopback (axum served by `axum::serve`, hyper-util's client) for the scenarios a
//! browser, a download manager and a new visitor produce, in both orders; in process for
//! the property test. Ordering comes from gates: the handler answers only when the test
//! opens its gate, after every request has joined.

/// Code shared by the test files.
pub mod support {
    /// The reference origin.
    pub mod origin;
}

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use proptest::prelude::*;
use singleflight_tower::CoalesceLayer;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::{Layer as _, ServiceExt as _};

const BODY: &[u8] = b"0123456789abcdefghij";
const ROLE: http::HeaderName = http::HeaderName::from_static("x-coalesced");
const ETAG: &str = "\"v1\"";
const MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

/// The origin: the reference answer, after a gate; it counts its executions.
struct Origin {
    executions: AtomicUsize,
    gate: Semaphore,
    body: Vec<u8>,
    etag: String,
    last_modified: String,
}

impl Origin {
    fn new(body: &[u8], etag: &str, last_modified: &str) -> Arc<Self> {
        Arc::new(Self {
            executions: AtomicUsize::new(0),
            gate: Semaphore::new(0),
            body: body.to_vec(),
            etag: etag.to_owned(),
            last_modified: last_modified.to_owned(),
        })
    }

    fn executions(&self) -> usize {
        self.executions.load(Ordering::SeqCst)
    }

    async fn answer(&self, parts: &http::request::Parts) -> Response<Bytes> {
        self.executions.fetch_add(1, Ordering::SeqCst);
        self.gate.acquire().await.expect("gate open").forget();
        support::origin::answer(parts, &self.body, &self.etag, &self.last_modified)
    }
}

async fn serve(origin: &Arc<Origin>, layer: &CoalesceLayer) -> SocketAddr {
    let o = origin.clone();
    let app = Router::new()
        .route(
            "/file",
            get(move |request: axum::extract::Request| {
                let o = o.clone();
                async move {
                    let (parts, _) = request.into_parts();
                    o.answer(&parts).await.map(axum::body::Body::from)
                }
            }),
        )
        .route_layer(layer.clone());
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::task::yield_now().await;
    }
}

/// What a client saw: status, body, `ETag`, `Content-Range`.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: StatusCode,
    body: Bytes,
    etag: Option<String>,
    content_range: Option<String>,
}

fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| v.to_str().unwrap().to_owned())
}

async fn seen<B>(response: Response<B>) -> Seen
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = response.into_parts();
    Seen {
        status: parts.status,
        body: body.collect().await.unwrap().to_bytes(),
        etag: header(&parts.headers, "etag"),
        content_range: header(&parts.headers, "content-range"),
    }
}

/// Sends `first`, waits until it runs the handler, sends `second`, waits until it joined,
/// and opens the gate for `executions` runs; returns what each client saw.
async fn pair(first: &[(&str, &str)], second: &[(&str, &str)], joins: bool) -> (Seen, Seen, usize) {
    let origin = Origin::new(BODY, ETAG, MODIFIED);
    let layer = CoalesceLayer::new();
    let addr = serve(&origin, &layer).await;
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let send = |headers: &[(&str, &str)]| {
        let mut request = Request::get(format!("http://{addr}/file"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Empty::new()).unwrap();
        let client = client.clone();
        tokio::spawn(async move { seen(client.request(request).await.unwrap()).await })
    };
    let a = send(first);
    until("the first request to run", || origin.executions() == 1).await;
    let b = send(second);
    if joins {
        until("the second request to join", || layer.waiting() == 1).await;
    } else {
        until("the second request to run its own", || {
            origin.executions() == 2
        })
        .await;
        assert_eq!(layer.waiting(), 0);
    }
    origin.gate.add_permits(2);
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    (a, b, origin.executions())
}

fn full() -> Seen {
    Seen {
        status: StatusCode::OK,
        body: Bytes::from_static(BODY),
        etag: Some(ETAG.to_owned()),
        content_range: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revalidating_browser_and_a_new_visitor_in_either_order() {
    let browser = [("if-none-match", ETAG)];
    let not_modified = Seen {
        status: StatusCode::NOT_MODIFIED,
        body: Bytes::new(),
        etag: Some(ETAG.to_owned()),
        content_range: None,
    };
    let (b, v, runs) = pair(&browser, &[], true).await;
    assert_eq!((b, v, runs), (not_modified, full(), 1));
    let (v, b, runs) = pair(&[], &browser, true).await;
    let not_modified = Seen {
        status: StatusCode::NOT_MODIFIED,
        body: Bytes::new(),
        etag: Some(ETAG.to_owned()),
        content_range: None,
    };
    assert_eq!((v, b, runs), (full(), not_modified, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_client_and_a_plain_get_in_either_order() {
    let range = [("range", "bytes=0-4")];
    let partial = || Seen {
        status: StatusCode::PARTIAL_CONTENT,
        body: Bytes::from_static(b"01234"),
        etag: Some(ETAG.to_owned()),
        content_range: Some("bytes 0-4/20".to_owned()),
    };
    let (r, p, runs) = pair(&range, &[], true).await;
    assert_eq!((r, p, runs), (partial(), full(), 1));
    let (p, r, runs) = pair(&[], &range, true).await;
    assert_eq!((p, r, runs), (full(), partial(), 1));
    // A suffix range, answered once the length is known.
    let (p, r, runs) = pair(&[], &[("range", "bytes=-3")], true).await;
    assert_eq!(p, full());
    assert_eq!(
        (r.status, &r.body[..], runs),
        (StatusCode::PARTIAL_CONTENT, &b"hij"[..], 1)
    );
    assert_eq!(r.content_range.as_deref(), Some("bytes 17-19/20"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsatisfiable_range_gets_416() {
    let (p, r, runs) = pair(&[], &[("range", "bytes=50-60")], true).await;
    assert_eq!(p, full());
    assert_eq!(
        (r.status, r.body.len(), r.content_range.as_deref(), runs),
        (StatusCode::RANGE_NOT_SATISFIABLE, 0, Some("bytes */20"), 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_modified_since_against_last_modified() {
    let (p, r, runs) = pair(&[], &[("if-modified-since", MODIFIED)], true).await;
    assert_eq!(p, full());
    assert_eq!(
        (r.status, r.body.len(), runs),
        (StatusCode::NOT_MODIFIED, 0, 1)
    );
    let earlier = "Sat, 05 Nov 1994 08:49:37 GMT";
    let (p, r, runs) = pair(&[], &[("if-modified-since", earlier)], true).await;
    assert_eq!((p, r, runs), (full(), full(), 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_range_with_a_stale_validator_gets_the_full_body() {
    let stale = [("range", "bytes=0-4"), ("if-range", "\"v0\"")];
    let (p, r, runs) = pair(&[], &stale, true).await;
    assert_eq!((p, r, runs), (full(), full(), 1));
    let fresh = [("range", "bytes=5-9"), ("if-range", ETAG)];
    let (_, r, _) = pair(&[], &fresh, true).await;
    assert_eq!(
        (r.status, &r.body[..]),
        (StatusCode::PARTIAL_CONTENT, &b"56789"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_passes_through() {
    let (p, m, runs) = pair(&[], &[("if-match", ETAG)], false).await;
    assert_eq!((p, m, runs), (full(), full(), 2));
}

/// A request's headers, drawn from what browsers, download managers and caches send.
fn question() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    let if_none_match = prop_oneof![
        Just(ETAG.to_owned()),
        Just("W/\"v1\"".to_owned()),
        Just("\"v0\"".to_owned()),
        Just("\"v0\", \"v1\"".to_owned()),
        Just("*".to_owned()),
    ];
    let date = prop_oneof![
        Just(MODIFIED.to_owned()),
        Just("Sat, 05 Nov 1994 08:49:37 GMT".to_owned()),
        Just("Mon, 07 Nov 1994 08:49:37 GMT".to_owned()),
        Just("not a date".to_owned()),
    ];
    let range = prop_oneof![
        (0u64..30, 0u64..30).prop_map(|(a, b)| format!("bytes={a}-{b}")),
        (0u64..30).prop_map(|a| format!("bytes={a}-")),
        (0u64..30).prop_map(|n| format!("bytes=-{n}")),
        Just("bytes=0-1, 4-5".to_owned()),
        Just("items=0-4".to_owned()),
    ];
    let if_range = prop_oneof![
        Just(ETAG.to_owned()),
        Just("W/\"v1\"".to_owned()),
        Just("\"v0\"".to_owned()),
        Just(MODIFIED.to_owned()),
    ];
    (
        proptest::option::of(if_none_match),
        proptest::option::of(date),
        proptest::option::of(range),
        proptest::option::of(if_range),
    )
        .prop_map(|(inm, ims, range, if_range)| {
            let mut headers = Vec::new();
            headers.extend(inm.map(|v| ("if-none-match", v)));
            headers.extend(ims.map(|v| ("if-modified-since", v)));
            headers.extend(range.map(|v| ("range", v)));
            headers.extend(if_range.map(|v| ("if-range", v)));
            headers
        })
}

fn request(method: &Method, headers: &[(&'static str, String)]) -> Request<()> {
    let mut request = Request::builder().method(method.clone()).uri("/file");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.body(()).unwrap()
}

/// Every caller of a flight gets what the origin alone answers to its request.
async fn mix(
    requests: Vec<(Method, Vec<(&'static str, String)>)>,
    etag: &'static str,
    last_modified: &'static str,
    body: Vec<u8>,
) {
    let origin = Origin::new(&body, etag, last_modified);
    let o = origin.clone();
    let inner = tower::service_fn(move |request: Request<()>| {
        let o = o.clone();
        async move {
            let (parts, ()) = request.into_parts();
            Ok::<_, std::convert::Infallible>(o.answer(&parts).await.map(Full::new))
        }
    });
    let layer = CoalesceLayer::new().debug_header(ROLE);
    let service = layer.layer(inner);
    let calls: Vec<_> = requests
        .iter()
        .map(|(method, headers)| tokio::spawn(service.clone().oneshot(request(method, headers))))
        .collect();
    // GET and HEAD are a flight each: every request runs the origin or waits for a flight.
    until("every request to run or join", || {
        origin.executions() + layer.waiting() == requests.len()
    })
    .await;
    // One run per request at most (waiters whose question needs their own request).
    origin.gate.add_permits(requests.len());
    let origin_answer = |method: &Method, headers: &[(&'static str, String)]| {
        let (parts, ()) = request(method, headers).into_parts();
        seen(
            support::origin::answer(&parts, &origin.body, &origin.etag, &origin.last_modified)
                .map(Full::new),
        )
    };
    for ((method, headers), call) in requests.iter().zip(calls) {
        let response = call.await.unwrap().unwrap();
        let led = response.headers().get(ROLE).is_some_and(|r| r == "led");
        let got = seen(response).await;
        let expected = origin_answer(method, headers).await;
        // The documented choice: a leader whose question the shared response cannot
        // answer (it lacks the validator the question needs) has no request left to run,
        // and gets the full response, a valid answer to any conditional or range request.
        let full = origin_answer(method, &[]).await;
        let missing_validator = etag.is_empty() || last_modified.is_empty();
        assert!(
            got == expected || (led && missing_validator && got == full),
            "{method} with {headers:?}: got {got:?}, the origin answers {expected:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_caller_gets_what_the_origin_alone_answers(
        requests in proptest::collection::vec(
            (prop_oneof![4 => Just(Method::GET), 1 => Just(Method::HEAD)], question()),
            1..8,
        ),
        etag in prop_oneof![Just(ETAG), Just("W/\"v1\""), Just("")],
        last_modified in prop_oneof![Just(MODIFIED), Just("")],
        len in 0usize..25,
    ) {
        let body: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(mix(requests, etag, last_modified, body));
    }
}
