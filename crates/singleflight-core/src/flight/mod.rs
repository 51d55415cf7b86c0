//! Flights: the group's sharded table of flights in progress, and each flight's shared
//! part. Every transition of a flight is made here, under this module's locks; the handles
//! ([`Leader`](crate::Leader), [`Waiter`](crate::Waiter)) only choose which one, and the
//! group tells observers afterwards.
//!
//! # Implementation
//!
//! ## States
//!
//! A flight is a [`Slot`] in its shard's [`Table`] while new calls can join it, plus a
//! [`Flight`] once somebody joins. The flight's phase is `waiters::Phase`, matched in one
//! place (`FlightState::settled`):
//!
//! | state | slot | phase | what holds |
//! |---|---|---|---|
//! | **solo** | in the table, no [`Flight`] | — | a leader runs the work; nobody joined |
//! | **running** | in the table, with a [`Flight`] | `Running` | a leader runs the work; its queue has seats (some may have left) |
//! | **promoted** | in the table | `Promoted(ticket)` | the leader went away; the oldest waiter runs its own work once it notices and claims it (back to `Running`) |
//! | **forgotten** | in the table, `forgotten` set | any of the above | new calls no longer find it |
//! | **ended** | out of the table | `Ended { shared }` | the queue is empty; the outcome (if anyone is to read it) sits in the outcome slot |
//!
//! ## Transitions (one verb each)
//!
//! * **start**: none → solo, under the shard lock ([`Flights::register`], or
//!   [`Flights::start`] for a refresh, which starts a flight only if the key has none).
//! * **join**: solo or running → running, under the shard lock, then the flight's state
//!   lock ([`Flights::register`], [`Flight::join`]). Never after **end**: an ended flight
//!   is out of the table, and one that ends between the two locks turns the caller away.
//! * **leave**: a waiter gives up ([`Flight::leave`]): before the end it empties its seat;
//!   after, it gives up its claim on the outcome.
//! * **promote**: running → promoted, when the leader is dropped under the takeover policy
//!   ([`Flights::end`] with [`Ending::Dropped`]); **claim**: the promoted waiter takes the
//!   lead ([`Flight::check`]), or passes it on by being dropped, which ends its turn as a
//!   dropped leader's.
//! * **forget**: sets the slot's flag ([`Flights::with_current`]); nothing else changes.
//! * **end**: solo or running → ended, the one verb that ends a flight ([`Flights::end`]),
//!   with how it ends as data ([`Ending`]): a value the leader keeps a copy of, a value
//!   handed over to the waiters alone, a panic, or a dropped leader (which promotes a
//!   waiter instead, under takeover, if one is left). The slot leaves the table first (so
//!   nobody can join), then the outcome is stored ([`Flight::publish`]); the callers are
//!   woken once every lock is released and observers have heard of the end ([`Ended`]).
//! * **receive**: a waiter of an ended flight takes its copy ([`Flight::receive`]). A
//!   leader that keeps a copy clones it first, with no lock held, before the outcome is
//!   stored ([`Ended::pending_value`]), and none at all if nobody waits any more.
//!
//! ## Invariants (checked by `debug_assert`s)
//!
//! * `joined <= live <= waiting.len()`: `live` counts the occupied seats, `joined` the
//!   occupied seats of callers that joined (not the launcher of detached work).
//! * A promotion is pending only before the end; the end comes from a running flight and
//!   empties the queue.
//! * After the end, `readers` (in the outcome slot) is the number of waiters that have yet
//!   to receive or leave; the one that brings it to zero takes the original.
//!
//! ## Locks and user code
//!
//! This is the one statement of the lock order; `sync.rs` and the crate docs link here.
//! There are three kinds of lock, always taken in this order and never the reverse:
//!
//! 1. a **shard lock**: one shard's [`Table`] of slots (and its flight count);
//! 2. a **flight's state lock**: its phase, its queue of waiters and their counts;
//! 3. a **flight's outcome lock**: its outcome and reader count, and (with `std`) the
//!    counts of blocked threads and of promotions, and the blocked threads asleep on the
//!    flight's condition variable.
//!
//! No user code runs under a shard lock or a state lock but the key's `Eq`, during a probe,
//! which changes nothing: a panic there leaves every table as it was. Keys are hashed
//! before locking, cloned (`ToOwned`) with no lock held and dropped after the guard; wakers
//! are cloned before locking and woken or dropped after; observers are called with no lock
//! held. The one other place user code runs under a lock is the value's `Clone` in
//! [`Flight::receive_locked`], under the outcome lock held alone: `T` need only be `Send`,
//! so two threads must not clone from `&T` at once. That lock guards nothing user code sees
//! but the outcome; a panicking clone leaves it consistent (the reader count is settled
//! before the clone starts), and the panic is caught and resumed after the lock is released
//! (`unwind.rs`), so the lock is never poisoned. The outcome lock is taken under a state
//! lock only to store an outcome or count a promotion, and clones run only after the end,
//! when no promotion can come: so no shard or state lock ever waits for a clone.
//!
//! A blocked thread sleeps on the flight's condition variable over the outcome lock: it
//! releases the lock while it sleeps and wakes holding it, so it takes its copy with no
//! other lock. The end notifies the sleepers with no lock held; a promotion, under the
//! shard lock it is made under.

