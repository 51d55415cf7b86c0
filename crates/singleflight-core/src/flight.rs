//! The part of a flight that its waiters share: the queue of waiting callers (oldest first,
//! for takeover) with the wakers of those that wait asynchronously, the condition variable
//! those that block sleep on, and the slot the outcome is handed out from.
//!
//! It is allocated only when a second caller joins a flight; a flight that nobody joins
//! lives entirely in its map slot.
//!
//! # Implementation
//!
//! ## States
//!
//! | state | where it is | what holds |
//! |---|---|---|
//! | **solo** | in its shard's table, no [`Flight`] allocated | a leader runs the work; nobody joined |
//! | **joined** | in the table, with a [`Flight`] | a leader runs the work; its queue has seats (some may have left) |
//! | **promoted** | in the table | the leader went away; the oldest waiter is named in `promoted` and runs its own work once it notices |
//! | **forgotten** | in the table, flagged | any of the three above, but new calls no longer find it |
//! | **published** | out of the table | `published` is set, the queue is empty, and the outcome (if anyone still waited) sits in the outcome slot |
//!
//! ## Transitions (one verb each)
//!
//! * **start**: none → solo, under the shard lock (`Group::register`).
//! * **join**: solo or joined → joined, under the shard lock, then this flight's lock
//!   ([`FlightState::join`]). Never after publish: a published flight is out of the table.
//! * **leave**: a waiter gives up ([`Flight::leave`]): before publish it empties its seat;
//!   after publish it gives up its claim on the outcome.
//! * **promote**: joined → promoted, when the leader is dropped under the takeover policy
//!   ([`FlightState::promote`]); **claim**: the promoted waiter becomes the leader
//!   ([`FlightState::claim`]), or passes the promotion on by being dropped.
//! * **forget**: sets the table slot's flag; nothing here changes.
//! * **publish**: solo, joined or promoted → published: the slot leaves the table first
//!   (so nobody can join), then the outcome is stored and the queue's wakers are woken
//!   ([`Flight::publish`]). A leader that goes away with nobody to promote publishes
//!   `LeaderDropped` (or, solo, just leaves the table).
//! * **receive**: a waiter of a published flight takes its copy ([`Flight::receive`]).
//!
//! ## Invariants (checked by `debug_assert`s)
//!
//! * `joined <= live <= waiting.len()`: `live` counts the occupied seats, `joined` the
//!   occupied seats of callers that joined (not the launcher of detached work).
//! * A promotion is pending only before publish; publishing empties the queue.
//! * After publish, `readers` (in the outcome slot) is the number of waiters that have yet to
//!   receive or leave; the one that brings it to zero takes the original instead of a clone.
//!
//! ## Locks and user code
//!
//! Lock order: a shard lock, then a flight's state lock, then its outcome lock; never the
//! reverse. The state lock guards [`FlightState`]; the outcome lock guards the outcome, its
//! reader count and (with `std`) the counts of blocked threads and of promotions. No user
//! code runs under the shard or state lock: wakers are cloned before locking and dropped or
//! woken after unlocking. The one place user code runs under a lock is the value's `Clone`
//! in [`Flight::receive_locked`], under the outcome lock held alone: `T` need only be
//! `Send`, so two threads must not clone from `&T` at once. That lock guards nothing user
//! code sees but the outcome, and a panicking clone leaves it consistent (the reader count
//! is settled before the clone starts); with `std` the panic is caught and resumed after
//! the lock is released, so the lock is never poisoned.
//!
//! A blocked thread sleeps on the flight's condition variable over the outcome lock: it
//! releases the lock while it sleeps and wakes holding it, so it takes its copy with no
//! other lock. Publishing notifies the sleepers with no lock held; a promotion, under the
//! shard lock it is made under.

use alloc::collections::VecDeque;
use core::task::Waker;

use crate::error::PanicMessage;
use crate::sync::Mutex;
use crate::types::FlightRef;
use crate::unwind;

/// How a flight ended, as its waiters see it.
pub(crate) enum Outcome<T> {
    Value(T),
    Panicked(PanicMessage),
    LeaderDropped,
}

/// The shared part of one flight (see the module docs for its states).
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
}

/// A joined caller's place in its flight's queue.
enum Seat {
    /// The caller left, or was promoted.
    Empty,
    /// The caller waits: with its task's waker once it has left one (a blocked thread
    /// sleeps on the flight's condition variable instead). `counted` is `false` for the
    /// launcher of detached work, which is its flight's leader and not one of its waiters.
    Waiting { waker: Option<Waker>, counted: bool },
}

