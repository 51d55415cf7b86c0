//! Redis health: the circuit breaker, fleet counters and rate-limited warnings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::report::{FallbackReason, FleetRole};

/// Opens after a run of Redis failures so a dead Redis costs calls nothing; after the
/// cool-down one call probes it.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
    /// The connection that was current when the breaker opened: once a newer one has
    /// answered, the next call probes without waiting out the cool-down.
    opened_on: u64,
    /// The half-open probe in progress, by number: only its own [`Probe`] may end it.
    probing: Option<u64>,
    probes: u64,
}

/// A call's permission to use Redis. If it is the half-open probe and the call is dropped
/// before any command settled it (a client timeout, a cancelled request), dropping this
/// ends the probe, so the next call probes again instead of the breaker staying open.
#[derive(Debug)]
#[must_use]
pub(crate) struct Probe<'a> {
    breaker: &'a Breaker,
    id: Option<u64>,
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let mut state = self.breaker.state();
            if state.probing == Some(id) {
                state.probing = None;
            }
        }
    }
}

impl Breaker {
    pub(crate) fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold,
            open_for,
            state: Mutex::new(BreakerState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this call may use Redis: `Some` while closed, and for the one probe after
    /// the cool-down, or as soon as a connection newer than `connection` when it opened
    /// has answered (the one that failed was replaced); keep the [`Probe`] for as long
    /// as the call uses Redis.
    pub(crate) fn allow(&self, connection: u64) -> Option<Probe<'_>> {
        let mut state = self.state();
        match state.open_until {
            None => Some(Probe {
                breaker: self,
                id: None,
            }),
            Some(until)
                if (Instant::now() >= until || connection > state.opened_on)
                    && state.probing.is_none() =>
            {
                state.probes += 1;
                let id = state.probes;
                state.probing = Some(id);
                Some(Probe {
                    breaker: self,
                    id: Some(id),
                })
            }
            Some(_) => None,
        }
    }

    pub(crate) fn success(&self) {
        let mut state = self.state();
        state.failures = 0;
        state.open_until = None;
        state.probing = None;
    }

    /// Records a failure while `connection` was current; `true` if this opened the
    /// breaker.
    pub(crate) fn failure(&self, connection: u64) -> bool {
        let mut state = self.state();
        state.failures = state.failures.saturating_add(1);
        if state.probing.is_some()
            || (state.open_until.is_none() && state.failures >= self.threshold)
        {
            state.open_until = Some(Instant::now() + self.open_for);
            state.opened_on = connection;
            state.probing = None;
            return true;
        }
        false
    }
}

/// Why a connection to Redis was replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReconnectReason {
    /// The server or the network closed it (a reset, an end of stream, an I/O error, a
    /// reply out of step with its command).
    Closed,
    /// Several commands in a row got no answer within
    /// [`Config::op_timeout`](crate::Config::op_timeout): the connection is silent.
    Timeouts,
    /// The health `PING` sent after a command timed out got no answer (or a wrong one)
    /// within [`Config::op_timeout`](crate::Config::op_timeout).
    HealthCheck,
    /// The server refused a write with `READONLY`: it is a replica now (a primary demoted
    /// after a failover). Through Sentinel, the next connection goes to the primary the
    /// sentinels name.
    ReadOnly,
    /// Through Sentinel: the sentinels announced another primary (`+switch-master`) than
    /// the server this connection goes to.
    Failover,
}

impl ReconnectReason {
    /// A short `snake_case` name, for metrics' attributes: `"closed"`, `"timeouts"`,
    /// `"health_check"`, `"read_only"` or `"failover"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Timeouts => "timeouts",
            Self::HealthCheck => "health_check",
            Self::ReadOnly => "read_only",
            Self::Failover => "failover",
        }
    }

    /// Number of reasons.
    pub(crate) const COUNT: usize = 5;
    /// Every reason, in [`index`](Self::index) order.
    pub(crate) const ALL: [Self; Self::COUNT] = [
        Self::Closed,
        Self::Timeouts,
        Self::HealthCheck,
        Self::ReadOnly,
        Self::Failover,
    ];

    pub(crate) fn index(self) -> usize {
        match self {
            Self::Closed => 0,
            Self::Timeouts => 1,
            Self::HealthCheck => 2,
            Self::ReadOnly => 3,
            Self::Failover => 4,
        }
    }

    /// The reason in words, for warnings.
    pub(crate) fn describe(self, op_timeout: Duration) -> String {
        match self {
            Self::Closed => "the server or the network closed it".to_owned(),
            Self::Timeouts => format!(
                "{} commands in a row got no answer within {op_timeout:?}",
                crate::link::TIMEOUTS
            ),
            Self::HealthCheck => format!(
                "a health PING after a command timed out got no answer within {op_timeout:?}"
            ),
            Self::ReadOnly => {
                "the server answered READONLY: it is a replica now, not the primary".to_owned()
            }
            Self::Failover => "the sentinels announced another primary (+switch-master)".to_owned(),
        }
    }
}

