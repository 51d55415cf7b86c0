//! The `tracing` exporter: a span around each execution and an event per coalesced caller.

use alloc::sync::Arc;
use core::fmt;

use singleflight_core::{Execution, Observer};
use tracing::Span;

use crate::tokens::Tokens;

/// The name of the span around each execution.
pub const EXECUTION_SPAN: &str = "singleflight.execution";

/// An observer that reports through [`tracing`]:
///
/// * a `DEBUG` span named [`EXECUTION_SPAN`] (`"singleflight.execution"`, field `group`)
///   from the start to the end of each execution of the work — the leader's, or a promoted
///   waiter's — closed with a `DEBUG` event inside it carrying the `outcome`
///   (`Completed`, `Failed`, `Panicked`, `Dropped`);
/// * a `TRACE` event for each coalesced caller when it leaves the flight it joined;
/// * `DEBUG` events for a takeover and for a caller's timeout.
///
/// The span is created, not entered: an async execution is polled in between other tasks'
/// work, so it is a record of the execution's lifetime rather than a context for events
/// the work emits. Subscribers that time spans (span close events) report how long each
/// execution took. When the span is disabled (no subscriber wants `DEBUG` from this crate),
/// nothing is stored; otherwise an enabled span costs one short lock at its start and end.
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
}

impl TracingObserver {
    /// Creates an observer whose spans and events carry `group = <group>`.
    pub fn new(group: impl Into<Arc<str>>) -> Self {
        Self {
            group: group.into(),
            spans: Tokens::new(),
        }
    }

    /// The group name spans and events carry.
    pub fn group(&self) -> &str {
        &self.group
    }
}

impl fmt::Debug for TracingObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracingObserver")
            .field("group", &self.group)
            .field("executions", &self.spans.len())
            .finish()
    }
}

impl Observer for TracingObserver {
    fn execution_started(&self) -> u64 {
        let span = tracing::debug_span!("singleflight.execution", group = &*self.group);
        if span.is_disabled() {
            0
        } else {
            self.spans.insert(span)
        }
    }

    fn execution_finished(&self, started: u64, execution: Execution) {
        if let Some(span) = self.spans.remove(started) {
            tracing::debug!(parent: &span, group = &*self.group, outcome = ?execution, "execution finished");
        }
    }

    fn joined(&self) {
        tracing::trace!(group = &*self.group, "coalesced caller left its flight");
    }

    fn takeover(&self) {
        tracing::debug!(
            group = &*self.group,
            "waiter took over after the leader was dropped"
        );
    }

    fn timeout(&self) {
        tracing::debug!(group = &*self.group, "caller timed out");
    }
}
