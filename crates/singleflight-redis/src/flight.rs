//! The fleet layer: what the one caller per process and key does with Redis.
//!
//! It runs as the body of the in-process leader's work, so local waiters never reach it.
//! `join`: the lease holder leads (renewing its lease, publishing its result, error or
//! abandonment), with no subscription: two round trips, the join and the completion.
//! Everyone else follows: subscribes, joins again (a result published before the
//! subscription is then in the result key), and waits for the push, re-checking on a
//! jittered backoff and on disconnects, and re-electing when the leader vanished. Any
//! Redis trouble makes the caller run the work itself and say why.
//!
//! Two guards make a dropped call (a client timeout, a cancelled request) leave nothing
//! behind, whatever point it was dropped at: the breaker's [`Probe`] ends a half-open probe,
//! and the [`LeaseGuard`], armed from the first command that may take the lease, releases
//! the lease by this call's token and tells the followers to elect again.

use std::fmt::Display;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backend::{Backend, BackendError, Event, Joined, Subscription};
use crate::config::Config;
use crate::envelope::{self, Envelope, Keys, Rejected, Sealer, Status};
use crate::health::{Breaker, Counters, FleetStats, Warnings};
use crate::outcome::{FallbackReason, Outcome, RemoteError};

/// How the fleet layer ended a call that did not produce a value.
#[derive(Clone, Debug)]
pub(crate) enum Failure<E> {
    /// The work ran here and failed.
    Local(E),
    /// The work ran in another process and failed there.
    Remote(RemoteError),
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
    following: AtomicUsize,
}

/// Counts a flight as following while it lives.
struct Following<'a>(&'a AtomicUsize);

impl Drop for Following<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// 64 random bits: std's randomly keyed SipHash over a counter, the time and the pid.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    std::hash::RandomState::new().hash_one((
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now(),
        std::process::id(),
    ))
}

fn jitter(base: Duration) -> Duration {
    // ±20 %
    #[allow(clippy::cast_precision_loss, reason = "only a jitter factor")]
    let unit = random_u64() as f64 / u64::MAX as f64;
    base.mul_f64(0.8 + 0.4 * unit)
}

/// Whether a command's success says Redis is healthy (closes the breaker).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Health {
    /// A script: reads, writes and Lua all work.
    Proves,
    /// A subscription: works even when scripts or writes fail (out of memory, a replica).
    ProvesNothing,
}

impl<B: Backend> Fleet<B> {
    pub(crate) fn new(backend: B, config: Config) -> Self {
        Self {
            backend,
            breaker: Breaker::new(config.breaker_failures, config.breaker_open),
            warnings: Warnings::new(config.warn_interval),
            counters: Counters::default(),
            following: AtomicUsize::new(0),
            sealer: Sealer::new(config.codec, &config.namespace, config.secret.as_deref()),
            config,
        }
    }

    /// Flights of this process waiting for another process's leader.
    pub(crate) fn following(&self) -> usize {
        self.following.load(Ordering::Relaxed)
    }

    pub(crate) fn stats(&self) -> FleetStats {
        let mut stats = self.counters.snapshot();
        if let Some(counts) = self.backend.reconnects() {
            counts.fill(&mut stats);
        }
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

    /// Runs one Redis command under the per-command deadline, feeding the breaker. A
    /// command that found the connection lost is sent once more within the deadline: the
    /// client reconnects on that error, and every command is idempotent for its caller.
    async fn op<T, Fut>(
        &self,
        what: &str,
        keys: &Keys,
        health: Health,
        command: impl Fn() -> Fut,
    ) -> Result<T, FallbackReason>
    where
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let deadline = Instant::now() + self.config.op_timeout;
        let mut connection = self.backend.connection(keys);
        let mut result = tokio::time::timeout_at(deadline, command()).await;
        if matches!(&result, Ok(Err(error)) if error.reconnect) {
            connection = self.backend.connection(keys);
            result = tokio::time::timeout_at(deadline, command()).await;
        }
        // The connection's own health: a silent one is replaced (see `link`).
        match &result {
            Ok(Ok(_)) => self.backend.answered(connection),
            Ok(Err(error)) if error.timeout => self.backend.timed_out(connection),
            Err(_) => self.backend.timed_out(connection),
            Ok(Err(error)) if !error.reconnect => self.backend.answered(connection),
            Ok(Err(_)) => {}
        }
        let reason = match result {
            Ok(Ok(value)) => {
                if health == Health::Proves {
                    self.breaker.success();
                }
                return Ok(value);
            }
            Ok(Err(error)) if error.auth => {
                let opened = self.breaker.failure(connection);
                self.warnings.warn(WARN_AUTH, || {
                    format!(
                        "redis refused the credentials on {what} ({error}); running work locally{}",
                        opened_note(opened)
                    )
                });
                FallbackReason::AuthFailed
            }
            Ok(Err(error)) if !error.timeout => {
                let opened = self.breaker.failure(connection);
                self.warnings.warn(WARN_REDIS, || {
                    format!(
                        "redis {what} failed ({error}); running work locally{}",
                        opened_note(opened)
                    )
                });
                FallbackReason::RedisUnavailable
            }
            Ok(Err(_)) | Err(_) => {
                let opened = self.breaker.failure(connection);
                self.warnings.warn(WARN_REDIS, || {
                    format!(
                        "redis {what} timed out after {:?}; running work locally{}",
                        self.config.op_timeout,
                        opened_note(opened)
                    )
                });
                FallbackReason::RedisTimeout
            }
        };
        Err(reason)
    }

