//! The leader: the caller that runs the work. A thin guard over the one transition it owes
//! its flight, **end** (see [`flight`](crate::flight)): its consuming methods end the flight
//! with an outcome, and its `Drop` ends it as a dropped leader's (takeover or failing the
//! waiters).

use core::fmt;

use crate::error::PanicMessage;
use crate::flight::{Ended, Ending, Shared};
use crate::group::{Group, GroupRef};
use crate::observer::Execution;
use crate::types::{FlightId, FlightRef, Role};
use crate::unwind::{self, Payload};

/// The caller that runs the work of a flight.
///
/// Finish it with [`complete`](Self::complete) (or [`panicked`](Self::panicked)); every
/// waiter then receives the outcome. Dropping it unfinished is a *leader cancellation*: per
/// the group's [`LeaderDropPolicy`](crate::LeaderDropPolicy), the oldest waiter is promoted
/// to run its own work, or every waiter gets [`Error::LeaderDropped`](crate::Error::LeaderDropped).
#[must_use = "dropping a leader cancels its flight"]
pub struct Leader<G: GroupRef> {
    /// The group, until the flight is ended: taken by the one transition this guard makes.
    group: Option<G>,
    at: FlightRef,
    /// The observer's token for this execution (see `Observer::execution_started`).
    started: u64,
}

impl<G: GroupRef> Leader<G> {
    pub(crate) fn new(group: G, at: FlightRef) -> Self {
        Self {
            group: Some(group),
            at,
            started: 0,
        }
    }

    /// A guard for a flight whose `leader_started` hook already ran and gave `started`.
    #[inline]
    pub(crate) fn started(group: G, at: FlightRef, started: u64) -> Self {
        Self {
            group: Some(group),
            at,
            started,
        }
    }

    /// The handle to the group.
    pub(crate) fn group_ref(&self) -> &G {
        self.group
            .as_ref()
            .expect("a leader holds its group until it ends its flight")
    }

    pub(crate) fn group(&self) -> &Group<G::Key, G::Value, G::Hasher> {
        self.group_ref().group()
    }

    /// Where this leader's flight is.
    pub(crate) fn at(&self) -> FlightRef {
        self.at
    }

    /// The same leader, holding another handle to its group (an `Arc` of the group this
    /// `&Group` leader borrows, so that a refresh's leader can move to another thread).
    #[cfg(feature = "std")]
    pub(crate) fn rebind<H: GroupRef<Key = G::Key, Value = G::Value, Hasher = G::Hasher>>(
        mut self,
        group: H,
    ) -> Leader<H> {
        debug_assert!(
            core::ptr::eq(self.group(), group.group()),
            "a leader is rebound to its own group"
        );
        // Taken: this guard's `Drop` then does nothing, and the new one owes the end.
        self.group = None;
        Leader {
            group: Some(group),
            at: self.at,
            started: self.started,
        }
    }

    /// **end** for a leader that never ran the work: another flight stored the key's value
    /// between this caller's look-up and its registration, and `value`, a copy of it, goes
    /// to any waiter that joined. Nothing is kept (the value is stored already), and the
    /// observer hears of no execution: the caller counts as reused.
    #[cold]
    pub(crate) fn end_reused(mut self, value: G::Value) {
        let Some(group_ref) = self.group.take() else {
            unreachable!("a leader ends its flight once")
        };
        let group = group_ref.group();
        let policy = group.leader_drop_policy();
        // Dropping what the flight's end hands back stores the value for any waiter and
        // wakes it (`Shared`'s `Drop`), or drops the slot if nobody joined.
        drop(
            group
                .flights()
                .end(self.at, Ending::HandedOver(value), policy),
        );
    }

    /// Keeps the observer's token for this execution (see `Observer::execution_started`).
    pub(crate) fn set_started(&mut self, started: u64) {
        self.started = started;
    }

    /// The flight this caller leads.
    pub fn flight(&self) -> FlightId {
        self.at.id()
    }

