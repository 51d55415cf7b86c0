//! The cross-runtime conformance suite: every rule of the semantics contract, written once
//! against [`Harness`] and instantiated per runtime by [`conformance!`](crate::conformance!).
//!
//! A harness says how to make a group, start a caller in its own thread or task, and run a
//! test body. Callers are driven only through [`Gate`]s and observable state (waiter counts,
//! execution probes); nothing is ordered by sleeping. Timeouts are the only durations, and
//! they are what a test checks, never how it orders things: paused clocks where the runtime
//! has one (tokio's current-thread runtime), a real clock elsewhere.
//!
//! Where a rule cannot happen with blocking threads (a thread cannot be dropped mid-call),
//! the blocking harness keeps the test and the test asserts what blocking callers do instead
//! ([`Harness::CANCELLABLE`]).

mod harness;
pub mod suite;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub use harness::{
    AsyncGroup, AsyncHarness, AsyncStd, Blocking, Runtime, Smol, TokioCurrentThread,
    TokioMultiThread,
};
use singleflight_core::{Error, Execution, LeaderDropPolicy, Observer, Role};

use crate::{Gate, PATIENCE};

/// The value type of every group in the suite; infallible calls return `Ok` values only.
pub type Value = Result<u64, String>;

/// How long a test may take before the watchdog fails it instead of hanging CI.
pub const WATCHDOG: Duration = Duration::from_secs(120);

/// A runtime setup the suite runs on.
pub trait Harness: 'static {
    /// The front-end group under test, keyed by `String`, valued [`Value`].
    type Group: Send + Sync + 'static;

    /// Whether a caller can be dropped mid-call (futures) or not (blocking threads).
    const CANCELLABLE: bool;

    /// Whether detached and blocking-pool calls really move the work off the caller.
    const DETACHED: bool;

    /// A timeout the tests use for callers that must time out (their flight is held by a
    /// gate, so they time out whatever the duration): virtual on a paused clock.
    const TIMEOUT: Duration;

    /// A group with `policy` (ignored by blocking groups, whose leaders cannot be dropped)
    /// and `observer`.
    fn group(policy: LeaderDropPolicy, observer: Option<Arc<dyn Observer>>) -> Self::Group;

    /// `Group::in_flight`.
    fn in_flight(group: &Self::Group) -> usize;
    /// `Group::waiters`.
    fn waiters(group: &Self::Group, key: &str) -> usize;
    /// `Group::contains`.
    fn contains(group: &Self::Group, key: &str) -> bool;
    /// `Group::forget`.
    fn forget(group: &Self::Group, key: &str) -> bool;
    /// `Group::forget_all`.
    fn forget_all(group: &Self::Group) -> usize;

    /// Starts a caller of `key` in its own thread or task.
    fn spawn_call(group: &Arc<Self::Group>, key: &str, spec: Spec, work: Work) -> Caller;

    /// Starts a caller of `key` whose work calls `key` again from inside (re-entrancy); the
    /// caller's report carries the inner call's result as a value: `0` for
    /// `Err(Error::Reentrant)`, `1` for anything else.
    fn spawn_reentrant(group: &Arc<Self::Group>, key: &str) -> Caller;

    /// Cancellation churn: `n` calls on distinct keys (plus a waiter on each) that register
    /// and are dropped mid-flight. Blocking calls cannot be dropped: they run to the end.
    fn churn(group: &Self::Group, n: usize);

    /// The group's `in_flight()` while a call for `key` exists but was never polled (lazy
    /// registration). Blocking calls have no such state: they register when made, and this
    /// returns `in_flight()` before making one.
    fn unpolled_in_flight(group: &Self::Group, key: &str) -> usize;

    /// Runs a test body to completion on this runtime.
    fn block_on<F: Future<Output = ()>>(body: F);
}

/// Which API a caller uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `call` / `try_call`: the work runs in the caller.
    Call,
    /// `call_detached` / `try_call_detached`: the work runs in a spawned task.
    Detached,
    /// `call_blocking` / `try_call_blocking`: the work runs on the blocking pool.
    Blocking,
}

/// How a caller calls.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// The API.
    pub kind: Kind,
    /// `try_*` (the work's `Err` is shared as `Error::Failed`) or the infallible form.
    pub fallible: bool,
    /// A per-call timeout.
    pub timeout: Option<Duration>,
}

impl Spec {
    /// `call`.
    pub const CALL: Self = Self {
        kind: Kind::Call,
        fallible: false,
        timeout: None,
    };

    /// Same API, fallible.
    pub fn fallible(self) -> Self {
        Self {
            fallible: true,
            ..self
        }
    }

    /// Same API, detached.
    pub fn kind(self, kind: Kind) -> Self {
        Self { kind, ..self }
    }

