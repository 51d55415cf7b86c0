//! The textbook async coalescer: a `Mutex<HashMap>` of `futures::Shared` futures. The first
//! caller boxes its work into a `Shared` and publishes it; later callers clone and poll the
//! same `Shared`. No panic capture, no leader-drop policy, no forget: the least an async
//! coalescer does, and a fair floor for the others.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Mutex;

use futures_util::FutureExt;
use futures_util::future::Shared;

type Flight<T> = Shared<Pin<Box<dyn Future<Output = T> + Send>>>;

/// A `Mutex<HashMap<K, Shared<_>>>` coalescer.
pub struct SharedGroup<K, T> {
    flights: Mutex<HashMap<K, Flight<T>>>,
}

impl<K: Hash + Eq + Clone, T: Clone + Send + Sync + 'static> SharedGroup<K, T> {
    /// An empty group.
    pub fn new() -> Self {
        Self {
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `work` once per overlapping set of callers of `key`.
    pub async fn call<F, Fut>(&self, key: &K, work: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (flight, leader) = {
            let mut flights = self.flights.lock().unwrap();
            match flights.get(key) {
                Some(flight) => (flight.clone(), false),
                None => {
                    let boxed: Pin<Box<dyn Future<Output = T> + Send>> = Box::pin(work());
                    let flight = boxed.shared();
                    flights.insert(key.clone(), flight.clone());
                    (flight, true)
                }
            }
        };
        let value = flight.await;
        if leader {
            self.flights.lock().unwrap().remove(key);
        }
        value
    }
}

impl<K, T> std::fmt::Debug for SharedGroup<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedGroup").finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone, T: Clone + Send + Sync + 'static> Default for SharedGroup<K, T> {
    fn default() -> Self {
        Self::new()
    }
}