    /// Ends the flight with `value`: each waiter receives a clone, and `value` comes back to
    /// the leader. No clone is made when nobody waits.
    ///
    /// # Panics
    ///
    /// If `value`'s `Clone` panics (the one clone made here, with no lock held, when
    /// somebody waits), or the observer's [`leader_finished`](crate::Observer::leader_finished)
    /// does. Either way the waiters get their outcome first (the original value, if the
    /// clone panicked), and the key is free.
    #[inline]
    pub fn complete(self, value: G::Value) -> G::Value
    where
        G::Value: Clone,
    {
        self.keep(value, |_| false).0
    }

    /// Like [`complete`](Self::complete), for a value that stands for a failure (the `Err` of
    /// fallible work): waiters receive it all the same, and observers count an error.
    ///
    /// # Panics
    ///
    /// As [`complete`](Self::complete).
    pub fn complete_failed(self, value: G::Value) -> G::Value
    where
        G::Value: Clone,
    {
        self.keep(value, |_| true).0
    }

    /// Ends the flight because the work panicked: each waiter receives
    /// [`Error::Panicked`](crate::Error::Panicked) with `message`. The key is not poisoned;
    /// the next call starts a new flight.
    ///
    /// # Panics
    ///
    /// If the observer's [`leader_finished`](crate::Observer::leader_finished) panics, after
    /// the waiters got their outcome.
    pub fn panicked(self, message: PanicMessage) {
        self.end(Ending::Panicked(message), Execution::Panicked);
    }

    /// Ends the flight with `value` for the waiters alone: the leader keeps no copy, so
    /// nothing is cloned for it. For work whose own caller is gone or waits as a waiter
    /// (detached work), and for a leader that is unwinding and can't use a value.
    ///
    /// With a reuse window the value is kept for later calls first; a panic of its `Clone`
    /// on the way is discarded (nobody here has a call to panic), and the value not kept.
    pub(crate) fn hand_over(self, value: G::Value, failed: fn(&G::Value) -> bool)
    where
        G::Value: Clone,
    {
        let execution = classify(&value, failed);
        let kept = self.keep_reusable(&value, execution);
        let group = self.group_ref().clone();
        let at = self.at;
        self.end(Ending::HandedOver(value), execution);
        if let Err(None) = kept {
            let group = group.group();
            group.observe_in_drop(|o| o.refresh_failed(&group.info(at)));
        }
    }

    /// With a reuse window, keeps a copy of the flight's outcome for later calls (if the
    /// window's policy reuses it), before the flight ends, so that no call finds neither
    /// the flight nor the value. `Ok(())` when nothing is left to do; otherwise the panic
    /// of the value's `Clone` (or of the error policy), to resume once the flight has
    /// ended, or `Err(None)` if this ended a refresh that failed, for the observer.
    #[inline]
    fn keep_reusable(&self, value: &G::Value, execution: Execution) -> Result<(), Option<Payload>>
    where
        G::Value: Clone,
    {
        match self.group().reuse() {
            None => Ok(()),
            Some(_) => self.store_reusable(value, execution),
        }
    }

    #[inline(never)]
    fn store_reusable(&self, value: &G::Value, execution: Execution) -> Result<(), Option<Payload>>
    where
        G::Value: Clone,
    {
        let Some(reuse) = self.group().reuse() else {
            return Ok(());
        };
        let failed = execution == Execution::Failed;
        let (publish, caught) = match unwind::catch(|| reuse.prepare(value, failed)) {
            Ok(publish) => (publish, None),
            Err(payload) => (None, Some(payload)),
        };
        let ended = reuse.store(self.at, publish);
        match (caught, ended) {
            (Some(payload), _) => Err(Some(payload)),
            (None, crate::reuse::Ended::RefreshFailed) => Err(None),
            (None, crate::reuse::Ended::Done) => Ok(()),
        }
    }