/// The waiters' side of one flight. Tickets are handed out in join order; until the outcome
/// is published, `waiting[i]` is the seat of the caller holding ticket `base + i`.
pub(crate) struct FlightState {
    waiting: VecDeque<Seat>,
    base: u64,
    /// Occupied seats.
    live: usize,
    /// Occupied seats of callers that joined (what `Group::waiters` reports).
    joined: usize,
    /// Set at publish: whether a caller that joined still waited for the outcome (the
    /// leader's `shared` answer).
    shared: bool,
    /// The ticket of the waiter chosen to run the work after the leader went away, until
    /// that waiter claims it.
    promoted: Option<u64>,
    published: bool,
}

pub(crate) struct OutcomeSlot<T> {
    outcome: Option<Outcome<T>>,
    /// Waiters that have yet to receive the outcome or leave.
    readers: usize,
    /// Set at publish (if anyone waits), with the outcome.
    published: bool,
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
    Published(crate::sync::MutexGuard<'a, OutcomeSlot<T>>),
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
    /// Nothing yet; the seat holds a waker for this waiter's task (or none was asked for,
    /// or a blocking wait's deadline passed).
    Waiting,
    /// Nothing yet, and the seat holds no waker for the task that polled: it needs one.
    NeedsWaker,
}

/// The waiters of a published flight, woken when this is dropped: the async ones through
/// the wakers their seats held, the blocked ones by one `notify_all` (if any sleeps).
/// Dropped once the locks are released, and after the leader's observer hook, so that an
/// observer that counts flights has counted this one before any of its callers returns.
#[must_use = "the waiters sleep until woken"]
pub(crate) struct Wake<'a> {
    seats: VecDeque<Seat>,
    #[cfg(feature = "std")]
    sleepers: Option<&'a crate::sync::Condvar>,
    #[cfg(not(feature = "std"))]
    sleepers: core::marker::PhantomData<&'a ()>,
}

impl Drop for Wake<'_> {
    fn drop(&mut self) {
        for seat in core::mem::take(&mut self.seats) {
            if let Seat::Waiting {
                waker: Some(waker), ..
            } = seat
            {
                waker.wake();
            }
        }
        #[cfg(feature = "std")]
        if let Some(ready) = self.sleepers {
            ready.notify_all();
        }
    }
}

impl<T> Flight<T> {
    pub(crate) fn new(at: FlightRef) -> Self {
        Self {
            at,
            state: Mutex::new(FlightState::new()),
            #[cfg(feature = "std")]
            ready: crate::sync::Condvar::new(),
            outcome: Mutex::new(OutcomeSlot {
                outcome: None,
                readers: 0,
                published: false,
                #[cfg(feature = "std")]
                sleepers: 0,
                #[cfg(feature = "std")]
                promotions: 0,
            }),
        }
    }

    /// **join**: registers a new waiter, with `waker` (cloned before the call, so no waker
    /// code runs under the lock), and returns its ticket; or hands `waker` back if the
    /// flight was published meanwhile (the caller found it in the table but took its seat
    /// only after releasing the shard lock): that flight is over, and the caller looks again.
    pub(crate) fn join(&self, counted: bool, waker: Option<Waker>) -> Result<u64, Option<Waker>> {
        let mut state = self.state.lock();
        if state.published {
            return Err(waker);
        }
        Ok(state.join(counted, waker))
    }

    /// Callers that joined and still wait (the launcher of detached work not counted).
    pub(crate) fn joined(&self) -> usize {
        self.state.lock().joined
    }

    /// Whether the outcome went to a caller that joined this flight (`false` until it is
    /// published).
    pub(crate) fn shared(&self) -> bool {
        self.state.lock().shared
    }

