//! Hot keys by route (`observe_routes`): an observer is offered `METHOD path` as each call's
//! key, so every request of a route counts under one key, and nothing of the query or the
//! headers (credentials) reaches it; without it, keys are offered hashed only.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use singleflight_stats::{Fanout, HotKeys, Stats};
use singleflight_tokio::{ObservedKey, Observer};
use singleflight_tower::{Coalesce, CoalesceLayer};
use tokio::sync::Semaphore;
use tower::util::BoxCloneSyncService;
use tower::{Layer as _, ServiceExt as _};

type Inner = BoxCloneSyncService<Request<()>, Response<Full<Bytes>>, Infallible>;

/// A handler that waits for `gate` (one permit per execution), then answers `ok`.
fn service(layer: CoalesceLayer, gate: Arc<Semaphore>) -> Coalesce<Inner> {
    let inner = Inner::new(tower::service_fn(move |_: Request<()>| {
        let gate = gate.clone();
        async move {
            gate.acquire().await.unwrap().forget();
            Ok(Response::builder()
                .header("cache-control", "max-age=60")
                .body(Full::new(Bytes::from_static(b"ok")))
                .unwrap())
        }
    }));
    layer.layer(inner)
}

async fn get(service: &Coalesce<Inner>, uri: &str, authorization: Option<&str>) {
    let mut request = Request::get(uri).header("host", "api.example");
    if let Some(credentials) = authorization {
        request = request.header("authorization", credentials);
    }
    let response = service
        .clone()
        .oneshot(request.body(()).unwrap())
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok");
}

/// The keys a `HotKeys` holds, as text, with their counts.
fn keys(top: &[singleflight_stats::HotKey]) -> Vec<(String, u64)> {
    top.iter()
        .map(|hot| (String::from_utf8_lossy(&hot.key).into_owned(), hot.count))
        .collect()
}

/// Requests for two routes, `/users/42` by three callers (two with credentials and a
/// query, one anonymous) and `/users/7` once, one after another.
async fn traffic(service: &Coalesce<Inner>) {
    get(
        service,
        "/users/42?token=alice-s3cret",
        Some("Bearer alice"),
    )
    .await;
    get(service, "/users/42?token=bob-s3cret", Some("Bearer bob")).await;
    get(service, "/users/42", None).await;
    get(service, "/users/7", None).await;
}

#[tokio::test]
async fn hot_keys_rank_routes_and_see_no_query_or_credentials() {
    let hot = Arc::new(HotKeys::new(64));
    let stats = Arc::new(Stats::new().with_hot_keys(hot.clone()));
    let layer = CoalesceLayer::new()
        .observer(stats.clone())
        .observe_routes();
    let gate = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
    let service = service(layer.clone(), gate);
    traffic(&service).await;

    assert_eq!(
        keys(&stats.hot_keys(5).executions),
        [
            ("GET /users/42".to_owned(), 3),
            ("GET /users/7".to_owned(), 1)
        ]
    );
    assert_eq!(stats.snapshot().misses, 4);
}

#[tokio::test]
async fn a_caller_that_joins_is_counted_under_the_route() {
    let hot = Arc::new(HotKeys::new(64));
    let stats = Arc::new(Stats::new().with_hot_keys(hot.clone()));
    let layer = CoalesceLayer::new()
        .observer(stats.clone())
        .observe_routes();
    let gate = Arc::new(Semaphore::new(0));
    let service = service(layer.clone(), gate.clone());
    let (a, b) = (service.clone(), service.clone());
    let leader = tokio::spawn(async move { get(&a, "/users/42?x=1", None).await });
    while layer.running() == 0 {
        tokio::task::yield_now().await;
    }
    let waiter = tokio::spawn(async move { get(&b, "/users/42?x=1", None).await });
    while layer.waiting() == 0 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(1);
    leader.await.unwrap();
    waiter.await.unwrap();

    let top = stats.hot_keys(5);
    assert_eq!(keys(&top.joins), [("GET /users/42".to_owned(), 1)]);
    assert_eq!(keys(&top.executions), [("GET /users/42".to_owned(), 1)]);
}

#[tokio::test]
async fn without_it_keys_are_offered_hashed_and_split_by_caller() {
    let hot = Arc::new(HotKeys::new(64));
    let stats = Arc::new(Stats::new().with_hot_keys(hot.clone()));
    let gate = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
    let hashed = service(CoalesceLayer::new().observer(stats.clone()), gate.clone());
    traffic(&hashed).await;
    let top = stats.hot_keys(10).executions;
    // Four request keys (the query and the credentials are in them), each a hash.
    assert_eq!(top.len(), 4);
    assert!(top.iter().all(|hot| hot.key.len() == 8 && hot.count == 1));

    // A key function: the layer cannot read a route back from its keys.
    let stats = Arc::new(Stats::new().with_hot_keys(Arc::new(HotKeys::new(64))));
    let layer = CoalesceLayer::new()
        .key_fn(|parts| Some(parts.uri.path().as_bytes().to_vec()))
        .observer(stats.clone())
        .observe_routes();
    traffic(&service(layer, gate)).await;
    let top = stats.hot_keys(10).executions;
    assert_eq!(top.len(), 2, "one key per path");
    assert!(top.iter().all(|hot| hot.key.len() == 8), "{top:?}");
}

/// Records the keys `reused` is offered, as written.
#[derive(Default)]
struct Reused(Mutex<Vec<Option<String>>>);

impl Observer for Reused {
    fn reused(&self, _: Option<&str>, key: &dyn ObservedKey) {
        let mut text = String::new();
        let written = matches!(key.write_key(&mut text), Some(Ok(())));
        self.0.lock().unwrap().push(written.then_some(text));
    }
}

#[tokio::test]
async fn a_reused_response_is_counted_under_the_route() {
    let reused = Arc::new(Reused::default());
    let stats = Arc::new(Stats::new());
    let both = Arc::new(Fanout::new([reused.clone() as _, stats.clone() as _]));
    let layer = CoalesceLayer::new()
        .reuse_for(std::time::Duration::from_secs(60))
        .observer(both)
        .observe_routes();
    let service = service(layer, Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)));
    get(&service, "/users/42?page=2", Some("Bearer alice")).await;
    get(&service, "/users/42?page=2", Some("Bearer alice")).await;

    assert_eq!(stats.snapshot().reused, 1);
    assert_eq!(
        *reused.0.lock().unwrap(),
        [Some("GET /users/42".to_owned())]
    );
}
