//! The waiter: a caller that joined a flight and waits for its outcome. An async waiter
//! leaves its task's waker in its seat (no allocation per waiter); a blocked thread sleeps on
//! its flight's condition variable, which one `notify_all` wakes for every thread at once.

use core::fmt;
use core::task::{Poll, Waker};

use crate::error::Error;
#[cfg(feature = "std")]
use crate::flight::Blocked;
use crate::flight::{Flight, Found};
use crate::group::GroupRef;
use crate::leader::Leader;
use crate::sync::Arc;
use crate::types::FlightId;

/// What a [`Waiter`] ends with.
pub enum Waited<G: GroupRef> {
    /// The flight's outcome: the leader's value, or why there is none
    /// ([`Error::Panicked`], [`Error::LeaderDropped`]).
    Outcome(Result<G::Value, Error>),
    /// The leader was dropped and this waiter was promoted: it must now run its own work and
    /// complete the flight, which its former fellow waiters are still waiting for.
    Promoted(Leader<G>),
}

impl<G: GroupRef> fmt::Debug for Waited<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Outcome(Ok(_)) => f.write_str("Outcome(Ok(..))"),
            Self::Outcome(Err(e)) => f.debug_tuple("Outcome").field(&e).finish(),
            Self::Promoted(leader) => f.debug_tuple("Promoted").field(leader).finish(),
        }
    }
}

/// A caller waiting for the outcome of a flight someone else runs.
///
/// It is a future (via [`poll`](Self::poll)) and, with `std`, a blocking wait
/// (`wait`, `wait_deadline`) over the same state: an async waiter keeps its task's waker in
/// the flight, a blocked thread sleeps on the flight's condition variable.
///
/// # Cancel safety
///
/// Dropping a waiter affects no one else: it leaves the flight's queue. A waiter dropped
/// right after being promoted passes the promotion on (or ends the flight), exactly as a
/// dropped leader would.
///
/// # Panics
///
/// Receiving the outcome clones the value (every waiter but the last to receive it gets a
/// clone); if that `Clone` panics, the panic is this waiter's alone: the others still get
/// the value. So is a panic of the observer's [`joined`](crate::Observer::joined),
/// [`takeover`](crate::Observer::takeover) or `execution_started` hooks that this waiter
/// runs: a promoted waiter whose hook panics passes its promotion on.
#[must_use = "a waiter does nothing unless it is polled or waited on"]
pub struct Waiter<G: GroupRef> {
    // Kept small: a herd is thousands of waiting calls, each holding one of these.
    group: G,
    flight: Arc<Flight<G::Value>>,
    ticket: u64,
    done: bool,
    /// Observers count this caller as a hit when it leaves; `false` for the caller of a
    /// detached call, which already counted as its flight's execution.
    counted: bool,
    /// Whether this waiter's seat holds a waker (an async caller's), so a poll first asks
    /// whether it is still the right one before cloning another.
    has_waker: bool,
}

impl<G: GroupRef> Waiter<G> {
    pub(crate) fn new(
        group: G,
        flight: Arc<Flight<G::Value>>,
        ticket: u64,
        has_waker: bool,
    ) -> Self {
        Self {
            group,
            flight,
            ticket,
            done: false,
            counted: true,
            has_waker,
        }
    }

    /// A waiter that is not counted as one (see [`Leader::subscribe`]).
    pub(crate) fn new_uncounted(group: G, flight: Arc<Flight<G::Value>>, ticket: u64) -> Self {
        let mut waiter = Self::new(group, flight, ticket, false);
        waiter.counted = false;
        waiter
    }

    /// The flight this caller waits for.
    pub fn flight(&self) -> FlightId {
        self.flight.at.id()
    }

    /// Whether anyone joined this waiter's flight (the leader's `shared` answer, for the
    /// launcher of detached work, which waits as an uncounted waiter). Final once the
    /// outcome is received.
    pub(crate) fn flight_shared(&self) -> bool {
        self.flight.shared()
    }
}

/// Tells the observer a counted waiter is done, when dropped: so it is counted even if the
/// value's clone panics on the way.
struct CountJoin<'a, G: GroupRef>(&'a Waiter<G>);

impl<G: GroupRef> Drop for CountJoin<'_, G> {
    fn drop(&mut self) {
        if self.0.counted {
            self.0.group.group().observe_in_drop(|o| o.joined());
        }
    }
}

