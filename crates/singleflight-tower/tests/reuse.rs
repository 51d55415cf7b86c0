//! Responses that outlive their flight (`reuse_for`): reused while fresh by a shared
//! cache's rules (RFC 9111 §4.2), never when they must not be, with an `Age`. In process,
//! on a paused clock.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use singleflight_stats::Stats;
use singleflight_tower::{Coalesce, CoalesceLayer};
use tower::util::BoxCloneSyncService;
use tower::{Layer as _, ServiceExt as _};

const ROLE: HeaderName = HeaderName::from_static("x-coalesced");

type Inner = BoxCloneSyncService<Request<()>, Response<Full<Bytes>>, Infallible>;

/// A handler that answers `execution N` with the status and headers a test gives it, per
/// path, and counts its runs.
fn service(
    layer: CoalesceLayer,
    answer: impl Fn(&str) -> (StatusCode, Vec<(&'static str, String)>) + Send + Sync + 'static,
) -> (Coalesce<Inner>, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let (r, answer) = (runs.clone(), Arc::new(answer));
    let inner = Inner::new(tower::service_fn(move |request: Request<()>| {
        let n = r.fetch_add(1, Ordering::SeqCst) + 1;
        let (status, headers) = answer(request.uri().path());
        let mut response = Response::builder().status(status);
        for (name, value) in headers {
            response = response.header(name, value);
        }
        std::future::ready(Ok(response
            .body(Full::new(Bytes::from(format!("execution {n}"))))
            .unwrap()))
    }));
    (layer.layer(inner), runs)
}

/// One call: (role, `Age`, status, body).
async fn call(
    service: &Coalesce<Inner>,
    path: &str,
    headers: &[(&str, &str)],
) -> (String, Option<String>, StatusCode, String) {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = service
        .clone()
        .oneshot(request.body(()).unwrap())
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (role, age, status) = (
        header("x-coalesced").unwrap_or_default(),
        header("age"),
        response.status(),
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (role, age, status, String::from_utf8(body.to_vec()).unwrap())
}

async fn advance(seconds: u64) {
    tokio::time::advance(Duration::from_secs(seconds)).await;
}

#[tokio::test(start_paused = true)]
async fn reused_inside_the_window_with_its_age_and_not_after() {
    let stats = Arc::new(Stats::new());
    let (service, runs) = service(
        CoalesceLayer::new()
            .debug_header(ROLE)
            .observer(stats.clone())
            .reuse_for(Duration::from_secs(10)),
        |_| (StatusCode::OK, vec![]),
    );
    let first = call(&service, "/r", &[]).await;
    assert_eq!(
        (first.0.as_str(), first.1, first.3.as_str()),
        ("led", None, "execution 1")
    );
    let again = call(&service, "/r", &[]).await;
    assert_eq!(
        (again.0.as_str(), again.1.as_deref(), again.3.as_str()),
        ("reused", Some("0"), "execution 1")
    );
    advance(7).await;
    let later = call(&service, "/r", &[]).await;
    assert_eq!(
        (later.0.as_str(), later.1.as_deref(), later.3.as_str()),
        ("reused", Some("7"), "execution 1")
    );
    advance(3).await;
    let after = call(&service, "/r", &[]).await;
    assert_eq!((after.0.as_str(), after.3.as_str()), ("led", "execution 2"));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // The observer saw two executions and two reused responses, and no hits.
    let counted = stats.snapshot();
    assert_eq!((counted.misses, counted.reused, counted.hits), (2, 2, 0));
}

#[tokio::test(start_paused = true)]
async fn without_a_window_nothing_outlives_its_flight() {
    let (service, runs) = service(CoalesceLayer::new().debug_header(ROLE), |_| {
        (StatusCode::OK, vec![])
    });
    call(&service, "/r", &[]).await;
    let again = call(&service, "/r", &[]).await;
    assert_eq!((again.0.as_str(), again.3.as_str()), ("led", "execution 2"));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// How long each kind of response is reused, under a 100 s window.
#[tokio::test(start_paused = true)]
async fn the_response_s_own_freshness_caps_the_window() {
    let date = "Sun, 06 Nov 1994 08:49:37 GMT";
    let (service, _) = service(
        CoalesceLayer::new()
            .debug_header(ROLE)
            .reuse_for(Duration::from_secs(100)),
        move |path| {
            let headers = match path {
                "/max-age" => vec![("cache-control", "max-age=3".to_owned())],
                "/s-maxage" => vec![("cache-control", "max-age=9, s-maxage=2".to_owned())],
                "/expires" => vec![
                    ("date", date.to_owned()),
                    ("expires", "Sun, 06 Nov 1994 08:49:41 GMT".to_owned()),
                ],
                "/bad-expires" => vec![("expires", "0".to_owned())],
                "/aged" => vec![
                    ("cache-control", "max-age=5".to_owned()),
                    ("age", "3".to_owned()),
                ],
                _ => vec![],
            };
            (StatusCode::OK, headers)
        },
    );
    for (path, fresh_for) in [
        ("/max-age", 3),
        ("/s-maxage", 2),
        ("/expires", 4),
        ("/bad-expires", 0),
        ("/aged", 2),
        ("/plain", 100),
    ] {
        call(&service, path, &[]).await;
        if fresh_for > 0 {
            advance(fresh_for - 1).await;
            assert_eq!(
                call(&service, path, &[]).await.0,
                "reused",
                "{path} within its lifetime"
            );
            advance(1).await;
        }
        assert_eq!(
            call(&service, path, &[]).await.0,
            "led",
            "{path} after its lifetime"
        );
    }
    // The `Age` counts the age the response arrived with.
    call(&service, "/aged", &[]).await;
    advance(1).await;
    assert_eq!(call(&service, "/aged", &[]).await.1.as_deref(), Some("4"));
}

#[tokio::test(start_paused = true)]
async fn never_reused_when_it_must_not_be() {
    let layer = CoalesceLayer::new()
        .debug_header(ROLE)
        .reuse_for(Duration::from_secs(100))
        .share_private(true)
        .share_set_cookie(true);
    let (service, runs) = service(layer, |path| match path {
        "/no-store" => (
            StatusCode::OK,
            vec![("cache-control", "no-store".to_owned())],
        ),
        "/no-cache" => (
            StatusCode::OK,
            vec![("cache-control", "no-cache".to_owned())],
        ),
        "/private" => (
            StatusCode::OK,
            vec![("cache-control", "private".to_owned())],
        ),
        "/cookie" => (StatusCode::OK, vec![("set-cookie", "s=1".to_owned())]),
        "/vary-star" => (StatusCode::OK, vec![("vary", "*".to_owned())]),
        "/error" => (StatusCode::INTERNAL_SERVER_ERROR, vec![]),
        "/created" => (StatusCode::CREATED, vec![]),
        "/missing" => (StatusCode::NOT_FOUND, vec![]),
        _ => (StatusCode::OK, vec![]),
    });
    for path in [
        "/no-store",
        "/no-cache",
        "/private",
        "/cookie",
        "/vary-star",
        "/error",
        "/created",
    ] {
        call(&service, path, &[]).await;
        assert_eq!(
            call(&service, path, &[]).await.0,
            "led",
            "{path} must not be reused"
        );
    }
    // A 404 is heuristically cacheable.
    call(&service, "/missing", &[]).await;
    let missing = call(&service, "/missing", &[]).await;
    assert_eq!(
        (missing.0.as_str(), missing.2),
        ("reused", StatusCode::NOT_FOUND)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 15);
}

#[tokio::test(start_paused = true)]
async fn a_request_for_a_new_response_bypasses_reuse_and_replaces_it() {
    let (service, _) = service(
        CoalesceLayer::new()
            .debug_header(ROLE)
            .reuse_for(Duration::from_secs(100)),
        |_| (StatusCode::OK, vec![]),
    );
    call(&service, "/r", &[]).await;
    for directive in ["no-cache", "max-age=0"] {
        let fresh = call(&service, "/r", &[("cache-control", directive)]).await;
        assert_eq!(fresh.0, "led", "{directive}");
    }
    // The newest response is the one reused now.
    assert_eq!(call(&service, "/r", &[]).await.3, "execution 3");
}

#[tokio::test(start_paused = true)]
async fn vary_decides_who_reuses() {
    let (service, _) = service(
        CoalesceLayer::new()
            .debug_header(ROLE)
            .reuse_for(Duration::from_secs(100)),
        |_| (StatusCode::OK, vec![("vary", "accept-language".to_owned())]),
    );
    let en = [("accept-language", "en")];
    call(&service, "/hello", &en).await;
    assert_eq!(call(&service, "/hello", &en).await.0, "reused");
    assert_eq!(
        call(&service, "/hello", &[("accept-language", "fr")])
            .await
            .0,
        "led"
    );
}

#[tokio::test(start_paused = true)]
async fn a_conditional_request_is_answered_from_the_stored_response() {
    let (service, runs) = service(
        CoalesceLayer::new()
            .debug_header(ROLE)
            .reuse_for(Duration::from_secs(100)),
        |_| (StatusCode::OK, vec![("etag", "\"v1\"".to_owned())]),
    );
    call(&service, "/page", &[]).await;
    let revalidated = call(&service, "/page", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(
        (
            revalidated.0.as_str(),
            revalidated.2,
            revalidated.3.as_str()
        ),
        ("reused", StatusCode::NOT_MODIFIED, "")
    );
    let part = call(&service, "/page", &[("range", "bytes=0-3")]).await;
    assert_eq!(
        (part.2, part.3.as_str()),
        (StatusCode::PARTIAL_CONTENT, "exec")
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_store_is_bounded_and_purged_without_a_background_task() {
    let layer = CoalesceLayer::new()
        .debug_header(ROLE)
        .reuse_for(Duration::from_secs(10))
        .max_reused(2);
    let (service, _) = service(layer.clone(), |_| (StatusCode::OK, vec![]));
    for path in ["/a", "/b", "/c"] {
        call(&service, path, &[]).await;
    }
    // The oldest went to make room.
    assert_eq!(layer.reusable(), 2);
    assert_eq!(call(&service, "/a", &[]).await.0, "led");
    assert_eq!(call(&service, "/c", &[]).await.0, "reused");
    advance(10).await;
    assert_eq!(layer.purge_expired(), 2);
    assert_eq!(layer.reusable(), 0);
}
