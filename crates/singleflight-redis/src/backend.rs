//! The Redis side of a flight, behind a small trait so the leader/follower logic can be
//! tested against an in-memory fake with a paused clock.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::envelope::Keys;

/// What `join` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Joined {
    /// A result of at least the asked generation (the stored envelope).
    Result(Vec<u8>),
    /// This caller holds the lease for this generation.
    Leader(u64),
    /// Another caller holds the lease for this generation.
    Follow(u64),
}

/// A Redis command failed (the caller applies its own deadline on top).
#[derive(Debug)]
pub(crate) struct BackendError {
    pub(crate) message: String,
    /// The client gave up waiting for the answer (the server may be frozen).
    pub(crate) timeout: bool,
}

impl BackendError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            timeout: false,
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The scripts and subscriptions a flight needs.
///
/// `lock_value` is `"<generation>:<token>"`, exactly what `join` stored.
pub(crate) trait Backend: Send + Sync + 'static {
    /// Subscribes to `channel`; resolves once the server confirmed it.
    fn subscribe(
        &self,
        channel: &str,
    ) -> impl Future<Output = Result<Subscription, BackendError>> + Send;

    /// Returns a stored result of generation `>= min_generation` (if `min_generation > 0`),
    /// else the current lease holder, else takes the lease under a new generation.
    fn join(
        &self,
        keys: &Keys,
        token: &str,
        lease: Duration,
        min_generation: u64,
    ) -> impl Future<Output = Result<Joined, BackendError>> + Send;

    /// Extends the lease if it is still `lock_value`; `false` if it was lost.
    fn renew(
        &self,
        keys: &Keys,
        lock_value: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Stores `envelope` unless a newer generation's result is stored, releases the lease
    /// if it is still `lock_value`, and publishes `message`.
    #[allow(
        clippy::too_many_arguments,
        reason = "one argument per script argument"
    )]
    fn complete(
        &self,
        keys: &Keys,
        lock_value: &str,
        generation: u64,
        envelope: &[u8],
        linger: Duration,
        message: &[u8],
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Releases the lease if it is still `lock_value` and then publishes `message`.
    fn abandon(
        &self,
        keys: &Keys,
        lock_value: &str,
        message: &[u8],
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The stored result envelope, if any.
    fn fetch(
        &self,
        keys: &Keys,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, BackendError>> + Send;
}

/// What a subscriber hears.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A message on the subscribed channel.
    Message(Vec<u8>),
    /// The connection dropped: messages may have been lost.
    Disconnected,
}

type Subscribers = HashMap<String, Vec<(u64, mpsc::UnboundedSender<Event>)>>;

/// Routes pub/sub messages of the one shared connection to the waiting followers.
pub(crate) struct Hub {
    channels: Mutex<Subscribers>,
    next_id: AtomicU64,
    on_empty: Box<dyn Fn(&str) + Send + Sync>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub that calls `on_empty(channel)` when a channel's last subscriber leaves.
    pub(crate) fn new(on_empty: Box<dyn Fn(&str) + Send + Sync>) -> Arc<Self> {
        Arc::new(Self {
            channels: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            on_empty,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a subscriber of `channel` (the caller subscribes on the server).
    pub(crate) fn register(self: &Arc<Self>, channel: &str) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .entry(channel.to_owned())
            .or_default()
            .push((id, tx));
        Subscription {
            rx,
            hub: Arc::clone(self),
            channel: channel.to_owned(),
            id,
        }
    }

    /// Whether `channel` has subscribers.
    pub(crate) fn has_subscribers(&self, channel: &str) -> bool {
        self.lock().contains_key(channel)
    }

    /// Hands a message to every subscriber of `channel`.
    pub(crate) fn deliver(&self, channel: &str, payload: &[u8]) {
        if let Some(subscribers) = self.lock().get(channel) {
            for (_, tx) in subscribers {
                let _ = tx.send(Event::Message(payload.to_vec()));
            }
        }
    }

    /// Tells every subscriber that messages may have been lost.
    pub(crate) fn disconnected(&self) {
        for subscribers in self.lock().values() {
            for (_, tx) in subscribers {
                let _ = tx.send(Event::Disconnected);
            }
        }
    }
}

/// One follower's subscription; dropping it unsubscribes (the last one on the server too).
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) rx: mpsc::UnboundedReceiver<Event>,
    hub: Arc<Hub>,
    channel: String,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let emptied = {
            let mut channels = self.hub.lock();
            match channels.get_mut(&self.channel) {
                Some(subscribers) => {
                    subscribers.retain(|(id, _)| *id != self.id);
                    let empty = subscribers.is_empty();
                    if empty {
                        channels.remove(&self.channel);
                    }
                    empty
                }
                None => false,
            }
        };
        if emptied {
            (self.hub.on_empty)(&self.channel);
        }
    }
}
