//! `#[coalesce]`: a function whose concurrent calls with equal arguments run once.
//!
//! The attribute is the one-line form of a singleflight group (Python's
//! `@shared.group(key_fn=...)`): the first call for a key runs the body, and every call with
//! an equal key made while it runs receives a clone of its outcome. Use it through the
//! front-end your code runs on, with its `macros` feature:
//!
//! | front-end | attribute | annotates |
//! |---|---|---|
//! | `singleflight-blocking` | `singleflight_blocking::coalesce` | `fn` (std threads) |
//! | `singleflight-tokio` | `singleflight_tokio::coalesce` | `async fn` |
//! | `singleflight-smol` | `singleflight_smol::coalesce` | `async fn` |
//! | `singleflight-async-std` | `singleflight_async_std::coalesce` | `async fn` |
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use singleflight_tokio::coalesce;
//!
//! static QUERIES: AtomicUsize = AtomicUsize::new(0);
//!
//! #[derive(Clone, Debug, PartialEq)]
//! struct User { id: u64, name: String }
//!
//! /// Loads a user; concurrent loads of one id share a single query.
//! #[coalesce]
//! async fn load_user(id: u64) -> User {
//!     QUERIES.fetch_add(1, Ordering::Relaxed);
//!     tokio::task::yield_now().await; // the query's round trip: others join meanwhile
//!     User { id, name: "Ada".into() }
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() {
//!     // Both calls start before the first one finishes: one query serves both.
//!     let (a, b) = tokio::join!(load_user(42), load_user(42));
//!     assert_eq!(a, b);
//!     assert_eq!(a, Ok(User { id: 42, name: "Ada".into() }));
//!     assert_eq!(QUERIES.load(Ordering::Relaxed), 1);
//!     // The generated accessor reaches the function's group.
//!     assert_eq!(load_user_group().in_flight(), 0);
//! }
//! ```
//!
//! # What the attribute generates
//!
//! For `#[coalesce] async fn fetch(id: u64, region: String) -> Result<Page, DbError>`:
//!
//! * **`fetch`**, with the same name, visibility, arguments and attributes, returning
//!   **`Result<Page, Error<DbError>>`**: the value, or why there is none. The return type
//!   decides the call:
//!
//!   | the function returns | the work runs with | callers get |
//!   |---|---|---|
//!   | `T` (or nothing: `()`) | `call` | `Result<T, Error>` |
//!   | `Result<V, E>` | `try_call` | `Result<V, Error<E>>`: the leader's `Err(e)` reaches every caller as `Error::Failed(e)` |
//!
//!   `Error` is the front-end's error: besides `Failed`, a waiter sees `Panicked` if the work
//!   panicked (the leader's own call resumes the panic), `Timeout` if the `timeout` option
//!   elapsed, `LeaderDropped` under `leader_drop = FailWaiters`, `Reentrant` if the call was
//!   made from inside its own flight. Nothing is swallowed or defaulted: a caller who only
//!   wants the value writes `?` or `.expect(..)` and sees why. `Result` is recognised by
//!   its last path segment with two type arguments; an alias that hides the error type
//!   (`io::Result<T>`) is rejected — write `Result<T, io::Error>`.
//!
//! * **`fetch_group()`** (rename it with `group = name`), with the function's visibility:
//!   `&'static Group<K, T>`, the function's own group, where `K` is the key type and `T` the
//!   value the work returns (`Result<Page, DbError>` here). Use it to `forget(&key)` a
//!   flight, `forget_all()`, read `waiters(&key)` and `in_flight()` — tests wait on waiter
//!   counts through it instead of sleeping.
//!
//! * A hidden `__coalesce_fetch` holding the original body, which the leader runs.
//!
//! The group is a `static` inside `fetch_group`, created on first use. Each annotated
//! function has its own, so two functions never share keys, even with equal names in
//! different modules (shared-call-py keys by function name and mixes those up).
//!
//! # The key
//!
//! By default (on a function; a method says whose calls share, [below](#methods-say-whose-calls-may-share))
//! the key is **the arguments, owned**: one argument is the key itself
//! (`fetch_group().forget(&42)`), several make a tuple (`forget(&(42, "eu".to_string()))`),
//! none make `()`. Each call clones its arguments into the key, so every argument must be
//! `Hash + Eq + Clone` and owned (`String`, not `&str`; `&'static` references are fine).
//! Anything else is a compile error naming the argument and the fix.
//!
//! A custom key replaces that (shared-call-py's `key_fn`), as an expression or a closure.
//! Its type is written out, because it names the function's `static` group:
//!
//! ```
//! # use singleflight_blocking::coalesce;
//! # #[derive(Clone)] struct Profile;
//! // An expression over the arguments, each seen as a shared reference (and `self`).
//! #[coalesce(key: u64 = *user_id)]
//! fn profile(user_id: u64, include_details: bool) -> Profile {
//!     # let _ = include_details;
//!     Profile
//! }
//!
//! // A closure, given a shared reference to each argument in order.
//! #[coalesce(key: String = |user_id, _include_details| format!("user:{user_id}"))]
//! fn profile_by_name(user_id: u64, include_details: bool) -> Profile {
//!     # let _ = include_details;
//!     Profile
//! }
//! # profile(1, true).unwrap();
//! # profile_by_name(1, true).unwrap();
//! # assert!(!profile_group().contains(&1));
//! # assert!(!profile_by_name_group().contains("user:1"));
//! ```
//!
//! With a custom key, arguments need not be `Hash`, `Eq`, `Clone` or owned: calls that
//! borrow (`name: &str`) are fine, since the work runs inside the leading call.
//!
//! ## Methods: say whose calls may share
//!
//! A method's instance often says whose request it is: an API client holding a user's
//! token, a repository bound to a tenant's connection. The arguments alone don't, so on a
//! method with a receiver (`&self`, `&mut self`, `self`, `self: Arc<Self>`, ...) the
//! attribute has no default key: it refuses to compile until the code says whose calls may
//! share a result, in one of two ways.
//!
//! * **`shared`**: every instance shares. Calls on two instances with equal arguments
//!   receive one execution's result. Right for interchangeable clients of one service, that
//!   answer every caller alike.
//! * **A key that names the principal** (the token, the tenant, the user), beside the
//!   arguments. Calls share only when they act for the same principal, whichever instance
//!   they go through.
//!
//! ```
//! # use singleflight_blocking::coalesce;
//! /// A client of one public service: any instance's answer is every instance's answer.
//! struct Weather { base: String }
//!
//! impl Weather {
//!     #[coalesce(shared)]
//!     fn forecast(&self, city: String) -> String {
//!         format!("{}/{city}: sunny", self.base)
//!     }
//! }
//!
//! /// A client acting for one user: the user's token is in the key.
//! struct Client { token: String }
//!
//! impl Client {
//!     #[coalesce(key: (String, String) = (self.token.clone(), endpoint.clone()))]
//!     fn me(&self, endpoint: String) -> String {
//!         format!("{endpoint} as {}", self.token)
//!     }
//! }
//!
//! let (alice, bob) = (Client { token: "alice".into() }, Client { token: "bob".into() });
//! assert_eq!(alice.me("/me".into()).unwrap(), "/me as alice");
//! assert_eq!(bob.me("/me".into()).unwrap(), "/me as bob");
//! // The accessor's key is the custom key: (principal, endpoint).
//! assert!(!Client::me_group().contains(&("bob".to_string(), "/me".to_string())));
//! # let weather = Weather { base: "https://w".into() };
//! # assert_eq!(weather.forecast("Oslo".into()).unwrap(), "https://w/Oslo: sunny");
//! # assert_eq!(Weather::forecast_group().in_flight(), 0);
//! ```
//!
//! Without either, the error shows both forms. A custom key counts as the choice, whatever
//! it holds: `shared` may stand beside it to say that leaving the instance out is meant
//! (`#[coalesce(shared, key: String = endpoint.clone())]`). `shared` on a function without
//! `self` is refused: there is no instance to share.
//!
//! In an `impl` block the accessor is an associated function (`Client::me_group()`). The
//! receiver is what tells the attribute it is inside an `impl`: an associated function
//! without `self` says so with the `in_impl` option (`#[coalesce(in_impl)] fn load(id: u64)`).
//! Trait methods (declarations or trait `impl`s) are not supported: the attribute adds
//! items beside the function, which a trait does not allow.
//!
//! **No instance-identity key.** The attribute does not offer "one instance's calls share,
//! no others'" keyed by the instance's address, on purpose:
//!
//! * an address is a sound identity only while nothing else can live there. That holds for
//!   `&self`/`&mut self` with the work inline, but not for by-value `self` (the address is
//!   the caller's slot, which the next call reuses while a `detached` flight still runs),
//!   nor for `self: Arc<Self>` unless the flight keeps the pointee alive;
//! * where handlers take a fresh clone of their client on every request (axum's `State`),
//!   an address never matches, so nothing would coalesce, silently;
//! * one group serves the method in every instantiation of a generic `impl`, and an outer
//!   value and the inner value it starts with have one address.
//!
//! For that sharing, put a `Group` in a field (as "Respect a rate limit" below does by
//! hand): the group lives and dies with its instance.
//!
//! A `key` of your own could still be made from an address (`self as *const Self as
//! usize`). Without `reuse` that is your call; with [`reuse`](#reuse-results-after-their-flight)
//! it is refused at compile time: a kept result outlives its flight, and by the time a later
//! call finds it, the instance may be gone and another live at the same address. The check
//! reads the key expression for the ways an address is spelled (`as *const`, `&raw`,
//! `addr_of!`, `as_ptr`, `into_raw`, `NonNull`, `ptr::from_ref`, `{:p}`); an address
//! computed inside a helper function is beyond it, so don't.
//!
//! ## Who can share a result with whom, by default
//!
//! | form | the key | a result reaches |
//! |---|---|---|
//! | `fn` (or `in_impl`), no `key` | every argument, cloned | every caller in the process, on any thread or task, that passes equal arguments while the flight runs; never another function's caller (each function has its own group, whatever its name or module) |
//! | `fn` with a borrowed (not `'static`) argument, no `key` | — | refused: a borrowed argument can't be kept in the key; give an owned type or a `key` |
//! | any form with `key: K = expr` | the key's value | every caller whose key is equal: what the key leaves out (an argument, the instance, the user) does not separate callers |
//! | method, no `shared` or `key` | — | refused at compile time (above) |
//! | method with `shared` | every argument, cloned (or the `key`) | every caller with equal arguments, on any instance — and, in a generic `impl`, any instantiation |
//! | any form with `reuse = d` | as above | as above, and also every such caller up to `d` after the flight ended (the kept value) |
//! | `reuse` with a `key` made from an address | — | refused at compile time (above) |
//!
//! In every form, what the body reads besides its arguments (a thread-local or task-local
//! user, a global setting) is not in the key: a result computed for one such context
//! reaches callers in another. Put it in a `key`, or pass it as an argument.
//!
//! # Options
//!
//! `#[coalesce(shared, key: K = expr, detached, timeout = d, reuse = d, leader_drop = P, observer = o, shards = n, group = name, in_impl, crate = path)]`,
//! in any order; all optional on a function, and a method needs `shared` or `key`:
//!
//! | option | meaning | front-ends |
//! |---|---|---|
//! | `shared` | a method's calls on every instance share (above); methods only | all |
//! | `key: K = expr` | the custom key above | all |
//! | `detached` | spawn the work (`call_detached`): it runs to the end even if every caller goes away; arguments are moved into it (`Send + 'static`), so it can't borrow `self` | async |
//! | `timeout = d` | each caller waits at most `d` (a `Duration` expression, evaluated per call), then gets `Error::Timeout`; the flight goes on for everyone else (an async leader that times out is cancelled, as if dropped) | all |
//! | `reuse = d` | keep each value a flight returns for `d` (a `Duration` expression, evaluated once, when the group is created): calls with an equal key within `d` get it without running the work ([below](#reuse-results-after-their-flight)) | all |
//! | `leader_drop = Takeover` or `FailWaiters` | what waiters do when the leading call is dropped: the oldest takes over (default), or all get `Error::LeaderDropped` | async |
//! | `observer = expr` | attach an observer, such as a shared `Arc<singleflight_stats::Stats>`: an expression coercible to `Arc<dyn Observer>`, evaluated once, when the group is created (so it may name statics and functions, not the arguments) | all |
//! | `shards = n` | split the group's map into `n` shards (a `usize` expression, evaluated once, when the group is created; a power of two up to `MAX_SHARDS`, else the first call panics): the default is 256 shards, 32 KiB per group, allocated at the function's first call; a function called from few threads at once needs fewer | all |
//! | `group = name` | name the accessor (default `<fn>_group`) | all |
//! | `in_impl` | the function is an associated function without `self` (a method with a receiver needs nothing) | all |
//! | `crate = path` | where the front-end crate is, if renamed (see below) | all |
//!
//! # Reuse: results after their flight
//!
//! Without `reuse`, a result reaches only the calls that overlap its flight; the next call
//! runs the work again. `reuse = d` builds the function's group with `reuse_for(d)`: each
//! value a flight returns is kept for `d` after it ends, and a call with an equal key within
//! that window gets a clone of it at once, without running the work (a short-lived cache in
//! front of the flight). The window runs on the front-end's clock: `std::time::Instant` on
//! threads, the runtime's timer clock on async front-ends (on tokio, `tokio::time::Instant`,
//! so a paused runtime's virtual time moves it: tests can `advance` past a window).
//!
//! * Only values are kept: a fallible function's `Err`, a panic, a timeout or a dropped
//!   leader never is, so the next call runs the work again.
//! * `<fn>_group().forget(&key)` and `forget_all()` drop kept values as well as flights;
//!   `reusable()` counts them and `purge_expired()` drops expired ones (they also go a few
//!   at a time on every call).
//! * The window widens who receives a result: every caller with an equal key within `d`,
//!   not only those who overlapped the flight. The key must say whose result it is, even
//!   more than without `reuse`; a key made from an address is refused (see
//!   [Methods](#methods-say-whose-calls-may-share)). `Duration::ZERO` keeps nothing.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::time::Duration;
//! use singleflight_blocking::coalesce;
//!
//! static FETCHES: AtomicUsize = AtomicUsize::new(0);
//!
//! /// An exchange rate, fetched at most once per currency every 30 seconds.
//! #[coalesce(reuse = Duration::from_secs(30))]
//! fn rate(currency: String) -> f64 {
//!     FETCHES.fetch_add(1, Ordering::Relaxed);
//!     1.08
//! }
//!
//! assert_eq!(rate("EUR".into()), Ok(1.08));
//! assert_eq!(rate("EUR".into()), Ok(1.08)); // the kept value: no second fetch
//! assert_eq!(FETCHES.load(Ordering::Relaxed), 1);
//! rate_group().forget("EUR"); // drop it: the next call fetches again
//! assert_eq!(rate("EUR".into()), Ok(1.08));
//! assert_eq!(FETCHES.load(Ordering::Relaxed), 2);
//! ```
//!
//! # Which front-end, and renamed crates
//!
//! Each front-end re-exports its own entry point of this crate as `coalesce`
//! (`coalesce_tokio` as `singleflight_tokio::coalesce`, and so on), so the attribute knows
//! the runtime from the path it was called by. The expansion names the front-end only
//! through its hidden `__private` module (`::singleflight_tokio::__private::Group`, ...), the
//! one seam between the two crates. If the dependency is renamed in `Cargo.toml`
//! (`sf = { package = "singleflight-tokio", ... }`) or reached through another crate, say
//! where it is: `#[sf::coalesce(crate = ::sf)]`.
//!
//! # Use cases, with the attribute and with a `Group`
//!
//! Each of shared-call-py's scenarios twice: the attribute, and the same thing with the
//! front-end's `Group` by hand — which is what the attribute writes, and what to reach for
//! when one group should serve several functions, or the key is computed elsewhere.
//!
//! ## Protect a database
//!
//! A hundred requests for one user become one query; the connection pool stays calm.
//!
//! ```
//! # #[derive(Clone, Debug, PartialEq)] struct User(u64);
//! # #[derive(Clone, Debug, PartialEq)] struct DbError;
//! # async fn query_user(id: u64) -> Result<User, DbError> { Ok(User(id)) }
//! use std::sync::LazyLock;
//! use singleflight_tokio::{Error, Group, coalesce};
//!
//! #[coalesce]
//! async fn user_profile(user_id: u64) -> Result<User, DbError> {
//!     query_user(user_id).await
//! }
//!
//! // By hand:
//! static PROFILES: LazyLock<Group<u64, Result<User, DbError>>> = LazyLock::new(Group::new);
//!
//! async fn user_profile_by_hand(user_id: u64) -> Result<User, Error<DbError>> {
//!     PROFILES.try_call(&user_id, || query_user(user_id)).await
//! }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! #     assert_eq!(user_profile(1).await, Ok(User(1)));
//! #     assert_eq!(user_profile_by_hand(1).await, Ok(User(1)));
//! # }
//! ```
//!
//! ## Respect a rate limit
//!
//! Concurrent identical API calls spend one request of the quota, not one each. The
//! client's instances are interchangeable (one service, one account), so they share:
//! `shared`, and the endpoint is the key.
//!
//! ```
//! # #[derive(Clone, Debug, PartialEq)] struct ApiError;
//! # struct Http;
//! # impl Http { async fn get(&self, endpoint: &str) -> Result<String, ApiError> { Ok(endpoint.into()) } }
//! use singleflight_tokio::{Error, Group, coalesce};
//!
//! struct ApiClient { http: Http }
//!
//! impl ApiClient {
//!     #[coalesce(shared)]
//!     async fn fetch_data(&self, endpoint: String) -> Result<String, ApiError> {
//!         self.http.get(&endpoint).await
//!     }
//! }
//!
//! // By hand: the group is a field, so each client has its own.
//! struct ApiClientByHand { http: Http, flights: Group<String, Result<String, ApiError>> }
//!
//! impl ApiClientByHand {
//!     async fn fetch_data(&self, endpoint: &str) -> Result<String, Error<ApiError>> {
//!         self.flights.try_call(endpoint, || self.http.get(endpoint)).await
//!     }
//! }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! #     let client = ApiClient { http: Http };
//! #     assert_eq!(client.fetch_data("/a".into()).await, Ok("/a".to_string()));
//! #     let client = ApiClientByHand { http: Http, flights: Group::new() };
//! #     assert_eq!(client.fetch_data("/a").await, Ok("/a".to_string()));
//! # }
//! ```
//!
//! ## Prevent a cache stampede
//!
//! When a cached entry expires, the first request refills it and the rest wait for that
//! refill. `detached` lets the refill finish (and fill the cache) even if the callers give
//! up on their `timeout` first; the `Stats` shows how many refills were saved.
//!
//! ```
//! # fn cache_set(_: &str, _: &str) {}
//! # async fn expensive_computation() -> String { "hot".into() }
//! use std::sync::{Arc, LazyLock};
//! use std::time::Duration;
//! use singleflight_stats::Stats;
//! use singleflight_tokio::{Error, Group, coalesce};
//!
//! static STATS: LazyLock<Arc<Stats>> = LazyLock::new(|| Arc::new(Stats::new()));
//!
//! #[coalesce(detached, timeout = Duration::from_secs(2), observer = STATS.clone())]
//! async fn popular_item() -> String {
//!     let item = expensive_computation().await;
//!     cache_set("popular_item", &item);
//!     item
//! }
//!
//! // By hand:
//! static REFILLS: LazyLock<Group<(), String>> =
//!     LazyLock::new(|| Group::new().with_observer(STATS.clone()));
//!
//! async fn popular_item_by_hand() -> Result<String, Error> {
//!     let refill = REFILLS.call_detached(&(), || async {
//!         let item = expensive_computation().await;
//!         cache_set("popular_item", &item);
//!         item
//!     });
//!     REFILLS.timeout(Duration::from_secs(2), refill).await
//! }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! #     assert_eq!(popular_item().await.as_deref(), Ok("hot"));
//! #     assert_eq!(popular_item_by_hand().await.as_deref(), Ok("hot"));
//! #     assert_eq!(STATS.snapshot().misses, 2);
//! # }
//! ```
//!
//! ## Deduplicate background jobs
//!
//! A webhook delivered twice while the first delivery is still being processed is
//! processed once; both deliveries get the outcome. (Once the first has finished, a
//! redelivery runs again: coalescing is not idempotency — keep a processed-ids table for
//! that.) On threads:
//!
//! ```
//! # #[derive(Clone, Debug, PartialEq)] struct Receipt;
//! # #[derive(Clone, Debug, PartialEq)] struct PaymentError;
//! # fn process_payment(_: &str) -> Result<Receipt, PaymentError> { Ok(Receipt) }
//! use std::sync::LazyLock;
//! use singleflight_blocking::{Error, Group, coalesce};
//!
//! #[coalesce]
//! fn process_webhook(webhook_id: String) -> Result<Receipt, PaymentError> {
//!     process_payment(&webhook_id)
//! }
//!
//! // By hand:
//! static WEBHOOKS: LazyLock<Group<String, Result<Receipt, PaymentError>>> =
//!     LazyLock::new(Group::new);
//!
//! fn process_webhook_by_hand(webhook_id: &str) -> Result<Receipt, Error<PaymentError>> {
//!     WEBHOOKS.try_call(webhook_id, || process_payment(webhook_id))
//! }
//! # assert_eq!(process_webhook("wh_1".into()), Ok(Receipt));
//! # assert_eq!(process_webhook_by_hand("wh_1"), Ok(Receipt));
//! ```
//!
//! # When not to coalesce
//!
//! Coalescing hands one execution's outcome to every caller that overlaps it.
//!
//! * **Writes** (`POST`, `PUT`, `DELETE`, `INSERT`): two callers who each mean to write
//!   must each write; merging them loses one.
//! * **Per-user data**: with a key that leaves out the user, one user's answer reaches
//!   another. Put the user (or tenant, or permission set) in the key, or don't coalesce.
//!   A method says so explicitly: a `key` that names the principal, or `shared`.
//! * **Side effects** each caller relies on (sending an email, charging a card, counting a
//!   visit): they happen once per flight, not once per call.
//! * **Freshness**: a caller that joins late receives a result computed a moment before
//!   it asked (with `reuse = d`, up to `d` before). `forget` the key when that matters.
//!
//! # MSRV
//!
//! Rust 1.85 (the expansion uses `std::sync::LazyLock` and `#[diagnostic::on_unimplemented]`).
#![forbid(unsafe_code)]

mod expand;
mod front_end;
mod options;
mod signature;

use proc_macro::TokenStream;

use front_end::FrontEnd;

/// `#[coalesce]` for `singleflight-blocking`: use it as `singleflight_blocking::coalesce`
/// on a plain `fn`. See the [crate docs](crate) for the key, the options and the generated
/// items.
///
/// ```
/// use singleflight_blocking::{Error, coalesce};
///
/// #[coalesce]
/// fn square(n: u64) -> u64 {
///     n * n
/// }
///
/// assert_eq!(square(7), Ok(49));
/// assert_eq!(square_group().in_flight(), 0);
/// ```
#[proc_macro_attribute]
pub fn coalesce_blocking(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::coalesce(FrontEnd::Blocking, attr.into(), item.into()).into()
}

/// `#[coalesce]` for `singleflight-tokio`: use it as `singleflight_tokio::coalesce` on an
/// `async fn`. See the [crate docs](crate) for the key, the options and the generated items.
///
/// ```
/// use singleflight_tokio::coalesce;
///
/// #[coalesce]
/// async fn square(n: u64) -> u64 {
///     n * n
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// assert_eq!(square(7).await, Ok(49));
/// # }
/// ```
#[proc_macro_attribute]
pub fn coalesce_tokio(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::coalesce(FrontEnd::Tokio, attr.into(), item.into()).into()
}

/// `#[coalesce]` for `singleflight-smol`: use it as `singleflight_smol::coalesce` on an
/// `async fn`. See the [crate docs](crate) for the key, the options and the generated items.
///
/// ```
/// use singleflight_smol::coalesce;
///
/// #[coalesce]
/// async fn square(n: u64) -> u64 {
///     n * n
/// }
///
/// assert_eq!(smol::block_on(square(7)), Ok(49));
/// ```
#[proc_macro_attribute]
pub fn coalesce_smol(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::coalesce(FrontEnd::Smol, attr.into(), item.into()).into()
}

/// `#[coalesce]` for `singleflight-async-std`: use it as `singleflight_async_std::coalesce`
/// on an `async fn`. See the [crate docs](crate) for the key, the options and the generated
/// items.
///
/// ```
/// use singleflight_async_std::coalesce;
///
/// #[coalesce]
/// async fn square(n: u64) -> u64 {
///     n * n
/// }
///
/// assert_eq!(smol::block_on(square(7)), Ok(49));
/// ```
#[proc_macro_attribute]
pub fn coalesce_async_std(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::coalesce(FrontEnd::AsyncStd, attr.into(), item.into()).into()
}

// The README is the registry page: its examples compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
