//! Execution tokens: when an execution started, as the core hands it back at its end.
//!
//! With `std`, a token is the number of nanoseconds between the observer's epoch and the
//! start, plus one, so that `0` can mean "not timed". Without `std` there is no clock and
//! every token is `0`.

#[cfg(feature = "std")]
pub(crate) use timed::Clock;

#[cfg(feature = "std")]
mod timed {
    use std::time::{Duration, Instant};

    /// A monotonic clock that turns instants into tokens and back.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Clock {
        epoch: Instant,
    }

    impl Clock {
        pub(crate) fn new() -> Self {
            Self {
                epoch: Instant::now(),
            }
        }

        /// A token for "now".
        #[inline]
        pub(crate) fn start(&self) -> u64 {
            nanos(self.epoch.elapsed()).saturating_add(1)
        }

        /// The time since `token` was taken, or `None` for a token this clock didn't make.
        #[inline]
        pub(crate) fn elapsed(&self, token: u64) -> Option<Duration> {
            let started = token.checked_sub(1)?;
            let now = nanos(self.epoch.elapsed());
            Some(Duration::from_nanos(now.saturating_sub(started)))
        }
    }

    /// Nanoseconds, saturating after some 584 years.
    #[inline]
    pub(crate) fn nanos(duration: Duration) -> u64 {
        u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(feature = "std")]
pub(crate) use timed::nanos;
