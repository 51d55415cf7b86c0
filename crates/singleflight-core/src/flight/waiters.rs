//! The part of a flight its waiters share ([`Flight`]): the queue of waiting callers (oldest
//! first, for takeover) with the wakers of those that wait asynchronously, the flight's
//! [`Phase`], the condition variable blocked threads sleep on, and the slot the outcome is
//! handed out from. Allocated when a second caller joins; a flight nobody joins lives in its
//! table slot alone. The states, verbs and lock order are in the [module docs](super).

use alloc::collections::VecDeque;
use core::task::Waker;

use crate::error::PanicMessage;
use crate::sync::{Arc, AtomicBool, Mutex, MutexGuard, Ordering};
use crate::types::FlightRef;
use crate::unwind;

/// How a flight ended, as its waiters see it.
pub(crate) enum Outcome<T> {
    Value(T),
    Panicked(PanicMessage),
    LeaderDropped,
}

/// Where a flight is in its life, as its waiters see it: the one place its state is kept,
/// and [`FlightState::settled`] the one place it is matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A leader runs the work (or has yet to learn it must stop).
    Running,
    /// The leader went away; the waiter holding this ticket is to take over, until it
    /// claims the promotion (back to `Running`) or passes it on.
    Promoted(u64),
    /// The outcome is out (or nobody was left to take it): the queue is empty and takes no
    /// new seat. `shared`: a caller that joined still waited for it (the leader's answer).
    Ended { shared: bool },
}

/// The shared part of one flight.
pub(crate) struct Flight<T> {
    /// Where the flight's table slot is: kept here rather than in every waiter, so that a
    /// waiting call stays small.
    pub(crate) at: FlightRef,
    state: Mutex<FlightState>,
    /// Where blocked threads sleep, on the outcome lock: one `notify_all` wakes them all,
    /// and each wakes holding the lock it takes its copy under, so a woken thread takes no
    /// other lock. (Unparking each thread in turn from the publishing thread measured
    /// slower, and sleeping on the state lock cost a second lock per thread: see the
    /// benches' blocking herd.)
    #[cfg(feature = "std")]
    ready: crate::sync::Condvar,
    outcome: Mutex<OutcomeSlot<T>>,
    /// Whether the value published stands for a failure (the `Err` of fallible work), for
    /// the observers of its waiters: stored before the outcome, read after receiving it
    /// (the outcome lock orders the two).
    failed: AtomicBool,
}

/// A joined caller's place in its flight's queue.
pub(crate) enum Seat {
    /// The caller left, or was promoted.
    Empty,
    /// The caller waits: with its task's waker once it has left one (a blocked thread
    /// sleeps on the flight's condition variable instead). `counted` is `false` for the
    /// launcher of detached work, which is its flight's leader and not one of its waiters.
    Waiting { waker: Option<Waker>, counted: bool },
}

/// The waiters' side of one flight, under its state lock. Tickets are handed out in join
/// order; until the flight ends, `waiting[i]` is the seat of the caller holding ticket
/// `base + i`.
struct FlightState {
    phase: Phase,
    waiting: VecDeque<Seat>,
    base: u64,
    /// Occupied seats.
    live: usize,
    /// Occupied seats of callers that joined (what `Group::waiters` reports).
    joined: usize,
}

/// The outcome and who has yet to take it, under the outcome lock.
pub(crate) struct OutcomeSlot<T> {
    /// Set when the flight ends, if anyone is to receive it; taken by the last reader.
    outcome: Option<Outcome<T>>,
    /// Callers that have yet to receive the outcome or give up their claim.
    readers: usize,
    /// Threads asleep on the flight's condition variable.
    #[cfg(feature = "std")]
    sleepers: usize,
    /// Promotions made so far: a blocked thread that sees this change looks for its own
    /// promotion (under the state lock) before it sleeps again.
    #[cfg(feature = "std")]
    promotions: u64,
}

/// What a blocking wait ends with.
#[cfg(feature = "std")]
pub(crate) enum Blocked<'a, T> {
    /// The outcome is published, and this is its lock: [`Flight::receive_locked`] it.
    Published(MutexGuard<'a, OutcomeSlot<T>>),
    /// This waiter was promoted and has now claimed the promotion: it leads.
    Promoted,
    /// The deadline passed first.
    TimedOut,
}

