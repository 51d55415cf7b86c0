//! Knobs: namespace, deadlines, lease, sizes, codec and circuit breaker.

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

/// Settings of a [`RedisGroup`](crate::RedisGroup). Start from [`Config::new`] and adjust.
///
/// | knob | default |
/// |---|---|
/// | [`op_timeout`](Self::op_timeout) (each Redis command) | 250 ms |
/// | [`lease_ttl`](Self::lease_ttl) (renewed every third of it) | 10 s |
/// | [`max_hold`](Self::max_hold) (renewals stop after it) | 5 min |
/// | [`wait_timeout`](Self::wait_timeout) (a follower's wait before running locally) | 30 s |
/// | [`poll`](Self::poll) (follower re-checks, doubling, ±20 % jitter) | 100 ms → 1 s |
/// | [`result_linger`](Self::result_linger) | 5 s |
/// | [`inline_max`](Self::inline_max) / [`max_value`](Self::max_value) | 64 KiB / 8 MiB |
/// | [`breaker`](Self::breaker) | open after 3 failures in a row, for 5 s |
#[derive(Clone, Debug)]
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
    pub(crate) inline_max: usize,
    pub(crate) max_value: usize,
    pub(crate) breaker_failures: u32,
    pub(crate) breaker_open: Duration,
    pub(crate) warn_interval: Duration,
}

impl Config {
    /// Settings with the defaults above for keys under `namespace`.
    ///
    /// Put a schema version in the namespace (`"users:v3"`): processes whose value types
    /// differ then never read each other's values during a rolling deploy.
    ///
    /// # Panics
    ///
    /// If `namespace` contains `{` or `}`, which would break the hash tag that keeps all
    /// keys of a flight in one cluster slot.
    pub fn new(namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        assert!(
            !namespace.contains(['{', '}']),
            "singleflight-redis: the namespace must not contain '{{' or '}}'"
        );
        Self {
            namespace,
            codec: Codec::Json,
            op_timeout: Duration::from_millis(250),
            lease_ttl: Duration::from_secs(10),
            max_hold: Duration::from_secs(300),
            wait_timeout: Duration::from_secs(30),
            poll_min: Duration::from_millis(100),
            poll_max: Duration::from_secs(1),
            result_linger: Duration::from_secs(5),
            inline_max: 64 * 1024,
            max_value: 8 * 1024 * 1024,
            breaker_failures: 3,
            breaker_open: Duration::from_secs(5),
            warn_interval: Duration::from_secs(10),
        }
    }

    /// The codec for values (default [`Codec::Json`]).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// The deadline of each Redis command; a command that misses it counts as a failure
    /// and the call falls back to local work.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// How long a leader's lease lasts without renewal: the time it takes the fleet to
    /// notice a crashed leader. Renewed every third of it while the work runs.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Renewals stop after this long, so a wedged leader eventually lets another take over.
    pub fn max_hold(mut self, max_hold: Duration) -> Self {
        self.max_hold = max_hold;
        self
    }

    /// How long a follower waits for a result before it runs the work itself
    /// ([`FallbackReason::WaitTimeout`](crate::FallbackReason::WaitTimeout)).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// The follower's safety re-check: first after `min`, then doubling up to `max`, each
    /// with ±20 % jitter. Results normally arrive by pub/sub long before.
    pub fn poll(mut self, min: Duration, max: Duration) -> Self {
        self.poll_min = min;
        self.poll_max = max.max(min);
        self
    }

    /// How long a result stays readable after its flight, for followers that missed the
    /// push. It is never served to calls that start after the flight.
    pub fn result_linger(mut self, linger: Duration) -> Self {
        self.result_linger = linger;
        self
    }

    /// Encoded values up to this size travel inside the pub/sub message; larger ones are
    /// announced and then read from the result key.
    pub fn inline_max(mut self, bytes: usize) -> Self {
        self.inline_max = bytes;
        self
    }

    /// Encoded values larger than this are not shared: followers run the work themselves
    /// ([`FallbackReason::TooLarge`](crate::FallbackReason::TooLarge)).
    pub fn max_value(mut self, bytes: usize) -> Self {
        self.max_value = bytes;
        self
    }

    /// After `failures` Redis failures in a row, skip Redis for `open` (calls run locally
    /// with [`FallbackReason::CircuitOpen`](crate::FallbackReason::CircuitOpen)); then one
    /// call probes Redis again.
    pub fn breaker(mut self, failures: u32, open: Duration) -> Self {
        self.breaker_failures = failures.max(1);
        self.breaker_open = open;
        self
    }

    /// At most one `tracing` warning per kind of trouble in this interval (default 10 s).
    pub fn warn_interval(mut self, interval: Duration) -> Self {
        self.warn_interval = interval;
        self
    }
}
