//! The fleet layer: what the one caller per process and key does with Redis.
//!
//! It runs as the body of the in-process leader's work, so local waiters never reach it.
//! Subscribe, then `join`: the lease holder leads (renewing its lease, publishing its
//! result, error or abandonment); everyone else follows, waiting for the push, re-checking
//! on a jittered backoff and on disconnects, and re-electing when the leader vanished.
//! Any Redis trouble makes the caller run the work itself and say why.

use std::fmt::Display;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backend::{Backend, BackendError, Event, Joined};
use crate::config::Config;
use crate::envelope::{self, HEADER_LEN, Header, Keys, Status};
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

/// One group's fleet layer over backend `B`.
#[derive(Debug)]
pub(crate) struct Fleet<B> {
    backend: B,
    config: Config,
    breaker: Breaker,
    counters: Counters,
    warnings: Warnings,
    following: std::sync::atomic::AtomicUsize,
}

/// Counts a flight as following while it lives.
struct Following<'a>(&'a std::sync::atomic::AtomicUsize);

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

impl<B: Backend> Fleet<B> {
    pub(crate) fn new(backend: B, config: Config) -> Self {
        Self {
            backend,
            breaker: Breaker::new(config.breaker_failures, config.breaker_open),
            warnings: Warnings::new(config.warn_interval),
            counters: Counters::default(),
            following: std::sync::atomic::AtomicUsize::new(0),
            config,
        }
    }

    /// Flights of this process waiting for another process's leader.
    pub(crate) fn following(&self) -> usize {
        self.following.load(Ordering::Relaxed)
    }

    pub(crate) fn stats(&self) -> FleetStats {
        self.counters.snapshot()
    }