mod table;
mod waiters;

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use core::borrow::Borrow;
use core::task::Waker;

use crate::error::{Error, PanicMessage};
use crate::sync::{Arc, AtomicUsize, Mutex, Ordering};
use crate::types::{FlightRef, LeaderDropPolicy};
use table::{Slot, Table};
#[cfg(feature = "std")]
pub(crate) use waiters::Blocked;
use waiters::Wake;
pub(crate) use waiters::{Flight, Found, Outcome};

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

/// A group's flights in progress, split into shards by key hash.
pub(crate) struct Flights<K, T> {
    shards: Box<[Shard<K, T>]>,
}

/// How a caller registered ([`Flights::register`]).
pub(crate) enum Registered<T> {
    /// It started the flight at this place: it leads.
    Leader(FlightRef),
    /// It joined `flight`, holding `ticket`.
    Waiter { flight: Arc<Flight<T>>, ticket: u64 },
}

/// How a leader's flight ends: the data of the one verb, [`Flights::end`].
pub(crate) enum Ending<T> {
    /// The work produced this value, and the leader keeps a copy of it.
    Kept(T),
    /// The work produced this value, for the waiters alone: the leader keeps no copy
    /// (detached work, whose caller waits as a waiter; a leader that unwinds).
    HandedOver(T),
    /// The work panicked (or its runtime dropped detached work): waiters get
    /// [`Error::Panicked`] with this message.
    Panicked(PanicMessage),
    /// The leader went away without an outcome: under takeover the oldest waiter is
    /// promoted and the flight goes on; otherwise, or with nobody left, the waiters get
    /// [`Error::LeaderDropped`].
    Dropped,
}

/// A flight that [`Flights::end`] just ended (or handed on, after a dropped leader): what
/// is left to do once the locks are released. A value is not stored for the waiters yet,
/// so that the leader can clone its copy first ([`pending_value`](Self::pending_value))
/// and mark it as a failure ([`Shared::mark_failed`]); [`publish`](Self::publish) stores it. Dropping
/// this stores it if that has not happened, wakes the callers, then drops the flight's key:
/// all of it happens even if the leader's clone panics on the way.
#[must_use = "the callers sleep until woken"]
pub(crate) enum Ended<K, T> {
    /// Nobody ever joined (every uncontended call): nothing to store, nobody to wake. The
    /// leader's value comes back if it keeps one; the slot (key and all) is to drop.
    Alone {
        own: Option<T>,
        slot: Option<Slot<K, T>>,
    },
    /// Somebody joined, or a waiter was promoted.
    Shared(Shared<K, T>),
}

