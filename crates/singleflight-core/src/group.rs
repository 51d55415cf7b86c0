//! The group: a map from keys to the flights in progress, split into shards.
//!
//! Each shard's [`Table`] sits under its own lock (see [`table`](crate::table)); a flight
//! that somebody joined also has a [`Flight`] with its own locks (see
//! [`flight`](crate::flight) for the flight's states and the lock order). This module
//! drives the transitions that involve the table: **start** (a caller finds no flight),
//! **join**, **publish** (the leader's outcome), **abandon** (the leader went away) and
//! **forget**; and it is the one place observers are called from.

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::sync::Arc as AllocArc;
use core::borrow::Borrow;
use core::fmt;
use core::hash::{BuildHasher, Hash};
use core::task::Waker;

use crate::error::Error;
use crate::flight::{Flight, Outcome};
use crate::hash::DefaultHashBuilder;
use crate::leader::Leader;
use crate::observer::{Execution, Observer};
use crate::sync::{Arc, AtomicUsize, Mutex, Ordering};
use crate::table::{Slot, Table};
use crate::types::{FlightRef, LeaderDropPolicy};
use crate::unwind::{self, Payload};
use crate::waiter::Waiter;

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

/// One shard, on cache lines of its own, so that no two shards' locks share one.
#[repr(align(128))]
struct Shard<K, T> {
    table: Mutex<Table<K, T>>,
    /// The table's flight count, stored under the lock at every change and read without
    /// it as a hint: a caller that finds its shard empty expects to lead, so it clones its
    /// key before taking the lock and takes the lock once. Any other caller probes first,
    /// so a caller that joins a flight never clones a key.
    flights: AtomicUsize,
}

impl<K, T> Shard<K, T> {
    fn new() -> Self {
        Self {
            table: Mutex::new(Table::new()),
            flights: AtomicUsize::new(0),
        }
    }

    /// Publishes the table's flight count for [`looks_empty`](Self::looks_empty); called
    /// under the lock after every insert and removal.
    #[inline]
    fn count(&self, table: &Table<K, T>) {
        self.flights.store(table.len(), Ordering::Relaxed);
    }

    #[inline]
    fn looks_empty(&self) -> bool {
        self.flights.load(Ordering::Relaxed) == 0
    }
}

fn new_shards<K, T>(count: usize) -> Box<[Shard<K, T>]> {
    (0..count).map(|_| Shard::new()).collect()
}

