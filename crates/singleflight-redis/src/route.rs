//! Where a flight's commands and subscriptions go: one server (a URL, or the primary that
//! the sentinels name), or the node of a Redis Cluster that serves the flight's slot.
//!
//! # Implementation
//!
//! A [`Node`] is one server as the group sees it: the [`Link`] its commands go to, the
//! link its subscriptions are on, and the [`Hub`] that routes that link's pushed messages
//! to the waiters. On one server both links are the same connection. On a cluster node
//! they are two: a node sends a `SUNSUBSCRIBE` of its own when a slot stops being its
//! own, and the client pairs such a push with the oldest command in flight on its
//! connection, so it must never share one with the scripts.
//!
//! A cluster's [`Router`] keeps the slot map: for each slot, the node serving it (or none
//! yet: a seed is asked, and answers `MOVED`). The map changes in two ways, under one
//! `std` mutex (nothing is awaited under it):
//!
//! * a `MOVED` reply names the slot's node: that slot is moved at once;
//! * a refresh (`CLUSTER SLOTS`, asked of the known nodes, then of the seeds) replaces
//!   the whole map. It runs in its own task, one at a time and at most every
//!   [`REFRESH_EVERY`]; it is asked for after a `MOVED`, and when a node's command failed
//!   for want of an answer (a node that went away, a failover under way).
//!
//! Whenever a slot leaves a node, the waiters subscribed there for a channel of that
//! slot are told their subscription is lost ([`Event::Lost`](crate::backend::Event)):
//! they subscribe again on the slot's new node and re-check. A node serving no slot after
//! a refresh is forgotten, and its connections close once their last command is done.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use redis::{AsyncConnectionConfig, Client, Value};
use tokio::time::Instant;

use crate::backend::{BackendError, Hub, ServerState, Subscription};
use crate::cluster::{self, SLOTS, Topology};
use crate::health::SubscriptionLoss;
use crate::link::{self, Link, Pubsub, Shared, Target, error};

/// The least time between two reads of a cluster's slot map.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_millis(100);

/// One server: its links and its subscriptions (see the module docs).
pub(crate) struct Node {
    /// `host:port` on a cluster; empty for one server.
    pub(crate) address: String,
    pub(crate) commands: Arc<Link>,
    subscriptions: Arc<Link>,
    hub: Arc<Hub>,
    pubsub: Pubsub,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// One server: commands and subscriptions share one connection.
    pub(crate) fn server(target: Target, shared: &Arc<Shared>) -> Arc<Self> {
        let slot = Arc::new(OnceLock::new());
        let hub = hub(&slot, shared, Pubsub::Plain);
        let link = Link::new(target, Arc::clone(&hub), Pubsub::Plain, shared);
        let _ = slot.set(Arc::downgrade(&link));
        Arc::new(Self {
            address: String::new(),
            commands: Arc::clone(&link),
            subscriptions: link,
            hub,
            pubsub: Pubsub::Plain,
        })
    }

    /// A cluster node: commands on one connection, sharded subscriptions on another.
    fn cluster(
        address: String,
        commands: Target,
        subscriptions: Target,
        shared: &Arc<Shared>,
    ) -> Arc<Self> {
        let slot = Arc::new(OnceLock::new());
        let hub = hub(&slot, shared, Pubsub::Sharded);
        let subscriptions = Link::new(subscriptions, Arc::clone(&hub), Pubsub::Sharded, shared);
        let _ = slot.set(Arc::downgrade(&subscriptions));
        // Its hub never has a channel: nothing is subscribed on the command connection.
        let commands = Link::new(commands, Hub::new(None), Pubsub::Sharded, shared);
        Arc::new(Self {
            address,
            commands,
            subscriptions,
            hub,
            pubsub: Pubsub::Sharded,
        })
    }

    /// Subscribes to `channel` on this node (once per channel and connection; waiters
    /// of one channel share the server's subscription).
    pub(crate) async fn subscribe(&self, channel: &str) -> Result<Subscription, BackendError> {
        let (link, pubsub) = (&self.subscriptions, self.pubsub);
        self.hub
            .subscribe(channel, |on| async move {
                let (id, mut conn) = link.get().await?;
                if on >= id {
                    // Subscribed on this connection already (or the reconnect task is
                    // subscribing it on a newer one).
                    return Ok(on);
                }
                let result = link::subscribe(&mut conn, channel, pubsub).await;
                link.check(id, result)?;
                Ok(id)
            })
            .await
    }
}

