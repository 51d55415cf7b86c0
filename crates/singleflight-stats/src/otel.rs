//! The OpenTelemetry exporter: the same events as [`Stats`], recorded through the
//! OpenTelemetry metrics API, named by OpenTelemetry's general rules (dotted names, no
//! `_total`, durations in seconds, a low-cardinality `error.type`).

use alloc::sync::Arc;
use core::fmt;

use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::Relaxed;

use opentelemetry::metrics::{
    AsyncInstrument, Histogram, Meter, ObservableCounter, ObservableGauge,
};
use opentelemetry::{InstrumentationScope, KeyValue, global};
use singleflight_core::{Execution, FlightInfo, ObservedKey, Observer, Wait};

use crate::clock::Clock;
#[cfg(feature = "key-hmac")]
use crate::hot_keys::{HotKey, HotKeys};
#[cfg(feature = "key-hmac")]
use crate::key_hmac::KeyHmac;
use crate::stats::Stats;
#[cfg(feature = "key-hmac")]
use alloc::vec::Vec;

/// The names of the instruments and attributes [`OtelObserver`] records, and their units.
///
/// OpenTelemetry has no semantic conventions for request coalescing yet, so these follow
/// its general naming rules: a `singleflight.` namespace, dotted lowercase names, no
/// `_total` suffix (the instrument kind says it is a counter), durations in seconds, and
/// the standard `error.type` attribute for failures.
pub mod instruments {
    /// Observable counter (`{call}`): calls, each counted once when its role is settled, with
    /// [`GROUP`], [`ROLE`] and, when the call did not end with a value, [`ERROR_TYPE`]. A
    /// leader is counted when its execution ends (its outcome is then known), a waiter
    /// when it leaves the flight it joined: with the error type of the outcome it received
    /// (the leader's), or `gave_up` if it left without one. A waiter promoted to run the
    /// work is counted as a leader. A call served by a reuse window (`reuse_for`) is
    /// counted as `reused` when it is served (it always has a value).
    ///
    /// A refresh (`refresh_after`) runs the work as the leader of a flight of its own, and
    /// is counted as a `leader` here although no caller waits for it: for a group that
    /// refreshes, the calls are this counter's sum minus [`REFRESHES`].
    pub const CALLS: &str = "singleflight.calls";
    /// Observable counter (`{refresh}`): refreshes started (`refresh_after`: a call found its
    /// key's value past the threshold and started the work again in the background), with
    /// [`GROUP`]. Each is also a `leader` in [`CALLS`] and an execution in
    /// [`EXECUTION_DURATION`], with its outcome's error type.
    pub const REFRESHES: &str = "singleflight.refreshes";
    /// Observable counter (`{refresh}`): refreshes that ended without a value to keep (their
    /// work failed, panicked or was dropped), with [`GROUP`]: the old value was served
    /// until its window ended. Refreshes that kept a value are [`REFRESHES`] minus these,
    /// once none is running.
    pub const REFRESH_FAILURES: &str = "singleflight.refresh.failures";
    /// Histogram (`s`): how long each execution of the work took, one sample per execution
    /// (not per caller), with [`GROUP`] and, on failure, [`ERROR_TYPE`].
    pub const EXECUTION_DURATION: &str = "singleflight.execution.duration";
    /// Histogram (`s`): how long each waiter waited, from joining a flight to receiving its
    /// outcome or giving up, one sample per waiter, with [`GROUP`] and, as on [`CALLS`],
    /// [`ERROR_TYPE`]. A waiter promoted to run the work records no sample: its wait ended
    /// without an outcome, and its execution is timed instead.
    pub const WAIT_DURATION: &str = "singleflight.wait.duration";
    /// Observable gauge (`{flight}`): flights in progress, read from live state when the
    /// reader collects, with [`GROUP`].
    pub const FLIGHTS_ACTIVE: &str = "singleflight.flights.active";
    /// Observable counter (`{call}`): waiters promoted to run the work after their leader was dropped,
    /// with [`GROUP`].
    pub const TAKEOVERS: &str = "singleflight.takeovers";
    /// Observable counter (`{call}`): callers whose timeout elapsed, with [`GROUP`]. A timed-out
    /// caller is also counted in [`CALLS`], as the waiter (or dropped leader) it was.
    pub const TIMEOUTS: &str = "singleflight.timeouts";

