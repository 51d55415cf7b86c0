//! Results that outlive their flight (DESIGN rule 16): the reuse window, and the refresh
//! inside it (stale-while-revalidate).
//!
//! With a window, a value a flight published is kept, per key, and handed to calls for
//! that key within the window without running the work ([`Reused`]). Off by default: a
//! group without a window has no store, and its calls pay one `Option` check at
//! registration and one at publication.
//!
//! With a refresh threshold `r` inside the window `d` (`refresh_after`), a call that finds
//! a value older than `r` still gets it at once, and the first such call that can hand its
//! work away starts the key's **refresh**: a flight of its own, registered in the flight
//! table like any other (so that callers finding the value expired after `d` join it) and
//! tracked here like any other (so that it stores only if no `forget` came first), whose
//! work the call launches detached (`call_loop.rs`). Nothing runs on a timer: a value
//! nobody asks for is never refreshed.
//!
//! # Implementation
//!
//! ## States of a key's entry
//!
//! | state | `value` | `pending` | `refresh` | what holds |
//! |---|---|---|---|---|
//! | **tracked** | none | `Some(id)` | any | flight `id` runs for the key; its value may be stored |
//! | **reusable** | `Some` | `None` | `Idle` | calls within the window get a clone; past `r`, the first that can refresh starts one |
//! | **reusable, starting** | `Some` | `None` | `Running` | a call is starting the refresh (between its look-up and its **track**); nobody else starts one |
//! | **reusable, tracked** | `Some` | `Some(id)` | `Running` or `Idle` | the value is served while flight `id` (a refresh, or a flight that started as the old value expired) runs |
//! | **reusable, failed** | `Some` | `None` | `Failed` | a refresh of this value failed: it is served until `d`, and not refreshed again |
//!
//! An entry with neither a value nor a pending flight is removed at once. Transitions:
//!
//! * **refresh**: a look-up by a caller that can start a refresh finds the value past its
//!   threshold, `Idle` and untracked: `refresh` becomes `Running` under the shard lock, so
//!   that one caller, whatever the number, starts it ([`Reuse::lookup`] returns
//!   [`Lookup::Stale`]); that caller then registers the refresh's flight, only if the key
//!   has none (`Flights::start`), and **track**s it. If the key had a flight after all,
//!   `refresh` goes back to `Idle` ([`Reuse::refresh_not_started`]).
//! * **track**: a caller that starts a flight records the flight's id ([`Reuse::track`]),
//!   unless a `forget` of the key's shard came between its look-up and now (the shard's
//!   `generation` moved): then its flight never stores.
//! * **store**: the flight publishes a reusable outcome ([`Reuse::store`]), before its slot
//!   leaves the flight table, so that no caller finds neither the flight nor the value. Only
//!   the flight whose id is `pending` stores: a forgotten flight's entry is gone, or belongs
//!   to a newer flight. The stored value is fresh: `refresh` is `Idle` again, with a
//!   threshold of its own.
//! * **abandon**: the flight ended with nothing to store (a panic, a dropped leader with
//!   nobody to take over, an outcome the policy does not reuse): `pending` is cleared. If
//!   it was a refresh (`Running`), `refresh` becomes `Failed` and the observer hears of it
//!   (`refresh_failed`); the old value, if still within `d`, stays. A refresh's error is
//!   never stored, even under an error policy that keeps errors.
//! * **expire**: on every look-up and track, up to [`EXPIRE_PER_CALL`] entries at the front
//!   of the shard's expiry queue are checked and dropped if their window is over, and every
//!   [`SWEEP_EVERY`] look-ups another shard's queue is, in turn (so a shard nobody calls
//!   empties too); a look-up that finds an expired value drops it;
//!   [`Reuse::purge_expired`] drops them all.
//! * **forget**: the entry is removed and the shard's `generation` moves on: a refresh
//!   running for it finds no `pending` entry of its own when it ends, and stores nothing.
//!
//! ## Locks and user code
//!
//! Each store shard has one lock, a leaf: it is never held while another lock of the group
//! is taken, and no other lock is held while it is taken. Under it run only hashbrown's
//! probes and the key's `Eq` during a probe (which changes nothing), as under a flight
//! shard's lock. The clock, the error policy, the value's `Drop` and the key's `ToOwned`
//! and `Drop` run with no lock held: whatever leaves the store is dropped after the lock.
//! Each value sits in a [`Cell`] (an `Arc` of a lock of its own), which is cloned under the
//! shard lock; the value's `Clone` then runs under the cell's lock held alone, as a
//! waiter's clone runs under its flight's outcome lock: `T` need only be `Send`, so two
//! threads must not clone one `&T` at once. A clone that panics changes nothing, and the
//! cell's lock ignores poisoning.

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::borrow::Borrow;
use core::fmt;
use core::time::Duration;