/// What a waiter finds when it looks at its flight.
pub(crate) enum Found {
    /// The outcome is published: [`Flight::receive`] it.
    Published,
    /// This waiter was promoted and has now claimed the promotion: it leads.
    Promoted,
    /// Nothing yet; the seat holds a waker for this waiter's task (or none was asked for).
    Waiting,
    /// Nothing yet, and the seat holds no waker for the task that polled: it needs one.
    NeedsWaker,
}

/// Callers to wake once every lock is released, woken when this is dropped: the async ones
/// through the wakers their seats held, the blocked ones by one `notify_all` on their
/// flight's condition variable (if any sleeps).
#[must_use = "the waiters sleep until woken"]
pub(crate) struct Wake<T> {
    seats: VecDeque<Seat>,
    sleepers: Option<Arc<Flight<T>>>,
}

impl<T> Wake<T> {
    /// Nobody to wake.
    pub(crate) fn nobody() -> Self {
        Self {
            seats: VecDeque::new(),
            sleepers: None,
        }
    }

    /// One promoted caller, through the waker its seat held (blocked threads were woken by
    /// the promotion itself).
    pub(crate) fn promoted(waker: Option<Waker>) -> Self {
        let mut wake = Self::nobody();
        wake.seats.push_back(Seat::Waiting {
            waker,
            counted: true,
        });
        wake
    }
}

impl<T> Drop for Wake<T> {
    fn drop(&mut self) {
        for seat in core::mem::take(&mut self.seats) {
            if let Seat::Waiting {
                waker: Some(waker), ..
            } = seat
            {
                waker.wake();
            }
        }
        if let Some(flight) = self.sleepers.take() {
            flight.notify_sleepers();
        }
    }
}

impl<T> Flight<T> {
    pub(crate) fn new(at: FlightRef) -> Self {
        Self {
            at,
            state: Mutex::new(FlightState {
                phase: Phase::Running,
                waiting: VecDeque::new(),
                base: 0,
                live: 0,
                joined: 0,
            }),
            #[cfg(feature = "std")]
            ready: crate::sync::Condvar::new(),
            outcome: Mutex::new(OutcomeSlot {
                outcome: None,
                readers: 0,
                #[cfg(feature = "std")]
                sleepers: 0,
                #[cfg(feature = "std")]
                promotions: 0,
            }),
            failed: AtomicBool::new(false),
        }
    }

    /// Marks the value about to be published as a failure (see `failed`).
    pub(crate) fn mark_failed(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }

    /// Whether the value received stands for a failure; read after receiving it.
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Wakes every thread asleep on the flight's condition variable (none sleep without
    /// `std`).
    fn notify_sleepers(&self) {
        #[cfg(feature = "std")]
        self.ready.notify_all();
    }

    /// **join**: takes a seat for a new waiter, with `waker` (cloned before the call, so no
    /// waker code runs under the lock), and returns its ticket; or hands `waker` back if the
    /// flight ended meanwhile (the caller found it in the table but took its seat only
    /// after releasing the shard lock): that flight is over, and the caller looks again.
    pub(crate) fn join(&self, counted: bool, waker: Option<Waker>) -> Result<u64, Option<Waker>> {
        let mut state = self.state.lock();
        if let Phase::Ended { .. } = state.phase {
            return Err(waker);
        }
        Ok(state.join(counted, waker))
    }

    /// Callers that joined and still wait (the launcher of detached work not counted).
    pub(crate) fn joined(&self) -> usize {
        self.state.lock().joined
    }

    /// Whether the outcome went to a caller that joined this flight (`false` until it ends).
    pub(crate) fn shared(&self) -> bool {
        self.state.lock().phase == Phase::Ended { shared: true }
    }

