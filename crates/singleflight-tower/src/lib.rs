//! A tower layer that coalesces identical HTTP requests.
//!
//! When a popular page's cache expires, hundreds of identical GETs reach its handler at once.
//! Put [`CoalesceLayer`] in front of that route: the first request (the *leader*) runs the
//! handler, every identical request that arrives while it runs (a *waiter*) waits for it,
//! and each receives its own copy of the one response. The handler does not change.
//!
//! ```
//! use axum::{Router, routing::get};
//! use singleflight_tower::CoalesceLayer;
//!
//! async fn report() -> String {
//!     "an expensive report".to_string()
//! }
//!
//! let app: Router = Router::new()
//!     .route("/report", get(report))
//!     .route_layer(CoalesceLayer::new());
//! ```
//!
//! It wraps any [`Service<http::Request<B>>`](tower_service::Service) whose response body
//! is an [`http_body::Body`]: axum routes and routers, hyper-util's server
//! (`TowerToHyperService`), `tower-http` stacks. Responses come back with a
//! [`CoalesceBody`], whose data are [`Bytes`](bytes::Bytes).
//!
//! # What coalesces
//!
//! Only GET and HEAD requests, by default ([`CoalesceLayer::methods`]); any other request
//! passes through untouched, straight to the inner service.
//!
//! Two requests share a response when their **keys** are equal. The default key is the
//! method, the path and query, and the request headers `Authorization` and `Cookie`, so two
//! users never share a response unless the route says so
//! ([`without_key_header`](CoalesceLayer::without_key_header)). Name every other header the
//! response varies on with [`key_header`](CoalesceLayer::key_header) (`Accept`,
//! `Accept-Encoding`, a tenant header): headers outside the key are ignored, so the waiters
//! get a response made for the leader's headers. Or take full control with
//! [`key_fn`](CoalesceLayer::key_fn). The request body is never read, and never part of the
//! default key.
//!
//! # What is shared
//!
//! The leader's response is read once, to its end: its status, version, headers, body (as
//! `Bytes`) and trailers; every caller gets a copy (extensions are not copied). Some
//! responses cannot be shared that way:
//!
//! | the leader's response | the leader gets | each waiter gets |
//! |---|---|---|
//! | a body within [`max_body`](CoalesceLayer::max_body) (1 MiB by default) | a copy | a copy |
//! | a longer body (by its size hint, or once that many bytes were read) | the response, streamed (what was read first, then the rest) | the [`Unshared`] outcome |
//! | `Content-Type: text/event-stream` (a stream with no end; never read) | the response as it is | the [`Unshared`] outcome |
//! | `Cache-Control: no-store` or `private` (unless [`share_private`](CoalesceLayer::share_private)) | the response as it is | the [`Unshared`] outcome |
//! | the inner service returns an error | [`error_status`](CoalesceLayer::error_status) (500) | the same |
//! | its body fails while it is read | [`error_status`](CoalesceLayer::error_status) (500) | the same |
//! | the inner service panics | [`panic_status`](CoalesceLayer::panic_status) (500); attached, the panic goes on in its future | [`panic_status`](CoalesceLayer::panic_status) |
//!
//! The [`Unshared`] outcome is the user's choice: [`Unshared::RunOwn`] (the default) runs
//! each waiter's own request through the inner service, which is always correct but gives
//! up the protection for that flight; [`Unshared::Respond`] answers a status such as 503 at
//! once. A body of unknown length (chunked) is read until it ends or passes the limit.
//!
//! After any of these, the key is free: the next request runs the inner service again. A
//! panic or an error is never retried for the callers of its flight, and never poisons the
//! key. An error of the inner service is shared (as one `Arc`) by the callers of the flight,
//! each answered with the configured status: the service's `Error` type reaches its caller
//! only from a request that passed through, or from a waiter's own call under
//! [`Unshared::RunOwn`].
//!
//! # Detached: a client that leaves cancels nothing
//!
//! The leader's request runs in a task spawned on the tokio runtime, not in the leader's
//! own response future, so a client that disconnects (its response future dropped) only
//! stops waiting: the request goes on and answers every other caller. The spawned task
//! needs an owned, `'static` service, which is why the inner service must be `Clone`: see
//! [`Coalesce`] for how the ready instance travels with the request. The request, its
//! body included, moves into that task. The service must be called inside a tokio runtime.
//!
//! [`detached(false)`](CoalesceLayer::detached) runs the leader's request inside its own
//! response future instead, with no spawned task: if that client disconnects, the request
//! is cancelled and the oldest waiter takes over with its own request (which it kept, with
//! its own ready service), so the others still get an answer from one execution at a time.
//!
//! [`timeout`](CoalesceLayer::timeout) bounds each caller's wait: when it elapses, that
//! caller gets the configured status (say 504) and the flight goes on; callers that arrive
//! later still join it.
//!
//! # Observability
//!
//! [`observer`](CoalesceLayer::observer) attaches an observer such as
//! `singleflight_stats::Stats` to the group of every service the layer makes: hits are
//! requests that joined, misses executions of the inner service.
//! [`waiting`](CoalesceLayer::waiting) and [`running`](CoalesceLayer::running) count the
//! callers waiting now and the executions running now. [`debug_header`](CoalesceLayer::debug_header)
//! (off by default) marks each coalesced response `led`, `joined` or `own`.
//!
//! # Frameworks
//!
//! * **axum**: `Router::route_layer(CoalesceLayer::new())` coalesces the routes added
//!   before it, each route on its own; `Router::layer` coalesces the whole router, fallback
//!   included. A `HEAD` that axum answers with the `GET` handler is its own flight (the
//!   method is in the key). `axum::serve`
//!   resolves every route once; a `Router` called as a plain `Service` without
//!   `.with_state(..)` rebuilds each handler's route, layer and all, for every request, and
//!   then nothing coalesces: finish a router with `.with_state(..)` before wrapping it in
//!   other services.
//! * **hyper**: wrap the service with the layer, then hyper-util's `TowerToHyperService`,
//!   and serve it with `hyper::server::conn` or hyper-util's `auto` builder. The tests of
//!   this crate run every scenario both ways.
//! * **tonic**: every gRPC call is a POST whose meaning is in its body, and the default key
//!   never reads a body, so a gRPC route passes through untouched. A unary *read* can opt
//!   in with `.methods([Method::POST])` and a [`key_fn`](CoalesceLayer::key_fn) built from
//!   the path and the metadata headers (say a resource id the client also sends as a
//!   header); a key from the message bytes would need the request body buffered before the
//!   flight is joined, which this layer does not do. Streaming calls must not coalesce.
//!   Responses are gRPC frames with trailers (`grpc-status`), which are shared with the
//!   body.
//!
//! # When not to use it
//!
//! Not for writes, not for responses a caller must not see from another's request (unless
//! the key says whose it is), and not for cheap handlers: coalescing costs a hash-map
//! entry, a spawned task and a copy of the headers per request (1 to 1.5 µs of CPU a
//! request on a route where nothing coalesces, in this workspace's HTTP benchmark; a
//! request that passes through costs under 100 ns). Coalescing is not caching:
//! a response is shared only with requests that overlap its execution.
//!
//! # MSRV
//!
//! Rust 1.85.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod body;
mod flight;
mod gauge;
mod key;
mod layer;
mod service;

pub use body::CoalesceBody;
pub use layer::{CoalesceLayer, DEFAULT_MAX_BODY, Unshared};
pub use service::{Coalesce, ResponseFuture};

// The README is the registry page: its examples compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
