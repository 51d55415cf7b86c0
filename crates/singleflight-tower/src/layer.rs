//! The layer and its configuration.

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::request::Parts;
use http::{HeaderName, Method, StatusCode};
use singleflight_tokio::Observer;
use tower_layer::Layer;

use crate::body::ShareRules;
use crate::conditional::Conditional;
use crate::fresh::{Fresh, HEURISTIC, ReusePolicy};
use crate::gauge::Gauge;
use crate::key::{self, KeyPolicy};
use crate::service::Coalesce;
use crate::stream::{Budget, Streams};

/// The most responses a layer stores for reuse by default.
pub const DEFAULT_MAX_REUSED: usize = 10_000;

/// The default memory budget of a layer's shared response bodies: 64 MiB.
pub const DEFAULT_MEMORY_BUDGET: usize = 64 << 20;

/// What the callers that joined a flight get when the leader's response cannot be shared:
/// it is a stream (`text/event-stream`), it says `Cache-Control: no-store` or `private`
/// (see [`CoalesceLayer::share_private`]), it sets a cookie (see
/// [`CoalesceLayer::share_set_cookie`]), or it says `Vary: *`.
///
/// The leader always gets that response as it is, streamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unshared {
    /// Each waiter calls the inner service itself with its own request, and gets its own
    /// response (unbuffered). Correct for every response; the backend then sees one call
    /// per waiter for that flight. The default.
    RunOwn,
    /// Each waiter gets an empty response with this status (say 503 Service Unavailable),
    /// and the backend sees one call per flight.
    Respond(StatusCode),
}

/// The settings every service made by one layer reads.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) methods: Vec<Method>,
    pub(crate) key: KeyPolicy,
    pub(crate) rules: ShareRules,
    pub(crate) conditional: Conditional,
    pub(crate) budget: Arc<Budget>,
    pub(crate) streams: Arc<Streams>,
    pub(crate) reuse: Option<ReusePolicy>,
    pub(crate) fresh: Arc<Fresh>,
    pub(crate) unshared: Unshared,
    pub(crate) detached: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) timeout_status: StatusCode,
    pub(crate) panic_status: StatusCode,
    pub(crate) error_status: StatusCode,
    pub(crate) observer: Option<Arc<dyn Observer>>,
    /// Offer observers each request's route instead of its key ([`CoalesceLayer::observe_routes`]).
    pub(crate) observe_routes: bool,
    pub(crate) debug_header: Option<HeaderName>,
    pub(crate) waiting: Gauge,
    pub(crate) running: Gauge,
    pub(crate) flights: Registry,
}

/// The flights of one layer, one set per response type: every service the layer makes, and
/// every clone of the layer, finds the same set here, however often a framework calls
/// [`Layer::layer`] (axum calls it per request for a router that has no state yet).
#[derive(Clone, Default)]
pub(crate) struct Registry(Arc<Mutex<Vec<(TypeId, AnySet)>>>);

/// One set of flights, of the type its [`TypeId`] names.
type AnySet = Box<dyn Any + Send + Sync>;

impl Registry {
    /// The set of flights for values of type `F`, made by `make` on first use.
    pub(crate) fn get<F>(&self, make: impl FnOnce() -> F) -> F
    where
        F: Clone + Send + Sync + 'static,
    {
        let mut sets = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let id = TypeId::of::<F>();
        if let Some((_, set)) = sets.iter().find(|(t, _)| *t == id) {
            return set
                .downcast_ref::<F>()
                .expect("the set of a type id has that type")
                .clone();
        }
        let set = make();
        sets.push((id, Box::new(set.clone())));
        set
    }
}

