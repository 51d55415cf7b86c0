//! A copy of the counters at one moment.

#[cfg(feature = "std")]
use std::time::Duration;

/// The counters of a [`Stats`](crate::Stats) as [`snapshot`](crate::Stats::snapshot) read
/// them: a plain copy that never changes afterwards.
///
/// Fields are public to read; the struct is `#[non_exhaustive]`, so new counters can be added
/// without breaking code that reads these.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use singleflight_stats::Stats;
///
/// let stats = Arc::new(Stats::new());
/// let group = singleflight_blocking::Group::<u32, u32>::new().with_observer(stats.clone());
/// group.call(&1, || 10).unwrap();
/// let before = stats.snapshot();
/// group.call(&2, || 20).unwrap();
/// assert_eq!(before.misses, 1); // a copy: later calls don't touch it
/// assert_eq!(stats.snapshot().misses, 2);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Snapshot {
    /// Calls that joined another caller's flight instead of running the work (they received
    /// its outcome, or gave up waiting).
    pub hits: u64,
    /// Calls that ran the work: leaders of new flights, including after a `forget`, and
    /// waiters promoted after their leader was dropped.
    pub misses: u64,
    /// Executions whose work returned an error (fallible calls): one per failed flight, not
    /// one per caller that received the error.
    pub errors: u64,
    /// Executions whose work panicked.
    pub panics: u64,
    /// Executions cancelled because their leader was dropped before finishing (async callers;
    /// a leader's own timeout included).
    pub leader_drops: u64,
    /// Waiters promoted to run the work after their leader was dropped.
    pub takeovers: u64,
    /// Callers whose timeout elapsed.
    pub timeouts: u64,
    /// Calls served by a reuse window (`reuse_for`) with a value a finished flight
    /// published: neither hits nor misses.
    pub reused: u64,
    /// Refreshes started (`refresh_after`). Each is an execution of the work, and so also
    /// counted in `misses`, though no call ran it.
    pub refreshes: u64,
    /// Refreshes that ended without a value to keep (the old value was served on).
    pub refresh_failures: u64,
    /// Flights in progress when the snapshot was taken. A gauge of live state: `reset` does
    /// not touch it.
    pub active: u64,
    /// Total time spent running the work, summed over executions (one per leader, not per
    /// caller), counting executions that finished in any way. Zero unless the `Stats` is
    /// [`timed`](crate::Stats::timed).
    #[cfg(feature = "std")]
    pub work_time: Duration,
    /// The longest single execution since the last reset (zero unless timed).
    #[cfg(feature = "std")]
    pub max_work_time: Duration,
}

impl Snapshot {
    /// Calls counted: `hits + misses + reused - refreshes` (a refresh is an execution no
    /// call ran). Once every call has returned, this is the number of calls made (since the
    /// last reset).
    pub fn calls(&self) -> u64 {
        self.hits
            .saturating_add(self.misses)
            .saturating_add(self.reused)
            .saturating_sub(self.refreshes)
    }

    /// The share of the calls that met a flight which joined it: `hits / (hits + misses)`,
    /// `0.0` before any call. Calls served by a reuse window are in neither term (they met
    /// no flight): their share of all calls is `reused / calls()`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(singleflight_stats::Snapshot::default().hit_rate(), 0.0);
    /// ```
    pub fn hit_rate(&self) -> f64 {
        hit_rate(self.hits, self.misses)
    }
}

#[allow(
    clippy::cast_precision_loss,
    reason = "a rate: counts beyond 2^53 lose digits no reader needs"
)]
pub(crate) fn hit_rate(hits: u64, misses: u64) -> f64 {
    let calls = hits.saturating_add(misses);
    if calls == 0 {
        0.0
    } else {
        hits as f64 / calls as f64
    }
}
