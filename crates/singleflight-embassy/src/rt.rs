//! embassy's implementation of the core's runtime seam: the timer only.

use core::time::Duration;

use embassy_time::{Instant, TICK_HZ, Timer};
use singleflight_core::rt::Clock;

/// Times out calls with [`embassy_time::Timer`], and tells the time of reuse windows with
/// [`embassy_time::Instant`], on the application's time driver.
///
/// A duration is rounded up to the next tick of the driver's tick rate, so a timeout never
/// fires early; one too long for the clock (past `u64::MAX` ticks from now) never fires.
///
/// # Panics
///
/// Sleeping needs an embassy time driver linked in (a HAL's, or embassy-time's `std`
/// driver on a host); without one the program fails to link rather than panicking.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct EmbassyTimer;

impl EmbassyTimer {
    /// The timer.
    pub fn new() -> Self {
        Self
    }
}

impl singleflight_core::rt::Timer for EmbassyTimer {
    type Sleep = Timer;

    fn sleep(&self, duration: Duration) -> Timer {
        Timer::at(Instant::now().saturating_add(to_ticks(duration)))
    }
}

/// The time since the time driver started, to the microsecond.
impl Clock for EmbassyTimer {
    fn now(&self) -> Duration {
        Duration::from_micros(Instant::now().as_micros())
    }
}

/// `duration` in ticks of the time driver, rounded up and saturating at `u64::MAX` ticks.
fn to_ticks(duration: Duration) -> embassy_time::Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let ticks = duration
        .as_nanos()
        .saturating_mul(u128::from(TICK_HZ))
        .div_ceil(NANOS_PER_SEC);
    embassy_time::Duration::from_ticks(u64::try_from(ticks).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_to_whole_ticks() {
        // The host tests use embassy-time's std driver: 1 MHz.
        assert_eq!(TICK_HZ, 1_000_000);
        assert_eq!(to_ticks(Duration::ZERO).as_ticks(), 0);
        assert_eq!(to_ticks(Duration::from_nanos(1)).as_ticks(), 1);
        assert_eq!(to_ticks(Duration::from_nanos(1_001)).as_ticks(), 2);
        assert_eq!(to_ticks(Duration::from_millis(250)).as_ticks(), 250_000);
        assert_eq!(to_ticks(Duration::MAX).as_ticks(), u64::MAX);
    }
}
