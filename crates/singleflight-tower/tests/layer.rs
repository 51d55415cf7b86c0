//! The layer in process, called through `tower::ServiceExt::oneshot`: which responses are
//! shared, bodies of unknown length, streams, private responses, timeouts and errors.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use singleflight_tower::{Coalesce, CoalesceBody, CoalesceLayer, Unshared};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tower::util::BoxCloneSyncService;
use tower::{Layer as _, ServiceExt as _};

/// A body of chunks with no size hint (as a chunked response has), or an endless one; it
/// counts its polls.
struct Chunks {
    chunks: VecDeque<Bytes>,
    endless: bool,
    polls: Arc<AtomicUsize>,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        if self.endless {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"data: tick\n\n")))));
        }
        Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
    }
}

type Inner = BoxCloneSyncService<Request<()>, Response<Chunks>, io::Error>;

/// A backend whose executions wait on a gate, and the layer in front of it.
struct Backend {
    executions: AtomicUsize,
    polls: Arc<AtomicUsize>,
    gate: Semaphore,
}

impl Backend {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            executions: AtomicUsize::new(0),
            polls: Arc::new(AtomicUsize::new(0)),
            gate: Semaphore::new(0),
        })
    }

    fn executions(&self) -> usize {
        self.executions.load(Ordering::SeqCst)
    }

    /// The routes: `/chunks` (three chunks of ten bytes, no length), `/private`
    /// (`Cache-Control: private, max-age=60`), `/events` (an endless `text/event-stream`),
    /// `/error` (the service fails), anything else (`Accept` echoed).
    fn service(self: &Arc<Self>) -> Inner {
        let backend = self.clone();
        BoxCloneSyncService::new(tower::service_fn(move |request: Request<()>| {
            let backend = backend.clone();
            async move {
                let n = backend.executions.fetch_add(1, Ordering::SeqCst) + 1;
                backend.gate.acquire().await.expect("gate").forget();
                let chunks = |chunks: Vec<Bytes>, endless| Chunks {
                    chunks: chunks.into(),
                    endless,
                    polls: backend.polls.clone(),
                };
                let ten = |c: u8| Bytes::from(vec![c; 10]);
                let response = Response::builder();
                match request.uri().path() {
                    "/chunks" => Ok(response
                        .body(chunks(vec![ten(b'a'), ten(b'b'), ten(b'c')], false))
                        .unwrap()),
                    "/private" => Ok(response
                        .header("cache-control", "max-age=60, Private")
                        .body(chunks(vec![Bytes::from(format!("execution {n}"))], false))
                        .unwrap()),
                    "/events" => Ok(response
                        .header("content-type", "text/event-stream")
                        .body(chunks(vec![], true))
                        .unwrap()),
                    "/error" => Err(io::Error::other("the backend failed")),
                    _ => {
                        let accept = request
                            .headers()
                            .get("accept")
                            .map_or("", |v| v.to_str().unwrap());
                        let body = format!("execution {n} for {accept}");
                        Ok(response
                            .body(chunks(vec![Bytes::from(body)], false))
                            .unwrap())
                    }
                }
            }
        }))
    }
}

type Reply = Result<Response<CoalesceBody<Chunks>>, io::Error>;

fn call(service: &Coalesce<Inner>, method: Method, path: &str, accept: &str) -> JoinHandle<Reply> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("accept", accept)
        .body(())
        .unwrap();
    tokio::spawn(service.clone().oneshot(request))
}

