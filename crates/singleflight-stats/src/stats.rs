//! The counters: relaxed atomics, updated on the caller's thread.

use alloc::sync::Arc;
use core::fmt;
use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use singleflight_core::{Execution, FlightInfo, ObservedKey, Observer, Wait};

#[cfg(feature = "std")]
use crate::clock::{Clock, nanos};
#[cfg(feature = "std")]
use crate::hot_keys::{HotKey, HotKeys, Ranking};
use crate::snapshot::Snapshot;
use crate::striped::{Hot, Striped};

/// Lock-free statistics of one or more groups: attach it with `with_observer`, read it with
/// [`snapshot`](Self::snapshot).
///
/// Every update is made on the caller's thread: the counters every call touches (hits,
/// misses, flights finished, reuses) are striped by thread, each thread counting into a
/// cache line of its own with a plain store, and the rarer ones are relaxed atomic adds;
/// nothing locks and nothing allocates per call (see the crate docs' *Cost*). See
/// [`Snapshot`] for what each counter means.
///
/// # Many groups, and one group's own numbers
///
/// One `Stats` may be attached to any number of groups: it then sums them. To also read
/// each group on its own, give each group its own `Stats` made with
/// [`with_parent`](Self::with_parent): it counts every event into itself *and* into the
/// shared parent, timing each execution once. (A group's observer is a `dyn Observer`, so
/// keep the `Arc<Stats>` you attached to read it back.)
///
/// ```
/// use std::sync::Arc;
/// use singleflight_blocking::Group;
/// use singleflight_stats::Stats;
///
/// let all = Arc::new(Stats::new());
/// let users_stats = Arc::new(Stats::with_parent(all.clone()));
/// let posts_stats = Arc::new(Stats::with_parent(all.clone()));
/// let users = Group::<u32, String>::new().with_observer(users_stats.clone());
/// let posts = Group::<u32, String>::new().with_observer(posts_stats.clone());
///
/// users.call(&1, || "ada".to_string()).unwrap();
/// posts.call(&1, || "hello".to_string()).unwrap();
/// posts.call(&2, || "again".to_string()).unwrap();
/// assert_eq!(users_stats.snapshot().misses, 1);
/// assert_eq!(posts_stats.snapshot().misses, 2);
/// assert_eq!(all.snapshot().misses, 3);
/// ```
///
/// # Consistency
///
/// Counters are updated one by one, so a snapshot taken while calls run may show a call's
/// hit or miss but not yet its error, for instance. Once the calls have returned,
/// `hits + misses` is exactly the number of calls (since the last [`reset`](Self::reset)).
/// A call rejected with `Error::Reentrant` never joined a flight and is not counted.
pub struct Stats {
    counters: Counters,
    parent: Option<Arc<Stats>>,
    #[cfg(feature = "std")]
    clock: Option<Clock>,
    /// The keys of the calls seen, if kept ([`Stats::with_hot_keys`]).
    #[cfg(feature = "std")]
    hot_keys: Option<Arc<HotKeys>>,
}

/// Running totals, never decreased: [`Stats::reset`] moves `baseline` up to them instead,
/// which is what lets `active` be derived from them and stay exact across a reset.
#[derive(Default)]
struct Counters {
    /// The totals every call updates (hits, misses, flights finished, reuses), striped by
    /// thread: see [`Striped`].
    hot: Striped,
    total: Totals,
    /// Each total of [`Counters::totals`] at the last reset.
    baseline: [AtomicU64; RESETTABLE],
    /// The longest execution since the last reset (reset stores `0`).
    #[cfg(feature = "std")]
    max_work_nanos: AtomicU64,
}

/// The totals of rarer events, one atomic each.
#[derive(Default)]
struct Totals {
    errors: AtomicU64,
    panics: AtomicU64,
    leader_drops: AtomicU64,
    takeovers: AtomicU64,
    timeouts: AtomicU64,
    refreshes: AtomicU64,
    refresh_failures: AtomicU64,
    #[cfg(feature = "std")]
    work_nanos: AtomicU64,
}

const RESETTABLE: usize = if cfg!(feature = "std") { 11 } else { 10 };

