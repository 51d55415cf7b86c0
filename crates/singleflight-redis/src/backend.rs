//! The Redis side of a flight, behind a small trait so the leader/waiter logic can be
//! tested against an in-memory fake with a paused clock.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::envelope::Keys;
use crate::health::{ReconnectCounts, SubscriptionLoss};
use crate::link::Shared;

/// What `join` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Joined {
    /// A result of at least the asked generation (the stored envelope).
    Result(Vec<u8>),
    /// A value kept for reuse (the stored envelope), published `age` ago.
    Reused(Vec<u8>, Duration),
    /// This caller holds the lease for this generation.
    Leader(u64),
    /// Another caller holds the lease for this generation.
    Wait(u64),
    /// A key of the flight holds data that is not ours (named); the script made it
    /// expire within one lease.
    Foreign(String),
}

/// A Redis command failed (the caller applies its own deadline on top).
#[derive(Clone, Debug)]
pub(crate) struct BackendError {
    pub(crate) message: String,
    /// The client gave up waiting for the answer (the server may be frozen).
    pub(crate) timeout: bool,
    /// The server refused our credentials.
    pub(crate) auth: bool,
    /// The connection was lost (the client is replacing it): worth one more try.
    pub(crate) reconnect: bool,
    /// A cluster node answered `MOVED`: the slot and the node serving it now.
    pub(crate) moved: Option<(u16, String)>,
}

