//! The part of a flight that waiters share: the outcome slot, the queue of waiting callers
//! (oldest first, for takeover) with the wakers of those that wait asynchronously, and the
//! event that wakes those that block.
//!
//! It is allocated only when a second caller joins a flight; a flight that nobody joins
//! lives entirely in its map slot.

use alloc::collections::VecDeque;
use core::task::Waker;

use event_listener::Event;

use crate::error::PanicMessage;
use crate::sync::Mutex;

/// How a flight ended, as its waiters see it.
pub(crate) enum Outcome<T> {
    Value(T),
    Panicked(PanicMessage),
    LeaderDropped,
}

impl<T: Clone> Outcome<T> {
    fn duplicate(&self) -> Self {
        match self {
            Self::Value(value) => Self::Value(value.clone()),
            Self::Panicked(message) => Self::Panicked(message.clone()),
            Self::LeaderDropped => Self::LeaderDropped,
        }
    }
}

pub(crate) struct Shared<T> {
    /// The flight's key hash and id, which find its map slot: kept here rather than in
    /// every waiter, so that a waiting call stays small.
    pub(crate) hash: u64,
    pub(crate) id: u64,
    /// Wakes blocked waiters (`Waiter::wait`). Async waiters leave a [`Waker`] in their seat
    /// instead, which costs no allocation; nothing allocates here until a thread blocks.
    pub(crate) event: Event,
    pub(crate) state: Mutex<FlightState<T>>,
}

impl<T> Shared<T> {
    pub(crate) fn new(hash: u64, id: u64) -> Self {
        Self {
            hash,
            id,
            event: Event::new(),
            state: Mutex::new(FlightState::new()),
        }
    }
}

/// A joined caller's place in its flight's queue: the waker of a caller that waits (a no-op
/// one for a blocking caller, which listens to the flight's event instead), `None` once it
/// left or was promoted. One word pair per waiter, however large the herd.
type Seat = Option<Waker>;

/// The waiters' side of one flight. Tickets are handed out in join order; until the outcome
/// is published, `waiting[i]` is the seat of the caller holding ticket `base + i`. Publishing
/// empties the queue (its wakers are woken), since nobody can join or be promoted any more.
pub(crate) struct FlightState<T> {
    outcome: Option<Outcome<T>>,
    waiting: VecDeque<Seat>,
    base: u64,
    /// Callers that joined and have neither received the outcome, left, nor been promoted.
    live: usize,
    /// The ticket of the waiter chosen to run the work after the leader went away, until
    /// that waiter notices.
    promoted: Option<u64>,
}

impl<T> FlightState<T> {
    fn new() -> Self {
        Self {
            outcome: None,
            waiting: VecDeque::new(),
            base: 0,
            live: 0,
            promoted: None,
        }
    }

    /// Registers a new waiter and returns its ticket; an async caller leaves its task's
    /// `waker` at once, which saves it a second visit to this lock before it can sleep.
    pub(crate) fn join(&mut self, waker: Option<&Waker>) -> u64 {
        debug_assert!(self.outcome.is_none(), "nobody joins a published flight");
        let ticket = self.base + self.waiting.len() as u64;
        self.waiting
            .push_back(Some(waker.unwrap_or(Waker::noop()).clone()));
        self.live += 1;
        ticket
    }

    /// Callers still waiting for this flight.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Unregisters a waiter that stops waiting without an outcome (or, once the outcome is
    /// published, with it). Each caller leaves at most once.
    pub(crate) fn leave(&mut self, ticket: u64) {
        if self.outcome.is_some() {
            // The queue is gone: a caller that is still counted just stops being counted.
            self.live -= 1;
            return;
        }
        if let Some(slot) = ticket
            .checked_sub(self.base)
            .and_then(|i| self.waiting.get_mut(i as usize))
        {
            if slot.take().is_some() {
                self.live -= 1;
            }
        }
        self.trim();
    }

    /// Leaves `waker` in the seat of `ticket`, to be woken when the outcome or a promotion
    /// arrives. Call it under the same lock that found neither, so no wake-up is lost.
    pub(crate) fn register(&mut self, ticket: u64, waker: &Waker) {
        if let Some(Some(seat)) = ticket
            .checked_sub(self.base)
            .and_then(|i| self.waiting.get_mut(i as usize))
        {
            if !seat.will_wake(waker) {
                seat.clone_from(waker);
            }
        }
    }

    fn trim(&mut self) {
        while matches!(self.waiting.front(), Some(None)) {
            self.waiting.pop_front();
            self.base += 1;
        }
    }

