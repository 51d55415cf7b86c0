//! A group bound to a runtime: the whole front-end surface, written once for every executor.

use alloc::borrow::ToOwned;
use alloc::sync::Arc;
use core::borrow::Borrow;
use core::fmt;
use core::future::Future;
use core::hash::{BuildHasher, Hash};
use core::time::Duration;

use super::{
    Clock, Detached, Request, Spawn, SpawnBlocking, SpawnBlockingWork, SpawnWork, Timeout, Timer,
    TryDetached,
};
use crate::error::{Error, ShareableError};
use crate::future::{Call, CallFuture, TryCall};
use crate::group::Group;
use crate::hash::DefaultHashBuilder;
use crate::observer::Observer;
use crate::types::LeaderDropPolicy;

/// A [`Group`] bound to a runtime's spawner `Sp` and timer `Tm`: the surface every async
/// front-end offers. Each runtime crate wraps it in its own `Group` type, with its
/// `<Runtime>Spawner` and `<Runtime>Timer` filled in and the same methods.
///
/// Cloning it is cheap and shares the group (the flights, the policy, the observer): hand
/// clones to the tasks that should coalesce with each other.
///
/// | call | the work runs | it may borrow | dropping the caller |
/// |---|---|---|---|
/// | [`call`](Self::call), [`try_call`](Self::try_call) | inside the leading caller's task | yes | cancels the work if it leads (takeover or fail-waiters, per policy) |
/// | [`call_detached`](Self::call_detached), [`try_call_detached`](Self::try_call_detached) | in a spawned task | no (`Send + 'static`) | only stops waiting: the work finishes |
/// | [`call_blocking`](Self::call_blocking), [`try_call_blocking`](Self::try_call_blocking) | on the runtime's blocking pool | no (`Send + 'static`) | only stops waiting: the work finishes |
///
/// Any of them can be bounded with [`timeout`](Self::timeout) (or the `*_timeout` shorthands),
/// and any of them tells its caller's role with [`CallFuture::with_role`].
///
/// [`request`](Self::request) is the one way to every kind of call (value, fallible or
/// `Arc`-error work; in the caller, detached or on the blocking pool; with or without a
/// timeout; with or without the role); the named methods are shorthands for the common ones,
/// implemented on it, so each behaviour is written once. A name for each of the thirty-six
/// combinations would be too many to learn, and the grid of names always had holes.
pub struct RuntimeGroup<K, T, Sp, Tm, S = DefaultHashBuilder> {
    group: Arc<Group<K, T, S>>,
    spawner: Sp,
    timer: Tm,
}

impl<K, T, Sp: Default, Tm: Default> RuntimeGroup<K, T, Sp, Tm> {
    /// Creates an empty group with the default hasher and the
    /// [`Takeover`](LeaderDropPolicy::Takeover) policy.
    pub fn new() -> Self {
        Self::from_core(Group::new())
    }
}

impl<K, T, Sp: Default, Tm: Default> Default for RuntimeGroup<K, T, Sp, Tm> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, T, S, Sp: Default, Tm: Default> RuntimeGroup<K, T, Sp, Tm, S> {
    /// Creates an empty group that hashes keys with `hasher`.
    pub fn with_hasher(hasher: S) -> Self {
        Self::from_core(Group::with_hasher(hasher))
    }

    /// Wraps a configured core group.
    pub fn from_core(group: Group<K, T, S>) -> Self {
        Self::with_runtime(group, Sp::default(), Tm::default())
    }
}

impl<K, T, S, Sp, Tm> RuntimeGroup<K, T, Sp, Tm, S> {
    /// Wraps a configured core group, with an explicit spawner and timer.
    pub fn with_runtime(group: Group<K, T, S>, spawner: Sp, timer: Tm) -> Self {
        Self {
            group: Arc::new(group),
            spawner,
            timer,
        }
    }

    fn configure(self, f: impl FnOnce(Group<K, T, S>) -> Group<K, T, S>) -> Self {
        let Ok(group) = Arc::try_unwrap(self.group) else {
            panic!("a group is configured before it is cloned or called");
        };
        Self {
            group: Arc::new(f(group)),
            ..self
        }
    }

    /// Sets what waiters do when their leader is dropped before finishing: the oldest
    /// takes over (the default), or all fail with [`Error::LeaderDropped`](crate::Error::LeaderDropped).
    ///
    /// # Panics
    ///
    /// If the group was cloned, or a call still holds it: configure it first.
    pub fn with_leader_drop_policy(self, policy: LeaderDropPolicy) -> Self {
        self.configure(|group| group.with_leader_drop_policy(policy))
    }