    /// Runs the work here without fleet-wide coalescing.
    async fn local<V, E, F, Fut>(
        &self,
        reason: FallbackReason,
        work: F,
    ) -> Result<(V, Outcome), Failure<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let outcome = Outcome::Fallback(reason);
        self.counters.outcome(outcome);
        match work().await {
            Ok(value) => Ok((value, outcome)),
            Err(error) => Err(Failure::Local(error)),
        }
    }

    fn foreign(&self, keys: &Keys, what: &str) -> FallbackReason {
        self.warnings.warn(WARN_FOREIGN, || {
            format!(
                "the {what} of {} holds data that is not a singleflight-redis {what} of this key; running work locally until it expires (within {:?})",
                keys.lock.trim_end_matches(":lock"),
                self.foreign_limit()
            )
        });
        FallbackReason::ForeignData
    }

    fn unverified(&self, keys: &Keys) -> FallbackReason {
        self.warnings.warn(WARN_FOREIGN, || {
            format!(
                "a result for {} is not signed with this group's secret; running work locally",
                keys.lock.trim_end_matches(":lock")
            )
        });
        FallbackReason::Unverified
    }

    /// Coalesces `work` for `key` across the fleet.
    pub(crate) async fn run<V, E, F, Fut>(
        self: &Arc<Self>,
        key: &str,
        work: F,
    ) -> Result<(V, Outcome), Failure<E>>
    where
        V: Serialize + DeserializeOwned,
        E: Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let keys = Keys::new(&self.config.namespace, self.backend.database(), key);
        // Held for the whole call: a call dropped while probing ends the probe.
        let Some(_probe) = self.breaker.allow(self.backend.connection(&keys)) else {
            return self.local(FallbackReason::CircuitOpen, work).await;
        };
        let token = format!("{:016x}{:016x}", random_u64(), random_u64());
        let mut lease = LeaseGuard {
            fleet: Arc::clone(self),
            keys,
            token,
            renewal: None,
            armed: false,
        };
        // Join first: a leader (every call that no other process contends) needs no
        // subscription, so it pays two round trips: this join and its completion.
        let joined = self.join(&mut lease, 0).await;
        let generation = match joined {
            Err(reason) => {
                lease.release_now();
                return self.local(reason, work).await;
            }
            Ok(Joined::Leader(generation)) => {
                let outcome = Outcome::Leader { generation };
                return self.lead(lease, generation, outcome, work).await;
            }
            Ok(Joined::Follow(generation)) => generation,
            Ok(Joined::Result(envelope)) => {
                return self.settle_stored(&lease.keys, &envelope, None, work).await;
            }
            Ok(Joined::Reused(envelope, age)) => {
                return self
                    .settle_stored(&lease.keys, &envelope, Some(age), work)
                    .await;
            }
            Ok(Joined::Foreign(what)) => {
                let reason = self.foreign(&lease.keys, &what);
                return self.local(reason, work).await;
            }
        };
        // A follower subscribes, then asks again (`follow` starts with a re-check): a result
        // published between the join and the subscription is then found in the result key,
        // and one published after it arrives by push.
        let subscription = match self
            .op("subscribe", &lease.keys, Health::ProvesNothing, || {
                self.backend.subscribe(&lease.keys.channel)
            })
            .await
        {
            Ok(subscription) => subscription,
            Err(reason) => return self.local(reason, work).await,
        };
        self.follow(lease, subscription, generation, work).await
    }

    /// One `join`, with the lease guard armed while its effect is unknown: a join that
    /// failed, timed out or was dropped may still have taken the lease.
    async fn join(
        &self,
        lease: &mut LeaseGuard<B>,
        min_generation: u64,
    ) -> Result<Joined, FallbackReason> {
        lease.armed = true;
        let joined = self
            .op("join", &lease.keys, Health::Proves, || {
                self.backend.join(
                    &lease.keys,
                    &lease.token,
                    self.config.lease_ttl,
                    self.foreign_limit(),
                    min_generation,
                    self.reuse_window(),
                )
            })
            .await;
        lease.armed = !matches!(
            joined,
            Ok(Joined::Follow(_) | Joined::Result(_) | Joined::Reused(..) | Joined::Foreign(_))
        );
        joined
    }

    async fn follow<V, E, F, Fut>(
        self: &Arc<Self>,
        mut lease: LeaseGuard<B>,
        subscription: Subscription,
        mut generation: u64,
        work: F,
    ) -> Result<(V, Outcome), Failure<E>>
    where
        V: Serialize + DeserializeOwned,
        E: Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        // Counted as following once subscribed and re-checked: from then on a result
        // arrives by push (tests and dashboards wait on the count).
        let mut following = None;
        // `Duration::MAX`: no deadline of our own.
        let deadline = Instant::now().checked_add(self.config.wait_timeout);
        let mut poll = self.config.poll_min;
        // One failed re-check is forgiven (the first command after a reconnect can fail);
        // the next in a row sends the work local.
        let mut failed_rechecks = 0;
        // The join that made this call a follower ran before its subscription.
        let mut recheck = true;
        // `None` once the server dropped it (a slot that moved, a node that went away).
        let mut subscription = Some(subscription);
        loop {
            if recheck && subscription.is_none() {
                // Subscribe again, where the channel's slot is served now, before asking
                // again: a result published after the subscription arrives by push, and
                // one published before it is in the result key. If that fails, the
                // re-checks on the backoff still find the result.
                if let Ok(again) = self
                    .op("subscribe", &lease.keys, Health::ProvesNothing, || {
                        self.backend.subscribe(&lease.keys.channel)
                    })
                    .await
                {
                    subscription = Some(again);
                }
            }
            if recheck {
                match self.join(&mut lease, generation).await {
                    Err(reason) => {
                        failed_rechecks += 1;
                        if failed_rechecks >= 2 {
                            lease.release_now();
                            return self.local(reason, work).await;
                        }
                        poll = self.config.poll_min;
                    }
                    Ok(Joined::Result(envelope)) => {
                        return self.settle_stored(&lease.keys, &envelope, None, work).await;
                    }
                    // Only a fresh call is handed a value kept for reuse.
                    Ok(Joined::Reused(envelope, age)) => {
                        return self
                            .settle_stored(&lease.keys, &envelope, Some(age), work)
                            .await;
                    }
                    Ok(Joined::Follow(current)) => {
                        failed_rechecks = 0;
                        generation = generation.max(current);
                        following.get_or_insert_with(|| {
                            self.following.fetch_add(1, Ordering::Relaxed);
                            Following(&self.following)
                        });
                    }
                    Ok(Joined::Foreign(what)) => {
                        let reason = self.foreign(&lease.keys, &what);
                        return self.local(reason, work).await;
                    }
                    Ok(Joined::Leader(new)) => {
                        drop(subscription.take());
                        drop(following);
                        let outcome = Outcome::Reelected { generation: new };
                        return self.lead(lease, new, outcome, work).await;
                    }
                }
            }
            recheck = tokio::select! {
                event = next_event(&mut subscription) => match event {
                    Some(Event::Message(bytes)) => match self.sealer.open(&bytes, &lease.keys.key) {
                        // A hint (a leader gave up): ask Redis, whatever generation it names.
                        Ok(envelope) if envelope.status == Status::Abandoned => true,
                        Ok(envelope) if envelope.generation >= generation => {
                            if envelope.status == Status::Ready {
                                match self.op("fetch", &lease.keys, Health::Proves, || self.backend.fetch(&lease.keys)).await {
                                    Ok(Some(stored)) => {
                                        return self.settle_stored(&lease.keys, &stored, None, work).await;
                                    }
                                    // Gone already: ask again, which re-elects if need be.
                                    Ok(None) => true,
                                    Err(reason) => return self.local(reason, work).await,
                                }
                            } else {
                                let settled = self.settle(envelope, None, work);
                                return self.resolve(settled).await;
                            }
                        }
                        Err(Rejected::Unverified) => {
                            let reason = self.unverified(&lease.keys);
                            return self.local(reason, work).await;
                        }
                        // Another generation's or a foreign message: not ours to act on.
                        _ => false,
                    },
                    // Messages may have been lost while the connection was down.
                    Some(Event::Disconnected) => true,
                    // So were they, and the subscription is gone too.
                    Some(Event::Lost) => {
                        subscription = None;
                        true
                    }
                    None => return self.local(FallbackReason::RedisUnavailable, work).await,
                },
                () = tokio::time::sleep(jitter(poll)) => {
                    poll = poll.saturating_mul(2).min(self.config.poll_max);
                    true
                }
                () = sleep_until(deadline) => {
                    self.warnings.warn(WARN_WAIT, || format!(
                        "no result from the leader of generation {generation} within {:?}; running work locally",
                        self.config.wait_timeout
                    ));
                    return self.local(FallbackReason::WaitTimeout, work).await;
                }
            };
        }
    }

    /// A result envelope read from the result key, or (`reused`, with its age) from the
    /// value kept for reuse, which is checked like any other (its signature too).
    async fn settle_stored<V, E, F, Fut>(
        &self,
        keys: &Keys,
        stored: &[u8],
        reused: Option<Duration>,
        work: F,
    ) -> Result<(V, Outcome), Failure<E>>
    where
        V: DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let reason = match self.sealer.open(stored, &keys.key) {
            // Only successes are kept for reuse.
            Ok(envelope) if reused.is_some() && envelope.status != Status::Ok => {
                self.foreign(keys, "value kept for reuse")
            }
            Ok(envelope)
                if matches!(envelope.status, Status::Ok | Status::Err | Status::TooLarge) =>
            {
                let settled = self.settle(envelope, reused, work);
                return self.resolve(settled).await;
            }
            Err(Rejected::Unverified) => self.unverified(keys),
            _ => self.foreign(keys, "result"),
        };
        self.local(reason, work).await
    }

    async fn resolve<V, E, F, Fut>(
        &self,
        settled: Settled<V, E, F>,
    ) -> Result<(V, Outcome), Failure<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        match settled {
            Settled::Done(result) => result,
            Settled::Local(reason, work) => self.local(reason, work).await,
        }
    }

    /// A final message from the leader (value, error, or "too large"), or a value kept
    /// for reuse, published `reused` ago.
    fn settle<V, E, F>(
        &self,
        envelope: Envelope<'_>,
        reused: Option<Duration>,
        work: F,
    ) -> Settled<V, E, F>
    where
        V: DeserializeOwned,
    {
        let generation = envelope.generation;
        let outcome = match reused {
            Some(age) => Outcome::Reused { generation, age },
            None => Outcome::Follower { generation },
        };
        match envelope.status {
            // Our own limit, before decoding a byte of it.
            Status::Ok if envelope.payload.len() > self.config.max_value => {
                self.warnings.warn(WARN_SIZE, || {
                    format!(
                        "shared value of {} bytes exceeds this process's max_value ({}); running work locally",
                        envelope.payload.len(),
                        self.config.max_value
                    )
                });
                Settled::Local(FallbackReason::TooLarge, work)
            }
            Status::Ok => match envelope::decode_value::<V>(envelope.codec, envelope.payload) {
                Some(value) => {
                    self.counters.outcome(outcome);
                    Settled::Done(Ok((value, outcome)))
                }
                None => {
                    self.warnings.warn(WARN_DECODE, || {
                        format!(
                            "shared value of generation {} (codec {}) does not decode as {}; running work locally",
                            envelope.generation,
                            envelope.codec,
                            std::any::type_name::<V>()
                        )
                    });
                    Settled::Local(FallbackReason::Decode, work)
                }
            },
            Status::Err => {
                self.counters.outcome(outcome);
                self.counters.remote_error();
                let text = &envelope.payload[..envelope.payload.len().min(self.config.max_value)];
                Settled::Done(Err(Failure::Remote(RemoteError::new(
                    &String::from_utf8_lossy(text),
                ))))
            }
            _ => Settled::Local(FallbackReason::TooLarge, work),
        }
    }

    async fn lead<V, E, F, Fut>(
        self: &Arc<Self>,
        mut lease: LeaseGuard<B>,
        generation: u64,
        outcome: Outcome,
        work: F,
    ) -> Result<(V, Outcome), Failure<E>>
    where
        V: Serialize,
        E: Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        self.counters.outcome(outcome);
        let lock_value = format!("{generation}:{}", lease.token);
        lease.renewal = Some(self.spawn_renewal(lease.keys.clone(), lock_value.clone()));
        lease.armed = true;
        let result = work().await;
        if let Some(renewal) = lease.renewal.take() {
            renewal.abort();
        }
        let seal = |status, payload: &[u8]| {
            self.sealer
                .seal(status, generation, &lease.keys.key, payload)
        };
        // Only a value that is shared is kept for reuse.
        let mut reuse = Duration::ZERO;
        let envelope = match &result {
            Ok(value) => match envelope::encode_value(self.sealer.codec(), value) {
                Ok(payload) if payload.len() <= self.config.max_value => {
                    reuse = self.reuse_window();
                    seal(Status::Ok, &payload)
                }
                Ok(payload) => {
                    self.warnings.warn(WARN_SIZE, || {
                        format!(
                            "value of {} bytes exceeds max_value ({}); followers run the work themselves",
                            payload.len(),
                            self.config.max_value
                        )
                    });
                    seal(Status::TooLarge, &[])
                }
                Err(error) => {
                    self.warnings.warn(WARN_SIZE, || {
                        format!(
                            "value does not serialize ({error}); followers run the work themselves"
                        )
                    });
                    seal(Status::TooLarge, &[])
                }
            },
            Err(error) => seal(Status::Err, error.to_string().as_bytes()),
        };
        let message = if envelope.len() <= self.config.inline_max {
            envelope.clone()
        } else {
            seal(Status::Ready, &[])
        };
        let published = self
            .op("complete", &lease.keys, Health::Proves, || {
                self.backend.complete(
                    &lease.keys,
                    &lock_value,
                    generation,
                    &envelope,
                    self.config.result_linger,
                    &message,
                    reuse,
                )
            })
            .await;
        if published.is_err() {
            // The value still reaches every caller in this process; the guard releases
            // the lease if the result did not.
            self.counters.publish_failed();
            self.warnings.warn(WARN_PUBLISH, || {
                format!(
                    "result of generation {generation} was not published; followers will re-check"
                )
            });
        } else {
            lease.armed = false;
        }
        match result {
            Ok(value) => Ok((value, outcome)),
            Err(error) => Err(Failure::Local(error)),
        }
    }

    fn spawn_renewal(self: &Arc<Self>, keys: Keys, lock_value: String) -> JoinHandle<()> {
        let fleet = Arc::clone(self);
        tokio::spawn(async move {
            let started = Instant::now();
            let every = fleet.config.lease_ttl / 3;
            loop {
                tokio::time::sleep(every).await;
                if started.elapsed() >= fleet.config.max_hold {
                    fleet.warnings.warn(WARN_LEASE, || {
                        format!(
                            "work has held its lease for max_hold ({:?}); no longer renewing",
                            fleet.config.max_hold
                        )
                    });
                    return;
                }
                let renew = || {
                    fleet
                        .backend
                        .renew(&keys, &lock_value, fleet.config.lease_ttl)
                };
                match fleet.op("renew", &keys, Health::Proves, renew).await {
                    Ok(true) => {}
                    Ok(false) => {
                        fleet.counters.lease_lost();
                        fleet.warnings.warn(WARN_LEASE, || {
                            "lease lost while the work runs; another process may run it too"
                                .to_owned()
                        });
                        return;
                    }
                    // Try again next time: the lease may still be alive.
                    Err(_) => {}
                }
            }
        })
    }
}