    /// Looks for the outcome or a promotion of `ticket`. Failing both, it reports whether
    /// the seat's waker would wake the same task as `waker` (if one is given): if not, the
    /// caller clones `waker` with no lock held and hands it to [`install`](Self::install).
    pub(crate) fn check(&self, ticket: u64, waker: Option<&Waker>) -> Found {
        let mut state = self.state.lock();
        if let Some(found) = state.settled(ticket) {
            return found;
        }
        match (waker, state.seat(ticket)) {
            (Some(waker), Some(Seat::Waiting { waker: seat, .. }))
                if !seat.as_ref().is_some_and(|seat| seat.will_wake(waker)) =>
            {
                Found::NeedsWaker
            }
            _ => Found::Waiting,
        }
    }

    /// Like [`check`](Self::check), but failing both, leaves `waker` in the seat. The waker
    /// it replaces (or `waker` itself, if it was not needed) comes back, to be dropped after
    /// the lock.
    pub(crate) fn install(&self, ticket: u64, waker: Waker) -> (Found, Option<Waker>) {
        let mut state = self.state.lock();
        if let Some(found) = state.settled(ticket) {
            return (found, Some(waker));
        }
        let old = match state.seat(ticket) {
            Some(Seat::Waiting { waker: seat, .. }) => seat.replace(waker),
            // Not waiting (left, or promoted and not yet claimed): nothing to wake.
            _ => Some(waker),
        };
        (Found::Waiting, old)
    }

    /// **leave**: the caller holding `ticket` stops waiting without receiving: it empties
    /// its seat, or after the flight ended gives up its claim on the outcome. Returns `true`
    /// if it was promoted and had not claimed it yet: the caller must then end the flight
    /// as a dropped leader would (which passes the promotion on).
    pub(crate) fn leave(&self, ticket: u64) -> bool {
        let mut state = self.state.lock();
        match state.settled(ticket) {
            Some(Found::Promoted) => true,
            Some(_) => {
                drop(state);
                self.give_up_claim();
                false
            }
            None => {
                let old = state.leave(ticket);
                drop(state);
                drop(old);
                false
            }
        }
    }

    /// One reader of an ended flight gives up its claim: the last claim takes the outcome,
    /// to drop here, after the lock.
    pub(crate) fn give_up_claim(&self) {
        let mut slot = self.outcome.lock();
        slot.readers -= 1;
        let last = if slot.readers == 0 {
            slot.outcome.take()
        } else {
            None
        };
        drop(slot);
        drop(last);
    }

    /// The **end** of the flight, on the waiters' side (its slot has left the table, so
    /// nobody can join any more): stores `outcome` for every waiting caller and empties the
    /// queue. Returns the leader's `shared` answer and the callers to wake. If nobody waits
    /// any more, `outcome` is dropped here, after the lock.
    pub(crate) fn publish(this: &Arc<Self>, outcome: Outcome<T>) -> (bool, Wake<T>) {
        let mut state = this.state.lock();
        debug_assert_eq!(
            state.phase,
            Phase::Running,
            "a flight ends once, unpromoted"
        );
        let shared = state.joined > 0;
        state.phase = Phase::Ended { shared };
        let (unused, sleepers) = if state.live > 0 {
            let mut slot = this.outcome.lock();
            slot.readers = state.live;
            slot.outcome = Some(outcome);
            (None, slot.has_sleepers())
        } else {
            (Some(outcome), false)
        };
        let wake = Wake {
            seats: core::mem::take(&mut state.waiting),
            sleepers: sleepers.then(|| Arc::clone(this)),
        };
        state.live = 0;
        state.joined = 0;
        state.check_invariants();
        drop(state);
        drop(unused);
        (shared, wake)
    }

    /// The **end** of a flight nobody waits for any more (its slot has left the table):
    /// then its leader keeps its value and need not clone it. Returns `false`, changing
    /// nothing, if somebody waits.
    pub(crate) fn end_unwatched(&self) -> bool {
        let mut state = self.state.lock();
        if state.live > 0 {
            return false;
        }
        debug_assert_eq!(
            state.phase,
            Phase::Running,
            "a flight ends once, unpromoted"
        );
        state.phase = Phase::Ended { shared: false };
        state.check_invariants();
        true
    }

