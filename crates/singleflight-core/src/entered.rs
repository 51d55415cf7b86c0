//! Registration: a caller becomes the [`Leader`] of a new flight or a [`Waiter`] of the
//! current one ([`Group::enter`]), and the observer hears of a new flight.

use alloc::borrow::ToOwned;
use alloc::sync::Arc as AllocArc;
use core::borrow::Borrow;
use core::fmt;
use core::hash::{BuildHasher, Hash};
use core::task::Waker;

use crate::error::Error;
use crate::flight::Registered;
use crate::group::{Group, GroupRef};
use crate::leader::Leader;
use crate::reuse::{Lookup, Reused};
use crate::unwind;
use crate::waiter::Waiter;

/// How a caller entered a group, as [`Group::enter`] returns it: as the leader of a new
/// flight, a waiter on one in progress, or served a reused value. (Named apart from the
/// map-`Entry` of `std` and `hashbrown`, which it is not.)
pub enum Entered<G: GroupRef> {
    /// No flight was in progress: this caller must run the work and complete the flight.
    Leader(Leader<G>),
    /// A flight was in progress: this caller waits for its outcome.
    Waiter(Waiter<G>),
    /// The group has a reuse window ([`Group::reuse_for`]) and a flight published a value
    /// for the key within it: this caller takes it, and registers nothing.
    Reused(Reused<G::Value>),
}

impl<G: GroupRef> fmt::Debug for Entered<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Leader(leader) => f.debug_tuple("Leader").field(leader).finish(),
            Self::Waiter(waiter) => f.debug_tuple("Waiter").field(waiter).finish(),
            Self::Reused(reused) => f.debug_tuple("Reused").field(reused).finish(),
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
    /// This is the building block of the front-ends; [`call`](Group::call) wraps it in a
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
    /// [`leader_started`](crate::Observer::leader_started) does: the panic is this caller's, and
    /// leaves the group as it was (a flight whose start hook panicked is abandoned, as if
    /// its leader had been dropped).
    ///
    /// # Examples
    ///
    /// ```
    /// use singleflight_core::{Entered, Group};
    ///
    /// let group = Group::<String, u32>::new();
    /// let Ok(Entered::Leader(leader)) = group.enter("answer") else { unreachable!() };
    /// let Ok(Entered::Waiter(waiter)) = group.enter("answer") else { unreachable!() };
    /// assert_eq!(group.waiters("answer"), 1);
    /// assert_eq!(leader.complete(42), 42);
    /// # #[cfg(feature = "std")]
    /// assert!(matches!(waiter.wait(), singleflight_core::Waited::Outcome(Ok(42))));
    /// ```
    pub fn enter<Q>(&self, key: &Q) -> Result<Entered<&Self>, Error>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        enter_with(self, key, None, None)
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
    pub fn enter_arc<Q>(self: &AllocArc<Self>, key: &Q) -> Result<Entered<AllocArc<Self>>, Error>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        enter_with(AllocArc::clone(self), key, None, None)
    }
}

/// Hands a refresh's leader to the work of the call that started it, to run detached.
pub(crate) type Refresher<'r, G> = &'r mut dyn FnMut(Leader<G>);