    /// Chooses the oldest waiting caller to take over the work; `None` if nobody is left, else
    /// its waker, to wake once the lock is released.
    pub(crate) fn promote_oldest(&mut self) -> Option<Waker> {
        self.trim();
        let Some(Some(waker)) = self.waiting.pop_front() else {
            return None;
        };
        self.promoted = Some(self.base);
        self.base += 1;
        self.live -= 1;
        self.trim();
        Some(waker)
    }

    /// Claims the promotion if it names `ticket`.
    pub(crate) fn take_promotion(&mut self, ticket: u64) -> bool {
        if self.promoted == Some(ticket) {
            self.promoted = None;
            true
        } else {
            false
        }
    }

    #[cfg(test)]
    pub(crate) fn is_promoted(&self, ticket: u64) -> bool {
        self.promoted == Some(ticket)
    }

    /// Publishes the outcome for whoever still waits, and hands back the queue, whose wakers
    /// are to be woken once the lock is released (see [`Wakers::wake`]). With nobody waiting,
    /// `outcome` is never called: a value is not cloned for no one.
    pub(crate) fn publish(&mut self, outcome: impl FnOnce() -> Outcome<T>) -> Wakers {
        debug_assert!(self.outcome.is_none(), "a flight has one outcome");
        if self.live == 0 {
            return Wakers(VecDeque::new());
        }
        self.outcome = Some(outcome());
        Wakers(core::mem::take(&mut self.waiting))
    }

    #[cfg(test)]
    pub(crate) fn has_outcome(&self) -> bool {
        self.outcome.is_some()
    }
}

/// The queue of a published flight: its wakers are woken outside the lock, so that none of
/// the waiters wakes up only to wait for it.
#[must_use = "the waiters sleep until woken"]
pub(crate) struct Wakers(VecDeque<Seat>);

impl Wakers {
    pub(crate) fn wake(self) {
        self.0.into_iter().flatten().for_each(Waker::wake);
    }
}

impl<T: Clone> FlightState<T> {
    /// Hands the outcome to a waiter: a clone, or the original for the last waiter, so a
    /// flight clones its value once per waiter and no more.
    pub(crate) fn receive(&mut self) -> Option<Outcome<T>> {
        self.outcome.as_ref()?;
        self.live -= 1;
        if self.live == 0 {
            self.outcome.take()
        } else {
            self.outcome.as_ref().map(Outcome::duplicate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_skips_departed_waiters_in_join_order() {
        let mut state = FlightState::<u8>::new();
        let a = state.join(None);
        let b = state.join(None);
        let c = state.join(None);
        state.leave(a);
        assert_eq!(state.live(), 2);
        assert!(state.promote_oldest().is_some());
        assert!(state.is_promoted(b));
        assert!(!state.take_promotion(c));
        assert!(state.take_promotion(b));
        assert_eq!(state.live(), 1);
        state.leave(c);
        assert!(state.promote_oldest().is_none());
        assert_eq!(state.live(), 0);
    }

    #[test]
    fn the_last_receiver_takes_the_value_and_the_others_clone_it() {
        let mut state = FlightState::<alloc::string::String>::new();
        state.join(None);
        state.join(None);
        state.publish(|| Outcome::Value("v".into())).wake();
        assert!(matches!(state.receive(), Some(Outcome::Value(v)) if v == "v"));
        assert!(state.has_outcome());
        assert!(matches!(state.receive(), Some(Outcome::Value(v)) if v == "v"));
        assert!(!state.has_outcome());
    }

    #[test]
    fn leaving_twice_counts_once() {
        let mut state = FlightState::<u8>::new();
        let a = state.join(None);
        let _b = state.join(None);
        state.leave(a);
        state.leave(a);
        assert_eq!(state.live(), 1);
    }

    #[test]
    fn with_nobody_left_publishing_makes_no_outcome() {
        let mut state = FlightState::<u8>::new();
        let a = state.join(None);
        state.leave(a);
        let wakers = state.publish(|| unreachable!("nobody waits for a clone"));
        assert!(wakers.0.is_empty());
        assert!(!state.has_outcome());
    }

    #[test]
    fn publishing_hands_back_the_queue_and_leaving_still_counts() {
        let mut state = FlightState::<u8>::new();
        let a = state.join(Some(Waker::noop()));
        state.join(None);
        let wakers = state.publish(|| Outcome::Value(1));
        assert_eq!(wakers.0.len(), 2);
        assert!(state.waiting.is_empty());
        wakers.wake();
        state.leave(a);
        assert_eq!(state.live(), 1);
        assert!(matches!(state.receive(), Some(Outcome::Value(1))));
        assert!(!state.has_outcome());
    }
}