impl<K, T> Ended<K, T> {
    /// Whether the flight is over: `false` if a waiter was promoted to carry it on.
    pub(crate) fn over(&self) -> bool {
        match self {
            Self::Alone { .. } => true,
            Self::Shared(shared) => shared.over,
        }
    }
}

/// An [`Ended`] flight that somebody joined (see there).
#[must_use = "the callers sleep until woken"]
pub(crate) struct Shared<K, T> {
    /// Whether the flight is over: `false` if a waiter was promoted to carry it on.
    pub(crate) over: bool,
    /// Whether the outcome went to a caller that joined (the leader's `shared` answer).
    shared: bool,
    /// What is left to do for the callers that joined, if any did.
    joined: Option<Joined<T>>,
    /// The leader's value, when nobody waits for it (nobody joined, or all left).
    own: Option<T>,
    /// The flight's slot, key and all, dropped after the callers are woken.
    slot: Option<Slot<K, T>>,
}

/// The callers that joined an ended flight: first its outcome is still to be stored, then
/// they are still to be woken.
enum Joined<T> {
    Pending(Arc<Flight<T>>, Outcome<T>),
    Stored(Wake<T>),
}

impl<K, T> Shared<K, T> {
    /// The leader's own value, if nobody waits for it: the leader keeps it uncloned.
    #[inline]
    pub(crate) fn take_own(&mut self) -> Option<T> {
        self.own.take()
    }

    /// The value still to be stored for the waiters, for the leader to clone first.
    pub(crate) fn pending_value(&self) -> Option<&T> {
        match &self.joined {
            Some(Joined::Pending(_, Outcome::Value(value))) => Some(value),
            _ => None,
        }
    }

    /// Marks the value still to be stored for the waiters as a failure (the `Err` of
    /// fallible work), for their observers.
    pub(crate) fn mark_failed(&self) {
        if let Some(Joined::Pending(flight, _)) = &self.joined {
            flight.mark_failed();
        }
    }

    /// Stores the outcome for the waiters, once; returns the leader's `shared` answer.
    #[inline]
    pub(crate) fn publish(&mut self) -> bool {
        if let Some(Joined::Pending(..)) = self.joined {
            self.publish_pending();
        }
        self.shared
    }

    #[inline(never)]
    fn publish_pending(&mut self) {
        if let Some(Joined::Pending(flight, outcome)) = self.joined.take() {
            let (shared, wake) = Flight::publish(&flight, outcome);
            self.shared = shared;
            self.joined = Some(Joined::Stored(wake));
        }
    }

    /// Wakes the callers now (after the observer heard of the end).
    #[inline]
    pub(crate) fn wake(&mut self) {
        if let Some(Joined::Stored(_)) = self.joined {
            if let Some(Joined::Stored(wake)) = self.joined.take() {
                drop(wake);
            }
        }
    }
}

impl<K, T> Drop for Shared<K, T> {
    #[inline]
    fn drop(&mut self) {
        self.publish();
        self.wake();
        drop(self.slot.take());
    }
}