/// Registers a caller (see [`Group::enter`]); an async caller passes its task's `waker`,
/// to be woken when the outcome arrives, so that it can sleep at once.
///
/// A caller that can hand its work to a refresh passes `refresh`: if it finds its key's
/// value past the refresh threshold, and no refresh of it has started, it starts one (a
/// flight of its own, which `refresh` must run where no caller's cancellation reaches it)
/// and gets the value at once, as [`Entered::Reused`].
#[inline(always)]
pub(crate) fn enter_with<G, Q>(
    group_ref: G,
    key: &Q,
    waker: Option<&Waker>,
    refresh: Option<Refresher<'_, G>>,
) -> Result<Entered<G>, Error>
where
    G: GroupRef,
    G::Key: Hash + Eq + Borrow<Q>,
    G::Hasher: BuildHasher,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = G::Key>,
{
    let group = group_ref.group();
    let hash = group.hash(key);
    // With a reuse window: a value to take, or the generation a new flight tracks with.
    let tracks = match group.reuse() {
        None => None,
        Some(_) => match reuse_lookup(group, hash, key, refresh.is_some()) {
            Ok((reused, None)) => return Ok(Entered::Reused(reused)),
            Ok((reused, Some(generation))) => {
                if let Some(refresh) = refresh {
                    start_refresh(group_ref.clone(), hash, key, generation, refresh);
                }
                return Ok(Entered::Reused(reused));
            }
            Err(generation) => Some(generation),
        },
    };
    let registered = group
        .flights()
        .register(hash, key, waker, |id| group.is_leading(id))?;
    match registered {
        Registered::Waiter { flight, ticket } => {
            let mut waiter = Waiter::new(group_ref, flight, ticket, waker.is_some());
            waiter.observe_start(key);
            Ok(Entered::Waiter(waiter))
        }
        Registered::Leader(at) if tracks.is_none() && unwind::CATCHES => {
            // The uncontended path. The hook's panic is caught, so the guard is made after
            // it, whole, where it is returned: made before, it would be copied there through
            // memory right after its fields were stored (a store-forwarding stall).
            let started = observe_leader_started(group, at, key);
            match started {
                Ok(started) => Ok(Entered::Leader(Leader::started(group_ref, at, started))),
                Err(payload) => {
                    // Dropping the guard ends the flight like any dropped leader's.
                    drop(Leader::new(group_ref, at));
                    unwind::resume(payload)
                }
            }
        }
        Registered::Leader(at) => {
            // The guard exists before the hook runs: if the hook panics, dropping the guard
            // ends the flight like any dropped leader's, and then the panic goes on.
            let mut leader = Leader::new(group_ref, at);
            if let Some(generation) = tracks {
                // After the guard: if the key's `ToOwned` panics, the flight is abandoned.
                if let Some(reused) = track(leader.group(), at, key, generation, true) {
                    return Ok(serve_stored(leader, key, reused));
                }
            }
            let group = leader.group();
            let started = observe_leader_started(group, at, key);
            match started {
                Ok(started) => leader.set_started(started),
                Err(payload) => {
                    drop(leader);
                    unwind::resume(payload)
                }
            }
            Ok(Entered::Leader(leader))
        }
    }
}

/// Tells the observer (if any) that a caller started the flight at `at` for `key`: its
/// token for the execution, or the hook's panic, caught (with `std`) for the caller to
/// resume once the flight is ended.
#[inline]
fn observe_leader_started<K, T, S, Q>(
    group: &Group<K, T, S>,
    at: crate::types::FlightRef,
    key: &Q,
) -> Result<u64, unwind::Payload>
where
    K: Borrow<Q>,
    Q: ?Sized + Hash + ToOwned<Owned = K>,
{
    group.observe_caught(|o| {
        let key = group.key_ref(key);
        o.leader_started(&group.info(at).with_key(&key))
    })
}

/// **track** the flight a caller just started, for its reuse window: `Some` if another
/// flight stored the key's value since this caller's look-up (see [`serve_stored`]).
#[cold]
#[inline(never)]
fn track<K, T, S, Q>(
    group: &Group<K, T, S>,
    at: crate::types::FlightRef,
    key: &Q,
    generation: u64,
    missed: bool,
) -> Option<Reused<T>>
where
    K: Borrow<Q>,
    Q: ?Sized + Eq + ToOwned<Owned = K>,
{
    group.reuse()?.track(at, key, generation, missed)
}

/// A caller's look-up missed, and another flight stored the key's value before the caller
/// registered as a leader: the caller gets that value as [`Entered::Reused`], and its own
/// flight ends at once with a copy of it for any waiter that joined it. The work never
/// runs, and the observer hears of a reuse, not of a leader.
#[cold]
#[inline(never)]
fn serve_stored<G, Q>(leader: Leader<G>, key: &Q, reused: Reused<G::Value>) -> Entered<G>
where
    G: GroupRef,
    G::Key: Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = G::Key>,
{
    let group_ref = leader.group_ref().clone();
    let group = group_ref.group();
    end_with_stored(leader, &reused);
    if let Err(payload) = group.observe_caught(|o| o.reused(group.name(), &group.key_ref(key))) {
        unwind::resume(payload)
    }
    Entered::Reused(reused)
}

/// Ends `leader`'s flight, which has not run its work, with a copy of `stored` for its
/// waiters.
///
/// # Panics
///
/// If the value's `Clone` panics: after the flight ended as a dropped leader's (a waiter
/// takes over), as for any panic of the leader's caller.
fn end_with_stored<G: GroupRef>(leader: Leader<G>, stored: &Reused<G::Value>) {
    let Some(clone) = leader.group().reuse().map(|reuse| reuse.clone_fn()) else {
        unreachable!("a value is stored only with a reuse window")
    };
    match stored.clone_value(clone) {
        Ok(copy) => leader.end_reused(copy),
        Err(payload) => {
            drop(leader);
            unwind::resume(payload)
        }
    }
}

