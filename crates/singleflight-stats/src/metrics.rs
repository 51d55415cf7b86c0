//! The `metrics` exporter: the same events as [`Stats`](crate::Stats), sent to whatever
//! recorder the application installed (Prometheus, StatsD, ...).

use core::fmt;

use metrics::{Counter, Gauge, Histogram, SharedString, Unit};
use singleflight_core::{Execution, FlightInfo, ObservedKey, Observer, Wait};

use crate::clock::Clock;

/// The metric names, each labelled `group="<name>"`.
pub mod names {
    /// Counter: calls that joined another caller's flight.
    pub const HITS: &str = "singleflight_hits_total";
    /// Counter: calls that ran the work (leaders and promoted waiters).
    pub const MISSES: &str = "singleflight_misses_total";
    /// Counter: executions whose work returned an error.
    pub const ERRORS: &str = "singleflight_errors_total";
    /// Counter: executions whose work panicked.
    pub const PANICS: &str = "singleflight_panics_total";
    /// Counter: executions cancelled because their leader was dropped.
    pub const LEADER_DROPS: &str = "singleflight_leader_drops_total";
    /// Counter: waiters promoted after their leader was dropped.
    pub const TAKEOVERS: &str = "singleflight_takeovers_total";
    /// Counter: callers whose timeout elapsed.
    pub const TIMEOUTS: &str = "singleflight_timeouts_total";
    /// Counter: calls served a value kept by the reuse window (`reuse_for`): neither hits
    /// nor misses.
    pub const REUSED: &str = "singleflight_reused_total";
    /// Counter: refreshes started (`refresh_after`); each is also a miss, as its execution
    /// is one.
    pub const REFRESHES: &str = "singleflight_refreshes_total";
    /// Counter: refreshes that ended without a value to keep (the old one is served until
    /// its window ends).
    pub const REFRESH_FAILURES: &str = "singleflight_refresh_failures_total";
    /// Gauge: flights in progress.
    pub const ACTIVE: &str = "singleflight_active_flights";
    /// Histogram: how long each execution of the work took, in seconds (one sample per
    /// execution, not per caller).
    pub const EXECUTION_SECONDS: &str = "singleflight_execution_seconds";
    /// The label that carries the group's name.
    pub const GROUP_LABEL: &str = "group";
}

/// An observer that reports through the [`metrics`] facade: ten counters, a gauge of the
/// flights in progress and a histogram of execution times, all named `singleflight_*` (see
/// [`names`]) and labelled `group = <name>`.
///
/// The handles are registered once, with the recorder in effect when the observer is
/// created: create it after installing the recorder. Each hook is then one handle call. To
/// feed [`Stats`](crate::Stats) as well, combine both with a [`Fanout`](crate::Fanout).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use singleflight_stats::MetricsObserver;
///
/// // With no recorder installed, the handles are no-ops.
/// MetricsObserver::describe();
/// let users = singleflight_blocking::Group::<u32, String>::new()
///     .with_observer(Arc::new(MetricsObserver::new("users")));
/// users.call(&42, || "Ada".to_string()).unwrap();
/// ```
pub struct MetricsObserver {
    group: SharedString,
    hits: Counter,
    misses: Counter,
    errors: Counter,
    panics: Counter,
    leader_drops: Counter,
    takeovers: Counter,
    timeouts: Counter,
    reused: Counter,
    refreshes: Counter,
    refresh_failures: Counter,
    active: Gauge,
    execution_seconds: Histogram,
    clock: Clock,
}

impl MetricsObserver {
    /// Registers the metrics for a group called `group` with the current recorder.
    pub fn new(group: impl Into<SharedString>) -> Self {
        let group = group.into();
        let label = || [(names::GROUP_LABEL, group.clone())];
        Self {
            hits: metrics::counter!(names::HITS, &label()),
            misses: metrics::counter!(names::MISSES, &label()),
            errors: metrics::counter!(names::ERRORS, &label()),
            panics: metrics::counter!(names::PANICS, &label()),
            leader_drops: metrics::counter!(names::LEADER_DROPS, &label()),
            takeovers: metrics::counter!(names::TAKEOVERS, &label()),
            timeouts: metrics::counter!(names::TIMEOUTS, &label()),
            reused: metrics::counter!(names::REUSED, &label()),
            refreshes: metrics::counter!(names::REFRESHES, &label()),
            refresh_failures: metrics::counter!(names::REFRESH_FAILURES, &label()),
            active: metrics::gauge!(names::ACTIVE, &label()),
            execution_seconds: metrics::histogram!(names::EXECUTION_SECONDS, &label()),
            clock: Clock::new(),
            group,
        }
    }

    /// Describes every metric (unit and help text) to the current recorder, for exporters
    /// that print descriptions, such as Prometheus' `# HELP` lines. Call it once.
    pub fn describe() {
        use metrics::{describe_counter, describe_gauge, describe_histogram};
        describe_counter!(names::HITS, "Calls that joined another caller's flight");
        describe_counter!(names::MISSES, "Calls that ran the work");
        describe_counter!(names::ERRORS, "Executions whose work returned an error");
        describe_counter!(names::PANICS, "Executions whose work panicked");
        describe_counter!(
            names::LEADER_DROPS,
            "Executions cancelled because the leader was dropped"
        );
        describe_counter!(names::TAKEOVERS, "Waiters promoted to run the work");
        describe_counter!(names::TIMEOUTS, "Callers whose timeout elapsed");
        describe_counter!(
            names::REUSED,
            "Calls served a value kept by the reuse window"
        );
        describe_counter!(names::REFRESHES, "Refreshes of kept values started");
        describe_counter!(
            names::REFRESH_FAILURES,
            "Refreshes that ended without a value to keep"
        );
        describe_gauge!(names::ACTIVE, "Flights in progress");
        describe_histogram!(
            names::EXECUTION_SECONDS,
            Unit::Seconds,
            "Duration of each execution of the work"
        );
    }

    /// The group name these metrics are labelled with.
    pub fn group(&self) -> &str {
        &self.group
    }
}

impl fmt::Debug for MetricsObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsObserver")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl Observer for MetricsObserver {
    fn flight_started(&self, _: &FlightInfo<'_>) {
        self.active.increment(1.0);
    }

    fn flight_finished(&self, _: &FlightInfo<'_>) {
        self.active.decrement(1.0);
    }

    fn execution_started(&self, _: &FlightInfo<'_>) -> u64 {
        self.misses.increment(1);
        self.clock.start()
    }

    fn execution_finished(&self, _: &FlightInfo<'_>, started: u64, execution: Execution) {
        match execution {
            Execution::Failed => self.errors.increment(1),
            Execution::Panicked => self.panics.increment(1),
            Execution::Dropped => self.leader_drops.increment(1),
            _ => {}
        }
        if let Some(elapsed) = self.clock.elapsed(started) {
            self.execution_seconds.record(elapsed.as_secs_f64());
        }
    }

    fn waiter_finished(&self, _: &FlightInfo<'_>, _started: u64, wait: Wait) {
        if wait == Wait::Promoted {
            return;
        }
        self.hits.increment(1);
    }

    fn takeover(&self, _: &FlightInfo<'_>) {
        self.takeovers.increment(1);
    }

    fn timeout(&self) {
        self.timeouts.increment(1);
    }

    fn reused(&self, _: Option<&str>, _: &dyn ObservedKey) {
        self.reused.increment(1);
    }

    fn refresh_started(&self, _: &FlightInfo<'_>) {
        self.refreshes.increment(1);
    }

    fn refresh_failed(&self, _: &FlightInfo<'_>) {
        self.refresh_failures.increment(1);
    }
}