    /// Attaches an observer (statistics, metrics, tracing). One observer may watch many groups.
    ///
    /// # Panics
    ///
    /// If the group was cloned, or a call still holds it: configure it first.
    pub fn with_observer(self, observer: Arc<dyn Observer>) -> Self {
        self.configure(|group| group.with_observer(observer))
    }

    /// Names the group for its observer (see [`Group::with_name`]).
    ///
    /// # Panics
    ///
    /// If the group was cloned, or a call still holds it: configure it first.
    pub fn with_name(self, name: &str) -> Self {
        self.configure(|group| group.with_name(name))
    }

    /// Lets observers format keys, with `format` (see [`Group::with_key_format`]).
    ///
    /// # Panics
    ///
    /// If the group was cloned, or a call still holds it: configure it first.
    pub fn with_key_format(self, format: crate::KeyFormat<K>) -> Self {
        self.configure(|group| group.with_key_format(format))
    }

    /// Splits the map of flights into `shards` shards, each under its own lock
    /// ([`DEFAULT_SHARDS`](crate::DEFAULT_SHARDS) unless set): fewer save memory (128 bytes
    /// or more each), more keep tasks calling unrelated keys on different threads further
    /// apart. See [`Group::with_shards`].
    ///
    /// # Panics
    ///
    /// If `shards` is not a power of two between 1 and [`MAX_SHARDS`](crate::MAX_SHARDS), or
    /// if the group was cloned, or a call still holds it: configure it first.
    pub fn with_shards(self, shards: usize) -> Self {
        self.configure(|group| group.with_shards(shards))
    }

    /// Keeps each value a flight publishes for `window` on the runtime's clock (the
    /// timer's [`Clock`]): a call for its key within the window gets a clone without
    /// running the work, and its role is [`Role::Reused`](crate::Role::Reused) with the
    /// value's age. Errors are kept only under [`reuse_errors`](Self::reuse_errors);
    /// panics, cancellations, dropped leaders and timeouts never. See
    /// [`Group::reuse_for`].
    ///
    /// # Panics
    ///
    /// If the group was cloned, or a call still holds it: configure it first.
    pub fn reuse_for(self, window: Duration) -> Self
    where
        T: Clone,
        Tm: Clock + Clone + Send + Sync + 'static,
    {
        let clock = self.timer.clone();
        self.configure(|group| group.reuse_for(window, clock))
    }

    /// Keeps at most `max` reusable values (unbounded unless set): see
    /// [`Group::max_reusable`].
    ///
    /// # Panics
    ///
    /// If the group has no reuse window ([`reuse_for`](Self::reuse_for) first), or was
    /// cloned, or a call still holds it.
    pub fn max_reusable(self, max: usize) -> Self {
        self.configure(|group| group.max_reusable(max))
    }

    /// Stale-while-revalidate: a value older than `after` (within the reuse window) is
    /// still served at once, and the first detached or blocking-pool call that finds it so
    /// ([`call_detached`](Self::call_detached), [`call_blocking`](Self::call_blocking) and
    /// their `try_` forms) also launches its work as the key's refresh, spawned like
    /// detached work: no caller's cancellation reaches it. One refresh per key at a time;
    /// callers that find the value expired while it runs join it; a refresh that fails
    /// keeps the old value until the window ends. [`call`](Self::call), whose work may
    /// borrow from its caller, never starts a refresh: past the threshold it is served the
    /// kept value until the window ends, then leads a new flight (or joins a refresh in
    /// progress). See [`Group::refresh_after`].
    ///
    /// # Panics
    ///
    /// If the group has no reuse window ([`reuse_for`](Self::reuse_for) first), if `after`
    /// is not shorter than the window, or if the group was cloned, or a call still holds
    /// it.
    pub fn refresh_after(self, after: Duration) -> Self {
        self.configure(|group| group.refresh_after(after))
    }

    /// Drops every reusable value whose window is over (they also go a few at a time on
    /// every call, with no background task). Returns how many were dropped.
    pub fn purge_expired(&self) -> usize {
        self.group.purge_expired()
    }

    /// The number of reusable values held (expired ones not yet dropped included).
    pub fn reusable(&self) -> usize {
        self.group.reusable()
    }

