//! The group: its configuration and introspection, the observer calls, and the handle
//! ([`GroupRef`]) that a [`Leader`](crate::Leader)(crate::Leader) or [`Waiter`](crate::Waiter)(crate::Waiter) keeps.
//!
//! The flights themselves, their transitions and the lock order are in
//! [`flight`](crate::flight); registering a caller is in [`entered`](crate::entered).

use alloc::boxed::Box;
use alloc::sync::Arc as AllocArc;
use core::borrow::Borrow;
use core::fmt;
use core::hash::{BuildHasher, Hash};
use core::time::Duration;

use crate::flight::Flights;
use crate::hash::DefaultHashBuilder;
use crate::observer::{FlightInfo, KeyFormat, KeyRef, Observer};
use crate::reuse::Reuse;
use crate::rt::Clock;
use crate::types::FlightRef;
use crate::types::LeaderDropPolicy;
use crate::unwind::{self, Payload};

/// The number of shards a group has unless [`Group::with_shards`] says otherwise.
///
/// Calls of unrelated keys on different threads meet only when their keys share a shard, so
/// more shards mean fewer cache lines passed between cores, even on two cores (see the
/// benches' `mixed` scenario). Each shard takes 128 bytes (more for keys over 8 bytes), so
/// 256 cost 32 KiB per group. Built for loom (`--cfg loom`), groups have two, which keeps
/// the models fast and still spans shards.
pub const DEFAULT_SHARDS: usize = if cfg!(loom) { 2 } else { 256 };

/// The most shards a group may have.
pub const MAX_SHARDS: usize = 1 << 16;

/// Coalesces concurrent calls with equal keys: one caller (the leader) runs the work, and
/// every caller that arrives while it runs (a waiter) receives a clone of the same outcome.
///
/// This is the runtime-free core that the front-end crates wrap; most programs use one of
/// them. Its parts are public so that a front-end for another executor can be built on it:
/// [`enter`](Self::enter) registers a caller as a [`Leader`](crate::Leader) or a [`Waiter`](crate::Waiter), and
/// [`call`](Self::call) is a ready-made future that runs the work inside the caller's task.
///
/// * `K`: the key, any `Hash + Eq` type; look-ups take its borrowed form (`&str` for
///   `String`), so joining a flight never allocates a key.
/// * `T`: the value every caller receives; waiters get clones, so put big or non-`Clone`
///   values in an `Arc`. Fallible work shares `T = Result<V, E>`.
/// * `S`: the hasher, [`DefaultHashBuilder`] unless chosen with [`with_hasher`](Self::with_hasher).
pub struct Group<K, T, S = DefaultHashBuilder> {
    flights: Flights<K, T>,
    hasher: S,
    policy: LeaderDropPolicy,
    observer: Option<AllocArc<dyn Observer>>,
    /// The name observers are told (`with_name`).
    name: Option<Box<str>>,
    /// How observers may format keys (`with_key_format`).
    key_format: Option<KeyFormat<K>>,
    /// The reuse window's store, if the group has one (`reuse_for`).
    reuse: Option<Box<Reuse<K, T>>>,
}

impl<K, T> Group<K, T> {
    /// Creates an empty group with the default hasher and the
    /// [`Takeover`](LeaderDropPolicy::Takeover) policy.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = singleflight_core::Group::<String, u32>::new();
    /// assert_eq!(group.in_flight(), 0);
    /// ```
    pub fn new() -> Self {
        Self::with_hasher(DefaultHashBuilder::default())
    }
}

impl<K, T> Default for Group<K, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, T, S> Group<K, T, S> {
    /// Creates an empty group that hashes keys with `hasher`.
    pub fn with_hasher(hasher: S) -> Self {
        Self {
            flights: Flights::new(DEFAULT_SHARDS),
            hasher,
            policy: LeaderDropPolicy::default(),
            observer: None,
            name: None,
            key_format: None,
            reuse: None,
        }
    }

