//! The trait a runtime setup implements, and what it can do.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use singleflight_core::{Group, LeaderDropPolicy, Observer};

use crate::caller::Caller;
use crate::fixtures::Work;

/// The value type of every group the rules make: infallible calls return `Ok` values only,
/// fallible ones (`try_call`) share the `Err` as
/// [`Error::Failed`](singleflight_core::Error::Failed).
pub type Value = Result<u64, String>;

/// A runtime setup the rules run on: one front-end on one executor.
///
/// The rules make groups with [`group`](Self::group), start callers with
/// [`spawn_call`](Self::spawn_call), read the group's state through the introspection
/// methods, and run their own body with [`block_on`](Self::block_on). Nothing is ordered by
/// sleeping: callers wait on [`Gate`](crate::Gate)s, and the rules wait for observable state
/// (waiter counts, [`Probe`](crate::Probe)s). What a setup cannot do is declared in
/// [`CAPABILITIES`](Self::CAPABILITIES); a rule that needs it is reported as unsupported.
///
/// The guide in the crate docs walks through an implementation.
pub trait Harness: 'static {
    /// The front-end's group, keyed by `String`, valued [`Value`].
    type Group: 'static;

    /// What this setup can do; each rule's [`Support`] is derived from it.
    const CAPABILITIES: Capabilities;

    /// A timeout for callers that must time out (their flight is held by a gate, so they
    /// time out whatever the duration). On a paused clock it can be long: it is virtual.
    /// A rule multiplies it by 40 for a leader that must *not* time out before a waiter
    /// joins, so on a real clock keep it short but not tiny (50 ms).
    const TIMEOUT: Duration;

    /// How long a rule waits for a state (a waiter joining, work starting) before it fails
    /// with the name of what it waited for.
    const PATIENCE: Duration = Duration::from_secs(30);

    /// A group with `policy` (setups whose callers cannot be dropped may ignore it) and
    /// `observer`, if any.
    fn group(policy: LeaderDropPolicy, observer: Option<Arc<dyn Observer>>) -> Self::Group;

    /// The front-end's group around a configured core group (the front-ends'
    /// `Group::from_core`): the reuse rules configure the window, its policy and its
    /// [`ManualClock`](crate::ManualClock) on the core group and run their calls through the
    /// front-end's own call paths.
    fn from_core(group: Group<String, Value>) -> Self::Group;

    /// The group's `in_flight()`: flights in progress, forgotten ones included.
    fn in_flight(group: &Self::Group) -> usize;
    /// The group's `waiters(key)`: callers that joined the flight of `key` (never its leader).
    fn waiters(group: &Self::Group, key: &str) -> usize;
    /// The group's `contains(key)`: whether `key` has a flight (not a forgotten one).
    fn contains(group: &Self::Group, key: &str) -> bool;
    /// The group's `forget(key)`: whether a flight was detached.
    fn forget(group: &Self::Group, key: &str) -> bool;
    /// The group's `forget_all()`: how many flights were detached.
    fn forget_all(group: &Self::Group) -> usize;

    /// Starts a caller of `key` in its own thread or task, calling as `spec` says with
    /// `work` as its work, and returns its handle. The caller reports how it ended through
    /// its [`CallerSide`](crate::CallerSide) and drops its call when asked to
    /// ([`CallerSide::cancel_gate`](crate::CallerSide::cancel_gate)), where it can.
    ///
    /// Rules only ask for the [`Kind`]s and timeouts that [`CAPABILITIES`](Self::CAPABILITIES)
    /// supports.
    fn spawn_call(group: &Arc<Self::Group>, key: &str, spec: Spec, work: Work) -> Caller;

    /// Starts a caller of `key` whose work calls `key` again from inside (re-entrancy); the
    /// caller reports the inner call's result as its value: `0` for
    /// `Err(Error::Reentrant)`, `1` for anything else. Only called when
    /// [`Capabilities::reentrancy`] is supported.
    fn spawn_reentrant(group: &Arc<Self::Group>, key: &str) -> Caller;

    /// Cancellation churn: `n` calls on distinct keys, each with a waiter, that register
    /// and are dropped mid-flight (alternating which of the two leaves first). Callers that
    /// cannot be dropped (threads) make `n` complete calls instead.
    fn churn(group: &Self::Group, n: usize);

    /// The group's `in_flight()` while a call for `key` exists but was never polled (lazy
    /// registration). Calls that register when made (blocking) have no such state: return
    /// `in_flight()` before making one.
    fn unpolled_in_flight(group: &Self::Group, key: &str) -> usize;

    /// Runs a rule's body to completion on this setup's executor (a fresh one per rule),
    /// on the current thread. Callers started from inside it must make progress while the
    /// body waits.
    fn block_on<F: Future<Output = ()>>(body: F);
}