    /// The policy applied when a leader is dropped.
    pub fn leader_drop_policy(&self) -> LeaderDropPolicy {
        self.group.leader_drop_policy()
    }

    /// The number of flights in progress, detached work included (`0` once every call has
    /// returned and every detached work has finished).
    pub fn in_flight(&self) -> usize {
        self.group.in_flight()
    }

    /// Detaches every flight from its key: running flights still deliver to their callers,
    /// new calls start new flights. Returns how many flights were detached.
    pub fn forget_all(&self) -> usize {
        self.group.forget_all()
    }

    /// The runtime-free group underneath (its introspection, its `enter` for a call loop of
    /// your own).
    ///
    /// Every front-end's `as_core` returns `&Group`, the blocking one's too: the group is
    /// what they have in common, while how a front-end holds it (in an `Arc` here) is its
    /// own business. To share the group, clone the front-end's group: the clone shares the
    /// flights.
    pub fn as_core(&self) -> &Group<K, T, S> {
        &self.group
    }

    /// The core group as the `Arc` detached work holds on to.
    pub(crate) fn shared(&self) -> &Arc<Group<K, T, S>> {
        &self.group
    }

    /// Starts a call with options: where its work runs ([`detached`](Request::detached),
    /// [`blocking`](Request::blocking)), a [`timeout`](Request::timeout), and whether it
    /// resolves to its caller's role too ([`with_role`](Request::with_role)); then
    /// [`call`](Request::call), [`try_call`](Request::try_call) or
    /// [`try_call_arc`](Request::try_call_arc) makes the future.
    ///
    /// Every combination is reached this one way, so none is missing; the named methods
    /// (`call`, `try_call_detached`, `call_timeout`, …) are shorthands for the common ones
    /// and make the same futures. See the [`request`](super::request) module.
    pub fn request<'a, Q>(&'a self, key: &'a Q) -> Request<'a, Self, Q>
    where
        Q: ?Sized,
    {
        Request::new(self, key)
    }

    /// The spawner detached work runs on.
    pub fn spawner(&self) -> &Sp {
        &self.spawner
    }

    /// The timer timeouts run on.
    pub fn timer(&self) -> &Tm {
        &self.timer
    }
}

