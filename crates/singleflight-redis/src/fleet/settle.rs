//! Settling: a result envelope, pushed or read from Redis (or kept for reuse), becomes this
//! call's value or error, or sends the work local when it cannot be trusted or decoded.

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{Failure, Fleet, WARN_DECODE, WARN_SIZE};
use crate::backend::Backend;
use crate::envelope::{self, Envelope, Keys, Rejected, Status};
use crate::report::{FallbackReason, FleetRole, RemoteError};

pub(super) enum Settled<V, E, F> {
    Done(Result<(V, FleetRole), Failure<E>>),
    Local(FallbackReason, F),
}

impl<B: Backend> Fleet<B> {
    /// A result envelope read from the result key, or (`reused`, with its age) from the
    /// value kept for reuse, which is checked like any other (its signature too).
    pub(super) async fn settle_stored<V, E, F, Fut>(
        &self,
        keys: &Keys,
        stored: &[u8],
        reused: Option<Duration>,
        work: F,
    ) -> Result<(V, FleetRole), Failure<E>>
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

    pub(super) async fn resolve<V, E, F, Fut>(
        &self,
        settled: Settled<V, E, F>,
    ) -> Result<(V, FleetRole), Failure<E>>
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
    pub(super) fn settle<V, E, F>(
        &self,
        envelope: Envelope<'_>,
        reused: Option<Duration>,
        work: F,
    ) -> Settled<V, E, F>
    where
        V: DeserializeOwned,
    {
        let generation = envelope.generation;
        let role = match reused {
            Some(age) => FleetRole::Reused { generation, age },
            None => FleetRole::Waiter { generation },
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
                    self.counters.role(role);
                    Settled::Done(Ok((value, role)))
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
                self.counters.role(role);
                self.counters.remote_error();
                let text = &envelope.payload[..envelope.payload.len().min(self.config.max_value)];
                Settled::Done(Err(Failure::Remote(
                    RemoteError::new(&String::from_utf8_lossy(text)),
                    role,
                )))
            }
            _ => Settled::Local(FallbackReason::TooLarge, work),
        }
    }
}