    /// Runs one Redis command under the per-command deadline, feeding the breaker.
    async fn op<T>(
        &self,
        what: &str,
        command: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, FallbackReason> {
        let reason = match tokio::time::timeout(self.config.op_timeout, command).await {
            Ok(Ok(value)) => {
                self.breaker.success();
                return Ok(value);
            }
            Ok(Err(error)) if !error.timeout => {
                let opened = self.breaker.failure();
                self.warnings.warn(WARN_REDIS, || {
                    format!(
                        "redis {what} failed ({error}); running work locally{}",
                        opened_note(opened)
                    )
                });
                FallbackReason::RedisUnavailable
            }
            Ok(Err(_)) | Err(_) => {
                let opened = self.breaker.failure();
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
        if !self.breaker.allow() {
            return self.local(FallbackReason::CircuitOpen, work).await;
        }
        let keys = Keys::new(&self.config.namespace, key);
        let token = format!("{:016x}{:016x}", random_u64(), random_u64());
        // Subscribe before joining: a result published after our join cannot be missed.
        let subscription = match self
            .op("subscribe", self.backend.subscribe(&keys.channel))
            .await
        {
            Ok(subscription) => subscription,
            Err(reason) => return self.local(reason, work).await,
        };
        let joined = match self
            .op(
                "join",
                self.backend.join(&keys, &token, self.config.lease_ttl, 0),
            )
            .await
        {
            Ok(joined) => joined,
            Err(reason) => {
                if reason == FallbackReason::RedisTimeout {
                    self.release_later(keys, token);
                }
                return self.local(reason, work).await;
            }
        };
        let generation = match joined {
            Joined::Leader(generation) => {
                drop(subscription);
                return self
                    .lead(
                        keys,
                        &token,
                        generation,
                        Outcome::Leader { generation },
                        work,
                    )
                    .await;
            }
            Joined::Follow(generation) => generation,
            Joined::Result(envelope) => return self.settle_stored(&keys, &envelope, work).await,
        };
        self.follow(keys, &token, subscription, generation, work)
            .await
    }

    async fn follow<V, E, F, Fut>(
        self: &Arc<Self>,
        keys: Keys,
        token: &str,
        mut subscription: crate::backend::Subscription,
        mut generation: u64,
        work: F,
    ) -> Result<(V, Outcome), Failure<E>>
    where
        V: Serialize + DeserializeOwned,
        E: Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        self.following.fetch_add(1, Ordering::Relaxed);
        let following = Following(&self.following);
        let deadline = Instant::now() + self.config.wait_timeout;
        let mut poll = self.config.poll_min;
        // One failed re-check is forgiven (the first command after a reconnect can fail);
        // the next in a row sends the work local.
        let mut failed_rechecks = 0;
        loop {
            let recheck = tokio::select! {
                event = subscription.rx.recv() => match event {
                    Some(Event::Message(bytes)) => match Header::parse(&bytes) {
                        Some((header, payload))
                            if header.fingerprint == keys.fingerprint
                                && header.generation >= generation =>
                        {
                            match header.status {
                                Status::Ok | Status::Err | Status::TooLarge => {
                                    let settled = self.settle(header, payload, work);
                                    return self.resolve(settled).await;
                                }
                                Status::Ready => {
                                    match self.op("fetch", self.backend.fetch(&keys)).await {
                                        Ok(Some(envelope)) => {
                                            return self.settle_stored(&keys, &envelope, work).await;
                                        }
                                        // Gone already: ask again, which re-elects if need be.
                                        Ok(None) => true,
                                        Err(reason) => return self.local(reason, work).await,
                                    }
                                }
                                Status::Abandoned => true,
                            }
                        }
                        // Another generation's or a foreign message: not ours to act on.
                        _ => false,
                    },
                    // Messages may have been lost while the connection was down.
                    Some(Event::Disconnected) => true,
                    None => return self.local(FallbackReason::RedisUnavailable, work).await,
                },
                () = tokio::time::sleep(jitter(poll)) => {
                    poll = (poll * 2).min(self.config.poll_max);
                    true
                }
                () = tokio::time::sleep_until(deadline) => {
                    self.warnings.warn(WARN_WAIT, || format!(
                        "no result from the leader of generation {generation} within {:?}; running work locally",
                        self.config.wait_timeout
                    ));
                    return self.local(FallbackReason::WaitTimeout, work).await;
                }
            };
            if !recheck {
                continue;
            }
            match self
                .op(
                    "join",
                    self.backend
                        .join(&keys, token, self.config.lease_ttl, generation),
                )
                .await
            {
                Err(reason) => {
                    failed_rechecks += 1;
                    if failed_rechecks >= 2 {
                        return self.local(reason, work).await;
                    }
                    poll = self.config.poll_min;
                }
                Ok(Joined::Result(envelope)) => {
                    return self.settle_stored(&keys, &envelope, work).await;
                }
                Ok(Joined::Follow(current)) => {
                    failed_rechecks = 0;
                    generation = generation.max(current);
                }
                Ok(Joined::Leader(new)) => {
                    drop(subscription);
                    drop(following);
                    let outcome = Outcome::Reelected { generation: new };
                    return self.lead(keys, token, new, outcome, work).await;
                }
            }
        }
    }

    /// A result envelope read from the result key.
    async fn settle_stored<V, E, F, Fut>(
        &self,
        keys: &Keys,
        envelope: &[u8],
        work: F,
    ) -> Result<(V, Outcome), Failure<E>>
    where
        V: DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        match Header::parse(envelope) {
            Some((header, payload))
                if header.fingerprint == keys.fingerprint && header.status != Status::Ready =>
            {
                let settled = self.settle(header, payload, work);
                self.resolve(settled).await
            }
            _ => {
                self.warnings.warn(WARN_DECODE, || {
                    "stored result is not a valid envelope for this key; running work locally"
                        .to_owned()
                });
                self.local(FallbackReason::Decode, work).await
            }
        }
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

    /// A final message from the leader (value, error, or "too large").
    fn settle<V, E, F>(&self, header: Header, payload: &[u8], work: F) -> Settled<V, E, F>
    where
        V: DeserializeOwned,
    {
        match header.status {
            Status::Ok => match envelope::decode_value::<V>(header.codec, payload) {
                Some(value) => {
                    let outcome = Outcome::Follower {
                        generation: header.generation,
                    };
                    self.counters.outcome(outcome);
                    Settled::Done(Ok((value, outcome)))
                }
                None => {
                    self.warnings.warn(WARN_DECODE, || {
                        format!(
                            "shared value of generation {} (codec {}) does not decode as {}; running work locally",
                            header.generation,
                            header.codec,
                            std::any::type_name::<V>()
                        )
                    });
                    Settled::Local(FallbackReason::Decode, work)
                }
            },
            Status::Err => {
                let outcome = Outcome::Follower {
                    generation: header.generation,
                };
                self.counters.outcome(outcome);
                self.counters.remote_error();
                Settled::Done(Err(Failure::Remote(RemoteError::new(
                    &String::from_utf8_lossy(payload),
                ))))
            }
            _ => Settled::Local(FallbackReason::TooLarge, work),
        }
    }

    async fn lead<V, E, F, Fut>(
        self: &Arc<Self>,
        keys: Keys,
        token: &str,
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
        let lock_value = format!("{generation}:{token}");
        let mut guard = LeaderGuard {
            renewal: Some(self.spawn_renewal(keys.clone(), lock_value.clone())),
            fleet: Arc::clone(self),
            keys,
            lock_value,
            generation,
            armed: true,
        };
        let result = work().await;
        if let Some(renewal) = guard.renewal.take() {
            renewal.abort();
        }
        let header = |status| Header {
            codec: self.config.codec.id(),
            status,
            generation,
            fingerprint: guard.keys.fingerprint,
        };
        let envelope = match &result {
            Ok(value) => {
                match envelope::encode_value(self.config.codec, value) {
                    Ok(payload) if payload.len() + HEADER_LEN <= self.config.max_value => {
                        header(Status::Ok).encode(&payload)
                    }
                    Ok(payload) => {
                        self.warnings.warn(WARN_SIZE, || {
                        format!(
                            "value of {} bytes exceeds max_value ({}); followers run the work themselves",
                            payload.len(),
                            self.config.max_value
                        )
                    });
                        header(Status::TooLarge).encode(&[])
                    }
                    Err(error) => {
                        self.warnings.warn(WARN_SIZE, || {
                        format!("value does not serialize ({error}); followers run the work themselves")
                    });
                        header(Status::TooLarge).encode(&[])
                    }
                }
            }
            Err(error) => header(Status::Err).encode(error.to_string().as_bytes()),
        };
        let message = if envelope.len() <= self.config.inline_max {
            envelope.clone()
        } else {
            header(Status::Ready).encode(&[])
        };
        let published = self
            .op(
                "complete",
                self.backend.complete(
                    &guard.keys,
                    &guard.lock_value,
                    generation,
                    &envelope,
                    self.config.result_linger,
                    &message,
                ),
            )
            .await;
        guard.armed = false;
        if published.is_err() {
            // The value still reaches every caller in this process.
            self.counters.publish_failed();
            self.warnings.warn(WARN_PUBLISH, || {
                format!(
                    "result of generation {generation} was not published; followers will re-check"
                )
            });
        }
        match result {
            Ok(value) => Ok((value, outcome)),
            Err(error) => Err(Failure::Local(error)),
        }
    }

    /// A join that timed out may still have taken the lease on the server. Ask again with
    /// the same token (joining is idempotent for the holder) and, if the lease is ours,
    /// release it and tell the followers, so they need not wait for it to expire.
    fn release_later(self: &Arc<Self>, keys: Keys, token: String) {
        let fleet = Arc::clone(self);
        tokio::spawn(async move {
            let deadline = fleet.config.op_timeout;
            let join = fleet.backend.join(&keys, &token, fleet.config.lease_ttl, 0);
            if let Ok(Ok(Joined::Leader(generation))) = tokio::time::timeout(deadline, join).await {
                let message = Header {
                    codec: fleet.config.codec.id(),
                    status: Status::Abandoned,
                    generation,
                    fingerprint: keys.fingerprint,
                }
                .encode(&[]);
                let lock_value = format!("{generation}:{token}");
                let abandon = fleet.backend.abandon(&keys, &lock_value, &message);
                let _ = tokio::time::timeout(deadline, abandon).await;
            }
        });
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
                let renew = fleet
                    .backend
                    .renew(&keys, &lock_value, fleet.config.lease_ttl);
                match fleet.op("renew", renew).await {
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

/// A leader's duties on every early exit (panic, cancellation): stop renewing, release the
/// lease and tell the followers to elect a new leader now rather than at lease expiry.
struct LeaderGuard<B: Backend> {
    fleet: Arc<Fleet<B>>,
    keys: Keys,
    lock_value: String,
    generation: u64,
    renewal: Option<JoinHandle<()>>,
    armed: bool,
}

impl<B: Backend> Drop for LeaderGuard<B> {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let fleet = Arc::clone(&self.fleet);
        let keys = self.keys.clone();
        let lock_value = std::mem::take(&mut self.lock_value);
        let message = Header {
            codec: fleet.config.codec.id(),
            status: Status::Abandoned,
            generation: self.generation,
            fingerprint: keys.fingerprint,
        }
        .encode(&[]);
        runtime.spawn(async move {
            let abandon = fleet.backend.abandon(&keys, &lock_value, &message);
            let _ = fleet.op("abandon", abandon).await;
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
        Keys::new("t", "key")
    }

    #[tokio::test(start_paused = true)]
    async fn one_leader_one_follower_one_execution() {
        let redis = FakeRedis::new();
        let ((a, _), (b, _)) = (process(&redis, config()), process(&redis, config()));
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
        // A later flight is a new flight (no hidden cache): a new generation.
        let again = Work::new();
        again.open();
        let (_, outcome) = again.run(&b, Ok(9)).await.unwrap().unwrap();
        assert_eq!(outcome, Outcome::Leader { generation: 2 });
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
        assert_eq!(Header::parse(&envelope).unwrap().1, b"2");
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
