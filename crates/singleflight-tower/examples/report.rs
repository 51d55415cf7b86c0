//! The README's example, served: `cargo run -p singleflight-tower --example report`, then
//! `ab -n 200 -c 200 http://127.0.0.1:3000/report` and `curl http://127.0.0.1:3000/runs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::{Router, routing::get};
use singleflight_tower::CoalesceLayer;

static RUNS: AtomicUsize = AtomicUsize::new(0);

/// The expensive handler: 200 ms of work per run.
async fn report() -> String {
    RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    "an expensive report".to_string()
}

/// How many times `report` ran (added after `route_layer`, so not coalesced).
async fn runs() -> String {
    RUNS.load(Ordering::SeqCst).to_string()
}

#[tokio::main]
async fn main() {
    let app = Router::new()
        .route("/report", get(report))
        .route_layer(CoalesceLayer::new())
        .route("/runs", get(runs));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await
        .unwrap();
    axum::serve(listener, app).await.unwrap();
}
