//! The service: which requests coalesce, who runs the inner service, and the response each
//! caller gets.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::{Buffered, CoalesceBody, Read, status_response};
use crate::flight::{Ended, Flights};
use crate::layer::{Config, Unshared};

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

/// What a flight shares: the leader's response, read once, or why it cannot be shared.
enum Outcome<B, E> {
    Shared(Arc<Buffered>),
    // Handed to the leader alone; its waiters get the `Unshared` outcome.
    Unshared(Arc<Mutex<Option<Response<CoalesceBody<B>>>>>),
    Failed(Arc<E>),
    BodyFailed,
}

impl<B, E> Clone for Outcome<B, E> {
    fn clone(&self) -> Self {
        match self {
            Self::Shared(buffered) => Self::Shared(buffered.clone()),
            Self::Unshared(slot) => Self::Unshared(slot.clone()),
            Self::Failed(error) => Self::Failed(error.clone()),
            Self::BodyFailed => Self::BodyFailed,
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
    ResB::Error: Send,
{
    type Response = Response<CoalesceBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let key = if self.config.methods.contains(request.method()) {
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
            .get(|| Flights::<T>::new(self.config.observer.clone()))
    }
}

/// Joins or leads the flight of `key`, and makes this caller's response from its outcome.
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
    ResB::Error: Send,
{
    // Taken by the work if this caller leads; kept to run its own request otherwise.
    let mut own = Some((inner, request));
    let ended = flights
        .run(
            &key,
            config.detached,
            config.timeout,
            &config.waiting,
            || {
                let (mut inner, request) = own.take().expect("the work starts once");
                let rules = config.rules.clone();
                let running = config.running.clone();
                // For `Vary`: the waiters compare their headers with the leader's.
                let asked = request.headers().clone();
                async move {
                    let _running = running.enter();
                    match inner.call(request).await {
                        Err(error) => Outcome::Failed(Arc::new(error)),
                        Ok(response) => match rules.read(response, &asked).await {
                            Read::Shared(buffered) => Outcome::Shared(Arc::new(buffered)),
                            Read::Unshared(response) => {
                                Outcome::Unshared(Arc::new(Mutex::new(Some(response))))
                            }
                            Read::Failed(_) => Outcome::BodyFailed,
                        },
                    }
                }
            },
        )
        .await;
    let (mut response, how) = match ended {
        // A waiter whose request selects another variant of the response (`Vary`) runs its
        // own request.
        Ended::Value {
            value: Outcome::Shared(buffered),
            led: false,
        } if !buffered.selected_by(
            own.as_ref()
                .expect("a waiter keeps its request")
                .1
                .headers(),
        ) =>
        {
            drop(buffered);
            let (mut inner, request) = own.take().expect("a waiter keeps its request");
            let response = inner.call(request).await?;
            (response.map(CoalesceBody::inner), Some(OWN))
        }
        Ended::Value {
            value: Outcome::Shared(buffered),
            led,
        } => {
            let response = Arc::try_unwrap(buffered)
                .map_or_else(|buffered| buffered.to_response(), Buffered::into_response);
            (response, served(led))
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
            Unshared::RunOwn => {
                let (mut inner, request) = own.take().expect("a waiter keeps its request");
                let response = inner.call(request).await?;
                (response.map(CoalesceBody::inner), Some(OWN))
            }
        },
        Ended::Value {
            value: Outcome::Failed(_) | Outcome::BodyFailed,
            led,
        } => (status_response(config.error_status), served(led)),
        // The caller's role is not reported with these; no header says one.
        Ended::Panicked => (status_response(config.panic_status), None),
        Ended::TimedOut => (status_response(config.timeout_status), None),
        Ended::Abandoned => (status_response(config.error_status), None),
    };
    if let (Some(name), Some(how)) = (&config.debug_header, how) {
        response
            .headers_mut()
            .insert(name.clone(), HeaderValue::from_static(how));
    }
    Ok(response)
}

const LED: &str = "led";
const JOINED: &str = "joined";
const OWN: &str = "own";

fn served(led: bool) -> Option<&'static str> {
    Some(if led { LED } else { JOINED })
}