    /// Observable gauge (`{call}`): the estimated joins of each of the hottest keys, with
    /// [`GROUP`] and [`KEY_HMAC`]. Registered only by
    /// [`OtelObserver::observe_hot_keys`](crate::OtelObserver::observe_hot_keys).
    pub const HOT_KEY_JOINS: &str = "singleflight.hot_key.joins";
    /// Observable gauge (`{call}`): the estimated executions of each of the hottest keys,
    /// with [`GROUP`] and [`KEY_HMAC`], as [`HOT_KEY_JOINS`].
    pub const HOT_KEY_EXECUTIONS: &str = "singleflight.hot_key.executions";

    /// Attribute: the group's name, given when the observer is created.
    pub const GROUP: &str = "singleflight.group";
    /// Attribute: the caller's role, one of [`Role`](crate::Role)'s strings.
    pub const ROLE: &str = "singleflight.role";
    /// Attribute: why an execution failed, one of [`ErrorType`](crate::ErrorType)'s
    /// strings. Absent when it succeeded.
    pub const ERROR_TYPE: &str = "error.type";

    /// Attribute: a key, as its keyed hash ([`KeyHmac::label`](crate::KeyHmac::label)):
    /// never the key itself.
    pub const KEY_HMAC: &str = "singleflight.key.hmac";

    /// The unit of calls.
    pub const UNIT_CALL: &str = "{call}";
    /// The unit of flights.
    pub const UNIT_FLIGHT: &str = "{flight}";
    /// The unit of refreshes.
    pub const UNIT_REFRESH: &str = "{refresh}";
    /// The unit of durations: seconds.
    pub const UNIT_SECONDS: &str = "s";

    /// The explicit bucket boundaries of [`EXECUTION_DURATION`] and [`WAIT_DURATION`], in seconds: from half a
    /// millisecond (a cache or a local database) to ten seconds (a slow upstream). The
    /// SDK's default boundaries are meant for milliseconds and would put almost every
    /// execution in the first bucket.
    pub const DURATION_BOUNDARIES: [f64; 14] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
}

/// The role of a call, the value of the [`singleflight.role`](instruments::ROLE) attribute.
///
/// Kept `#[non_exhaustive]`: roles for calls served in ways this version does not know may
/// join these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// The call ran the work: a flight's first caller, or a waiter promoted after its
    /// leader was dropped.
    Leader,
    /// The call joined another caller's flight.
    Waiter,
    /// The call was served by a reuse window (`reuse_for`) with a value a finished flight
    /// left: it neither ran the work nor joined a flight.
    Reused,
}

impl Role {
    /// The attribute value: `"leader"`, `"waiter"` or `"reused"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Waiter => "waiter",
            Role::Reused => "reused",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an execution failed, the value of the [`error.type`](instruments::ERROR_TYPE)
/// attribute: a short, fixed set, so it never raises the cardinality of a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorType {
    /// The work returned an error (fallible calls).
    Error,
    /// The work panicked.
    Panic,
    /// The leader was dropped (cancelled, or its own timeout elapsed) before the work
    /// finished.
    LeaderDropped,
    /// A waiter left its flight without the outcome: its timeout elapsed, or it was
    /// cancelled (dropped).
    GaveUp,
    /// An outcome this version does not know, reported as OpenTelemetry's `_OTHER`.
    Other,
}

