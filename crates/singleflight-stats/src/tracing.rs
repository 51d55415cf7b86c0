//! The `tracing` exporter: a span around each execution, a span around each wait that
//! follows from the execution it waits for, and events for takeovers and timeouts.

use alloc::sync::Arc;
use core::fmt;
use core::hash::BuildHasher;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use singleflight_core::{Execution, FlightInfo, ObservedKey, Observer, Wait};
use tracing::Span;

#[cfg(feature = "key-hmac")]
use crate::key_hmac::KeyHmac;
use crate::tokens::Tokens;

/// The name of the span around each execution.
pub const EXECUTION_SPAN: &str = "singleflight.execution";

/// The name of the span around each wait of a caller that joined a flight.
pub const WAIT_SPAN: &str = "singleflight.wait";

/// An observer that reports through [`tracing`]:
///
/// * a `DEBUG` span named [`EXECUTION_SPAN`] (`"singleflight.execution"`, fields `group`
///   and `flight`) from the start to the end of each execution of the work — the
///   leader's, or a promoted waiter's — closed with a `DEBUG` event inside it carrying the
///   `outcome` (`Completed`, `Failed`, `Panicked`, `Dropped`);
/// * a `DEBUG` span named [`WAIT_SPAN`] (`"singleflight.wait"`, the same fields) from the
///   moment a caller joins a flight to the moment it leaves, closed with a `TRACE` event
///   carrying how it ended (`wait`: `Received(..)`, `GaveUp`, `Promoted`);
/// * `DEBUG` events for a takeover and for a caller's timeout.
///
/// No key is recorded, unless opted into with [`with_key_hmac`](Self::with_key_hmac)
/// (feature `key-hmac`): then the spans of the calls that offer their key carry it as a
/// keyed hash, in the field `key.hmac`.
///
/// # How the spans relate
///
/// An execution serves every caller of its flight, so it belongs to none of them: its span
/// is a root (no parent), *following from* the span that was current where it started (the
/// leader's call). So the span of detached work, which outlives the call that launched
/// it, is never the child of a call that went away. A wait span is a child of its caller's
/// current span and *follows from* the execution span it waits for (the latest one, after
/// a takeover): the one in progress when the wait's hook runs, so a caller that joins in
/// the instant between a flight's start and its execution's hook, or as the execution
/// ends, has a wait span with no such link. Exported to OpenTelemetry (through `tracing-opentelemetry`), a
/// `follows_from` becomes a span link: a trace of a stampede shows one execution with a
/// link from each of its waiters. ([`OtelObserver`](crate::OtelObserver) records metrics
/// only: the OpenTelemetry trace API would add dependencies this crate does without.)
///
/// The spans are created, not entered: an async execution is polled in between other
/// tasks' work, so a span is a record of a lifetime rather than a context for events the
/// work emits. Subscribers that time spans (span close events) report how long each
/// execution and each wait took. When a span is disabled (no subscriber wants `DEBUG` from
/// this crate), nothing is stored; otherwise an enabled span costs short locks at its start
/// and end.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use singleflight_stats::TracingObserver;
///
/// let group = singleflight_blocking::Group::<u32, u32>::new()
///     .with_observer(Arc::new(TracingObserver::new("users")));
/// assert_eq!(group.call(&1, || 1), Ok(1));
/// ```
pub struct TracingObserver {
    group: Arc<str>,
    spans: Tokens<Span>,
    /// The span of each flight's execution in progress, by group name (hashed) and flight
    /// id, for the waits to follow from.
    executions: Mutex<HashMap<(u64, u64), tracing::Id>>,
    names: foldhash::fast::FixedState,
    /// How keys are named in spans, if they are ([`TracingObserver::with_key_hmac`]).
    #[cfg(feature = "key-hmac")]
    keys: Option<KeyHmac>,
}

impl TracingObserver {
    /// Creates an observer whose spans and events carry `group = <group>`, unless the
    /// group was named (`with_name`): then they carry that name.
    pub fn new(group: impl Into<Arc<str>>) -> Self {
        Self {
            group: group.into(),
            spans: Tokens::new(),
            executions: Mutex::new(HashMap::new()),
            names: foldhash::fast::FixedState::default(),
            #[cfg(feature = "key-hmac")]
            keys: None,
        }
    }

