//! Hooks for statistics, metrics and tracing.

/// Receives what happens inside a [`Group`](crate::Group).
///
/// Every method has an empty default, so an implementation overrides only what it counts.
/// A group without an observer skips these calls entirely: statistics cost nothing until
/// they are attached with [`Group::with_observer`](crate::Group::with_observer).
///
/// A flight's usual life is two calls: [`leader_started`](Self::leader_started) and
/// [`leader_finished`](Self::leader_finished), which by default call the finer hooks below
/// in pairs; joins, takeovers, timeouts and cancellations call the finer hooks directly.
///
/// Hooks are called outside the group's locks, on the caller's thread, and must not block.
/// Each is called once the group's state is consistent, so a hook that panics unwinds
/// through the call that ran it and breaks no flight: the waiters of a flight whose
/// [`leader_finished`](Self::leader_finished) panics already have its outcome, and a flight
/// whose [`leader_started`](Self::leader_started) panics is abandoned as if its leader had
/// been dropped. A hook called while its call is already unwinding from another panic (a
/// dropped guard's [`execution_finished`](Self::execution_finished), say) has its own panic
/// caught and discarded (with `std`), since a second panic would abort the process.
/// Each call is counted exactly once, when its role is settled: as a *hit*
/// ([`joined`](Self::joined)) if it shared another caller's execution, a *miss*
/// ([`execution_started`](Self::execution_started)) if it ran the work itself, or *reused*
/// ([`reused`](Self::reused)) if a reuse window served it, so `hits + misses + reused` is
/// the number of calls once they have returned (a refresh's execution is a miss of no
/// call: subtract [`refresh_started`](Self::refresh_started) for a group that refreshes).
pub trait Observer: Send + Sync {
    /// A new flight began (a caller found no flight for its key). Paired with exactly one
    /// [`flight_finished`](Self::flight_finished); the difference is the number of flights
    /// in progress.
    fn flight_started(&self) {}

    /// A flight ended: its outcome is published, or every caller left.
    fn flight_finished(&self) {}

    /// A caller started running the work (a miss): the first caller of a flight, or a waiter
    /// promoted after the leader went away. The returned token comes back to
    /// [`execution_finished`](Self::execution_finished), so an implementation can stamp the
    /// start time without the core knowing any clock.
    ///
    /// Every call comes right after either [`flight_started`](Self::flight_started) (a
    /// flight's first execution) or [`takeover`](Self::takeover) (any later one), so
    /// flights started = executions started - takeovers: an observer may count two of the
    /// three and derive the third (`singleflight-stats` derives flights in progress this
    /// way, to keep one atomic add off the uncontended path).
    fn execution_started(&self) -> u64 {
        0
    }

    /// An execution ended; `started` is the token [`execution_started`](Self::execution_started)
    /// returned for it.
    fn execution_finished(&self, started: u64, execution: Execution) {
        let _ = (started, execution);
    }

    /// A new flight began and its leader started running the work: the pair
    /// [`flight_started`](Self::flight_started), [`execution_started`](Self::execution_started)
    /// in one call, which the core makes instead of those two. The default calls them; an
    /// observer on a hot path may override it to do both in one pass.
    fn leader_started(&self) -> u64 {
        self.flight_started();
        self.execution_started()
    }

    /// A flight's execution ended, and the flight with it (its outcome is published): the
    /// pair [`execution_finished`](Self::execution_finished), [`flight_finished`](Self::flight_finished)
    /// in one call, which the core makes instead of those two. The default calls them; an
    /// observer on a hot path may override it to do both in one pass.
    fn leader_finished(&self, started: u64, execution: Execution) {
        self.execution_finished(started, execution);
        self.flight_finished();
    }

    /// A caller left a flight it joined without running the work (a hit): it received the
    /// outcome, or gave up waiting.
    fn joined(&self) {}

    /// A waiter was promoted to run the work after the leader was dropped.
    fn takeover(&self) {}

    /// A caller's timeout elapsed (a waiter that gave up, or a leader cancelled by its own
    /// timeout, which also ends its execution as [`Execution::Dropped`]).
    fn timeout(&self) {}

    /// A call was served from the reuse window (`reuse_for`): it neither ran the work nor
    /// joined a flight, so it is neither a hit nor a miss.
    fn reused(&self) {}

    /// A call past the refresh threshold (`refresh_after`) started a refresh of its key's
    /// value. The refresh is a flight of its own, whose execution is counted as usual.
    fn refresh_started(&self) {}

    /// A refresh ended without a value to store (its work failed, panicked or was
    /// dropped): the old value is served until its window ends.
    fn refresh_failed(&self) {}
}

/// How an execution of the work ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Execution {
    /// The work produced a value.
    Completed,
    /// The work returned an error (fallible calls).
    Failed,
    /// The work panicked.
    Panicked,
    /// The leader was dropped (cancelled) before the work finished.
    Dropped,
}
