//! A caller running in its own thread or task, and how it reports.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use singleflight_core::{CallFuture, Error, Role};

use crate::fixtures::{Gate, panic_message};

/// How a caller ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// The call returned this result, with the caller's role.
    Returned(Result<u64, Error<String>>, Role),
    /// The call panicked with this message (the leader's own call resumes its work's panic).
    Panicked(String),
    /// The caller dropped its call mid-call, as asked ([`Caller::cancel`]).
    Cancelled,
}

impl Report {
    /// The value, if the call returned one.
    pub fn value(&self) -> Option<u64> {
        match self {
            Self::Returned(Ok(n), _) => Some(*n),
            _ => None,
        }
    }

    /// The role, if the call returned.
    pub fn role(&self) -> Option<Role> {
        match self {
            Self::Returned(_, role) => Some(*role),
            _ => None,
        }
    }
}

/// The rule's end of a caller running in its own thread or task.
#[derive(Debug)]
pub struct Caller {
    side: CallerSide,
}

/// The caller's end of a [`Caller`]: where its thread or task reports, and the gate that
/// asks it to drop its call. Cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct CallerSide {
    report: Arc<Mutex<Option<Report>>>,
    done: Gate,
    cancel: Gate,
}

impl CallerSide {
    /// Records how the caller ended, and wakes whoever [`join`](Caller::join)s it.
    pub fn finish(&self, report: Report) {
        *self.report.lock().unwrap_or_else(PoisonError::into_inner) = Some(report);
        self.done.open();
    }

    /// The gate that opens when the rule asks the caller to drop its call
    /// ([`Caller::cancel`]). A caller that can be dropped races its call against it (see
    /// [`drive`]); a blocking thread ignores it.
    pub fn cancel_gate(&self) -> &Gate {
        &self.cancel
    }
}

impl Caller {
    /// A caller, and the side its thread or task reports on.
    pub fn new() -> (Self, CallerSide) {
        let side = CallerSide::default();
        (Self { side: side.clone() }, side)
    }

    /// Asks the caller to drop its call (a no-op for callers that cannot be dropped).
    pub fn cancel(&self) {
        self.side.cancel.open();
    }

    /// Whether the caller has ended.
    pub fn is_done(&self) -> bool {
        self.side.done.is_open()
    }

    /// Waits until the caller ends, and returns its report.
    ///
    /// # Panics
    ///
    /// If the caller's side opened its done gate without a report (it cannot: only
    /// [`CallerSide::finish`] opens it).
    pub async fn join(self) -> Report {
        self.side.done.opened().await;
        self.side
            .report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .expect("a caller reports before it is done")
    }
}

/// Drives `call` (with its role) until it ends or `cancel` opens, and reports how it ended;
/// if `cancel` opened first, the call is dropped before this returns. A panic of the call
/// is caught and reported as [`Report::Panicked`]. `map` turns the call's output into the
/// report's result ([`Value`](crate::Value)-valued infallible calls: [`flatten`](singleflight_core::flatten)).
///
/// # Cancel safety
///
/// Dropping the returned future drops the call, as a cancellation.
pub async fn drive<C, O>(call: C, cancel: &Gate, map: fn(O) -> Result<u64, Error<String>>) -> Report
where
    C: CallFuture<Output = O>,
{
    let mut call = CatchUnwind(Box::pin(call.with_role()));
    let mut cancelled = Box::pin(cancel.opened());
    std::future::poll_fn(|cx| {
        if let Poll::Ready(ended) = Pin::new(&mut call).poll(cx) {
            return Poll::Ready(match ended {
                Ok((output, role)) => Report::Returned(map(output), role),
                Err(message) => Report::Panicked(message),
            });
        }
        match cancelled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Report::Cancelled),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Catches a panic of the wrapped future, as its message.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(panic_message(&*payload))),
        }
    }
}
