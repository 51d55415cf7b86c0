//! The leader: the caller that runs the work. Its duties live in a guard whose `Drop`
//! handles cancellation (takeover or failing the waiters).

use core::fmt;

use crate::error::PanicMessage;
use crate::flight::Outcome;
use crate::group::{FlightId, GroupRef};
use crate::observer::Execution;
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
    hash: u64,
    id: u64,
    started: u64,
    done: bool,
}

impl<G: GroupRef> Leader<G> {
    pub(crate) fn new(group: G, hash: u64, id: u64, started: u64) -> Self {
        Self {
            group,
            hash,
            id,
            started,
            done: false,
        }
    }

    /// The flight this caller leads.
    pub fn flight(&self) -> FlightId {
        FlightId(self.id)
    }

    /// Ends the flight with `value`: each waiter receives a clone, and `value` comes back to
    /// the leader. No clone is made when nobody waits.
    pub fn complete(self, value: G::Value) -> G::Value
    where
        G::Value: Clone,
    {
        self.settle(value, Execution::Completed)
    }

    /// Like [`complete`](Self::complete), for a value that stands for a failure (the `Err` of
    /// fallible work): waiters receive it all the same, and observers count an error.
    pub fn complete_failed(self, value: G::Value) -> G::Value
    where
        G::Value: Clone,
    {
        self.settle(value, Execution::Failed)
    }

    /// Ends the flight because the work panicked: each waiter receives
    /// [`Error::Panicked`](crate::Error::Panicked) with `message`. The key is not poisoned;
    /// the next call starts a new flight.
    pub fn panicked(self, message: PanicMessage) {
        self.end_panicked(message, Execution::Panicked);
    }

    /// Ends the flight without a value: waiters receive [`Error::Panicked`](crate::Error::Panicked)
    /// with `message`, and observers see the execution end as `execution`.
    pub(crate) fn end_panicked(mut self, message: PanicMessage, execution: Execution) {
        self.done = true;
        self.group.group().finish(
            self.hash,
            self.id,
            || Outcome::Panicked(message),
            execution,
            self.started,
        );
    }

    /// Registers one more waiter on this leader's own flight, for a caller whose work runs
    /// elsewhere (a detached call): it waits like any waiter, but observers do not count it
    /// as a hit, because it already counted as the flight's execution (a miss).
    pub(crate) fn subscribe(&self) -> Waiter<G> {
        let (shared, ticket) = self.group.group().subscribe(self.hash, self.id);
        Waiter::new_uncounted(self.group.clone(), shared, ticket)
    }

    #[inline]
    fn settle(mut self, value: G::Value, execution: Execution) -> G::Value
    where
        G::Value: Clone,
    {
        self.done = true;
        self.group.group().finish(
            self.hash,
            self.id,
            || Outcome::Value(value.clone()),
            execution,
            self.started,
        );
        value
    }

    /// Runs blocking `work` on the current thread and completes the flight with its result;
    /// `failed` tells whether a result is an error (for observers).
    ///
    /// # Panics
    ///
    /// If `work` panics, every waiter receives [`Error::Panicked`](crate::Error::Panicked)
    /// with the message, and then the original panic resumes here. (Without `std`, a panic
    /// cannot be caught: the guard is dropped while unwinding, which waiters see as a leader
    /// cancellation.)
    pub fn run(self, work: impl FnOnce() -> G::Value, failed: fn(&G::Value) -> bool) -> G::Value
    where
        G::Value: Clone,
    {
        #[cfg(feature = "std")]
        {
            match self.run_caught(work, failed) {
                Ok(value) => value,
                Err(payload) => std::panic::resume_unwind(payload),
            }
        }
        #[cfg(not(feature = "std"))]
        {
            let value = work();
            self.finish_classified(value, failed)
        }
    }

    /// Like [`run`](Self::run), but a panic of `work` is handed back (after every waiter got
    /// [`Error::Panicked`](crate::Error::Panicked)) instead of resumed.
    #[cfg(feature = "std")]
    pub(crate) fn run_caught(
        self,
        work: impl FnOnce() -> G::Value,
        failed: fn(&G::Value) -> bool,
    ) -> Result<G::Value, std::boxed::Box<dyn core::any::Any + Send>>
    where
        G::Value: Clone,
    {
        let scope = crate::reentrancy::Scope::enter(self.group.group().address(), self.id);
        let result = std::panic::catch_unwind(core::panic::AssertUnwindSafe(work));
        drop(scope);
        match result {
            Ok(value) => Ok(self.finish_classified(value, failed)),
            Err(payload) => {
                self.panicked(PanicMessage::from_payload(&*payload));
                Err(payload)
            }
        }
    }

    #[inline]
    pub(crate) fn finish_classified(
        self,
        value: G::Value,
        failed: fn(&G::Value) -> bool,
    ) -> G::Value
    where
        G::Value: Clone,
    {
        if failed(&value) {
            self.complete_failed(value)
        } else {
            self.complete(value)
        }
    }

    /// Polls the leader's work with panic capture and re-entrancy tracking.
    #[cfg(feature = "std")]
    #[inline]
    pub(crate) fn poll_work<F: core::future::Future<Output = G::Value>>(
        &self,
        work: core::pin::Pin<&mut F>,
        cx: &mut core::task::Context<'_>,
    ) -> Result<core::task::Poll<G::Value>, std::boxed::Box<dyn core::any::Any + Send>> {
        let _scope = crate::reentrancy::Scope::enter(self.group.group().address(), self.id);
        std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| work.poll(cx)))
    }
}

impl<G: GroupRef> Drop for Leader<G> {
    fn drop(&mut self) {
        if !self.done {
            let group = self.group.group();
            group.notify(|o| o.execution_finished(self.started, Execution::Dropped));
            group.abandon(self.hash, self.id);
        }
    }
}

impl<G: GroupRef> fmt::Debug for Leader<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leader")
            .field("flight", &self.flight())
            .finish_non_exhaustive()
    }
}
