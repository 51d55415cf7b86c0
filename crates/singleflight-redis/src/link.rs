//! The connection to Redis: one RESP3 multiplexed connection per group, for commands and
//! subscriptions alike, replaced when it is lost or goes silent.
//!
//! # Implementation
//!
//! The current connection is in one of four states ([`Conn`]):
//!
//! * `Idle`: none yet. The first command starts the first attempt.
//! * `Connecting`: an attempt runs, or waits out the short pause before the first attempt
//!   after a replacement. Commands wait for its role (within their own deadlines).
//! * `Up { id, .. }`: commands go to it. Every attempt gets a new, larger `id`, so a report
//!   about an earlier connection never touches a newer one.
//! * `Down(error)`: the last attempt failed. Commands fail at once with its error while the
//!   next attempt waits out its backoff.
//!
//! Transitions: `Idle → Connecting` (first command); `Up → Connecting` (replaced: the
//! server or the network closed it, [`TIMEOUTS`] commands in a row got no answer, the
//! health `PING` sent after a command timed out got none, the server answered
//! `READONLY`, or, through Sentinel, the sentinels announced another primary);
//! `Connecting → Up | Down` (the attempt's role; through Sentinel an attempt first asks
//! the sentinels for the primary, and fails if `ROLE` says the server is not one); `Down → Connecting` (the backoff is over). Only the reconnect task
//! leaves `Connecting` and `Down`, and there is one while the state is either: connections
//! are opened one at a time.
//!
//! A new connection is handed to commands first; then every channel with waiters is
//! subscribed on it, and the waiters are told to re-check, since messages published
//! while the old connection was silent were lost.
//!
//! One `std` mutex guards [`State`]; nothing is awaited and no user code runs under it.
//! The watch channel `changed` is bumped after every change of state, for commands that
//! wait for an attempt.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::io::tcp::TcpSettings;
use redis::io::tcp::socket2::TcpKeepalive;
use redis::{
    AsyncConnectionConfig, Client, ErrorKind, ProtocolVersion, PushInfo, PushKind, RedisError,
    RedisResult, Value,
};
use tokio::sync::{mpsc, watch};

use crate::backend::{BackendError, Hub};
use crate::fleet::random_u64;
use crate::health::{ReconnectCounts, ReconnectReason, Warnings};
use crate::sentinel::{Discovery, switched};

/// Commands in a row on one connection that got no answer before it is replaced.
pub(crate) const TIMEOUTS: u32 = 3;

/// Idle time before the kernel's first keepalive probe.
const KEEPALIVE_TIME: Duration = Duration::from_secs(10);
/// Time between keepalive probes (where the platform lets us set it).
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "fuchsia",
    target_os = "macos",
    target_os = "freebsd",
    target_os = "windows"
))]
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes before the kernel closes the connection (where it can be set).
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "fuchsia",
    target_os = "macos",
    target_os = "freebsd",
    target_os = "windows"
))]
const KEEPALIVE_RETRIES: u32 = 3;
/// How long sent data may stay unacknowledged before the kernel closes the connection
/// (`TCP_USER_TIMEOUT`, Linux, Android and Fuchsia).
#[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
const USER_TIMEOUT: Duration = Duration::from_secs(20);

/// Keepalive and `TCP_USER_TIMEOUT` where the platform has them, and no Nagle delay: a
/// connection the network dropped is closed by the kernel even if no command notices.
pub(crate) fn tcp_settings() -> TcpSettings {
    let keepalive = TcpKeepalive::new().with_time(KEEPALIVE_TIME);
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "fuchsia",
        target_os = "macos",
        target_os = "freebsd",
        target_os = "windows"
    ))]
    let keepalive = keepalive
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    let settings = TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive);
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    let settings = settings.set_user_timeout(USER_TIMEOUT);
    settings
}

/// A Redis error as the fleet layer sees it.
pub(crate) fn error(e: &RedisError) -> BackendError {
    let auth = e.kind() == ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"));
    BackendError {
        timeout: e.is_timeout(),
        auth,
        reconnect: e.is_io_error() || e.is_connection_dropped() || read_only(e),
        moved: (e.code() == Some("MOVED"))
            .then(|| e.redirect_node())
            .flatten()
            .map(|(address, slot)| (slot, address.to_owned())),
        message: e.to_string(),
    }
}

/// Whether the server refused a write because it is a replica (a primary demoted after a
/// failover, still reached through the connection made to it as a primary).
fn read_only(e: &RedisError) -> bool {
    e.code() == Some("READONLY")
}

