//! The small types every other module names: a flight's identity, a caller's role and the
//! leader-drop policy. A leaf module: it imports nothing from the rest of the crate.

use core::fmt;
use core::time::Duration;

/// What the waiters of a flight do when its leader is dropped (cancelled) before finishing.
///
/// Only async callers can be dropped mid-flight; a blocking leader always finishes or panics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaderDropPolicy {
    /// The oldest caller still waiting is promoted and runs its own work; the others keep
    /// waiting for it. The flight (and its [`FlightId`]) carries on, so at no moment do two
    /// executions run for one key.
    #[default]
    Takeover,
    /// Every waiter returns [`Error::LeaderDropped`](crate::Error::LeaderDropped) and the
    /// flight ends; the next call for the key starts a new one.
    FailWaiters,
}

/// Identifies one flight within its group. Ids are never reused by a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlightId(pub(crate) u64);

impl FlightId {
    /// A flight id for code that calls observers itself (a test, a front-end of its own):
    /// groups number their flights themselves.
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FlightId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flight#{}", self.0)
    }
}

/// Where a flight lives: its key's hash (which picks the shard and the bucket) and its id
/// (which tells it from an older, forgotten flight of the same key). Everything that finds
/// a flight again after registering carries one of these, never a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlightRef {
    pub(crate) hash: u64,
    pub(crate) id: u64,
}

impl FlightRef {
    pub(crate) fn id(self) -> FlightId {
        FlightId(self.id)
    }
}

/// Whether a caller ran the work or shared another caller's execution: Go's `shared` flag,
/// with the leader's side told apart.
///
/// # Examples
///
/// ```
/// use singleflight_core::Role;
///
/// let lone = Role::Leader { shared: false };
/// assert!(lone.is_leader() && !lone.is_shared());
/// // Go's `shared` is true for every caller of a flight that someone joined.
/// assert!(Role::Leader { shared: true }.is_shared());
/// assert!(Role::Waiter.is_shared());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// This caller ran the work: it found no flight for its key, or it took over after the
    /// leader was dropped.
    Leader {
        /// Whether the outcome went to anyone else: at least one caller that joined this
        /// flight still waited for it when it was published. (The caller that launched
        /// detached work is that flight's leader, not a caller that joined it.) `false`
        /// for a leader that did not finish (cancelled, timed out).
        shared: bool,
    },
    /// This caller joined a flight and received its outcome (or gave up waiting).
    Waiter,
    /// This caller ran no work and joined no flight: it received a value a finished flight
    /// published within the group's reuse window (`reuse_for`), `age` after it was
    /// published.
    Reused {
        /// How long before this call the value was published.
        age: Duration,
    },
}

impl Role {
    /// Returns `true` for [`Role::Leader`], shared or not.
    pub fn is_leader(self) -> bool {
        matches!(self, Self::Leader { .. })
    }

    /// Returns `true` for [`Role::Waiter`].
    pub fn is_waiter(self) -> bool {
        self == Self::Waiter
    }

    /// Returns `true` for [`Role::Reused`].
    pub fn is_reused(self) -> bool {
        matches!(self, Self::Reused { .. })
    }

    /// Go's `shared`: `true` if this flight's outcome went to more than one caller, that is,
    /// for every waiter, for a leader that somebody joined, and for a call that reused a
    /// finished flight's value.
    pub fn is_shared(self) -> bool {
        matches!(
            self,
            Self::Waiter | Self::Leader { shared: true } | Self::Reused { .. }
        )
    }
}
