//! What the rules are made of: gates that order callers without sleeping, probes that count
//! executions, the work a caller runs, waiting for observable state, and an observer that
//! counts its hooks.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use async_lock::OnceCell;
use singleflight_core::{Execution, FlightInfo, ObservedKey, Observer, PanicMessage, Wait};

use crate::Value;

/// A one-shot gate: closed until [`open`](Self::open), then open for good. Threads
/// [`wait`](Self::wait) for it, tasks `.await` [`opened`](Self::opened), on any executor.
/// Cloning shares the gate.
#[derive(Clone, Debug, Default)]
pub struct Gate(Arc<OnceCell<()>>);

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens the gate and releases everyone waiting.
    pub fn open(&self) {
        // Already open: nothing to do.
        let _ = self.0.set_blocking(());
    }

    /// Whether the gate is open.
    pub fn is_open(&self) -> bool {
        self.0.is_initialized()
    }

    /// Blocks the current thread until the gate opens.
    pub fn wait(&self) {
        self.0.wait_blocking();
    }

    /// Waits until the gate opens.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only stops waiting.
    pub async fn opened(&self) {
        self.0.wait().await;
    }
}

/// Counts executions of a rule's work: how many started, how many run right now (and the
/// most that ever ran at once), how many finished. Cloning shares the counts.
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

    /// Executions that ran to their end (a value, an error or a panic).
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

/// What a rule's work does once it starts (and its gate, if any, opened).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ends {
    /// Returns `Ok(n)`.
    Value(u64),
    /// Returns `Err(message)`.
    Fail(&'static str),
    /// Panics with the message.
    Panic(&'static str),
}

/// A rule's work, runnable as a blocking closure ([`run_blocking`](Self::run_blocking)) or
/// as a future ([`run_async`](Self::run_async)): it counts itself in a [`Probe`], waits for
/// its [`Gate`] if it has one, then ends as its [`Ends`] says.
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

    /// Runs on the current thread, blocking it while the gate is closed.
    ///
    /// # Panics
    ///
    /// With its message, if it ends in [`Ends::Panic`].
    pub fn run_blocking(self) -> Value {
        let running = self.probe.enter();
        if let Some(gate) = &self.gate {
            gate.wait();
        }
        Self::end(self.ends, running)
    }

    /// Runs as a future, pending while the gate is closed.
    ///
    /// # Panics
    ///
    /// With its message, if it ends in [`Ends::Panic`].
    ///
    /// # Cancel safety
    ///
    /// Dropping it mid-way counts as an execution that started and never finished.
    pub async fn run_async(self) -> Value {
        let running = self.probe.enter();
        if let Some(gate) = &self.gate {
            gate.opened().await;
        }
        Self::end(self.ends, running)
    }
}

/// How long [`wait_until`] waits before it fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Yields (to the executor and the OS scheduler) until `condition` holds, failing after
/// [`PATIENCE`]. It observes state; it orders nothing by time.
///
/// # Panics
///
/// With `gave up waiting until {what}`, after [`PATIENCE`].
///
/// # Cancel safety
///
/// Cancel safe: it only reads state.
pub async fn wait_until(what: &str, condition: impl FnMut() -> bool) {
    wait_within(PATIENCE, what, condition).await;
}

/// [`wait_until`] with the patience of the setup, for the rules.
pub(crate) async fn wait_within(
    patience: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < patience, "gave up waiting until {what}");
        yield_now().await;
        std::thread::yield_now();
    }
}

/// Yields to the executor once.
///
/// # Cancel safety
///
/// Cancel safe: it holds nothing.
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

/// The text of a panic payload: the `&str` or `String` it carries, or `Box<dyn Any>` for
/// any other payload (the core's [`PanicMessage`], as waiters of a panicked flight see it).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    PanicMessage::from_payload(payload).as_str().to_string()
}

/// Runs `future` to completion on the current thread, parking it while the future is
/// pending: an executor for setups whose callers are threads, or for a front-end that has
/// none of its own.
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

/// A clock the rule moves by hand, for groups with a reuse window: time stands still
/// until [`advance`](Self::advance), so a rule orders "inside the window" and "after it"
/// without sleeping. Cloning shares the clock.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<std::sync::atomic::AtomicU64>);

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    ///
    /// # Panics
    ///
    /// If the clock would pass `u64::MAX` nanoseconds (some 584 years).
    pub fn advance(&self, by: Duration) {
        let nanos =
            u64::try_from(by.as_nanos()).expect("a step of the clock fits in u64 nanoseconds");
        self.0.fetch_add(nanos, Ordering::SeqCst);
    }
}

impl singleflight_core::rt::Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

/// An [`Observer`] that counts each hook, for the rules on what a group reports.
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
    /// `waiter_finished`, but for promoted waiters (hits).
    pub hits: AtomicUsize,
    /// `takeover`.
    pub takeovers: AtomicUsize,
    /// `timeout`.
    pub timeouts: AtomicUsize,
    /// `reused`.
    pub reused: AtomicUsize,
    /// `refresh_started`.
    pub refreshes: AtomicUsize,
    /// `refresh_failed`.
    pub refresh_failures: AtomicUsize,
}

impl Counts {
    /// Reads a counter.
    pub fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

impl Observer for Counts {
    fn flight_started(&self, _: &FlightInfo<'_>) {
        self.flights_started.fetch_add(1, Ordering::SeqCst);
    }
    fn flight_finished(&self, _: &FlightInfo<'_>) {
        self.flights_finished.fetch_add(1, Ordering::SeqCst);
    }
    fn execution_started(&self, _: &FlightInfo<'_>) -> u64 {
        self.misses.fetch_add(1, Ordering::SeqCst);
        0
    }
    fn execution_finished(&self, _: &FlightInfo<'_>, _started: u64, execution: Execution) {
        self.executions_finished.fetch_add(1, Ordering::SeqCst);
        if execution == Execution::Dropped {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn waiter_finished(&self, _: &FlightInfo<'_>, _started: u64, wait: Wait) {
        if wait == Wait::Promoted {
            return;
        }
        self.hits.fetch_add(1, Ordering::SeqCst);
    }
    fn takeover(&self, _: &FlightInfo<'_>) {
        self.takeovers.fetch_add(1, Ordering::SeqCst);
    }
    fn timeout(&self) {
        self.timeouts.fetch_add(1, Ordering::SeqCst);
    }
    fn reused(&self, _: Option<&str>, _: &dyn ObservedKey) {
        self.reused.fetch_add(1, Ordering::SeqCst);
    }
    fn refresh_started(&self, _: &FlightInfo<'_>) {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
    }
    fn refresh_failed(&self, _: &FlightInfo<'_>) {
        self.refresh_failures.fetch_add(1, Ordering::SeqCst);
    }
}