/// Whether an error says the connection itself is gone (closed, reset, out of step).
fn lost(e: &RedisError) -> bool {
    e.is_connection_dropped() || (e.is_unrecoverable_error() && !e.is_timeout())
}

/// Subscribes `connection` to `channel`.
///
/// Sharded: `SSUBSCRIBE`, sent as a plain command whose reply is its confirmation push.
/// The client pairs confirmation pushes with the commands in flight in order, so a
/// server-sent `SUNSUBSCRIBE` (a slot that moved) arriving meanwhile can be taken as this
/// command's reply: a reply that does not confirm this channel is not trusted, and the
/// command is sent again (the server confirms a channel already subscribed, too).
pub(crate) async fn subscribe(
    connection: &mut MultiplexedConnection,
    channel: &str,
    pubsub: Pubsub,
) -> RedisResult<()> {
    if pubsub == Pubsub::Plain {
        return connection.subscribe(channel).await;
    }
    for _ in 0..3 {
        let reply: Value = redis::cmd("SSUBSCRIBE")
            .arg(channel)
            .query_async(connection)
            .await?;
        if confirms(&reply, &PushKind::SSubscribe, channel) {
            return Ok(());
        }
    }
    Err(RedisError::from((
        ErrorKind::Client,
        "SSUBSCRIBE was not confirmed",
        channel.to_owned(),
    )))
}

/// Unsubscribes `connection` from `channel` (whatever the reply).
pub(crate) async fn unsubscribe(
    connection: &mut MultiplexedConnection,
    channel: &str,
    pubsub: Pubsub,
) {
    match pubsub {
        Pubsub::Plain => {
            let _ = connection.unsubscribe(channel).await;
        }
        Pubsub::Sharded => {
            let _ = redis::cmd("SUNSUBSCRIBE")
                .arg(channel)
                .query_async::<Value>(connection)
                .await;
        }
    }
}

/// Whether `reply` is a `kind` confirmation of `channel`.
fn confirms(reply: &Value, kind: &PushKind, channel: &str) -> bool {
    matches!(
        reply,
        Value::Push { kind: k, data } if k == kind
            && matches!(data.first(), Some(Value::BulkString(c)) if c == channel.as_bytes())
    )
}

enum Conn {
    Idle,
    Connecting,
    Up {
        id: u64,
        connection: MultiplexedConnection,
        /// Through Sentinel: the primary's address (`host:port`).
        primary: Option<String>,
    },
    Down(BackendError),
}

/// Where connections go.
pub(crate) enum Target {
    /// One server, by the client's URL (boxed: a client is large, and read once per
    /// attempt).
    Server(Box<Client>),
    /// The current primary of a Sentinel service, asked for before every attempt.
    Sentinel(Arc<Discovery>),
}

impl Target {
    /// The server of `client` over RESP3 (whatever its URL says), with keepalive.
    pub(crate) fn server(client: &Client) -> RedisResult<Self> {
        let info = client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        Ok(Self::Server(Box::new(Client::open(
            info.set_redis_settings(settings)
                .set_tcp_settings(tcp_settings()),
        )?)))
    }

    /// The logical database the connections select.
    pub(crate) fn database(&self) -> i64 {
        match self {
            Self::Server(client) => client.get_connection_info().redis_settings().db(),
            Self::Sentinel(discovery) => discovery.database(),
        }
    }

    /// A new connection, and (through Sentinel) the primary's address.
    async fn connect(
        &self,
        config: &AsyncConnectionConfig,
        timeout: Duration,
    ) -> Result<(MultiplexedConnection, Option<String>), BackendError> {
        match self {
            Self::Server(client) => client
                .get_multiplexed_async_connection_with_config(config)
                .await
                .map(|connection| (connection, None))
                .map_err(|e| error(&e)),
            Self::Sentinel(discovery) => discovery
                .connect(config, timeout)
                .await
                .map(|(connection, primary)| (connection, Some(primary))),
        }
    }
}

/// How often the `+switch-master` subscription's sentinel is pinged (a sentinel that
/// stopped answering is left for the next one).
const SENTINEL_PING: Duration = Duration::from_secs(5);

struct State {
    conn: Conn,
    /// Commands in a row on the `Up` connection that got no answer.
    timeouts: u32,
    /// A health `PING` is on its way on the `Up` connection.
    pinging: bool,
    /// The `id` of the last connection that was `Up` (0: none yet).
    last_up: u64,
}