/// Coalesces concurrent calls with equal keys: one caller (the leader) runs the work, and
/// every caller that arrives while it runs (a waiter) receives a clone of the same outcome.
///
/// This is the runtime-free core that the front-end crates wrap; most programs use one of
/// them. Its parts are public so that a front-end for another executor can be built on it:
/// [`enter`](Self::enter) registers a caller as a [`Leader`] or a [`Waiter`], and
/// [`call`](Self::call) is a ready-made future that runs the work inside the caller's task.
///
/// * `K`: the key, any `Hash + Eq` type; look-ups take its borrowed form (`&str` for
///   `String`), so joining a flight never allocates a key.
/// * `T`: the value every caller receives; waiters get clones, so put big or non-`Clone`
///   values in an `Arc`. Fallible work shares `T = Result<V, E>`.
/// * `S`: the hasher, [`DefaultHashBuilder`] unless chosen with [`with_hasher`](Self::with_hasher).
pub struct Group<K, T, S = DefaultHashBuilder> {
    shards: Box<[Shard<K, T>]>,
    hasher: S,
    policy: LeaderDropPolicy,
    observer: Option<AllocArc<dyn Observer>>,
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
            shards: new_shards(DEFAULT_SHARDS),
            hasher,
            policy: LeaderDropPolicy::default(),
            observer: None,
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
        self.shards = new_shards(shards);
        self
    }

    /// The number of shards the map is split into (see [`with_shards`](Self::with_shards)).
    pub fn shards(&self) -> usize {
        self.shards.len()
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
        self.shards
            .iter()
            .map(|shard| shard.table.lock().len())
            .sum()
    }

    /// Detaches every flight from its key: their callers still get their outcomes, and the
    /// next call for any key starts a new flight. Returns the number of flights detached.
    pub fn forget_all(&self) -> usize {
        let mut detached = 0;
        for shard in &*self.shards {
            let mut table = shard.table.lock();
            for slot in table.slots_mut().filter(|slot| !slot.forgotten) {
                slot.forgotten = true;
                detached += 1;
            }
        }
        detached
    }

    /// The shard of keys with this hash, chosen by bits that hashbrown uses neither for its
    /// control bytes (the top 7) nor for the bucket in any table under 2^32 slots.
    #[inline]
    fn shard_index(&self, hash: u64) -> usize {
        (hash >> 32) as usize & (self.shards.len() - 1)
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Shard<K, T> {
        &self.shards[self.shard_index(hash)]
    }

    #[inline]
    fn table(&self, hash: u64) -> &Mutex<Table<K, T>> {
        &self.shard(hash).table
    }

    /// Calls the observer, if any. Every call sits where the group is already consistent,
    /// so a hook that panics unwinds through the call that ran it and breaks nothing.
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

    /// A number that identifies this group while it is borrowed (for re-entrancy checks).
    #[cfg(feature = "std")]
    pub(crate) fn address(&self) -> usize {
        core::ptr::from_ref(self).cast::<u8>() as usize
    }

    /// Takes the slot of the flight at `at` out of its table. The slot (and its key) is
    /// dropped by the caller, after the lock.
    #[inline]
    fn remove(&self, at: FlightRef) -> Option<Slot<K, T>> {
        let shard = self.shard(at.hash);
        let mut table = shard.table.lock();
        let slot = table.remove(at);
        shard.count(&table);
        drop(table);
        slot
    }

    /// **publish**: ends the flight at `at` with its leader's `value` and tells the
    /// observer. Each waiter gets a clone, and `value` comes back: the leader's clone is
    /// made (outside every lock) only if somebody still waits. Also returns whether anyone
    /// joined the flight.
    ///
    /// If the leader's clone panics, the waiters get the original, the observer still
    /// hears of the end, and the panic goes on to the leader's caller.
    #[inline]
    pub(crate) fn publish_kept(
        &self,
        at: FlightRef,
        value: T,
        execution: Execution,
        started: u64,
    ) -> (T, bool)
    where
        T: Clone,
    {
        let (flight, slot) = if core::mem::needs_drop::<K>() {
            let mut slot = self.remove(at);
            (slot.as_mut().and_then(|slot| slot.flight.take()), slot)
        } else {
            // The key's drop does nothing: it may go under the lock, in place.
            let shard = self.shard(at.hash);
            let mut table = shard.table.lock();
            let flight = table.remove_flight(at).flatten();
            shard.count(&table);
            drop(table);
            (flight, None)
        };
        let Some(flight) = flight else {
            // Solo: nobody ever joined, nothing to hand out.
            self.observe(|o| o.leader_finished(started, execution));
            drop(slot);
            return (value, false);
        };
        let mut ending = Ending {
            group: self,
            flight: Some(&flight),
            outcome: None,
            execution,
            started,
            ended: false,
        };
        let done = match flight.close_if_unwatched() {
            // Nobody waits any more (and now nobody can join): no clone for no one.
            Some(shared) => {
                ending.end();
                (value, shared)
            }
            None => {
                let Outcome::Value(original) = ending.outcome.insert(Outcome::Value(value)) else {
                    unreachable!("just stored a value")
                };
                // User code, under no lock. If it panics, the waiters get the original, and
                // only then does the panic go on: with `std` it is caught first, so that the
                // waiters are woken from a thread that is not unwinding (a task's waker that
                // panicked there would abort the process); without it, `ending` publishes
                // while unwinding.
                let copy = match unwind::catch(|| original.clone()) {
                    Ok(copy) => copy,
                    Err(payload) => {
                        drop(ending);
                        drop(flight);
                        drop(slot);
                        unwind::resume(payload)
                    }
                };
                (copy, ending.end())
            }
        };
        drop(ending);
        drop(flight);
        drop(slot);
        done
    }

    /// **publish**: ends the flight at `at` with `value` for its waiters alone (nothing is
    /// cloned here), and tells the observer.
    pub(crate) fn publish_owned(
        &self,
        at: FlightRef,
        value: T,
        execution: Execution,
        started: u64,
    ) {
        self.publish_outcome(at, Outcome::Value(value), execution, started);
    }

    fn publish_outcome(
        &self,
        at: FlightRef,
        outcome: Outcome<T>,
        execution: Execution,
        started: u64,
    ) {
        let mut slot = self.remove(at);
        let flight = slot.as_mut().and_then(|slot| slot.flight.take());
        let mut ending = Ending {
            group: self,
            flight: flight.as_deref(),
            outcome: Some(outcome),
            execution,
            started,
            ended: false,
        };
        ending.end();
        drop(ending);
        drop(flight);
        drop(slot);
    }

    /// **publish** without a value: the work panicked (or detached work was dropped), and
    /// every waiter gets [`Error::Panicked`] with `message`.
    pub(crate) fn publish_panic(
        &self,
        at: FlightRef,
        message: crate::error::PanicMessage,
        execution: Execution,
        started: u64,
    ) {
        self.publish_outcome(at, Outcome::Panicked(message), execution, started);
    }

    /// Registers one more waiter on the flight at `at` for the caller that leads it from
    /// elsewhere (a detached call): a seat that is not counted as a join.
    pub(crate) fn subscribe(&self, at: FlightRef) -> (Arc<Flight<T>>, u64) {
        let mut table = self.table(at.hash).lock();
        let slot = table
            .get_mut(at)
            .expect("a leader's flight is in the map until the leader finishes");
        let flight = Arc::clone(slot.flight.get_or_insert_with(|| Arc::new(Flight::new(at))));
        drop(table);
        let ticket = flight
            .join(false, None)
            .expect("a leader's flight is not published before its leader finishes");
        (flight, ticket)
    }

    /// **abandon**: the leader of the flight at `at` went away without an outcome. Under
    /// the takeover policy the oldest waiter is promoted; otherwise, or with nobody left,
    /// the flight ends (its waiters, if any, get [`Error::LeaderDropped`]). Returns `true`
    /// if the flight ended. Tells the observer nothing: the caller does, afterwards.
    pub(crate) fn abandon(&self, at: FlightRef) -> bool {
        let shard = self.shard(at.hash);
        let mut table = shard.table.lock();
        let Some(slot) = table.get_mut(at) else {
            debug_assert!(false, "an abandoned flight is still in the map");
            return true;
        };
        if let Some(flight) = &slot.flight {
            if self.policy == LeaderDropPolicy::Takeover {
                // Under the shard lock, so nobody joins a flight that is about to end.
                if let Some(waker) = flight.promote() {
                    drop(table);
                    // Only the promoted waiter has anything to do. (A blocked one was
                    // woken with every blocked thread; the others sleep again.)
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                    return false;
                }
            }
        }
        let slot = table.remove(at);
        shard.count(&table);
        drop(table);
        if let Some(flight) = slot.as_ref().and_then(|slot| slot.flight.as_ref()) {
            drop(flight.publish(Outcome::LeaderDropped));
        }
        drop(slot);
        true
    }
}

