//! A per-call timeout, over any call future and any sleep future.

use alloc::sync::Arc;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::error::Error;
use crate::future::CallFuture;
use crate::group::Role;
use crate::observer::Observer;

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
    /// # Cancel safety
    ///
    /// As the wrapped call: dropping a `Timeout` drops the call.
    ///
    /// # Panics
    ///
    /// Polling after completion panics, and so does whatever the wrapped call panics with.
    #[must_use = "futures do nothing unless polled"]
    pub struct Timeout<C, Sl> {
        #[pin]
        call: Option<C>,
        #[pin]
        sleep: Sl,
        observer: Option<Arc<dyn Observer>>,
        role: Option<Role>,
    }
}

impl<C, Sl> Timeout<C, Sl> {
    /// Bounds `call` by `sleep`; `observer` (the group's, if any) is told of a timeout.
    pub fn new(call: C, sleep: Sl, observer: Option<Arc<dyn Observer>>) -> Self {
        Self {
            call: Some(call),
            sleep,
            observer,
            role: None,
        }
    }
}

impl<C, Sl, V, E> Future for Timeout<C, Sl>
where
    C: CallFuture<Output = Result<V, Error<E>>>,
    Sl: Future,
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
        if this.sleep.poll(cx).is_pending() {
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

impl<C, Sl, V, E> CallFuture for Timeout<C, Sl>
where
    C: CallFuture<Output = Result<V, Error<E>>>,
    Sl: Future,
{
    fn role(&self) -> Option<Role> {
        match &self.call {
            Some(call) => call.role(),
            None => self.role,
        }
    }
}

impl<C: fmt::Debug, Sl> fmt::Debug for Timeout<C, Sl> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("call", &self.call)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}
