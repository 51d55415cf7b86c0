//! The group: a map from keys to the flights in progress.

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::sync::Arc as AllocArc;
use core::borrow::Borrow;
use core::fmt;
use core::hash::{BuildHasher, Hash};
use core::task::Waker;

use hashbrown::HashTable;

use crate::error::Error;
use crate::flight::{Outcome, Shared};
use crate::hash::DefaultHashBuilder;
use crate::leader::Leader;
use crate::observer::{Execution, Observer};
use crate::sync::{Arc, Mutex};
use crate::waiter::Waiter;

/// What the waiters of a flight do when its leader is dropped (cancelled) before finishing.
///
/// Only async callers can be dropped mid-flight; a blocking leader always finishes or panics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaderDropPolicy {
    /// The oldest caller still waiting is promoted and runs its own work; the others keep
    /// waiting for it. The flight (and its [`FlightId`]) carries on, so at no moment do two
    /// executions run for one key.
    #[default]
    Takeover,
    /// Every waiter returns [`Error::LeaderDropped`] and the flight ends; the next call for
    /// the key starts a new one.
    FailWaiters,
}

/// Identifies one flight within its group. Ids are never reused by a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlightId(pub(crate) u64);

impl FlightId {
    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FlightId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flight#{}", self.0)
    }
}

/// Whether a caller ran the work or shared another caller's execution (Go's `shared` flag,
/// inverted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// This caller ran the work: it found no flight for its key, or it took over after the
    /// leader was dropped.
    Leader,
    /// This caller joined a flight and received its outcome (or gave up waiting).
    Waiter,
}

impl Role {
    /// Returns `true` for [`Role::Leader`].
    pub fn is_leader(self) -> bool {
        self == Self::Leader
    }

    /// Returns `true` for [`Role::Waiter`]: the outcome was shared with this caller.
    pub fn is_shared(self) -> bool {
        self == Self::Waiter
    }
}

pub(crate) struct Slot<K, T> {
    pub(crate) hash: u64,
    pub(crate) id: u64,
    key: K,
    /// Set by `forget`: the flight keeps running for its callers but no longer takes new ones.
    forgotten: bool,
    /// Allocated when the second caller joins.
    pub(crate) shared: Option<Arc<Shared<T>>>,
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

/// One shard's flights. The first few live in the shard itself, on the cache lines of its
/// lock, so that a shard with few flights in progress (the usual case) is served without
/// touching another line: when callers on other cores used it last, that is one cache miss
/// instead of three (lock, control bytes, slot). More flights spill into a hash table.
pub(crate) struct Table<K, T> {
    /// Numbers this shard's flights: flight ids are `next_id * shard count + shard index`.
    next_id: u64,
    inline: [Option<Slot<K, T>>; INLINE_SLOTS],
    spill: HashTable<Slot<K, T>>,
}

/// Flights a shard holds before it spills into its hash table.
const INLINE_SLOTS: usize = 2;

impl<K, T> Table<K, T> {
    fn new() -> Self {
        Self {
            next_id: 0,
            inline: [const { None }; INLINE_SLOTS],
            spill: HashTable::new(),
        }
    }

    fn len(&self) -> usize {
        self.inline.iter().flatten().count() + self.spill.len()
    }

    fn slots_mut(&mut self) -> impl Iterator<Item = &mut Slot<K, T>> {
        self.inline
            .iter_mut()
            .flatten()
            .chain(self.spill.iter_mut())
    }

    /// The slot with this hash for which `eq` holds.
    #[inline]
    fn find_mut(&mut self, hash: u64, eq: impl Fn(&Slot<K, T>) -> bool) -> Option<&mut Slot<K, T>> {
        if let Some(slot) = self
            .inline
            .iter_mut()
            .flatten()
            .find(|slot| slot.hash == hash && eq(slot))
        {
            return Some(slot);
        }
        if self.spill.is_empty() {
            return None;
        }
        self.spill.find_mut(hash, eq)
    }

    /// Adds a slot; its key must not be current in the table.
    #[inline]
    fn insert(&mut self, slot: Slot<K, T>) {
        match self.inline.iter_mut().find(|free| free.is_none()) {
            Some(free) => *free = Some(slot),
            None => {
                self.spill.insert_unique(slot.hash, slot, |slot| slot.hash);
            }
        }
    }

    /// Removes the slot of flight `id`.
    #[inline]
    fn remove(&mut self, hash: u64, id: u64) -> Option<Slot<K, T>> {
        if let Some(inline) = self
            .inline
            .iter_mut()
            .find(|inline| inline.as_ref().is_some_and(|slot| slot.id == id))
        {
            return inline.take();
        }
        let entry = self.spill.find_entry(hash, |slot| slot.id == id).ok()?;
        Some(entry.remove().0)
    }
}

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
struct Shard<K, T>(Mutex<Table<K, T>>);

fn new_shards<K, T>(count: usize) -> Box<[Shard<K, T>]> {
    (0..count)
        .map(|_| Shard(Mutex::new(Table::new())))
        .collect()
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
        self.shards.iter().map(|shard| shard.0.lock().len()).sum()
    }