/// What every link of a group shares (one link per server; on a cluster, two per
/// node): settings, the connection numbers and the counts.
pub(crate) struct Shared {
    pub(crate) op_timeout: Duration,
    /// Pause before the first attempt after a replacement (at most), and the cap.
    pub(crate) backoff: (Duration, Duration),
    /// The last connection number handed out: numbers are unique across the group's
    /// links, so a number names one connection of one link.
    attempts: AtomicU64,
    pub(crate) counts: ReconnectCounts,
    warnings: Warnings,
}

impl Shared {
    pub(crate) fn new(
        op_timeout: Duration,
        backoff: (Duration, Duration),
        warn_interval: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            op_timeout,
            backoff,
            attempts: AtomicU64::new(0),
            counts: ReconnectCounts::default(),
            warnings: Warnings::new(warn_interval),
        })
    }
}

/// What a link's subscriptions are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pubsub {
    /// `SUBSCRIBE` / `PUBLISH`: one server.
    Plain,
    /// `SSUBSCRIBE` / `SPUBLISH`: a cluster node, which drops the subscriptions of a
    /// slot it no longer serves (a server-sent `SUNSUBSCRIBE`).
    Sharded,
}

/// One connection of a group (see the module docs).
pub(crate) struct Link {
    target: Target,
    op_timeout: Duration,
    /// Pause before the first attempt after a replacement (at most), and the cap.
    backoff: (Duration, Duration),
    hub: Arc<Hub>,
    pubsub: Pubsub,
    state: Mutex<State>,
    changed: watch::Sender<()>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").finish_non_exhaustive()
    }
}

/// A random duration in `[from, to]`.
fn between(from: Duration, to: Duration) -> Duration {
    #[allow(clippy::cast_precision_loss, reason = "only a jitter factor")]
    let unit = random_u64() as f64 / u64::MAX as f64;
    from + (to.saturating_sub(from)).mul_f64(unit)
}

/// The pause after `failures` failed attempts in a row (`>= 1`): doubling from `min` up
/// to `max`, drawn from the upper half.
pub(crate) fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let ceiling = min
        .saturating_mul(1 << failures.saturating_sub(1).min(20))
        .min(max);
    between(ceiling / 2, ceiling)
}