/// The hub of a node whose subscriptions link is (to be) in `slot`: when a channel's last
/// waiter leaves, it is unsubscribed on that link.
fn hub(slot: &Arc<OnceLock<Weak<Link>>>, shared: &Arc<Shared>, pubsub: Pubsub) -> Arc<Hub> {
    let slot = Arc::clone(slot);
    let op_timeout = shared.op_timeout;
    // The channel's server state is locked from the emptiness check to the end of the
    // UNSUBSCRIBE, and a new subscriber's SUBSCRIBE waits for it: the UNSUBSCRIBE can
    // never reach the server after (and so cancel) a newer SUBSCRIBE.
    let hub: Arc<OnceLock<Weak<Hub>>> = Arc::new(OnceLock::new());
    let this = Arc::clone(&hub);
    let made = Hub::counting(
        Some(Box::new(move |channel: &str, server: ServerState| {
            let (Some(link), Some(hub)) = (
                slot.get().and_then(Weak::upgrade),
                this.get().and_then(Weak::upgrade),
            ) else {
                return;
            };
            let channel = channel.to_owned();
            let Ok(handle) = tokio::runtime::Handle::try_current() else {
                // No runtime to unsubscribe on (the process is shutting down).
                hub.forget_if_empty(&channel, &server);
                return;
            };
            handle.spawn(async move {
                let name = channel.clone();
                let unsubscribe = |on: u64| async move {
                    // Only on the connection that has it: a replaced one took its
                    // subscriptions along.
                    if let Ok((id, mut conn)) = link.get().await
                        && id == on
                    {
                        let _ = tokio::time::timeout(
                            op_timeout,
                            link::unsubscribe(&mut conn, &name, pubsub),
                        )
                        .await;
                    }
                };
                hub.unsubscribe(&channel, &server, unsubscribe).await;
            });
        })),
        Some(Arc::clone(shared)),
    );
    let _ = hub.set(Arc::downgrade(&made));
    made
}

/// Where commands go (see the module docs).
pub(crate) enum Nodes {
    /// One server.
    Server(Arc<Node>),
    /// A Redis Cluster.
    Cluster(Arc<Router>),
}

impl Nodes {
    /// The node serving `slot` (on one server, the server).
    pub(crate) fn route(&self, slot: u16) -> Result<Arc<Node>, BackendError> {
        match self {
            Self::Server(node) => Ok(Arc::clone(node)),
            Self::Cluster(router) => router.route(slot),
        }
    }

    /// The command link whose current connection is `id`.
    pub(crate) fn by_connection(&self, id: u64) -> Option<Arc<Link>> {
        match self {
            Self::Server(node) => Some(Arc::clone(&node.commands)),
            Self::Cluster(router) => router
                .lock()
                .nodes
                .values()
                .find(|node| node.commands.current() == Some(id))
                .map(|node| Arc::clone(&node.commands)),
        }
    }
}

/// A cluster's slot map and nodes (see the module docs).
pub(crate) struct Router {
    topology: Topology,
    shared: Arc<Shared>,
    map: Mutex<Map>,
    this: Weak<Router>,
}

struct Map {
    /// The node serving each slot, where known.
    slots: Vec<Option<Arc<Node>>>,
    /// Every node known, by address.
    nodes: HashMap<String, Arc<Node>>,
    /// A refresh is under way.
    refreshing: bool,
    /// When the last refresh ended.
    refreshed: Option<Instant>,
}

impl Router {
    pub(crate) fn new(topology: Topology, shared: &Arc<Shared>) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            topology,
            shared: Arc::clone(shared),
            map: Mutex::new(Map {
                slots: vec![None; SLOTS],
                nodes: HashMap::new(),
                refreshing: false,
                refreshed: None,
            }),
            this: Weak::clone(this),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The node at `address`, made if it is new.
    fn node(&self, map: &mut Map, address: &str) -> Result<Arc<Node>, BackendError> {
        if let Some(node) = map.nodes.get(address) {
            return Ok(Arc::clone(node));
        }
        let target = || {
            let client = Client::open(self.topology.node(address)?)?;
            Target::server(&client)
        };
        let (commands, subscriptions) = target()
            .and_then(|commands| Ok((commands, target()?)))
            .map_err(|e| error(&e))?;
        let node = Node::cluster(address.to_owned(), commands, subscriptions, &self.shared);
        map.nodes.insert(address.to_owned(), Arc::clone(&node));
        Ok(node)
    }

    /// The node serving `slot`; while the map does not say, a known node or a seed (which
    /// answers `MOVED`), and the map is read.
    fn route(&self, slot: u16) -> Result<Arc<Node>, BackendError> {
        let mut map = self.lock();
        if let Some(node) = &map.slots[usize::from(slot)] {
            return Ok(Arc::clone(node));
        }
        let known = map.nodes.values().next().cloned();
        let node = match known {
            Some(node) => node,
            None => self.node(&mut map, &self.topology.seeds[0])?,
        };
        drop(map);
        self.refresh();
        Ok(node)
    }

