//! Knobs: namespace, deadlines, lease, sizes, codec and circuit breaker; and their
//! validation when a group opens.

use std::fmt;
use std::time::Duration;

/// How values are serialized for other processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// JSON (`serde_json`): self-describing, tolerant of added `#[serde(default)]` fields
    /// across rolling deploys, readable with `redis-cli`.
    #[default]
    Json,
    /// MessagePack (`rmp-serde`, named fields): compact and self-describing.
    #[cfg(feature = "msgpack")]
    MessagePack,
}

impl Codec {
    pub(crate) fn id(self) -> u8 {
        match self {
            Self::Json => 1,
            #[cfg(feature = "msgpack")]
            Self::MessagePack => 2,
        }
    }
}

/// Settings of a [`RedisGroup`](crate::RedisGroup). Start from [`Config::new`] and adjust;
/// [`RedisGroup::open`](crate::RedisGroup::open) checks them ([`Config::validate`]).
///
/// | knob | default |
/// |---|---|
/// | [`op_timeout`](Self::op_timeout) (each Redis command) | 250 ms |
/// | [`lease_ttl`](Self::lease_ttl) (renewed every third of it) | 10 s |
/// | [`max_hold`](Self::max_hold) (renewals stop after it) | 5 min |
/// | [`wait_timeout`](Self::wait_timeout) (a waiter's wait before running locally) | 30 s |
/// | [`poll`](Self::poll) (waiter re-checks, doubling, ±20 % jitter) | 100 ms → 1 s |
/// | [`result_linger`](Self::result_linger) (for waiters that missed the push) | 5 s |
/// | [`reuse_for`](Self::reuse_for) (a published value served to later calls) | off |
/// | [`inline_max`](Self::inline_max) / [`max_value`](Self::max_value) | 64 KiB / 8 MiB |
/// | [`breaker`](Self::breaker) | open after 3 failures in a row, for 5 s |
/// | [`reconnect`](Self::reconnect) (pause between connection attempts, doubling, jittered) | 100 ms → 1 s |
/// | [`secret`](Self::secret) (sign shared results) | none |
///
/// `Duration::MAX` means "no limit" for the limits that are optional:
/// [`wait_timeout`](Self::wait_timeout) (waiters wait for as long as the leader holds
/// its lease), [`max_hold`](Self::max_hold) (renew for as long as the work runs) and
/// [`warn_interval`](Self::warn_interval) (warn once per kind).
#[derive(Clone)]
pub struct Config {
    pub(crate) namespace: String,
    pub(crate) codec: Codec,
    pub(crate) op_timeout: Duration,
    pub(crate) lease_ttl: Duration,
    pub(crate) max_hold: Duration,
    pub(crate) wait_timeout: Duration,
    pub(crate) poll_min: Duration,
    pub(crate) poll_max: Duration,
    pub(crate) result_linger: Duration,
    pub(crate) reuse_for: Option<Duration>,
    pub(crate) inline_max: usize,
    pub(crate) max_value: usize,
    pub(crate) breaker_failures: u32,
    pub(crate) breaker_open: Duration,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) warn_interval: Duration,
    pub(crate) secret: Option<Vec<u8>>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("namespace", &self.namespace)
            .field("codec", &self.codec)
            .field("op_timeout", &self.op_timeout)
            .field("lease_ttl", &self.lease_ttl)
            .field("max_hold", &self.max_hold)
            .field("wait_timeout", &self.wait_timeout)
            .field("poll_min", &self.poll_min)
            .field("poll_max", &self.poll_max)
            .field("result_linger", &self.result_linger)
            .field("reuse_for", &self.reuse_for)
            .field("inline_max", &self.inline_max)
            .field("max_value", &self.max_value)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_open", &self.breaker_open)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("warn_interval", &self.warn_interval)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A [`Config`] setting outside its accepted range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    setting: &'static str,
    accepted: &'static str,
    got: String,
}

impl ConfigError {
    pub(crate) fn new(setting: &'static str, accepted: &'static str, got: impl fmt::Debug) -> Self {
        Self {
            setting,
            accepted,
            got: format!("{got:?}"),
        }
    }