/// A tower [`Layer`] that coalesces identical HTTP requests: while one request runs, every
/// identical request that arrives waits for it and receives a copy of its response. See the
/// [crate docs](crate) for the rules.
///
/// # One layer, one set of flights
///
/// A layer owns its flights. Every service it makes ([`Layer::layer`]) and every clone of
/// the layer share them, so it makes no difference how often a framework calls
/// `Layer::layer`: once, once per route, or (axum, for a router without state) once per
/// request. Requests share a response only when their keys are equal, and the default key
/// names the whole resource (method, the original URI, `Host` and the credentials), so two
/// routes under one layer never share by accident.
///
/// Two layers made by two calls of [`CoalesceLayer::new`] are two independent sets of
/// flights, and so is a layer made from a clone by any configuring method (`key_header`,
/// `memory_budget`, …): a changed configuration is a new layer.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use http::{HeaderName, StatusCode};
/// use singleflight_tower::{CoalesceLayer, Unshared};
///
/// let layer = CoalesceLayer::new()
///     .key_header(HeaderName::from_static("accept"))
///     .key_header(HeaderName::from_static("x-tenant"))
///     .memory_budget(16 << 20)
///     .unshared(Unshared::Respond(StatusCode::SERVICE_UNAVAILABLE))
///     .timeout(Duration::from_secs(2), StatusCode::GATEWAY_TIMEOUT);
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct CoalesceLayer {
    config: Arc<Config>,
}