impl BackendError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            timeout: false,
            auth: false,
            reconnect: false,
            moved: None,
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
/// `limit` bounds how long foreign data found at the flight's keys may live on.
pub(crate) trait Backend: Send + Sync + 'static {
    /// The connection `keys`' commands go to now, by number: it grows each time a new
    /// connection answers (after a lost or silent one was replaced), so a caller can tell
    /// which connection a command's fate speaks of. Numbers are unique across the
    /// backend's connections (a cluster has one per node).
    fn connection(&self, keys: &Keys) -> u64 {
        let _ = keys;
        0
    }

    /// The logical database the keys live in (`SELECT`ed by the connection). Channels are
    /// server-wide, so a flight's channel names it.
    fn database(&self) -> i64 {
        0
    }

    /// A command sent while `connection` was current got no answer within its deadline.
    fn timed_out(&self, connection: u64) {
        let _ = connection;
    }

    /// A command sent while `connection` was current got an answer (any answer).
    fn answered(&self, connection: u64) {
        let _ = connection;
    }

    /// Connections replaced so far and failed attempts to open one, if it keeps count.
    fn reconnects(&self) -> Option<&ReconnectCounts> {
        None
    }

    /// On a cluster, the primaries serving slots in the current map (sorted).
    fn primaries(&self) -> Vec<String> {
        Vec::new()
    }

    /// Subscribes to `channel`; resolves once the server confirmed it.
    fn subscribe(
        &self,
        channel: &str,
    ) -> impl Future<Output = Result<Subscription, BackendError>> + Send;

    /// Returns a stored result of generation `>= min_generation` (if `min_generation > 0`),
    /// else (if `min_generation == 0` and `reuse` is not zero) a value kept for reuse
    /// that is younger than `reuse`, else the current lease holder, else takes the lease
    /// under a new generation. A fresh call (`min_generation == 0`) takes the lease over
    /// from a flight a `forget` fenced off.
    #[allow(
        clippy::too_many_arguments,
        reason = "one argument per script argument"
    )]
    fn join(
        &self,
        keys: &Keys,
        token: &str,
        lease: Duration,
        limit: Duration,
        min_generation: u64,
        reuse: Duration,
    ) -> impl Future<Output = Result<Joined, BackendError>> + Send;

    /// Extends the lease if it is still `lock_value`; `false` if it was lost.
    fn renew(
        &self,
        keys: &Keys,
        lock_value: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Stores `envelope` unless a newer generation's result is stored, releases the lease
    /// if it is still `lock_value`, and publishes `message`. With a `reuse` window (not
    /// zero), also keeps `envelope` for reuse for that long, unless a `forget` fenced
    /// `generation` off or a newer generation's value is kept.
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
        reuse: Duration,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Drops the value kept for reuse, and fences off every generation elected so far:
    /// none of them keeps a value for reuse afterwards, and a fresh `join` takes over
    /// their lease. Returns the fence.
    fn forget(&self, keys: &Keys) -> impl Future<Output = Result<u64, BackendError>> + Send;

    /// Releases the lease if `token` holds it (whatever its generation) and then
    /// publishes `message`; `true` if it did.
    fn release(
        &self,
        keys: &Keys,
        token: &str,
        message: &[u8],
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

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
    /// The subscription itself is gone (the node no longer serves the channel's slot, or
    /// could not subscribe it again on a new connection): messages may have been lost,
    /// and none will come until the subscriber subscribes again.
    Lost,
}

/// The connection the server has the channel subscribed on (0: none); held while
/// (un)subscribing, so an UNSUBSCRIBE never overtakes a newer subscriber's SUBSCRIBE.
pub(crate) type ServerState = Arc<tokio::sync::Mutex<u64>>;

struct Channel {
    subscribers: Vec<(u64, mpsc::UnboundedSender<Event>)>,
    server: ServerState,
}

type OnEmpty = Box<dyn Fn(&str, ServerState) + Send + Sync>;

/// Routes pub/sub messages of the one shared connection to the waiters.
pub(crate) struct Hub {
    channels: Mutex<HashMap<String, Channel>>,
    next_id: AtomicU64,
    on_empty: Option<OnEmpty>,
    /// Where lost subscriptions are counted, if anywhere.
    shared: Option<Arc<Shared>>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub that calls `on_empty(channel, server)` when a channel's last subscriber
    /// leaves; it must unsubscribe under `server`'s lock and then call
    /// [`forget_if_empty`](Self::forget_if_empty). Without it, empty channels are
    /// forgotten at once.
    pub(crate) fn new(on_empty: Option<OnEmpty>) -> Arc<Self> {
        Self::counting(on_empty, None)
    }

    /// [`new`](Self::new), counting lost subscriptions in `shared`'s counts.
    pub(crate) fn counting(on_empty: Option<OnEmpty>, shared: Option<Arc<Shared>>) -> Arc<Self> {
        Arc::new(Self {
            channels: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            on_empty,
            shared,
        })
    }

    fn count_lost(&self, reason: SubscriptionLoss) {
        if let Some(shared) = &self.shared {
            shared.counts.subscription_lost(reason);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a subscriber of `channel`; the caller subscribes on the server under
    /// the returned state's lock unless it says so already.
    pub(crate) fn register(self: &Arc<Self>, channel: &str) -> (Subscription, ServerState) {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let server = {
            let mut channels = self.lock();
            let entry = channels
                .entry(channel.to_owned())
                .or_insert_with(|| Channel {
                    subscribers: Vec::new(),
                    server: Arc::new(tokio::sync::Mutex::new(0)),
                });
            entry.subscribers.push((id, tx));
            Arc::clone(&entry.server)
        };
        let subscription = Subscription {
            rx,
            hub: Arc::clone(self),
            channel: channel.to_owned(),
            id,
        };
        (subscription, server)
    }

    /// Registers a subscriber of `channel`; then, under the channel's lock,
    /// `subscribe(on)` makes sure the server has it subscribed on the current connection
    /// (`on` says which connection has it now, 0 for none) and returns that connection.
    pub(crate) async fn subscribe<Fut>(
        self: &Arc<Self>,
        channel: &str,
        subscribe: impl FnOnce(u64) -> Fut,
    ) -> Result<Subscription, BackendError>
    where
        Fut: Future<Output = Result<u64, BackendError>>,
    {
        // Register first: a message that arrives right after the server's confirmation
        // must find us.
        let (subscription, server) = self.register(channel);
        let mut on = server.lock().await;
        *on = subscribe(*on).await?;
        Ok(subscription)
    }

    /// After connection `connection` replaced a lost one: subscribes every channel that
    /// has subscribers and is not subscribed on it yet with `subscribe`, then tells every
    /// subscriber to re-check (messages sent meanwhile are lost). A channel whose
    /// subscription fails is left to its waiters' re-checks.
    pub(crate) async fn resubscribe<Fut>(&self, connection: u64, subscribe: impl Fn(String) -> Fut)
    where
        Fut: Future<Output = Result<(), BackendError>>,
    {
        let channels: Vec<(String, ServerState)> = self
            .lock()
            .iter()
            .filter(|(_, c)| !c.subscribers.is_empty())
            .map(|(name, c)| (name.clone(), Arc::clone(&c.server)))
            .collect();
        let mut lost = Vec::new();
        for (channel, server) in channels {
            let mut on = server.lock().await;
            if *on < connection && self.has_subscribers(&channel) {
                if subscribe(channel.clone()).await.is_ok() {
                    *on = connection;
                } else {
                    *on = 0;
                    self.count_lost(SubscriptionLoss::Resubscribe);
                    lost.push(channel);
                }
            }
        }
        let channels = self.lock();
        for (name, entry) in channels.iter() {
            let event = if lost.contains(name) {
                Event::Lost
            } else {
                Event::Disconnected
            };
            for (_, tx) in &entry.subscribers {
                let _ = tx.send(event.clone());
            }
        }
    }

    /// The server dropped `channel`'s subscription on connection `connection` (a
    /// server-sent `SUNSUBSCRIBE`): its subscribers are told the subscription is
    /// [`Lost`](Event::Lost), after the channel is marked as subscribed nowhere.
    pub(crate) fn dropped(self: &Arc<Self>, channel: &str, connection: u64) {
        let Some(server) = self.lock().get(channel).map(|c| Arc::clone(&c.server)) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (hub, channel) = (Arc::clone(self), channel.to_owned());
        runtime.spawn(async move {
            {
                let mut on = server.lock().await;
                if *on != connection {
                    return;
                }
                *on = 0;
            }
            hub.count_lost(SubscriptionLoss::Unsubscribed);
            hub.tell(|name| name == channel, &Event::Lost);
        });
    }

    /// Every channel for which `moved(channel)` says it is served elsewhere now: marked as
    /// subscribed nowhere here, and its subscribers told the subscription is
    /// [`Lost`](Event::Lost) (counted for `reason` if it was subscribed here), so they
    /// subscribe again where it is served.
    pub(crate) async fn lose(&self, reason: SubscriptionLoss, moved: impl Fn(&str) -> bool) {
        let channels: Vec<(String, ServerState)> = self
            .lock()
            .iter()
            .filter(|(name, c)| !c.subscribers.is_empty() && moved(name))
            .map(|(name, c)| (name.clone(), Arc::clone(&c.server)))
            .collect();
        for (channel, server) in channels {
            let was = std::mem::take(&mut *server.lock().await);
            if was != 0 {
                self.count_lost(reason);
            }
            self.tell(|name| name == channel, &Event::Lost);
        }
    }

    /// Sends `event` to every subscriber of the channels `which` names.
    fn tell(&self, which: impl Fn(&str) -> bool, event: &Event) {
        for (name, entry) in self.lock().iter() {
            if which(name) {
                for (_, tx) in &entry.subscribers {
                    let _ = tx.send(event.clone());
                }
            }
        }
    }

    /// The work of `on_empty`: under the channel's lock, unsubscribes the server with
    /// `unsubscribe` unless a subscriber came back, then forgets the channel if it is
    /// still empty. A subscriber that registers meanwhile waits for the lock, and then
    /// subscribes the server again.
    pub(crate) async fn unsubscribe<Fut>(
        &self,
        channel: &str,
        server: &ServerState,
        unsubscribe: impl FnOnce(u64) -> Fut,
    ) where
        Fut: Future<Output = ()>,
    {
        let mut on = server.lock().await;
        if self.has_subscribers(channel) {
            return;
        }
        if *on != 0 {
            unsubscribe(*on).await;
        }
        *on = 0;
        self.forget_if_empty(channel, server);
    }

    /// Whether `channel` has subscribers.
    pub(crate) fn has_subscribers(&self, channel: &str) -> bool {
        self.lock()
            .get(channel)
            .is_some_and(|c| !c.subscribers.is_empty())
    }

    /// Forgets `channel` if it still has no subscribers and `server` is its state.
    pub(crate) fn forget_if_empty(&self, channel: &str, server: &ServerState) {
        let mut channels = self.lock();
        if channels
            .get(channel)
            .is_some_and(|c| c.subscribers.is_empty() && Arc::ptr_eq(&c.server, server))
        {
            channels.remove(channel);
        }
    }

    /// Hands a message to every subscriber of `channel`.
    pub(crate) fn deliver(&self, channel: &str, payload: &[u8]) {
        if let Some(entry) = self.lock().get(channel) {
            for (_, tx) in &entry.subscribers {
                let _ = tx.send(Event::Message(payload.to_vec()));
            }
        }
    }

    /// Tells every subscriber that messages may have been lost.
    #[cfg(test)]
    pub(crate) fn disconnected(&self) {
        self.tell(|_| true, &Event::Disconnected);
    }
}

/// One waiter's subscription; dropping it unsubscribes (the last one on the server too).
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
                Some(entry) => {
                    entry.subscribers.retain(|(id, _)| *id != self.id);
                    if !entry.subscribers.is_empty() {
                        None
                    } else if self.hub.on_empty.is_some() {
                        Some(Arc::clone(&entry.server))
                    } else {
                        channels.remove(&self.channel);
                        None
                    }
                }
                None => None,
            }
        };
        if let (Some(server), Some(on_empty)) = (emptied, &self.hub.on_empty) {
            on_empty(&self.channel, server);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Log = Arc<Mutex<Vec<&'static str>>>;

    fn subscribe(log: &Log, on: u64) -> impl Future<Output = Result<u64, BackendError>> + use<> {
        let log = Arc::clone(log);
        async move {
            if on == 0 {
                log.lock().unwrap().push("SUBSCRIBE");
            }
            Ok(1)
        }
    }

    /// The race the lock prevents: the last subscriber leaves, the unsubscription checks
    /// that the channel is empty, and before its UNSUBSCRIBE is written a new subscriber
    /// arrives. Its SUBSCRIBE must reach the server after the UNSUBSCRIBE, or the server
    /// would drop the new subscriber's subscription.
    #[tokio::test]
    async fn an_unsubscribe_never_overtakes_a_newer_subscribe() {
        let log: Log = Arc::default();
        let emptied: Arc<Mutex<Option<(String, ServerState)>>> = Arc::default();
        let hub = Hub::new(Some(Box::new({
            let emptied = Arc::clone(&emptied);
            move |channel: &str, server| {
                *emptied.lock().unwrap() = Some((channel.to_owned(), server));
            }
        })));
        let first = hub.subscribe("c", |on| subscribe(&log, on)).await.unwrap();
        drop(first);
        let (channel, server) = emptied.lock().unwrap().take().expect("on_empty called");
        let written = tokio::sync::watch::channel(false).0;
        let unsubscription = tokio::spawn({
            let (hub, log, server) = (Arc::clone(&hub), Arc::clone(&log), Arc::clone(&server));
            let mut gate = written.subscribe();
            async move {
                hub.unsubscribe(&channel, &server, |_| async {
                    // Checked empty; the UNSUBSCRIBE is not written yet.
                    gate.wait_for(|go| *go).await.unwrap();
                    log.lock().unwrap().push("UNSUBSCRIBE");
                })
                .await;
            }
        });
        // Until the unsubscription holds the channel's lock.
        while server.try_lock().is_ok() {
            tokio::task::yield_now().await;
        }
        let second = tokio::spawn({
            let (hub, log) = (Arc::clone(&hub), Arc::clone(&log));
            async move { hub.subscribe("c", |on| subscribe(&log, on)).await }
        });
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            *log.lock().unwrap(),
            ["SUBSCRIBE"],
            "the new SUBSCRIBE waits"
        );
        written.send_replace(true);
        unsubscription.await.unwrap();
        let second = second.await.unwrap().unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            ["SUBSCRIBE", "UNSUBSCRIBE", "SUBSCRIBE"],
            "the server ends subscribed"
        );
        assert!(hub.has_subscribers("c"));
        drop(second);
        assert!(emptied.lock().unwrap().is_some(), "emptied again");
    }

    /// After a replacement, channels with subscribers are subscribed on the new
    /// connection (once, whoever gets there first), empty ones are not, and every
    /// subscriber is told to re-check.
    #[tokio::test]
    async fn a_new_connection_gets_every_channel_with_subscribers_once() {
        let subscribed: Arc<Mutex<Vec<String>>> = Arc::default();
        let hub = Hub::new(None);
        let on_first = |on: u64| async move {
            assert_eq!(on, 0);
            Ok(1)
        };
        let mut kept = hub.subscribe("kept", on_first).await.unwrap();
        let left = hub.subscribe("left", on_first).await.unwrap();
        drop(left);
        let record = |channel: String| {
            let subscribed = Arc::clone(&subscribed);
            async move {
                subscribed.lock().unwrap().push(channel);
                Ok(())
            }
        };
        hub.resubscribe(2, record).await;
        hub.resubscribe(2, record).await;
        assert_eq!(*subscribed.lock().unwrap(), ["kept"]);
        assert_eq!(kept.rx.try_recv(), Ok(Event::Disconnected));
        // A subscriber arriving now finds the channel on connection 2.
        let again = hub
            .subscribe("kept", |on| async move {
                assert_eq!(on, 2);
                Ok(on)
            })
            .await;
        assert!(again.is_ok());
    }
}
