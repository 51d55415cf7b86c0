//! An in-memory Redis with the scripts' semantics, for the leader/waiter logic under a
//! paused clock. Each [`FakeConn`] stands for one process's connection and can be made to
//! fail or hang.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::backend::{Backend, BackendError, Hub, Joined, Subscription};
use crate::envelope::Keys;

#[derive(Debug, Default)]
struct State {
    locks: HashMap<String, (String, Instant)>,
    generations: HashMap<String, u64>,
    results: HashMap<String, (u64, Vec<u8>, Instant)>,
    /// Values kept for reuse: generation, envelope, published at, expires at.
    reusable: HashMap<String, (u64, Vec<u8>, Instant, Instant)>,
    fences: HashMap<String, u64>,
}

/// The shared server.
#[derive(Debug, Default)]
pub(crate) struct FakeRedis {
    state: Mutex<State>,
    hubs: Mutex<Vec<Weak<Hub>>>,
}

impl FakeRedis {
    pub(crate) fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A new connection (a process).
    pub(crate) fn connect(self: &Arc<Self>) -> FakeConn {
        let hub = Hub::new(None);
        self.hubs.lock().unwrap().push(Arc::downgrade(&hub));
        FakeConn {
            redis: Arc::clone(self),
            hub,
            mode: Arc::new(AtomicU8::new(UP)),
            subscribes: Arc::default(),
            subscribe_gate: Arc::default(),
        }
    }

    fn publish(&self, channel: &str, message: &[u8]) {
        for hub in self.hubs.lock().unwrap().iter().filter_map(Weak::upgrade) {
            hub.deliver(channel, message);
        }
    }

    /// The stored result's generation and envelope.
    pub(crate) fn result(&self, keys: &Keys) -> Option<(u64, Vec<u8>)> {
        let state = self.state.lock().unwrap();
        state
            .results
            .get(&keys.result)
            .filter(|(_, _, until)| Instant::now() < *until)
            .map(|(g, v, _)| (*g, v.clone()))
    }

    /// A restart without persistence: every key is gone.
    pub(crate) fn flush(&self) {
        *self.state.lock().unwrap() = State::default();
    }

    pub(crate) fn lock_held(&self, keys: &Keys) -> bool {
        let state = self.state.lock().unwrap();
        state
            .locks
            .get(&keys.lock)
            .is_some_and(|(_, until)| Instant::now() < *until)
    }
}

const UP: u8 = 0;
const DOWN: u8 = 1;
const HUNG: u8 = 2;
const APPLY_THEN_HANG: u8 = 3;

/// One process's connection.
#[derive(Clone, Debug)]
pub(crate) struct FakeConn {
    redis: Arc<FakeRedis>,
    hub: Arc<Hub>,
    mode: Arc<AtomicU8>,
    /// Subscriptions asked for so far.
    subscribes: Arc<AtomicUsize>,
    /// While set, a subscription waits for it to open before taking effect.
    subscribe_gate: Arc<Mutex<Option<watch::Receiver<bool>>>>,
}

impl FakeConn {
    /// Every command fails at once.
    pub(crate) fn down(&self) {
        self.mode.store(DOWN, Ordering::SeqCst);
    }

    /// Every command hangs (a frozen server, or a crashed process that sends nothing).
    pub(crate) fn hang(&self) {
        self.mode.store(HUNG, Ordering::SeqCst);
    }

    /// The next join takes effect on the server but its answer never arrives (a
    /// client-side timeout); later commands work.
    pub(crate) fn apply_then_hang_once(&self) {
        self.mode.store(APPLY_THEN_HANG, Ordering::SeqCst);
    }

    pub(crate) fn up(&self) {
        self.mode.store(UP, Ordering::SeqCst);
    }

    /// Subscriptions asked for so far.
    pub(crate) fn subscribes(&self) -> usize {
        self.subscribes.load(Ordering::SeqCst)
    }

    /// Makes the next subscription wait (unsubscribed) until the returned gate opens.
    pub(crate) fn hold_subscribe(&self) -> watch::Sender<bool> {
        let gate = watch::channel(false).0;
        *self.subscribe_gate.lock().unwrap() = Some(gate.subscribe());
        gate
    }

    /// The connection dropped and came back: subscribers hear `Disconnected`.
    pub(crate) fn blip(&self) {
        self.hub.disconnected();
    }

