//! One Redis command under its deadline: sent once more on a lost connection, fed to the
//! circuit breaker and to the connection's health; and the randomness the layer uses.

use std::future::Future;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::{Fleet, WARN_AUTH, WARN_REDIS};
use crate::backend::{Backend, BackendError};
use crate::envelope::Keys;
use crate::report::FallbackReason;

/// 64 random bits: std's randomly keyed SipHash over a counter, the time and the pid.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    std::hash::RandomState::new().hash_one((
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now(),
        std::process::id(),
    ))
}

pub(super) fn jitter(base: Duration) -> Duration {
    // ±20 %
    #[allow(clippy::cast_precision_loss, reason = "only a jitter factor")]
    let unit = random_u64() as f64 / u64::MAX as f64;
    base.mul_f64(0.8 + 0.4 * unit)
}

/// Whether a command's success says Redis is healthy (closes the breaker).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Health {
    /// A script: reads, writes and Lua all work.
    Proves,
    /// A subscription: works even when scripts or writes fail (out of memory, a replica).
    ProvesNothing,
}

impl<B: Backend> Fleet<B> {
    /// Runs one Redis command under the per-command deadline, feeding the breaker. A
    /// command that found the connection lost is sent once more within the deadline: the
    /// client reconnects on that error, and every command is idempotent for its caller.
    pub(super) async fn op<T, Fut>(
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
}

fn opened_note(opened: bool) -> &'static str {
    if opened {
        "; circuit breaker opened"
    } else {
        ""
    }
}