    /// **promote**: names the oldest waiting caller to take over the work. `None` if nobody
    /// is left; else its waker (if it left one), to wake once every lock is released.
    pub(crate) fn promote(&self) -> Option<Option<Waker>> {
        let mut state = self.state.lock();
        let promoted = state.promote();
        // The promoted waiter may be a blocked thread (even one whose seat holds a waker,
        // if it was polled before it blocked): every blocked thread wakes, looks for its
        // promotion, and all but the promoted one sleep again.
        #[cfg(feature = "std")]
        if promoted.is_some() {
            let mut slot = self.outcome.lock();
            slot.promotions += 1;
            let sleepers = slot.sleepers > 0;
            drop(slot);
            drop(state);
            if sleepers {
                self.notify_sleepers();
            }
            return promoted;
        }
        drop(state);
        promoted
    }

    /// Blocks the current thread until the outcome is published (then returns with the
    /// outcome lock held, to receive under), or `ticket` is promoted (and claims the
    /// promotion), or `deadline` passes.
    ///
    /// A promotion is made under the state lock, and counted under the outcome lock
    /// (nested, in lock order) before the sleepers are woken: so a thread that found no
    /// promotion under the state lock either sees the count change under the outcome lock
    /// or is asleep when the promoter wakes the sleepers. An outcome is stored under both
    /// locks too, and a reader that has not received keeps it there.
    #[cfg(feature = "std")]
    pub(crate) fn block(
        &self,
        ticket: u64,
        deadline: Option<std::time::Instant>,
    ) -> Blocked<'_, T> {
        let mut seen = self.outcome.lock().promotions;
        loop {
            let settled = self.state.lock().settled(ticket);
            match settled {
                Some(Found::Promoted) => return Blocked::Promoted,
                Some(_) => return Blocked::Published(self.outcome.lock()),
                None => {}
            }
            let mut slot = self.outcome.lock();
            loop {
                if slot.outcome.is_some() {
                    return Blocked::Published(slot);
                }
                if slot.promotions != seen {
                    seen = slot.promotions;
                    break;
                }
                let timeout = match deadline {
                    None => None,
                    Some(deadline) => {
                        let now = std::time::Instant::now();
                        if now >= deadline {
                            return Blocked::TimedOut;
                        }
                        Some(deadline - now)
                    }
                };
                slot.sleepers += 1;
                slot = match timeout {
                    None => self.ready.wait(slot),
                    Some(timeout) => self.ready.wait_timeout(slot, timeout),
                };
                slot.sleepers -= 1;
            }
        }
    }
}

#[cfg(test)]
impl<T> Flight<T> {
    /// Whether the outcome slot still holds an outcome.
    pub(super) fn holds_outcome(&self) -> bool {
        self.outcome.lock().outcome.is_some()
    }

    /// Readers that have yet to receive the outcome or give up their claim.
    pub(super) fn readers(&self) -> usize {
        self.outcome.lock().readers
    }
}

impl<T: Clone> Flight<T> {
    /// **receive**: hands the published outcome to a waiter: a clone, or the original for
    /// the last one, so a flight clones its value once per waiter but one. Call it once per
    /// waiter, after [`check`](Self::check) found the flight ended, and count the waiter as
    /// done first: if the value's `Clone` panics, the panic is this waiter's alone.
    pub(crate) fn receive(&self) -> Outcome<T> {
        Self::receive_locked(self.outcome.lock())
    }

    /// [`receive`](Self::receive), with the outcome lock already held.
    pub(crate) fn receive_locked(mut slot: MutexGuard<'_, OutcomeSlot<T>>) -> Outcome<T> {
        debug_assert!(
            slot.readers > 0,
            "every reader is counted when the flight ends"
        );
        slot.readers -= 1;
        if slot.readers == 0 {
            let outcome = slot.outcome.take();
            drop(slot);
            return outcome.expect("an ended flight holds its outcome until its last reader");
        }
        let outcome = slot
            .outcome
            .as_ref()
            .expect("an ended flight holds its outcome until its last reader");
        // The clone's panic (with `std`) is caught and resumed once the lock is released,
        // so the lock is never held by an unwinding thread.
        let copy = unwind::catch(|| duplicate(outcome));
        drop(slot);
        match copy {
            Ok(copy) => copy,
            Err(payload) => unwind::resume(payload),
        }
    }
}