impl<G: GroupRef> Waiter<G>
where
    G::Value: Clone,
{
    /// Takes the outcome or the promotion, if either is there; otherwise makes sure the seat
    /// holds a waker for `waker`'s task (if given), cloning it with no lock held.
    fn check(&mut self, waker: Option<&Waker>) -> Option<Waited<G>> {
        let found = self.look(waker);
        self.take(found)
    }

    /// Looks for the outcome or the promotion; failing both, makes sure the seat holds a
    /// waker for `waker`'s task (if given), cloning it with no lock held.
    fn look(&mut self, waker: Option<&Waker>) -> Found {
        assert!(!self.done, "`Waiter` polled after it finished");
        let checked = if self.has_waker || waker.is_none() {
            self.flight.check(self.ticket, waker)
        } else {
            Found::NeedsWaker
        };
        match (checked, waker) {
            (Found::NeedsWaker, Some(waker)) => {
                let (found, unused) = self.flight.install(self.ticket, waker.clone());
                drop(unused);
                self.has_waker = true;
                found
            }
            (found, _) => found,
        }
    }

    /// Takes what [`look`](Self::look) found: the outcome (receiving it runs the value's
    /// `Clone`), or the promotion; `None` if there is nothing yet.
    fn take(&mut self, found: Found) -> Option<Waited<G>> {
        match found {
            Found::Waiting | Found::NeedsWaker => None,
            Found::Published => {
                // Done before receiving: a clone that panics must not leave twice.
                self.done = true;
                let count = CountJoin(self);
                let outcome = self.flight.receive();
                drop(count);
                Some(Waited::Outcome(outcome.into_result()))
            }
            Found::Promoted => {
                self.done = true;
                // The guard exists before the hooks run: if one panics, dropping it passes
                // the promotion on, and then the panic goes on.
                let mut leader = Leader::new(self.group.clone(), self.flight.at, 0);
                let hooks = self.group.group().observe_caught(|o| {
                    o.takeover();
                    o.execution_started()
                });
                match hooks {
                    Ok(started) => leader.set_started(started),
                    Err(payload) => {
                        drop(leader);
                        crate::unwind::resume(payload)
                    }
                }
                Some(Waited::Promoted(leader))
            }
        }
    }

    /// Polls for the outcome from an async context.
    ///
    /// # Panics
    ///
    /// If polled again after it returned `Ready`.
    pub fn poll(&mut self, cx: &mut core::task::Context<'_>) -> Poll<Waited<G>> {
        match self.check(Some(cx.waker())) {
            Some(waited) => Poll::Ready(waited),
            None => Poll::Pending,
        }
    }

    /// Blocks the current thread until the outcome (or a promotion) arrives.
    #[cfg(feature = "std")]
    pub fn wait(self) -> Waited<G> {
        self.block(None)
            .expect("with no deadline, a wait ends with an outcome or a promotion")
    }

    /// Blocks until the outcome (or a promotion) arrives or `deadline` passes. On timeout the
    /// waiter leaves the flight (which goes on for everyone else) and `None` is returned.
    #[cfg(feature = "std")]
    pub fn wait_deadline(self, deadline: std::time::Instant) -> Option<Waited<G>> {
        self.block(Some(deadline))
    }

    /// The blocking wait: the thread sleeps on the flight's condition variable and, once the
    /// outcome is published, wakes holding the outcome lock and takes its copy under it.
    #[cfg(feature = "std")]
    fn block(mut self, deadline: Option<std::time::Instant>) -> Option<Waited<G>> {
        assert!(!self.done, "`Waiter` polled after it finished");
        let found = match self.flight.block(self.ticket, deadline) {
            Blocked::Published(slot) => {
                // Done before receiving: a clone that panics must not leave twice.
                self.done = true;
                let count = CountJoin(&self);
                let outcome = Flight::receive_locked(slot);
                drop(count);
                return Some(Waited::Outcome(outcome.into_result()));
            }
            Blocked::Promoted => Found::Promoted,
            Blocked::TimedOut => Found::Waiting,
        };
        if matches!(found, Found::Promoted) {
            return self.take(found);
        }
        // Leave first, then tell the observer: a hook that panics finds the group
        // consistent.
        let group = self.group.clone();
        drop(self);
        group.group().observe(|o| o.timeout());
        None
    }
}

impl<G: GroupRef> Drop for Waiter<G> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let group = self.group.group();
        // **leave** (or, promoted, **abandon**) first: observer code runs after.
        let ended = self.flight.leave(self.ticket) && group.abandon(self.flight.at);
        group.observe_in_drop(|o| {
            if self.counted {
                o.joined();
            }
            if ended {
                o.flight_finished();
            }
        });
    }
}

impl<G: GroupRef> fmt::Debug for Waiter<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter")
            .field("flight", &self.flight())
            .field("ticket", &self.ticket)
            .finish_non_exhaustive()
    }
}