    /// The setting's name, as the [`Config`] method that sets it (`"lease_ttl"`).
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// The accepted range, in words.
    pub fn accepted(&self) -> &'static str {
        self.accepted
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid singleflight-redis setting `{}`: got {}, accepted {}",
            self.setting, self.got, self.accepted
        )
    }
}

impl std::error::Error for ConfigError {}

const MS: Duration = Duration::from_millis(1);
const DAY: Duration = Duration::from_secs(86_400);
/// Redis's largest string.
const MAX_VALUE: usize = 512 * 1024 * 1024;

fn within(
    setting: &'static str,
    accepted: &'static str,
    value: Duration,
    range: std::ops::RangeInclusive<Duration>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::new(setting, accepted, value))
    }
}

impl Config {
    /// Settings with the defaults above for keys under `namespace`.
    ///
    /// Put a schema version in the namespace (`"users:v3"`): processes whose value types
    /// differ then never read each other's values during a rolling deploy. It must not
    /// contain `{` or `}` (they would break the hash tag that keeps all keys of a flight
    /// in one cluster slot): [`validate`](Self::validate) rejects it.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            codec: Codec::Json,
            op_timeout: Duration::from_millis(250),
            lease_ttl: Duration::from_secs(10),
            max_hold: Duration::from_secs(300),
            wait_timeout: Duration::from_secs(30),
            poll_min: Duration::from_millis(100),
            poll_max: Duration::from_secs(1),
            result_linger: Duration::from_secs(5),
            reuse_for: None,
            inline_max: 64 * 1024,
            max_value: 8 * 1024 * 1024,
            breaker_failures: 3,
            breaker_open: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(1),
            warn_interval: Duration::from_secs(10),
            secret: None,
        }
    }

    /// Checks every setting against its accepted range (each method's docs give it).
    /// [`RedisGroup::open`](crate::RedisGroup::open) calls this.
    ///
    /// # Errors
    ///
    /// The first setting out of range, naming it and the accepted range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.namespace.is_empty() || self.namespace.contains(['{', '}']) {
            return Err(ConfigError::new(
                "namespace",
                "a non-empty name without '{' or '}'",
                &self.namespace,
            ));
        }
        within("op_timeout", "1 ms ..= 1 day", self.op_timeout, MS..=DAY)?;
        within(
            "lease_ttl",
            "10 ms ..= 1 day",
            self.lease_ttl,
            10 * MS..=DAY,
        )?;
        within(
            "poll",
            "min 1 ms ..= 1 day, max min ..= 1 day",
            self.poll_min,
            MS..=DAY,
        )?;
        within(
            "poll",
            "min 1 ms ..= 1 day, max min ..= 1 day",
            self.poll_max,
            self.poll_min..=DAY,
        )?;
        within(
            "result_linger",
            "1 ms ..= 1 day",
            self.result_linger,
            MS..=DAY,
        )?;
        if let Some(window) = self.reuse_for {
            within("reuse_for", "1 ms ..= 1 day", window, MS..=DAY)?;
        }
        within(
            "breaker",
            "failures >= 1, open 1 ms ..= 1 day",
            self.breaker_open,
            MS..=DAY,
        )?;
        within(
            "reconnect",
            "min 1 ms ..= 1 day, max min ..= 1 day",
            self.reconnect_min,
            MS..=DAY,
        )?;
        within(
            "reconnect",
            "min 1 ms ..= 1 day, max min ..= 1 day",
            self.reconnect_max,
            self.reconnect_min..=DAY,
        )?;
        if self.breaker_failures == 0 {
            return Err(ConfigError::new(
                "breaker",
                "failures >= 1, open 1 ms ..= 1 day",
                self.breaker_failures,
            ));
        }
        if !(1..=MAX_VALUE).contains(&self.max_value) {
            return Err(ConfigError::new(
                "max_value",
                "1 ..= 512 MiB (Redis's largest string)",
                self.max_value,
            ));
        }
        if self.secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err(ConfigError::new(
                "secret",
                "at least 16 bytes (32 random bytes recommended)",
                "<redacted, too short>",
            ));
        }
        Ok(())
    }

    /// The codec for values (default [`Codec::Json`]).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// The deadline of each Redis command; a command that misses it counts as a failure
    /// and the call falls back to local work. Accepted: 1 ms ..= 1 day.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// How long a leader's lease lasts without renewal: the time it takes the fleet to
    /// notice a crashed leader. Renewed every third of it while the work runs, so keep it
    /// well above three [`op_timeout`](Self::op_timeout)s. Accepted: 10 ms ..= 1 day.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Renewals stop after this long, so a wedged leader eventually lets another take over.
    /// Any duration; `Duration::MAX` renews for as long as the work runs.
    pub fn max_hold(mut self, max_hold: Duration) -> Self {
        self.max_hold = max_hold;
        self
    }

    /// How long a waiter waits for a result before it runs the work itself
    /// ([`FallbackReason::WaitTimeout`](crate::FallbackReason::WaitTimeout)). Any
    /// duration; `Duration::MAX` waits for as long as a leader holds the lease (a vanished
    /// leader is still replaced when its lease expires).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// The waiter's safety re-check: first after `min`, then doubling up to `max`, each
    /// with ±20 % jitter. Results normally arrive by pub/sub long before. Accepted: `min`
    /// 1 ms ..= 1 day (zero would spin), `max` from `min` to 1 day.
    pub fn poll(mut self, min: Duration, max: Duration) -> Self {
        self.poll_min = min;
        self.poll_max = max;
        self
    }

    /// How long a result stays readable after its flight, for waiters that missed the
    /// push. It is never served to calls that start after the flight (that is
    /// [`reuse_for`](Self::reuse_for)'s job, off by default). Accepted: 1 ms ..= 1 day.
    pub fn result_linger(mut self, linger: Duration) -> Self {
        self.result_linger = linger;
        self
    }

    /// Fleet-wide reuse window (off by default): a value a flight published, in any
    /// process, is handed to every call for its key that starts within `window` after
    /// publication, in any process whose group has a window too, without running the work
    /// or waiting for a flight. Such a call's role is
    /// [`FleetRole::Reused`](crate::FleetRole::Reused), with the value's age. This is the
    /// fleet-wide form of the in-process groups' `reuse_for` (DESIGN rule 16).
    ///
    /// * **Successes only**: errors, panics, cancellations, wait timeouts and values that
    ///   were not shared (too large, not serializable) are never reused; neither is
    ///   anything a fallback computed without Redis.
    /// * **Measured from publication, in Redis**: the value is kept in a key that expires
    ///   `window` after the leader's completion (`PX`), so every process agrees when it
    ///   ends, whatever its clock. A process whose own window is shorter reuses the value
    ///   only while it is younger than that window.
    /// * **Signed like a pushed result**: with [`secret`](Self::secret), a reused value is
    ///   verified before it is used, and one that is not signed with the secret makes the
    ///   call run the work ([`FallbackReason::Unverified`](crate::FallbackReason::Unverified)).
    /// * **[`RedisGroup::forget`](crate::RedisGroup::forget) reaches the fleet**: it drops
    ///   the reusable value, and a flight elected before the forget (in any process) never
    ///   stores its value afterwards (a generation fence, checked in the completion
    ///   script).
    ///
    /// Not the same as [`result_linger`](Self::result_linger), which keeps a result for
    /// the callers of its own flight that missed the push, and never serves it to a call
    /// that starts later. Costs: one more read in the join script of every call, and one
    /// more write in the leader's completion. Accepted: 1 ms ..= 1 day.
    pub fn reuse_for(mut self, window: Duration) -> Self {
        self.reuse_for = Some(window);
        self
    }

    /// Encoded values up to this size travel inside the pub/sub message; larger ones are
    /// announced and then read from the result key. Any size.
    pub fn inline_max(mut self, bytes: usize) -> Self {
        self.inline_max = bytes;
        self
    }

    /// Encoded values larger than this are not shared: waiters run the work themselves
    /// ([`FallbackReason::TooLarge`](crate::FallbackReason::TooLarge)). A waiter applies
    /// its own limit too, before decoding what it received. Accepted: 1 ..= 512 MiB.
    pub fn max_value(mut self, bytes: usize) -> Self {
        self.max_value = bytes;
        self
    }

    /// After `failures` Redis failures in a row, skip Redis for `open` (calls run locally
    /// with [`FallbackReason::CircuitOpen`](crate::FallbackReason::CircuitOpen)); then one
    /// call probes Redis again. Accepted: `failures >= 1`, `open` 1 ms ..= 1 day.
    pub fn breaker(mut self, failures: u32, open: Duration) -> Self {
        self.breaker_failures = failures;
        self.breaker_open = open;
        self
    }

    /// The pause before each attempt to open a connection that replaces a lost or silent
    /// one: up to `min` before the first attempt (spread over the fleet, so a Redis that
    /// lost every client is not hit by all of them at once), then doubling up to `max`
    /// after each failed attempt, each drawn at random from its upper half. Attempts are
    /// made one at a time, in the background, for as long as the connection is down. A
    /// call waits (within its command deadline) only for the first attempt after a
    /// replacement, never for the pause after a failed one: it runs its work locally
    /// meanwhile. `max` bounds
    /// how long after a network heals the connection is back: see the crate docs'
    /// recovery target. Accepted: `min` 1 ms ..= 1 day, `max` from `min` to 1 day.
    pub fn reconnect(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max;
        self
    }

    /// At most one `tracing` warning per kind of trouble in this interval (default 10 s).
    /// Any duration.
    pub fn warn_interval(mut self, interval: Duration) -> Self {
        self.warn_interval = interval;
        self
    }

    /// Signs every shared result with HMAC-SHA256 under `secret`, shared by every process
    /// of the namespace; a waiter accepts only results signed with it and runs the work
    /// itself otherwise ([`FallbackReason::Unverified`](crate::FallbackReason::Unverified)).
    /// Accepted: at least 16 bytes (use 32 random bytes).
    ///
    /// Without a secret, Redis and everyone who can write to it are trusted: they can hand
    /// every waiter any value. With one, they can still delay or prevent coalescing
    /// (hold a lease, delete keys), and replay an earlier result of the same key within
    /// its flight, but not make a waiter accept a value no leader produced.
    pub fn secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.secret = Some(secret.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::new("ns").validate(), Ok(()));
    }

    #[test]
    fn each_bad_setting_is_named_with_its_range() {
        let bad = [
            (Config::new(""), "namespace"),
            (Config::new("a{b}"), "namespace"),
            (Config::new("n").op_timeout(Duration::ZERO), "op_timeout"),
            (Config::new("n").op_timeout(Duration::MAX), "op_timeout"),
            (Config::new("n").lease_ttl(Duration::ZERO), "lease_ttl"),
            (Config::new("n").lease_ttl(Duration::MAX), "lease_ttl"),
            (
                Config::new("n").poll(Duration::ZERO, Duration::ZERO),
                "poll",
            ),
            (Config::new("n").poll(MS * 10, MS), "poll"),
            (Config::new("n").poll(MS, Duration::MAX), "poll"),
            (
                Config::new("n").result_linger(Duration::MAX),
                "result_linger",
            ),
            (
                Config::new("n").result_linger(Duration::ZERO),
                "result_linger",
            ),
            (Config::new("n").reuse_for(Duration::ZERO), "reuse_for"),
            (Config::new("n").reuse_for(Duration::MAX), "reuse_for"),
            (Config::new("n").max_value(0), "max_value"),
            (Config::new("n").max_value(usize::MAX), "max_value"),
            (Config::new("n").breaker(0, MS), "breaker"),
            (Config::new("n").breaker(1, Duration::MAX), "breaker"),
            (
                Config::new("n").reconnect(Duration::ZERO, Duration::ZERO),
                "reconnect",
            ),
            (Config::new("n").reconnect(MS * 10, MS), "reconnect"),
            (Config::new("n").secret(*b"short"), "secret"),
        ];
        for (config, setting) in bad {
            let error = config.validate().expect_err(setting);
            assert_eq!(error.setting(), setting, "{error}");
            let text = error.to_string();
            assert!(
                text.contains(setting) && text.contains(error.accepted()),
                "{text}"
            );
        }
    }

    #[test]
    fn no_limit_is_accepted_where_a_limit_is_optional() {
        let config = Config::new("n")
            .wait_timeout(Duration::MAX)
            .max_hold(Duration::MAX)
            .warn_interval(Duration::MAX)
            .inline_max(usize::MAX);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn the_secret_is_not_printed() {
        let config = Config::new("n").secret(*b"0123456789abcdef-secret");
        assert!(!format!("{config:?}").contains("secret\""));
        assert!(format!("{config:?}").contains("<redacted>"));
    }
}
