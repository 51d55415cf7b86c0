//! Measuring a run and printing it the way shared-call-py does: WITHOUT, WITH, then the
//! improvement.

use std::fmt;
use std::time::Duration;

/// The latencies of one run's requests, sorted, with their mean and percentiles.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    sorted: Vec<Duration>,
}

impl Latencies {
    /// Collects the latencies of a run, in any order.
    pub fn new(mut latencies: Vec<Duration>) -> Self {
        latencies.sort_unstable();
        Self { sorted: latencies }
    }

    /// The number of requests measured.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Returns `true` if no request was measured.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The latencies, fastest first.
    pub fn sorted(&self) -> &[Duration] {
        &self.sorted
    }

    /// The arithmetic mean; zero for an empty run.
    pub fn mean(&self) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        self.sorted.iter().sum::<Duration>() / self.sorted.len() as u32
    }

    /// The `p`-th percentile (`0.0 < p <= 100.0`) by the nearest-rank method: the smallest
    /// latency that at least `p` % of the requests did not exceed. Zero for an empty run.
    ///
    /// # Panics
    ///
    /// If `p` is not in `(0, 100]`.
    pub fn percentile(&self, p: f64) -> Duration {
        assert!(p > 0.0 && p <= 100.0, "percentile {p} is not in (0, 100]");
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = (p / 100.0 * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    /// The slowest request; zero for an empty run.
    pub fn max(&self) -> Duration {
        self.sorted.last().copied().unwrap_or_default()
    }
}

/// One side of a comparison: how many requests, how many times the work really ran, how
/// long it all took and each request's latency.
#[derive(Clone, Debug)]
pub struct Run {
    /// Requests made.
    pub requests: usize,
    /// Times the expensive work (the query) actually ran.
    pub queries: usize,
    /// From the first request's start to the last one's end.
    pub total: Duration,
    /// Each request's latency.
    pub latencies: Latencies,
}

impl Run {
    /// Prints the run's block of the report under `title`; `work` names what ran (for
    /// instance "DB queries").
    pub fn print(&self, title: &str, work: &str) {
        println!("{title}");
        let work = format!("Actual {work}:");
        println!("   {:<22} {}", "Concurrent requests:", self.requests);
        println!("   {work:<22} {}", self.queries);
        println!("   {:<22} {:.3}s", "Total duration:", secs(self.total));
        println!(
            "   {:<22} {:.2}ms",
            "Avg latency:",
            ms(self.latencies.mean())
        );
        println!(
            "   {:<22} {:.2}ms",
            "p99 latency:",
            ms(self.latencies.percentile(99.0))
        );
        println!();
    }
}

/// Prints the improvement of `with` over `without`; `work` names what ran.
pub fn print_improvement(without: &Run, with: &Run, work: &str) {
    println!("PERFORMANCE IMPROVEMENT");
    let eliminated = without.queries.saturating_sub(with.queries);
    println!(
        "   {:<22} {}",
        "Total speedup:",
        Speedup(without.total, with.total)
    );
    println!(
        "   {:<22} {}",
        "Avg latency:",
        Speedup(without.latencies.mean(), with.latencies.mean())
    );
    println!(
        "   {:<22} {}",
        "p99 latency:",
        Speedup(
            without.latencies.percentile(99.0),
            with.latencies.percentile(99.0)
        )
    );
    println!("   {:<22} {eliminated}", format!("{work} eliminated:"));
    println!(
        "   {:<22} {:.1}%",
        "Load reduction:",
        percent(eliminated, without.queries)
    );
}

/// How many times faster `after` is than `before`, displayed as `12.3x faster`.
#[derive(Clone, Copy, Debug)]
pub struct Speedup(pub Duration, pub Duration);

impl fmt::Display for Speedup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self(before, after) = *self;
        if after.is_zero() {
            return f.write_str("n/a");
        }
        write!(
            f,
            "{:.1}x faster",
            before.as_secs_f64() / after.as_secs_f64()
        )
    }
}

/// `part` as a percentage of `whole`; zero when `whole` is zero.
pub fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Seconds, for printing.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_list(values: &[u64]) -> Latencies {
        Latencies::new(values.iter().map(|&v| Duration::from_millis(v)).collect())
    }

    #[test]
    fn percentile_is_nearest_rank_not_the_maximum() {
        let run = ms_list(&(1..=200).rev().collect::<Vec<_>>());
        assert_eq!(run.percentile(99.0), Duration::from_millis(198));
        assert_eq!(run.percentile(50.0), Duration::from_millis(100));
        assert_eq!(run.percentile(100.0), Duration::from_millis(200));
        assert_eq!(run.max(), Duration::from_millis(200));
        assert_eq!(run.mean(), Duration::from_micros(100_500));
    }

    #[test]
    fn small_runs_and_empty_runs() {
        assert_eq!(ms_list(&[7]).percentile(99.0), Duration::from_millis(7));
        assert_eq!(ms_list(&[5, 1]).percentile(1.0), Duration::from_millis(1));
        assert_eq!(Latencies::default().percentile(99.0), Duration::ZERO);
        assert_eq!(Latencies::default().mean(), Duration::ZERO);
    }

    #[test]
    fn speedup_and_percent() {
        let s = Speedup(Duration::from_millis(6010), Duration::from_millis(65));
        assert_eq!(s.to_string(), "92.5x faster");
        assert_eq!(Speedup(Duration::ZERO, Duration::ZERO).to_string(), "n/a");
        assert_eq!(percent(99, 100), 99.0);
        assert_eq!(percent(1, 0), 0.0);
    }
}
