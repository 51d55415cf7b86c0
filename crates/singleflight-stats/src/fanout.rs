//! One observer that forwards to several.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::fmt;

use singleflight_core::{Execution, FlightInfo, ObservedKey, Observer, Wait};

use crate::tokens::Tokens;

/// Forwards every hook to several observers, so one group can feed [`Stats`](crate::Stats)
/// and the exporters at once (a group takes one observer).
///
/// Each child gets back the token it returned from `execution_started` (and
/// `waiter_started`). When every child
/// returns `0` (none keeps per-execution state) nothing is stored; otherwise the children's
/// tokens are kept in a small table for the length of the execution, which costs one
/// allocation and two short lock acquisitions per execution. For a group's own [`Stats`](crate::Stats)
/// plus a shared one, [`Stats::with_parent`](crate::Stats::with_parent) is cheaper.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use singleflight_stats::{Fanout, Stats};
///
/// let (a, b) = (Arc::new(Stats::new()), Arc::new(Stats::new()));
/// let both = Arc::new(Fanout::new([a.clone() as _, b.clone() as _]));
/// let group = singleflight_blocking::Group::<u8, u8>::new().with_observer(both);
/// group.call(&1, || 1).unwrap();
/// assert_eq!((a.snapshot().misses, b.snapshot().misses), (1, 1));
/// ```
pub struct Fanout {
    observers: Box<[Arc<dyn Observer>]>,
    tokens: Tokens<Box<[u64]>>,
}

impl Fanout {
    /// Creates a fan-out to `observers`, called in order.
    pub fn new(observers: impl IntoIterator<Item = Arc<dyn Observer>>) -> Self {
        Self {
            observers: observers.into_iter().collect(),
            tokens: Tokens::new(),
        }
    }

    /// The observers this forwards to.
    pub fn observers(&self) -> &[Arc<dyn Observer>] {
        &self.observers
    }
}

impl Fanout {
    /// Starts an execution on every child, keeping their tokens if any needs one.
    fn start(&self, start: impl Fn(&dyn Observer) -> u64) -> u64 {
        let tokens: Box<[u64]> = self.observers.iter().map(|o| start(&**o)).collect();
        if tokens.iter().all(|&token| token == 0) {
            0
        } else {
            self.tokens.insert(tokens)
        }
    }

    /// Ends an execution on every child, handing each the token it returned.
    fn finish(&self, started: u64, finish: impl Fn(&dyn Observer, u64)) {
        let tokens = self.tokens.remove(started);
        for (i, observer) in self.observers.iter().enumerate() {
            finish(&**observer, tokens.as_ref().map_or(0, |tokens| tokens[i]));
        }
    }
}

impl fmt::Debug for Fanout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fanout")
            .field("observers", &self.observers.len())
            .field("executions", &self.tokens.len())
            .finish()
    }
}

impl Observer for Fanout {
    fn flight_started(&self, flight: &FlightInfo<'_>) {
        self.observers.iter().for_each(|o| o.flight_started(flight));
    }

    fn flight_finished(&self, flight: &FlightInfo<'_>) {
        self.observers
            .iter()
            .for_each(|o| o.flight_finished(flight));
    }

    fn execution_started(&self, flight: &FlightInfo<'_>) -> u64 {
        self.start(|o| o.execution_started(flight))
    }

    fn execution_finished(&self, flight: &FlightInfo<'_>, started: u64, execution: Execution) {
        self.finish(started, |o, token| {
            o.execution_finished(flight, token, execution);
        });
    }

    fn leader_started(&self, flight: &FlightInfo<'_>) -> u64 {
        self.start(|o| o.leader_started(flight))
    }

    fn leader_finished(&self, flight: &FlightInfo<'_>, started: u64, execution: Execution) {
        self.finish(started, |o, token| {
            o.leader_finished(flight, token, execution);
        });
    }

    fn waiter_started(&self, flight: &FlightInfo<'_>) -> u64 {
        self.start(|o| o.waiter_started(flight))
    }

    fn waiter_finished(&self, flight: &FlightInfo<'_>, started: u64, wait: Wait) {
        self.finish(started, |o, token| o.waiter_finished(flight, token, wait));
    }

    fn takeover(&self, flight: &FlightInfo<'_>) {
        self.observers.iter().for_each(|o| o.takeover(flight));
    }

    fn timeout(&self) {
        self.observers.iter().for_each(|o| o.timeout());
    }

    fn reused(&self, group: Option<&str>, key: &dyn ObservedKey) {
        self.observers.iter().for_each(|o| o.reused(group, key));
    }

    fn refresh_started(&self, flight: &FlightInfo<'_>) {
        self.observers
            .iter()
            .for_each(|o| o.refresh_started(flight));
    }

    fn refresh_failed(&self, flight: &FlightInfo<'_>) {
        self.observers.iter().for_each(|o| o.refresh_failed(flight));
    }
}