    /// Ends the flight with `value`, as a failure if `failed` says so, keeping a copy:
    /// returns it and whether anyone shared it (this caller's role is `Leader { shared }`).
    /// A `bool` rather than the `Role`: the caller writes the role where it keeps it, and a
    /// 16-byte `Role` made here would be copied there through memory, right after its
    /// narrower fields were stored (a store-forwarding stall on every uncontended call).
    #[inline(always)]
    pub(crate) fn keep(self, value: G::Value, failed: fn(&G::Value) -> bool) -> (G::Value, bool)
    where
        G::Value: Clone,
    {
        let execution = classify(&value, failed);
        if self
            .group
            .as_ref()
            .is_some_and(|g| g.group().reuse().is_some())
        {
            return self.keep_reusably(value, execution);
        }
        self.keep_classified(value, execution)
    }

    /// [`keep`](Self::keep) for a group with a reuse window: the outcome is kept for later
    /// calls first (see [`keep_reusable`](Self::keep_reusable)).
    #[inline(never)]
    fn keep_reusably(self, value: G::Value, execution: Execution) -> (G::Value, bool)
    where
        G::Value: Clone,
    {
        let kept = self.keep_reusable(&value, execution);
        let group = self.group_ref().clone();
        let at = self.at;
        let ended = self.keep_classified(value, execution);
        match kept {
            Ok(()) => {}
            Err(Some(payload)) => unwind::resume(payload),
            Err(None) => {
                let group = group.group();
                group.observe_in_drop(|o| o.refresh_failed(&group.info(at)));
            }
        }
        ended
    }

    /// [`keep`](Self::keep) once the outcome is classified.
    #[inline]
    fn keep_classified(self, value: G::Value, execution: Execution) -> (G::Value, bool)
    where
        G::Value: Clone,
    {
        let (copy, shared) = self.end_with(Ending::Kept(value), execution, |ended| {
            // The leader's copy comes first, before any waiter's: user code, under no lock.
            // If the clone panics, the waiters get the original (stored when the ending is
            // dropped), and only then does the panic go on.
            match ended.take_own() {
                Some(value) => Some(Ok(value)),
                None => ended
                    .pending_value()
                    .map(|value| unwind::catch(|| value.clone())),
            }
        });
        match copy {
            Some(Ok(value)) => (value, shared),
            Some(Err(payload)) => unwind::resume(payload),
            None => unreachable!("a leader that keeps its value gets a copy"),
        }
    }

    /// **end**: the one transition of a leader, made once, with how the flight ends as data
    /// (a dropped leader's `Drop` makes it with [`Ending::Dropped`]). Returns the leader's
    /// `shared` answer.
    ///
    /// # Panics
    ///
    /// If an observer hook panics, after the waiters are woken.
    pub(crate) fn end(self, ending: Ending<G::Value>, execution: Execution) -> bool {
        self.end_with(ending, execution, |_| None).1
    }

