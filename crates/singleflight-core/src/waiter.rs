//! The waiter: a caller that joined a flight and waits for its outcome. A thin guard over
//! its seat in the flight (see [`flight`](crate::flight)): it takes its outcome (**receive**)
//! or its promotion (**claim**), or its `Drop` gives the seat up (**leave**). How waiters
//! are woken is in the crate docs ("How waiting works").

use core::fmt;
use core::task::{Poll, Waker};

use crate::error::Error;
#[cfg(feature = "std")]
use crate::flight::Blocked;
use crate::flight::{Ending, Flight, Found, Outcome};
use crate::group::GroupRef;
use crate::leader::Leader;
use crate::observer::{Execution, Wait};
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
/// the value. So is a panic of the observer's [`waiter_started`](crate::Observer::waiter_started),
/// [`waiter_finished`](crate::Observer::waiter_finished), [`takeover`](crate::Observer::takeover)
/// or `execution_started` hooks that this waiter runs: a promoted waiter whose hook panics
/// passes its promotion on.
#[must_use = "a waiter does nothing unless it is polled or waited on"]
pub struct Waiter<G: GroupRef> {
    // Kept small: a herd is thousands of waiting calls, each holding one of these.
    group: G,
    flight: Arc<Flight<G::Value>>,
    ticket: u64,
    stage: Stage,
    /// Observers heard this caller join (`waiter_started`), and hear it leave; `false` for
    /// the caller of a detached call, which already counted as its flight's execution.
    counted: bool,
    /// The observer's token for this wait (see `Observer::waiter_started`).
    started: u64,
}

/// Where a waiter is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// In its seat, which holds no waker of its own (a blocking caller's, or one not
    /// polled yet).
    Seated,
    /// In its seat, which holds the waker of a task that polled it: a later poll first
    /// asks whether it is still the right one before cloning another.
    Polled,
    /// It took its outcome or its promotion: it has no seat, and dropping it does nothing.
    Done,
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
            stage: if has_waker {
                Stage::Polled
            } else {
                Stage::Seated
            },
            counted: true,
            started: 0,
        }
    }

    /// Tells the observer this caller joined, offering its `key`. If the hook panics, the
    /// caller leaves (unheard of: no `waiter_finished` pairs a start that did not return)
    /// and the panic goes on.
    #[inline]
    pub(crate) fn observe_start<Q>(&mut self, key: &Q)
    where
        G::Key: core::borrow::Borrow<Q>,
        Q: ?Sized + core::hash::Hash + alloc::borrow::ToOwned<Owned = G::Key>,
    {
        let group = self.group.group();
        let at = self.flight.at;
        match group.observe_caught(|o| {
            let key = group.key_ref(key);
            o.waiter_started(&group.info(at).with_key(&key))
        }) {
            Ok(started) => self.started = started,
            Err(payload) => {
                self.counted = false;
                crate::unwind::resume(payload)
            }
        }
    }

    /// The caller that launched detached work, waiting for its own flight like a waiter
    /// that is not counted as one (by `waiters`, by observers, by the leader's `shared`
    /// answer): it already counted as the flight's execution.
    pub(crate) fn launcher(leader: &Leader<G>) -> Self {
        let (flight, ticket) = leader.group().flights().subscribe(leader.at());
        let mut waiter = Self::new(leader.group_ref().clone(), flight, ticket, false);
        waiter.counted = false;
        waiter
    }

    /// The flight this caller waits for.
    pub fn flight(&self) -> FlightId {
        self.flight.at.id()
    }

    /// How the execution whose outcome this waiter received ended (`None`: a value).
    fn received<T>(&self, outcome: Option<&Outcome<T>>) -> Execution {
        match outcome {
            Some(Outcome::Panicked(_)) => Execution::Panicked,
            Some(Outcome::LeaderDropped) => Execution::Dropped,
            Some(Outcome::Value(_)) | None if self.flight.failed() => Execution::Failed,
            Some(Outcome::Value(_)) | None => Execution::Completed,
        }
    }

    /// Whether anyone joined this waiter's flight (the leader's `shared` answer, for the
    /// launcher of detached work, which waits as an uncounted waiter). Final once the
    /// outcome is received.
    pub(crate) fn flight_shared(&self) -> bool {
        self.flight.shared()
    }

    /// This caller's role once its outcome arrived: a waiter, or, for the launcher of
    /// detached work, the flight's leader, shared if anyone joined.
    pub(crate) fn role(&self) -> crate::types::Role {
        if self.counted {
            crate::types::Role::Waiter
        } else {
            crate::types::Role::Leader {
                shared: self.flight_shared(),
            }
        }
    }
}

