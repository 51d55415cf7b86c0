//! Model-based test: random sequences of operations — calls on a few keys, detached calls
//! (whose leader is completed from elsewhere), completions (some with a value whose clone
//! panics), failures, panics, cancellations (of leaders and waiters), waiters giving up at a
//! deadline, forget, forget_all, polls, and observer hooks armed to panic — applied to the
//! real group and to a small reference model. After every step the two must agree on roles,
//! outcomes, executions, flight and waiter counts, and (until user code first panicked) the
//! observer's counters; and a waiter whose last poll was pending must have been woken before
//! its outcome or promotion is there to take.
//!
//! Panicking user code (DESIGN.md rule 14): the call whose code panicked panics (the model
//! catches it), and the operation otherwise has the effect it has without the panic: a
//! panicking `leader_started` abandons the new flight, a panicking `takeover` passes the
//! promotion on, a panicking `leader_finished` comes after the outcome is published, and so
//! on. Which caller's clone of a value panics is the core's business; the model checks that
//! a panic comes exactly from the clone or hook that was set to panic, and that every other
//! caller still gets its outcome.
//!
//! Failing cases are persisted in the target directory
//! (`target/tmp/model.proptest-regressions`), never in the source tree: a rerun on the same
//! machine replays them first, and nothing is written where it could be committed by
//! accident. A failure prints its minimal operation sequence; to keep one for good, add it
//! as a named `#[test]` calling `run` with that sequence.
// What these tests use (blocking waits, panic payloads, deadlines, a counting allocator
// over the system one) exists with `std` only.
#![cfg(feature = "std")]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use proptest::prelude::*;
use singleflight_core::rt::{Detached, Launch};
use singleflight_core::{
    CallFuture, DEFAULT_SHARDS, DefaultHashBuilder, Entered, Error, Execution, FlightInfo, Group,
    Leader, LeaderDropPolicy, Observer, PanicMessage, Role, Wait, Waited, Waiter,
};

// The workspace's one watchdog: a hang (a lost wake-up, say) fails this binary in bounded
// time instead of stalling the run.
#[path = "support/watchdog.rs"]
mod watchdog;
pub use watchdog::{TEST_LIMIT, Watchdog};

const KEYS: u8 = 3;

/// Keys a detached call can borrow for as long as it lives.
static KEY_NAMES: [u8; KEYS as usize] = [0, 1, 2];

/// The hooks the model arms (one at a time), each the first hook its step calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    /// First of the default `leader_started`: a new flight.
    FlightStarted,
    /// A counted waiter leaves (with the outcome, or without).
    WaiterFinished,
    /// A promoted waiter takes over.
    Takeover,
    /// First of the default `leader_finished`, and a dropped leader's.
    ExecutionFinished,
    /// A waiter gives up at its deadline.
    Timeout,
}

#[derive(Clone, Debug)]
enum Op {
    Call(u8),
    Detached(u8),
    Complete(usize, u32),
    /// Completes with a value whose clone number `.2` (from 1) panics.
    CompleteBomb(usize, u32, usize),
    Fail(usize, u32),
    Panic(usize),
    Drop(usize),
    Poll(usize),
    /// A blocking wait whose deadline has already passed.
    Deadline(usize),
    Forget(u8),
    ForgetAll,
    Arm(Hook),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..KEYS).prop_map(Op::Call),
        2 => (0..KEYS).prop_map(Op::Detached),
        2 => (any::<usize>(), any::<u32>()).prop_map(|(c, v)| Op::Complete(c, v)),
        1 => (any::<usize>(), any::<u32>(), 1..4usize).prop_map(|(c, v, k)| Op::CompleteBomb(c, v, k)),
        1 => (any::<usize>(), any::<u32>()).prop_map(|(c, v)| Op::Fail(c, v)),
        1 => any::<usize>().prop_map(Op::Panic),
        2 => any::<usize>().prop_map(Op::Drop),
        3 => any::<usize>().prop_map(Op::Poll),
        1 => any::<usize>().prop_map(Op::Deadline),
        1 => (0..KEYS).prop_map(Op::Forget),
        1 => Just(Op::ForgetAll),
        1 => prop_oneof![
            Just(Hook::FlightStarted),
            Just(Hook::WaiterFinished),
            Just(Hook::Takeover),
            Just(Hook::ExecutionFinished),
            Just(Hook::Timeout),
        ]
        .prop_map(Op::Arm),
    ]
}