    /// Splits the map into `shards` shards, each under its own lock ([`DEFAULT_SHARDS`] unless
    /// set): fewer save memory (128 bytes or more each), more keep threads calling unrelated
    /// keys further apart. It takes the group by value, like the other settings, so no call
    /// can be in progress: configure the group before sharing it.
    ///
    /// # Panics
    ///
    /// If `shards` is not a power of two between 1 and [`MAX_SHARDS`].
    ///
    /// # Examples
    ///
    /// ```
    /// // A small group for a memory-tight target: one lock, 128 bytes of map.
    /// let group = singleflight_core::Group::<u32, u32>::new().with_shards(1);
    /// assert_eq!(group.shards(), 1);
    /// ```
    pub fn with_shards(mut self, shards: usize) -> Self {
        assert!(
            shards.is_power_of_two() && shards <= MAX_SHARDS,
            "a group's shard count is a power of two from 1 to {MAX_SHARDS}, not {shards}"
        );
        self.flights = Flights::new(shards);
        self
    }

    /// The number of shards the map is split into (see [`with_shards`](Self::with_shards)).
    pub fn shards(&self) -> usize {
        self.flights.shards()
    }

    /// Sets what waiters do when their leader is dropped before finishing.
    pub fn with_leader_drop_policy(mut self, policy: LeaderDropPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Attaches an observer (statistics, metrics, tracing). One observer may watch many groups.
    pub fn with_observer(mut self, observer: AllocArc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Names the group for its observer: every hook's [`FlightInfo`] carries the name, so
    /// one observer can tell the groups it watches apart.
    ///
    /// # Examples
    ///
    /// ```
    /// let users = singleflight_core::Group::<u32, u32>::new().with_name("users");
    /// assert_eq!(users.name(), Some("users"));
    /// ```
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The group's name, if it was given one ([`with_name`](Self::with_name)).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Lets observers format keys, with `format`: an observer's
    /// [`ObservedKey::write_key`](crate::ObservedKey::write_key) calls it (on the key's
    /// owned form, cloned from a borrowed one if the call used one). Without it keys can
    /// only be hashed: they are the application's data, and need not be `Debug`.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = singleflight_core::Group::<String, u32>::new()
    ///     .with_key_format(|key, f| f.write_str(key));
    /// ```
    pub fn with_key_format(mut self, format: KeyFormat<K>) -> Self {
        self.key_format = Some(format);
        self
    }

    /// Keeps each value a flight publishes for `window`, on `clock`'s time: a call for its
    /// key within the window gets a clone without running the work, and its role is
    /// [`Role::Reused`](crate::Role::Reused) with the value's age (DESIGN rule 16). After
    /// the window the next call leads a new flight. Off by default: without a window
    /// nothing outlives its flight.
    ///
    /// Only values are kept: an error (an outcome the call's `failed` test calls one, as
    /// `try_call` does) only under [`reuse_errors`](Self::reuse_errors); a panic, a
    /// cancellation, a dropped leader or a timeout never. [`forget`](Self::forget) and
    /// [`forget_all`](Self::forget_all) drop kept values, and a flight that started before
    /// them never stores its value afterwards.
    ///
    /// Memory follows load: values are dropped as they expire, a few on every call (from
    /// the call's own part of the store at once, from every part within 1,024 calls) and
    /// all at once with [`purge_expired`](Self::purge_expired), with no background thread;
    /// [`max_reusable`](Self::max_reusable) bounds how many are kept. A window of zero
    /// keeps no values (errors may still be kept under [`reuse_errors`](Self::reuse_errors)).
    ///
    /// A refresh threshold inside the window ([`refresh_after`](Self::refresh_after)) keeps
    /// a value fresh while it is asked for: a call past the threshold gets it at once and
    /// starts one refresh of the key, detached from every caller.
    ///
    /// # Examples
    ///
    /// ```
    /// use core::time::Duration;
    /// use singleflight_core::{Entered, Group, rt::Clock};
    ///
    /// struct Frozen;
    /// impl Clock for Frozen {
    ///     fn now(&self) -> Duration { Duration::from_secs(7) }
    /// }
    ///
    /// let group = Group::<String, u32>::new().reuse_for(Duration::from_secs(5), Frozen);
    /// let Ok(Entered::Leader(leader)) = group.enter("k") else { unreachable!() };
    /// leader.complete(1);
    /// let Ok(Entered::Reused(reused)) = group.enter("k") else { unreachable!() };
    /// assert_eq!(reused.age(), Duration::ZERO);
    /// assert_eq!(reused.into_value(), 1);
    /// ```
    pub fn reuse_for(mut self, window: Duration, clock: impl Clock + Send + Sync + 'static) -> Self
    where
        T: Clone,
    {
        match &mut self.reuse {
            Some(reuse) => reuse.set_window(window),
            None => self.reuse = Some(Box::new(Reuse::new(window, Box::new(clock)))),
        }
        self
    }

    /// Keeps at most `max` reusable values (see [`reuse_for`](Self::reuse_for)); unbounded
    /// unless set. A value published while the group holds `max` is not kept, once the
    /// expired values of its key's part of the store have made no room.
    ///
    /// # Panics
    ///
    /// If the group has no reuse window: call [`reuse_for`](Self::reuse_for) first.
    pub fn max_reusable(mut self, max: usize) -> Self {
        self.reuse_mut("max_reusable").set_max(max);
        self
    }

    /// Stale-while-revalidate: a value older than `after` (and still within the reuse
    /// window) is served at once, as ever, and the first call that finds it so starts the
    /// key's **refresh**: a flight of its own that runs that call's work detached from
    /// every caller, and stores its value fresh when it publishes. One refresh per key at a
    /// time, however many callers arrive; callers that find the value expired while the
    /// refresh runs join it. A refresh that fails (an error, a panic, a dropped task) keeps
    /// the old value served until its window ends, and the observer hears of it
    /// ([`refresh_failed`](crate::Observer::refresh_failed)). A value nobody asks for is
    /// never refreshed: there is no timer. A refresh that started before a
    /// [`forget`](Self::forget) or [`forget_all`](Self::forget_all) never stores its value.
    ///
    /// The refresh needs the triggering call's work, so only calls whose work can leave
    /// the caller start one: the front-ends' detached and blocking-pool calls
    /// ([`Detached`](crate::rt::Detached)), and the blocking front-end's `'static` calls
    /// (`call_here_refreshing`, with `std`). A call whose work may borrow from the caller
    /// ([`call`](Self::call), [`enter`](Self::enter)) never starts one: past the threshold
    /// it is served the kept value until the window ends, then leads a new flight (or
    /// joins a refresh in progress).
    ///
    /// # Panics
    ///
    /// If the group has no reuse window ([`reuse_for`](Self::reuse_for) first), or if
    /// `after` is not shorter than the window (a later `reuse_for` with a window not
    /// longer than `after` panics too).
    pub fn refresh_after(mut self, after: Duration) -> Self {
        self.reuse_mut("refresh_after").set_refresh_after(after);
        self
    }

    fn reuse_mut(&mut self, what: &str) -> &mut Reuse<K, T> {
        match &mut self.reuse {
            Some(reuse) => reuse,
            None => panic!("`{what}` needs a reuse window: call `reuse_for` first"),
        }
    }

    /// The reuse window, if the group has one.
    #[inline]
    pub(crate) fn reuse(&self) -> Option<&Reuse<K, T>> {
        self.reuse.as_deref()
    }

    /// Drops every reusable value whose window is over (they also go a few at a time on
    /// every call). Returns how many were dropped; `0` without a reuse window.
    pub fn purge_expired(&self) -> usize {
        self.reuse.as_ref().map_or(0, |reuse| reuse.purge_expired())
    }

    /// The number of reusable values held, expired ones not yet dropped included; `0`
    /// without a reuse window.
    pub fn reusable(&self) -> usize {
        self.reuse.as_ref().map_or(0, |reuse| reuse.len())
    }

    /// The policy applied when a leader is dropped.
    pub fn leader_drop_policy(&self) -> LeaderDropPolicy {
        self.policy
    }

    /// The attached observer, if any.
    pub fn observer(&self) -> Option<&AllocArc<dyn Observer>> {
        self.observer.as_ref()
    }

    /// The number of flights in progress, including forgotten flights that are still running.
    ///
    /// Once every call has returned (and no detached work is running) this is `0`: finished,
    /// cancelled and panicked flights never linger.
    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }

    /// Detaches every flight from its key: their callers still get their outcomes, and the
    /// next call for any key starts a new flight. With a reuse window it also drops every
    /// reusable value, and no flight in progress stores its value afterwards. Returns the
    /// number of flights detached plus the number of values dropped.
    pub fn forget_all(&self) -> usize {
        let flights = self.flights.forget_all();
        flights + self.reuse.as_ref().map_or(0, |reuse| reuse.forget_all())
    }

    /// The flights in progress.
    #[inline]
    pub(crate) fn flights(&self) -> &Flights<K, T> {
        &self.flights
    }

    /// Calls the observer, if any. Every call sits where the group is already consistent,
    /// so a hook that panics unwinds through the call that ran it and breaks nothing. (Only
    /// a blocking wait, with `std`, calls a hook outside a guard of its own.)
    #[cfg(feature = "std")]
    #[inline]
    pub(crate) fn observe(&self, f: impl FnOnce(&dyn Observer)) {
        if let Some(observer) = &self.observer {
            f(&**observer);
        }
    }

    /// Calls the observer where a panic must not unwind past the caller before it cleans up
    /// (a start hook, whose flight must be abandoned first). With `std` the panic is caught
    /// and handed back, to be resumed once the group is consistent again: the clean-up then
    /// runs on a thread that is not unwinding, so waking blocked waiters from it is safe.
    #[inline]
    pub(crate) fn observe_caught<R: Default>(
        &self,
        f: impl FnOnce(&dyn Observer) -> R,
    ) -> Result<R, Payload> {
        let Some(observer) = &self.observer else {
            return Ok(R::default());
        };
        unwind::catch(|| f(&**observer))
    }

    /// Calls the observer from a `Drop` (or a guard that may run while unwinding). While
    /// the thread is already panicking, a hook that panics too would abort the process:
    /// that second panic is caught and discarded (with `std`; without it, panics are
    /// expected to abort anyway).
    #[inline]
    pub(crate) fn observe_in_drop(&self, f: impl FnOnce(&dyn Observer)) {
        if let Some(observer) = &self.observer {
            unwind::in_drop(|| f(&**observer));
        }
    }

    /// What a hook of the flight at `at` is told, with no key.
    #[inline]
    pub(crate) fn info(&self, at: FlightRef) -> FlightInfo<'_> {
        FlightInfo::new(self.name.as_deref(), at.id())
    }

    /// The [`ObservedKey`](crate::ObservedKey) of a call's `key`.
    #[inline]
    pub(crate) fn key_ref<'k, Q: ?Sized>(&self, key: &'k Q) -> KeyRef<'k, K, Q> {
        KeyRef {
            key,
            format: self.key_format,
        }
    }

    /// A number that identifies this group while it is borrowed (for re-entrancy checks).
    #[cfg(feature = "std")]
    pub(crate) fn address(&self) -> usize {
        core::ptr::from_ref(self).cast::<u8>() as usize
    }

    /// Whether the current thread runs the work of this group's flight `id` (with `std`;
    /// without it nothing is tracked, and the answer is always `false`).
    #[inline]
    pub(crate) fn is_leading(&self, id: u64) -> bool {
        #[cfg(feature = "std")]
        {
            crate::reentrancy::is_leading(self.address(), id)
        }
        #[cfg(not(feature = "std"))]
        {
            let _ = id;
            false
        }
    }
}

