//! The leader: the caller that runs the work. Its duties live in a guard whose `Drop`
//! handles cancellation (takeover or failing the waiters).

use core::fmt;

use crate::error::PanicMessage;
use crate::group::GroupRef;
use crate::observer::Execution;
use crate::types::{FlightId, FlightRef, Role};
use crate::unwind::{self, Payload};
use crate::waiter::Waiter;

/// The caller that runs the work of a flight.
///
/// Finish it with [`complete`](Self::complete) (or [`panicked`](Self::panicked)); every
/// waiter then receives the outcome. Dropping it unfinished is a *leader cancellation*: per
/// the group's [`LeaderDropPolicy`](crate::LeaderDropPolicy), the oldest waiter is promoted
/// to run its own work, or every waiter gets [`Error::LeaderDropped`](crate::Error::LeaderDropped).
#[must_use = "dropping a leader cancels its flight"]
pub struct Leader<G: GroupRef> {
    group: G,
    at: FlightRef,
    started: u64,
    done: bool,
}

impl<G: GroupRef> Leader<G> {
    pub(crate) fn new(group: G, at: FlightRef, started: u64) -> Self {
        Self {
            group,
            at,
            started,
            done: false,
        }
    }

    pub(crate) fn group_ref(&self) -> &G {
        &self.group
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
        self.publish(value, Execution::Completed).0
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
        self.publish(value, Execution::Failed).0
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
        self.end_panicked(message, Execution::Panicked);
    }

    /// Ends the flight without a value: waiters receive [`Error::Panicked`](crate::Error::Panicked)
    /// with `message`, and observers see the execution end as `execution`.
    pub(crate) fn end_panicked(mut self, message: PanicMessage, execution: Execution) {
        self.done = true;
        self.group
            .group()
            .publish_panic(self.at, message, execution, self.started);
    }

    /// Registers one more waiter on this leader's own flight, for a caller whose work runs
    /// elsewhere (a detached call): it waits like any waiter, but it is not counted as one
    /// (by `waiters`, by observers, by the leader's `shared` answer): it already counted as
    /// the flight's execution.
    pub(crate) fn subscribe(&self) -> Waiter<G> {
        let (flight, ticket) = self.group.group().subscribe(self.at);
        Waiter::new_uncounted(self.group.clone(), flight, ticket)
    }

    /// **publish**: ends the flight with `value`, cloning it for the waiters; returns the
    /// value and whether anyone joined.
    #[inline]
    fn publish(mut self, value: G::Value, execution: Execution) -> (G::Value, bool)
    where
        G::Value: Clone,
    {
        self.done = true;
        self.group
            .group()
            .publish_kept(self.at, value, execution, self.started)
    }

    /// Ends the flight with `value` for the waiters alone: the leader keeps no copy, so
    /// nothing is cloned. For work whose own caller is gone or waits as a waiter (detached
    /// work), and for a leader that is unwinding and can't use a value.
    pub(crate) fn hand_over(mut self, value: G::Value, failed: fn(&G::Value) -> bool) {
        self.done = true;
        let execution = classify(&value, failed);
        self.group
            .group()
            .publish_owned(self.at, value, execution, self.started);
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
            Ok(value) => Ok(self.finish_classified(value, failed)),
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
    ) {
        let scope = self.scope();
        let result = unwind::catch(work);
        drop(scope);
        match result {
            Ok(value) => self.hand_over(value, failed),
            Err(payload) => self.panicked(unwind::message(&payload)),
        }
    }

    /// Completes the flight with `value`, as a failure if `failed` says so; returns the
    /// value and this caller's role.
    #[inline]
    pub(crate) fn finish_classified(
        self,
        value: G::Value,
        failed: fn(&G::Value) -> bool,
    ) -> (G::Value, Role)
    where
        G::Value: Clone,
    {
        let execution = classify(&value, failed);
        let (value, shared) = self.publish(value, execution);
        (value, Role::Leader { shared })
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
            crate::reentrancy::Scope::enter(self.group.group().address(), self.at.id)
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

impl<G: GroupRef> Drop for Leader<G> {
    #[inline]
    fn drop(&mut self) {
        if !self.done {
            self.abandon();
        }
    }
}

impl<G: GroupRef> Leader<G> {
    /// **abandon**: the leader went away unfinished. The group's state comes first, so it
    /// is consistent before any observer code runs.
    #[cold]
    #[inline(never)]
    fn abandon(&mut self) {
        let group = self.group.group();
        let ended = group.abandon(self.at);
        let started = self.started;
        group.observe_in_drop(|o| {
            o.execution_finished(started, Execution::Dropped);
            if ended {
                o.flight_finished();
            }
        });
    }
}

impl<G: GroupRef> fmt::Debug for Leader<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leader")
            .field("flight", &self.flight())
            .finish_non_exhaustive()
    }
}
