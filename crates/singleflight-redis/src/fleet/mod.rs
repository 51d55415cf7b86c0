//! The fleet layer: what the one caller per process and key does with Redis.
//!
//! It runs as the body of the in-process leader's work, so local waiters never reach it.
//! `join`: the lease holder leads (renewing its lease, publishing its result, error or
//! abandonment), with no subscription: two round trips, the join and the completion.
//! Everyone else waits: subscribes, joins again (a result published before the
//! subscription is then in the result key), and waits for the push, re-checking on a
//! jittered backoff and on disconnects, and re-electing when the leader vanished. Any
//! Redis trouble makes the caller run the work itself and say why.
//!
//! By job, one module each:
//!
//! * [`command`]: one Redis command under its deadline, sent again once on a lost
//!   connection, feeding the circuit breaker and the connection's health;
//! * [`election`]: join, lead or wait (subscribe, re-check, re-elect);
//! * [`settle`]: turning a received or stored envelope into this call's result;
//! * [`lease`]: leading under the lease (renewal, completion) and the guard that releases
//!   it on every early exit.
//!
//! Two guards make a dropped call (a client timeout, a cancelled request) leave nothing
//! behind, whatever point it was dropped at: the breaker's `Probe` ends a half-open probe,
//! and the [`LeaseGuard`](lease::LeaseGuard), armed from the first command that may take
//! the lease, releases the lease by this call's token and tells the waiters to elect again.

mod command;
mod election;
mod lease;
mod settle;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::backend::Backend;
use crate::config::Config;
use crate::envelope::{Keys, Sealer};
use crate::health::{Breaker, Counters, FleetStats, Warnings};
use crate::report::{FallbackReason, FleetRole, RemoteError};

use command::Health;
pub(crate) use command::random_u64;

/// How the fleet layer ended a call that did not produce a value, with the role it
/// played.
#[derive(Clone, Debug)]
pub(crate) enum Failure<E> {
    /// The work ran here and failed.
    Local(E, FleetRole),
    /// The work ran in another process and failed there.
    Remote(RemoteError, FleetRole),
}

/// Warning kinds (rate-limited separately).
const WARN_REDIS: usize = 0;
const WARN_DECODE: usize = 1;
const WARN_SIZE: usize = 2;
const WARN_LEASE: usize = 3;
const WARN_PUBLISH: usize = 4;
const WARN_WAIT: usize = 5;
const WARN_FOREIGN: usize = 6;
const WARN_AUTH: usize = 7;

/// One group's fleet layer over backend `B`.
#[derive(Debug)]
pub(crate) struct Fleet<B> {
    backend: B,
    config: Config,
    sealer: Sealer,
    breaker: Breaker,
    counters: Counters,
    warnings: Warnings,
    waiting: AtomicUsize,
}

impl<B: Backend> Fleet<B> {
    pub(crate) fn new(backend: B, config: Config) -> Self {
        Self {
            backend,
            breaker: Breaker::new(config.breaker_failures, config.breaker_open),
            warnings: Warnings::new(config.warn_interval),
            counters: Counters::default(),
            waiting: AtomicUsize::new(0),
            sealer: Sealer::new(config.codec, &config.namespace, config.secret.as_deref()),
            config,
        }
    }

    /// Flights of this process waiting for another process's leader.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub(crate) fn stats(&self) -> FleetStats {
        let mut stats = self.counters.snapshot();
        if let Some(counts) = self.backend.reconnects() {
            counts.fill(&mut stats);
        }
        stats.primaries = self.backend.primaries();
        stats
    }

    /// How long foreign data at a flight's keys may live on.
    fn foreign_limit(&self) -> Duration {
        self.config
            .lease_ttl
            .max(self.config.result_linger)
            .max(self.config.reuse_for.unwrap_or_default())
    }

    /// The reuse window, zero when off.
    fn reuse_window(&self) -> Duration {
        self.config.reuse_for.unwrap_or_default()
    }

    /// Drops `key`'s value kept for reuse across the fleet, and fences off every flight
    /// elected so far: none of them keeps its value for reuse, and the next call leads.
    pub(crate) async fn forget(&self, key: &str) -> Result<(), FallbackReason> {
        let keys = Keys::new(&self.config.namespace, self.backend.database(), key);
        self.op("forget", &keys, Health::Proves, || {
            self.backend.forget(&keys)
        })
        .await
        .map(|_| ())
    }

    /// Runs the work here without fleet-wide coalescing.
    pub(super) async fn local<V, E, F, Fut>(
        &self,
        reason: FallbackReason,
        work: F,
    ) -> Result<(V, FleetRole), Failure<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let role = FleetRole::Fallback(reason);
        self.counters.role(role);
        match work().await {
            Ok(value) => Ok((value, role)),
            Err(error) => Err(Failure::Local(error, role)),
        }
    }

    pub(super) fn foreign(&self, keys: &Keys, what: &str) -> FallbackReason {
        self.warnings.warn(WARN_FOREIGN, || {
            format!(
                "the {what} of {} holds data that is not a singleflight-redis {what} of this key; running work locally until it expires (within {:?})",
                keys.lock.trim_end_matches(":lock"),
                self.foreign_limit()
            )
        });
        FallbackReason::ForeignData
    }

    pub(super) fn unverified(&self, keys: &Keys) -> FallbackReason {
        self.warnings.warn(WARN_FOREIGN, || {
            format!(
                "a result for {} is not signed with this group's secret; running work locally",
                keys.lock.trim_end_matches(":lock")
            )
        });
        FallbackReason::Unverified
    }
}