use hashbrown::HashTable;

use crate::rt::Clock;
use crate::sync::{AtomicUsize, Mutex, Ordering};
use crate::types::FlightRef;
use crate::unwind;

/// Shards of a store, each under its own lock (picked by the same hash bits as the flights').
const SHARDS: usize = if cfg!(loom) { 1 } else { 16 };

/// Expired entries a look-up or a track drops at most, besides the one it finds.
pub(crate) const EXPIRE_PER_CALL: usize = 4;

/// Every this many look-ups, one more shard's expiry queue is checked, in turn (and up to
/// `EXPIRE_PER_CALL * SWEEP_EVERY` of its entries dropped: the same rate per look-up as a
/// sweep at every look-up, with one lock taken in this many instead of at each).
pub(crate) const SWEEP_EVERY: usize = 64;

/// A table this large or larger shrinks once three quarters of it stand empty.
const SHRINK_FROM: usize = 32;

/// A kept value, under a lock of its own (see the module docs).
type Cell<T> = Arc<Mutex<T>>;

/// The error policy: the window of a failed outcome, if it is to be reused.
pub(crate) type ErrorPolicy<T> = Box<dyn Fn(&T) -> Option<Duration> + Send + Sync>;

/// A group's reusable values and how long they are kept.
pub(crate) struct Reuse<K, T> {
    clock: Box<dyn Clock + Send + Sync>,
    /// The values' `Clone`, for the flights that end with a value another stored.
    clone: fn(&T) -> T,
    window: Duration,
    refresh_after: Option<Duration>,
    errors: Option<ErrorPolicy<T>>,
    max: usize,
    /// Entries holding a value, in every shard (bounded by `max`).
    values: AtomicUsize,
    /// Counts look-ups, to sweep the shards in turn.
    sweep: AtomicUsize,
    shards: Box<[Mutex<Shard<K, T>>]>,
}

struct Shard<K, T> {
    table: HashTable<Stored<K, T>>,
    /// Values in the order they were stored, with when they expire.
    expiry: VecDeque<Expiry>,
    /// Moves on at every `forget` that reaches this shard.
    generation: u64,
    /// Numbers stored values, so that the expiry queue can tell a value from its successor.
    seq: u64,
}

struct Stored<K, T> {
    key: K,
    hash: u64,
    value: Option<Fresh<T>>,
    /// The flight that may store a value here.
    pending: Option<u64>,
    refresh: Refresh,
}

struct Fresh<T> {
    value: Cell<T>,
    stored: Duration,
    expires: Duration,
    /// When a call starts a refresh (stale-while-revalidate), for successes only.
    refresh_at: Option<Duration>,
    seq: u64,
}

struct Expiry {
    hash: u64,
    seq: u64,
    expires: Duration,
}

/// Whether a key's current value is being refreshed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refresh {
    /// No refresh was started for the current value.
    Idle,
    /// A call started one; it stores its value (or fails) as `pending`.
    Running,
    /// One failed: the value is served until its window ends, and not refreshed again.
    Failed,
}

/// A value served from the reuse window: what [`Entered::Reused`](crate::Entered::Reused)
/// carries.
pub struct Reused<T> {
    value: Cell<T>,
    age: Duration,
}