impl<K, T, S> Group<K, T, S>
where
    K: Hash + Eq,
    S: BuildHasher,
{
    /// The hash of `key`, which picks its shard and its bucket.
    #[inline]
    pub(crate) fn hash<Q: ?Sized + Hash>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The number of callers that joined the current flight of `key` and still wait for it;
    /// `0` when no flight is in progress. The leader is never counted, and neither is the
    /// caller that launched detached work (it is that flight's leader). Tests and
    /// dashboards use it to wait for callers to join instead of sleeping.
    pub fn waiters<Q>(&self, key: &Q) -> usize
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let flight = self.flights.with_current(self.hash(key), key, |current| {
            current.and_then(|current| current.flight.cloned())
        });
        flight.map_or(0, |flight| flight.joined())
    }

    /// Returns `true` if a flight for `key` is in progress (and not forgotten).
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        self.flights
            .with_current(self.hash(key), key, |current| current.is_some())
    }

    /// Detaches the current flight of `key` from the key: its callers still get its outcome,
    /// the next call starts a new flight, and the old flight finishing never removes the new
    /// one. With a reuse window it also drops the key's reusable value, and a flight that
    /// started before never stores its value afterwards. Returns `false` (and leaves nothing
    /// behind) if `key` had neither a flight in progress nor a reusable value.
    pub fn forget<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let hash = self.hash(key);
        let detached = self.flights.with_current(hash, key, |current| {
            current.map(|current| *current.forgotten = true).is_some()
        });
        // After the flight: a flight that started before is marked forgotten by now, or
        // its caller has yet to track it and will find the generation moved.
        let dropped = self
            .reuse
            .as_ref()
            .is_some_and(|reuse| reuse.forget(hash, key));
        detached || dropped
    }
}