impl<K, T, S, Sp, Tm: super::Timer> RuntimeGroup<K, T, Sp, Tm, S> {
    /// Bounds any call of this group (`call`, `try_call`, detached or blocking) by `duration`
    /// on the runtime's timer; the clock starts at the first poll.
    ///
    /// A waiter that times out leaves only itself: the flight goes on and later callers
    /// still join it. A leader that times out is cancelled, exactly as if dropped (the
    /// group's [`LeaderDropPolicy`] applies). The caller of detached work stops waiting;
    /// the work goes on. See [`Timeout`].
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`](crate::Error::Timeout) if `duration` passes first, and the call's own errors.
    ///
    /// # Cancel safety
    ///
    /// As the wrapped call.
    pub fn timeout<C: CallFuture>(&self, duration: Duration, call: C) -> Timeout<C, Tm>
    where
        Tm: Clone,
    {
        Timeout::new(
            call,
            self.timer.clone(),
            duration,
            self.group.observer().cloned(),
        )
    }
}

impl<K, T, S, Sp, Tm> RuntimeGroup<K, T, Sp, Tm, S>
where
    K: Hash + Eq,
    S: BuildHasher,
{
    /// The number of callers that joined the current flight of `key` and still wait for it;
    /// `0` if none is in progress. Its leader is not counted, and neither is the caller that
    /// launched detached work (it is that flight's leader, even while it waits for the
    /// spawned work). Tests and dashboards use it instead of sleeping.
    pub fn waiters<Q>(&self, key: &Q) -> usize
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        self.group.waiters(key)
    }

    /// Returns `true` if a flight for `key` is in progress (and not forgotten).
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        self.group.contains(key)
    }

    /// Detaches the current flight of `key`: its callers still receive its outcome, the next
    /// call starts a new flight, and the old flight finishing never removes the new one.
    /// Returns `false` (and leaves nothing behind) if `key` has no flight.
    pub fn forget<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        self.group.forget(key)
    }
}

impl<K, T, S, Sp, Tm> RuntimeGroup<K, T, Sp, Tm, S>
where
    K: Hash + Eq,
    S: BuildHasher,
    T: Clone,
{
    /// Runs `work` once for all concurrent callers of `key`, inside the leading caller's
    /// own task, and resolves to a clone of its value. See [`Group::call`].
    ///
    /// # Errors
    ///
    /// [`Error::Panicked`](crate::Error::Panicked) (waiters) if the work panicked,
    /// [`Error::LeaderDropped`](crate::Error::LeaderDropped) if the leader was dropped under
    /// [`FailWaiters`](LeaderDropPolicy::FailWaiters), [`Error::Reentrant`](crate::Error::Reentrant)
    /// if called from inside this key's own work.
    ///
    /// # Panics
    ///
    /// If this caller runs the work and it panics, the panic resumes here, after every
    /// waiter has been handed `Error::Panicked`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before its first poll does nothing. Dropping a waiting call
    /// removes only that caller. Dropping a leading call cancels its work, and the group's
    /// [`LeaderDropPolicy`] decides: the oldest waiter takes over, or every waiter fails.
    pub fn call<'a, Q, F, Fut>(&'a self, key: &'a Q, work: F) -> Call<'a, K, Q, T, S, F, Fut>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.request(key).call(work)
    }

    /// [`call`](Self::call) bounded by `duration`: see [`timeout`](Self::timeout).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`](crate::Error::Timeout), and the errors of [`call`](Self::call).
    ///
    /// # Panics
    ///
    /// As [`call`](Self::call).
    ///
    /// # Cancel safety
    ///
    /// As [`call`](Self::call).
    #[allow(
        clippy::type_complexity,
        reason = "the named future of a timed call; an alias would only hide it"
    )]
    pub fn call_timeout<'a, Q, F, Fut>(
        &'a self,
        key: &'a Q,
        duration: Duration,
        work: F,
    ) -> Timeout<Call<'a, K, Q, T, S, F, Fut>, Tm>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
        Tm: Timer + Clone,
    {
        self.request(key).timeout(duration).call(work)
    }

    /// Runs `work` once for all concurrent callers of `key`, as a task spawned on the
    /// runtime: it runs exactly once and finishes even if every caller goes away (cache fills
    /// behind callers with short timeouts). The caller that starts it waits for it like
    /// any waiter, and its role is [`Role::Leader`](crate::Role::Leader).
    ///
    /// # Errors
    ///
    /// [`Error::Panicked`](crate::Error::Panicked) for every caller (the one that started it
    /// too) if the work panicked or its task was dropped unfinished by the runtime, and the
    /// errors of [`call`](Self::call).
    ///
    /// # Panics
    ///
    /// If the runtime's spawner panics (tokio's does outside a runtime).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops only this caller waiting; once started, the work runs to
    /// its end and still delivers to every other caller.
    pub fn call_detached<'a, Q, F, Fut>(
        &'a self,
        key: &'a Q,
        work: F,
    ) -> Detached<'a, K, Q, T, S, SpawnWork<Sp, F>>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        K: Send + 'static,
        T: Send + 'static,
        S: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        Sp: Spawn + Clone,
    {
        self.request(key).detached().call(work)
    }

    /// [`call_detached`](Self::call_detached) whose caller stops waiting after `duration`
    /// (the work goes on): `group.call_detached_timeout(key, d, work)` is
    /// `group.timeout(d, group.call_detached(key, work))`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`](crate::Error::Timeout), and the errors of
    /// [`call_detached`](Self::call_detached).
    ///
    /// # Panics
    ///
    /// As [`call_detached`](Self::call_detached).
    ///
    /// # Cancel safety
    ///
    /// As [`call_detached`](Self::call_detached).
    #[allow(
        clippy::type_complexity,
        reason = "the named future of a timed call; an alias would only hide it"
    )]
    pub fn call_detached_timeout<'a, Q, F, Fut>(
        &'a self,
        key: &'a Q,
        duration: Duration,
        work: F,
    ) -> Timeout<Detached<'a, K, Q, T, S, SpawnWork<Sp, F>>, Tm>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        K: Send + 'static,
        T: Send + 'static,
        S: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        Sp: Spawn + Clone,
        Tm: Timer + Clone,
    {
        self.request(key).detached().timeout(duration).call(work)
    }

    /// Runs blocking `work` once for all concurrent callers of `key`, on the runtime's
    /// blocking pool; otherwise as [`call_detached`](Self::call_detached).
    ///
    /// # Errors
    ///
    /// As [`call_detached`](Self::call_detached).
    ///
    /// # Panics
    ///
    /// As [`call_detached`](Self::call_detached).
    ///
    /// # Cancel safety
    ///
    /// As [`call_detached`](Self::call_detached): a blocking closure is never interrupted.
    pub fn call_blocking<'a, Q, F>(
        &'a self,
        key: &'a Q,
        work: F,
    ) -> Detached<'a, K, Q, T, S, SpawnBlockingWork<Sp, F>>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        K: Send + 'static,
        T: Send + 'static,
        S: Send + Sync + 'static,
        F: FnOnce() -> T + Send + 'static,
        Sp: SpawnBlocking + Clone,
    {
        self.request(key).blocking().call(work)
    }
}