    /// [`end`](Self::end), and `copy` takes the leader's copy of its value (if it keeps one)
    /// from the ended flight before its outcome is stored for the waiters. The flight's
    /// state comes first; then the observer hears of it; then the waiters are woken (a
    /// dropped leader's, before the observer: it never ran the work's hooks).
    #[inline]
    fn end_with(
        mut self,
        ending: Ending<G::Value>,
        execution: Execution,
        copy: impl FnOnce(&mut Shared<G::Key, G::Value>) -> Option<Result<G::Value, Payload>>,
    ) -> (Option<Result<G::Value, Payload>>, bool) {
        let Some(group_ref) = self.group.take() else {
            unreachable!("a leader ends its flight once")
        };
        let group = group_ref.group();
        let dropped = matches!(ending, Ending::Dropped);
        // With a reuse window: an ending with no value may leave a tracked entry to clear.
        let abandons =
            group.reuse().is_some() && matches!(ending, Ending::Dropped | Ending::Panicked(_));
        let ended = group
            .flights()
            .end(self.at, ending, group.leader_drop_policy());
        if abandons && ended.over() {
            abandon_reusable(group, self.at);
        }
        let started = self.started;
        let ended = match ended {
            Ended::Alone { own, slot } => {
                // Nobody joined (every uncontended call): no outcome to store, nobody to
                // wake, no clone, so nothing can panic before the observer hears of it.
                if dropped {
                    group.observe_in_drop(|o| {
                        let info = group.info(self.at);
                        o.execution_finished(&info, started, Execution::Dropped);
                        o.flight_finished(&info);
                    });
                } else {
                    group.observe_in_drop(|o| {
                        o.leader_finished(&group.info(self.at), started, execution)
                    });
                }
                drop(slot);
                return (own.map(Ok), false);
            }
            Ended::Shared(ended) => ended,
        };
        if dropped {
            let over = ended.over;
            drop(ended);
            group.observe_in_drop(|o| {
                let info = group.info(self.at);
                o.execution_finished(&info, started, Execution::Dropped);
                if over {
                    o.flight_finished(&info);
                }
            });
            return (None, false);
        }
        let mut told = Told {
            group,
            at: self.at,
            ended,
            started,
            execution,
        };
        let copy = copy(&mut told.ended);
        let shared = told.publish();
        drop(told);
        (copy, shared)
    }

    /// Runs blocking `work` on the current thread and completes the flight with its result;
    /// `failed` tells whether a result is an error (for observers).
    ///
    /// # Panics
    ///
    /// If `work` panics, every waiter receives [`Error::Panicked`](crate::Error::Panicked)
    /// with the message, and then the original panic resumes here. (Without `std`, a panic
    /// cannot be caught: the guard is dropped while unwinding, which waiters see as a leader
    /// cancellation.) Also as [`complete`](Self::complete).
    #[inline]
    pub fn run(self, work: impl FnOnce() -> G::Value, failed: fn(&G::Value) -> bool) -> G::Value
    where
        G::Value: Clone,
    {
        self.run_with_role(work, failed).0
    }

    /// Like [`run`](Self::run), and also tells this caller's [`Role`]: a leader, shared if
    /// anyone joined the flight.
    ///
    /// # Panics
    ///
    /// As [`run`](Self::run).
    #[inline]
    pub fn run_with_role(
        self,
        work: impl FnOnce() -> G::Value,
        failed: fn(&G::Value) -> bool,
    ) -> (G::Value, Role)
    where
        G::Value: Clone,
    {
        match self.run_caught(work, failed) {
            Ok(done) => done,
            Err(payload) => unwind::resume(payload),
        }
    }

    /// Like [`run_with_role`](Self::run_with_role), but a panic of `work` is handed back
    /// (after every waiter got [`Error::Panicked`](crate::Error::Panicked)) instead of resumed.
    #[inline]
    pub(crate) fn run_caught(
        self,
        work: impl FnOnce() -> G::Value,
        failed: fn(&G::Value) -> bool,
    ) -> Result<(G::Value, Role), Payload>
    where
        G::Value: Clone,
    {
        let scope = self.scope();
        let result = unwind::catch(work);
        drop(scope);
        match result {
            Ok(value) => {
                let (value, shared) = self.keep(value, failed);
                Ok((value, Role::Leader { shared }))
            }
            Err(payload) => {
                self.panicked(unwind::message(&payload));
                Err(payload)
            }
        }
    }

    /// Runs blocking `work` here and hands its value to the waiters without keeping a copy
    /// (detached blocking work, whose callers all wait as waiters). A panic of `work` is
    /// handed to the waiters as [`Error::Panicked`](crate::Error::Panicked) and goes no
    /// further (with `std`).
    pub(crate) fn run_handing_over(
        self,
        work: impl FnOnce() -> G::Value,
        failed: fn(&G::Value) -> bool,
    ) where
        G::Value: Clone,
    {
        let scope = self.scope();
        let result = unwind::catch(work);
        drop(scope);
        match result {
            Ok(value) => self.hand_over(value, failed),
            Err(payload) => self.panicked(unwind::message(&payload)),
        }
    }