impl<K: fmt::Debug, T, S> Group<K, T, S> {
    /// Lets observers format keys with their `Debug`: [`with_key_format`](Self::with_key_format)
    /// for a key type that has it.
    pub fn with_key_debug(self) -> Self {
        self.with_key_format(|key, f| fmt::Debug::fmt(key, f))
    }
}

impl<K, V, E, S> Group<K, Result<V, E>, S> {
    /// Negative caching: keeps an error a flight published (an `Err` of fallible work) for
    /// the window `policy` gives it, `None` for not at all (the default for every error):
    /// a 404 for 30 s, a rate-limit error never. The policy is called once per failed
    /// flight, with no lock held. Panics, cancellations, dropped leaders and timeouts are
    /// never kept, whatever the policy.
    ///
    /// # Panics
    ///
    /// If the group has no reuse window: call [`reuse_for`](Self::reuse_for) first (a
    /// window of zero keeps errors only).
    pub fn reuse_errors(
        mut self,
        policy: impl Fn(&E) -> Option<Duration> + Send + Sync + 'static,
    ) -> Self {
        self.reuse_mut("reuse_errors")
            .set_errors(Box::new(move |outcome: &Result<V, E>| {
                outcome.as_ref().err().and_then(&policy)
            }));
        self
    }
}