/// Makes one of its clones panic.
#[derive(Debug)]
struct Bomb {
    clones: AtomicUsize,
    at: usize,
    fired: AtomicBool,
}

/// The group's value: a number, and maybe a bomb that one clone sets off.
#[derive(Debug)]
struct Val {
    n: u32,
    bomb: Option<Arc<Bomb>>,
}

impl Val {
    fn new(n: u32) -> Self {
        Self { n, bomb: None }
    }
}

impl Clone for Val {
    fn clone(&self) -> Self {
        if let Some(bomb) = &self.bomb {
            let k = bomb.clones.fetch_add(1, Ordering::SeqCst) + 1;
            if k == bomb.at {
                bomb.fired.store(true, Ordering::SeqCst);
                panic!("model: clone #{k}");
            }
        }
        Self {
            n: self.n,
            bomb: self.bomb.clone(),
        }
    }
}

type G = Group<u8, Val>;

/// Counts every observer hook; panics once in an armed one.
#[derive(Default, Debug)]
struct Counts {
    flights_started: AtomicU64,
    flights_finished: AtomicU64,
    executions: AtomicU64,
    hits: AtomicU64,
    takeovers: AtomicU64,
    timeouts: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    dropped: AtomicU64,
    armed: Mutex<Option<Hook>>,
    fired: AtomicBool,
}

impl Counts {
    fn trip(&self, hook: Hook) {
        if std::thread::panicking() {
            // A failing step is unwinding: don't turn its message into an abort.
            return;
        }
        let mut armed = self.armed.lock().unwrap();
        if *armed == Some(hook) {
            *armed = None;
            drop(armed);
            self.fired.store(true, Ordering::SeqCst);
            panic!("model: observer {hook:?}");
        }
    }
}

