//! The seam with the coalescing group: every use of `singleflight_tokio`'s group and of its
//! `Error` is here, so the rest of the crate speaks only of [`Ended`].

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use singleflight_tokio::{
    CallFuture, Error, Execution, FlightInfo, Group, ObservedKey, Observer, Role, Wait,
};

use crate::gauge::Gauge;

/// How a caller's flight ended, for this caller.
pub(crate) enum Ended<T> {
    /// The shared work's value; `led` if this caller launched the work.
    Value { value: T, led: bool },
    /// The shared work panicked (or its task was dropped by the runtime).
    Panicked,
    /// This caller's timeout elapsed; the flight goes on for everyone else.
    TimedOut,
    /// The flight ended without a value for another reason the group reports (for detached
    /// work, none is expected).
    Abandoned,
}

/// The flights of one service: a tokio group keyed by request keys.
pub(crate) struct Flights<T> {
    group: Group<Vec<u8>, T>,
}

impl<T> Clone for Flights<T> {
    fn clone(&self) -> Self {
        Self {
            group: self.group.clone(),
        }
    }
}

impl<T> Flights<T>
where
    T: Clone + Send + Sync + 'static,
{
    /// A group, watched by `observer` if there is one; `routes`: the observer is offered
    /// each call's route instead of its key (the keys are the default policy's).
    pub(crate) fn new(observer: Option<Arc<dyn Observer>>, routes: bool) -> Self {
        let group = Group::new();
        let group = match observer {
            Some(observer) if routes => group
                .with_key_format(crate::key::write_route)
                .with_observer(Arc::new(RouteKeys(observer))),
            Some(observer) => group.with_observer(observer),
            None => group,
        };
        Self { group }
    }

    /// Joins the flight of `key`, or starts one with `work()`, and waits for it at most
    /// `timeout`. `detached`: the work's future is spawned, and finishes even if every caller
    /// goes away; otherwise it runs inside this caller's future, and if this caller is
    /// dropped, the oldest waiter takes over with its own `work`. `waiting` counts this
    /// caller while it waits for a flight it did not start.
    pub(crate) async fn run<F, Fut>(
        &self,
        key: &[u8],
        detached: bool,
        timeout: Option<Duration>,
        waiting: &Gauge,
        work: F,
    ) -> Ended<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let group = &self.group;
        match (detached, timeout) {
            (true, None) => drive(group.call_detached(key, work), waiting).await,
            (true, Some(d)) => {
                drive(group.timeout(d, group.call_detached(key, work)), waiting).await
            }
            (false, None) => drive(group.call(key, work), waiting).await,
            (false, Some(d)) => drive(group.timeout(d, group.call(key, work)), waiting).await,
        }
    }
}

/// Polls `call` to its end, counting this caller in `waiting` while it waits on a flight
/// another caller started (it registered, and has no role yet; a waiter promoted to lead
/// stops counting).
async fn drive<C, T>(call: C, waiting: &Gauge) -> Ended<T>
where
    C: CallFuture<Output = Result<T, Error>>,
{
    let mut call = pin!(call);
    let mut counted = None;
    let result = poll_fn(|cx| {
        let poll = call.as_mut().poll(cx);
        // Waiting: registered, pending, and not (or no longer, once promoted) leading.
        let waits = poll.is_pending() && call.as_ref().get_ref().role().is_none();
        if waits != counted.is_some() {
            counted = waits.then(|| waiting.enter());
        }
        poll
    })
    .await;
    drop(counted);
    match result {
        Ok(value) => Ended::Value {
            value,
            led: call.as_ref().get_ref().role().is_some_and(Role::is_leader),
        },
        Err(error) if error.is_panicked() => Ended::Panicked,
        Err(error) if error.is_timeout() => Ended::TimedOut,
        Err(_) => Ended::Abandoned,
    }
}

/// A route (`METHOD path`), offered to an observer as a call's key: hashed and written as
/// the same text, so that every request of a route counts under one key.
pub(crate) struct RouteKey<'a>(pub(crate) &'a str);

impl ObservedKey for RouteKey<'_> {
    fn hash_with(&self, mut state: &mut dyn core::hash::Hasher) {
        core::hash::Hash::hash(self.0, &mut state);
    }

    fn write_key(&self, out: &mut dyn core::fmt::Write) -> Option<core::fmt::Result> {
        Some(out.write_str(self.0))
    }
}

/// Forwards every hook to the layer's observer, with each key the group offers (written
/// as its route by the group's key format) replaced by that route as a [`RouteKey`]: the
/// group's own key would hash the whole request key (query and credentials included),
/// splitting one route into as many keys as it has callers.
struct RouteKeys(Arc<dyn Observer>);

impl RouteKeys {
    /// Calls `hook` with `flight`, its key replaced by its route if it offers one.
    fn routed<R>(&self, flight: &FlightInfo<'_>, hook: impl FnOnce(&FlightInfo<'_>) -> R) -> R {
        let mut route = String::new();
        match flight.key().map(|key| key.write_key(&mut route)) {
            Some(Some(Ok(()))) => {
                let key = RouteKey(&route);
                hook(&FlightInfo::new(flight.group(), flight.id()).with_key(&key))
            }
            _ => hook(flight),
        }
    }
}

impl Observer for RouteKeys {
    fn flight_started(&self, flight: &FlightInfo<'_>) {
        self.routed(flight, |f| self.0.flight_started(f));
    }

    fn flight_finished(&self, flight: &FlightInfo<'_>) {
        self.0.flight_finished(flight);
    }

    fn execution_started(&self, flight: &FlightInfo<'_>) -> u64 {
        self.routed(flight, |f| self.0.execution_started(f))
    }

    fn execution_finished(&self, flight: &FlightInfo<'_>, started: u64, execution: Execution) {
        self.0.execution_finished(flight, started, execution);
    }

    fn leader_started(&self, flight: &FlightInfo<'_>) -> u64 {
        self.routed(flight, |f| self.0.leader_started(f))
    }

    fn leader_finished(&self, flight: &FlightInfo<'_>, started: u64, execution: Execution) {
        self.0.leader_finished(flight, started, execution);
    }

    fn waiter_started(&self, flight: &FlightInfo<'_>) -> u64 {
        self.routed(flight, |f| self.0.waiter_started(f))
    }

    fn waiter_finished(&self, flight: &FlightInfo<'_>, started: u64, wait: Wait) {
        self.0.waiter_finished(flight, started, wait);
    }

    fn takeover(&self, flight: &FlightInfo<'_>) {
        self.0.takeover(flight);
    }

    fn timeout(&self) {
        self.0.timeout();
    }

    fn reused(&self, group: Option<&str>, key: &dyn ObservedKey) {
        let mut route = String::new();
        match key.write_key(&mut route) {
            Some(Ok(())) => self.0.reused(group, &RouteKey(&route)),
            _ => self.0.reused(group, key),
        }
    }

    fn refresh_started(&self, flight: &FlightInfo<'_>) {
        self.routed(flight, |f| self.0.refresh_started(f));
    }

    fn refresh_failed(&self, flight: &FlightInfo<'_>) {
        self.0.refresh_failed(flight);
    }
}
