//! What a call reports besides its value: the role it played across the fleet, and its
//! errors.

use core::fmt;
use core::time::Duration;
use std::sync::Arc;

pub use singleflight_core::PanicMessage;

/// The role a call played across the fleet: what [`Call::with_role`](crate::Call::with_role)
/// reports beside the result.
///
/// Every caller of one in-process flight shares the role of that flight: the process's
/// caller that reached Redis played it, and the others joined it in-process (see the crate
/// docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FleetRole {
    /// This process won the lease and ran the work. `generation` is the flight's fencing
    /// token: it grows with every election of the key.
    Leader {
        /// The flight's generation (fencing token).
        generation: u64,
    },
    /// Another process ran the work; its result arrived through Redis.
    Waiter {
        /// The generation of the flight whose result was received.
        generation: u64,
    },
    /// No work ran and no flight was waited for: a value a flight published (in any
    /// process) within the reuse window ([`Config::reuse_for`](crate::Config::reuse_for))
    /// was handed to this call.
    Reused {
        /// The generation of the flight that published the value.
        generation: u64,
        /// How long before this call the value was published (as Redis measures it).
        age: Duration,
    },
    /// This process waited for another leader that went away (crashed, cancelled, panicked,
    /// or its lease expired), then won the new election and ran the work.
    Reelected {
        /// The generation of the new flight.
        generation: u64,
    },
    /// The work ran in this process without fleet-wide coalescing (it was still coalesced
    /// within the process), for the reason given.
    Fallback(FallbackReason),
}

impl FleetRole {
    /// Returns `true` if the work ran in this process (leader, re-elected or fallback).
    pub fn ran_locally(&self) -> bool {
        !matches!(self, Self::Waiter { .. } | Self::Reused { .. })
    }

    /// Returns `true` for [`FleetRole::Reused`].
    pub fn is_reused(&self) -> bool {
        matches!(self, Self::Reused { .. })
    }

    /// Returns `true` for [`FleetRole::Fallback`].
    pub fn is_fallback(&self) -> bool {
        matches!(self, Self::Fallback(_))
    }

    /// The flight's generation, if Redis elected one.
    pub fn generation(&self) -> Option<u64> {
        match *self {
            Self::Leader { generation }
            | Self::Waiter { generation }
            | Self::Reused { generation, .. }
            | Self::Reelected { generation } => Some(generation),
            Self::Fallback(_) => None,
        }
    }
}

/// Why a call ran its work locally instead of coalescing across the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FallbackReason {
    /// A Redis command failed (connection refused or lost, a server or script error such
    /// as `OOM` or `READONLY`).
    RedisUnavailable,
    /// A Redis command did not answer within its deadline
    /// ([`Config::op_timeout`](crate::Config::op_timeout)).
    RedisTimeout,
    /// The circuit breaker is open after repeated Redis failures: Redis was not tried.
    CircuitOpen,
    /// The leader elsewhere did not deliver a result within
    /// [`Config::wait_timeout`](crate::Config::wait_timeout).
    WaitTimeout,
    /// The shared result could not be decoded (another version, codec or a corrupt value).
    Decode,
    /// The value was larger than [`Config::max_value`](crate::Config::max_value) (the
    /// leader's, or this process's own when it received it), so it was not shared.
    TooLarge,
    /// Redis refused this client's credentials (a wrong password or ACL user, or a user
    /// without the commands it needs). Nothing heals this but a configuration change.
    AuthFailed,
    /// A key of this flight in Redis held data that is not ours: a lease, counter or
    /// result in another format (written by something else, or corrupted), or a result
    /// envelope for another key. It expires within one lease, after which the key
    /// coalesces again.
    ForeignData,
    /// The shared result was not signed, or not signed with this group's secret
    /// ([`Config::secret`](crate::Config::secret)), so it was not trusted.
    Unverified,
}