/// Why a waiter's subscription was lost. The waiter then subscribes again where its
/// channel's slot is served now and re-checks the result key, so a result published
/// meanwhile is not missed; each is counted once per channel and connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SubscriptionLoss {
    /// The node dropped the subscription itself (a server-sent `SUNSUBSCRIBE`, on a
    /// cluster): the channel's slot left the node, or the node became a replica.
    Unsubscribed,
    /// A command for the channel's slot was answered `MOVED`: another node serves the
    /// slot now.
    Moved,
    /// A new slot map no longer has the node serving the channel's slot (a node lost, a
    /// failover, a migration seen in the map before any `MOVED`).
    SlotMap,
    /// The connection was replaced, and subscribing again on the new one failed.
    Resubscribe,
}

impl SubscriptionLoss {
    /// Number of reasons.
    pub(crate) const COUNT: usize = 4;
    /// Every reason, in [`index`](Self::index) order.
    pub(crate) const ALL: [Self; Self::COUNT] = [
        Self::Unsubscribed,
        Self::Moved,
        Self::SlotMap,
        Self::Resubscribe,
    ];

    pub(crate) fn index(self) -> usize {
        match self {
            Self::Unsubscribed => 0,
            Self::Moved => 1,
            Self::SlotMap => 2,
            Self::Resubscribe => 3,
        }
    }
}

/// Connections replaced, per reason, the last replacement, attempts to open one that
/// failed, and subscriptions lost.
#[derive(Debug, Default)]
pub(crate) struct ReconnectCounts {
    replaced: [AtomicU64; ReconnectReason::COUNT],
    last: Mutex<Option<(ReconnectReason, SystemTime)>>,
    failed_attempts: AtomicU64,
    /// Through Sentinel: the primary of the last connection that opened, and how many
    /// times it was another than the one before.
    primary: Mutex<Option<String>>,
    primary_changes: AtomicU64,
    lost_subscriptions: [AtomicU64; SubscriptionLoss::COUNT],
}

impl ReconnectCounts {
    /// A channel's subscription was lost, for `reason`.
    pub(crate) fn subscription_lost(&self, reason: SubscriptionLoss) {
        self.lost_subscriptions[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn replaced(&self, reason: ReconnectReason) {
        self.replaced[reason.index()].fetch_add(1, Ordering::Relaxed);
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((reason, SystemTime::now()));
    }

    /// A connection to `primary` (Sentinel) opened.
    pub(crate) fn connected_to(&self, primary: &str) {
        let mut current = self.primary.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_deref() != Some(primary) {
            if current.is_some() {
                self.primary_changes.fetch_add(1, Ordering::Relaxed);
            }
            *current = Some(primary.to_owned());
        }
    }

    pub(crate) fn attempt_failed(&self) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
    }

    /// Copies the counts into `stats`.
    pub(crate) fn fill(&self, stats: &mut FleetStats) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        stats.reconnects = ReconnectReason::ALL.map(|r| (r, load(&self.replaced[r.index()])));
        stats.last_reconnect = *self.last.lock().unwrap_or_else(PoisonError::into_inner);
        stats.connect_failures = load(&self.failed_attempts);
        stats
            .primary
            .clone_from(&self.primary.lock().unwrap_or_else(PoisonError::into_inner));
        stats.primary_changes = load(&self.primary_changes);
        stats.lost_subscriptions =
            SubscriptionLoss::ALL.map(|r| (r, load(&self.lost_subscriptions[r.index()])));
    }
}

/// Counts of how calls that reached the fleet layer were settled.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    leaders: AtomicU64,
    waiters: AtomicU64,
    reused: AtomicU64,
    reelected: AtomicU64,
    remote_errors: AtomicU64,
    leases_lost: AtomicU64,
    publish_failures: AtomicU64,
    fallbacks: [AtomicU64; FallbackReason::COUNT],
}