impl<T> Reused<T> {
    /// How long ago the flight that produced it published it.
    pub fn age(&self) -> Duration {
        self.age
    }

    /// The value: a clone of the kept one (or the kept one itself, if the store let go of
    /// it meanwhile).
    ///
    /// # Panics
    ///
    /// If the value's `Clone` panics; the kept value is unchanged.
    pub fn into_value(self) -> T
    where
        T: Clone,
    {
        match self.clone_value(T::clone) {
            Ok(value) => value,
            Err(payload) => unwind::resume(payload),
        }
    }

    /// A clone of the value made with `clone` (user code: its panic is handed back).
    pub(crate) fn clone_value(&self, clone: fn(&T) -> T) -> Result<T, crate::unwind::Payload> {
        let value = self.value.lock();
        unwind::catch(|| clone(&value))
    }
}

impl<T> fmt::Debug for Reused<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reused")
            .field("age", &self.age)
            .finish_non_exhaustive()
    }
}

/// What a look-up found.
pub(crate) enum Lookup<T> {
    /// A value within its window.
    Fresh(Reused<T>),
    /// A value within its window but past its refresh threshold, and this caller is the
    /// one to start the key's refresh: a flight that tracks with this generation.
    Stale(Reused<T>, u64),
    /// Nothing to reuse; a flight this caller starts tracks with this generation.
    Miss(u64),
}

/// What a publication did with the refresh it ended, if it was one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Not a refresh, or a refresh that stored its value.
    Done,
    /// A refresh that failed: the old value stays until its window ends.
    RefreshFailed,
}

/// What leaves a store shard, to be dropped once its lock is released.
struct Gone<K, T> {
    keys: Vec<K>,
    values: Vec<Cell<T>>,
}