    async fn check(&self) -> Result<(), BackendError> {
        match self.mode.load(Ordering::SeqCst) {
            UP => Ok(()),
            DOWN => Err(BackendError::new("connection refused")),
            APPLY_THEN_HANG => Ok(()),
            _ => std::future::pending().await,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.redis.state.lock().unwrap()
    }
}

fn live<T>(entry: Option<&(T, Instant)>) -> Option<&T> {
    entry
        .filter(|(_, until)| Instant::now() < *until)
        .map(|(v, _)| v)
}

impl FakeConn {
    /// The join script's effect.
    fn join_now(
        &self,
        keys: &Keys,
        token: &str,
        lease: Duration,
        min_generation: u64,
        reuse: Duration,
    ) -> Joined {
        let mut state = self.state();
        let now = Instant::now();
        if min_generation == 0
            && !reuse.is_zero()
            && let Some((_, v, published, until)) = state.reusable.get(&keys.reuse)
            && now < *until
            && now - *published < reuse
        {
            return Joined::Reused(v.clone(), now - *published);
        }
        let fence = state.fences.get(&keys.fence).copied().unwrap_or(0);
        if min_generation > 0
            && let Some((g, v, until)) = state.results.get(&keys.result)
            && now < *until
            && *g >= min_generation
        {
            return Joined::Result(v.clone());
        }
        if let Some(value) = live(state.locks.get(&keys.lock)) {
            let (g, holder) = value.split_once(':').unwrap();
            let g = g.parse().unwrap();
            if holder == token {
                return Joined::Leader(g);
            }
            if min_generation > 0 || g > fence {
                return Joined::Wait(g);
            }
        }
        let g = state
            .generations
            .entry(keys.generation.clone())
            .or_default();
        *g = (*g).max(min_generation).max(fence) + 1;
        let g = *g;
        state
            .locks
            .insert(keys.lock.clone(), (format!("{g}:{token}"), now + lease));
        Joined::Leader(g)
    }
}

impl Backend for FakeConn {
    async fn subscribe(&self, channel: &str) -> Result<Subscription, BackendError> {
        self.check().await?;
        self.subscribes.fetch_add(1, Ordering::SeqCst);
        let gate = self.subscribe_gate.lock().unwrap().take();
        if let Some(mut gate) = gate {
            let _ = gate.wait_for(|open| *open).await;
        }
        Ok(self.hub.register(channel).0)
    }

    async fn join(
        &self,
        keys: &Keys,
        token: &str,
        lease: Duration,
        _limit: Duration,
        min_generation: u64,
        reuse: Duration,
    ) -> Result<Joined, BackendError> {
        self.check().await?;
        let hang = self
            .mode
            .compare_exchange(APPLY_THEN_HANG, UP, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        let joined = self.join_now(keys, token, lease, min_generation, reuse);
        if hang {
            std::future::pending::<()>().await;
        }
        Ok(joined)
    }

    async fn renew(
        &self,
        keys: &Keys,
        lock_value: &str,
        lease: Duration,
    ) -> Result<bool, BackendError> {
        self.check().await?;
        let mut state = self.state();
        if live(state.locks.get(&keys.lock)).is_some_and(|v| v == lock_value) {
            state.locks.get_mut(&keys.lock).unwrap().1 = Instant::now() + lease;
            return Ok(true);
        }
        Ok(false)
    }

    async fn complete(
        &self,
        keys: &Keys,
        lock_value: &str,
        generation: u64,
        envelope: &[u8],
        linger: Duration,
        message: &[u8],
        reuse: Duration,
    ) -> Result<(), BackendError> {
        self.check().await?;
        {
            let mut state = self.state();
            let now = Instant::now();
            let newer = state
                .results
                .get(&keys.result)
                .is_some_and(|(g, _, until)| now < *until && *g > generation);
            let counter = state
                .generations
                .entry(keys.generation.clone())
                .or_default();
            *counter = (*counter).max(generation);
            if !newer {
                state.results.insert(
                    keys.result.clone(),
                    (generation, envelope.to_vec(), now + linger),
                );
            }
            let fence = state.fences.get(&keys.fence).copied().unwrap_or(0);
            let newer_kept = state
                .reusable
                .get(&keys.reuse)
                .is_some_and(|(g, _, _, until)| now < *until && *g > generation);
            if !reuse.is_zero() && generation > fence && !newer_kept {
                state.reusable.insert(
                    keys.reuse.clone(),
                    (generation, envelope.to_vec(), now, now + reuse),
                );
            }
            if live(state.locks.get(&keys.lock)).is_some_and(|v| v == lock_value) {
                state.locks.remove(&keys.lock);
            }
        }
        self.redis.publish(&keys.channel, message);
        Ok(())
    }

    async fn forget(&self, keys: &Keys) -> Result<u64, BackendError> {
        self.check().await?;
        let mut state = self.state();
        state.reusable.remove(&keys.reuse);
        let counter = state
            .generations
            .get(&keys.generation)
            .copied()
            .unwrap_or(0);
        let fence = state.fences.entry(keys.fence.clone()).or_default();
        *fence = (*fence).max(counter);
        Ok(*fence)
    }

    async fn release(
        &self,
        keys: &Keys,
        token: &str,
        message: &[u8],
    ) -> Result<bool, BackendError> {
        self.check().await?;
        let released = {
            let mut state = self.state();
            let mine = live(state.locks.get(&keys.lock))
                .is_some_and(|v| v.split_once(':').is_some_and(|(_, holder)| holder == token));
            if mine {
                state.locks.remove(&keys.lock);
            }
            mine
        };
        if released {
            self.redis.publish(&keys.channel, message);
        }
        Ok(released)
    }

    async fn fetch(&self, keys: &Keys) -> Result<Option<Vec<u8>>, BackendError> {
        self.check().await?;
        Ok(self.redis.result(keys).map(|(_, v)| v))
    }
}