/// Ends a leader's flight: publishes its outcome, tells the observer, then wakes the
/// waiters ([`end`](Self::end)), or does all that when dropped, so that it happens even if
/// the leader's clone of its value panics on the way.
struct Ending<'g, K, T, S> {
    group: &'g Group<K, T, S>,
    flight: Option<&'g Flight<T>>,
    /// Still to publish (the original value, if the leader's clone panicked).
    outcome: Option<Outcome<T>>,
    execution: Execution,
    started: u64,
    ended: bool,
}

impl<K, T, S> Ending<'_, K, T, S> {
    /// Publishes the outcome (if any), calls `leader_finished`, then wakes the waiters; a
    /// panic of the hook goes on after they are woken. Returns the leader's `shared` answer.
    fn end(&mut self) -> bool {
        self.ended = true;
        let (shared, wake) = match (self.flight, self.outcome.take()) {
            (Some(flight), Some(outcome)) => {
                let (shared, wake) = flight.publish(outcome);
                (shared, Some(wake))
            }
            _ => (false, None),
        };
        let (started, execution) = (self.started, self.execution);
        if unwind::unwinding() {
            self.group
                .observe_in_drop(|o| o.leader_finished(started, execution));
            return shared;
        }
        let hook = self
            .group
            .observe_caught(|o| o.leader_finished(started, execution));
        drop(wake);
        if let Err(payload) = hook {
            unwind::resume(payload);
        }
        shared
    }
}

