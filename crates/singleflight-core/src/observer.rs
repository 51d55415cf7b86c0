//! Hooks for statistics, metrics and tracing, and what they are told: the group's name, the
//! flight, and the key, offered by reference ([`FlightInfo`], [`ObservedKey`]).

use core::fmt;
use core::hash::{Hash, Hasher};

use crate::types::FlightId;

/// Receives what happens inside a [`Group`](crate::Group).
///
/// Every method has an empty default, so an implementation overrides only what it counts.
/// A group without an observer skips these calls entirely: statistics cost nothing until
/// they are attached with [`Group::with_observer`](crate::Group::with_observer).
///
/// A flight's usual life is two calls: [`leader_started`](Self::leader_started) and
/// [`leader_finished`](Self::leader_finished), which by default call the finer hooks below
/// in pairs; joins, takeovers, timeouts and cancellations call the finer hooks directly.
///
/// Hooks are called outside the group's locks, on the caller's thread, and must not block.
/// Each is called once the group's state is consistent, so a hook that panics unwinds
/// through the call that ran it and breaks no flight: the waiters of a flight whose
/// [`leader_finished`](Self::leader_finished) panics already have its outcome, and a flight
/// whose [`leader_started`](Self::leader_started) panics is abandoned as if its leader had
/// been dropped. A hook called while its call is already unwinding from another panic (a
/// dropped guard's [`execution_finished`](Self::execution_finished), say) has its own panic
/// caught and discarded (with `std`), since a second panic would abort the process.
/// Each call is counted exactly once, when its role is settled: as a *hit*
/// ([`waiter_finished`](Self::waiter_finished), unless [`Wait::Promoted`]) if it shared
/// another caller's execution, a *miss*
/// ([`execution_started`](Self::execution_started)) if it ran the work itself, or *reused*
/// ([`reused`](Self::reused)) if a reuse window served it, so `hits + misses + reused` is
/// the number of calls once they have returned (a refresh's execution is a miss of no
/// call: subtract [`refresh_started`](Self::refresh_started) for a group that refreshes).
///
/// # What a hook is told
///
/// The hooks of a flight take a [`FlightInfo`]: the group's name (if it was given one with
/// `with_name`), the flight's [`FlightId`] (unique within its group, the same for every
/// hook of one flight, takeovers included), and, on the hooks that start a caller's part
/// in a flight ([`leader_started`](Self::leader_started),
/// [`waiter_started`](Self::waiter_started)), its key as an [`ObservedKey`]: offered by
/// reference, hashed or formatted only if the observer asks. So one observer may serve
/// groups of different key types, and an observer that ignores keys pays nothing for them.
pub trait Observer: Send + Sync {
    /// A new flight began (a caller found no flight for its key). Paired with exactly one
    /// [`flight_finished`](Self::flight_finished); the difference is the number of flights
    /// in progress.
    fn flight_started(&self, flight: &FlightInfo<'_>) {
        let _ = flight;
    }

    /// A flight ended: its outcome is published, or every caller left.
    fn flight_finished(&self, flight: &FlightInfo<'_>) {
        let _ = flight;
    }

    /// A caller started running the work (a miss): the first caller of a flight, or a waiter
    /// promoted after the leader went away. The returned token comes back to
    /// [`execution_finished`](Self::execution_finished), so an implementation can stamp the
    /// start time without the core knowing any clock.
    ///
    /// Every call comes right after either [`flight_started`](Self::flight_started) (a
    /// flight's first execution) or [`takeover`](Self::takeover) (any later one), so
    /// flights started = executions started - takeovers: an observer may count two of the
    /// three and derive the third (`singleflight-stats` derives flights in progress this
    /// way, to keep one atomic add off the uncontended path).
    fn execution_started(&self, flight: &FlightInfo<'_>) -> u64 {
        let _ = flight;
        0
    }

    /// An execution ended; `started` is the token [`execution_started`](Self::execution_started)
    /// returned for it.
    fn execution_finished(&self, flight: &FlightInfo<'_>, started: u64, execution: Execution) {
        let _ = (flight, started, execution);
    }

