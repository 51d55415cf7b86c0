//! The demo service over real HTTP: a server on a loopback port, real requests from the
//! load generator, and the database's own query count.

use std::sync::Arc;
use std::time::{Duration, Instant};

use singleflight_examples::db::Db;
use singleflight_examples::load;
use singleflight_examples::server::{App, COALESCED, Server, UNCOALESCED};

const CONNECTIONS: usize = 10;
const REQUESTS: usize = 20;

async fn start(orders: u64) -> (Arc<App>, Server) {
    let db = Db::create(orders, CONNECTIONS).expect("create the database");
    let app = Arc::new(App::new(db));
    let server = Server::start(Arc::clone(&app))
        .await
        .expect("bind a loopback port");
    assert!(server.addr().ip().is_loopback());
    (app, server)
}

/// Waits (yielding, never sleeping) until `ready` holds; fails after ten seconds.
async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_query() {
    let (app, server) = start(2_000).await;
    let addr = server.addr();
    // Take every connection, as other traffic would: the first request's query must wait
    // for one, and meanwhile every other request joins its flight.
    let held: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            app.db()
                .permits()
                .try_acquire_arc()
                .expect("an idle connection")
        })
        .collect();
    let load = tokio::spawn(async move {
        load::fire(addr, &format!("{COALESCED}/42"), REQUESTS, |_| {}).await
    });
    // The request that launched the detached flight leads it; every other one joins.
    wait_until("every other request to join", || {
        app.reports().waiters(&42) == REQUESTS - 1
    })
    .await;
    assert_eq!(app.db().queries(), 0, "the query is held back");
    drop(held);
    let load = load
        .await
        .expect("load task")
        .expect("every request answered");

    assert_eq!(app.db().queries(), 1, "one query served every request");
    assert_eq!(load.ok(), REQUESTS);
    assert_eq!(load.count_role("leader"), 1);
    assert_eq!(load.count_role("shared"), REQUESTS - 1);
    let body = &load.responses[0].body;
    assert!(body.starts_with("customer 42: "), "{body}");
    assert!(
        load.responses.iter().all(|r| &r.body == body),
        "one report for all"
    );
    assert_eq!(app.reports().in_flight(), 0);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_coalescing_every_request_queries() {
    let (app, server) = start(2_000).await;
    let load = load::fire(
        server.addr(),
        &format!("{UNCOALESCED}/42"),
        REQUESTS,
        |_| {},
    )
    .await
    .expect("every request answered");
    assert_eq!(app.db().queries(), REQUESTS);
    assert_eq!(load.ok(), REQUESTS);
    assert_eq!(load.count_role("direct"), REQUESTS);
    let body = &load.responses[0].body;
    assert!(
        load.responses.iter().all(|r| &r.body == body),
        "the same data"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_bad_requests() {
    let (app, server) = start(500).await;
    let addr = server.addr();
    // A customer with no orders: the query's error is the response, with its role.
    let missing = load::get(addr, &format!("{COALESCED}/999999"))
        .await
        .expect("a response");
    assert_eq!(missing.status, 500);
    assert_eq!(missing.role.as_deref(), Some("leader"));
    assert!(
        missing.body.contains("customer 999999 has no orders"),
        "{}",
        missing.body
    );
    // Not a number: axum rejects it before any query; an unknown path is a 404.
    let bad = load::get(addr, &format!("{COALESCED}/forty-two"))
        .await
        .expect("a response");
    assert_eq!(bad.status, 400);
    assert_eq!(bad.role, None);
    assert_eq!(
        load::get(addr, "/nope").await.expect("a response").status,
        404
    );
    assert_eq!(app.db().queries(), 1);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_file_is_removed_with_the_last_handle() {
    let db = Db::create(10, 2).expect("create the database");
    let path = db.path().to_owned();
    assert!(path.exists());
    let report = db.report(1).await.expect("customer 1 has orders");
    assert_eq!(report.customer, 1);
    drop(db);
    assert!(!path.exists());
}