    /// Looks for the outcome or a promotion of `ticket`. Failing both, it reports whether
    /// the seat's waker would wake the same task as `waker` (if one is given): if not, the
    /// caller clones `waker` with no lock held and hands it to [`install`](Self::install).
    pub(crate) fn check(&self, ticket: u64, waker: Option<&Waker>) -> Found {
        let mut state = self.state.lock();
        if state.published {
            return Found::Published;
        }
        if state.claim(ticket) {
            return Found::Promoted;
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
        if state.published {
            return (Found::Published, Some(waker));
        }
        if state.claim(ticket) {
            return (Found::Promoted, Some(waker));
        }
        (Found::Waiting, state.install(ticket, waker))
    }

    /// A waiter that holds ticket `ticket` stops waiting without receiving. Returns `true`
    /// if it was promoted and had not claimed it yet: the caller must then pass the
    /// promotion on ([`Group::abandon`](crate::Group)).
    pub(crate) fn leave(&self, ticket: u64) -> bool {
        let mut state = self.state.lock();
        if state.claim(ticket) {
            return true;
        }
        if state.published {
            drop(state);
            // Its claim on the outcome goes: the last claim takes the value, to drop here.
            let mut slot = self.outcome.lock();
            slot.readers -= 1;
            let last = if slot.readers == 0 {
                slot.outcome.take()
            } else {
                None
            };
            drop(slot);
            drop(last);
            return false;
        }
        let old = state.leave(ticket);
        drop(state);
        drop(old);
        false
    }

    /// Publishes `outcome` (the slot has left the table: nobody can join any more). Returns
    /// whether a caller that joined gets it (the leader's `shared` answer), and the waiters,
    /// woken when that is dropped. If nobody waits any more, `outcome` is dropped here, after
    /// the lock.
    pub(crate) fn publish(&self, outcome: Outcome<T>) -> (bool, Wake<'_>) {
        let mut state = self.state.lock();
        debug_assert!(!state.published, "a flight is published once");
        debug_assert!(
            state.promoted.is_none(),
            "a promotion is claimed before publish"
        );
        state.published = true;
        state.shared = state.joined > 0;
        let shared = state.shared;
        #[cfg(feature = "std")]
        let mut sleepers = false;
        let unused = if state.live > 0 {
            let mut slot = self.outcome.lock();
            slot.readers = state.live;
            slot.outcome = Some(outcome);
            slot.published = true;
            #[cfg(feature = "std")]
            {
                sleepers = slot.sleepers > 0;
            }
            None
        } else {
            Some(outcome)
        };
        let wake = Wake {
            seats: core::mem::take(&mut state.waiting),
            #[cfg(feature = "std")]
            sleepers: sleepers.then_some(&self.ready),
            #[cfg(not(feature = "std"))]
            sleepers: core::marker::PhantomData,
        };
        state.live = 0;
        state.joined = 0;
        drop(state);
        drop(unused);
        (shared, wake)
    }

    /// Ends the flight with no outcome if nobody waits for one: then the leader need not
    /// clone its value. Returns the leader's `shared` answer (`false`: nobody got the
    /// outcome) if it did end it; `None` if somebody waits.
    pub(crate) fn close_if_unwatched(&self) -> Option<bool> {
        let mut state = self.state.lock();
        if state.live > 0 {
            return None;
        }
        debug_assert!(!state.published, "a flight is published once");
        state.published = true;
        state.check_invariants();
        Some(false)
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
                self.ready.notify_all();
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
    /// or is asleep when the promoter wakes the sleepers.
    #[cfg(feature = "std")]
    pub(crate) fn block(
        &self,
        ticket: u64,
        deadline: Option<std::time::Instant>,
    ) -> Blocked<'_, T> {
        let mut seen = self.outcome.lock().promotions;
        loop {
            if self.state.lock().claim(ticket) {
                return Blocked::Promoted;
            }
            let mut slot = self.outcome.lock();
            loop {
                if slot.published {
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

impl<T: Clone> Flight<T> {
    /// Hands the published outcome to a waiter: a clone, or the original for the last one,
    /// so a flight clones its value once per waiter but one. Call it once per waiter, after
    /// [`check`](Self::check) found the flight published, and count the waiter as done
    /// first: if the value's `Clone` panics, the panic is this waiter's alone.
    pub(crate) fn receive(&self) -> Outcome<T> {
        Self::receive_locked(self.outcome.lock())
    }

    /// [`receive`](Self::receive), with the outcome lock already held.
    pub(crate) fn receive_locked(
        mut slot: crate::sync::MutexGuard<'_, OutcomeSlot<T>>,
    ) -> Outcome<T> {
        debug_assert!(slot.readers > 0, "every reader is counted at publish");
        slot.readers -= 1;
        if slot.readers == 0 {
            let outcome = slot.outcome.take();
            drop(slot);
            return outcome.expect("a published flight holds its outcome until its last reader");
        }
        let outcome = slot
            .outcome
            .as_ref()
            .expect("a published flight holds its outcome until its last reader");
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
    fn new() -> Self {
        Self {
            waiting: VecDeque::new(),
            base: 0,
            live: 0,
            joined: 0,
            shared: false,
            promoted: None,
            published: false,
        }
    }

    fn check_invariants(&self) {
        debug_assert!(self.joined <= self.live && self.live <= self.waiting.len());
        debug_assert!(!self.published || (self.waiting.is_empty() && self.promoted.is_none()));
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

    /// Puts `waker` in the seat of `ticket`; returns the waker it replaces.
    fn install(&mut self, ticket: u64, waker: Waker) -> Option<Waker> {
        match self.seat(ticket) {
            Some(Seat::Waiting { waker: seat, .. }) => seat.replace(waker),
            // Not waiting (left, or promoted and not yet claimed): nothing to wake.
            _ => Some(waker),
        }
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
        self.trim();
        let Some(Seat::Waiting { waker, counted }) = self.waiting.pop_front() else {
            return None;
        };
        debug_assert!(counted, "the launcher of detached work is never promoted");
        self.promoted = Some(self.base);
        self.base += 1;
        self.live -= 1;
        self.joined -= usize::from(counted);
        self.trim();
        self.check_invariants();
        Some(waker)
    }

    /// Claims the promotion if it names `ticket`.
    fn claim(&mut self, ticket: u64) -> bool {
        if self.promoted == Some(ticket) {
            self.promoted = None;
            true
        } else {
            false
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn at() -> FlightRef {
        FlightRef { hash: 0, id: 0 }
    }

    #[test]
    fn promotion_skips_departed_waiters_in_join_order() {
        let flight = Flight::<u8>::new(at());
        let a = flight.join(true, None).unwrap();
        let b = flight.join(true, None).unwrap();
        let c = flight.join(true, None).unwrap();
        assert!(!flight.leave(a));
        assert_eq!(flight.joined(), 2);
        assert!(flight.promote().is_some());
        assert!(matches!(flight.check(c, None), Found::Waiting));
        assert!(matches!(flight.check(b, None), Found::Promoted));
        assert_eq!(flight.joined(), 1);
        assert!(!flight.leave(c));
        assert!(flight.promote().is_none());
        assert_eq!(flight.joined(), 0);
    }

    #[test]
    fn the_last_receiver_takes_the_value_and_the_others_clone_it() {
        let flight = Flight::<alloc::string::String>::new(at());
        flight.join(true, None).unwrap();
        flight.join(true, None).unwrap();
        assert!(flight.publish(Outcome::Value("v".into())).0);
        assert!(matches!(flight.receive(), Outcome::Value(v) if v == "v"));
        assert!(flight.outcome.lock().outcome.is_some());
        assert!(matches!(flight.receive(), Outcome::Value(v) if v == "v"));
        assert!(flight.outcome.lock().outcome.is_none());
    }

    #[test]
    fn leaving_twice_counts_once() {
        let flight = Flight::<u8>::new(at());
        let a = flight.join(true, None).unwrap();
        let _b = flight.join(true, None).unwrap();
        flight.leave(a);
        flight.leave(a);
        assert_eq!(flight.joined(), 1);
    }

    #[test]
    fn with_nobody_left_publishing_keeps_no_outcome() {
        let flight = Flight::<u8>::new(at());
        let a = flight.join(true, None).unwrap();
        flight.leave(a);
        assert!(
            !flight.publish(Outcome::Value(1)).0,
            "the one who joined had left"
        );
        assert!(flight.outcome.lock().outcome.is_none());
    }

    #[test]
    fn the_launcher_of_detached_work_is_not_a_waiter() {
        let flight = Flight::<u8>::new(at());
        let launcher = flight.join(false, None).unwrap();
        assert_eq!(flight.joined(), 0);
        flight.join(true, None).unwrap();
        assert_eq!(flight.joined(), 1);
        assert!(!flight.shared(), "not before publish");
        assert!(flight.publish(Outcome::Value(1)).0);
        assert!(flight.shared());
        assert!(!flight.leave(launcher));
    }

    #[test]
    fn a_waiter_that_leaves_after_publish_gives_up_its_claim() {
        let flight = Flight::<u8>::new(at());
        let a = flight.join(true, None).unwrap();
        flight.join(true, None).unwrap();
        drop(flight.publish(Outcome::Value(1)));
        assert!(!flight.leave(a));
        assert_eq!(flight.outcome.lock().readers, 1);
        assert!(matches!(flight.receive(), Outcome::Value(1)));
        assert!(flight.outcome.lock().outcome.is_none());
    }

    struct Task;

    impl alloc::task::Wake for Task {
        fn wake(self: alloc::sync::Arc<Self>) {}
    }

    #[test]
    fn a_waker_is_swapped_in_and_the_old_one_handed_back() {
        let flight = Flight::<u8>::new(at());
        let a = flight.join(true, None).unwrap();
        let waker = Waker::from(alloc::sync::Arc::new(Task));
        let other = Waker::from(alloc::sync::Arc::new(Task));
        assert!(matches!(flight.check(a, Some(&waker)), Found::NeedsWaker));
        let (found, old) = flight.install(a, waker.clone());
        assert!(matches!(found, Found::Waiting) && old.is_none());
        assert!(matches!(flight.check(a, Some(&waker)), Found::Waiting));
        assert!(matches!(flight.check(a, Some(&other)), Found::NeedsWaker));
        let (_, old) = flight.install(a, other.clone());
        assert!(old.is_some_and(|old| old.will_wake(&waker)));
    }

    #[test]
    fn a_published_flight_takes_no_new_seat() {
        let flight = Flight::<u8>::new(at());
        assert_eq!(flight.close_if_unwatched(), Some(false));
        assert!(flight.join(true, None).is_err());
    }
}