/// What a setup can do. Start from [`FUTURES`](Self::FUTURES) or
/// [`THREADS`](Self::THREADS) and take away what yours lacks with the `with_*` methods.
///
/// ```
/// use singleflight_conformance::{Capabilities, Offload, Support};
///
/// // A single-threaded executor with timers but no spawner and no blocking pool.
/// const CAPABILITIES: Capabilities = Capabilities::FUTURES
///     .with_detached(Offload::Unsupported("no spawner"))
///     .with_blocking_pool(Offload::Unsupported("no blocking pool"));
/// assert!(CAPABILITIES.cancellable);
/// assert_eq!(CAPABILITIES.timeouts, Support::Yes);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// A caller can be dropped mid-call (a future); a blocking thread cannot. Rules about
    /// leader and waiter cancellation assert what non-cancellable callers do instead.
    pub cancellable: bool,
    /// How [`Kind::Detached`] calls run.
    pub detached: Offload,
    /// How [`Kind::Blocking`] calls (blocking closures on a blocking pool) run.
    pub blocking_pool: Offload,
    /// Per-call timeouts ([`Spec::timeout`]).
    pub timeouts: Support,
    /// A call for a key from inside that key's own work returns
    /// [`Error::Reentrant`](singleflight_core::Error::Reentrant)
    /// ([`Harness::spawn_reentrant`]).
    pub reentrancy: Support,
    /// A [`Kind::Detached`] or [`Kind::Blocking`] call that finds its key's value past the
    /// refresh threshold of a group configured with `refresh_after` gets the value at once
    /// and hands its work to the key's refresh (stale-while-revalidate), which no caller's
    /// cancellation reaches.
    pub refresh: Support,
}

impl Capabilities {
    /// An async front-end with everything: cancellable futures, detached work on spawned
    /// tasks, a blocking pool, timers, re-entrancy detection.
    pub const FUTURES: Self = Self {
        cancellable: true,
        detached: Offload::Spawned,
        blocking_pool: Offload::Spawned,
        timeouts: Support::Yes,
        reentrancy: Support::Yes,
        refresh: Support::Yes,
    };

    /// A blocking front-end: callers are threads, which cannot be dropped mid-call;
    /// detached and blocking-pool calls are plain calls whose calling thread runs the work;
    /// timeouts bound the wait for another thread's work; such calls (their work is
    /// `Send + 'static`) start refreshes on a thread of their own.
    pub const THREADS: Self = Self {
        cancellable: false,
        detached: Offload::Inline,
        blocking_pool: Offload::Inline,
        timeouts: Support::Yes,
        reentrancy: Support::Yes,
        refresh: Support::Yes,
    };

    /// With `cancellable` callers or not.
    #[must_use]
    pub const fn with_cancellable(mut self, cancellable: bool) -> Self {
        self.cancellable = cancellable;
        self
    }

    /// With detached calls run as `detached` says.
    #[must_use]
    pub const fn with_detached(mut self, detached: Offload) -> Self {
        self.detached = detached;
        self
    }