impl Counters {
    pub(crate) fn role(&self, role: FleetRole) {
        let counter = match role {
            FleetRole::Leader { .. } => &self.leaders,
            FleetRole::Waiter { .. } => &self.waiters,
            FleetRole::Reused { .. } => &self.reused,
            FleetRole::Reelected { .. } => &self.reelected,
            FleetRole::Fallback(reason) => &self.fallbacks[reason.index()],
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn remote_error(&self) {
        self.remote_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn lease_lost(&self) {
        self.leases_lost.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn publish_failed(&self) {
        self.publish_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> FleetStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FleetStats {
            leaders: load(&self.leaders),
            waiters: load(&self.waiters),
            reused: load(&self.reused),
            reelected: load(&self.reelected),
            remote_errors: load(&self.remote_errors),
            leases_lost: load(&self.leases_lost),
            publish_failures: load(&self.publish_failures),
            fallbacks: FallbackReason::ALL.map(|r| (r, load(&self.fallbacks[r.index()]))),
            reconnects: ReconnectReason::ALL.map(|r| (r, 0)),
            last_reconnect: None,
            connect_failures: 0,
            primary: None,
            primary_changes: 0,
            lost_subscriptions: SubscriptionLoss::ALL.map(|r| (r, 0)),
            primaries: Vec::new(),
        }
    }
}

/// A copy of a group's fleet counters: one count per call that reached the fleet layer
/// (one per in-process flight; in-process waiters are counted by the group's
/// [`Observer`](singleflight_core::Observer), if any).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetStats {
    /// Flights this process led.
    pub leaders: u64,
    /// Flights whose result came from another process (values and errors alike).
    pub waiters: u64,
    /// Calls handed a value kept for reuse ([`Config::reuse_for`](crate::Config::reuse_for)).
    pub reused: u64,
    /// Flights this process took over after another leader went away.
    pub reelected: u64,
    /// Flights waited on whose leader failed with an error.
    pub remote_errors: u64,
    /// Leases lost while the work ran (renewal found another holder or none).
    pub leases_lost: u64,
    /// Results that could not be published (the local callers still got them).
    pub publish_failures: u64,
    /// Local runs, per reason.
    pub fallbacks: [(FallbackReason, u64); FallbackReason::COUNT],
    /// Connections to Redis replaced, per reason (each is also warned about, with the
    /// reason). A replacement is counted when the old connection is dropped; the new one
    /// may take several attempts.
    pub reconnects: [(ReconnectReason, u64); ReconnectReason::COUNT],
    /// The last replacement of the connection: why, and when (wall-clock time).
    pub last_reconnect: Option<(ReconnectReason, SystemTime)>,
    /// Attempts to open a connection that failed (refused, timed out, credentials
    /// refused); they are paced by [`Config::reconnect`](crate::Config::reconnect).
    pub connect_failures: u64,
    /// Through Sentinel ([`RedisGroup::open_sentinel`](crate::RedisGroup::open_sentinel)):
    /// the primary (`host:port`, as the sentinels name it) of the last connection that
    /// opened, which `ROLE` confirmed; after a failover, the promoted server. `None`
    /// before the first connection, and for a group opened on a URL.
    pub primary: Option<String>,
    /// Through Sentinel: how many times a new connection went to another primary than
    /// the one before (failovers this group followed).
    pub primary_changes: u64,
    /// Waiters' subscriptions lost, per reason: one count per channel and connection
    /// (all the waiters of a channel in this process share its subscription). Each is
    /// followed by a subscription where the slot is served now and a re-check.
    pub lost_subscriptions: [(SubscriptionLoss, u64); SubscriptionLoss::COUNT],
    /// On a cluster ([`RedisGroup::open_cluster`](crate::RedisGroup::open_cluster)): the
    /// primaries (`host:port`, as the cluster names them) that serve slots in the
    /// group's current slot map, sorted, the ones its commands and subscriptions go to.
    /// Empty before the map was first read, and for a group on one server.
    pub primaries: Vec<String>,
}

impl FleetStats {
    /// Local runs for `reason`.
    pub fn fallbacks(&self, reason: FallbackReason) -> u64 {
        self.fallbacks[reason.index()].1
    }

    /// Local runs for any reason.
    pub fn total_fallbacks(&self) -> u64 {
        self.fallbacks.iter().map(|(_, n)| n).sum()
    }

    /// Connections replaced for `reason`.
    pub fn reconnects(&self, reason: ReconnectReason) -> u64 {
        self.reconnects[reason.index()].1
    }

    /// Connections replaced for any reason.
    pub fn total_reconnects(&self) -> u64 {
        self.reconnects.iter().map(|(_, n)| n).sum()
    }

    /// Subscriptions lost for `reason`.
    pub fn lost_subscriptions(&self, reason: SubscriptionLoss) -> u64 {
        self.lost_subscriptions[reason.index()].1
    }

    /// Subscriptions lost for any reason.
    pub fn total_lost_subscriptions(&self) -> u64 {
        self.lost_subscriptions.iter().map(|(_, n)| n).sum()
    }
}

/// At most one warning per kind in each interval; the rest are counted and mentioned in
/// the next warning.
#[derive(Debug)]
pub(crate) struct Warnings {
    interval: Duration,
    last: Mutex<[(Option<std::time::Instant>, u64); 8]>,
}

impl Warnings {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::new([(None, 0); 8]),
        }
    }

    /// Logs `message` for kind `kind` unless one was logged within the interval; returns
    /// whether it did.
    pub(crate) fn warn(&self, kind: usize, message: impl FnOnce() -> String) -> bool {
        let now = std::time::Instant::now();
        let suppressed = {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            let (at, suppressed) = &mut last[kind % 8];
            if at.is_some_and(|at| now.duration_since(at) < self.interval) {
                *suppressed += 1;
                return false;
            }
            *at = Some(now);
            std::mem::take(suppressed)
        };
        tracing::warn!(
            target: "singleflight_redis",
            suppressed,
            "{}",
            message()
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_rate_limited_per_kind() {
        let warnings = Warnings::new(Duration::from_secs(3600));
        assert!(warnings.warn(0, || "first".to_owned()));
        assert!(!warnings.warn(0, || unreachable!("suppressed messages are not even built")));
        assert!(warnings.warn(1, || "another kind".to_owned()));
        let warnings = Warnings::new(Duration::ZERO);
        assert!(warnings.warn(0, String::new) && warnings.warn(0, String::new));
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_after_the_threshold_and_probes_once_after_cool_down() {
        let breaker = Breaker::new(3, Duration::from_secs(5));
        assert!(breaker.allow(0).is_some());
        assert!(!breaker.failure(0));
        assert!(!breaker.failure(0));
        assert!(breaker.failure(0), "the third failure opens it");
        assert!(breaker.allow(0).is_none());
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = breaker.allow(0);
        assert!(probe.is_some(), "one probe after the cool-down");
        assert!(breaker.allow(0).is_none(), "only one");
        assert!(breaker.failure(0), "a failed probe reopens at once");
        drop(probe);
        assert!(breaker.allow(0).is_none());
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = breaker.allow(0);
        assert!(probe.is_some());
        breaker.success();
        drop(probe);
        assert!(
            breaker.allow(0).is_some() && breaker.allow(0).is_some(),
            "closed again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_lets_the_next_call_probe() {
        let breaker = Breaker::new(1, Duration::from_secs(5));
        assert!(breaker.failure(0));
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = breaker.allow(0);
        assert!(probe.is_some());
        assert!(breaker.allow(0).is_none(), "one probe at a time");
        drop(probe); // cancelled before Redis answered
        let probe = breaker.allow(0);
        assert!(probe.is_some(), "the next call probes");
        // A probe that failed and was dropped late never ends a newer probe.
        assert!(breaker.failure(0));
        tokio::time::advance(Duration::from_secs(5)).await;
        let newer = breaker.allow(0);
        assert!(newer.is_some());
        drop(probe);
        assert!(
            breaker.allow(0).is_none(),
            "the newer probe is still the one"
        );
        drop(newer);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replaced_connection_that_answers_is_probed_without_the_cool_down() {
        let breaker = Breaker::new(1, Duration::from_secs(5));
        assert!(breaker.failure(3), "opened while connection 3 was current");
        assert!(breaker.allow(3).is_none(), "the same connection waits");
        let probe = breaker.allow(4);
        assert!(probe.is_some(), "a newer one is probed at once");
        assert!(breaker.allow(4).is_none(), "by one call");
        assert!(breaker.failure(4), "it failed too");
        drop(probe);
        assert!(breaker.allow(4).is_none());
        assert!(breaker.allow(5).is_some());
    }
}