impl<K, V, E, S, Sp, Tm> RuntimeGroup<K, Result<V, E>, Sp, Tm, S> {
    /// Negative caching: keeps an error of fallible work for the window `policy` gives it,
    /// `None` for not at all (every error, unless set). See [`Group::reuse_errors`].
    ///
    /// # Panics
    ///
    /// If the group has no reuse window ([`reuse_for`](Self::reuse_for) first), or was
    /// cloned, or a call still holds it.
    pub fn reuse_errors(
        self,
        policy: impl Fn(&E) -> Option<Duration> + Send + Sync + 'static,
    ) -> Self {
        self.configure(|group| group.reuse_errors(policy))
    }
}

impl<K, V, E, S, Sp, Tm> RuntimeGroup<K, Result<V, E>, Sp, Tm, S>
where
    K: Hash + Eq,
    S: BuildHasher,
    V: Clone,
{
    /// Like [`call`](Self::call), for fallible work: the leader's error reaches every waiter
    /// as [`Error::Failed`](crate::Error::Failed). Nothing is retried; the next call starts a
    /// new flight.
    ///
    /// # Errors
    ///
    /// [`Error::Failed`](crate::Error::Failed) with (a clone of) the work's error, and the
    /// errors of [`call`](Self::call).
    ///
    /// # Panics
    ///
    /// As [`call`](Self::call).
    ///
    /// # Cancel safety
    ///
    /// As [`call`](Self::call).
    pub fn try_call<'a, Q, F, Fut>(
        &'a self,
        key: &'a Q,
        work: F,
    ) -> TryCall<'a, K, Q, V, E, S, F, Fut>
    where
        E: ShareableError,
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        self.request(key).try_call(work)
    }

    /// [`try_call`](Self::try_call) bounded by `duration`: see [`timeout`](Self::timeout).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`](crate::Error::Timeout), and the errors of [`try_call`](Self::try_call).
    ///
    /// # Panics
    ///
    /// As [`call`](Self::call).
    ///
    /// # Cancel safety
    ///
    /// As [`call`](Self::call).
    #[allow(
        clippy::type_complexity,
        reason = "the named future of a timed call; an alias would only hide it"
    )]
    pub fn try_call_timeout<'a, Q, F, Fut>(
        &'a self,
        key: &'a Q,
        duration: Duration,
        work: F,
    ) -> Timeout<TryCall<'a, K, Q, V, E, S, F, Fut>, Tm>
    where
        E: ShareableError,
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        Tm: Timer + Clone,
    {
        self.request(key).timeout(duration).try_call(work)
    }

    /// Like [`call_detached`](Self::call_detached), for fallible work.
    ///
    /// # Errors
    ///
    /// [`Error::Failed`](crate::Error::Failed), and the errors of [`call_detached`](Self::call_detached).
    ///
    /// # Panics
    ///
    /// As [`call_detached`](Self::call_detached).
    ///
    /// # Cancel safety
    ///
    /// As [`call_detached`](Self::call_detached).
    pub fn try_call_detached<'a, Q, F, Fut>(
        &'a self,
        key: &'a Q,
        work: F,
    ) -> TryDetached<'a, K, Q, V, E, S, SpawnWork<Sp, F>>
    where
        E: ShareableError + Send + 'static,
        K: Borrow<Q> + Send + 'static,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        V: Send + 'static,
        S: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        Sp: Spawn + Clone,
    {
        self.request(key).detached().try_call(work)
    }

    /// [`try_call_detached`](Self::try_call_detached) whose caller stops waiting after
    /// `duration` (the work goes on); see [`call_detached_timeout`](Self::call_detached_timeout).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`](crate::Error::Timeout), and the errors of
    /// [`try_call_detached`](Self::try_call_detached).
    ///
    /// # Panics
    ///
    /// As [`call_detached`](Self::call_detached).
    ///
    /// # Cancel safety
    ///
    /// As [`call_detached`](Self::call_detached).
    #[allow(
        clippy::type_complexity,
        reason = "the named future of a timed call; an alias would only hide it"
    )]
    pub fn try_call_detached_timeout<'a, Q, F, Fut>(
        &'a self,
        key: &'a Q,
        duration: Duration,
        work: F,
    ) -> Timeout<TryDetached<'a, K, Q, V, E, S, SpawnWork<Sp, F>>, Tm>
    where
        E: ShareableError + Send + 'static,
        K: Borrow<Q> + Send + 'static,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        V: Send + 'static,
        S: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        Sp: Spawn + Clone,
        Tm: Timer + Clone,
    {
        self.request(key)
            .detached()
            .timeout(duration)
            .try_call(work)
    }

    /// Like [`call_blocking`](Self::call_blocking), for fallible work.
    ///
    /// # Errors
    ///
    /// [`Error::Failed`](crate::Error::Failed), and the errors of [`call_detached`](Self::call_detached).
    ///
    /// # Panics
    ///
    /// As [`call_detached`](Self::call_detached).
    ///
    /// # Cancel safety
    ///
    /// As [`call_detached`](Self::call_detached).
    pub fn try_call_blocking<'a, Q, F>(
        &'a self,
        key: &'a Q,
        work: F,
    ) -> TryDetached<'a, K, Q, V, E, S, SpawnBlockingWork<Sp, F>>
    where
        E: ShareableError + Send + 'static,
        K: Borrow<Q> + Send + 'static,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        V: Send + 'static,
        S: Send + Sync + 'static,
        F: FnOnce() -> Result<V, E> + Send + 'static,
        Sp: SpawnBlocking + Clone,
    {
        self.request(key).blocking().try_call(work)
    }
}