impl ErrorType {
    /// The attribute value: `"error"`, `"panic"`, `"leader_dropped"`, `"gave_up"` or
    /// `"_OTHER"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorType::Error => "error",
            ErrorType::Panic => "panic",
            ErrorType::LeaderDropped => "leader_dropped",
            ErrorType::GaveUp => "gave_up",
            ErrorType::Other => "_OTHER",
        }
    }

    /// The error type of a waiter's end, `None` when it received a value; `None` for a
    /// promotion too, which ends no call.
    pub fn of_wait(wait: Wait) -> Option<Self> {
        match wait {
            Wait::Received(execution) => Self::of(execution),
            Wait::GaveUp => Some(ErrorType::GaveUp),
            _ => None,
        }
    }

    /// The error type of an execution's outcome, `None` when it completed.
    pub fn of(execution: Execution) -> Option<Self> {
        match execution {
            Execution::Completed => None,
            Execution::Failed => Some(ErrorType::Error),
            Execution::Panicked => Some(ErrorType::Panic),
            Execution::Dropped => Some(ErrorType::LeaderDropped),
            _ => Some(ErrorType::Other),
        }
    }

    const ALL: [ErrorType; 5] = [
        ErrorType::Error,
        ErrorType::Panic,
        ErrorType::LeaderDropped,
        ErrorType::GaveUp,
        ErrorType::Other,
    ];

    const fn index(self) -> usize {
        match self {
            ErrorType::Error => 0,
            ErrorType::Panic => 1,
            ErrorType::LeaderDropped => 2,
            ErrorType::GaveUp => 3,
            ErrorType::Other => 4,
        }
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An observer that records through the [OpenTelemetry](https://opentelemetry.io) metrics
/// API: a calls counter by role and error type, histograms of execution and wait
/// durations, an observable gauge of the flights in progress, and counters of takeovers,
/// timeouts and refreshes.
///
/// | instrument | kind | unit | attributes |
/// |---|---|---|---|
/// | `singleflight.calls` | observable counter | `{call}` | `singleflight.group`, `singleflight.role` (`leader`, `waiter`, `reused`), `error.type` (calls that got no value) |
/// | `singleflight.execution.duration` | histogram | `s` | `singleflight.group`, `error.type` (failures) |
/// | `singleflight.wait.duration` | histogram | `s` | `singleflight.group`, `error.type` (waiters that got no value) |
/// | `singleflight.flights.active` | observable gauge | `{flight}` | `singleflight.group` |
/// | `singleflight.takeovers` | observable counter | `{call}` | `singleflight.group` |
/// | `singleflight.timeouts` | observable counter | `{call}` | `singleflight.group` |
/// | `singleflight.refreshes` | observable counter | `{refresh}` | `singleflight.group` |
/// | `singleflight.refresh.failures` | observable counter | `{refresh}` | `singleflight.group` |
///
/// See [`instruments`] for each one's exact meaning, [`Role`] and [`ErrorType`] for the
/// attribute values.
///
/// The instruments are created once, from the meter given (or the global meter provider
/// in effect when the observer is created: install the SDK first), and so are their
/// attribute sets.
///
/// # Cost
///
/// The counters are *observable* (asynchronous) counters: the hooks add to relaxed
/// atomics (a [`Stats`] and one more), and the SDK reads them when its reader collects, so
/// a call never pays for the SDK's attribute lookup to count. Only the durations go
/// through the SDK on the call path: two clock reads and one histogram record per
/// execution, and as many per waiter. On the uncontended call (the `stats` bench of the
/// workspace's `benches` package) this costs about as much as [`MetricsObserver`](crate::MetricsObserver)
/// on the `metrics` facade's Prometheus recorder.
///
/// # Keys
///
/// No instrument of the observer has a key attribute: keys are the application's data,
/// and each one would be a time series. To see which keys are hot, give a [`Stats`]
/// hot keys ([`Stats::with_hot_keys`]) and export them, keys hashed under your secret, with
/// [`observe_hot_keys`](Self::observe_hot_keys) (feature `key-hmac`).
///
/// # Flights in progress
///
/// The gauge is read from live counters when the reader collects, as
/// [`Stats::active`] is: nothing increments or decrements it, so no reset and no lost
/// event can drive it negative or leave it drifting. The observer keeps a [`Stats`] for
/// this, which [`stats`](Self::stats) returns, so the same numbers can be read in-process.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use singleflight_stats::OtelObserver;
///
/// // With no meter provider installed, the global one records nothing.
/// let observer = Arc::new(OtelObserver::new("users"));
/// let users = singleflight_blocking::Group::<u32, String>::new().with_observer(observer.clone());
/// users.call(&42, || "Ada".to_string()).unwrap();
/// assert_eq!(observer.stats().snapshot().misses, 1);
/// ```
pub struct OtelObserver {
    group: Arc<str>,
    execution_duration: Histogram<f64>,
    wait_duration: Histogram<f64>,
    live: Arc<Live>,
    clock: Clock,
    attributes: Arc<Attributes>,
    _instruments: ([ObservableCounter<u64>; 5], ObservableGauge<u64>),
}

/// The counters the observable instruments read when the reader collects.
struct Live {
    /// Everything but completed executions, and the flights in progress.
    stats: Stats,
    /// Executions that completed (`Stats` counts only the failed ones).
    completed: AtomicU64,
    /// Executions that ended in a way this version does not know.
    other: AtomicU64,
    /// Waiters that left their flight: with a value (`0`), or by error type (`1 +` its
    /// index).
    waiters: [AtomicU64; 1 + ErrorType::ALL.len()],
}

impl Live {
    /// Reports `singleflight.calls`: every attribute set, from counters that only grow.
    fn observe_calls(&self, a: &Attributes, calls: &dyn AsyncInstrument<u64>) {
        let total = self.stats.lifetime();
        calls.observe(self.waiters[0].load(Relaxed), &a.waiter);
        for error in ErrorType::ALL {
            let waiters = self.waiters[1 + error.index()].load(Relaxed);
            if waiters > 0 {
                calls.observe(waiters, &a.failed_waiter[error.index()]);
            }
        }
        calls.observe(self.completed.load(Relaxed), &a.leader);
        if total.reused > 0 {
            calls.observe(total.reused, &a.reused);
        }
        let failed = |error: ErrorType| &a.failed_leader[error.index()];
        calls.observe(total.errors, failed(ErrorType::Error));
        calls.observe(total.panics, failed(ErrorType::Panic));
        calls.observe(total.leader_drops, failed(ErrorType::LeaderDropped));
        let other = self.other.load(Relaxed);
        if other > 0 {
            calls.observe(other, failed(ErrorType::Other));
        }
    }
}

/// Every attribute set the hooks record with, built once.
struct Attributes {
    group: [KeyValue; 1],
    waiter: [KeyValue; 2],
    leader: [KeyValue; 2],
    reused: [KeyValue; 2],
    failed_leader: [[KeyValue; 3]; ErrorType::ALL.len()],
    failed_waiter: [[KeyValue; 3]; ErrorType::ALL.len()],
    failed: [[KeyValue; 2]; ErrorType::ALL.len()],
}

impl Attributes {
    fn new(group: &Arc<str>) -> Self {
        let group = || KeyValue::new(instruments::GROUP, group.clone());
        let role = |role: Role| KeyValue::new(instruments::ROLE, role.as_str());
        let error = |error: ErrorType| KeyValue::new(instruments::ERROR_TYPE, error.as_str());
        Self {
            group: [group()],
            waiter: [group(), role(Role::Waiter)],
            leader: [group(), role(Role::Leader)],
            reused: [group(), role(Role::Reused)],
            failed_leader: ErrorType::ALL.map(|e| [group(), role(Role::Leader), error(e)]),
            failed_waiter: ErrorType::ALL.map(|e| [group(), role(Role::Waiter), error(e)]),
            failed: ErrorType::ALL.map(|e| [group(), error(e)]),
        }
    }
}

impl OtelObserver {
    /// The instrumentation scope of the meter [`new`](Self::new) uses: this crate's name
    /// and version.
    pub fn scope() -> InstrumentationScope {
        InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
            .with_version(env!("CARGO_PKG_VERSION"))
            .build()
    }

    /// Creates the instruments for a group called `group` from the global meter provider
    /// (as [`opentelemetry::global::meter_provider`] returns it now), under
    /// [`scope`](Self::scope).
    pub fn new(group: impl Into<Arc<str>>) -> Self {
        Self::with_meter(&global::meter_with_scope(Self::scope()), group)
    }

    /// Creates the instruments for a group called `group` from `meter`.
    pub fn with_meter(meter: &Meter, group: impl Into<Arc<str>>) -> Self {
        let group = group.into();
        let live = Arc::new(Live {
            stats: Stats::new(),
            completed: AtomicU64::new(0),
            other: AtomicU64::new(0),
            waiters: Default::default(),
        });
        let attributes = Arc::new(Attributes::new(&group));
        // Each observable instrument's callback holds the live counters and attributes.
        let reads = || (live.clone(), attributes.clone());
        let calls = {
            let (live, a) = reads();
            meter
                .u64_observable_counter(instruments::CALLS)
                .with_unit(instruments::UNIT_CALL)
                .with_description(
                    "Calls, by role (leaders ran the work, waiters joined a flight, \
                     reused calls were served a kept value)",
                )
                .with_callback(move |calls| live.observe_calls(&a, calls))
                .build()
        };
        let takeovers = {
            let (live, a) = reads();
            meter
                .u64_observable_counter(instruments::TAKEOVERS)
                .with_unit(instruments::UNIT_CALL)
                .with_description("Waiters promoted to run the work after their leader was dropped")
                .with_callback(move |c| c.observe(live.stats.lifetime().takeovers, &a.group))
                .build()
        };
        let timeouts = {
            let (live, a) = reads();
            meter
                .u64_observable_counter(instruments::TIMEOUTS)
                .with_unit(instruments::UNIT_CALL)
                .with_description("Callers whose timeout elapsed")
                .with_callback(move |c| c.observe(live.stats.lifetime().timeouts, &a.group))
                .build()
        };
        let refreshes = {
            let (live, a) = reads();
            meter
                .u64_observable_counter(instruments::REFRESHES)
                .with_unit(instruments::UNIT_REFRESH)
                .with_description("Refreshes of kept values started in the background")
                .with_callback(move |c| c.observe(live.stats.lifetime().refreshes, &a.group))
                .build()
        };
        let refresh_failures = {
            let (live, a) = reads();
            meter
                .u64_observable_counter(instruments::REFRESH_FAILURES)
                .with_unit(instruments::UNIT_REFRESH)
                .with_description("Refreshes that ended without a value to keep")
                .with_callback(move |c| {
                    c.observe(live.stats.lifetime().refresh_failures, &a.group);
                })
                .build()
        };
        let flights_active = {
            let (live, a) = reads();
            meter
                .u64_observable_gauge(instruments::FLIGHTS_ACTIVE)
                .with_unit(instruments::UNIT_FLIGHT)
                .with_description("Flights in progress")
                .with_callback(move |gauge| gauge.observe(live.stats.active(), &a.group))
                .build()
        };
        Self {
            execution_duration: meter
                .f64_histogram(instruments::EXECUTION_DURATION)
                .with_unit(instruments::UNIT_SECONDS)
                .with_description("Duration of each execution of the work")
                .with_boundaries(instruments::DURATION_BOUNDARIES.to_vec())
                .build(),
            wait_duration: meter
                .f64_histogram(instruments::WAIT_DURATION)
                .with_unit(instruments::UNIT_SECONDS)
                .with_description("How long each waiter waited for its flight's outcome")
                .with_boundaries(instruments::DURATION_BOUNDARIES.to_vec())
                .build(),
            live,
            clock: Clock::new(),
            attributes,
            group,
            _instruments: (
                [calls, takeovers, timeouts, refreshes, refresh_failures],
                flights_active,
            ),
        }
    }

    /// The group name the instruments are labelled with.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The in-process counters the observable instruments read (untimed): everything a
    /// [`Stats`] counts. Resetting them changes neither the exported counters (which read
    /// the totals since creation, so they only grow) nor the gauge of flights in progress.
    pub fn stats(&self) -> &Stats {
        &self.live.stats
    }

    /// Exports the `top` hottest keys of `hot_keys` from `meter`, as the observable gauges
    /// [`HOT_KEY_JOINS`](instruments::HOT_KEY_JOINS) and
    /// [`HOT_KEY_EXECUTIONS`](instruments::HOT_KEY_EXECUTIONS), each key named only by its
    /// keyed hash under `keys` (attribute [`KEY_HMAC`](instruments::KEY_HMAC)).
    ///
    /// This is the only way keys leave through this crate, and it takes a [`KeyHmac`]:
    /// there is no plain-key variant. The hashes are computed when the reader collects
    /// (two times `top` HMACs per collection), never on the call path. Keep `top` small:
    /// each distinct key seen is a time series in the backend. A key longer than the
    /// [`HotKeys`]' cap is hashed by its kept bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use singleflight_stats::{HotKeys, KeyHmac, OtelObserver};
    ///
    /// let meter = opentelemetry::global::meter_with_scope(OtelObserver::scope());
    /// let hot = Arc::new(HotKeys::new(1_000));
    /// OtelObserver::observe_hot_keys(&meter, "users", hot.clone(), 5, KeyHmac::new(b"secret"));
    /// hot.record_join(b"user:42");
    /// ```
    #[cfg(feature = "key-hmac")]
    pub fn observe_hot_keys(
        meter: &Meter,
        group: impl Into<Arc<str>>,
        hot_keys: Arc<HotKeys>,
        top: usize,
        keys: KeyHmac,
    ) {
        let group = KeyValue::new(instruments::GROUP, group.into());
        let keys = Arc::new(keys);
        let gauge = |name: &'static str,
                     description: &'static str,
                     rank: fn(&HotKeys, usize) -> Vec<HotKey>| {
            let (group, keys, hot_keys) = (group.clone(), keys.clone(), hot_keys.clone());
            meter
                .u64_observable_gauge(name)
                .with_unit(instruments::UNIT_CALL)
                .with_description(description)
                .with_callback(move |gauge| {
                    for hot in rank(&hot_keys, top) {
                        let key = KeyValue::new(instruments::KEY_HMAC, keys.label(&hot.key));
                        gauge.observe(hot.count, &[group.clone(), key]);
                    }
                })
                .build()
        };
        gauge(
            instruments::HOT_KEY_JOINS,
            "Estimated joins of the hottest keys, each named by its keyed hash",
            HotKeys::top_joins,
        );
        gauge(
            instruments::HOT_KEY_EXECUTIONS,
            "Estimated executions of the hottest keys, each named by its keyed hash",
            HotKeys::top_executions,
        );
    }

    /// Records the end of an execution: its duration, and its leader's call (failures are
    /// counted by the `Stats`, completions and unknown outcomes here).
    #[inline]
    fn record_execution(&self, started: u64, execution: Execution) {
        let a = &self.attributes;
        let error = ErrorType::of(execution);
        let attributes: &[KeyValue] = match error {
            None => &a.group,
            Some(error) => &a.failed[error.index()],
        };
        if let Some(elapsed) = self.clock.elapsed(started) {
            self.execution_duration
                .record(elapsed.as_secs_f64(), attributes);
        }
        match error {
            None => self.live.completed.fetch_add(1, Relaxed),
            Some(ErrorType::Other) => self.live.other.fetch_add(1, Relaxed),
            Some(_) => 0,
        };
    }
}

impl fmt::Debug for OtelObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelObserver")
            .field("group", &self.group)
            .field("active", &self.live.stats.active())
            .finish_non_exhaustive()
    }
}