/// Waits (yielding, never sleeping) until `ready` holds.
async fn until(mut ready: impl FnMut() -> bool) {
    for _ in 0..1_000_000 {
        if ready() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the condition never held");
}

async fn body(response: Response<CoalesceBody<Chunks>>) -> (StatusCode, Bytes, bool) {
    let status = response.status();
    let body = response.into_body();
    let copy = body.is_shared_copy();
    (status, body.collect().await.unwrap().to_bytes(), copy)
}

/// Starts `n` identical calls, waits until one runs and the rest have joined it.
async fn gather(
    layer: &CoalesceLayer,
    backend: &Backend,
    service: &Coalesce<Inner>,
    n: usize,
    path: &str,
) -> Vec<JoinHandle<Reply>> {
    let calls: Vec<_> = (0..n)
        .map(|_| call(service, Method::GET, path, ""))
        .collect();
    until(|| backend.executions() == 1 && layer.waiting() == n - 1).await;
    calls
}

#[tokio::test]
async fn a_body_of_unknown_length_is_shared() {
    let (layer, backend) = (CoalesceLayer::new(), Backend::new());
    let service = layer.layer(backend.service());
    let calls = gather(&layer, &backend, &service, 5, "/chunks").await;
    backend.gate.add_permits(1);
    for call in calls {
        let (status, bytes, copy) = body(call.await.unwrap().unwrap()).await;
        assert_eq!((status, bytes.len(), copy), (StatusCode::OK, 30, true));
        assert_eq!(&bytes[..], [[b'a'; 10], [b'b'; 10], [b'c'; 10]].concat());
    }
    assert_eq!(backend.executions(), 1);
}

#[tokio::test]
async fn an_event_stream_goes_to_the_leader_unread() {
    let layer = CoalesceLayer::new().unshared(Unshared::Respond(StatusCode::SERVICE_UNAVAILABLE));
    let backend = Backend::new();
    let service = layer.layer(backend.service());
    let mut calls = gather(&layer, &backend, &service, 3, "/events").await;
    backend.gate.add_permits(1);
    let leader = calls.remove(0).await.unwrap().unwrap();
    assert_eq!(
        backend.polls.load(Ordering::SeqCst),
        0,
        "the layer never read the stream"
    );
    let mut stream = leader.into_body();
    for _ in 0..3 {
        let frame = stream.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "data: tick\n\n");
    }
    for call in calls {
        assert_eq!(
            call.await.unwrap().unwrap().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}

#[tokio::test]
async fn private_responses_are_not_shared_unless_configured() {
    // Not shared: each waiter runs its own request (the default `Unshared::RunOwn`).
    let (layer, backend) = (CoalesceLayer::new(), Backend::new());
    let service = layer.layer(backend.service());
    let calls = gather(&layer, &backend, &service, 3, "/private").await;
    backend.gate.add_permits(3);
    let mut bodies = Vec::new();
    for call in calls {
        let (status, bytes, copy) = body(call.await.unwrap().unwrap()).await;
        assert_eq!((status, copy), (StatusCode::OK, false));
        bodies.push(bytes);
    }
    bodies.sort();
    assert_eq!(bodies, ["execution 1", "execution 2", "execution 3"]);

    // Shared when the route says so: status, headers and body.
    let (layer, backend) = (CoalesceLayer::new().share_private(true), Backend::new());
    let service = layer.layer(backend.service());
    let calls = gather(&layer, &backend, &service, 3, "/private").await;
    backend.gate.add_permits(1);
    for call in calls {
        let response = call.await.unwrap().unwrap();
        assert_eq!(response.headers()["cache-control"], "max-age=60, Private");
        let (status, bytes, copy) = body(response).await;
        assert_eq!(
            (status, &bytes[..], copy),
            (StatusCode::OK, &b"execution 1"[..], true)
        );
    }
}

#[tokio::test]
async fn an_error_answers_every_caller_with_the_status_and_passes_through_otherwise() {
    let layer = CoalesceLayer::new().error_status(StatusCode::BAD_GATEWAY);
    let backend = Backend::new();
    let service = layer.layer(backend.service());
    let calls = gather(&layer, &backend, &service, 4, "/error").await;
    backend.gate.add_permits(2);
    for call in calls {
        assert_eq!(
            call.await.unwrap().unwrap().status(),
            StatusCode::BAD_GATEWAY
        );
    }
    // A request that passes through gets the service's own error.
    let error = call(&service, Method::DELETE, "/error", "")
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.to_string(), "the backend failed");
    assert_eq!(backend.executions(), 2);
}

#[tokio::test]
async fn get_and_head_never_share() {
    let (layer, backend) = (CoalesceLayer::new(), Backend::new());
    let service = layer.layer(backend.service());
    let calls = [
        call(&service, Method::GET, "/r", ""),
        call(&service, Method::HEAD, "/r", ""),
    ];
    until(|| backend.executions() == 2).await;
    assert_eq!(layer.waiting(), 0);
    backend.gate.add_permits(2);
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn named_headers_split_flights() {
    let layer = CoalesceLayer::new().key_header(HeaderName::from_static("accept"));
    let backend = Backend::new();
    let service = layer.layer(backend.service());
    let json = (0..3).map(|_| call(&service, Method::GET, "/r", "application/json"));
    let html = (0..3).map(|_| call(&service, Method::GET, "/r", "text/html"));
    let calls: Vec<_> = json.chain(html).collect();
    until(|| backend.executions() == 2 && layer.waiting() == 4).await;
    backend.gate.add_permits(2);
    let mut bodies = Vec::new();
    for call in calls {
        bodies.push(body(call.await.unwrap().unwrap()).await.1);
    }
    assert!(
        bodies[..3]
            .iter()
            .all(|b| b.ends_with(b"application/json") && *b == bodies[0])
    );
    assert!(
        bodies[3..]
            .iter()
            .all(|b| b.ends_with(b"text/html") && *b == bodies[3])
    );
}

#[tokio::test(start_paused = true)]
async fn a_timeout_answers_its_caller_while_the_flight_goes_on() {
    let layer = CoalesceLayer::new().timeout(Duration::from_secs(2), StatusCode::GATEWAY_TIMEOUT);
    let backend = Backend::new();
    let service = layer.layer(backend.service());
    let calls = gather(&layer, &backend, &service, 3, "/r").await;
    // The paused clock runs ahead while every task waits: both callers time out.
    for call in calls {
        let (status, bytes, _) = body(call.await.unwrap().unwrap()).await;
        assert_eq!((status, bytes.len()), (StatusCode::GATEWAY_TIMEOUT, 0));
    }
    assert_eq!(layer.running(), 1, "the flight goes on");
    // A later caller joins the same flight and gets its response.
    let late = call(&service, Method::GET, "/r", "");
    until(|| layer.waiting() == 1).await;
    backend.gate.add_permits(1);
    let (status, bytes, _) = body(late.await.unwrap().unwrap()).await;
    assert_eq!(
        (status, &bytes[..]),
        (StatusCode::OK, &b"execution 1 for "[..])
    );
    assert_eq!(backend.executions(), 1);
}

/// What servers need of the service, its future and its body, checked at compile time.
#[test]
fn the_service_its_future_and_its_body_are_send() {
    fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    fn send<T: Send + 'static>() {}
    fn unpin<T: Unpin>() {}
    send_sync_clone::<CoalesceLayer>();
    send_sync_clone::<Coalesce<Inner>>();
    send::<<Coalesce<Inner> as tower::Service<Request<()>>>::Future>();
    send::<CoalesceBody<Chunks>>();
    unpin::<CoalesceBody<Chunks>>();
    send_sync_clone::<Coalesce<axum::routing::Route>>();
    send::<<Coalesce<axum::routing::Route> as tower::Service<axum::extract::Request>>::Future>();
}

#[tokio::test]
async fn attached_a_dropped_leader_hands_over_to_a_waiter() {
    let (layer, backend) = (CoalesceLayer::new().detached(false), Backend::new());
    let service = layer.layer(backend.service());
    let leader = call(&service, Method::GET, "/r", "");
    until(|| backend.executions() == 1).await;
    let waiters = [
        call(&service, Method::GET, "/r", ""),
        call(&service, Method::GET, "/r", ""),
    ];
    until(|| layer.waiting() == 2).await;
    // The leader's client goes away: its handler is cancelled, the oldest waiter runs its
    // own request, the other waits for that one.
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    until(|| backend.executions() == 2 && layer.waiting() == 1).await;
    assert_eq!(layer.running(), 1);
    backend.gate.add_permits(1);
    for call in waiters {
        let (status, bytes, _) = body(call.await.unwrap().unwrap()).await;
        assert_eq!(
            (status, &bytes[..]),
            (StatusCode::OK, &b"execution 2 for "[..])
        );
    }
    assert_eq!(backend.executions(), 2);
}