    /// Same API, with a timeout.
    pub fn timeout(self, timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
            ..self
        }
    }
}

/// Counts executions of a test's work: how many started, how many run right now (and the
/// most that ever ran at once), how many finished.
#[derive(Clone, Debug, Default)]
pub struct Probe(Arc<ProbeInner>);

#[derive(Debug, Default)]
struct ProbeInner {
    started: AtomicUsize,
    running: AtomicUsize,
    max_running: AtomicUsize,
    finished: AtomicUsize,
}

impl Probe {
    /// Executions started.
    pub fn started(&self) -> usize {
        self.0.started.load(Ordering::SeqCst)
    }

    /// Executions that ran to their end.
    pub fn finished(&self) -> usize {
        self.0.finished.load(Ordering::SeqCst)
    }

    /// The most executions that ever ran at the same moment.
    pub fn max_running(&self) -> usize {
        self.0.max_running.load(Ordering::SeqCst)
    }

    fn enter(&self) -> Running<'_> {
        self.0.started.fetch_add(1, Ordering::SeqCst);
        let now = self.0.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.max_running.fetch_max(now, Ordering::SeqCst);
        Running(self)
    }
}

/// One execution in progress; dropping it (end, cancellation or panic) ends it.
struct Running<'a>(&'a Probe);

impl Running<'_> {
    fn finish(self) {
        self.0.0.finished.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a test's work does once it starts.
#[derive(Clone, Copy, Debug)]
pub enum Ends {
    /// Returns `Ok(n)`.
    Value(u64),
    /// Returns `Err(message)`.
    Fail(&'static str),
    /// Panics with the message.
    Panic(&'static str),
}

/// A test's work, runnable as a blocking closure or as a future.
#[derive(Clone, Debug)]
pub struct Work {
    probe: Probe,
    gate: Option<Gate>,
    ends: Ends,
}

impl Work {
    /// Work that counts itself in `probe`, waits for `gate` (if any), then ends as `ends`.
    pub fn new(probe: &Probe, gate: Option<&Gate>, ends: Ends) -> Self {
        Self {
            probe: probe.clone(),
            gate: gate.cloned(),
            ends,
        }
    }

    fn end(ends: Ends, running: Running<'_>) -> Value {
        running.finish();
        match ends {
            Ends::Value(n) => Ok(n),
            Ends::Fail(message) => Err(message.to_string()),
            Ends::Panic(message) => std::panic::panic_any(message),
        }
    }

    /// Runs on the current thread.
    pub fn run_blocking(self) -> Value {
        let running = self.probe.enter();
        if let Some(gate) = &self.gate {
            gate.wait();
        }
        Self::end(self.ends, running)
    }

    /// Runs as a future.
    pub async fn run_async(self) -> Value {
        let running = self.probe.enter();
        if let Some(gate) = &self.gate {
            gate.opened().await;
        }
        Self::end(self.ends, running)
    }
}

/// How a caller ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// The call returned, with the caller's role.
    Returned(Result<u64, Error<String>>, Role),
    /// The call panicked (the leader's own call resumes its work's panic) with this message.
    Panicked(String),
    /// The caller was dropped mid-call on request ([`Caller::cancel`]).
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

/// A caller running in its own thread or task.
#[derive(Debug)]
pub struct Caller {
    side: CallerSide,
}

/// The caller's end of a [`Caller`]: where its thread or task reports.
#[derive(Clone, Debug, Default)]
pub struct CallerSide {
    report: Arc<Mutex<Option<Report>>>,
    done: Gate,
    cancel: Gate,
}

impl CallerSide {
    /// Records how the caller ended.
    pub fn finish(&self, report: Report) {
        *self.report.lock().unwrap() = Some(report);
        self.done.open();
    }

    /// The gate that asks the caller to drop its call.
    pub fn cancel_gate(&self) -> &Gate {
        &self.cancel
    }
}

impl Caller {
    /// A caller and the side its thread or task reports on.
    pub fn new() -> (Self, CallerSide) {
        let side = CallerSide::default();
        (Self { side: side.clone() }, side)
    }

    /// Asks the caller to drop its call (a no-op for blocking threads).
    pub fn cancel(&self) {
        self.side.cancel.open();
    }

    /// Whether the caller has ended.
    pub fn is_done(&self) -> bool {
        self.side.done.is_open()
    }

    /// Waits until the caller ends.
    pub async fn join(self) -> Report {
        self.side.done.opened().await;
        self.side
            .report
            .lock()
            .unwrap()
            .take()
            .expect("a caller reports before it is done")
    }
}

/// Drives `call` (with its role) in a task until it ends or `cancel` opens; in the latter
/// case the call is dropped before this returns.
pub async fn drive<C, O>(call: C, cancel: &Gate, map: fn(O) -> Result<u64, Error<String>>) -> Report
where
    C: singleflight_core::CallFuture<Output = O>,
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

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    singleflight_core::PanicMessage::from_payload(payload)
        .as_str()
        .to_string()
}

/// Yields to the runtime once.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

/// Yields until `condition` holds, failing after [`PATIENCE`]. Observes state; it orders
/// nothing by time.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting until {what}");
        yield_now().await;
        std::thread::yield_now();
    }
}