impl CoalesceLayer {
    /// A layer with the defaults: GET and HEAD coalesce, keyed by method, the original URI,
    /// `Host`, `Authorization`, `Proxy-Authorization`, `Cookie` and `X-Api-Key`; bodies of
    /// any size are shared, streamed, within a [`DEFAULT_MEMORY_BUDGET`]; preconditions and
    /// ranges are evaluated per caller ([`Conditional::Evaluate`]); waiters of an
    /// unshareable response run their own ([`Unshared::RunOwn`]); no timeout; a panic
    /// answers 500, an error of the inner service 500; no observer, no debug header.
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config {
                methods: key::default_methods(),
                key: KeyPolicy::default_headers(),
                rules: ShareRules {
                    share_private: false,
                    share_set_cookie: false,
                },
                conditional: Conditional::Evaluate,
                budget: Arc::new(Budget::new(DEFAULT_MEMORY_BUDGET)),
                streams: Arc::default(),
                reuse: None,
                fresh: Arc::new(Fresh::new(DEFAULT_MAX_REUSED)),
                unshared: Unshared::RunOwn,
                detached: true,
                timeout: None,
                timeout_status: StatusCode::GATEWAY_TIMEOUT,
                panic_status: StatusCode::INTERNAL_SERVER_ERROR,
                error_status: StatusCode::INTERNAL_SERVER_ERROR,
                observer: None,
                observe_routes: false,
                debug_header: None,
                waiting: Gauge::default(),
                running: Gauge::default(),
                flights: Registry::default(),
            }),
        }
    }

    /// A changed configuration is a new layer: it gets flights of its own, so that a layer
    /// configured from a clone never shares flights (made under other rules) with the
    /// original.
    fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        let config = Arc::make_mut(&mut self.config);
        f(config);
        config.flights = Registry::default();
        config.streams = Arc::default();
        let capacity = config
            .reuse
            .as_ref()
            .map_or(DEFAULT_MAX_REUSED, |r| r.capacity);
        config.fresh = Arc::new(Fresh::new(capacity));
        config.budget = Arc::new(Budget::new(config.budget_limit()));
        self
    }

    /// Coalesces requests with these methods only (GET and HEAD by default); any other
    /// request passes through untouched. Add `POST` only for a route whose POSTs are reads
    /// (a query API, a gRPC unary read) and whose key says everything that matters: the
    /// request body is never part of the default key.
    pub fn methods(self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.with(|c| c.methods = methods.into_iter().collect())
    }

    /// Adds a request header to the key (after the default ones): requests that differ in it
    /// never share a response. Name every header that says who is asking (a tenant header,
    /// a credential header other than the default ones), and any header the response varies
    /// on without saying so in `Vary`. Replaces a key function set with
    /// [`key_fn`](Self::key_fn).
    pub fn key_header(self, name: HeaderName) -> Self {
        self.with(|c| c.key.add_header(name))
    }

    /// Removes a header from the key: for instance `Authorization` on a route whose
    /// response is the same for every user, so that all users share it.
    pub fn without_key_header(self, name: &HeaderName) -> Self {
        self.with(|c| c.key.remove_header(name))
    }

    /// Replaces the default key with `f`: requests whose keys are equal share a response,
    /// and a request for which `f` returns `None` passes through. The method and URI are
    /// part of the key only if `f` puts them there. Only requests with one of the
    /// [`methods`](Self::methods) reach `f`.
    pub fn key_fn(self, f: impl Fn(&Parts) -> Option<Vec<u8>> + Send + Sync + 'static) -> Self {
        self.with(|c| c.key = KeyPolicy::custom(f))
    }

    /// The most memory the bodies of this layer's shared responses may hold at once, in
    /// bytes ([`DEFAULT_MEMORY_BUDGET`] by default). Every size of body is shared, streamed
    /// to every caller as it arrives; this budget decides what happens when callers read
    /// at different speeds:
    ///
    /// * A response can be joined from byte 0 (by requests that arrive while its body
    ///   streams) while it holds at most half the budget; past that, later requests start
    ///   a new flight, and bytes that every reader has had are dropped.
    /// * When the layer holds more than the budget, a response whose slowest reader lags
    ///   more than 256 KiB behind its fastest *cuts* that reader off: its body ends with a
    ///   [`BodyError`](crate::BodyError) whose [`is_cut`](crate::BodyError::is_cut) is true,
    ///   so the server closes that connection and the client sees a truncated transfer.
    ///   A reader that keeps up with the fastest is never cut.
    /// * The backend's body is read at the pace of the fastest reader, never of a slower
    ///   one; when the budget is full and nobody can be cut, reading waits for room.
    pub fn memory_budget(self, bytes: usize) -> Self {
        self.with(|c| c.budget = Arc::new(Budget::new(bytes)))
    }

    /// Reuses a response for up to `window` after its body has ended: a request for its
    /// key in that time gets it at once, without running the inner service, with an `Age`
    /// header (and `reused` in the [`debug_header`](Self::debug_header)). Off by default:
    /// without it, nothing outlives its flight.
    ///
    /// The layer follows a shared cache's freshness rules (RFC 9111 §4.2): a response is
    /// reused for at most `window`, and never longer than its `s-maxage`, else `max-age`,
    /// else `Expires` allows (counting the `Age` it arrived with); only with one of the
    /// [`reuse_statuses`](Self::reuse_statuses) (by default those RFC 9110 calls
    /// heuristically cacheable: 200, 203, 204, 300, 301, 404, 405, 410, 414, 501); never with
    /// `Cache-Control: no-store`, `no-cache` or `private`, a `Set-Cookie` or `Vary: *`,
    /// whatever the sharing options say; and only for requests whose headers named by its
    /// `Vary` match. A request with `Cache-Control: no-cache` or `max-age=0` is never
    /// answered from a stored response: it runs (or joins) a flight, whose response then
    /// replaces the stored one. Conditional and range requests are answered from a stored
    /// response as from a shared one.
    ///
    /// Stored responses count against the [`memory_budget`](Self::memory_budget) (one
    /// larger than half of it is not stored), at most [`max_reused`](Self::max_reused) of
    /// them are kept, and expired ones are dropped on access, on insert and by
    /// [`purge_expired`](Self::purge_expired), with no background task. The observer is
    /// not told of a reuse (it sees flights); the debug header is.
    pub fn reuse_for(self, window: Duration) -> Self {
        self.with(|c| {
            let policy = c.reuse.get_or_insert_with(|| ReusePolicy {
                window,
                statuses: HEURISTIC
                    .iter()
                    .map(|&code| StatusCode::from_u16(code).expect("a valid status"))
                    .collect(),
                capacity: DEFAULT_MAX_REUSED,
            });
            policy.window = window;
        })
    }

    /// The statuses whose responses [`reuse_for`](Self::reuse_for) may reuse (replacing
    /// the default list). Has no effect until `reuse_for` is set.
    pub fn reuse_statuses(self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        let statuses: Vec<_> = statuses.into_iter().collect();
        self.with(|c| {
            if let Some(policy) = &mut c.reuse {
                policy.statuses = statuses;
            }
        })
    }

    /// The most responses stored for reuse at once ([`DEFAULT_MAX_REUSED`] by default):
    /// past it, expired ones go first, then the oldest. Has no effect until
    /// [`reuse_for`](Self::reuse_for) is set.
    pub fn max_reused(self, responses: usize) -> Self {
        self.with(|c| {
            if let Some(policy) = &mut c.reuse {
                policy.capacity = responses;
            }
        })
    }

    /// Drops every stored response that is no longer fresh, and returns how many went.
    /// Expired responses also go when they are next asked for and when the store is full;
    /// call this to give their memory back sooner (say from a periodic task).
    pub fn purge_expired(&self) -> usize {
        self.config.fresh.purge_expired()
    }

    /// The number of responses stored for reuse now (fresh or not yet purged).
    pub fn reusable(&self) -> usize {
        self.config.fresh.len()
    }

    /// How requests that carry preconditions or ranges (`If-None-Match`,
    /// `If-Modified-Since`, `Range`, `If-Range`) are treated:
    /// [`Conditional::Evaluate`] (the default) coalesces them, and answers each caller
    /// from the shared full response as a shared cache would; [`Conditional::Passthrough`]
    /// passes them through untouched. Requests with `If-Match` or `If-Unmodified-Since`
    /// always pass through: they are not a cache's to evaluate.
    pub fn conditional(self, mode: Conditional) -> Self {
        self.with(|c| c.conditional = mode)
    }

    /// What the waiters of a response that cannot be shared get ([`Unshared::RunOwn`] by
    /// default).
    pub fn unshared(self, outcome: Unshared) -> Self {
        self.with(|c| c.unshared = outcome)
    }

    /// Shares responses marked `Cache-Control: private` or `no-store` too (they are not
    /// shared by default). Safe when the key says whose response it is (the default key
    /// has the usual credential headers).
    pub fn share_private(self, share: bool) -> Self {
        self.with(|c| c.rules.share_private = share)
    }

    /// Shares responses that set a cookie (`Set-Cookie`) too. **Dangerous**, and off by
    /// default: a cookie is usually a session or an identity handed to one client, and
    /// every waiter would receive the same one (ten anonymous visitors in one flight would
    /// share one session, and when one of them logs in, the others are logged in as that
    /// user). Turn it on only for a route whose cookie is the same for everyone, such as a
    /// consent or a locale cookie the handler sets from the key's own inputs.
    pub fn share_set_cookie(self, share: bool) -> Self {
        self.with(|c| c.rules.share_set_cookie = share)
    }

    /// Whether the leader's request runs in a task of its own (`true`, the default) or
    /// inside the leader's own response future (`false`).
    ///
    /// Detached, a client that disconnects cancels nothing: the request goes on for the
    /// others, and finishes even if every client leaves (a cache behind the handler is
    /// filled once). Attached, the leader's client disconnecting cancels the handler, and
    /// the oldest waiter takes over with its own request (one more execution, never two at
    /// once); a panic of the handler then reaches the leader's server task as it would
    /// without the layer (its waiters still get [`panic_status`](Self::panic_status)), and
    /// no task is spawned, which makes a request that nothing joins cheaper.
    pub fn detached(self, detached: bool) -> Self {
        self.with(|c| c.detached = detached)
    }

    /// Bounds each caller's wait: after `duration`, that caller gets an empty response with
    /// `status` (say 504 Gateway Timeout), and the flight goes on for the others; later
    /// callers still join it.
    pub fn timeout(self, duration: Duration, status: StatusCode) -> Self {
        self.with(|c| {
            c.timeout = Some(duration);
            c.timeout_status = status;
        })
    }

    /// The status every caller of a flight gets when the inner service panics (500 by
    /// default). The next request runs the service again.
    pub fn panic_status(self, status: StatusCode) -> Self {
        self.with(|c| c.panic_status = status)
    }

    /// The status every caller of a flight gets when the inner service returns an error, or
    /// the shared response's body fails while it is read (500 by default). The error itself
    /// is shared by the callers and dropped after the last one; it is never retried.
    pub fn error_status(self, status: StatusCode) -> Self {
        self.with(|c| c.error_status = status)
    }

    /// Attaches an observer to the group of every service this layer makes:
    /// `singleflight_stats::Stats` counts hits (joined requests), misses (executions),
    /// panics and timeouts.
    pub fn observer(self, observer: Arc<dyn Observer>) -> Self {
        self.with(|c| c.observer = Some(observer))
    }

    /// Offers the observer each request's route, `METHOD path` (the path as the client
    /// asked for it, without the scheme, host, query or any header), as its key, instead of
    /// the request's key offered hashed only. So a `singleflight_stats::Stats` with hot
    /// keys (`Stats::with_hot_keys`) ranks routes: every request of a route counts under
    /// one key, whoever asked and with whatever query.
    ///
    /// Off by default. The query and the headers (credentials among them) are never
    /// offered, but the path is, as it is: turn this on only where paths carry no secret
    /// (a token in a path, say), since an observer may keep them (hot keys do, in
    /// memory). With a [`key_fn`](Self::key_fn) the layer cannot tell the route from a
    /// key, and keys stay hashed. It costs, per call observed, the route written into a
    /// new string, and a copy of the request key for the group to format it.
    pub fn observe_routes(self) -> Self {
        self.with(|c| c.observe_routes = true)
    }

    /// Adds this header to coalesced responses, saying how each was served: `led` (ran the
    /// inner service for its flight), `joined` (a copy of the leader's response, or the
    /// [`Unshared::Respond`] status) or `own` (joined, then ran its own, per
    /// [`Unshared::RunOwn`]); a panic's, a timeout's or an error's status response has no
    /// such header. Off by default: it tells clients about other clients' traffic.
    pub fn debug_header(self, name: HeaderName) -> Self {
        self.with(|c| c.debug_header = Some(name))
    }

    /// The number of callers now waiting for a flight another request started, over every
    /// service of this layer. Tests and dashboards wait on it instead of sleeping.
    pub fn waiting(&self) -> usize {
        self.config.waiting.get()
    }

    /// The number of shared executions of the inner service now running (each started by
    /// a flight's leader), over every service of this layer.
    pub fn running(&self) -> usize {
        self.config.running.get()
    }
}