impl Link {
    /// A link to `target`; no connection is opened before the first command.
    pub(crate) fn new(
        target: Target,
        hub: Arc<Hub>,
        pubsub: Pubsub,
        shared: &Arc<Shared>,
    ) -> Arc<Self> {
        Arc::new(Self {
            target,
            op_timeout: shared.op_timeout,
            backoff: shared.backoff,
            hub,
            pubsub,
            state: Mutex::new(State {
                conn: Conn::Idle,
                timeouts: 0,
                pinging: false,
                last_up: 0,
            }),
            changed: watch::channel(()).0,
            shared: Arc::clone(shared),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, conn: Conn) {
        self.state().conn = conn;
        self.changed.send_replace(());
    }

    /// The `id` of the last connection that answered (0: none yet).
    pub(crate) fn last_up(&self) -> u64 {
        self.state().last_up
    }

    /// The `id` of the current connection, if it is up.
    pub(crate) fn current(&self) -> Option<u64> {
        match self.state().conn {
            Conn::Up { id, .. } => Some(id),
            _ => None,
        }
    }

    /// The current connection and its `id`: at once when it is up, after the attempt in
    /// progress otherwise, or the last attempt's error while the next one waits.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the attempt runs in its own task.
    pub(crate) async fn get(
        self: &Arc<Self>,
    ) -> Result<(u64, MultiplexedConnection), BackendError> {
        let mut changed = self.changed.subscribe();
        loop {
            {
                let mut state = self.state();
                match &state.conn {
                    Conn::Up { id, connection, .. } => return Ok((*id, connection.clone())),
                    Conn::Down(error) => return Err(error.clone()),
                    Conn::Connecting => {}
                    Conn::Idle => {
                        state.conn = Conn::Connecting;
                        self.spawn_reconnect(Duration::ZERO);
                        self.spawn_switch_watch();
                    }
                }
                // Seen under the lock: a change after it wakes the wait below.
                changed.borrow_and_update();
            }
            // The sender lives as long as `self`.
            let _ = changed.changed().await;
        }
    }

    /// What a command on connection `id` returned: a connection that is gone is replaced.
    pub(crate) fn check<T>(
        self: &Arc<Self>,
        id: u64,
        result: RedisResult<T>,
    ) -> Result<T, BackendError> {
        result.map_err(|e| {
            if read_only(&e) {
                self.replace(id, ReconnectReason::ReadOnly);
            } else if lost(&e) {
                self.replace(id, ReconnectReason::Closed);
            }
            error(&e)
        })
    }

    /// A command on connection `id` got no answer in time: the [`TIMEOUTS`]-th in a row
    /// replaces the connection; the first sends a health `PING`, which replaces it unless
    /// it is answered within the command deadline.
    pub(crate) fn timed_out(self: &Arc<Self>, id: u64) {
        let connection = {
            let mut state = self.state();
            let State {
                conn:
                    Conn::Up {
                        id: current,
                        connection,
                        ..
                    },
                timeouts,
                pinging,
                ..
            } = &mut *state
            else {
                return;
            };
            if *current != id {
                return;
            }
            *timeouts += 1;
            if *timeouts >= TIMEOUTS {
                drop(state);
                self.replace(id, ReconnectReason::Timeouts);
                return;
            }
            if std::mem::replace(pinging, true) {
                return;
            }
            connection.clone()
        };
        let link = Arc::downgrade(self);
        let deadline = self.op_timeout;
        tokio::spawn(async move {
            let mut connection = connection;
            let command = redis::cmd("PING");
            let ping = command.query_async::<Value>(&mut connection);
            let alive = matches!(
                tokio::time::timeout(deadline, ping).await,
                Ok(Ok(Value::SimpleString(pong))) if pong.eq_ignore_ascii_case("pong")
            );
            let Some(link) = link.upgrade() else {
                return;
            };
            if alive {
                let mut state = link.state();
                if matches!(state.conn, Conn::Up { id: current, .. } if current == id) {
                    state.pinging = false;
                }
            } else {
                link.replace(id, ReconnectReason::HealthCheck);
            }
        });
    }

    /// A command on connection `id` got an answer: it is alive.
    pub(crate) fn answered(&self, id: u64) {
        let mut state = self.state();
        if matches!(state.conn, Conn::Up { id: current, .. } if current == id) {
            state.timeouts = 0;
        }
    }

    /// Drops connection `id` if it is still the current one, and starts opening a new one.
    fn replace(self: &Arc<Self>, id: u64, reason: ReconnectReason) {
        let old = {
            let mut state = self.state();
            if !matches!(state.conn, Conn::Up { id: current, .. } if current == id) {
                return;
            }
            state.timeouts = 0;
            state.pinging = false;
            std::mem::replace(&mut state.conn, Conn::Connecting)
        };
        self.changed.send_replace(());
        // Its commands still on their way keep it open until they end.
        drop(old);
        self.shared.counts.replaced(reason);
        self.shared.warnings.warn(0, || {
            format!(
                "redis connection {id} replaced ({reason:?}): {}; reconnecting",
                reason.describe(self.op_timeout)
            )
        });
        self.spawn_reconnect(between(Duration::ZERO, self.backoff.0));
    }

    /// The configuration of connection `id`: its pushes go to the hub, and its loss
    /// replaces it.
    fn config(self: &Arc<Self>, id: u64) -> AsyncConnectionConfig {
        let (link, hub) = (Arc::downgrade(self), Arc::downgrade(&self.hub));
        let pubsub = self.pubsub;
        let push = move |info: PushInfo| -> Result<(), ()> {
            match info.kind {
                PushKind::Message | PushKind::SMessage => {
                    if let (Some(hub), [Value::BulkString(channel), Value::BulkString(payload)]) =
                        (hub.upgrade(), info.data.as_slice())
                    {
                        hub.deliver(&String::from_utf8_lossy(channel), payload);
                    }
                }
                // The node no longer serves the channel's slot (it moved, or the node is a
                // replica now), or the confirmation of our own SUNSUBSCRIBE: waiters
                // still on the channel subscribe again where its slot is now.
                PushKind::SUnsubscribe if pubsub == Pubsub::Sharded => {
                    if let (Some(hub), [Value::BulkString(channel), ..]) =
                        (hub.upgrade(), info.data.as_slice())
                    {
                        hub.dropped(&String::from_utf8_lossy(channel), id);
                    }
                }
                PushKind::Disconnection => {
                    if let Some(link) = link.upgrade() {
                        link.replace(id, ReconnectReason::Closed);
                    }
                }
                _ => {}
            }
            Ok(())
        };
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.op_timeout))
            .set_response_timeout(Some(self.op_timeout))
            .set_push_sender(push)
    }