/// An observer that counts every hook, to check the counting rules.
#[derive(Debug, Default)]
pub struct Counts {
    /// `flight_started`.
    pub flights_started: AtomicUsize,
    /// `flight_finished`.
    pub flights_finished: AtomicUsize,
    /// `execution_started` (misses).
    pub misses: AtomicUsize,
    /// `execution_finished`.
    pub executions_finished: AtomicUsize,
    /// `execution_finished` with [`Execution::Dropped`].
    pub dropped: AtomicUsize,
    /// `joined` (hits).
    pub hits: AtomicUsize,
    /// `takeover`.
    pub takeovers: AtomicUsize,
    /// `timeout`.
    pub timeouts: AtomicUsize,
}

impl Counts {
    /// Reads a counter.
    pub fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

impl Observer for Counts {
    fn flight_started(&self) {
        self.flights_started.fetch_add(1, Ordering::SeqCst);
    }
    fn flight_finished(&self) {
        self.flights_finished.fetch_add(1, Ordering::SeqCst);
    }
    fn execution_started(&self) -> u64 {
        self.misses.fetch_add(1, Ordering::SeqCst);
        0
    }
    fn execution_finished(&self, _started: u64, execution: Execution) {
        self.executions_finished.fetch_add(1, Ordering::SeqCst);
        if execution == Execution::Dropped {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn joined(&self) {
        self.hits.fetch_add(1, Ordering::SeqCst);
    }
    fn takeover(&self) {
        self.takeovers.fetch_add(1, Ordering::SeqCst);
    }
    fn timeout(&self) {
        self.timeouts.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs `body` on `H` in a thread of its own, and fails (instead of hanging) if it takes
/// longer than [`WATCHDOG`].
#[track_caller]
pub fn run<H: Harness, F, Fut>(name: &str, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (done, finished) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                H::block_on(body());
            }));
            let _ = done.send(());
            result
        })
        .expect("spawn the test thread");
    match finished.recv_timeout(WATCHDOG) {
        Ok(()) => {
            if let Err(payload) = thread.join().expect("the test thread reports its panic") {
                std::panic::resume_unwind(payload);
            }
        }
        Err(_) => panic!("watchdog: `{name}` hung for {WATCHDOG:?}"),
    }
}

/// Instantiates the whole conformance suite for one runtime setup: a module `$name` with one
/// `#[test]` per rule, the same names for every runtime.
///
/// ```ignore
/// singleflight_tests::conformance!(tokio_current_thread, AsyncHarness<TokioCurrentThread>);
/// ```
#[macro_export]
macro_rules! conformance {
    ($name:ident, $harness:ty) => {
        mod $name {
            #[allow(unused_imports, reason = "the harness type is named at the call site")]
            use super::*;

            $crate::conformance_tests!(
                $harness;
                coalesces_concurrent_callers,
                different_keys_do_not_wait,
                borrowed_key_joins_without_allocating_a_key,
                fallible_work_shares_the_error,
                panic_reaches_waiters_with_its_message,
                key_is_not_poisoned_after_a_panic,
                role_tells_leader_from_waiter,
                leader_drop_takeover_runs_one_execution_at_a_time,
                leader_drop_fail_waiters,
                dropped_waiter_affects_no_one_else,
                detached_work_survives_all_callers_leaving,
                detached_panic_reaches_every_caller,
                blocking_pool_work_is_coalesced,
                waiter_timeout_ends_only_that_waiter,
                leader_timeout_is_a_cancellation,
                forget_while_in_flight_keeps_the_new_flight,
                forget_absent_key_leaves_nothing,
                forget_all_detaches_every_flight,
                reentrant_call_is_detected,
                unpolled_call_pins_nothing,
                registering_at_the_instant_of_publication,
                cancellation_churn_leaves_nothing_in_flight,
                observer_counts_every_call_once,
            );
        }
    };
}

/// The test functions of [`conformance!`](crate::conformance) (an implementation detail).
#[doc(hidden)]
#[macro_export]
macro_rules! conformance_tests {
    ($harness:ty; $($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                $crate::conformance::run::<$harness, _, _>(
                    stringify!($test),
                    $crate::conformance::suite::$test::<$harness>,
                );
            }
        )*
    };
}