impl Counters {
    /// Every resettable total, in a fixed order (flights finished is not one of them).
    fn totals(&self) -> [u64; RESETTABLE] {
        let (hot, t) = (&self.hot, &self.total);
        [
            hot.sum(Hot::Hits, Relaxed),
            hot.sum(Hot::Misses, Relaxed),
            t.errors.load(Relaxed),
            t.panics.load(Relaxed),
            t.leader_drops.load(Relaxed),
            t.takeovers.load(Relaxed),
            t.timeouts.load(Relaxed),
            hot.sum(Hot::Reused, Relaxed),
            t.refreshes.load(Relaxed),
            t.refresh_failures.load(Relaxed),
            #[cfg(feature = "std")]
            t.work_nanos.load(Relaxed),
        ]
    }

    #[cfg(feature = "std")]
    #[inline]
    fn record_work(&self, nanos: u64) {
        self.total.work_nanos.fetch_add(nanos, Relaxed);
        // Most executions are not the longest: a load spares them the read-modify-write.
        if nanos > self.max_work_nanos.load(Relaxed) {
            self.max_work_nanos.fetch_max(nanos, Relaxed);
        }
    }

    /// Flights in progress. Every flight starts with exactly one execution that is not a
    /// takeover (the core calls `flight_started` and `execution_started` together), so
    /// flights started = misses - takeovers, all counted since creation: no hook has to
    /// count flight starts, and no reset can disturb the difference.
    fn active(&self) -> u64 {
        // Read the finishes first, with `Acquire` (paired with the `Release` that counts
        // them): the misses of every flight seen finished are then visible too, so a flight
        // that ended never makes the gauge dip below the flights still running. A takeover
        // caught between its two hooks may still skew it by one while calls run; the
        // result is clamped at zero all the same.
        let finished = self.hot.sum(Hot::Finished, Acquire);
        let takeovers = self.total.takeovers.load(Relaxed);
        let misses = self.hot.sum(Hot::Misses, Relaxed);
        misses.saturating_sub(takeovers).saturating_sub(finished)
    }
}

impl Stats {
    /// Creates statistics with every counter at zero. Work time is not measured (see
    /// [`timed`](Self::timed)).
    ///
    /// # Examples
    ///
    /// ```
    /// let stats = singleflight_stats::Stats::new();
    /// assert_eq!(stats.hit_rate(), 0.0);
    /// assert_eq!(stats.snapshot().calls(), 0);
    /// ```
    pub fn new() -> Self {
        Self {
            counters: Counters::default(),
            parent: None,
            #[cfg(feature = "std")]
            clock: None,
            #[cfg(feature = "std")]
            hot_keys: None,
        }
    }

    /// Also measures work time: [`Snapshot::work_time`] and [`Snapshot::max_work_time`].
    ///
    /// This reads the monotonic clock when each execution starts and ends, which costs more
    /// than all the counters together (some 20-30 ns a read on a typical virtual machine,
    /// against a few ns for the counters), so it is a choice. Calls that join a flight are
    /// never timed; only executions of the work are. With a parent, the execution is timed
    /// once and the duration is added to every ancestor as well.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use singleflight_stats::Stats;
    ///
    /// let stats = Arc::new(Stats::new().timed());
    /// let group = singleflight_blocking::Group::<u8, u8>::new().with_observer(stats.clone());
    /// group.call(&1, || { std::thread::sleep(Duration::from_millis(2)); 1 }).unwrap();
    /// assert!(stats.snapshot().work_time >= Duration::from_millis(2));
    /// ```
    #[cfg(feature = "std")]
    #[must_use]
    pub fn timed(self) -> Self {
        Self {
            clock: Some(Clock::new()),
            ..self
        }
    }

    /// Also records the keys of the calls it sees in `hot_keys`: the key of each call that
    /// joins a flight, and of each flight's first execution (a takeover's execution is
    /// not recorded: its hook offers no key). Read them with [`hot_keys`](Self::hot_keys)
    /// or from the shared [`HotKeys`]; one record may serve several `Stats`. Each key is
    /// held hashed unless its group formats keys (see [`HotKeys`]); nothing exports it.
    ///
    /// This costs a hash of the key and a short lock per call seen; see the crate docs'
    /// *Cost*. A parent does not record the keys its children see, unless given the same
    /// record.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use singleflight_stats::{HotKeys, Stats};
    ///
    /// let stats = Arc::new(Stats::new().with_hot_keys(Arc::new(HotKeys::new(100))));
    /// let group = singleflight_blocking::Group::<String, u32>::new()
    ///     .with_name("users")
    ///     .with_key_format(|key, f| f.write_str(key))
    ///     .with_observer(stats.clone());
    /// for key in ["ada", "bob", "ada"] {
    ///     group.call(key, || 1).unwrap();
    /// }
    /// // One after another, the calls never meet: each runs the work.
    /// let top = stats.hot_keys(1);
    /// assert_eq!(top.executions[0].key, b"users/ada");
    /// assert_eq!(top.executions[0].count, 2);
    /// assert!(top.joins.is_empty());
    /// ```
    #[cfg(feature = "std")]
    #[must_use]
    pub fn with_hot_keys(self, hot_keys: Arc<HotKeys>) -> Self {
        Self {
            hot_keys: Some(hot_keys),
            ..self
        }
    }