impl Observer for OtelObserver {
    fn flight_started(&self, flight: &FlightInfo<'_>) {
        self.live.stats.flight_started(flight);
    }

    fn flight_finished(&self, flight: &FlightInfo<'_>) {
        self.live.stats.flight_finished(flight);
    }

    fn execution_started(&self, flight: &FlightInfo<'_>) -> u64 {
        self.live.stats.execution_started(flight);
        self.clock.start()
    }

    fn execution_finished(&self, flight: &FlightInfo<'_>, started: u64, execution: Execution) {
        self.record_execution(started, execution);
        // The inner `Stats` is untimed: it takes no token.
        self.live.stats.execution_finished(flight, 0, execution);
    }

    fn leader_started(&self, flight: &FlightInfo<'_>) -> u64 {
        self.live.stats.leader_started(flight);
        self.clock.start()
    }

    fn leader_finished(&self, flight: &FlightInfo<'_>, started: u64, execution: Execution) {
        self.record_execution(started, execution);
        // Last, so that no collection sees the flight finished before its call counted.
        self.live.stats.leader_finished(flight, 0, execution);
    }

    fn waiter_started(&self, _: &FlightInfo<'_>) -> u64 {
        self.clock.start()
    }

    fn waiter_finished(&self, flight: &FlightInfo<'_>, started: u64, wait: Wait) {
        self.live.stats.waiter_finished(flight, 0, wait);
        if matches!(wait, Wait::Promoted) {
            return;
        }
        let a = &self.attributes;
        let error = ErrorType::of_wait(wait);
        let attributes: &[KeyValue] = match error {
            None => &a.group,
            Some(error) => &a.failed[error.index()],
        };
        if let Some(elapsed) = self.clock.elapsed(started) {
            self.wait_duration.record(elapsed.as_secs_f64(), attributes);
        }
        let counter = error.map_or(0, |error| 1 + error.index());
        self.live.waiters[counter].fetch_add(1, Relaxed);
    }

    fn takeover(&self, flight: &FlightInfo<'_>) {
        self.live.stats.takeover(flight);
    }

    fn timeout(&self) {
        self.live.stats.timeout();
    }

    fn reused(&self, group: Option<&str>, key: &dyn ObservedKey) {
        self.live.stats.reused(group, key);
    }

    fn refresh_started(&self, flight: &FlightInfo<'_>) {
        self.live.stats.refresh_started(flight);
    }

    fn refresh_failed(&self, flight: &FlightInfo<'_>) {
        self.live.stats.refresh_failed(flight);
    }
}
