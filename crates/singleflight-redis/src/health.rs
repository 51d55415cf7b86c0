//! Redis health: the circuit breaker, fleet counters and rate-limited warnings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::outcome::{FallbackReason, Outcome};

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
    probing: bool,
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

    /// Whether this call may use Redis.
    pub(crate) fn allow(&self) -> bool {
        let mut state = self.state();
        match state.open_until {
            None => true,
            Some(until) if Instant::now() >= until && !state.probing => {
                state.probing = true;
                true
            }
            Some(_) => false,
        }
    }

    pub(crate) fn success(&self) {
        let mut state = self.state();
        *state = BreakerState::default();
    }

    /// Records a failure; `true` if this opened the breaker.
    pub(crate) fn failure(&self) -> bool {
        let mut state = self.state();
        state.failures = state.failures.saturating_add(1);
        if state.probing || (state.open_until.is_none() && state.failures >= self.threshold) {
            state.open_until = Some(Instant::now() + self.open_for);
            state.probing = false;
            return true;
        }
        false
    }
}

/// Counts of how calls that reached the fleet layer were settled.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    leaders: AtomicU64,
    followers: AtomicU64,
    reelected: AtomicU64,
    remote_errors: AtomicU64,
    leases_lost: AtomicU64,
    publish_failures: AtomicU64,
    fallbacks: [AtomicU64; 6],
}

impl Counters {
    pub(crate) fn outcome(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Leader { .. } => &self.leaders,
            Outcome::Follower { .. } => &self.followers,
            Outcome::Reelected { .. } => &self.reelected,
            Outcome::Fallback(reason) => &self.fallbacks[reason.index()],
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
            followers: load(&self.followers),
            reelected: load(&self.reelected),
            remote_errors: load(&self.remote_errors),
            leases_lost: load(&self.leases_lost),
            publish_failures: load(&self.publish_failures),
            fallbacks: FallbackReason::ALL.map(|r| (r, load(&self.fallbacks[r.index()]))),
        }
    }
}

/// A copy of a group's fleet counters: one count per call that reached the fleet layer
/// (one per in-process flight; in-process waiters are counted by the group's
/// [`Observer`](singleflight_core::Observer), if any).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetStats {
    /// Flights this process led.
    pub leaders: u64,
    /// Flights whose result came from another process (values and errors alike).
    pub followers: u64,
    /// Flights this process took over after another leader went away.
    pub reelected: u64,
    /// Followed flights whose leader failed with an error.
    pub remote_errors: u64,
    /// Leases lost while the work ran (renewal found another holder or none).
    pub leases_lost: u64,
    /// Results that could not be published (the local callers still got them).
    pub publish_failures: u64,
    /// Local runs, per reason.
    pub fallbacks: [(FallbackReason, u64); 6],
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
        assert!(breaker.allow());
        assert!(!breaker.failure());
        assert!(!breaker.failure());
        assert!(breaker.failure(), "the third failure opens it");
        assert!(!breaker.allow());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(breaker.allow(), "one probe after the cool-down");
        assert!(!breaker.allow(), "only one");
        assert!(breaker.failure(), "a failed probe reopens at once");
        assert!(!breaker.allow());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(breaker.allow());
        breaker.success();
        assert!(breaker.allow() && breaker.allow(), "closed again");
    }
}