    /// A new flight began and its leader started running the work: the pair
    /// [`flight_started`](Self::flight_started), [`execution_started`](Self::execution_started)
    /// in one call, which the core makes instead of those two. The default calls them; an
    /// observer on a hot path may override it to do both in one pass. `flight` offers the
    /// key.
    fn leader_started(&self, flight: &FlightInfo<'_>) -> u64 {
        self.flight_started(flight);
        self.execution_started(flight)
    }

    /// A flight's execution ended, and the flight with it (its outcome is published): the
    /// pair [`execution_finished`](Self::execution_finished), [`flight_finished`](Self::flight_finished)
    /// in one call, which the core makes instead of those two. The default calls them; an
    /// observer on a hot path may override it to do both in one pass.
    fn leader_finished(&self, flight: &FlightInfo<'_>, started: u64, execution: Execution) {
        self.execution_finished(flight, started, execution);
        self.flight_finished(flight);
    }

    /// A caller joined a flight in progress, to wait for its outcome; `flight` offers the
    /// key. The returned token comes back to [`waiter_finished`](Self::waiter_finished),
    /// which is called exactly once for each call of this, so an implementation can time
    /// the wait.
    fn waiter_started(&self, flight: &FlightInfo<'_>) -> u64 {
        let _ = flight;
        0
    }

    /// A caller that joined a flight stopped waiting, as `wait` says: it received the
    /// outcome (a *hit*), gave up (its timeout elapsed, or it was dropped: a hit too, as
    /// it shared the flight while it waited), or was promoted to run the work after the
    /// leader was dropped, in which case [`takeover`](Self::takeover) and
    /// [`execution_started`](Self::execution_started) follow and it counts as a miss
    /// instead. `started` is the token [`waiter_started`](Self::waiter_started) returned.
    fn waiter_finished(&self, flight: &FlightInfo<'_>, started: u64, wait: Wait) {
        let _ = (flight, started, wait);
    }

    /// A waiter was promoted to run the work after the leader was dropped.
    fn takeover(&self, flight: &FlightInfo<'_>) {
        let _ = flight;
    }

    /// A caller's timeout elapsed (a waiter that gave up, or a leader cancelled by its own
    /// timeout, which also ends its execution as [`Execution::Dropped`]).
    fn timeout(&self) {}

    /// A call was served from the reuse window (`reuse_for`): it neither ran the work nor
    /// joined a flight, so it is neither a hit nor a miss. `group` is the group's name, if
    /// it has one, and `key` the call's key.
    fn reused(&self, group: Option<&str>, key: &dyn ObservedKey) {
        let _ = (group, key);
    }

    /// A call past the refresh threshold (`refresh_after`) started a refresh of its key's
    /// value. The refresh is a flight of its own (`flight`, which offers the key), whose
    /// execution is counted as usual: this follows its
    /// [`leader_started`](Self::leader_started).
    fn refresh_started(&self, flight: &FlightInfo<'_>) {
        let _ = flight;
    }

    /// A refresh ended without a value to store (its work failed, panicked or was
    /// dropped): the old value is served until its window ends. `flight` is the refresh's
    /// flight, which has ended.
    fn refresh_failed(&self, flight: &FlightInfo<'_>) {
        let _ = flight;
    }
}

/// What an [`Observer`] hook is told about the flight it is called for: built on the stack
/// for the call, only when the group has an observer.
#[derive(Clone, Copy)]
pub struct FlightInfo<'a> {
    group: Option<&'a str>,
    id: FlightId,
    key: Option<&'a dyn ObservedKey>,
}

impl<'a> FlightInfo<'a> {
    /// What a hook is told about flight `id` of the group called `group`, with no key:
    /// for front-ends and tests that call observers themselves.
    pub fn new(group: Option<&'a str>, id: FlightId) -> Self {
        Self {
            group,
            id,
            key: None,
        }
    }

    /// The same, offering `key`.
    #[must_use]
    pub fn with_key(self, key: &'a dyn ObservedKey) -> Self {
        Self {
            key: Some(key),
            ..self
        }
    }

