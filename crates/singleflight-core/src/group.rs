//! The group: a map from keys to the flights in progress.

use alloc::borrow::ToOwned;
use alloc::sync::Arc as AllocArc;
use core::borrow::Borrow;
use core::fmt;
use core::hash::{BuildHasher, Hash};

use hashbrown::HashTable;

use crate::error::Error;
use crate::flight::{Outcome, Shared, wake_all};
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

pub(crate) struct Table<K, T> {
    pub(crate) slots: HashTable<Slot<K, T>>,
    /// Numbers this shard's flights: flight ids are `next_id * SHARDS + shard index`.
    next_id: u64,
}

/// The map is split by key hash into this many shards, each under its own lock, so callers
/// of unrelated keys on different threads seldom share a lock or its cache line. A power
/// of two.
const SHARDS: usize = 16;

/// One shard, on cache lines of its own, so that no two shards' locks share one.
#[repr(align(128))]
struct Shard<K, T>(Mutex<Table<K, T>>);

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
    shards: [Shard<K, T>; SHARDS],
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
            shards: core::array::from_fn(|_| {
                Shard(Mutex::new(Table {
                    slots: HashTable::new(),
                    next_id: 0,
                }))
            }),
            hasher,
            policy: LeaderDropPolicy::default(),
            observer: None,
        }
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
            .map(|shard| shard.0.lock().slots.len())
            .sum()
    }

    /// Detaches every flight from its key: their callers still get their outcomes, and the
    /// next call for any key starts a new flight. Returns the number of flights detached.
    pub fn forget_all(&self) -> usize {
        let mut detached = 0;
        for shard in &self.shards {
            let mut table = shard.0.lock();
            for slot in table.slots.iter_mut().filter(|slot| !slot.forgotten) {
                slot.forgotten = true;
                detached += 1;
            }
        }
        detached
    }

    /// The shard of keys with this hash, chosen by bits that hashbrown uses neither for its
    /// control bytes (the top 7) nor for the bucket in any table under 2^48 slots.
    #[inline]
    fn shard_index(hash: u64) -> usize {
        (hash >> 48) as usize & (SHARDS - 1)
    }

    #[inline]
    fn table(&self, hash: u64) -> &Mutex<Table<K, T>> {
        &self.shards[Self::shard_index(hash)].0
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
    fn remove(&self, hash: u64, id: u64) -> Option<Arc<Shared<T>>> {
        let mut table = self.table(hash).lock();
        let slot = table.slots.find_entry(hash, |slot| slot.id == id).ok()?;
        slot.remove().0.shared
    }

    /// Ends flight `id` with `outcome`, handing it to every caller still waiting.
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
            o.execution_finished(started, execution);
            o.flight_finished();
        });
        if let Some(shared) = shared {
            let mut state = shared.state.lock();
            let wakers = if state.live() > 0 {
                state.publish(outcome())
            } else {
                alloc::vec::Vec::new()
            };
            drop(state);
            wake_all(wakers);
            shared.event.notify(usize::MAX);
        }
    }

    /// Registers one more waiter on flight `id` (see `Leader::subscribe`).
    pub(crate) fn subscribe(&self, hash: u64, id: u64) -> (Arc<Shared<T>>, u64) {
        let mut table = self.table(hash).lock();
        let slot = table
            .slots
            .find_mut(hash, |slot| slot.id == id)
            .expect("a leader's flight is in the map until the leader finishes");
        let shared = slot.shared.get_or_insert_with(|| Arc::new(Shared::new()));
        let ticket = shared.state.lock().join();
        (Arc::clone(shared), ticket)
    }

    /// The leader of flight `id` went away without an outcome: promote a waiter, or end the
    /// flight (failing its waiters, if any).
    pub(crate) fn abandon(&self, hash: u64, id: u64) {
        let mut table = self.table(hash).lock();
        let Ok(slot) = table.slots.find_entry(hash, |slot| slot.id == id) else {
            debug_assert!(false, "an abandoned flight is still in the map");
            return;
        };
        if let Some(shared) = slot.get().shared.clone() {
            let mut state = shared.state.lock();
            if self.policy == LeaderDropPolicy::Takeover {
                if let Some(waker) = state.promote_oldest() {
                    drop(state);
                    drop(table);
                    wake_all(waker);
                    shared.event.notify(usize::MAX);
                    return;
                }
            }
            let wakers = if state.live() > 0 {
                state.publish(Outcome::LeaderDropped)
            } else {
                alloc::vec::Vec::new()
            };
            drop(state);
            slot.remove();
            drop(table);
            wake_all(wakers);
            shared.event.notify(usize::MAX);
        } else {
            slot.remove();
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
        enter_with(self, key)
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
        enter_with(AllocArc::clone(self), key)
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
        f(table.slots.find_mut(hash, |slot| slot.is_current(key)))
    }
}

fn enter_with<G, Q>(group_ref: G, key: &Q) -> Result<Entry<G>, Error>
where
    G: GroupRef,
    G::Key: Hash + Eq + Borrow<Q>,
    G::Hasher: BuildHasher,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = G::Key>,
{
    match group_ref.group().register(key)? {
        Registered::Waiter {
            hash,
            id,
            shared,
            ticket,
        } => Ok(Entry::Waiter(Waiter::new(
            group_ref, hash, id, shared, ticket,
        ))),
        Registered::Leader { hash, id, started } => {
            Ok(Entry::Leader(Leader::new(group_ref, hash, id, started)))
        }
    }
}

enum Registered<T> {
    Leader {
        hash: u64,
        id: u64,
        started: u64,
    },
    Waiter {
        hash: u64,
        id: u64,
        shared: Arc<Shared<T>>,
        ticket: u64,
    },
}

impl<K, T, S> Group<K, T, S>
where
    K: Hash + Eq,
    S: BuildHasher,
{
    /// Joins the flight of `key`, or starts one: one hash, one probe, one lock.
    #[inline]
    fn register<Q>(&self, key: &Q) -> Result<Registered<T>, Error>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        let hash = self.hasher.hash_one(key);
        let mut guard = self.table(hash).lock();
        let Table { slots, next_id } = &mut *guard;
        let vacant = match slots.entry(hash, |slot| slot.is_current(key), |slot| slot.hash) {
            hashbrown::hash_table::Entry::Occupied(mut occupied) => {
                let slot = occupied.get_mut();
                #[cfg(feature = "std")]
                if crate::reentrancy::is_leading(self.address(), slot.id) {
                    return Err(Error::Reentrant);
                }
                let id = slot.id;
                let shared = slot.shared.get_or_insert_with(|| Arc::new(Shared::new()));
                let ticket = shared.state.lock().join();
                return Ok(Registered::Waiter {
                    hash,
                    id,
                    shared: Arc::clone(shared),
                    ticket,
                });
            }
            hashbrown::hash_table::Entry::Vacant(vacant) => vacant,
        };
        let id = *next_id * SHARDS as u64 + Self::shard_index(hash) as u64;
        *next_id += 1;
        vacant.insert(Slot {
            hash,
            id,
            key: key.to_owned(),
            forgotten: false,
            shared: None,
        });
        drop(guard);
        let mut started = 0;
        self.notify(|o| {
            o.flight_started();
            started = o.execution_started();
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