/// The reuse window's half of registration: the key's value if it is within the window
/// (the observer hears of it), with the generation of the refresh this caller is to start
/// if `refresh` allows and the value is past its threshold; or the generation a flight
/// this caller starts tracks with.
#[cold]
#[inline(never)]
#[allow(
    clippy::type_complexity,
    reason = "one private return type, named where it is matched"
)]
fn reuse_lookup<K, T, S, Q>(
    group: &Group<K, T, S>,
    hash: u64,
    key: &Q,
    refresh: bool,
) -> Result<(Reused<T>, Option<u64>), u64>
where
    K: Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
{
    let Some(reuse) = group.reuse() else {
        return Err(0);
    };
    let (reused, refresh) = match reuse.lookup(hash, key, refresh) {
        Lookup::Miss(generation) => return Err(generation),
        Lookup::Fresh(reused) => (reused, None),
        Lookup::Stale(reused, generation) => (reused, Some(generation)),
    };
    if let Err(payload) = group.observe_caught(|o| o.reused(group.name(), &group.key_ref(key))) {
        if refresh.is_some() {
            reuse.refresh_not_started(hash, key);
        }
        unwind::resume(payload)
    }
    Ok((reused, refresh))
}

/// **start** a refresh of `key`'s value: a flight of its own, tracked with `generation`,
/// whose leader goes to `refresh` (the triggering call's work, run detached). If a flight
/// for the key is in progress already, none starts: its value is the fresh one.
#[cold]
#[inline(never)]
fn start_refresh<G, Q>(group_ref: G, hash: u64, key: &Q, generation: u64, refresh: Refresher<'_, G>)
where
    G: GroupRef,
    G::Key: Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = G::Key>,
{
    let group = group_ref.group();
    let not_started = || {
        if let Some(reuse) = group.reuse() {
            reuse.refresh_not_started(hash, key);
        }
    };
    let at = match unwind::catch(|| group.flights().start(hash, key)) {
        Ok(Some(at)) => at,
        Ok(None) => return not_started(),
        Err(payload) => {
            not_started();
            unwind::resume(payload)
        }
    };
    // As for any leader: the guard first, so that a panic below abandons the flight.
    let mut leader = Leader::new(group_ref.clone(), at);
    track(group, at, key, generation, false);
    let started = leader.group().observe_caught(|o| {
        let key = group.key_ref(key);
        let info = group.info(at).with_key(&key);
        let started = o.leader_started(&info);
        o.refresh_started(&info);
        started
    });
    match started {
        Ok(started) => leader.set_started(started),
        Err(payload) => {
            drop(leader);
            unwind::resume(payload)
        }
    }
    refresh(leader);
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
                Ok(Entered::Leader(leader)) => leader,
                _ => panic!("key {key} starts a flight"),
            })
            .collect();
        assert_eq!(group.in_flight(), 6);
        assert!(group.forget(&1));
        let Ok(Entered::Leader(newer)) = group.enter(&1) else {
            panic!("a forgotten key starts a new flight")
        };
        let Ok(Entered::Waiter(waiter)) = group.enter(&4) else {
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
        let bytes = || group.flights().spill_bytes(0);
        let burst: alloc::vec::Vec<_> = (0..10_000)
            .map(|key| match group.enter(&key) {
                Ok(Entered::Leader(leader)) => leader,
                _ => panic!("key {key} starts a flight"),
            })
            .collect();
        assert!(bytes() >= 10_000 * 3 * size_of::<u64>());
        for leader in burst {
            leader.complete(0);
        }
        assert_eq!(group.in_flight(), 0);
        assert_eq!(bytes(), 0, "an empty shard keeps no table after a burst");

        // A steady load of a few dozen flights: once the table has room for the tombstones
        // that churn leaves (one growth, early), it stops reallocating.
        let mut steady: alloc::collections::VecDeque<_> = (0..40)
            .map(|key| match group.enter(&key) {
                Ok(Entered::Leader(leader)) => leader,
                _ => panic!("key {key} starts a flight"),
            })
            .collect();
        let mut sizes = alloc::vec::Vec::new();
        for key in 40..20_000 {
            steady.pop_front().expect("forty in flight").complete(0);
            match group.enter(&key) {
                Ok(Entered::Leader(leader)) => steady.push_back(leader),
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
}