    /// Detaches every flight from its key: their callers still get their outcomes, and the
    /// next call for any key starts a new flight. Returns the number of flights detached.
    pub fn forget_all(&self) -> usize {
        let mut detached = 0;
        for shard in &*self.shards {
            let mut table = shard.0.lock();
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
    fn table(&self, hash: u64) -> &Mutex<Table<K, T>> {
        &self.shards[self.shard_index(hash)].0
    }

    #[inline]
    pub(crate) fn notify(&self, f: impl FnOnce(&dyn Observer)) {
        if let Some(observer) = &self.observer {
            f(&**observer);
        }
    }

    /// A number that identifies this group while it is borrowed (for re-entrancy checks).
    #[cfg(feature = "std")]
    pub(crate) fn address(&self) -> usize {
        core::ptr::from_ref(self).cast::<u8>() as usize
    }

    /// Removes the slot of flight `id` and returns its shared part.
    #[inline]
    fn remove(&self, hash: u64, id: u64) -> Option<Arc<Shared<T>>> {
        self.table(hash).lock().remove(hash, id)?.shared
    }

    /// Ends flight `id` with `outcome`, handing it to every caller still waiting.
    #[inline]
    pub(crate) fn finish(
        &self,
        hash: u64,
        id: u64,
        outcome: impl FnOnce() -> Outcome<T>,
        execution: Execution,
        started: u64,
    ) {
        let shared = self.remove(hash, id);
        self.notify(|o| {
            o.leader_finished(started, execution);
        });
        if let Some(shared) = shared {
            let wakers = shared.state.lock().publish(outcome);
            wakers.wake();
            shared.event.notify(usize::MAX);
        }
    }

    /// Registers one more waiter on flight `id` (see `Leader::subscribe`).
    pub(crate) fn subscribe(&self, hash: u64, id: u64) -> (Arc<Shared<T>>, u64) {
        let mut table = self.table(hash).lock();
        let slot = table
            .find_mut(hash, |slot| slot.id == id)
            .expect("a leader's flight is in the map until the leader finishes");
        let shared = slot
            .shared
            .get_or_insert_with(|| Arc::new(Shared::new(hash, id)));
        let ticket = shared.state.lock().join(None);
        (Arc::clone(shared), ticket)
    }

    /// The leader of flight `id` went away without an outcome: promote a waiter, or end the
    /// flight (failing its waiters, if any).
    pub(crate) fn abandon(&self, hash: u64, id: u64) {
        let mut table = self.table(hash).lock();
        let Some(slot) = table.find_mut(hash, |slot| slot.id == id) else {
            debug_assert!(false, "an abandoned flight is still in the map");
            return;
        };
        if let Some(shared) = slot.shared.clone() {
            let mut state = shared.state.lock();
            if self.policy == LeaderDropPolicy::Takeover {
                if let Some(waker) = state.promote_oldest() {
                    drop(state);
                    drop(table);
                    waker.wake();
                    shared.event.notify(usize::MAX);
                    return;
                }
            }
            let wakers = state.publish(|| Outcome::LeaderDropped);
            drop(state);
            table.remove(hash, id);
            drop(table);
            wakers.wake();
            shared.event.notify(usize::MAX);
        } else {
            table.remove(hash, id);
            drop(table);
        }
        self.notify(|o| o.flight_finished());
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
    pub fn enter_arc<Q>(self: &AllocArc<Self>, key: &Q) -> Result<Entry<AllocArc<Self>>, Error>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        enter_with(AllocArc::clone(self), key, None)
    }

    /// The number of callers waiting for the current flight of `key` (not counting its
    /// leader); `0` when no flight is in progress. Tests and dashboards use it to wait for
    /// callers to join instead of sleeping.
    pub fn waiters<Q>(&self, key: &Q) -> usize
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        self.with_current(key, |slot| {
            slot.and_then(|slot| slot.shared.as_ref())
                .map_or(0, |shared| shared.state.lock().live())
        })
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

    /// Runs `f` on the current flight of `key` (if any), under its shard's lock.
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
        Registered::Waiter { shared, ticket } => {
            Ok(Entry::Waiter(Waiter::new(group_ref, shared, ticket)))
        }
        Registered::Leader { hash, id, started } => {
            Ok(Entry::Leader(Leader::new(group_ref, hash, id, started)))
        }
    }
}

enum Registered<T> {
    Leader { hash: u64, id: u64, started: u64 },
    Waiter { shared: Arc<Shared<T>>, ticket: u64 },
}

impl<K, T, S> Group<K, T, S>
where
    K: Hash + Eq,
    S: BuildHasher,
{
    /// Joins the flight of `key`, or starts one: one hash, one lock, and a look at the
    /// shard's inline slots (a probe of its table too, once it has spilled).
    #[inline]
    fn register<Q>(&self, key: &Q, waker: Option<&Waker>) -> Result<Registered<T>, Error>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        let hash = self.hasher.hash_one(key);
        let mut table = self.table(hash).lock();
        if let Some(slot) = table.find_mut(hash, |slot| slot.is_current(key)) {
            #[cfg(feature = "std")]
            if crate::reentrancy::is_leading(self.address(), slot.id) {
                return Err(Error::Reentrant);
            }
            let id = slot.id;
            let shared = slot
                .shared
                .get_or_insert_with(|| Arc::new(Shared::new(hash, id)));
            let ticket = shared.state.lock().join(waker);
            return Ok(Registered::Waiter {
                shared: Arc::clone(shared),
                ticket,
            });
        }
        let id = table.next_id * self.shards.len() as u64 + self.shard_index(hash) as u64;
        table.next_id += 1;
        table.insert(Slot {
            hash,
            id,
            key: key.to_owned(),
            forgotten: false,
            shared: None,
        });
        drop(table);
        let mut started = 0;
        self.notify(|o| {
            started = o.leader_started();
        });
        Ok(Registered::Leader { hash, id, started })
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