impl<K, T, S> fmt::Debug for Group<K, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("in_flight", &self.in_flight())
            .field("policy", &self.policy)
            .field("name", &self.name)
            .field("observed", &self.observer.is_some())
            .field("reusable", &self.reusable())
            .finish_non_exhaustive()
    }
}

/// A handle to a [`Group`] that a [`Leader`](crate::Leader) or [`Waiter`](crate::Waiter) keeps: `&Group` for work that
/// runs in the caller's own task, `Arc<Group>` for work that moves into a spawned task.
pub trait GroupRef: Clone + Unpin {
    /// The group's key type.
    type Key;
    /// The group's value type.
    type Value;
    /// The group's hasher.
    type Hasher;

    /// The group itself.
    fn group(&self) -> &Group<Self::Key, Self::Value, Self::Hasher>;
}

impl<K, T, S> GroupRef for &Group<K, T, S> {
    type Key = K;
    type Value = T;
    type Hasher = S;

    #[inline]
    fn group(&self) -> &Group<K, T, S> {
        self
    }
}

impl<K, T, S> GroupRef for AllocArc<Group<K, T, S>> {
    type Key = K;
    type Value = T;
    type Hasher = S;

    #[inline]
    fn group(&self) -> &Group<K, T, S> {
        self
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "a group's shard count is a power of two from 1 to 65536, not 3")]
    fn a_shard_count_that_is_not_a_power_of_two_is_refused() {
        let _ = Group::<u32, u32>::new().with_shards(3);
    }

    #[test]
    #[should_panic(expected = "not 0")]
    fn zero_shards_are_refused() {
        let _ = Group::<u32, u32>::new().with_shards(0);
    }
}
