//! The textbook coalescer: a `Mutex<HashMap>` of calls, each with a `Mutex<Option<T>>` and
//! a `Condvar` (the shape of Go's singleflight, and of most blocking ports of it).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Condvar, Mutex};

struct Flight<T> {
    value: Mutex<Option<T>>,
    done: Condvar,
}

/// A `Mutex<HashMap>` + `Condvar` coalescer. No panic handling, no timeouts, no forget:
/// the least a blocking coalescer does.
pub struct MutexCondvarGroup<K, T> {
    flights: Mutex<HashMap<K, Arc<Flight<T>>>>,
}

impl<K: Hash + Eq + Clone, T: Clone> MutexCondvarGroup<K, T> {
    /// An empty group.
    pub fn new() -> Self {
        Self {
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `work` once per overlapping set of callers of `key`.
    pub fn call(&self, key: &K, work: impl FnOnce() -> T) -> T {
        let mut flights = self.flights.lock().unwrap();
        if let Some(flight) = flights.get(key) {
            let flight = Arc::clone(flight);
            drop(flights);
            let mut value = flight.value.lock().unwrap();
            loop {
                if let Some(value) = &*value {
                    return value.clone();
                }
                value = flight.done.wait(value).unwrap();
            }
        }
        let flight = Arc::new(Flight {
            value: Mutex::new(None),
            done: Condvar::new(),
        });
        flights.insert(key.clone(), Arc::clone(&flight));
        drop(flights);
        let value = work();
        *flight.value.lock().unwrap() = Some(value.clone());
        flight.done.notify_all();
        self.flights.lock().unwrap().remove(key);
        value
    }
}

impl<K, T> std::fmt::Debug for MutexCondvarGroup<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutexCondvarGroup").finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone, T: Clone> Default for MutexCondvarGroup<K, T> {
    fn default() -> Self {
        Self::new()
    }
}