    /// The `k` hottest keys by joins and by executions, as recorded with
    /// [`with_hot_keys`](Self::with_hot_keys) (none without).
    #[cfg(feature = "std")]
    pub fn hot_keys(&self, k: usize) -> TopKeys {
        match &self.hot_keys {
            Some(hot) => TopKeys {
                joins: hot.top_joins(k),
                executions: hot.top_executions(k),
            },
            None => TopKeys::default(),
        }
    }

    /// The record of hot keys, if this keeps one ([`with_hot_keys`](Self::with_hot_keys)).
    #[cfg(feature = "std")]
    pub fn hot_key_record(&self) -> Option<&Arc<HotKeys>> {
        self.hot_keys.as_ref()
    }

    /// Whether this measures work time (see [`timed`](Self::timed)).
    #[inline]
    pub fn is_timed(&self) -> bool {
        #[cfg(feature = "std")]
        {
            self.clock.is_some()
        }
        #[cfg(not(feature = "std"))]
        {
            false
        }
    }

    /// Creates statistics that also count everything they see into `parent` (and into its
    /// own parent, if it has one): a group's own numbers plus a shared total. Resetting
    /// either one leaves the other alone. Chain [`timed`](Self::timed) to measure work time
    /// here; the parent then receives the durations too.
    pub fn with_parent(parent: Arc<Stats>) -> Self {
        Self {
            parent: Some(parent),
            ..Self::new()
        }
    }