impl<T> OutcomeSlot<T> {
    /// Whether a blocked thread sleeps on the flight's condition variable.
    fn has_sleepers(&self) -> bool {
        #[cfg(feature = "std")]
        {
            self.sleepers > 0
        }
        #[cfg(not(feature = "std"))]
        {
            false
        }
    }
}

impl<T> Outcome<T> {
    /// What a waiter's call returns for this outcome.
    pub(crate) fn into_result(self) -> Result<T, crate::error::Error> {
        match self {
            Self::Value(value) => Ok(value),
            Self::Panicked(message) => Err(crate::error::Error::Panicked(message)),
            Self::LeaderDropped => Err(crate::error::Error::LeaderDropped),
        }
    }
}

fn duplicate<T: Clone>(outcome: &Outcome<T>) -> Outcome<T> {
    match outcome {
        Outcome::Value(value) => Outcome::Value(value.clone()),
        Outcome::Panicked(message) => Outcome::Panicked(message.clone()),
        Outcome::LeaderDropped => Outcome::LeaderDropped,
    }
}

impl FlightState {
    fn check_invariants(&self) {
        debug_assert!(self.joined <= self.live && self.live <= self.waiting.len());
        debug_assert!(
            !matches!(self.phase, Phase::Ended { .. }) || self.waiting.is_empty(),
            "an ended flight has no queue"
        );
    }

    /// The one match on the phase: what the caller holding `ticket` finds settled for it.
    /// `Some(Published)` once the flight ended; `Some(Promoted)` if it is the promoted
    /// caller, which claims the promotion here (the flight runs again, under it); `None`
    /// while it still waits.
    fn settled(&mut self, ticket: u64) -> Option<Found> {
        match self.phase {
            Phase::Ended { .. } => Some(Found::Published),
            Phase::Promoted(promoted) if promoted == ticket => {
                self.phase = Phase::Running;
                Some(Found::Promoted)
            }
            Phase::Running | Phase::Promoted(_) => None,
        }
    }

    fn join(&mut self, counted: bool, waker: Option<Waker>) -> u64 {
        let ticket = self.base + self.waiting.len() as u64;
        self.waiting.push_back(Seat::Waiting { waker, counted });
        self.live += 1;
        self.joined += usize::from(counted);
        self.check_invariants();
        ticket
    }

    fn seat(&mut self, ticket: u64) -> Option<&mut Seat> {
        ticket
            .checked_sub(self.base)
            .and_then(|i| self.waiting.get_mut(usize::try_from(i).ok()?))
    }

    /// Empties the seat of `ticket`; returns its waker, to drop after the lock.
    fn leave(&mut self, ticket: u64) -> Option<Waker> {
        let seat = self
            .seat(ticket)
            .map(|seat| core::mem::replace(seat, Seat::Empty));
        let waker = match seat {
            Some(Seat::Waiting { waker, counted }) => {
                self.live -= 1;
                self.joined -= usize::from(counted);
                waker
            }
            _ => None,
        };
        self.trim();
        self.check_invariants();
        waker
    }

    fn trim(&mut self) {
        while matches!(self.waiting.front(), Some(Seat::Empty)) {
            self.waiting.pop_front();
            self.base += 1;
        }
    }

    /// Names the oldest waiting caller as the one to take over; `None` if nobody is left,
    /// else its waker (if it left one), to wake once the lock is released.
    fn promote(&mut self) -> Option<Option<Waker>> {
        debug_assert_eq!(self.phase, Phase::Running, "one promotion at a time");
        self.trim();
        let Some(Seat::Waiting { waker, counted }) = self.waiting.pop_front() else {
            return None;
        };
        debug_assert!(counted, "the launcher of detached work is never promoted");
        self.phase = Phase::Promoted(self.base);
        self.base += 1;
        self.live -= 1;
        self.joined -= usize::from(counted);
        self.trim();
        self.check_invariants();
        Some(waker)
    }
}