impl Observer for Counts {
    fn flight_started(&self, _: &FlightInfo<'_>) {
        self.trip(Hook::FlightStarted);
        self.flights_started.fetch_add(1, Ordering::Relaxed);
    }
    fn flight_finished(&self, _: &FlightInfo<'_>) {
        self.flights_finished.fetch_add(1, Ordering::Relaxed);
    }
    fn execution_started(&self, _: &FlightInfo<'_>) -> u64 {
        self.executions.fetch_add(1, Ordering::Relaxed)
    }
    fn execution_finished(&self, _: &FlightInfo<'_>, _started: u64, execution: Execution) {
        self.trip(Hook::ExecutionFinished);
        let counter = match execution {
            Execution::Completed => &self.completed,
            Execution::Failed => &self.failed,
            Execution::Panicked => &self.panicked,
            Execution::Dropped => &self.dropped,
            _ => unreachable!("no other executions exist"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    fn waiter_finished(&self, _: &FlightInfo<'_>, _started: u64, wait: Wait) {
        if wait == Wait::Promoted {
            // Counted as a miss from now on.
            return;
        }
        self.trip(Hook::WaiterFinished);
        self.hits.fetch_add(1, Ordering::Relaxed);
    }
    fn takeover(&self, _: &FlightInfo<'_>) {
        self.trip(Hook::Takeover);
        self.takeovers.fetch_add(1, Ordering::Relaxed);
    }
    fn timeout(&self) {
        self.trip(Hook::Timeout);
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Value(u32),
    Panicked,
    LeaderDropped,
}

#[derive(Debug)]
struct MFlight {
    key: u8,
    forgotten: bool,
    ended: bool,
    /// Callers waiting, oldest first (not counting one promoted and not yet told, nor the
    /// caller that launched the flight's detached work).
    queue: VecDeque<usize>,
    /// The caller that launched the flight's detached work, while it waits.
    launcher: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum MCaller {
    /// Runs the work (a caller's own leader, or detached work's).
    Leader(usize),
    /// Joined and waits (counted).
    Waiting(usize),
    /// Launched detached work and waits for it (not counted).
    Launcher(usize),
    Promoted(usize),
    /// The outcome is there; `bool`: the caller is counted (not a launcher).
    Ready(Outcome, bool),
    Done,
}

#[derive(Default, Debug)]
struct Model {
    flights: Vec<MFlight>,
    callers: Vec<MCaller>,
    fail_waiters: bool,
    armed: Option<Hook>,
    armed_ever: bool,
    /// User code has panicked: the observer's counts are no longer checked.
    panicked_user_code: bool,
    executions: u64,
    hits: u64,
    takeovers: u64,
    timeouts: u64,
    completed: u64,
    failed: u64,
    panicked: u64,
    dropped: u64,
    flights_finished: u64,
}

impl Model {
    fn active(&self, key: u8) -> Option<usize> {
        self.flights
            .iter()
            .position(|f| f.key == key && !f.forgotten && !f.ended)
    }

    fn new_flight(&mut self, key: u8) -> usize {
        self.flights.push(MFlight {
            key,
            forgotten: false,
            ended: false,
            queue: VecDeque::new(),
            launcher: None,
        });
        self.executions += 1;
        self.flights.len() - 1
    }

    fn call(&mut self, key: u8) -> MCaller {
        let caller = self.callers.len();
        let state = match self.active(key) {
            Some(flight) => {
                self.flights[flight].queue.push_back(caller);
                MCaller::Waiting(flight)
            }
            None => MCaller::Leader(self.new_flight(key)),
        };
        self.callers.push(state.clone());
        state
    }

    /// Would the step call `hook` first among the armable ones? Then it panics there.
    fn fires(&mut self, hooks: &[Hook]) -> bool {
        match self.armed {
            Some(armed) if hooks.contains(&armed) => {
                self.armed = None;
                self.panicked_user_code = true;
                true
            }
            _ => false,
        }
    }

    fn end(&mut self, flight: usize, outcome: Outcome) {
        let f = &mut self.flights[flight];
        f.ended = true;
        self.flights_finished += 1;
        let waiting: Vec<usize> = f.queue.drain(..).collect();
        let launcher = f.launcher.take();
        for waiter in waiting {
            self.callers[waiter] = MCaller::Ready(outcome.clone(), true);
        }
        if let Some(launcher) = launcher {
            self.callers[launcher] = MCaller::Ready(outcome, false);
        }
    }

    /// The leader of `flight` went away without an outcome.
    fn abandon(&mut self, flight: usize) {
        if !self.fail_waiters {
            if let Some(next) = self.flights[flight].queue.pop_front() {
                self.callers[next] = MCaller::Promoted(flight);
                return;
            }
        }
        self.end(flight, Outcome::LeaderDropped);
    }

    fn in_flight(&self) -> usize {
        self.flights.iter().filter(|f| !f.ended).count()
    }

    fn waiters(&self, key: u8) -> usize {
        self.active(key).map_or(0, |f| self.flights[f].queue.len())
    }
}

/// Launches detached work by keeping its leader, to be completed by a later step.
struct Stash(Rc<RefCell<Option<Leader<Arc<G>>>>>);

impl Launch<Arc<G>> for Stash {
    fn launch(self, leader: Leader<Arc<G>>, _failed: fn(&Val) -> bool) {
        *self.0.borrow_mut() = Some(leader);
    }
}

type DetachedCall<'g> = Detached<'g, u8, u8, Val, DefaultHashBuilder, Stash>;

enum Real<'g> {
    Leader(Leader<&'g G>),
    /// Detached work's leader.
    Work(Leader<Arc<G>>),
    Waiter(Waiter<&'g G>),
    Detached(DetachedCall<'g>, Rc<RefCell<Option<Leader<Arc<G>>>>>),
    Done,
}

/// A waker that records that it was woken.
#[derive(Default)]
struct Woken(AtomicBool);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn context(woken: &Arc<Woken>) -> Waker {
    woken.0.store(false, Ordering::SeqCst);
    Waker::from(woken.clone())
}

/// What a waiter's step produced, model-side.
fn outcome_of(got: Result<Val, Error>) -> Outcome {
    match got {
        Ok(v) => Outcome::Value(v.n),
        Err(Error::Panicked(m)) => {
            assert_eq!(m.as_str(), "boom");
            Outcome::Panicked
        }
        Err(Error::LeaderDropped) => Outcome::LeaderDropped,
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

/// Silences the model's deliberate panics (messages starting `model:`).
fn quiet() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = PanicMessage::from_payload(info.payload());
            if !text.as_str().starts_with("model:") {
                default(info);
            }
        }));
    });
}

/// Runs `f`, catching a panic of the model's user code (any other panic is a failure).
fn user<R>(f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(payload) => {
            let text = PanicMessage::from_payload(&*payload);
            assert!(
                text.as_str().starts_with("model:"),
                "the core panicked: {text}"
            );
            None
        }
    }
}

/// A caller whose poll panicked (its clone of the value, or its armed hook): it is done,
/// and a promotion it held passes on.
fn panicked_call(model: &mut Model, c: usize, state: MCaller) {
    model.callers[c] = MCaller::Done;
    match state {
        MCaller::Ready(_, counted) => model.hits += u64::from(counted),
        MCaller::Promoted(flight) => {
            model.hits += 1;
            model.abandon(flight);
        }
        other => panic!("a caller in state {other:?} has no user code to panic in a poll"),
    }
}

/// `one_shard` puts every key in one shard, whose flights then spill past its inline slots
/// into its hash table.
fn run(ops: Vec<Op>, fail_waiters: bool, one_shard: bool) {
    let _watchdog = watchdog!();
    quiet();
    let counts = Arc::new(Counts::default());
    let policy = if fail_waiters {
        LeaderDropPolicy::FailWaiters
    } else {
        LeaderDropPolicy::Takeover
    };
    let group: Arc<G> = Arc::new(
        Group::new()
            .with_shards(if one_shard { 1 } else { DEFAULT_SHARDS })
            .with_leader_drop_policy(policy)
            .with_observer(counts.clone()),
    );
    let mut model = Model {
        fail_waiters,
        ..Model::default()
    };
    let mut real: Vec<Real<'_>> = Vec::new();
    // Per caller: the waker of its last poll, if that poll was pending.
    let mut pending: Vec<Option<Arc<Woken>>> = Vec::new();
    // Bombs of values handed out so far.
    let mut bombs: Vec<Arc<Bomb>> = Vec::new();

    for op in ops {
        let pick = |i: usize, len: usize| (len > 0).then(|| i % len);
        let fired_before = bombs
            .iter()
            .filter(|b| b.fired.load(Ordering::SeqCst))
            .count();
        counts.fired.store(false, Ordering::SeqCst);
        // Whether the step's own user code is expected to panic (an armed hook).
        let mut hook_fires = false;
        // Whether the step's call panicked.
        let mut step_panicked = false;
        match op {
            Op::Arm(hook) => {
                if model.armed.is_none() && bombs.is_empty() {
                    model.armed_ever = true;
                    model.armed = Some(hook);
                    *counts.armed.lock().unwrap() = Some(hook);
                }
            }
            Op::Call(key) => {
                let starts = model.active(key).is_none();
                hook_fires = starts && model.fires(&[Hook::FlightStarted]);
                let expected = model.call(key);
                let c = model.callers.len() - 1;
                match user(|| group.enter(&key).expect("no re-entrancy here")) {
                    None => {
                        // `leader_started` panicked: the flight is abandoned, with nobody
                        // to promote.
                        step_panicked = true;
                        let MCaller::Leader(flight) = expected else {
                            panic!("only a new flight's caller runs `leader_started`")
                        };
                        model.callers[c] = MCaller::Done;
                        model.dropped += 1;
                        model.abandon(flight);
                        real.push(Real::Done);
                    }
                    Some(entry) => match (entry, expected) {
                        (Entered::Leader(l), MCaller::Leader(_)) => real.push(Real::Leader(l)),
                        (Entered::Waiter(w), MCaller::Waiting(_)) => real.push(Real::Waiter(w)),
                        (entry, expected) => panic!("role mismatch: {entry:?} vs {expected:?}"),
                    },
                }
                pending.push(None);
            }
            Op::Detached(key) => {
                let c = model.callers.len();
                let slot = Rc::new(RefCell::new(None));
                let mut call =
                    Detached::new(&group, &KEY_NAMES[usize::from(key)], Stash(slot.clone()));
                let woken = Arc::new(Woken::default());
                let waker = context(&woken);
                let starts = model.active(key).is_none();
                hook_fires = starts && model.fires(&[Hook::FlightStarted]);
                let polled = user(|| Pin::new(&mut call).poll(&mut Context::from_waker(&waker)));
                match polled {
                    None => {
                        step_panicked = true;
                        assert!(starts, "only a new flight's caller runs `leader_started`");
                        let flight = model.new_flight(key);
                        model.callers.push(MCaller::Done);
                        model.dropped += 1;
                        model.abandon(flight);
                        real.push(Real::Done);
                        pending.push(None);
                    }
                    Some(Poll::Ready(ready)) => panic!("a detached call waits: {ready:?}"),
                    Some(Poll::Pending) => match model.active(key) {
                        Some(flight) => {
                            model.flights[flight].queue.push_back(c);
                            model.callers.push(MCaller::Waiting(flight));
                            real.push(Real::Detached(call, slot));
                            pending.push(Some(woken));
                        }
                        None => {
                            assert!(call.role().is_some_and(Role::is_leader));
                            let flight = model.new_flight(key);
                            model.flights[flight].launcher = Some(c);
                            model.callers.push(MCaller::Launcher(flight));
                            model.callers.push(MCaller::Leader(flight));
                            let leader = slot.borrow_mut().take().expect("the work launched");
                            real.push(Real::Detached(call, slot));
                            real.push(Real::Work(leader));
                            pending.push(Some(woken));
                            pending.push(None);
                        }
                    },
                }
            }
            Op::Complete(i, value) | Op::Fail(i, value) | Op::CompleteBomb(i, value, _) => {
                let Some(c) = pick(i, real.len()) else {
                    continue;
                };
                if !matches!(real[c], Real::Leader(_) | Real::Work(_)) {
                    continue;
                }
                let MCaller::Leader(flight) = model.callers[c] else {
                    panic!("model disagrees: {:?} is no leader", model.callers[c])
                };
                let val = match op {
                    // Bombs and armed hooks never meet in one run, so each panic has one cause.
                    Op::CompleteBomb(_, _, at) if !model.armed_ever => {
                        let bomb = Arc::new(Bomb {
                            clones: AtomicUsize::new(0),
                            at,
                            fired: AtomicBool::new(false),
                        });
                        bombs.push(bomb.clone());
                        Val {
                            n: value,
                            bomb: Some(bomb),
                        }
                    }
                    _ => Val::new(value),
                };
                let fail = matches!(op, Op::Fail(..));
                hook_fires = model.fires(&[Hook::ExecutionFinished]);
                let returned = match std::mem::replace(&mut real[c], Real::Done) {
                    Real::Leader(leader) => user(|| {
                        if fail {
                            leader.complete_failed(val)
                        } else {
                            leader.complete(val)
                        }
                    }),
                    Real::Work(leader) => user(|| {
                        if fail {
                            leader.complete_failed(val)
                        } else {
                            leader.complete(val)
                        }
                    }),
                    _ => unreachable!("checked above"),
                };
                match returned {
                    Some(returned) => assert_eq!(returned.n, value),
                    None => step_panicked = true,
                }
                if fail {
                    model.failed += 1;
                } else {
                    model.completed += 1;
                }
                model.callers[c] = MCaller::Done;
                model.end(flight, Outcome::Value(value));
            }
            Op::Panic(i) => {
                let Some(c) = pick(i, real.len()) else {
                    continue;
                };
                if !matches!(real[c], Real::Leader(_) | Real::Work(_)) {
                    continue;
                }
                let MCaller::Leader(flight) = model.callers[c] else {
                    panic!("no leader")
                };
                hook_fires = model.fires(&[Hook::ExecutionFinished]);
                let ended = match std::mem::replace(&mut real[c], Real::Done) {
                    Real::Leader(leader) => user(|| leader.panicked(PanicMessage::new("boom"))),
                    Real::Work(leader) => user(|| leader.panicked(PanicMessage::new("boom"))),
                    _ => unreachable!("checked above"),
                };
                step_panicked = ended.is_none();
                model.panicked += 1;
                model.callers[c] = MCaller::Done;
                model.end(flight, Outcome::Panicked);
            }
            Op::Drop(i) => {
                let Some(c) = pick(i, real.len()) else {
                    continue;
                };
                if matches!(real[c], Real::Work(_)) {
                    // Detached work is never dropped by the caller; it completes.
                    continue;
                }
                let counted = match &model.callers[c] {
                    MCaller::Leader(_) => Some(Hook::ExecutionFinished),
                    MCaller::Waiting(_) | MCaller::Promoted(_) | MCaller::Ready(_, true) => {
                        Some(Hook::WaiterFinished)
                    }
                    _ => None,
                };
                hook_fires = counted.is_some_and(|hook| model.fires(&[hook]));
                let gone = std::mem::replace(&mut real[c], Real::Done);
                step_panicked = user(|| drop(gone)).is_none();
                match std::mem::replace(&mut model.callers[c], MCaller::Done) {
                    MCaller::Leader(flight) => {
                        model.dropped += 1;
                        model.abandon(flight);
                    }
                    MCaller::Waiting(flight) => {
                        model.hits += 1;
                        model.flights[flight].queue.retain(|&w| w != c);
                    }
                    MCaller::Launcher(flight) => {
                        model.flights[flight].launcher = None;
                    }
                    MCaller::Promoted(flight) => {
                        model.hits += 1;
                        model.abandon(flight);
                    }
                    MCaller::Ready(_, counted) => model.hits += u64::from(counted),
                    MCaller::Done => {}
                }
            }
            Op::Poll(i) => {
                let Some(c) = pick(i, real.len()) else {
                    continue;
                };
                if !matches!(real[c], Real::Waiter(_) | Real::Detached(..)) {
                    continue;
                }
                if let Some(woken) = pending[c].take() {
                    if matches!(model.callers[c], MCaller::Ready(..) | MCaller::Promoted(_)) {
                        assert!(
                            woken.0.load(Ordering::SeqCst),
                            "a pending waiter was not woken"
                        );
                    }
                }
                let hook = match model.callers[c] {
                    MCaller::Ready(_, true) => Some(Hook::WaiterFinished),
                    MCaller::Promoted(_) => Some(Hook::Takeover),
                    _ => None,
                };
                hook_fires = hook.is_some_and(|hook| model.fires(&[hook]));
                let woken = Arc::new(Woken::default());
                let waker = context(&woken);
                let mut cx = Context::from_waker(&waker);
                let state = model.callers[c].clone();
                match &mut real[c] {
                    Real::Waiter(waiter) => match (user(|| waiter.poll(&mut cx)), state) {
                        (None, state) => {
                            step_panicked = true;
                            panicked_call(&mut model, c, state);
                            let gone = std::mem::replace(&mut real[c], Real::Done);
                            assert!(user(|| drop(gone)).is_some(), "one panic per step");
                        }
                        (Some(Poll::Pending), MCaller::Waiting(_)) => pending[c] = Some(woken),
                        (Some(Poll::Ready(Waited::Outcome(got))), MCaller::Ready(want, _)) => {
                            assert_eq!(outcome_of(got), want);
                            model.hits += 1;
                            model.callers[c] = MCaller::Done;
                            real[c] = Real::Done;
                        }
                        (
                            Some(Poll::Ready(Waited::Promoted(leader))),
                            MCaller::Promoted(flight),
                        ) => {
                            model.takeovers += 1;
                            model.executions += 1;
                            model.callers[c] = MCaller::Leader(flight);
                            real[c] = Real::Leader(leader);
                        }
                        (polled, expected) => {
                            panic!("poll mismatch: {polled:?} vs {expected:?}")
                        }
                    },
                    Real::Detached(call, slot) => {
                        let slot = slot.clone();
                        match (user(|| Pin::new(&mut *call).poll(&mut cx)), state) {
                            (None, state) => {
                                step_panicked = true;
                                panicked_call(&mut model, c, state);
                                let gone = std::mem::replace(&mut real[c], Real::Done);
                                assert!(user(|| drop(gone)).is_some(), "one panic per step");
                            }
                            (Some(Poll::Pending), MCaller::Waiting(_) | MCaller::Launcher(_)) => {
                                pending[c] = Some(woken)
                            }
                            (Some(Poll::Pending), MCaller::Promoted(flight)) => {
                                // Promoted, the call launched its own work.
                                assert!(call.role().is_some_and(Role::is_leader));
                                let leader = slot.borrow_mut().take().expect("the work launched");
                                model.takeovers += 1;
                                model.executions += 1;
                                model.callers[c] = MCaller::Launcher(flight);
                                model.flights[flight].launcher = Some(c);
                                model.callers.push(MCaller::Leader(flight));
                                real.push(Real::Work(leader));
                                pending[c] = Some(woken);
                                pending.push(None);
                            }
                            (Some(Poll::Ready(got)), MCaller::Ready(want, counted)) => {
                                let role = call.role();
                                assert_eq!(outcome_of(got), want);
                                assert_eq!(
                                    role.map(Role::is_leader),
                                    Some(!counted),
                                    "a launcher leads, a joined call waits"
                                );
                                model.hits += u64::from(counted);
                                model.callers[c] = MCaller::Done;
                                real[c] = Real::Done;
                            }
                            (polled, expected) => {
                                panic!("detached poll mismatch: {polled:?} vs {expected:?}")
                            }
                        }
                    }
                    _ => unreachable!("checked above"),
                }
            }
            Op::Deadline(i) => {
                let Some(c) = pick(i, real.len()) else {
                    continue;
                };
                if !matches!(real[c], Real::Waiter(_)) {
                    continue;
                }
                let Real::Waiter(waiter) = std::mem::replace(&mut real[c], Real::Done) else {
                    unreachable!("checked above")
                };
                pending[c] = None;
                let hooks: &[Hook] = match model.callers[c] {
                    MCaller::Waiting(_) => &[Hook::Timeout, Hook::WaiterFinished],
                    MCaller::Ready(..) => &[Hook::WaiterFinished],
                    MCaller::Promoted(_) => &[Hook::Takeover],
                    ref other => panic!("a waiter in state {other:?}"),
                };
                hook_fires = model.fires(hooks);
                let waited = user(|| waiter.wait_deadline(Instant::now()));
                let state = std::mem::replace(&mut model.callers[c], MCaller::Done);
                match (waited, state) {
                    (None, MCaller::Waiting(flight)) => {
                        step_panicked = true;
                        model.hits += 1;
                        model.timeouts += 1;
                        model.flights[flight].queue.retain(|&w| w != c);
                    }
                    (None, MCaller::Ready(..)) => {
                        step_panicked = true;
                        model.hits += 1;
                    }
                    (None, MCaller::Promoted(flight)) => {
                        step_panicked = true;
                        model.hits += 1;
                        model.abandon(flight);
                    }
                    (Some(None), MCaller::Waiting(flight)) => {
                        model.hits += 1;
                        model.timeouts += 1;
                        model.flights[flight].queue.retain(|&w| w != c);
                    }
                    (Some(Some(Waited::Outcome(got))), MCaller::Ready(want, _)) => {
                        assert_eq!(outcome_of(got), want);
                        model.hits += 1;
                    }
                    (Some(Some(Waited::Promoted(leader))), MCaller::Promoted(flight)) => {
                        model.takeovers += 1;
                        model.executions += 1;
                        model.callers[c] = MCaller::Leader(flight);
                        real[c] = Real::Leader(leader);
                    }
                    (waited, state) => panic!("wait_deadline mismatch: {waited:?} vs {state:?}"),
                }
            }
            Op::Forget(key) => {
                let expected = model.active(key);
                assert_eq!(group.forget(&key), expected.is_some());
                if let Some(f) = expected {
                    model.flights[f].forgotten = true;
                }
            }
            Op::ForgetAll => {
                let expected = model
                    .flights
                    .iter_mut()
                    .filter(|f| !f.ended && !f.forgotten)
                    .map(|f| f.forgotten = true)
                    .count();
                assert_eq!(group.forget_all(), expected);
            }
        }

        // A step panics exactly when its armed hook or a bomb's clone went off in it.
        let bomb_fired = bombs
            .iter()
            .filter(|b| b.fired.load(Ordering::SeqCst))
            .count()
            > fired_before;
        assert_eq!(
            counts.fired.load(Ordering::SeqCst),
            hook_fires,
            "the armed hook fires when the model says"
        );
        if bomb_fired {
            model.panicked_user_code = true;
        }
        assert_eq!(
            step_panicked,
            hook_fires || bomb_fired,
            "a step panics exactly when its user code does"
        );

        assert_eq!(
            group.in_flight(),
            model.in_flight(),
            "in_flight after {model:?}"
        );
        for key in 0..KEYS {
            assert_eq!(group.waiters(&key), model.waiters(key), "waiters({key})");
            assert_eq!(group.contains(&key), model.active(key).is_some());
        }
        if !model.panicked_user_code {
            let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
            assert_eq!(load(&counts.executions), model.executions, "misses");
            assert_eq!(load(&counts.hits), model.hits, "hits");
            assert_eq!(load(&counts.takeovers), model.takeovers, "takeovers");
            assert_eq!(load(&counts.timeouts), model.timeouts, "timeouts");
            assert_eq!(load(&counts.completed), model.completed);
            assert_eq!(load(&counts.failed), model.failed);
            assert_eq!(load(&counts.panicked), model.panicked);
            assert_eq!(load(&counts.dropped), model.dropped);
            assert_eq!(load(&counts.flights_started), model.flights.len() as u64);
            assert_eq!(load(&counts.flights_finished), model.flights_finished);
        }
    }

    // Every caller leaves: nothing may remain (a hook still armed is disarmed first).
    *counts.armed.lock().unwrap() = None;
    drop(real);
    assert_eq!(group.in_flight(), 0);
    if !model.panicked_user_code {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(
            load(&counts.flights_started),
            load(&counts.flights_finished)
        );
    }
}
proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct(concat!(
            env!("CARGO_TARGET_TMPDIR"),
            "/model.proptest-regressions"
        )))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn takeover_policy_matches_the_model(
        ops in proptest::collection::vec(op(), 1..80),
        one_shard in any::<bool>(),
    ) {
        run(ops, false, one_shard);
    }

    #[test]
    fn fail_waiters_policy_matches_the_model(
        ops in proptest::collection::vec(op(), 1..80),
        one_shard in any::<bool>(),
    ) {
        run(ops, true, one_shard);
    }
}