/// Tells the observer a counted waiter is done, when dropped: so it is counted even if the
/// value's clone panics on the way (as having received the value).
struct CountJoin<'a, G: GroupRef>(&'a Waiter<G>, Wait);

impl<'a, G: GroupRef> CountJoin<'a, G> {
    /// Counts `waiter` receiving its flight's outcome, a value until told otherwise.
    fn new(waiter: &'a Waiter<G>) -> Self {
        Self(waiter, Wait::Received(waiter.received::<()>(None)))
    }

    /// Hands `outcome` back, counted as received.
    fn received<T>(mut self, outcome: Outcome<T>) -> Outcome<T> {
        self.1 = Wait::Received(self.0.received(Some(&outcome)));
        outcome
    }
}

impl<G: GroupRef> Drop for CountJoin<'_, G> {
    fn drop(&mut self) {
        let waiter = self.0;
        if waiter.counted {
            let (group, wait) = (waiter.group.group(), self.1);
            group.observe_in_drop(|o| {
                o.waiter_finished(&group.info(waiter.flight.at), waiter.started, wait);
            });
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
        let checked = match (self.stage, waker) {
            (Stage::Done, _) => panic!("`Waiter` polled after it finished"),
            (Stage::Seated, Some(_)) => Found::NeedsWaker,
            (Stage::Polled, _) | (Stage::Seated, None) => self.flight.check(self.ticket, waker),
        };
        match (checked, waker) {
            (Found::NeedsWaker, Some(waker)) => {
                let (found, unused) = self.flight.install(self.ticket, waker.clone());
                drop(unused);
                self.stage = Stage::Polled;
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
                self.stage = Stage::Done;
                let count = CountJoin::new(self);
                let outcome = count.received(self.flight.receive());
                Some(Waited::Outcome(outcome.into_result()))
            }
            Found::Promoted => Some(Waited::Promoted(self.lead())),
        }
    }

    /// **claim**: this waiter was promoted and now leads the flight.
    fn lead(&mut self) -> Leader<G> {
        self.stage = Stage::Done;
        // The guard exists before the hooks run: if one panics, dropping it passes the
        // promotion on, and then the panic goes on.
        let mut leader = Leader::new(self.group.clone(), self.flight.at);
        let (group, counted, started) = (self.group.group(), self.counted, self.started);
        let at = self.flight.at;
        let hooks = group.observe_caught(|o| {
            let info = group.info(at);
            if counted {
                o.waiter_finished(&info, started, Wait::Promoted);
            }
            o.takeover(&info);
            o.execution_started(&info)
        });
        match hooks {
            Ok(started) => leader.set_started(started),
            Err(payload) => {
                drop(leader);
                crate::unwind::resume(payload)
            }
        }
        leader
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
        assert_ne!(self.stage, Stage::Done, "`Waiter` polled after it finished");
        let promoted = match self.flight.block(self.ticket, deadline) {
            Blocked::Published(slot) => {
                // Done before receiving: a clone that panics must not leave twice.
                self.stage = Stage::Done;
                let count = CountJoin::new(&self);
                let outcome = count.received(Flight::receive_locked(slot));
                return Some(Waited::Outcome(outcome.into_result()));
            }
            Blocked::Promoted => true,
            Blocked::TimedOut => false,
        };
        if promoted {
            return Some(Waited::Promoted(self.lead()));
        }
        // Timed out. Leave first, then tell the observer: a hook that panics finds the
        // group consistent.
        let group = self.group.clone();
        drop(self);
        group.group().observe(|o| o.timeout());
        None
    }
}

impl<G: GroupRef> Drop for Waiter<G> {
    /// **leave**: the seat is given up (and a promotion not yet claimed is passed on, as a
    /// dropped leader would); observer code runs after.
    fn drop(&mut self) {
        if self.stage == Stage::Done {
            return;
        }
        let group = self.group.group();
        let mut over = false;
        if self.flight.leave(self.ticket) {
            // Promoted, and gone before it claimed the lead: no execution started, so the
            // flight ends (or passes on) with no execution hook.
            let ended =
                group
                    .flights()
                    .end(self.flight.at, Ending::Dropped, group.leader_drop_policy());
            over = ended.over();
            drop(ended);
            if over && group.reuse().is_some() {
                crate::leader::abandon_reusable(group, self.flight.at);
            }
        }
        let (counted, started, at) = (self.counted, self.started, self.flight.at);
        group.observe_in_drop(|o| {
            let info = group.info(at);
            if counted {
                o.waiter_finished(&info, started, Wait::GaveUp);
            }
            if over {
                o.flight_finished(&info);
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
