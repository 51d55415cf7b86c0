//! A table of per-execution state for observers whose token must carry more than a
//! timestamp (a fan-out's children's tokens, a tracing span): the token is a slot number.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::vec::Vec;

/// Slots handed out as tokens `1..`; `0` is never a slot, so it stays free to mean "none".
pub(crate) struct Tokens<V> {
    slab: Mutex<Slab<V>>,
}

struct Slab<V> {
    slots: Vec<Option<V>>,
    free: Vec<usize>,
}

impl<V> Tokens<V> {
    pub(crate) fn new() -> Self {
        Self {
            slab: Mutex::new(Slab {
                slots: Vec::new(),
                free: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slab<V>> {
        // Nothing can panic while the lock is held, but a poisoned table is still sound.
        self.slab.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `value` and returns its token (never `0`).
    pub(crate) fn insert(&self, value: V) -> u64 {
        let mut slab = self.lock();
        let index = match slab.free.pop() {
            Some(index) => {
                slab.slots[index] = Some(value);
                index
            }
            None => {
                slab.slots.push(Some(value));
                slab.slots.len() - 1
            }
        };
        index as u64 + 1
    }

    /// Takes the value stored under `token`, if any (`0` and unknown tokens give `None`).
    pub(crate) fn remove(&self, token: u64) -> Option<V> {
        let index = usize::try_from(token.checked_sub(1)?).ok()?;
        let mut slab = self.lock();
        let value = slab.slots.get_mut(index)?.take()?;
        slab.free.push(index);
        Some(value)
    }

    /// How many values are stored (executions in progress).
    pub(crate) fn len(&self) -> usize {
        let slab = self.lock();
        slab.slots.len() - slab.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Tokens;

    #[test]
    fn tokens_are_never_zero_and_slots_are_reused() {
        let tokens = Tokens::new();
        let a = tokens.insert("a");
        let b = tokens.insert("b");
        assert!(a != 0 && b != 0 && a != b);
        assert_eq!(tokens.remove(a), Some("a"));
        assert_eq!(tokens.remove(a), None);
        assert_eq!(tokens.remove(0), None);
        assert_eq!(tokens.insert("c"), a);
        assert_eq!(tokens.len(), 2);
    }
}
