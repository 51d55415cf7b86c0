//! Command-line knobs shared by the examples: `--quick` (or `SCALE`) shrinks simulated
//! latencies for CI, `--name value` reads a number.

use std::str::FromStr;
use std::time::Duration;

/// How much the examples shrink their simulated latencies.
///
/// `SCALE=0.1` multiplies every simulated latency by 0.1; `--quick` means `SCALE=0.25`
/// unless `SCALE` says otherwise. Request counts never change, so a quick run prints the
/// same counts (queries, successes) as a full one, only sooner.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scale {
    factor: f64,
}

impl Scale {
    /// The factor `--quick` applies.
    pub const QUICK: f64 = 0.25;

    /// A scale of `factor` (clamped to at least 0.01, so a "query" still takes time).
    pub fn new(factor: f64) -> Self {
        Self {
            factor: factor.max(0.01),
        }
    }

    /// Reads `--quick` from the command line and `SCALE` from the environment.
    ///
    /// # Panics
    ///
    /// If `SCALE` is set but is not a number.
    pub fn from_env() -> Self {
        if let Ok(scale) = std::env::var("SCALE") {
            let factor = scale
                .parse()
                .unwrap_or_else(|_| panic!("SCALE={scale:?} is not a number"));
            return Self::new(factor);
        }
        Self::new(if flag("--quick") { Self::QUICK } else { 1.0 })
    }

    /// The factor.
    pub fn factor(self) -> f64 {
        self.factor
    }

    /// `ms` milliseconds, scaled.
    pub fn ms(self, ms: f64) -> Duration {
        Duration::from_secs_f64(ms * self.factor / 1000.0)
    }

    /// A note for the report's header: empty at full scale.
    pub fn note(self) -> String {
        if self.factor == 1.0 {
            String::new()
        } else {
            format!(" [latencies scaled by {}]", self.factor)
        }
    }
}

/// Returns `true` if `name` (say `--quick`) is on the command line.
pub fn flag(name: &str) -> bool {
    std::env::args().skip(1).any(|arg| arg == name)
}

/// The value of `--name value` or `--name=value` on the command line, if present.
///
/// # Panics
///
/// If the value does not parse.
pub fn value<T: FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let raw = args.iter().enumerate().find_map(|(i, arg)| {
        if arg == name {
            args.get(i + 1).cloned()
        } else {
            arg.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::to_owned)
        }
    })?;
    Some(
        raw.parse()
            .unwrap_or_else(|_| panic!("{name} {raw:?} is not a valid value")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling() {
        assert_eq!(Scale::new(0.5).ms(50.0), Duration::from_millis(25));
        assert_eq!(Scale::new(0.0).factor(), 0.01);
        assert_eq!(Scale::new(1.0).note(), "");
        assert_eq!(Scale::new(0.25).note(), " [latencies scaled by 0.25]");
    }
}
