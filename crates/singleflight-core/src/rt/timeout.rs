//! A per-call timeout, over any call future and any sleep future.

use alloc::sync::Arc;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use pin_project_lite::pin_project;

use core::time::Duration;

use super::Timer;
use crate::error::Error;
use crate::future::CallFuture;
use crate::observer::Observer;
use crate::types::Role;

pin_project! {
    /// A call that gives up when its sleep completes first, resolving to [`Error::Timeout`].
    ///
    /// What a timeout ends depends on the caller's role at that moment (DESIGN rule 10):
    ///
    /// * a **waiter** leaves its flight, which goes on for everyone else; later callers still
    ///   join it;
    /// * a **leader** is cancelled: its work is dropped and the group's
    ///   [`LeaderDropPolicy`](crate::LeaderDropPolicy) applies (takeover or failing waiters);
    /// * the caller of **detached** work stops waiting; the work goes on in its task.
    ///
    /// In each case the group's observer sees [`Observer::timeout`], after the hooks of the
    /// departure itself. An outcome that is ready when the timer fires wins: the call is
    /// polled before the timer.
    ///
    /// The clock starts at the first poll, when the call registers, not when the future is
    /// made: a timed call built ahead of time (or outside the runtime, which tokio's timer
    /// would reject) waits its full duration once awaited.
    ///
    /// # Cancel safety
    ///
    /// As the wrapped call: dropping a `Timeout` drops the call.
    ///
    /// # Panics
    ///
    /// Polling after completion panics, and so does whatever the wrapped call panics with.
    #[must_use = "futures do nothing unless polled"]
    pub struct Timeout<C, Tm: Timer> {
        #[pin]
        call: Option<C>,
        timer: Tm,
        duration: Duration,
        // Made at the first poll.
        #[pin]
        sleep: Option<Tm::Sleep>,
        observer: Option<Arc<dyn Observer>>,
        role: Option<Role>,
    }
}

impl<C, Tm: Timer> Timeout<C, Tm> {
    /// Bounds `call` by `duration` on `timer`, counted from the first poll; `observer` (the
    /// group's, if any) is told of a timeout.
    pub fn new(
        call: C,
        timer: Tm,
        duration: Duration,
        observer: Option<Arc<dyn Observer>>,
    ) -> Self {
        Self {
            call: Some(call),
            timer,
            duration,
            sleep: None,
            observer,
            role: None,
        }
    }
}

impl<C, Tm, V, E> Future for Timeout<C, Tm>
where
    C: CallFuture<Output = Result<V, Error<E>>>,
    Tm: Timer,
{
    type Output = Result<V, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut call = this
            .call
            .as_mut()
            .as_pin_mut()
            .expect("`Timeout` polled after completion");
        if let Poll::Ready(output) = call.as_mut().poll(cx) {
            *this.role = call.role();
            this.call.set(None);
            return Poll::Ready(output);
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(this.timer.sleep(*this.duration)));
        }
        let sleep = this.sleep.as_pin_mut().expect("the sleep was just made");
        if sleep.poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Not registered yet, or still waiting: either way this caller shared no execution.
        *this.role = Some(call.role().unwrap_or(Role::Waiter));
        // Dropping the call leaves the flight (waiter) or cancels the work (leader).
        this.call.set(None);
        if let Some(observer) = this.observer {
            observer.timeout();
        }
        Poll::Ready(Err(Error::Timeout))
    }
}

impl<C, Tm, V, E> CallFuture for Timeout<C, Tm>
where
    C: CallFuture<Output = Result<V, Error<E>>>,
    Tm: Timer,
{
    fn role(&self) -> Option<Role> {
        match &self.call {
            Some(call) => call.role(),
            None => self.role,
        }
    }
}

impl<C: fmt::Debug, Tm: Timer> fmt::Debug for Timeout<C, Tm> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("call", &self.call)
            .field("duration", &self.duration)
            .field("started", &self.sleep.is_some())
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}
