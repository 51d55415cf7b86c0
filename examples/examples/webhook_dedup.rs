//! shared-call-py's fourth story, "Deduplicate Background Jobs": *if duplicate webhooks
//! arrive, only process once*.
//!
//! A payment provider delivers each event to an axum receiver and, as providers do,
//! delivers it again: three copies at once (a retry storm after a slow answer), one a second
//! later (a redelivery), and, for `evt_1`, one more after the reuse window. The receiver's
//! handler "processes" a delivery in 200 ms and counts how often it processed each event.
//!
//! * Without a reuse window, coalescing catches the copies that overlap the first
//!   delivery's processing, and the redelivery a second later is processed again.
//! * With `CoalesceLayer::reuse_for(2 s)`, the redelivery is answered with the first
//!   delivery's response: each event is processed once within the window (and once more
//!   only after it, for `evt_1`).
//!
//! The key is the delivery id the provider sends (`X-Delivery-Id`), and nothing else: a
//! webhook is a POST whose meaning is that id. So the signature is checked *outside* the
//! coalescing layer (a forged delivery never reaches a key), and the layer is told to
//! coalesce POSTs on this route only.
//!
//! ```text
//! cargo run --release -p singleflight-examples --example webhook_dedup
//! ```
//!
//! Then three worker processes behind one Redis get the same deliveries (the fleet-wide
//! form), when `redis-server` is on the `PATH`: see `singleflight-redis`'s `fleet` example.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::post;
use singleflight_examples::load;
use singleflight_tower::CoalesceLayer;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// How long a delivery's processing takes.
const PROCESSING: Duration = Duration::from_millis(200);
/// How long a processed delivery's answer is reused.
const WINDOW: Duration = Duration::from_secs(2);

/// Deliveries and processings per event id.
#[derive(Default)]
struct Ledger {
    processed: Mutex<BTreeMap<String, usize>>,
    delivered: Mutex<BTreeMap<String, usize>>,
}

/// The handler: processes the event (once per call) and acknowledges it.
async fn receive(ledger: Arc<Ledger>, headers: HeaderMap) -> (StatusCode, String) {
    let id = headers["x-delivery-id"].to_str().unwrap_or("?").to_owned();
    *ledger
        .processed
        .lock()
        .unwrap()
        .entry(id.clone())
        .or_default() += 1;
    tokio::time::sleep(PROCESSING).await; // charge the card, send the e-mail, …
    (StatusCode::OK, format!("processed {id}"))
}

/// Rejects a delivery whose signature does not check out, before it reaches the key.
async fn verify(request: Request, next: Next) -> Result<Response, StatusCode> {
    match request.headers().get("x-signature") {
        Some(signature) if signature == "valid" => Ok(next.run(request).await),
        _ => Err(StatusCode::UNAUTHORIZED),
    }
}

/// The receiver, with the coalescing layer (and a reuse window, if any) on its route.
async fn receiver(ledger: Arc<Ledger>, window: Option<Duration>) -> SocketAddr {
    let mut layer = CoalesceLayer::new()
        // A webhook is a POST; it coalesces on this route only, keyed by its delivery id.
        .methods([Method::POST])
        .key_fn(|parts| {
            let id = parts.headers.get("x-delivery-id")?;
            Some([b"/webhook ".as_slice(), id.as_bytes()].concat())
        });
    if let Some(window) = window {
        layer = layer.reuse_for(window);
    }
    let handler_ledger = ledger.clone();
    let app = Router::new()
        .route(
            "/webhook",
            post(move |headers: HeaderMap| receive(handler_ledger.clone(), headers)),
        )
        .route_layer(layer)
        // Added last, so it runs first: a forged delivery never reaches the key.
        .route_layer(middleware::from_fn(verify));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The provider's delivery schedule: (seconds after the first delivery, event id, copies).
fn schedule() -> Vec<(f64, &'static str, usize)> {
    vec![
        (0.0, "evt_1", 3),
        (0.0, "evt_2", 3),
        (1.0, "evt_1", 1),
        (1.0, "evt_2", 1),
        (WINDOW.as_secs_f64() + 1.0, "evt_1", 1),
    ]
}

async fn deliver(addr: SocketAddr, ledger: &Arc<Ledger>) {
    let start = Instant::now();
    let mut deliveries = JoinSet::new();
    for (at, id, copies) in schedule() {
        let due = start + Duration::from_secs_f64(at);
        tokio::time::sleep_until(due.into()).await;
        for _ in 0..copies {
            *ledger
                .delivered
                .lock()
                .unwrap()
                .entry(id.to_owned())
                .or_default() += 1;
            deliveries.spawn(async move {
                let headers = [("X-Delivery-Id", id), ("X-Signature", "valid")];
                let response = load::post(addr, "/webhook", &headers, "{\"paid\":true}")
                    .await
                    .expect("the receiver answers");
                assert_eq!(response.status, 200, "{response:?}");
                assert_eq!(response.body, format!("processed {id}"));
            });
        }
    }
    while let Some(delivery) = deliveries.join_next().await {
        delivery.expect("a delivery");
    }
    // A forged delivery is refused before it can share anything.
    let forged = load::post(addr, "/webhook", &[("X-Delivery-Id", "evt_1")], "{}")
        .await
        .expect("the receiver answers");
    assert_eq!(forged.status, 401);
}

fn print(ledger: &Ledger) {
    let delivered = ledger.delivered.lock().unwrap();
    let processed = ledger.processed.lock().unwrap();
    for (id, deliveries) in delivered.iter() {
        let times = processed.get(id).copied().unwrap_or(0);
        println!("webhook {id}: processed {times} time(s) for {deliveries} deliveries");
    }
}

#[tokio::main]
async fn main() {
    println!("== without a reuse window (coalescing only)");
    let ledger = Arc::new(Ledger::default());
    let addr = receiver(ledger.clone(), None).await;
    deliver(addr, &ledger).await;
    print(&ledger);

    println!(
        "== with reuse_for({} s): a redelivery inside the window is answered, not processed",
        WINDOW.as_secs()
    );
    let ledger = Arc::new(Ledger::default());
    let addr = receiver(ledger.clone(), Some(WINDOW)).await;
    deliver(addr, &ledger).await;
    print(&ledger);
}