    /// Polls the leader's work with panic capture and re-entrancy tracking.
    #[inline]
    pub(crate) fn poll_work<F: core::future::Future<Output = G::Value>>(
        &self,
        work: core::pin::Pin<&mut F>,
        cx: &mut core::task::Context<'_>,
    ) -> Result<core::task::Poll<G::Value>, Payload> {
        let _scope = self.scope();
        unwind::catch(|| work.poll(cx))
    }

    /// Marks this thread as running the flight's work until the result is dropped, for
    /// re-entrancy detection (`std` only: without it nothing is tracked).
    #[inline]
    fn scope(&self) -> impl Sized {
        #[cfg(feature = "std")]
        {
            crate::reentrancy::Scope::enter(self.group().address(), self.at.id)
        }
    }
}

/// **abandon**: a flight with a reuse window ended with nothing to keep (a panic, a
/// dropped leader with nobody to take over); the observer hears if that was a refresh.
#[cold]
#[inline(never)]
pub(crate) fn abandon_reusable<K, T, S>(group: &Group<K, T, S>, at: FlightRef) {
    if let Some(reuse) = group.reuse() {
        if reuse.store(at, None) == crate::reuse::Ended::RefreshFailed {
            group.observe_in_drop(|o| o.refresh_failed(&group.info(at)));
        }
    }
}

#[inline]
fn classify<T>(value: &T, failed: fn(&T) -> bool) -> Execution {
    if failed(value) {
        Execution::Failed
    } else {
        Execution::Completed
    }
}

/// The end of a leader's flight, still to be made known: dropping it stores the outcome for
/// the waiters (if that has not happened yet), tells the observer, then wakes the waiters.
/// A guard, so that all of it happens even if the leader's clone of its value panics first.
struct Told<'g, K, T, S> {
    group: &'g Group<K, T, S>,
    at: FlightRef,
    ended: Shared<K, T>,
    started: u64,
    execution: Execution,
}

impl<K, T, S> Told<'_, K, T, S> {
    /// Stores the outcome for the waiters (once), marked as a failure if it is one;
    /// returns the leader's `shared` answer.
    fn publish(&mut self) -> bool {
        if self.execution == Execution::Failed {
            self.ended.mark_failed();
        }
        self.ended.publish()
    }
}

impl<K, T, S> Drop for Told<'_, K, T, S> {
    fn drop(&mut self) {
        self.publish();
        let group = self.group;
        let (started, execution) = (self.started, self.execution);
        // While unwinding (the leader's clone panicked, without `std` to catch it), a hook
        // that panics too would abort: it is discarded instead.
        let hook = if unwind::unwinding() {
            group.observe_in_drop(|o| o.leader_finished(&group.info(self.at), started, execution));
            Ok(())
        } else {
            group.observe_caught(|o| o.leader_finished(&group.info(self.at), started, execution))
        };
        self.ended.wake();
        if let Err(payload) = hook {
            unwind::resume(payload);
        }
    }
}

impl<G: GroupRef> Drop for Leader<G> {
    /// A leader that goes away unfinished ends its flight as a dropped leader's: the group's
    /// [`LeaderDropPolicy`](crate::LeaderDropPolicy) promotes a waiter or fails them all.
    #[inline]
    fn drop(&mut self) {
        if self.group.is_some() {
            self.drop_unfinished();
        }
    }
}

impl<G: GroupRef> Leader<G> {
    #[cold]
    #[inline(never)]
    fn drop_unfinished(&mut self) {
        let leader = Self {
            group: self.group.take(),
            at: self.at,
            started: self.started,
        };
        leader.end(Ending::Dropped, Execution::Dropped);
    }
}

impl<G: GroupRef> fmt::Debug for Leader<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leader")
            .field("flight", &self.flight())
            .finish_non_exhaustive()
    }
}