/// The next event of `subscription`, or never without one.
async fn next_event(subscription: &mut Option<Subscription>) -> Option<Event> {
    match subscription {
        Some(subscription) => subscription.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn opened_note(opened: bool) -> &'static str {
    if opened {
        "; circuit breaker opened"
    } else {
        ""
    }
}

enum Settled<V, E, F> {
    Done(Result<(V, Outcome), Failure<E>>),
    Local(FallbackReason, F),
}

/// A call's duties towards the fleet on every early exit (panic, cancellation, a command
/// that failed after it may have taken effect): stop renewing, release the lease if this
/// call's token holds it, and tell the followers to elect a new leader now rather than at
/// lease expiry. Armed whenever this call may hold the lease.
struct LeaseGuard<B: Backend> {
    fleet: Arc<Fleet<B>>,
    keys: Keys,
    token: String,
    renewal: Option<JoinHandle<()>>,
    armed: bool,
}

impl<B: Backend> Drop for LeaseGuard<B> {
    fn drop(&mut self) {
        self.release_now();
    }
}

impl<B: Backend> LeaseGuard<B> {
    /// Does the guard's duties now (before this call runs the work locally).
    fn release_now(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        if !std::mem::take(&mut self.armed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let fleet = Arc::clone(&self.fleet);
        let keys = self.keys.clone();
        let token = std::mem::take(&mut self.token);
        // Generation 0: a hint to re-check, whichever generation a follower is at.
        let message = fleet.sealer.seal(Status::Abandoned, 0, &keys.key, &[]);
        // Sent after the call's own commands on the same connection, so Redis applies it
        // after a join that was still on its way. Not fed to the breaker: the call is over.
        // Retried (Redis may be unreachable right now) until the lease would have expired
        // anyway, so followers need not wait for it once Redis is back.
        runtime.spawn(async move {
            let config = &fleet.config;
            let give_up = Instant::now() + config.lease_ttl;
            let mut pause = config.poll_min;
            loop {
                let release = fleet.backend.release(&keys, &token, &message);
                if let Ok(Ok(_)) = tokio::time::timeout(config.op_timeout, release).await {
                    return;
                }
                if Instant::now() + pause >= give_up {
                    return;
                }
                tokio::time::sleep(jitter(pause)).await;
                pause = pause.saturating_mul(2).min(config.poll_max);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::watch;

    use super::*;
    use crate::fake::{FakeConn, FakeRedis};

    type TestFleet = Arc<Fleet<FakeConn>>;

    fn config() -> Config {
        Config::new("t")
            .lease_ttl(Duration::from_secs(3))
            .poll(Duration::from_millis(100), Duration::from_secs(1))
            .op_timeout(Duration::from_millis(250))
            .wait_timeout(Duration::from_secs(30))
    }

    fn process(redis: &Arc<FakeRedis>, config: Config) -> (TestFleet, FakeConn) {
        let conn = redis.connect();
        (Arc::new(Fleet::new(conn.clone(), config)), conn)
    }

    /// Counts executions; the work waits for the gate to open and returns `value`.
    #[derive(Clone)]
    struct Work {
        runs: Arc<AtomicUsize>,
        gate: watch::Sender<bool>,
    }

    impl Work {
        fn new() -> Self {
            Self {
                runs: Arc::new(AtomicUsize::new(0)),
                gate: watch::channel(false).0,
            }
        }

        fn runs(&self) -> usize {
            self.runs.load(Ordering::SeqCst)
        }

        fn open(&self) {
            self.gate.send_replace(true);
        }

        fn run(
            &self,
            fleet: &TestFleet,
            result: Result<u32, &'static str>,
        ) -> JoinHandle<Result<(u32, Outcome), Failure<&'static str>>> {
            let (fleet, runs, mut gate) = (
                Arc::clone(fleet),
                Arc::clone(&self.runs),
                self.gate.subscribe(),
            );
            tokio::spawn(async move {
                fleet
                    .run("key", || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        gate.wait_for(|open| *open).await.unwrap();
                        result
                    })
                    .await
            })
        }
    }

    /// Waits for a state; lets the paused clock advance (by 100 µs steps) when nothing
    /// else is runnable.
    async fn until(mut condition: impl FnMut() -> bool) {
        while !condition() {
            tokio::task::yield_now().await;
            if !condition() {
                tokio::time::sleep(Duration::from_micros(100)).await;
            }
        }
    }

    fn keys() -> Keys {
        Keys::new("t", 0, "key")
    }

    #[tokio::test(start_paused = true)]
    async fn one_leader_one_follower_one_execution() {
        let redis = FakeRedis::new();
        let ((a, a_conn), (b, b_conn)) = (process(&redis, config()), process(&redis, config()));
        let work = Work::new();
        let lead = work.run(&a, Ok(7));
        until(|| work.runs() == 1).await;
        let follow = work.run(&b, Ok(8));
        until(|| b.following() == 1).await;
        work.open();
        let (value, outcome) = follow.await.unwrap().unwrap();
        assert_eq!((value, outcome), (7, Outcome::Follower { generation: 1 }));
        assert_eq!(
            lead.await.unwrap().unwrap(),
            (7, Outcome::Leader { generation: 1 })
        );
        assert_eq!(work.runs(), 1);
        assert!(!redis.lock_held(&keys()), "the lease is released");
        assert_eq!(b.following(), 0);
        assert_eq!(a_conn.subscribes(), 0, "a leader never subscribes");
        assert_eq!(b_conn.subscribes(), 1);
        // A later flight is a new flight (no hidden cache): a new generation.
        let again = Work::new();
        again.open();
        let (_, outcome) = again.run(&b, Ok(9)).await.unwrap().unwrap();
        assert_eq!(outcome, Outcome::Leader { generation: 2 });
    }

    /// A follower joins before it subscribes: a result published in between is not
    /// pushed to it, and must be found at once by the re-check that follows the
    /// subscription, not at the next poll (a minute away here).
    #[tokio::test(start_paused = true)]
    async fn a_result_published_before_the_follower_subscribed_is_found_at_once() {
        let redis = FakeRedis::new();
        let minute = Duration::from_secs(60);
        let (a, _) = process(&redis, config());
        let (b, b_conn) = process(&redis, config().poll(minute, minute));
        let work = Work::new();
        let lead = work.run(&a, Ok(7));
        until(|| work.runs() == 1).await;
        let subscribed = b_conn.hold_subscribe();
        let follow = work.run(&b, Ok(8));
        until(|| b_conn.subscribes() == 1).await;
        assert_eq!(b.following(), 0, "not following before the re-check");
        work.open();
        assert_eq!(
            lead.await.unwrap().unwrap(),
            (7, Outcome::Leader { generation: 1 })
        );
        let published = Instant::now();
        subscribed.send_replace(true);
        assert_eq!(
            follow.await.unwrap().unwrap(),
            (7, Outcome::Follower { generation: 1 })
        );
        assert_eq!(published.elapsed(), Duration::ZERO, "not at a poll");
        assert_eq!(work.runs(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_error_reaches_the_follower_without_any_timer() {
        let redis = FakeRedis::new();
        let ((a, _), (b, _)) = (process(&redis, config()), process(&redis, config()));
        let work = Work::new();
        let lead = work.run(&a, Err("boom"));
        until(|| work.runs() == 1).await;
        let follow = work.run(&b, Ok(8));
        until(|| b.following() == 1).await;
        let opened = Instant::now();
        work.open();
        match follow.await.unwrap() {
            Err(Failure::Remote(e)) => assert_eq!(e.message(), "boom"),
            other => panic!("{other:?}"),
        }
        assert_eq!(opened.elapsed(), Duration::ZERO, "pushed, not polled");
        assert!(matches!(lead.await.unwrap(), Err(Failure::Local("boom"))));
        assert_eq!(work.runs(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_leader_hands_over_at_once() {
        let redis = FakeRedis::new();
        let ((a, _), (b, _)) = (process(&redis, config()), process(&redis, config()));
        let work = Work::new();
        let lead = work.run(&a, Ok(1));
        until(|| work.runs() == 1).await;
        let follow = work.run(&b, Ok(2));
        until(|| b.following() == 1).await;
        let cancelled = Instant::now();
        lead.abort();
        until(|| work.runs() == 2).await;
        assert!(
            cancelled.elapsed() < Duration::from_millis(1),
            "not at lease expiry"
        );
        work.open();
        assert_eq!(
            follow.await.unwrap().unwrap(),
            (2, Outcome::Reelected { generation: 2 })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_crashed_leader_is_replaced_after_its_lease_by_one_process() {
        let redis = FakeRedis::new();
        let (a, a_conn) = process(&redis, config());
        let followers: Vec<_> = (0..5).map(|_| process(&redis, config()).0).collect();
        let work = Work::new();
        let lead = work.run(&a, Ok(1));
        until(|| work.runs() == 1).await;
        let follows: Vec<_> = followers.iter().map(|f| work.run(f, Ok(2))).collect();
        until(|| followers.iter().all(|f| f.following() == 1)).await;
        // The process dies: nothing more reaches Redis from it.
        let crashed = Instant::now();
        a_conn.hang();
        lead.abort();
        until(|| work.runs() == 2).await;
        let took = crashed.elapsed();
        assert!(
            took >= Duration::from_secs(3),
            "not before the lease expired: {took:?}"
        );
        assert!(
            took <= Duration::from_secs(3) + Duration::from_millis(1200),
            "{took:?}"
        );
        work.open();
        let mut outcomes = Vec::new();
        for follow in follows {
            outcomes.push(follow.await.unwrap().unwrap());
        }
        assert_eq!(work.runs(), 2, "exactly one re-execution");
        assert_eq!(
            outcomes
                .iter()
                .filter(|(_, o)| *o == Outcome::Reelected { generation: 2 })
                .count(),
            1
        );
        assert_eq!(
            outcomes
                .iter()
                .filter(|(_, o)| *o == Outcome::Follower { generation: 2 })
                .count(),
            4
        );
        assert!(outcomes.iter().all(|(v, _)| *v == 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_leader_never_overwrites_a_newer_result() {
        let redis = FakeRedis::new();
        let (a, a_conn) = process(&redis, config());
        let (b, _) = process(&redis, config());
        let (old, new) = (Work::new(), Work::new());
        let late = old.run(&a, Ok(1));
        until(|| old.runs() == 1).await;
        // Partitioned: its lease expires, and b leads a new generation.
        a_conn.down();
        tokio::time::sleep(Duration::from_secs(4)).await;
        new.open();
        assert_eq!(
            new.run(&b, Ok(2)).await.unwrap().unwrap(),
            (2, Outcome::Leader { generation: 2 })
        );
        a_conn.up();
        tokio::time::sleep(Duration::from_secs(1)).await; // one renewal period
        old.open();
        assert_eq!(
            late.await.unwrap().unwrap(),
            (1, Outcome::Leader { generation: 1 })
        );
        let (generation, envelope) = redis.result(&keys()).unwrap();
        assert_eq!(generation, 2);
        let sealer = Sealer::new(crate::config::Codec::Json, "t", None);
        assert_eq!(sealer.open(&envelope, "key").unwrap().payload, b"2");
        assert_eq!(a.stats().leases_lost, 1, "its renewal found the lease gone");
    }

    #[tokio::test(start_paused = true)]
    async fn a_redis_restart_never_hands_out_a_generation_twice() {
        let redis = FakeRedis::new();
        let ((a, _), (b, _)) = (process(&redis, config()), process(&redis, config()));
        let work = Work::new();
        let lead = work.run(&a, Ok(1));
        until(|| work.runs() == 1).await;
        redis.flush();
        work.open();
        assert_eq!(
            lead.await.unwrap().unwrap(),
            (1, Outcome::Leader { generation: 1 })
        );
        // The next flight gets a new generation, and its follower never takes the
        // previous flight's lingering result for its own.
        let next = Work::new();
        let lead = next.run(&a, Ok(2));
        until(|| next.runs() == 1).await;
        let follow = next.run(&b, Ok(3));
        until(|| b.following() == 1).await;
        tokio::time::sleep(Duration::from_secs(2)).await; // several re-checks
        next.open();
        assert_eq!(
            lead.await.unwrap().unwrap(),
            (2, Outcome::Leader { generation: 2 })
        );
        assert_eq!(
            follow.await.unwrap().unwrap(),
            (2, Outcome::Follower { generation: 2 })
        );
        // A follower that re-elects after a restart starts above the generation it saw.
        redis.flush();
        let third = Work::new();
        third.open();
        let (_, outcome) = third.run(&b, Ok(4)).await.unwrap().unwrap();
        assert_eq!(
            outcome,
            Outcome::Leader { generation: 1 },
            "a fresh key starts at 1"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn long_work_keeps_its_lease() {
        let redis = FakeRedis::new();
        let ((a, _), (b, _)) = (process(&redis, config()), process(&redis, config()));
        let work = Work::new();
        let lead = work.run(&a, Ok(1));
        until(|| work.runs() == 1).await;
        let follow = work.run(&b, Ok(2));
        until(|| b.following() == 1).await;
        tokio::time::sleep(Duration::from_secs(20)).await; // lease: 3 s
        assert!(redis.lock_held(&keys()));
        work.open();
        assert_eq!(
            follow.await.unwrap().unwrap(),
            (1, Outcome::Follower { generation: 1 })
        );
        assert!(lead.await.unwrap().is_ok());
        assert_eq!(work.runs(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn renewal_stops_after_max_hold() {
        let redis = FakeRedis::new();
        let (a, _) = process(&redis, config().max_hold(Duration::from_secs(10)));
        let work = Work::new();
        let _lead = work.run(&a, Ok(1));
        until(|| work.runs() == 1).await;
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(redis.lock_held(&keys()));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!redis.lock_held(&keys()), "a wedged leader lets go");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_redis_costs_one_deadline_then_the_breaker_opens() {
        let redis = FakeRedis::new();
        let (a, conn) = process(&redis, config());
        conn.hang();
        for _ in 0..3 {
            let started = Instant::now();
            let work = Work::new();
            work.open();
            let (_, outcome) = work.run(&a, Ok(1)).await.unwrap().unwrap();
            assert_eq!(outcome, Outcome::Fallback(FallbackReason::RedisTimeout));
            assert_eq!(started.elapsed(), Duration::from_millis(250));
        }
        let work = Work::new();
        work.open();
        let started = Instant::now();
        let (_, outcome) = work.run(&a, Ok(1)).await.unwrap().unwrap();
        assert_eq!(outcome, Outcome::Fallback(FallbackReason::CircuitOpen));
        assert_eq!(started.elapsed(), Duration::ZERO);
        conn.up();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (_, outcome) = work.run(&a, Ok(1)).await.unwrap().unwrap();
        assert_eq!(
            outcome,
            Outcome::Leader { generation: 1 },
            "the probe closes it"
        );
        let stats = a.stats();
        assert_eq!(stats.fallbacks(FallbackReason::RedisTimeout), 3);
        assert_eq!(stats.fallbacks(FallbackReason::CircuitOpen), 1);
        assert_eq!(stats.leaders, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_join_that_timed_out_after_taking_the_lease_releases_it() {
        let redis = FakeRedis::new();
        let (a, a_conn) = process(&redis, config());
        let (b, _) = process(&redis, config());
        a_conn.apply_then_hang_once();
        let work = Work::new();
        work.open();
        let (_, outcome) = work.run(&a, Ok(1)).await.unwrap().unwrap();
        assert_eq!(outcome, Outcome::Fallback(FallbackReason::RedisTimeout));
        until(|| !redis.lock_held(&keys())).await;
        let started = Instant::now();
        let (_, outcome) = work.run(&b, Ok(2)).await.unwrap().unwrap();
        assert_eq!(outcome, Outcome::Leader { generation: 2 });
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "not after the lease"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_dropped_while_its_join_is_on_its_way_releases_the_lease_at_once() {
        let redis = FakeRedis::new();
        let (a, a_conn) = process(&redis, config());
        let (b, _) = process(&redis, config());
        a_conn.apply_then_hang_once();
        let (dropped, work) = (Work::new(), Work::new());
        let call = dropped.run(&a, Ok(1));
        until(|| redis.lock_held(&keys())).await;
        let follow = work.run(&b, Ok(2));
        until(|| b.following() == 1).await;
        let cancelled = Instant::now();
        call.abort(); // a client timeout, before the join's answer
        until(|| work.runs() == 1).await;
        assert_eq!(cancelled.elapsed(), Duration::ZERO, "not at lease expiry");
        work.open();
        assert_eq!(
            follow.await.unwrap().unwrap(),
            (2, Outcome::Reelected { generation: 2 })
        );
        assert_eq!(dropped.runs(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_runs_locally_at_its_wait_timeout() {
        let redis = FakeRedis::new();
        let (a, _) = process(&redis, config());
        let (b, _) = process(&redis, config().wait_timeout(Duration::from_secs(7)));
        let (stuck, mine) = (Work::new(), Work::new());
        let _lead = stuck.run(&a, Ok(1));
        until(|| stuck.runs() == 1).await;
        mine.open();
        let started = Instant::now();
        let (value, outcome) = mine.run(&b, Ok(2)).await.unwrap().unwrap();
        assert_eq!(
            (value, outcome),
            (2, Outcome::Fallback(FallbackReason::WaitTimeout))
        );
        assert_eq!(started.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn one_failed_recheck_is_forgiven_two_in_a_row_are_not() {
        let redis = FakeRedis::new();
        let (a, _) = process(&redis, config());
        let (b, b_conn) = process(&redis, config());
        let work = Work::new();
        let lead = work.run(&a, Ok(1));
        until(|| work.runs() == 1).await;
        let follow = work.run(&b, Ok(2));
        until(|| b.following() == 1).await;
        b_conn.down();
        b_conn.blip(); // re-check at once: fails
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(b.following(), 1, "still following");
        b_conn.up();
        work.open();
        assert_eq!(
            follow.await.unwrap().unwrap(),
            (1, Outcome::Follower { generation: 1 })
        );
        assert!(lead.await.unwrap().is_ok());

        let again = Work::new();
        let lead = again.run(&a, Ok(3));
        until(|| again.runs() == 1).await;
        let mine = Work::new();
        mine.open();
        let follow = mine.run(&b, Ok(4));
        until(|| b.following() == 1).await;
        b_conn.down();
        b_conn.blip(); // fails; the next poll fails too
        let (value, outcome) = follow.await.unwrap().unwrap();
        assert_eq!(
            (value, outcome),
            (4, Outcome::Fallback(FallbackReason::RedisUnavailable))
        );
        again.open();
        assert!(lead.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_disconnect_makes_the_follower_recheck_at_once() {
        let redis = FakeRedis::new();
        let (a, a_conn) = process(&redis, config());
        let (b, b_conn) = process(
            &redis,
            config().poll(Duration::from_secs(60), Duration::from_secs(60)),
        );
        let work = Work::new();
        let lead = work.run(&a, Ok(1));
        until(|| work.runs() == 1).await;
        let follow = work.run(&b, Ok(2));
        until(|| b.following() == 1).await;
        // The leader finishes while b's connection is away: b misses the push...
        b_conn.down();
        work.open();
        assert!(lead.await.unwrap().is_ok());
        drop(a_conn);
        // ...and on reconnecting re-checks at once, finding the stored result.
        b_conn.up();
        let blipped = Instant::now();
        b_conn.blip();
        assert_eq!(
            follow.await.unwrap().unwrap(),
            (1, Outcome::Follower { generation: 1 })
        );
        assert_eq!(blipped.elapsed(), Duration::ZERO);
    }
}