impl FallbackReason {
    /// A short `snake_case` name, for metrics' attributes: `"redis_unavailable"`,
    /// `"redis_timeout"`, `"circuit_open"`, `"wait_timeout"`, `"decode"`, `"too_large"`,
    /// `"auth_failed"`, `"foreign_data"` or `"unverified"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RedisUnavailable => "redis_unavailable",
            Self::RedisTimeout => "redis_timeout",
            Self::CircuitOpen => "circuit_open",
            Self::WaitTimeout => "wait_timeout",
            Self::Decode => "decode",
            Self::TooLarge => "too_large",
            Self::AuthFailed => "auth_failed",
            Self::ForeignData => "foreign_data",
            Self::Unverified => "unverified",
        }
    }

    pub(crate) const COUNT: usize = 9;

    pub(crate) const ALL: [Self; Self::COUNT] = [
        Self::RedisUnavailable,
        Self::RedisTimeout,
        Self::CircuitOpen,
        Self::WaitTimeout,
        Self::Decode,
        Self::TooLarge,
        Self::AuthFailed,
        Self::ForeignData,
        Self::Unverified,
    ];

    pub(crate) fn index(self) -> usize {
        match self {
            Self::RedisUnavailable => 0,
            Self::RedisTimeout => 1,
            Self::CircuitOpen => 2,
            Self::WaitTimeout => 3,
            Self::Decode => 4,
            Self::TooLarge => 5,
            Self::AuthFailed => 6,
            Self::ForeignData => 7,
            Self::Unverified => 8,
        }
    }
}

impl fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RedisUnavailable => "redis unavailable",
            Self::RedisTimeout => "redis timed out",
            Self::CircuitOpen => "circuit breaker open",
            Self::WaitTimeout => "timed out waiting for the leader",
            Self::Decode => "shared value could not be decoded",
            Self::TooLarge => "value too large to share",
            Self::AuthFailed => "redis refused the credentials",
            Self::ForeignData => "foreign or corrupt data at the flight's keys",
            Self::Unverified => "shared value not signed with the group's secret",
        })
    }
}

/// A [`RedisGroup::forget`](crate::RedisGroup::forget) that did not reach Redis: it
/// took effect in this process only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForgetError {
    reason: FallbackReason,
}

impl ForgetError {
    pub(crate) fn new(reason: FallbackReason) -> Self {
        Self { reason }
    }

    /// Why Redis was not reached (unavailable, timed out, credentials refused).
    pub fn reason(&self) -> FallbackReason {
        self.reason
    }
}

impl fmt::Display for ForgetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "forget reached this process only: {}", self.reason)
    }
}

impl std::error::Error for ForgetError {}

/// The error of a leader in another process, as its `Display` text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteError {
    message: Arc<str>,
}

impl RemoteError {
    pub(crate) fn new(message: &str) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The remote error's `Display` text.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "leader in another process failed: {}", self.message)
    }
}

impl std::error::Error for RemoteError {}

/// Why a call did not produce a value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error<E> {
    /// The work ran in this process and returned this error (shared with this process's
    /// other callers of the flight).
    Failed(E),
    /// The work ran in another process and failed there.
    Remote(RemoteError),
    /// The work panicked in this process (the caller that ran it resumes the panic instead).
    Panicked(PanicMessage),
    /// The in-process leader was dropped and the group fails its waiters
    /// (see [`LeaderDropPolicy`](singleflight_core::LeaderDropPolicy)).
    LeaderDropped,
    /// The call was made from inside the work of the flight it would join.
    Reentrant,
}

impl<E> Error<E> {
    /// Returns `true` if the work failed, in this process or another.
    pub fn is_failed(&self) -> bool {
        matches!(self, Self::Failed(_) | Self::Remote(_))
    }

    /// Returns `true` if the error came from a leader in another process.
    pub fn is_remote(&self) -> bool {
        matches!(self, Self::Remote(_))
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(e) => write!(f, "work failed: {e}"),
            Self::Remote(e) => e.fmt(f),
            Self::Panicked(m) => write!(f, "work panicked: {}", m.as_str()),
            Self::LeaderDropped => f.write_str("leader dropped"),
            Self::Reentrant => f.write_str("re-entrant call"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for Error<E> {}