    /// The reconnect task: after `first` pause, attempts until one succeeds, pausing
    /// between failures; then subscribes the waiters' channels on the new connection.
    fn spawn_reconnect(self: &Arc<Self>, first: Duration) {
        let link: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut pause = first;
            let mut failures = 0;
            loop {
                tokio::time::sleep(pause).await;
                let Some(this) = link.upgrade() else {
                    return;
                };
                if failures > 0 {
                    this.set(Conn::Connecting);
                }
                let id = this.shared.attempts.fetch_add(1, Ordering::Relaxed) + 1;
                let attempt = this.target.connect(&this.config(id), this.op_timeout).await;
                match attempt {
                    Ok((connection, primary)) => {
                        if let Some(primary) = &primary {
                            this.shared.counts.connected_to(primary);
                        }
                        {
                            let mut state = this.state();
                            state.conn = Conn::Up {
                                id,
                                connection: connection.clone(),
                                primary,
                            };
                            state.last_up = id;
                        }
                        this.changed.send_replace(());
                        if id > 1 {
                            tracing::info!(
                                target: "singleflight_redis",
                                "redis connection open again after {failures} failed attempt(s)"
                            );
                        }
                        let (deadline, pubsub) = (this.op_timeout, this.pubsub);
                        this.hub
                            .resubscribe(id, |channel| {
                                let mut connection = connection.clone();
                                async move {
                                    match tokio::time::timeout(
                                        deadline,
                                        subscribe(&mut connection, &channel, pubsub),
                                    )
                                    .await
                                    {
                                        Ok(result) => result.map_err(|e| error(&e)),
                                        Err(_) => Err(BackendError::new("subscribe timed out")),
                                    }
                                }
                            })
                            .await;
                        return;
                    }
                    Err(e) => {
                        failures += 1;
                        this.shared.counts.attempt_failed();
                        pause = backoff(failures, this.backoff.0, this.backoff.1);
                        this.shared.warnings.warn(1, || {
                            format!("could not connect to redis ({e}); next attempt in {pause:?}")
                        });
                        this.set(Conn::Down(e));
                    }
                }
            }
        });
    }
}

impl Link {
    /// The sentinels announced `primary` as the service's new primary: a connection to
    /// another server is replaced (it may be an old primary that has not learnt of its
    /// demotion, and would take writes meanwhile).
    fn switched(self: &Arc<Self>, primary: &str) {
        let id = match &self.state().conn {
            Conn::Up {
                id,
                primary: Some(current),
                ..
            } if current != primary => *id,
            _ => return,
        };
        self.replace(id, ReconnectReason::Failover);
    }

    /// Through Sentinel: follows `+switch-master` on one sentinel at a time, for as long
    /// as the link lives, moving to the next sentinel when one closes the connection or
    /// stops answering its `PING`.
    fn spawn_switch_watch(self: &Arc<Self>) {
        let Target::Sentinel(discovery) = &self.target else {
            return;
        };
        let discovery = Arc::clone(discovery);
        let link: Weak<Self> = Arc::downgrade(self);
        // Ends (with an error) when the link is dropped.
        let mut alive = self.changed.subscribe();
        let (timeout, (min, max)) = (self.op_timeout, self.backoff);
        tokio::spawn(async move {
            let mut failures = 0;
            loop {
                let (tx, mut rx) = mpsc::unbounded_channel();
                let push = move |info: PushInfo| -> Result<(), ()> {
                    let event = match (info.kind, info.data.as_slice()) {
                        (PushKind::Message, [_, Value::BulkString(payload)]) => {
                            Some(payload.clone())
                        }
                        (PushKind::Disconnection, _) => None,
                        _ => return Ok(()),
                    };
                    tx.send(event).map_err(|_| ())
                };
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_push_sender(push);
                if let Ok((mut connection, _)) = discovery.watch(&config, timeout).await {
                    failures = 0;
                    loop {
                        tokio::select! {
                            event = rx.recv() => match event {
                                Some(Some(message)) => {
                                    let Some(link) = link.upgrade() else { return };
                                    if let Some(primary) = switched(&message, discovery.service()) {
                                        link.switched(&primary);
                                    }
                                }
                                _ => break,
                            },
                            gone = alive.changed() => if gone.is_err() { return },
                            () = tokio::time::sleep(SENTINEL_PING) => {
                                let command = redis::cmd("PING");
                                let ping = command.query_async::<Value>(&mut connection);
                                if !matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_))) {
                                    break;
                                }
                            }
                        }
                    }
                }
                failures += 1;
                let pause = tokio::time::sleep(backoff(failures, min, max));
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        () = &mut pause => break,
                        gone = alive.changed() => if gone.is_err() { return },
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_min_to_max_in_its_upper_half() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..100 {
            let first = backoff(1, min, max);
            assert!((min / 2..=min).contains(&first), "{first:?}");
            let third = backoff(3, min, max);
            assert!((min * 2..=min * 4).contains(&third), "{third:?}");
            let late = backoff(40, min, max);
            assert!((max / 2..=max).contains(&late), "{late:?}");
        }
    }
}