    /// The statistics this one also counts into, if any.
    pub fn parent(&self) -> Option<&Arc<Stats>> {
        self.parent.as_ref()
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> Snapshot {
        self.read(self.since_reset())
    }

    /// The counters since this was created, as if it had never been reset: each only
    /// grows, as the cumulative counters of an exporter must.
    #[cfg(feature = "otel")]
    pub(crate) fn lifetime(&self) -> Snapshot {
        self.read(self.counters.totals())
    }

    /// A snapshot of `counters` (in the order of `Counters::totals`).
    fn read(&self, counters: [u64; RESETTABLE]) -> Snapshot {
        let c = &self.counters;
        let active = c.active();
        let mut since = counters.into_iter();
        let mut next = || since.next().unwrap_or(0);
        // In the order of `Counters::totals`.
        Snapshot {
            hits: next(),
            misses: next(),
            errors: next(),
            panics: next(),
            leader_drops: next(),
            takeovers: next(),
            timeouts: next(),
            reused: next(),
            refreshes: next(),
            refresh_failures: next(),
            active,
            #[cfg(feature = "std")]
            work_time: std::time::Duration::from_nanos(next()),
            #[cfg(feature = "std")]
            max_work_time: std::time::Duration::from_nanos(c.max_work_nanos.load(Relaxed)),
        }
    }

    fn since_reset(&self) -> [u64; RESETTABLE] {
        // The baseline first: a reset in between then makes the difference larger, not
        // negative (and it is clamped at zero regardless).
        let baseline: [u64; RESETTABLE] =
            core::array::from_fn(|i| self.counters.baseline[i].load(Relaxed));
        let total = self.counters.totals();
        core::array::from_fn(|i| total[i].saturating_sub(baseline[i]))
    }

    /// `hits / (hits + misses)`, `0.0` before any call: the share of calls that *ran into a
    /// flight* and joined it. Calls served by a reuse window (`reused`) are counted in
    /// neither term; see [`Snapshot::hit_rate`].
    pub fn hit_rate(&self) -> f64 {
        self.snapshot().hit_rate()
    }

    /// The number of flights in progress in the observed groups.
    pub fn active(&self) -> u64 {
        self.counters.active()
    }

    /// Sets every counter back to zero, except [`active`](Self::active), which reflects the
    /// flights in progress and so cannot be reset (nor driven below zero by flights that
    /// end after the reset).
    ///
    /// Counters are cleared one by one: an event that races with the reset may land on
    /// either side of it, and an execution that started before the reset is counted in the
    /// error, panic and work-time totals after it. The parent, if any, is not reset.
    pub fn reset(&self) {
        let total = self.counters.totals();
        for (total, baseline) in total.into_iter().zip(&self.counters.baseline) {
            baseline.store(total, Relaxed);
        }
        #[cfg(feature = "std")]
        self.counters.max_work_nanos.store(0, Relaxed);
    }

    /// [`Observer::leader_started`] with hot keys or work time, kept out of line so that
    /// the common case stays a leaf.
    #[cfg(feature = "std")]
    #[inline(never)]
    fn leader_started_with_extras(&self, flight: &FlightInfo<'_>) -> u64 {
        if let Some(hot) = &self.hot_keys {
            if hot.sampled_now() {
                record_key(hot, flight, Ranking::Executions);
            }
        }
        // `flight_started` counts nothing here.
        self.execution_started(flight)
    }

    /// [`Observer::leader_finished`] for a timed or unsuccessful execution, kept out of line
    /// so that the common case stays a leaf.
    #[cold]
    #[inline(never)]
    fn leader_finished_slowly(&self, flight: &FlightInfo<'_>, started: u64, execution: Execution) {
        self.execution_finished(flight, started, execution);
        self.flight_finished(flight);
    }

    /// Whether this records hot keys, for `Debug`.
    fn records_hot_keys(&self) -> bool {
        #[cfg(feature = "std")]
        {
            self.hot_keys.is_some()
        }
        #[cfg(not(feature = "std"))]
        {
            false
        }
    }

    /// Applies `update` to these counters and to every ancestor's.
    #[inline]
    fn each(&self, update: impl Fn(&Counters)) {
        update(&self.counters);
        if let Some(parent) = &self.parent {
            parent.each_out_of_line(update);
        }
    }

    /// [`each`](Self::each) for the ancestors, kept out of line so that the common case,
    /// no parent, stays a leaf.
    #[inline(never)]
    fn each_out_of_line(&self, update: impl Fn(&Counters)) {
        let mut stats = self;
        loop {
            update(&stats.counters);
            match &stats.parent {
                Some(parent) => stats = parent,
                None => return,
            }
        }
    }
}

/// The hottest keys a [`Stats`] recorded ([`Stats::hot_keys`]), hottest first.
#[cfg(feature = "std")]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopKeys {
    /// The keys whose calls joined flights most: the ones that stampede, where coalescing
    /// saves the most work.
    pub joins: alloc::vec::Vec<HotKey>,
    /// The keys whose work ran most: the ones that cost the backend most.
    pub executions: alloc::vec::Vec<HotKey>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stats")
            .field("snapshot", &self.snapshot())
            .field("has_parent", &self.parent.is_some())
            .field("hot_keys", &self.records_hot_keys())
            .finish()
    }
}

/// Records the key `flight` offers, if any (an event already sampled).
#[cfg(feature = "std")]
#[inline]
fn record_key(hot: &HotKeys, flight: &FlightInfo<'_>, ranking: Ranking) {
    if let Some(key) = flight.key() {
        hot.record_sampled(flight.group(), key, ranking);
    }
}

impl Observer for Stats {
    // `flight_started` is not counted: see `Counters::active`.

    #[inline]
    fn flight_finished(&self, _: &FlightInfo<'_>) {
        self.each(|c| c.hot.add(Hot::Finished, Release));
    }

    #[inline]
    fn execution_started(&self, _: &FlightInfo<'_>) -> u64 {
        self.each(|c| c.hot.add(Hot::Misses, Relaxed));
        #[cfg(feature = "std")]
        if let Some(clock) = &self.clock {
            return clock.start();
        }
        0
    }

    #[inline]
    fn execution_finished(&self, _: &FlightInfo<'_>, started: u64, execution: Execution) {
        if execution == Execution::Completed && !self.is_timed() {
            // The common case, a completed untimed execution, touches nothing: leave before
            // any of the work below.
            return;
        }
        #[cfg(feature = "std")]
        let work = self
            .clock
            .as_ref()
            .and_then(|clock| clock.elapsed(started))
            .map(nanos);
        #[cfg(not(feature = "std"))]
        let _ = started;
        let failure: fn(&Totals) -> &AtomicU64 = match execution {
            Execution::Failed => |t| &t.errors,
            Execution::Panicked => |t| &t.panics,
            Execution::Dropped => |t| &t.leader_drops,
            _ => {
                #[cfg(feature = "std")]
                if let Some(work) = work {
                    self.each(|c| c.record_work(work));
                }
                return;
            }
        };
        self.each(|c| {
            failure(&c.total).fetch_add(1, Relaxed);
            #[cfg(feature = "std")]
            if let Some(work) = work {
                c.record_work(work);
            }
        });
    }

