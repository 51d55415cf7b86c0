//! The part of a flight that waiters share: the outcome slot, the queue of waiting callers
//! (oldest first, for takeover) with the wakers of those that wait asynchronously, and the
//! event that wakes those that block.
//!
//! It is allocated only when a second caller joins a flight; a flight that nobody joins
//! lives entirely in its map slot.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
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
    /// Wakes blocked waiters (`Waiter::wait`). Async waiters leave a [`Waker`] in their seat
    /// instead, which costs no allocation; nothing allocates here until a thread blocks.
    pub(crate) event: Event,
    pub(crate) state: Mutex<FlightState<T>>,
}

impl<T> Shared<T> {
    pub(crate) fn new() -> Self {
        Self {
            event: Event::new(),
            state: Mutex::new(FlightState::new()),
        }
    }
}

/// A joined caller's place in its flight's queue.
enum Seat {
    /// It waits; an async caller that was polled leaves its task's waker here.
    Waiting(Option<Waker>),
    /// It received the outcome, left, or was promoted.
    Left,
}

/// The waiters' side of one flight. Tickets are handed out in join order; `waiting[i]` is
/// the seat of the caller holding ticket `base + i`.
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

    /// Registers a new waiter and returns its ticket.
    pub(crate) fn join(&mut self) -> u64 {
        let ticket = self.base + self.waiting.len() as u64;
        self.waiting.push_back(Seat::Waiting(None));
        self.live += 1;
        ticket
    }

    /// Callers still waiting for this flight.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Unregisters a waiter that stops waiting without an outcome.
    pub(crate) fn leave(&mut self, ticket: u64) {
        if let Some(slot) = ticket
            .checked_sub(self.base)
            .and_then(|i| self.waiting.get_mut(i as usize))
        {
            if let Seat::Waiting(_) = core::mem::replace(slot, Seat::Left) {
                self.live -= 1;
            }
        }
        self.trim();
    }

    /// Leaves `waker` in the seat of `ticket`, to be woken when the outcome or a promotion
    /// arrives. Call it under the same lock that found neither, so no wake-up is lost.
    pub(crate) fn register(&mut self, ticket: u64, waker: &Waker) {
        if let Some(Seat::Waiting(seat)) = ticket
            .checked_sub(self.base)
            .and_then(|i| self.waiting.get_mut(i as usize))
        {
            match seat {
                Some(registered) if registered.will_wake(waker) => {}
                _ => *seat = Some(waker.clone()),
            }
        }
    }

    fn trim(&mut self) {
        while matches!(self.waiting.front(), Some(Seat::Left)) {
            self.waiting.pop_front();
            self.base += 1;
        }
    }

    /// Chooses the oldest waiting caller to take over the work; `None` if nobody is left, else
    /// its waker (if it was polled), to wake once the lock is released.
    pub(crate) fn promote_oldest(&mut self) -> Option<Option<Waker>> {
        self.trim();
        let Some(Seat::Waiting(waker)) = self.waiting.pop_front() else {
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

    /// Publishes the outcome for whoever still waits, and returns the wakers of the waiters
    /// that were polled, to wake once the lock is released (see [`wake_all`]).
    pub(crate) fn publish(&mut self, outcome: Outcome<T>) -> Vec<Waker> {
        debug_assert!(self.outcome.is_none(), "a flight has one outcome");
        self.outcome = Some(outcome);
        self.waiting
            .iter_mut()
            .filter_map(|seat| match seat {
                Seat::Waiting(waker) => waker.take(),
                Seat::Left => None,
            })
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn has_outcome(&self) -> bool {
        self.outcome.is_some()
    }
}

/// Wakes the waiters that [`FlightState::publish`] or [`FlightState::promote_oldest`]
/// returned, outside the lock, so that none of them wakes up only to wait for it.
pub(crate) fn wake_all(wakers: impl IntoIterator<Item = Waker>) {
    wakers.into_iter().for_each(Waker::wake);
}

impl<T: Clone> FlightState<T> {
    /// Hands the outcome to the waiter holding `ticket`: a clone, or the original for the
    /// last waiter, so a flight clones its value once per waiter and no more.
    pub(crate) fn receive(&mut self, ticket: u64) -> Option<Outcome<T>> {
        self.outcome.as_ref()?;
        self.leave(ticket);
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
        let a = state.join();
        let b = state.join();
        let c = state.join();
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
        let a = state.join();
        let b = state.join();
        assert!(state.publish(Outcome::Value("v".into())).is_empty());
        assert!(matches!(state.receive(a), Some(Outcome::Value(v)) if v == "v"));
        assert!(state.has_outcome());
        assert!(matches!(state.receive(b), Some(Outcome::Value(v)) if v == "v"));
        assert!(!state.has_outcome());
    }

    #[test]
    fn leaving_twice_counts_once() {
        let mut state = FlightState::<u8>::new();
        let a = state.join();
        let _b = state.join();
        state.leave(a);
        state.leave(a);
        assert_eq!(state.live(), 1);
    }
}
