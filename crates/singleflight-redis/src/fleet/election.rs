//! The election: join, then lead or wait for the leader of another process (subscribe,
//! re-check, re-elect when it vanished), whatever Redis says at each step.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::command::{Health, jitter, random_u64};
use super::lease::LeaseGuard;
use super::{Failure, Fleet, WARN_WAIT};
use crate::backend::{Backend, Event, Joined, Subscription};
use crate::envelope::{Keys, Rejected, Status};
use crate::report::{FallbackReason, FleetRole};

/// Counts a flight as waiting while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<B: Backend> Fleet<B> {
    /// Coalesces `work` for `key` across the fleet.
    pub(crate) async fn run<V, E, F, Fut>(
        self: &Arc<Self>,
        key: &str,
        work: F,
    ) -> Result<(V, FleetRole), Failure<E>>
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
                let role = FleetRole::Leader { generation };
                return self.lead(lease, generation, role, work).await;
            }
            Ok(Joined::Wait(generation)) => generation,
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
        // A waiter subscribes, then asks again (`wait_for_leader` starts with a re-check): a result
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
        self.wait_for_leader(lease, subscription, generation, work)
            .await
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
            Ok(Joined::Wait(_) | Joined::Result(_) | Joined::Reused(..) | Joined::Foreign(_))
        );
        joined
    }

    async fn wait_for_leader<V, E, F, Fut>(
        self: &Arc<Self>,
        mut lease: LeaseGuard<B>,
        subscription: Subscription,
        mut generation: u64,
        work: F,
    ) -> Result<(V, FleetRole), Failure<E>>
    where
        V: Serialize + DeserializeOwned,
        E: Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        // Counted as waiting once subscribed and re-checked: from then on a result
        // arrives by push (tests and dashboards wait on the count).
        let mut waiting = None;
        // `Duration::MAX`: no deadline of our own.
        let deadline = Instant::now().checked_add(self.config.wait_timeout);
        let mut poll = self.config.poll_min;
        // One failed re-check is forgiven (the first command after a reconnect can fail);
        // the next in a row sends the work local.
        let mut failed_rechecks = 0;
        // The join that made this call a waiter ran before its subscription.
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
                    Ok(Joined::Wait(current)) => {
                        failed_rechecks = 0;
                        generation = generation.max(current);
                        waiting.get_or_insert_with(|| {
                            self.waiting.fetch_add(1, Ordering::Relaxed);
                            Waiting(&self.waiting)
                        });
                    }
                    Ok(Joined::Foreign(what)) => {
                        let reason = self.foreign(&lease.keys, &what);
                        return self.local(reason, work).await;
                    }
                    Ok(Joined::Leader(new)) => {
                        drop(subscription.take());
                        drop(waiting);
                        let role = FleetRole::Reelected { generation: new };
                        return self.lead(lease, new, role, work).await;
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
