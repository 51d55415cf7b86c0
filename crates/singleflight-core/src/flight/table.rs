//! One shard's map of flights: a slot per flight in progress, found by key (new calls) or by
//! [`FlightRef`] (the flight's own callers). The lock order is in the [module docs](super).
//!
//! The shard's lock guards the whole table. Under it run hashbrown's probes and, where a
//! probe compares keys, the key's `Eq`: the one piece of user code that has to run under
//! this lock. A probe changes nothing, so an `Eq` that panics leaves the table as it was.
//! Keys leave the table inside their [`Slot`], which the caller drops after unlocking.

use alloc::boxed::Box;

use hashbrown::HashTable;

use super::waiters::Flight;
use crate::sync::Arc;
use crate::types::FlightRef;

pub(crate) struct Slot<K, T> {
    pub(crate) at: FlightRef,
    pub(crate) key: K,
    /// Set by `forget`: the flight keeps running for its callers but no longer takes new ones.
    pub(crate) forgotten: bool,
    /// Allocated when the second caller joins.
    pub(crate) flight: Option<Arc<Flight<T>>>,
}

/// One shard's flights. The first few live in the shard itself, on the cache lines of its
/// lock, so that a shard with few flights in progress (the usual case) is served without
/// touching another line: when callers on other cores used it last, that is one cache miss
/// instead of three (lock, control bytes, slot). More flights spill into a hash table, which
/// shrinks again when a burst is over (see [`Table::remove`]).
pub(crate) struct Table<K, T> {
    /// Numbers this shard's flights: flight ids are `next_id * shard count + shard index`.
    pub(crate) next_id: u64,
    /// Flights in the table, inline and spilled.
    len: usize,
    inline: [Option<Slot<K, T>>; INLINE_SLOTS],
    /// Boxed, so that a shard (lock, inline slots and all) fits in 128 bytes: only a shard
    /// with more flights than inline slots pays for the indirection.
    spill: Option<Box<HashTable<Slot<K, T>>>>,
}

/// Flights a shard holds before it spills into its hash table.
const INLINE_SLOTS: usize = 2;

/// A spill table this large or larger shrinks once three quarters of it stand empty. Below
/// it a table keeps its room until it is empty.
const SHRINK_FROM: usize = 32;

/// The capacity of hashbrown's smallest table (four buckets). An empty table this small is
/// kept, so a shard that goes back and forth over a flight or two past its inline slots
/// never reallocates; a larger one is given back when it empties.
const KEEP_EMPTY: usize = 3;

impl<K, T> Table<K, T> {
    pub(crate) fn new() -> Self {
        Self {
            next_id: 0,
            len: 0,
            inline: [const { None }; INLINE_SLOTS],
            spill: None,
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn slots_mut(&mut self) -> impl Iterator<Item = &mut Slot<K, T>> {
        self.inline
            .iter_mut()
            .flatten()
            .chain(self.spill.iter_mut().flat_map(|spill| spill.iter_mut()))
    }

    /// The slot with this hash for which `eq` holds.
    #[inline]
    pub(crate) fn find_mut(
        &mut self,
        hash: u64,
        eq: impl Fn(&Slot<K, T>) -> bool,
    ) -> Option<&mut Slot<K, T>> {
        if let Some(slot) = self
            .inline
            .iter_mut()
            .flatten()
            .find(|slot| slot.at.hash == hash && eq(slot))
        {
            return Some(slot);
        }
        self.spill.as_mut()?.find_mut(hash, eq)
    }

    /// The slot of the flight at `at`.
    #[inline]
    pub(crate) fn get_mut(&mut self, at: FlightRef) -> Option<&mut Slot<K, T>> {
        self.find_mut(at.hash, |slot| slot.at.id == at.id)
    }

    /// Adds a slot; its key must not be current in the table.
    #[inline]
    pub(crate) fn insert(&mut self, slot: Slot<K, T>) {
        self.len += 1;
        match self.inline.iter_mut().find(|free| free.is_none()) {
            Some(free) => *free = Some(slot),
            None => {
                self.spill.get_or_insert_with(Box::default).insert_unique(
                    slot.at.hash,
                    slot,
                    |slot| slot.at.hash,
                );
            }
        }
    }

    /// Removes the slot of the flight at `at`, to be dropped (key and all) after the lock.
    ///
    /// A spill table that falls to a quarter of its capacity shrinks to twice its length:
    /// the move costs O(length), paid for by the removals since the last resize, and leaves
    /// room for as many flights again before it grows, so a steady load never thrashes. A
    /// table that empties is freed, unless it is of the smallest size.
    #[inline]
    pub(crate) fn remove(&mut self, at: FlightRef) -> Option<Slot<K, T>> {
        if let Some(inline) = self
            .inline
            .iter_mut()
            .find(|inline| inline.as_ref().is_some_and(|slot| slot.at.id == at.id))
        {
            self.len -= 1;
            return inline.take();
        }
        let spill = self.spill.as_mut()?;
        let slot = spill
            .find_entry(at.hash, |slot| slot.at.id == at.id)
            .ok()?
            .remove()
            .0;
        self.len -= 1;
        let (len, capacity) = (spill.len(), spill.capacity());
        if len == 0 && capacity > KEEP_EMPTY {
            self.spill = None;
        } else if capacity >= SHRINK_FROM && len <= capacity / 4 {
            spill.shrink_to(len * 2, |slot| slot.at.hash);
        }
        Some(slot)
    }

    /// Removes the slot of the flight at `at` and returns its shared part, dropping its key
    /// here: only for keys whose drop does nothing (`!needs_drop::<K>()`), so that no user
    /// code runs under the lock and the slot need not be moved out.
    #[inline]
    pub(crate) fn remove_flight(&mut self, at: FlightRef) -> Option<Option<Arc<Flight<T>>>> {
        debug_assert!(!core::mem::needs_drop::<K>());
        if let Some(inline) = self
            .inline
            .iter_mut()
            .find(|inline| inline.as_ref().is_some_and(|slot| slot.at.id == at.id))
        {
            self.len -= 1;
            let flight = inline.as_mut().and_then(|slot| slot.flight.take());
            *inline = None;
            return Some(flight);
        }
        self.remove(at).map(|slot| slot.flight)
    }

    /// The bytes the spill table holds (for tests of the shrink).
    #[cfg(all(test, feature = "std"))]
    pub(crate) fn spill_bytes(&self) -> usize {
        self.spill.as_ref().map_or(0, |spill| {
            size_of::<HashTable<Slot<K, T>>>() + spill.allocation_size()
        })
    }
}