    #[inline]
    fn leader_started(&self, flight: &FlightInfo<'_>) -> u64 {
        #[cfg(feature = "std")]
        if self.hot_keys.is_some() || self.clock.is_some() {
            return self.leader_started_with_extras(flight);
        }
        // The common case, counters only: one add per level, and no call out of here.
        // `flight_started` counts nothing.
        let _ = flight;
        self.each(|c| c.hot.add(Hot::Misses, Relaxed));
        0
    }

    #[inline]
    fn waiter_started(&self, flight: &FlightInfo<'_>) -> u64 {
        #[cfg(feature = "std")]
        if let Some(hot) = &self.hot_keys {
            if hot.sampled_now() {
                record_key(hot, flight, Ranking::Joins);
            }
        }
        let _ = flight;
        0
    }

    #[inline]
    fn leader_finished(&self, flight: &FlightInfo<'_>, started: u64, execution: Execution) {
        if execution == Execution::Completed && !self.is_timed() {
            // The common case: one pass, one add per level.
            self.each(|c| c.hot.add(Hot::Finished, Release));
        } else {
            self.leader_finished_slowly(flight, started, execution);
        }
    }

    #[inline]
    fn waiter_finished(&self, _: &FlightInfo<'_>, _started: u64, wait: Wait) {
        if wait == Wait::Promoted {
            return;
        }
        self.each(|c| c.hot.add(Hot::Hits, Relaxed));
    }

    #[inline]
    fn takeover(&self, _: &FlightInfo<'_>) {
        self.each(|c| {
            c.total.takeovers.fetch_add(1, Relaxed);
        });
    }

    #[inline]
    fn timeout(&self) {
        self.each(|c| {
            c.total.timeouts.fetch_add(1, Relaxed);
        });
    }

    #[inline]
    fn reused(&self, _: Option<&str>, _: &dyn ObservedKey) {
        self.each(|c| c.hot.add(Hot::Reused, Relaxed));
    }

    fn refresh_started(&self, _: &FlightInfo<'_>) {
        self.each(|c| {
            c.total.refreshes.fetch_add(1, Relaxed);
        });
    }

    fn refresh_failed(&self, _: &FlightInfo<'_>) {
        self.each(|c| {
            c.total.refresh_failures.fetch_add(1, Relaxed);
        });
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    //! Counts from many threads at once, more than a `Stats` has stripes, through a chain
    //! of parents: every call is counted exactly once at every level, and the flights in
    //! progress come back to zero.

    use std::sync::Barrier;
    use std::thread;

    use singleflight_blocking::Group;

    use super::*;

    #[test]
    fn calls_from_more_threads_than_stripes_are_counted_once_at_every_level() {
        // Twice the available parallelism, at most 64, is the most stripes a `Stats` has.
        let threads = thread::available_parallelism()
            .map_or(4, |n| n.get() * 2)
            .clamp(4, 64)
            * 2
            + 3;
        const CALLS: u64 = 2_000;
        let root = Arc::new(Stats::new());
        let parent = Arc::new(Stats::with_parent(root.clone()));
        let child = Arc::new(Stats::with_parent(parent.clone()));
        let group = Group::<u64, u64>::new().with_observer(child.clone());
        // All threads alive at once, so that some have no stripe of their own.
        let barrier = Barrier::new(threads);
        thread::scope(|s| {
            for thread in 0..threads as u64 {
                let (group, barrier) = (&group, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    for i in 0..CALLS {
                        // Keys of this thread only: every call runs its work.
                        let key = thread * CALLS + i;
                        assert_eq!(group.call(&key, || key), Ok(key));
                    }
                });
            }
        });
        for stats in [&child, &parent, &root] {
            let snapshot = stats.snapshot();
            assert_eq!(snapshot.misses, threads as u64 * CALLS, "{snapshot:?}");
            assert_eq!(snapshot.hits, 0);
            assert_eq!(snapshot.active, 0);
        }
        child.reset();
        assert_eq!(child.snapshot().calls(), 0);
        assert_eq!(root.snapshot().calls(), threads as u64 * CALLS);
    }
}