impl<K, T, S> Drop for Ending<'_, K, T, S> {
    fn drop(&mut self) {
        if !self.ended {
            self.end();
        }
    }
}

impl<K, T, S> Group<K, T, S>
where
    K: Hash + Eq,
    S: BuildHasher,
{
    /// Registers a caller for `key` at once: as the [`Leader`] of a new flight if none is in
    /// progress, or as a [`Waiter`] of the current one.
    ///
    /// This is the building block of the front-ends; [`call`](Self::call) wraps it in a
    /// future. The key is cloned (`to_owned`) only when a new flight starts.
    ///
    /// # Errors
    ///
    /// [`Error::Reentrant`] (with `std`) if the current thread is running the work of the
    /// flight it would join, which would wait for itself forever.
    ///
    /// # Panics
    ///
    /// If the key's `Hash`, `Eq` or `ToOwned` panics, or the observer's
    /// [`leader_started`](Observer::leader_started) does: the panic is this caller's, and
    /// leaves the group as it was (a flight whose start hook panicked is abandoned, as if
    /// its leader had been dropped).
    ///
    /// # Examples
    ///
    /// ```
    /// use singleflight_core::{Entry, Group};
    ///
    /// let group = Group::<String, u32>::new();
    /// let Ok(Entry::Leader(leader)) = group.enter("answer") else { unreachable!() };
    /// let Ok(Entry::Waiter(waiter)) = group.enter("answer") else { unreachable!() };
    /// assert_eq!(group.waiters("answer"), 1);
    /// assert_eq!(leader.complete(42), 42);
    /// # #[cfg(feature = "std")]
    /// assert!(matches!(waiter.wait(), singleflight_core::Waited::Outcome(Ok(42))));
    /// ```
    pub fn enter<Q>(&self, key: &Q) -> Result<Entry<&Self>, Error>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        enter_with(self, key, None)
    }

    /// Like [`enter`](Self::enter), but the returned guard owns a handle to the group, so it
    /// can move into a spawned task (detached work).
    ///
    /// # Errors
    ///
    /// As [`enter`](Self::enter).
    ///
    /// # Panics
    ///
    /// As [`enter`](Self::enter).
    pub fn enter_arc<Q>(self: &AllocArc<Self>, key: &Q) -> Result<Entry<AllocArc<Self>>, Error>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        enter_with(AllocArc::clone(self), key, None)
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
        let flight = self.with_current(key, |slot| slot.and_then(|slot| slot.flight.clone()));
        flight.map_or(0, |flight| flight.joined())
    }

    /// Returns `true` if a flight for `key` is in progress (and not forgotten).
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        self.with_current(key, |slot| slot.is_some())
    }

    /// Detaches the current flight of `key` from the key: its callers still get its outcome,
    /// the next call starts a new flight, and the old flight finishing never removes the new
    /// one. Returns `false` (and changes nothing) if no flight for `key` is in progress.
    pub fn forget<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        self.with_current(key, |slot| slot.map(|slot| slot.forgotten = true).is_some())
    }

    /// Runs `f` on the current flight of `key` (if any), under its shard's lock. `f` must not
    /// run user code.
    fn with_current<Q, R>(&self, key: &Q, f: impl FnOnce(Option<&mut Slot<K, T>>) -> R) -> R
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let hash = self.hasher.hash_one(key);
        let mut table = self.table(hash).lock();
        f(table.find_mut(hash, |slot| slot.is_current(key)))
    }
}