impl<K, V, E, S, Sp, Tm> RuntimeGroup<K, Result<V, Arc<E>>, Sp, Tm, S>
where
    K: Hash + Eq,
    S: BuildHasher,
    V: Clone,
{
    /// Like [`try_call`](Self::try_call), for work whose error `E` is not `Clone`
    /// (`std::io::Error`, say): the work returns its plain `Result<V, E>` and every caller
    /// gets the leader's error as the same `Arc<E>`. See [`Group::try_call_arc`].
    ///
    /// # Errors
    ///
    /// [`Error::Failed`](crate::Error::Failed) with the work's error in an `Arc`, and the
    /// errors of [`call`](Self::call).
    ///
    /// # Panics
    ///
    /// As [`call`](Self::call).
    ///
    /// # Cancel safety
    ///
    /// As [`call`](Self::call).
    pub fn try_call_arc<'a, Q, F, Fut>(
        &'a self,
        key: &'a Q,
        work: F,
    ) -> impl CallFuture<Output = Result<V, Error<Arc<E>>>>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        self.request(key).try_call_arc(work)
    }

    /// Like [`try_call_detached`](Self::try_call_detached), for work whose error is not
    /// `Clone`: see [`try_call_arc`](Self::try_call_arc).
    ///
    /// # Errors
    ///
    /// [`Error::Failed`](crate::Error::Failed) with the work's error in an `Arc`, and the
    /// errors of [`call_detached`](Self::call_detached).
    ///
    /// # Panics
    ///
    /// As [`call_detached`](Self::call_detached).
    ///
    /// # Cancel safety
    ///
    /// As [`call_detached`](Self::call_detached).
    pub fn try_call_detached_arc<'a, Q, F, Fut>(
        &'a self,
        key: &'a Q,
        work: F,
    ) -> impl CallFuture<Output = Result<V, Error<Arc<E>>>>
    where
        K: Borrow<Q> + Send + 'static,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        V: Send + 'static,
        E: Send + Sync + 'static,
        S: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        Sp: Spawn + Clone,
    {
        self.request(key).detached().try_call_arc(work)
    }
}

impl<K, T, S, Sp: Clone, Tm: Clone> Clone for RuntimeGroup<K, T, Sp, Tm, S> {
    fn clone(&self) -> Self {
        Self {
            group: Arc::clone(&self.group),
            spawner: self.spawner.clone(),
            timer: self.timer.clone(),
        }
    }
}

impl<K, T, S, Sp, Tm> fmt::Debug for RuntimeGroup<K, T, Sp, Tm, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RuntimeGroup").field(&self.group).finish()
    }
}