    /// The group's name, if it was given one (`with_name`).
    pub fn group(&self) -> Option<&'a str> {
        self.group
    }

    /// The flight: unique within its group, the same in every hook of the flight.
    pub fn id(&self) -> FlightId {
        self.id
    }

    /// The caller's key: offered by [`leader_started`](Observer::leader_started) and
    /// [`waiter_started`](Observer::waiter_started), `None` in the other hooks (keep it by
    /// [`id`](Self::id) if a later hook needs it).
    pub fn key(&self) -> Option<&'a dyn ObservedKey> {
        self.key
    }
}

impl fmt::Debug for FlightInfo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No key: it is the application's data.
        f.debug_struct("FlightInfo")
            .field("group", &self.group)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A caller's key, offered to an observer by reference: hashed or formatted only if the
/// observer asks, so that one observer serves groups of any key type and nothing is spent
/// on keys nobody looks at.
pub trait ObservedKey {
    /// Feeds the key to `state` as its `Hash` does: equal keys hash alike, whatever
    /// borrowed form a call used (`&str` or `&String` for a `String` key), since `Borrow`
    /// requires their hashes to agree.
    fn hash_with(&self, state: &mut dyn Hasher);

    /// Writes the key with the group's key formatter (`with_key_format`), or returns
    /// `None` and writes nothing if the group has none: keys are not required to be
    /// `Debug`, and a group shows its keys only if told to.
    ///
    /// # Errors
    ///
    /// `Some(Err(_))` if `out` or the formatter failed.
    fn write_key(&self, out: &mut dyn fmt::Write) -> Option<fmt::Result>;
}

/// How a group formats its keys for observers (see `with_key_format`).
pub type KeyFormat<K> = fn(&K, &mut fmt::Formatter<'_>) -> fmt::Result;

/// The [`ObservedKey`] of a call: its key in the borrowed form the call used, and the
/// group's formatter of the owned form.
pub(crate) struct KeyRef<'a, K, Q: ?Sized> {
    pub(crate) key: &'a Q,
    pub(crate) format: Option<KeyFormat<K>>,
}

impl<K, Q> ObservedKey for KeyRef<'_, K, Q>
where
    K: core::borrow::Borrow<Q>,
    Q: ?Sized + Hash + alloc::borrow::ToOwned<Owned = K>,
{
    fn hash_with(&self, mut state: &mut dyn Hasher) {
        self.key.hash(&mut state);
    }

    fn write_key(&self, out: &mut dyn fmt::Write) -> Option<fmt::Result> {
        struct Formatted<'k, K>(&'k K, KeyFormat<K>);
        impl<K> fmt::Display for Formatted<'_, K> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                (self.1)(self.0, f)
            }
        }
        let format = self.format?;
        // The formatter takes the owned form: a key borrowed as another type (`&str` for
        // `String`) is cloned into it first. Formatting is opted into, for exports.
        // Nothing here can spare the clone: a `&K` cannot be made from a `&Q` without one;
        // a scratch `K` to `clone_into` has no home (`KeyRef` lives for one hook, and a
        // thread-local would need `K: 'static`, which groups do not require); and telling
        // `Q == K` apart needs `TypeId` (`'static` again) or specialization. Sparing it
        // takes the caller's help: offering the owned key the leader already stored in
        // the table, or a formatter of the borrowed form.
        let owned = self.key.to_owned();
        Some(out.write_fmt(format_args!("{}", Formatted(&owned, format))))
    }
}

/// How a caller that joined a flight stopped waiting (see [`Observer::waiter_finished`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Wait {
    /// It received the flight's outcome: the execution that produced it ended this way
    /// ([`Execution::Dropped`] for the `LeaderDropped` error of the `FailWaiters` policy).
    Received(Execution),
    /// It left without the outcome: its timeout elapsed, or it was dropped.
    GaveUp,
    /// It was promoted to run the work after the leader was dropped: a miss from now on.
    Promoted,
}

/// How an execution of the work ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Execution {
    /// The work produced a value.
    Completed,
    /// The work returned an error (fallible calls).
    Failed,
    /// The work panicked.
    Panicked,
    /// The leader was dropped (cancelled) before the work finished.
    Dropped,
}