impl<K, T> Slot<K, T> {
    /// Is this the flight new calls for `key` join (the key's, and not forgotten)?
    #[inline]
    fn is_current<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: ?Sized + Eq,
    {
        !self.forgotten && self.key.borrow() == key
    }
}

/// Registers a caller (see [`Group::enter`]); an async caller passes its task's `waker`,
/// to be woken when the outcome arrives, so that it can sleep at once.
#[inline]
pub(crate) fn enter_with<G, Q>(
    group_ref: G,
    key: &Q,
    waker: Option<&Waker>,
) -> Result<Entry<G>, Error>
where
    G: GroupRef,
    G::Key: Hash + Eq + Borrow<Q>,
    G::Hasher: BuildHasher,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = G::Key>,
{
    match group_ref.group().register(key, waker)? {
        Registered::Waiter { flight, ticket } => Ok(Entry::Waiter(Waiter::new(
            group_ref,
            flight,
            ticket,
            waker.is_some(),
        ))),
        Registered::Leader(at) => {
            // The guard exists before the hook runs: if the hook panics, dropping the guard
            // abandons the flight like any dropped leader's, and then the panic goes on.
            let mut leader = Leader::new(group_ref, at, 0);
            match leader
                .group_ref()
                .group()
                .observe_caught(|o| o.leader_started())
            {
                Ok(started) => leader.set_started(started),
                Err(payload) => {
                    drop(leader);
                    unwind::resume(payload)
                }
            }
            Ok(Entry::Leader(leader))
        }
    }
}

enum Registered<T> {
    Leader(FlightRef),
    Waiter { flight: Arc<Flight<T>>, ticket: u64 },
}

impl<K, T, S> Group<K, T, S>
where
    K: Hash + Eq,
    S: BuildHasher,
{
    /// **start** or **join**: the caller joins the current flight of `key`, or starts one.
    ///
    /// One hash (the key's `Hash`, before any lock), then under the shard lock a look at
    /// the shard's inline slots (a probe of its table too, once it has spilled), which runs
    /// the key's `Eq`. A joining caller takes its seat under the flight's own lock after the
    /// shard lock is released, with its waker already cloned. A caller that starts a flight
    /// clones its key (`ToOwned`) with no lock held: before locking if its shard looks empty
    /// (then it almost surely leads, and locks once), otherwise after a probe that found
    /// nothing, and then it looks again, since another caller may have started the key's
    /// flight meanwhile.
    #[inline]
    fn register<Q>(&self, key: &Q, waker: Option<&Waker>) -> Result<Registered<T>, Error>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        let hash = self.hasher.hash_one(key);
        let index = self.shard_index(hash);
        let shard = &self.shards[index];
        // User code, under no lock: a caller that will most likely lead clones its key now.
        let mut owned: Option<K> = shard.looks_empty().then(|| key.to_owned());
        loop {
            let mut table = shard.table.lock();
            let flight = match table.find_mut(hash, |slot| slot.is_current(key)) {
                Some(slot) => {
                    #[cfg(feature = "std")]
                    if crate::reentrancy::is_leading(self.address(), slot.at.id) {
                        return Err(Error::Reentrant);
                    }
                    let at = slot.at;
                    Arc::clone(slot.flight.get_or_insert_with(|| Arc::new(Flight::new(at))))
                }
                None => match owned.take() {
                    Some(key) => {
                        let at = FlightRef {
                            hash,
                            id: table.next_id * self.shards.len() as u64 + index as u64,
                        };
                        table.next_id += 1;
                        table.insert(Slot {
                            at,
                            key,
                            forgotten: false,
                            flight: None,
                        });
                        shard.count(&table);
                        return Ok(Registered::Leader(at));
                    }
                    None => {
                        drop(table);
                        owned = Some(key.to_owned());
                        continue;
                    }
                },
            };
            drop(table);
            // A key made for a flight that somebody else started meanwhile goes, unlocked.
            drop(owned.take());
            if let Ok(ticket) = flight.join(true, waker.cloned()) {
                return Ok(Registered::Waiter { flight, ticket });
            }
            // Published between the two locks: that flight is over; look again.
        }
    }
}