    /// With blocking-pool calls run as `blocking_pool` says.
    #[must_use]
    pub const fn with_blocking_pool(mut self, blocking_pool: Offload) -> Self {
        self.blocking_pool = blocking_pool;
        self
    }

    /// With per-call timeouts supported or not.
    #[must_use]
    pub const fn with_timeouts(mut self, timeouts: Support) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// With re-entrancy detection supported or not.
    #[must_use]
    pub const fn with_reentrancy(mut self, reentrancy: Support) -> Self {
        self.reentrancy = reentrancy;
        self
    }

    /// With refreshes (`refresh_after`) supported or not.
    #[must_use]
    pub const fn with_refresh(mut self, refresh: Support) -> Self {
        self.refresh = refresh;
        self
    }

    /// How calls of `kind` run.
    pub const fn offload(&self, kind: Kind) -> Offload {
        match kind {
            Kind::Call => Offload::Inline,
            Kind::Detached => self.detached,
            Kind::Blocking => self.blocking_pool,
        }
    }
}

/// How a setup runs a call whose API would move the work off the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offload {
    /// The work moves to a spawned task or a blocking thread, and finishes even if every
    /// caller goes away.
    Spawned,
    /// The setup accepts the call, but the caller runs the work itself (blocking threads:
    /// the calling thread is the one that runs it).
    Inline,
    /// The setup has no such API, for this reason.
    Unsupported(&'static str),
}

impl Offload {
    /// Whether the setup accepts such calls at all.
    pub const fn is_supported(self) -> bool {
        !matches!(self, Self::Unsupported(_))
    }

    /// The same answer as a [`Support`].
    pub const fn support(self) -> Support {
        match self {
            Self::Unsupported(reason) => Support::Unsupported(reason),
            Self::Spawned | Self::Inline => Support::Yes,
        }
    }
}

/// Whether a setup supports something (a capability, or a whole rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Supported: the rule runs.
    Yes,
    /// Not supported, for this reason: the rule's test passes after printing
    /// `unsupported: <reason>`, and the support table lists it.
    Unsupported(&'static str),
}

impl Support {
    /// Whether it is supported.
    pub const fn is_yes(self) -> bool {
        matches!(self, Self::Yes)
    }

    /// `self` if unsupported, else `other`: the first missing capability of two.
    pub const fn and(self, other: Self) -> Self {
        match self {
            Self::Yes => other,
            Self::Unsupported(_) => self,
        }
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Yes => f.write_str("runs"),
            Self::Unsupported(reason) => write!(f, "unsupported: {reason}"),
        }
    }
}

/// Which API a caller uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `call` / `try_call`: the work runs in the caller.
    Call,
    /// `call_detached` / `try_call_detached`: the work runs in a spawned task. With
    /// [`Capabilities::refresh`], such a call can start a refresh.
    Detached,
    /// `call_blocking` / `try_call_blocking`: a blocking closure runs on the blocking pool.
    /// With [`Capabilities::refresh`], such a call can start a refresh.
    Blocking,
}

/// How a caller calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The API.
    pub kind: Kind,
    /// `try_*` (the work's `Err` is shared as `Error::Failed`) or the infallible form
    /// (whose `Err` values never occur in the rules).
    pub fallible: bool,
    /// A per-call timeout.
    pub timeout: Option<Duration>,
}

impl Spec {
    /// `call`.
    pub const CALL: Self = Self {
        kind: Kind::Call,
        fallible: false,
        timeout: None,
    };

    /// The same API, fallible.
    #[must_use]
    pub const fn fallible(self) -> Self {
        Self {
            fallible: true,
            ..self
        }
    }

    /// The same call through the API `kind`.
    #[must_use]
    pub const fn kind(self, kind: Kind) -> Self {
        Self { kind, ..self }
    }

    /// The same call, with a timeout.
    #[must_use]
    pub const fn timeout(self, timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
            ..self
        }
    }
}
