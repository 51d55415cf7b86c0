//! The lease: leading under it (renewed while the work runs, released with the result's
//! completion), and the guard that releases it on every early exit.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::command::{Health, jitter};
use super::{Failure, Fleet, WARN_LEASE, WARN_PUBLISH, WARN_SIZE};
use crate::backend::Backend;
use crate::envelope::{self, Keys, Status};
use crate::report::FleetRole;

impl<B: Backend> Fleet<B> {
    pub(super) async fn lead<V, E, F, Fut>(
        self: &Arc<Self>,
        mut lease: LeaseGuard<B>,
        generation: u64,
        role: FleetRole,
        work: F,
    ) -> Result<(V, FleetRole), Failure<E>>
    where
        V: Serialize,
        E: Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        self.counters.role(role);
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
                            "value of {} bytes exceeds max_value ({}); waiters run the work themselves",
                            payload.len(),
                            self.config.max_value
                        )
                    });
                    seal(Status::TooLarge, &[])
                }
                Err(error) => {
                    self.warnings.warn(WARN_SIZE, || {
                        format!(
                            "value does not serialize ({error}); waiters run the work themselves"
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
                    "result of generation {generation} was not published; waiters will re-check"
                )
            });
        } else {
            lease.armed = false;
        }
        match result {
            Ok(value) => Ok((value, role)),
            Err(error) => Err(Failure::Local(error, role)),
        }
    }

    pub(super) fn spawn_renewal(
        self: &Arc<Self>,
        keys: Keys,
        lock_value: String,
    ) -> JoinHandle<()> {
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

/// A call's duties towards the fleet on every early exit (panic, cancellation, a command
/// that failed after it may have taken effect): stop renewing, release the lease if this
/// call's token holds it, and tell the waiters to elect a new leader now rather than at
/// lease expiry. Armed whenever this call may hold the lease.
pub(super) struct LeaseGuard<B: Backend> {
    pub(super) fleet: Arc<Fleet<B>>,
    pub(super) keys: Keys,
    pub(super) token: String,
    pub(super) renewal: Option<JoinHandle<()>>,
    pub(super) armed: bool,
}

impl<B: Backend> Drop for LeaseGuard<B> {
    fn drop(&mut self) {
        self.release_now();
    }
}

impl<B: Backend> LeaseGuard<B> {
    /// Does the guard's duties now (before this call runs the work locally).
    pub(super) fn release_now(&mut self) {
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
        // Generation 0: a hint to re-check, whichever generation a waiter is at.
        let message = fleet.sealer.seal(Status::Abandoned, 0, &keys.key, &[]);
        // Sent after the call's own commands on the same connection, so Redis applies it
        // after a join that was still on its way. Not fed to the breaker: the call is over.
        // Retried (Redis may be unreachable right now) until the lease would have expired
        // anyway, so waiters need not wait for it once Redis is back.
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