    /// The primaries that serve slots in the current map, sorted.
    pub(crate) fn primaries(&self) -> Vec<String> {
        let map = self.lock();
        let mut primaries: Vec<String> = Vec::new();
        // Slots come in ranges per node: comparing with the last one found skips most.
        for owner in map.slots.iter().flatten() {
            if primaries.last() != Some(&owner.address) && !primaries.contains(&owner.address) {
                primaries.push(owner.address.clone());
            }
        }
        drop(map);
        primaries.sort();
        primaries
    }

    /// The node at `address` (an `ASK` redirection's).
    pub(crate) fn at(&self, address: &str) -> Result<Arc<Node>, BackendError> {
        let mut map = self.lock();
        self.node(&mut map, address)
    }

    /// A `MOVED` reply: `slot` is served at `address` now.
    pub(crate) fn moved(&self, slot: u16, address: &str) {
        let old = {
            let mut map = self.lock();
            let Ok(node) = self.node(&mut map, address) else {
                return;
            };
            map.slots[usize::from(slot)].replace(node)
        };
        if let Some(old) = old.filter(|old| old.address != address) {
            tokio::spawn(async move {
                old.hub
                    .lose(SubscriptionLoss::Moved, |channel| {
                        cluster::slot(channel.as_bytes()) == slot
                    })
                    .await;
            });
        }
        self.refresh();
    }

    /// Reads the slot map again in the background, unless a read is under way or the last
    /// one ended less than [`REFRESH_EVERY`] ago.
    pub(crate) fn refresh(&self) {
        {
            let mut map = self.lock();
            if map.refreshing || map.refreshed.is_some_and(|at| at.elapsed() < REFRESH_EVERY) {
                return;
            }
            map.refreshing = true;
        }
        let Some(this) = self.this.upgrade() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            this.lock().refreshing = false;
            return;
        };
        runtime.spawn(async move {
            let ranges = this.read().await;
            if let Some(ranges) = ranges {
                this.apply(&ranges);
            }
            let mut map = this.lock();
            map.refreshing = false;
            map.refreshed = Some(Instant::now());
        });
    }

    /// `CLUSTER SLOTS` from the first node that answers: the known nodes, then the seeds.
    async fn read(&self) -> Option<Vec<(u16, u16, String)>> {
        let mut candidates: Vec<String> = self.lock().nodes.keys().cloned().collect();
        for seed in &self.topology.seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        let timeout = self.shared.op_timeout;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        for address in candidates {
            let asked = async {
                let client = Client::open(self.topology.node(&address).ok()?).ok()?;
                let mut connection = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .ok()?;
                let reply: Value = redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async(&mut connection)
                    .await
                    .ok()?;
                cluster::parse_slots(&reply, &address)
            };
            if let Ok(Some(ranges)) = tokio::time::timeout(timeout * 2, asked).await
                && !ranges.is_empty()
            {
                return Some(ranges);
            }
        }
        None
    }

    /// Replaces the map with `ranges`; tells the waiters of every slot that left its
    /// node, and connects to the new nodes at once.
    fn apply(&self, ranges: &[(u16, u16, String)]) {
        let (before, slots, new) = {
            let mut map = self.lock();
            let mut slots: Vec<Option<Arc<Node>>> = vec![None; SLOTS];
            let mut new = Vec::new();
            for (first, last, address) in ranges {
                let known = map.nodes.contains_key(address);
                let Ok(node) = self.node(&mut map, address) else {
                    continue;
                };
                if !known {
                    new.push(Arc::clone(&node));
                }
                for owner in &mut slots[usize::from(*first)..=usize::from(*last)] {
                    *owner = Some(Arc::clone(&node));
                }
            }
            let before: Vec<Arc<Node>> = map.nodes.values().cloned().collect();
            map.nodes
                .retain(|address, _| slots.iter().flatten().any(|n| &n.address == address));
            map.slots.clone_from(&slots);
            (before, slots, new)
        };
        let slots = Arc::new(slots);
        for node in before {
            let slots = Arc::clone(&slots);
            tokio::spawn(async move {
                node.hub
                    .lose(SubscriptionLoss::SlotMap, |channel| {
                        let slot = usize::from(cluster::slot(channel.as_bytes()));
                        slots[slot]
                            .as_ref()
                            .is_none_or(|owner| owner.address != node.address)
                    })
                    .await;
            });
        }
        for node in new {
            // A new connection that answers lets the breaker probe at once.
            tokio::spawn(async move {
                let _ = node.commands.get().await;
            });
        }
    }
}