impl<K, T> Gone<K, T> {
    const fn new() -> Self {
        Self {
            keys: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Drops what was taken out (user code: the keys' and values' `Drop`), once the lock
    /// is released. Nothing to do when nothing was taken, as on almost every look-up.
    #[inline]
    fn release(self) {
        if self.keys.capacity() == 0 && self.values.capacity() == 0 {
            // Two empty vectors that never allocated: nothing to free.
            core::mem::forget(self);
        } else {
            drop(self);
        }
    }
}

impl<K, T> Shard<K, T> {
    fn new() -> Self {
        Self {
            table: HashTable::new(),
            expiry: VecDeque::new(),
            generation: 0,
            seq: 0,
        }
    }

    /// Takes the value of the entry at `hash` whose value is numbered `seq` (or any value,
    /// without `seq`) out into `gone`, and removes the entry if nothing is left in it.
    fn take_value(
        &mut self,
        hash: u64,
        eq: impl Fn(&Stored<K, T>) -> bool,
        gone: &mut Gone<K, T>,
        values: &AtomicUsize,
    ) {
        let Ok(entry) = self.table.find_entry(hash, eq) else {
            return;
        };
        let empty = {
            let stored = entry.get();
            stored.pending.is_none()
        };
        if empty {
            let (stored, _) = entry.remove();
            if let Some(fresh) = stored.value {
                values.fetch_sub(1, Ordering::Relaxed);
                gone.values.push(fresh.value);
            }
            gone.keys.push(stored.key);
            self.shrink();
        } else {
            // A flight is tracked here (a refresh): the entry stays for it.
            let stored = entry.into_mut();
            if let Some(fresh) = stored.value.take() {
                values.fetch_sub(1, Ordering::Relaxed);
                gone.values.push(fresh.value);
            }
        }
    }

    /// **expire**: drops up to `limit` values at the front of the expiry queue whose window
    /// is over at `now`.
    /// Whether the front of the expiry queue is due: [`expire`](Self::expire) has work.
    #[inline]
    fn due(&self, now: Duration) -> bool {
        self.expiry
            .front()
            .is_some_and(|front| front.expires <= now)
    }

    fn expire(&mut self, now: Duration, limit: usize, gone: &mut Gone<K, T>, values: &AtomicUsize) {
        for _ in 0..limit {
            match self.expiry.front() {
                Some(front) if front.expires <= now => {}
                _ => break,
            }
            let Some(Expiry { hash, seq, .. }) = self.expiry.pop_front() else {
                break;
            };
            self.take_value(
                hash,
                |stored| stored.value.as_ref().is_some_and(|fresh| fresh.seq == seq),
                gone,
                values,
            );
        }
        if self.expiry.capacity() >= SHRINK_FROM && self.expiry.len() <= self.expiry.capacity() / 4
        {
            self.expiry.shrink_to(self.expiry.len() * 2);
        }
    }

    /// Gives the table's memory back once it is mostly empty.
    fn shrink(&mut self) {
        let (len, capacity) = (self.table.len(), self.table.capacity());
        if len == 0 && capacity > 0 {
            self.table = HashTable::new();
        } else if capacity >= SHRINK_FROM && len <= capacity / 4 {
            self.table.shrink_to(len * 2, |stored| stored.hash);
        }
    }
}

impl<K, T> Reuse<K, T> {
    pub(crate) fn new(window: Duration, clock: Box<dyn Clock + Send + Sync>) -> Self
    where
        T: Clone,
    {
        Self {
            clock,
            clone: T::clone,
            window,
            refresh_after: None,
            errors: None,
            max: usize::MAX,
            values: AtomicUsize::new(0),
            sweep: AtomicUsize::new(0),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
        }
    }

    /// The values' `Clone`.
    pub(crate) fn clone_fn(&self) -> fn(&T) -> T {
        self.clone
    }

    pub(crate) fn set_window(&mut self, window: Duration) {
        if let Some(after) = self.refresh_after {
            assert!(
                after < window,
                "the refresh threshold ({after:?}) must be shorter than the reuse window ({window:?})"
            );
        }
        self.window = window;
    }

    /// Sets the refresh threshold (stale-while-revalidate).
    ///
    /// # Panics
    ///
    /// If `after` is not shorter than the window.
    pub(crate) fn set_refresh_after(&mut self, after: Duration) {
        assert!(
            after < self.window,
            "the refresh threshold ({after:?}) must be shorter than the reuse window ({:?})",
            self.window
        );
        self.refresh_after = Some(after);
    }

    pub(crate) fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    pub(crate) fn set_errors(&mut self, errors: ErrorPolicy<T>) {
        self.errors = Some(errors);
    }

    /// Reusable values held (expired ones not yet dropped included).
    pub(crate) fn len(&self) -> usize {
        self.values.load(Ordering::Relaxed)
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Mutex<Shard<K, T>> {
        &self.shards[(hash >> 32) as usize & (self.shards.len() - 1)]
    }

    /// The value of `key` if it is within its window; otherwise the generation a flight
    /// this caller starts must track with. If `refresh` (the caller can start a refresh),
    /// a value found past its refresh threshold makes this caller the one to start the
    /// key's refresh ([`Lookup::Stale`]), once per value: **refresh** (idle → running).
    pub(crate) fn lookup<Q>(&self, hash: u64, key: &Q, refresh: bool) -> Lookup<T>
    where
        K: Borrow<Q>,
        Q: ?Sized + Eq,
    {
        let now = self.clock.now();
        let mut gone = Gone::new();
        let shard = self.shard(hash);
        let mut guard = shard.lock();
        if guard.due(now) {
            guard.expire(now, EXPIRE_PER_CALL, &mut gone, &self.values);
        }
        let generation = guard.generation;
        let found = guard
            .table
            .find_mut(hash, |stored| stored.key.borrow() == key)
            .map(|stored| match &stored.value {
                Some(fresh) if fresh.expires > now => {
                    let start = refresh
                        && stored.refresh == Refresh::Idle
                        && stored.pending.is_none()
                        && fresh.refresh_at.is_some_and(|at| at <= now);
                    if start {
                        stored.refresh = Refresh::Running;
                    }
                    let reused = Reused {
                        value: Arc::clone(&fresh.value),
                        age: now.saturating_sub(fresh.stored),
                    };
                    Some((reused, start))
                }
                Some(_) => None,
                None => None,
            });
        let found = match found {
            Some(Some(found)) => Some(found),
            Some(None) => {
                // Found, but over: drop the value now.
                guard.take_value(
                    hash,
                    |stored| stored.key.borrow() == key,
                    &mut gone,
                    &self.values,
                );
                None
            }
            None => None,
        };
        drop(guard);
        gone.release();
        self.sweep(now);
        match found {
            Some((reused, false)) => Lookup::Fresh(reused),
            Some((reused, true)) => Lookup::Stale(reused, generation),
            None => Lookup::Miss(generation),
        }
    }

    /// **refresh** undone: the caller that [`lookup`](Self::lookup) made the one to start
    /// `key`'s refresh found a flight for the key in progress, and started none. The next
    /// call past the threshold may start one (unless that flight stores a value first).
    pub(crate) fn refresh_not_started<Q>(&self, hash: u64, key: &Q)
    where
        K: Borrow<Q>,
        Q: ?Sized + Eq,
    {
        let mut guard = self.shard(hash).lock();
        if let Some(stored) = guard
            .table
            .find_mut(hash, |stored| stored.key.borrow() == key)
        {
            if stored.refresh == Refresh::Running && stored.pending.is_none() {
                stored.refresh = Refresh::Idle;
            }
        }
        drop(guard);
    }

    /// Every [`SWEEP_EVERY`] look-ups, checks the front of one more shard's expiry queue,
    /// taking the shards in turn.
    ///
    /// The count is a plain load and store, not a read-modify-write: two look-ups at once
    /// may count one, which only delays a sweep, and every reuse hit is spared a locked
    /// instruction.
    #[inline]
    fn sweep(&self, now: Duration) {
        let turn = self.sweep.load(Ordering::Relaxed);
        self.sweep.store(turn.wrapping_add(1), Ordering::Relaxed);
        if turn % SWEEP_EVERY == 0 {
            self.sweep_shard(turn / SWEEP_EVERY, now);
        }
    }

    #[cold]
    #[inline(never)]
    fn sweep_shard(&self, turn: usize, now: Duration) {
        let shard = &self.shards[turn % self.shards.len()];
        let mut gone = Gone::new();
        let mut guard = shard.lock();
        if guard.due(now) {
            guard.expire(now, EXPIRE_PER_CALL * SWEEP_EVERY, &mut gone, &self.values);
        }
        drop(guard);
        gone.release();
    }

    /// **track**: the flight at `at`, just started by a caller whose look-up returned
    /// `generation`, may store its value for `key`.
    ///
    /// Unless the look-up missed (`missed`: not a refresh, whose value is within its window
    /// by design) and another flight stored a value for `key` between that look-up and
    /// this caller's registration (it ended and left the flight table in the meantime):
    /// then that value, within its window, is returned instead, nothing is tracked, and the
    /// caller must not run the work (rule 16: a call within the window gets the value).
    pub(crate) fn track<Q>(
        &self,
        at: FlightRef,
        key: &Q,
        generation: u64,
        missed: bool,
    ) -> Option<Reused<T>>
    where
        K: Borrow<Q>,
        Q: ?Sized + Eq + ToOwned<Owned = K>,
    {
        // User code, under no lock; dropped after the lock if unused.
        let mut owned = Some(key.to_owned());
        let mut gone = Gone::new();
        let now = self.clock.now();
        let shard = self.shard(at.hash);
        let mut guard = shard.lock();
        if guard.generation == generation {
            guard.expire(now, EXPIRE_PER_CALL, &mut gone, &self.values);
            match guard
                .table
                .find_mut(at.hash, |stored| stored.key.borrow() == key)
            {
                Some(stored) => match &stored.value {
                    // A miss at the look-up was dropped or expired there (the clock does
                    // not go back), so a value within its window now is a newer one.
                    Some(fresh) if missed && fresh.expires > now => {
                        let reused = Reused {
                            value: Arc::clone(&fresh.value),
                            age: now.saturating_sub(fresh.stored),
                        };
                        drop(guard);
                        drop(gone);
                        drop(owned);
                        return Some(reused);
                    }
                    _ => stored.pending = Some(at.id),
                },
                None => {
                    let key = owned.take().expect("the key is made before the lock");
                    guard.table.insert_unique(
                        at.hash,
                        Stored {
                            key,
                            hash: at.hash,
                            value: None,
                            pending: Some(at.id),
                            refresh: Refresh::Idle,
                        },
                        |stored| stored.hash,
                    );
                }
            }
        }
        drop(guard);
        drop(gone);
        drop(owned);
        None
    }

    /// The window of an outcome (`failed` says whether it is an error): the group's window
    /// for a value, the error policy's for an error. User code (the policy): no lock held.
    pub(crate) fn window_of(&self, value: &T, failed: bool) -> Option<Duration> {
        let window = if failed {
            self.errors.as_ref().and_then(|policy| policy(value))
        } else {
            Some(self.window)
        };
        window.filter(|window| !window.is_zero())
    }

    /// The outcome of the flight at `at` to store, if it is reusable: `value` is the
    /// outcome, `failed` whether it is an error. Runs the error policy and clones the value
    /// into the store's `Arc`: user code, with no lock held.
    pub(crate) fn prepare(&self, value: &T, failed: bool) -> Option<Publish<T>>
    where
        T: Clone,
    {
        let window = self.window_of(value, failed)?;
        Some(Publish {
            value: Arc::new(Mutex::new(value.clone())),
            window,
            failed,
        })
    }

    /// **store** (or **abandon**, with nothing to publish): the flight at `at` ended.
    /// Returns whether that ended a refresh that failed.
    pub(crate) fn store(&self, at: FlightRef, publish: Option<Publish<T>>) -> Ended {
        let now = self.clock.now();
        let refresh_after = self.refresh_after;
        let mut spare = publish;
        let mut gone = Gone::new();
        let mut guard = self.shard(at.hash).lock();
        let ended = guard.store(at, &mut spare, now, refresh_after, self, &mut gone);
        drop(guard);
        drop(gone);
        drop(spare);
        ended
    }

    /// **forget** for `key`: drops its value and stops any flight that started before from
    /// storing one. Returns whether a value was dropped.
    pub(crate) fn forget<Q>(&self, hash: u64, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: ?Sized + Eq,
    {
        let mut gone = None;
        let mut guard = self.shard(hash).lock();
        guard.generation += 1;
        if let Ok(entry) = guard
            .table
            .find_entry(hash, |stored| stored.key.borrow() == key)
        {
            gone = Some(entry.remove().0);
        }
        let had = gone.as_ref().is_some_and(|stored| stored.value.is_some());
        if had {
            self.values.fetch_sub(1, Ordering::Relaxed);
        }
        guard.shrink();
        drop(guard);
        drop(gone);
        had
    }

    /// **forget** for every key. Returns how many values were dropped.
    pub(crate) fn forget_all(&self) -> usize {
        let mut dropped = 0;
        for shard in &*self.shards {
            let mut guard = shard.lock();
            guard.generation += 1;
            let table = core::mem::take(&mut guard.table);
            guard.expiry = VecDeque::new();
            drop(guard);
            let values = table.iter().filter(|stored| stored.value.is_some()).count();
            self.values.fetch_sub(values, Ordering::Relaxed);
            dropped += values;
            drop(table);
        }
        dropped
    }

    /// **expire** everything due: drops every value whose window is over. Returns how many.
    pub(crate) fn purge_expired(&self) -> usize {
        let now = self.clock.now();
        let mut purged = 0;
        for shard in &*self.shards {
            let mut gone = Gone::new();
            let mut guard = shard.lock();
            let before = self.values.load(Ordering::Relaxed);
            guard.expire(now, usize::MAX, &mut gone, &self.values);
            // Values stored with a shorter window than one ahead of them in the queue.
            let Shard { table, .. } = &mut *guard;
            for stored in table.iter_mut() {
                if stored
                    .value
                    .as_ref()
                    .is_some_and(|fresh| fresh.expires <= now)
                {
                    if let Some(fresh) = stored.value.take() {
                        self.values.fetch_sub(1, Ordering::Relaxed);
                        gone.values.push(fresh.value);
                    }
                }
            }
            for stored in
                table.extract_if(|stored| stored.value.is_none() && stored.pending.is_none())
            {
                gone.keys.push(stored.key);
            }
            guard.expiry.retain(|expiry| expiry.expires > now);
            guard.expiry.shrink_to_fit();
            guard.shrink();
            drop(guard);
            purged += gone.values.len();
            let _ = before;
            drop(gone);
        }
        purged
    }
}

/// A reusable outcome on its way into the store (see [`Reuse::prepare`]).
pub(crate) struct Publish<T> {
    value: Cell<T>,
    window: Duration,
    failed: bool,
}

impl<K, T> Shard<K, T> {
    /// [`Reuse::store`] under the shard's lock: what is not kept stays in `publish`, to be
    /// dropped after the lock.
    fn store(
        &mut self,
        at: FlightRef,
        publish: &mut Option<Publish<T>>,
        now: Duration,
        refresh_after: Option<Duration>,
        reuse: &Reuse<K, T>,
        gone: &mut Gone<K, T>,
    ) -> Ended {
        let pending = |stored: &Stored<K, T>| stored.pending == Some(at.id);
        let Some(stored) = self.table.find(at.hash, pending) else {
            // Forgotten, or a newer flight took the entry: nothing is stored.
            return Ended::Done;
        };
        let had_value = stored.value.is_some();
        let refreshing = stored.refresh == Refresh::Running;
        let to_store = match publish.take() {
            // A refresh that failed stores nothing, whatever the error policy: the value
            // it was to replace is served until its window ends.
            Some(failed) if refreshing && failed.failed => {
                *publish = Some(failed);
                None
            }
            Some(publish) if had_value || reuse.admit() => Some(publish),
            Some(refused) => {
                // Full: make room from this shard's expired values, then try once more.
                self.expire(now, usize::MAX, gone, &reuse.values);
                if reuse.admit() {
                    Some(refused)
                } else {
                    *publish = Some(refused);
                    None
                }
            }
            None => None,
        };
        let Ok(mut entry) = self.table.find_entry(at.hash, pending) else {
            unreachable!("a tracked entry stays until its flight ends")
        };
        let stored = entry.get_mut();
        stored.pending = None;
        match to_store {
            Some(Publish {
                value,
                window,
                failed,
            }) => {
                self.seq += 1;
                let expires = now.saturating_add(window);
                let fresh = Fresh {
                    value,
                    stored: now,
                    expires,
                    refresh_at: refresh_after
                        .filter(|_| !failed)
                        .map(|after| now.saturating_add(after)),
                    seq: self.seq,
                };
                if let Some(old) = stored.value.replace(fresh) {
                    gone.values.push(old.value);
                }
                stored.refresh = Refresh::Idle;
                self.expiry.push_back(Expiry {
                    hash: at.hash,
                    seq: self.seq,
                    expires,
                });
                Ended::Done
            }
            None => {
                if refreshing {
                    stored.refresh = Refresh::Failed;
                }
                if stored.value.is_none() {
                    gone.keys.push(entry.remove().0.key);
                    self.shrink();
                }
                if refreshing {
                    Ended::RefreshFailed
                } else {
                    Ended::Done
                }
            }
        }
    }
}

impl<K, T> Reuse<K, T> {
    /// Counts one more value, if the bound allows it.
    fn admit(&self) -> bool {
        if self.values.fetch_add(1, Ordering::Relaxed) < self.max {
            true
        } else {
            self.values.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }
}
