//! The service: which requests coalesce, who runs the inner service, and the response each
//! caller gets.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use std::future::poll_fn;

use http::header::{AGE, CONTENT_LENGTH, CONTENT_RANGE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use singleflight_tokio::{Execution, FlightId, FlightInfo, ObservedKey, Wait};
use tower_service::Service;

use crate::body::{CoalesceBody, status_response};
use crate::conditional::{Answer, Question, metadata};
use crate::flight::{Ended, Flights, RouteKey};
use crate::fresh;
use crate::layer::{Config, Unshared};
use crate::stream::{BoxError, SharedResponse, Tap};
use crate::vary::Vary;

/// The service [`CoalesceLayer`](crate::CoalesceLayer) makes around an inner service `S`.
///
/// # Readiness and cloning
///
/// `poll_ready` is the inner service's. A request that passes through is handed to the
/// ready inner service. A request that may coalesce takes the ready inner service with it
/// and leaves a clone in its place (tower's usual pattern, hence `S: Clone`): if it leads
/// its flight, that instance moves into the spawned task that calls it; if it joins, it
/// keeps the instance (still ready, with anything it reserved, such as a concurrency
/// permit) until its flight ends, to run its own request if the leader's response cannot be
/// shared ([`Unshared::RunOwn`]). So put a concurrency limit outside this layer, where it
/// counts requests, not flights.
///
/// # Panics
///
/// A request that may coalesce spawns its flight's task with `tokio::spawn`, so `call`
/// must run inside a tokio runtime (as every tokio server's does).
pub struct Coalesce<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Coalesce<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The number of callers now waiting for a flight another request started (over every
    /// service of the layer that made this one).
    pub fn waiting(&self) -> usize {
        self.config.waiting.get()
    }
}

impl<S: Clone> Clone for Coalesce<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Coalesce<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalesce")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What a flight shares: a tap on the leader's response (its head now, its body as it
/// arrives), or why it cannot be shared.
enum Outcome<B, E> {
    Shared(Tap),
    // Handed to the leader alone; its waiters get the `Unshared` outcome.
    Unshared(Arc<Mutex<Option<Response<CoalesceBody<B>>>>>),
    Failed(Arc<E>),
}

impl<B, E> Clone for Outcome<B, E> {
    fn clone(&self) -> Self {
        match self {
            Self::Shared(tap) => Self::Shared(tap.clone()),
            Self::Unshared(slot) => Self::Unshared(slot.clone()),
            Self::Failed(error) => Self::Failed(error.clone()),
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project! {
    /// The future of [`Coalesce`]'s `call`.
    ///
    /// # Cancel safety
    ///
    /// Dropping it (a client that disconnects) stops only this caller waiting: a shared
    /// request runs in its own task and still answers every other caller of its flight. A
    /// request that passes through is the inner service's future, and dropping it drops
    /// that.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: FutureKind<F, B, E>,
    }
}

pin_project! {
    #[project = FutureProj]
    enum FutureKind<F, B, E> {
        Passthrough { #[pin] future: F },
        Coalesced { future: BoxFuture<Result<Response<CoalesceBody<B>>, E>> },
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<CoalesceBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureProj::Passthrough { future } => future
                .poll(cx)
                .map_ok(|response| response.map(CoalesceBody::inner)),
            FutureProj::Coalesced { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            FutureKind::Passthrough { .. } => "passthrough",
            FutureKind::Coalesced { .. } => "coalesced",
        };
        f.debug_tuple("ResponseFuture").field(&kind).finish()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Coalesce<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + Sync + 'static,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Send,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<CoalesceBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let coalesces = self.config.methods.contains(request.method())
            && !Question::passes_through(
                request.method(),
                request.headers(),
                self.config.conditional,
            );
        let key = if coalesces {
            let (parts, body) = request.into_parts();
            let key = self.config.key.key(&parts);
            (Request::from_parts(parts, body), key)
        } else {
            (request, None)
        };
        let (request, Some(key)) = key else {
            return ResponseFuture {
                kind: FutureKind::Passthrough {
                    future: self.inner.call(key.0),
                },
            };
        };
        // The ready instance goes with the request; a clone waits for the next `poll_ready`.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let flights = self.flights::<Outcome<ResB, S::Error>>();
        let config = self.config.clone();
        ResponseFuture {
            kind: FutureKind::Coalesced {
                future: Box::pin(respond(flights, config, key, inner, request)),
            },
        }
    }
}

impl<S> Coalesce<S> {
    /// The layer's flights for this response type, made on first use: their value type
    /// depends on the response and error types, which only the `Service` impl knows.
    fn flights<T: Clone + Send + Sync + 'static>(&self) -> Flights<T> {
        self.config
            .flights
            .get(|| Flights::<T>::new(self.config.observer.clone(), self.config.routes()))
    }
}

/// Joins a response in progress for `key`, or joins or leads its flight, and makes this
/// caller's response from the outcome.
async fn respond<S, ReqB, ResB>(
    flights: Flights<Outcome<ResB, S::Error>>,
    config: Arc<Config>,
    key: Vec<u8>,
    inner: S,
    request: Request<ReqB>,
) -> Result<Response<CoalesceBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + Sync + 'static,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Send,
    ResB::Error: Into<BoxError>,
{
    // The flight runs without the headers a shared cache evaluates for each caller
    // (preconditions and ranges): it fetches the full response, and each caller gets its
    // own answer from it.
    let (mut parts, body) = request.into_parts();
    let question = Question::take(&mut parts.headers);
    let method = parts.method.clone();
    // A stored response that is still fresh, unless the request asks for a new one.
    if config.reuse.is_some() && !fresh::bypasses(&parts.headers) {
        if let Some((tap, age)) = config.fresh.reuse(&key, &parts.headers) {
            if let Some(decided) = decide(&tap, &question, &method, false) {
                let mut response = deliver(tap, decided, &question, &method).await;
                response.headers_mut().insert(AGE, age);
                // Counted as the core counts a reuse window's hit: neither a hit nor a miss.
                if let Some(observer) = &config.observer {
                    match config.route(&key) {
                        Some(route) => observer.reused(None, &RouteKey(&route)),
                        None => observer.reused(None, &ObservedBytes(&key)),
                    }
                }
                return Ok(mark(response, Some(REUSED), &config));
            }
        }
    }
    // A response whose body is still arriving is joined from byte 0, as its flight would
    // have been.
    if let Some(tap) = config.streams.join(&key, &parts.headers) {
        if let Some(decided) = decide(&tap, &question, &method, false) {
            let response = deliver(tap, decided, &question, &method).await;
            // Joining a response whose flight has ended is still a join of its execution: a
            // hit, as it would have been a moment earlier.
            if let Some(observer) = &config.observer {
                // Its flight has ended and left the group, so it has no id to link to.
                let info = FlightInfo::new(None, FlightId::new(u64::MAX));
                let route = config.route(&key);
                let (by_route, by_bytes);
                let key: &dyn ObservedKey = match &route {
                    Some(route) => {
                        by_route = RouteKey(route);
                        &by_route
                    }
                    None => {
                        by_bytes = ObservedBytes(&key);
                        &by_bytes
                    }
                };
                let started = observer.waiter_started(&info.with_key(key));
                observer.waiter_finished(&info, started, Wait::Received(Execution::Completed));
            }
            return Ok(mark(response, Some(JOINED), &config));
        }
    }
    // Taken by the work if this caller leads; kept to run its own request otherwise.
    let mut own = Some((inner, Request::from_parts(parts, body)));
    let ended = flights
        .run(
            &key,
            config.detached,
            config.timeout,
            &config.waiting,
            || {
                let (mut inner, request) = own.take().expect("the work starts once");
                let config = config.clone();
                let key = key.clone();
                // For `Vary`: the waiters compare their headers with the leader's.
                let asked = request.headers().clone();
                async move {
                    let _running = config.running.enter();
                    match inner.call(request).await {
                        Err(error) => Outcome::Failed(Arc::new(error)),
                        Ok(response) => share(response, &asked, &config, key).await,
                    }
                }
            },
        )
        .await;
    let (response, how) = match ended {
        Ended::Value {
            value: Outcome::Shared(tap),
            led,
        } => {
            // A waiter whose request selects another variant of the response (`Vary`), or
            // whose question the response cannot answer, runs its own request. (A leader
            // has no request left to run: it gets the full response, always a valid answer.)
            let selected = led
                || tap.shared().selected_by(
                    own.as_ref()
                        .expect("a waiter keeps its request")
                        .1
                        .headers(),
                );
            let decided = if selected {
                decide(&tap, &question, &method, led)
            } else {
                None
            };
            match decided {
                Some(decided) => (deliver(tap, decided, &question, &method).await, served(led)),
                None => {
                    drop(tap);
                    (run_own(&mut own, question).await?, Some(OWN))
                }
            }
        }
        Ended::Value {
            value: Outcome::Unshared(slot),
            led: true,
        } => {
            let response = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            match response {
                Some(response) => (response, Some(LED)),
                None => (status_response(config.error_status), Some(LED)),
            }
        }
        Ended::Value {
            value: Outcome::Unshared(_),
            led: false,
        } => match config.unshared {
            Unshared::Respond(status) => (status_response(status), Some(JOINED)),
            Unshared::RunOwn => (run_own(&mut own, question).await?, Some(OWN)),
        },
        Ended::Value {
            value: Outcome::Failed(_),
            led,
        } => (status_response(config.error_status), served(led)),
        // The caller's role is not reported with these; no header says one.
        Ended::Panicked => (status_response(config.panic_status), None),
        Ended::TimedOut => (status_response(config.timeout_status), None),
        Ended::Abandoned => (status_response(config.error_status), None),
    };
    Ok(mark(response, how, &config))
}

/// Reads the head of the inner service's response: shared (its body pumped into a log that
/// every caller reads), or handed to the leader alone.
async fn share<B, E>(
    response: Response<B>,
    asked: &http::HeaderMap,
    config: &Config,
    key: Vec<u8>,
) -> Outcome<B, E>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (head, body) = response.into_parts();
    let reuse = config
        .reuse
        .as_ref()
        .and_then(|policy| policy.lifetime(head.status, &head.headers))
        .map(|reuse| (config.fresh.clone(), reuse));
    match Vary::of(&head.headers, asked) {
        Vary::Fields(selecting) if config.rules.shareable(&head.headers) => Outcome::Shared(
            SharedResponse::start(
                head,
                selecting,
                body,
                config.budget.clone(),
                config.streams.clone(),
                key,
                reuse,
            )
            .await,
        ),
        _ => Outcome::Unshared(Arc::new(Mutex::new(Some(Response::from_parts(
            head,
            CoalesceBody::inner(body),
        ))))),
    }
}

/// Runs a waiter's own request, with the headers the flight ran without put back.
async fn run_own<S, ReqB, ResB>(
    own: &mut Option<(S, Request<ReqB>)>,
    question: Question,
) -> Result<Response<CoalesceBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    let (mut inner, mut request) = own.take().expect("a waiter keeps its request");
    question.restore(request.headers_mut());
    let response = inner.call(request).await?;
    Ok(response.map(CoalesceBody::inner))
}

/// This caller's answer from a shared response, per its question: the response, or a
/// `304`, `206` or `416` made from it. `None` if the caller must run its own request
/// instead, unless it `must` be answered (a leader has no request left to run): then it
/// gets the full response, always a valid answer to a conditional or range request.
fn decide(tap: &Tap, question: &Question, method: &Method, must: bool) -> Option<Answer> {
    match question.answer(method, tap.shared().head(), tap.shared().len()) {
        Answer::OwnRequest if must => Some(Answer::Full),
        Answer::OwnRequest => None,
        decided => Some(decided),
    }
}

/// Makes the response `decided` from a tap on the shared response; waits for the body's
/// end first if the answer needs its length.
async fn deliver<B>(
    mut tap: Tap,
    mut decided: Answer,
    question: &Question,
    method: &Method,
) -> Response<CoalesceBody<B>> {
    if let Answer::NeedLength = decided {
        let len = poll_fn(|cx| tap.poll_length(cx)).await;
        decided = match len {
            Some(len) => question.answer(method, tap.shared().head(), Some(len)),
            // The body failed: the full response carries its error to the client.
            None => Answer::Full,
        };
    }
    let head = tap.shared().head();
    let mut response = Response::new(CoalesceBody::empty());
    *response.version_mut() = head.version;
    let content_range = decided.content_range();
    match decided {
        Answer::Full | Answer::NeedLength | Answer::OwnRequest => {
            *response.status_mut() = head.status;
            *response.headers_mut() = head.headers.clone();
            *response.body_mut() = CoalesceBody::shared(tap);
        }
        Answer::NotModified(headers) => {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            *response.headers_mut() = headers;
        }
        Answer::Partial { start, end, .. } => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            *response.headers_mut() = head.headers.clone();
            let headers = response.headers_mut();
            headers.extend(content_range.map(|range| (CONTENT_RANGE, range)));
            headers.insert(CONTENT_LENGTH, HeaderValue::from(end - start + 1));
            tap.seek(start, end + 1);
            *response.body_mut() = CoalesceBody::shared(tap);
        }
        Answer::Unsatisfiable { .. } => {
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            *response.headers_mut() = metadata(&head.headers);
            let headers = response.headers_mut();
            headers.extend(content_range.map(|range| (CONTENT_RANGE, range)));
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
    }
    response
}

/// Adds the debug header that says how `response` was served, if configured.
fn mark<B>(
    mut response: Response<CoalesceBody<B>>,
    how: Option<&'static str>,
    config: &Config,
) -> Response<CoalesceBody<B>> {
    if let (Some(name), Some(how)) = (&config.debug_header, how) {
        response
            .headers_mut()
            .insert(name.clone(), HeaderValue::from_static(how));
    }
    response
}

const LED: &str = "led";
const JOINED: &str = "joined";
const OWN: &str = "own";
const REUSED: &str = "reused";

fn served(led: bool) -> Option<&'static str> {
    Some(if led { LED } else { JOINED })
}

/// A request's coalescing key, offered to an observer: hashed on demand, never formatted
/// (it is made from the request's method, URI and headers).
struct ObservedBytes<'a>(&'a [u8]);

impl ObservedKey for ObservedBytes<'_> {
    fn hash_with(&self, mut state: &mut dyn core::hash::Hasher) {
        // As the group's `Vec<u8>` keys hash.
        core::hash::Hash::hash(self.0, &mut state);
    }

    fn write_key(&self, _: &mut dyn core::fmt::Write) -> Option<core::fmt::Result> {
        None
    }
}