    /// Also names the key of each span that has one by its keyed hash under `keys`
    /// ([`KeyHmac`], a secret of the application's), in the field `key.hmac`: the span
    /// of a flight's first execution and the span of each wait (a takeover's execution is
    /// told no key). The key itself is never recorded.
    ///
    /// The hash is of `"<group>/<key>"` (the key alone for a group with no name) if the
    /// group formats its keys (`with_key_format`), which is also what a [`HotKeys`]
    /// fed by that group holds, so a span's `key.hmac` matches the label
    /// [`OtelObserver::observe_hot_keys`] exports for the same key under the same secret
    /// (for keys within the [`HotKeys`]' byte cap); otherwise it is of the key's `Hash`
    /// stream, which stays the same across processes for keys of one type.
    ///
    /// This costs an HMAC-SHA256 and an allocation per span recorded; spans no subscriber
    /// wants cost nothing.
    ///
    /// [`HotKeys`]: crate::HotKeys
    /// [`OtelObserver::observe_hot_keys`]: crate::OtelObserver::observe_hot_keys
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use singleflight_stats::{KeyHmac, TracingObserver};
    ///
    /// let observer = TracingObserver::new("users").with_key_hmac(KeyHmac::new(b"secret"));
    /// let group = singleflight_blocking::Group::<String, u32>::new()
    ///     .with_key_format(|key, f| f.write_str(key))
    ///     .with_observer(Arc::new(observer));
    /// assert_eq!(group.call("user:42", || 1), Ok(1));
    /// ```
    #[cfg(feature = "key-hmac")]
    #[must_use]
    pub fn with_key_hmac(self, keys: KeyHmac) -> Self {
        Self {
            keys: Some(keys),
            ..self
        }
    }

    /// Records the key `flight` offers in `span`, as its keyed hash, if asked to.
    #[inline]
    fn record_key(&self, span: &Span, flight: &FlightInfo<'_>) {
        #[cfg(feature = "key-hmac")]
        if let (Some(keys), Some(key)) = (&self.keys, flight.key()) {
            span.record("key.hmac", keys.label_observed(flight.group(), key));
        }
        #[cfg(not(feature = "key-hmac"))]
        let _ = (span, flight);
    }

    /// The group name spans and events carry when the group has none of its own.
    pub fn group(&self) -> &str {
        &self.group
    }

    fn name<'a>(&'a self, flight: &FlightInfo<'a>) -> &'a str {
        flight.group().unwrap_or(&self.group)
    }

    /// Where a flight's execution span is kept.
    fn slot(&self, flight: &FlightInfo<'_>) -> (u64, u64) {
        (self.names.hash_one(self.name(flight)), flight.id().get())
    }

    fn executions(&self) -> MutexGuard<'_, HashMap<(u64, u64), tracing::Id>> {
        // Nothing panics under this lock; a poisoned map is still whole.
        self.executions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for TracingObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let executions = self.executions().len();
        f.debug_struct("TracingObserver")
            .field("group", &self.group)
            .field("executions", &executions)
            .field("waits", &(self.spans.len().saturating_sub(executions)))
            .finish_non_exhaustive()
    }
}

impl Observer for TracingObserver {
    fn execution_started(&self, flight: &FlightInfo<'_>) -> u64 {
        let span = tracing::debug_span!(
            parent: None,
            "singleflight.execution",
            group = self.name(flight),
            flight = flight.id().get(),
            key.hmac = tracing::field::Empty,
        );
        let Some(id) = span.id() else {
            return 0;
        };
        self.record_key(&span, flight);
        span.follows_from(Span::current());
        self.executions().insert(self.slot(flight), id);
        self.spans.insert(span)
    }

    fn execution_finished(&self, flight: &FlightInfo<'_>, started: u64, execution: Execution) {
        if let Some(span) = self.spans.remove(started) {
            let slot = self.slot(flight);
            let mut executions = self.executions();
            // A takeover's span has replaced this one already: leave it.
            if executions.get(&slot) == span.id().as_ref() {
                executions.remove(&slot);
            }
            drop(executions);
            tracing::debug!(parent: &span, group = self.name(flight), outcome = ?execution, "execution finished");
        }
    }

    fn waiter_started(&self, flight: &FlightInfo<'_>) -> u64 {
        let span = tracing::debug_span!(
            "singleflight.wait",
            group = self.name(flight),
            flight = flight.id().get(),
            key.hmac = tracing::field::Empty,
        );
        if span.is_disabled() {
            return 0;
        }
        self.record_key(&span, flight);
        if let Some(execution) = self.executions().get(&self.slot(flight)).cloned() {
            span.follows_from(execution);
        }
        self.spans.insert(span)
    }

    fn waiter_finished(&self, flight: &FlightInfo<'_>, started: u64, wait: Wait) {
        if let Some(span) = self.spans.remove(started) {
            tracing::trace!(parent: &span, group = self.name(flight), wait = ?wait, "coalesced caller left its flight");
        }
    }

    fn takeover(&self, flight: &FlightInfo<'_>) {
        tracing::debug!(
            group = self.name(flight),
            flight = flight.id().get(),
            "waiter took over after the leader was dropped"
        );
    }

    fn timeout(&self) {
        tracing::debug!(group = &*self.group, "caller timed out");
    }

    fn reused(&self, group: Option<&str>, _: &dyn ObservedKey) {
        // Per caller, as a waiter's event is: TRACE. The key is the application's: not
        // recorded.
        tracing::trace!(
            group = group.unwrap_or(&self.group),
            "caller served a kept value"
        );
    }

    fn refresh_started(&self, flight: &FlightInfo<'_>) {
        tracing::debug!(
            group = self.name(flight),
            flight = flight.id().get(),
            "refresh started"
        );
    }

    fn refresh_failed(&self, flight: &FlightInfo<'_>) {
        tracing::debug!(
            group = self.name(flight),
            flight = flight.id().get(),
            "refresh failed: the kept value is served until its window ends"
        );
    }
}