impl<K, T> Flights<K, T> {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards)
                .map(|_| Shard {
                    table: Mutex::new(Table::new()),
                    flights: AtomicUsize::new(0),
                })
                .collect(),
        }
    }

    pub(crate) fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Flights in progress, forgotten ones included.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.table.lock().len())
            .sum()
    }

    /// **forget** for every flight; returns how many were current.
    pub(crate) fn forget_all(&self) -> usize {
        let mut forgotten = 0;
        for shard in &*self.shards {
            let mut table = shard.table.lock();
            for slot in table.slots_mut().filter(|slot| !slot.forgotten) {
                slot.forgotten = true;
                forgotten += 1;
            }
        }
        forgotten
    }

    /// The shard of keys with this hash, chosen by bits that hashbrown uses neither for its
    /// control bytes (the top 7) nor for the bucket in any table under 2^32 slots.
    #[inline]
    fn index(&self, hash: u64) -> usize {
        (hash >> 32) as usize & (self.shards.len() - 1)
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Shard<K, T> {
        &self.shards[self.index(hash)]
    }

    /// Runs `f` on the current flight of `key` (if any), under its shard's lock: to count
    /// its waiters, or to **forget** it. `f` must not run user code.
    pub(crate) fn with_current<Q, R>(
        &self,
        hash: u64,
        key: &Q,
        f: impl FnOnce(Option<Current<'_, T>>) -> R,
    ) -> R
    where
        K: Borrow<Q>,
        Q: ?Sized + Eq,
    {
        let mut table = self.shard(hash).table.lock();
        f(table
            .find_mut(hash, |slot| slot.is_current(key))
            .map(|slot| Current {
                forgotten: &mut slot.forgotten,
                flight: slot.flight.as_ref(),
            }))
    }

    /// **start** or **join**: the caller joins the current flight of `key` (whose hash is
    /// `hash`), or starts one. `reentrant` tells whether this thread runs the work of the
    /// flight with that id (re-entrancy detection).
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
    pub(crate) fn register<Q>(
        &self,
        hash: u64,
        key: &Q,
        waker: Option<&Waker>,
        reentrant: impl Fn(u64) -> bool,
    ) -> Result<Registered<T>, Error>
    where
        K: Borrow<Q>,
        Q: ?Sized + Eq + ToOwned<Owned = K>,
    {
        let index = self.index(hash);
        let shard = &self.shards[index];
        // User code, under no lock: a caller that will most likely lead clones its key now.
        let mut owned: Option<K> = shard.looks_empty().then(|| key.to_owned());
        loop {
            let mut table = shard.table.lock();
            let flight = match table.find_mut(hash, |slot| slot.is_current(key)) {
                Some(slot) => {
                    if reentrant(slot.at.id) {
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
            // Ended between the two locks: that flight is over; look again.
        }
    }

    /// **register** a flight for `key` only if it has none: the new flight's place, or
    /// `None` (and nothing registered) if a flight for `key` is in progress. For a refresh,
    /// which starts a flight of its own and never waits for one.
    pub(crate) fn start<Q>(&self, hash: u64, key: &Q) -> Option<FlightRef>
    where
        K: Borrow<Q>,
        Q: ?Sized + Eq + ToOwned<Owned = K>,
    {
        let index = self.index(hash);
        let shard = &self.shards[index];
        // User code, under no lock; dropped after the lock if unused.
        let owned = key.to_owned();
        let mut table = shard.table.lock();
        if table.find_mut(hash, |slot| slot.is_current(key)).is_some() {
            drop(table);
            drop(owned);
            return None;
        }
        let at = FlightRef {
            hash,
            id: table.next_id * self.shards.len() as u64 + index as u64,
        };
        table.next_id += 1;
        table.insert(Slot {
            at,
            key: owned,
            forgotten: false,
            flight: None,
        });
        shard.count(&table);
        Some(at)
    }

    /// **join** for the caller that leads the flight at `at` from elsewhere (a detached
    /// call): a seat that is not counted as a join.
    pub(crate) fn subscribe(&self, at: FlightRef) -> (Arc<Flight<T>>, u64) {
        let mut table = self.shard(at.hash).table.lock();
        let slot = table
            .get_mut(at)
            .expect("a leader's flight is in the table until the leader ends it");
        let flight = Arc::clone(slot.flight.get_or_insert_with(|| Arc::new(Flight::new(at))));
        drop(table);
        let ticket = flight
            .join(false, None)
            .expect("a leader's flight does not end before its leader ends it");
        (flight, ticket)
    }

    /// **end**: the leader of the flight at `at` is done with it, as `ending` says. Under
    /// the takeover `policy`, a dropped leader's flight goes on with the oldest waiter
    /// promoted, if one is left; otherwise the flight's slot leaves the table (its key is
    /// dropped later, with no lock held) and its outcome is stored for every waiting caller
    /// (a value, once the leader has cloned its copy and said whether it is a failure: see
    /// [`Ended`]). Nothing is woken and no observer told here.
    // Always inlined: the path of every uncontended call, whose flight nobody joined; the
    // rest is out of line (`promote`, `end_shared`).
    #[inline(always)]
    pub(crate) fn end(
        &self,
        at: FlightRef,
        ending: Ending<T>,
        policy: LeaderDropPolicy,
    ) -> Ended<K, T> {
        let shard = self.shard(at.hash);
        let mut table = shard.table.lock();
        if let (Ending::Dropped, LeaderDropPolicy::Takeover) = (&ending, policy) {
            // Under the shard lock, so nobody joins a flight that is about to end.
            if let Some(waker) = Self::promote(&mut table, at) {
                drop(table);
                return Ended::Shared(Shared {
                    over: false,
                    shared: false,
                    joined: Some(Joined::Stored(Wake::promoted(waker))),
                    own: None,
                    slot: None,
                });
            }
        }
        let (flight, slot) = if core::mem::needs_drop::<K>() {
            let mut slot = table.remove(at);
            debug_assert!(slot.is_some(), "a flight is in the table until it ends");
            (slot.as_mut().and_then(|slot| slot.flight.take()), slot)
        } else {
            // The key's drop does nothing: it may go under the lock, in place.
            (table.remove_flight(at).flatten(), None)
        };
        shard.count(&table);
        drop(table);
        let Some(flight) = flight else {
            // Nobody ever joined: nothing to hand out (an outcome is dropped here).
            let own = match ending {
                Ending::Kept(value) => Some(value),
                _ => None,
            };
            return Ended::Alone { own, slot };
        };
        Ended::Shared(Self::end_shared(flight, ending, slot))
    }

    /// **promote** the oldest waiter of the flight at `at`, if it has one; its waker comes
    /// back, to wake once the locks are released.
    #[cold]
    #[inline(never)]
    fn promote(table: &mut Table<K, T>, at: FlightRef) -> Option<Option<Waker>> {
        table
            .get_mut(at)
            .and_then(|slot| slot.flight.as_ref())
            .and_then(|flight| flight.promote())
    }

    /// [`end`](Self::end) of a flight somebody joined, once its slot is out of the table.
    #[inline(never)]
    fn end_shared(
        flight: Arc<Flight<T>>,
        ending: Ending<T>,
        slot: Option<Slot<K, T>>,
    ) -> Shared<K, T> {
        let mut ended = Shared {
            over: true,
            shared: false,
            joined: None,
            own: None,
            slot,
        };
        let outcome = match ending {
            // Nobody waits for it any more (and now nobody can join): no clone for no one.
            Ending::Kept(value) if flight.end_unwatched() => {
                ended.own = Some(value);
                return ended;
            }
            // Somebody waits: the value waits too, for the leader's clone (and, like a
            // value handed over, for the leader to say whether it is a failure).
            Ending::Kept(value) | Ending::HandedOver(value) => {
                ended.joined = Some(Joined::Pending(flight, Outcome::Value(value)));
                return ended;
            }
            Ending::Panicked(message) => Outcome::Panicked(message),
            Ending::Dropped => Outcome::LeaderDropped,
        };
        ended.joined = Some(Joined::Pending(flight, outcome));
        ended.publish();
        ended
    }

    /// The bytes the spill table of the shard at `index` holds (for tests of the shrink).
    #[cfg(all(test, feature = "std"))]
    pub(crate) fn spill_bytes(&self, index: usize) -> usize {
        self.shards[index].table.lock().spill_bytes()
    }
}

/// The current flight of a key, as [`Flights::with_current`] shows it.
pub(crate) struct Current<'a, T> {
    pub(crate) forgotten: &'a mut bool,
    pub(crate) flight: Option<&'a Arc<Flight<T>>>,
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

#[cfg(all(test, not(loom)))]
mod tests;