impl Default for CoalesceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for CoalesceLayer {
    type Service = Coalesce<S>;

    fn layer(&self, inner: S) -> Coalesce<S> {
        Coalesce::new(inner, self.config.clone())
    }
}

impl Config {
    fn budget_limit(&self) -> usize {
        self.budget.limit()
    }

    /// Whether observers are offered routes: asked for, and the keys are the default
    /// policy's, whose route can be read back from a key.
    pub(crate) fn routes(&self) -> bool {
        self.observe_routes && matches!(self.key, KeyPolicy::Headers(_))
    }

    /// The route (`METHOD path`) to offer an observer for `key`, if observers are offered
    /// routes.
    pub(crate) fn route(&self, key: &[u8]) -> Option<String> {
        if !self.routes() {
            return None;
        }
        let (method, path) = key::route(key)?;
        Some(format!("{method} {path}"))
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("methods", &self.methods)
            .field("key", &self.key)
            .field("memory_budget", &self.budget_limit())
            .field("conditional", &self.conditional)
            .field("reuse", &self.reuse)
            .field("share_private", &self.rules.share_private)
            .field("share_set_cookie", &self.rules.share_set_cookie)
            .field("unshared", &self.unshared)
            .field("detached", &self.detached)
            .field("timeout", &self.timeout)
            .field("timeout_status", &self.timeout_status)
            .field("panic_status", &self.panic_status)
            .field("error_status", &self.error_status)
            .field("observer", &self.observer.is_some())
            .field("observe_routes", &self.observe_routes)
            .field("debug_header", &self.debug_header)
            .finish()
    }
}

impl fmt::Debug for CoalesceLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CoalesceLayer").field(&self.config).finish()
    }
}