impl<K, T, S> fmt::Debug for Group<K, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("in_flight", &self.in_flight())
            .field("policy", &self.policy)
            .field("observed", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

/// A handle to a [`Group`] that a [`Leader`] or [`Waiter`] keeps: `&Group` for work that
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

/// A registered caller, as [`Group::enter`] returns it.
#[derive(Debug)]
pub enum Entry<G: GroupRef> {
    /// No flight was in progress: this caller must run the work and complete the flight.
    Leader(Leader<G>),
    /// A flight was in progress: this caller waits for its outcome.
    Waiter(Waiter<G>),
}

#[cfg(all(test, feature = "std", not(loom)))]
mod tests {
    use super::*;
    use crate::Waited;

    #[test]
    fn one_shard_spills_past_its_inline_slots_and_finds_every_flight() {
        let group = Group::<u32, u32>::new().with_shards(1);
        let leaders: alloc::vec::Vec<_> = (0..6)
            .map(|key| match group.enter(&key) {
                Ok(Entry::Leader(leader)) => leader,
                _ => panic!("key {key} starts a flight"),
            })
            .collect();
        assert_eq!(group.in_flight(), 6);
        assert!(group.forget(&1));
        let Ok(Entry::Leader(newer)) = group.enter(&1) else {
            panic!("a forgotten key starts a new flight")
        };
        let Ok(Entry::Waiter(waiter)) = group.enter(&4) else {
            panic!("a spilled flight is found")
        };
        assert_eq!(group.waiters(&4), 1);
        assert_eq!(group.in_flight(), 7);
        // Finish in an order that empties inline slots while others are spilled.
        for (key, leader) in leaders.into_iter().enumerate().rev() {
            assert_eq!(leader.complete(key as u32 * 10), key as u32 * 10);
        }
        assert!(matches!(waiter.wait(), Waited::Outcome(Ok(40))));
        assert!(group.contains(&1));
        assert_eq!(newer.complete(11), 11);
        assert_eq!(group.in_flight(), 0);
        assert!(!group.contains(&1));
    }

    #[test]
    fn a_shard_gives_its_table_back_after_a_burst_and_keeps_it_at_a_steady_load() {
        let group = Group::<u32, u32>::new().with_shards(1);
        let bytes = || group.shards[0].table.lock().spill_bytes();
        let burst: alloc::vec::Vec<_> = (0..10_000)
            .map(|key| match group.enter(&key) {
                Ok(Entry::Leader(leader)) => leader,
                _ => panic!("key {key} starts a flight"),
            })
            .collect();
        assert!(bytes() >= 10_000 * size_of::<Slot<u32, u32>>());
        for leader in burst {
            leader.complete(0);
        }
        assert_eq!(group.in_flight(), 0);
        assert_eq!(bytes(), 0, "an empty shard keeps no table after a burst");

        // A steady load of a few dozen flights: once the table has room for the tombstones
        // that churn leaves (one growth, early), it stops reallocating.
        let mut steady: alloc::collections::VecDeque<_> = (0..40)
            .map(|key| match group.enter(&key) {
                Ok(Entry::Leader(leader)) => leader,
                _ => panic!("key {key} starts a flight"),
            })
            .collect();
        let mut sizes = alloc::vec::Vec::new();
        for key in 40..20_000 {
            steady.pop_front().expect("forty in flight").complete(0);
            match group.enter(&key) {
                Ok(Entry::Leader(leader)) => steady.push_back(leader),
                _ => panic!("key {key} starts a flight"),
            }
            if sizes.last() != Some(&bytes()) {
                sizes.push(bytes());
            }
        }
        assert!(
            sizes.len() <= 2,
            "the table settles at a steady load: {sizes:?}"
        );
    }

    #[test]
    fn a_shard_fits_its_cache_lines() {
        // A word-sized key: one line pair, as `DEFAULT_SHARDS`' docs say.
        assert_eq!(size_of::<Shard<u64, u64>>(), 128);
        assert_eq!(size_of::<Shard<alloc::string::String, u64>>(), 256);
    }

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
