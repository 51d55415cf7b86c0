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
//! Two requests share a response when their **keys** are equal. The default key names the
//! whole resource and whose request it is: the method, the URI the client asked for
//! (scheme, authority, path and query; axum's `OriginalUri` when a nested router stripped a
//! prefix), and the request headers `Host`, `Authorization`, `Proxy-Authorization`,
//! `Cookie` and `X-Api-Key`. So two virtual hosts never share a path, and two users never
//! share a response unless the route says so
//! ([`without_key_header`](CoalesceLayer::without_key_header)). Name every other header
//! that says who is asking (a tenant header, another credential header) with
//! [`key_header`](CoalesceLayer::key_header). Headers the response varies on (`Accept`,
//! `Accept-Language`, `Accept-Encoding`) need no key entry if the response says so with
//! `Vary`: a waiter receives the response only when its values of the headers `Vary`
//! names equal the leader's, and runs its own request otherwise (RFC 9111 §4.1; `Vary: *`
//! is never shared). Naming them in the key instead splits the flights up front. Or take
//! full control with [`key_fn`](CoalesceLayer::key_fn). The request body is never read,
//! and never part of the default key.
//!
//! # Who can receive whose response
//!
//! Every default that decides who shares with whom, in one place:
//!
//! | default | who can share a response | to share more (or less) |
//! |---|---|---|
//! | methods: GET and HEAD | only reads; other methods always run their own | [`methods`](CoalesceLayer::methods) |
//! | key: method, original URI, `Host` | requests for the same resource on the same host | [`key_fn`](CoalesceLayer::key_fn) |
//! | key: `Authorization`, `Proxy-Authorization`, `Cookie`, `X-Api-Key` | requests with the same credentials (all anonymous requests share) | [`without_key_header`](CoalesceLayer::without_key_header), [`key_header`](CoalesceLayer::key_header) |
//! | a principal outside those headers (a TLS client certificate, a peer address, a tenant header) | **everyone**: the layer cannot see it | add it with [`key_header`](CoalesceLayer::key_header) or [`key_fn`](CoalesceLayer::key_fn) |
//! | `Vary` on the response | only callers whose named headers equal the leader's; `Vary: *` no one | name the headers in the key to split flights up front |
//! | `Set-Cookie` on the response | no one: the leader alone | [`share_set_cookie`](CoalesceLayer::share_set_cookie) |
//! | `Cache-Control: private` or `no-store` | no one: the leader alone | [`share_private`](CoalesceLayer::share_private) |
//! | [`reuse_for`](CoalesceLayer::reuse_for) (off by default) | later requests with the same key (and `Vary` values) reuse a finished response while it is fresh; never `no-store`, `no-cache`, `private`, `Set-Cookie` or `Vary: *` responses | the response's own `Cache-Control` caps it; `Cache-Control: no-cache` on a request bypasses it |
//! | an [`observer`](CoalesceLayer::observer) (statistics, hot keys) | sees no response; is offered each request's key hashed only, never its bytes | [`observe_routes`](CoalesceLayer::observe_routes) offers `METHOD path` instead (never the query, the host or a header): hot keys by route |
//! | one layer value | every route and service it covers, and its clones; a configured copy or a second `CoalesceLayer::new()` is a separate set of flights | mount one layer, or several |
//!
//! # What is shared
//!
//! The leader's response is shared as it arrives: every caller gets its status, version
//! and headers (extensions are not copied) as soon as the inner service answers, then its
//! body, streamed from one copy of its chunks (shared [`Bytes`](bytes::Bytes), never
//! copied per caller), and its trailers. The first bytes reach every caller as soon as the
//! leader's body has them; a caller that reads slowly never slows the others. A request
//! that arrives while the body is still streaming joins it from byte 0, as it would have
//! joined the flight. Bodies of every size are shared, within the layer's
//! [`memory_budget`](CoalesceLayer::memory_budget) (64 MiB by default), which says what
//! happens to readers that lag too far behind. Some responses are not shared:
//!
//! | the leader's response | the leader gets | each waiter gets |
//! |---|---|---|
//! | any other response, of any size | its reading of the shared response | its reading of the shared response |
//! | `Content-Type: text/event-stream` (a stream with no end; never read) | the response as it is | the [`Unshared`] outcome |
//! | `Cache-Control: no-store` or `private` (unless [`share_private`](CoalesceLayer::share_private)) | the response as it is | the [`Unshared`] outcome |
//! | `Set-Cookie` (unless [`share_set_cookie`](CoalesceLayer::share_set_cookie)), or `Vary: *` | the response as it is | the [`Unshared`] outcome |
//! | a `Vary` whose named request headers differ between the leader and a waiter | its reading | that waiter runs its own request |
//! | the inner service returns an error | [`error_status`](CoalesceLayer::error_status) (500) | the same |
//! | its body fails while it is read (after the head was shared) | the body ends with a [`BodyError`]: the connection is closed, the client sees a truncated transfer | the same |
//! | the inner service panics | [`panic_status`](CoalesceLayer::panic_status) (500); attached, the panic goes on in its future | [`panic_status`](CoalesceLayer::panic_status) |
//!
//! The [`Unshared`] outcome is the user's choice: [`Unshared::RunOwn`] (the default) runs
//! each waiter's own request through the inner service, which is always correct but gives
//! up the protection for that flight; [`Unshared::Respond`] answers a status such as 503 at
//! once.
//!
//! After any of these, the key is free: the next request runs the inner service again. A
//! panic or an error is never retried for the callers of its flight, and never poisons the
//! key. An error of the inner service is shared (as one `Arc`) by the callers of the flight,
//! each answered with the configured status: the service's `Error` type reaches its caller
//! only from a request that passed through, or from a waiter's own call under
//! [`Unshared::RunOwn`].
//!
//! # Conditional and range requests
//!
//! Browsers revalidate (`If-None-Match`, `If-Modified-Since`) and download managers ask
//! for parts (`Range`, `If-Range`). The layer answers them as a shared cache may (RFC 9110
//! §13 and §14, RFC 9111 §4.3): the flight runs the request *without* those headers, so
//! that it fetches the full `200`, and each caller gets the answer to its own question,
//! computed from that `200`: a `304` when its validator matches, a `206` with its byte
//! range and `Content-Range` (a range near the end waits for its bytes), a `416` for a
//! range past the end, or the full `200`. A `304` or a `206` never reaches a caller that
//! did not ask for it. [`conditional`](CoalesceLayer::conditional) switches this off
//! ([`Conditional::Passthrough`]). The request headers, and what the layer does with each:
//!
//! | request header | what the layer does | why |
//! |---|---|---|
//! | `Host`, `Authorization`, `Proxy-Authorization`, `Cookie`, `X-Api-Key` (and the method and original URI) | in the key | they say which resource and whose request it is |
//! | the headers you name with [`key_header`](CoalesceLayer::key_header) | in the key | you say the response depends on them |
//! | the headers a response's `Vary` names | compared with the leader's; a waiter that differs runs its own request | the response was made for the leader's values (RFC 9111 §4.1) |
//! | `If-None-Match`, `If-Modified-Since` | evaluated per caller against the shared `ETag` (weak comparison) or `Last-Modified`; if the response lacks that validator, a waiter runs its own request unchanged | a cache may answer them (RFC 9111 §4.3.2) |
//! | `Range`, `If-Range` | evaluated per caller: one byte range is a `206`, several get the full `200` (RFC 9110 §14.2 allows it); `If-Range` uses the strong comparison | a cache may answer them from a complete response (RFC 9111 §3.4) |
//! | `If-Match`, `If-Unmodified-Since` | the request passes through, untouched | they are not a cache's to evaluate (RFC 9111 §4.3.2) |
//! | any other header | ignored: the waiters get a response made for the leader's | name it in the key, or let the response say `Vary` |
//!
//! A leader whose own question the shared response cannot answer (it has no validator)
//! gets the full `200`: its request went into the flight, and a `200` is a valid answer to
//! any conditional or range request. The choices the RFCs leave open are listed in the
//! docs of [`Conditional`].
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
//! requests that joined, misses executions of the inner service. Keys are offered to it
//! hashed; with [`observe_routes`](CoalesceLayer::observe_routes), as their route (`GET
//! /users/42`, never the query or a header), so that hot keys
//! (`singleflight_stats::Stats::with_hot_keys`) rank routes.
//! [`waiting`](CoalesceLayer::waiting) and [`running`](CoalesceLayer::running) count the
//! callers waiting now and the executions running now. [`debug_header`](CoalesceLayer::debug_header)
//! (off by default) marks each coalesced response `led`, `joined` or `own`.
//!
//! # Frameworks
//!
//! * **axum**: `Router::route_layer(CoalesceLayer::new())` coalesces the routes added
//!   before it; `Router::layer` coalesces the whole router, fallback included. Either way
//!   one layer is one set of flights, shared by every route it covers, however axum builds
//!   the routes: a router without state (as `axum::serve(listener, app)` serves it)
//!   applies the layer again for every request, and those requests still share. Routes
//!   never share with each other by accident: the key holds the URI the client asked for
//!   (axum's `OriginalUri`, so a nested router's stripped prefix still counts; feature
//!   `axum`, on by default) and the `Host`. A `HEAD` that axum answers with the `GET`
//!   handler is its own flight (the method is in the key).
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
//! # How to check it works
//!
//! Mount the layer with a [`debug_header`](CoalesceLayer::debug_header), start the
//! server as in production, and send a burst of identical requests from another process
//! while the handler is still working on the first:
//!
//! ```text
//! $ ab -n 200 -c 200 http://127.0.0.1:3000/report          # or: seq 20 | xargs -P20 -I{} curl -si ...
//! $ curl -si http://127.0.0.1:3000/report | grep x-coalesced
//! x-coalesced: led
//! ```
//!
//! Every response of a burst but one says `joined`. Or attach `singleflight_stats::Stats`
//! with [`observer`](CoalesceLayer::observer): after the burst, `misses` (executions of the
//! handler) is 1 and `hits` counts the rest. The `report` example of this crate is the
//! code above, served: `cargo run -p singleflight-tower --example report`.
//!
//! # When not to use it
//!
//! Not for writes, not for responses a caller must not see from another's request (unless
//! the key says whose it is), and not for cheap handlers: coalescing costs a hash-map
//! entry, a spawned task and a copy of the headers per request (1 to 1.5 µs of CPU a
//! request on a route where nothing coalesces, in this workspace's HTTP benchmark; a
//! request that passes through costs under 100 ns). Coalescing is not caching:
//! by default a response is shared only with requests that overlap its execution (or its
//! body's streaming); [`reuse_for`](CoalesceLayer::reuse_for) keeps finished responses for
//! later requests, by a shared cache's freshness rules.
//!
//! # MSRV
//!
//! Rust 1.85.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod body;
mod conditional;
mod flight;
mod fresh;
mod gauge;
mod key;
mod layer;
mod service;
mod stream;
mod vary;

pub use body::CoalesceBody;
pub use conditional::Conditional;
pub use layer::{CoalesceLayer, DEFAULT_MAX_REUSED, DEFAULT_MEMORY_BUDGET, Unshared};
pub use service::{Coalesce, ResponseFuture};
pub use stream::BodyError;

// The README is the registry page: its examples compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
