//! Model-based test of the reuse window (DESIGN rule 16): random sequences of operations —
//! calls that never refresh (`enter`), blocking calls that may (`call_here_refreshing`, on
//! a spawner that holds each refresh until a step runs it, makes it fail or panic, or drops
//! it), detached calls that may (`rt::Detached`, whose launched work and refreshes are
//! held the same way), leaders completing, failing, panicking or dropped (a waiter takes
//! over), waiters polling or leaving, a manual clock moving on, `forget`, `forget_all`,
//! `purge_expired` —
//! applied to a real group with a reuse window and to a small reference model. Groups vary:
//! with or without an error policy (an error's window is its number modulo 4 seconds, none
//! at 0), a refresh threshold, a bound on the values kept.
//!
//! The model keeps, per key, the value a flight stored (when, until when, when it is due
//! for a refresh), the flight that may store the next one, and the state of its refresh,
//! and predicts each call's role (leader, waiter, or reused with its age), its value, and
//! whether the work runs. After every step the two must agree on those, on the refreshes
//! held, on flights and waiters, on the observer's counts of reuses, refreshes started and
//! refreshes failed, and on `reusable()`.
//!
//! Expired values: the group drops them lazily (the one a look-up finds, a few more on
//! every call, all on `purge_expired`), so which of them are still held after a step
//! depends on the store's sharding. The model does not guess: in a *lazy* case it checks
//! `reusable()` between the values within their window and those plus the expired values
//! it has not seen dropped (exact after a `PurgeExpired` step), and accepts either answer
//! from a `forget` that only such a value could make true. An *eager* case calls
//! `purge_expired()` after every step and checks its count and `reusable()` exactly; cases
//! with a bound on the values kept are always eager, since whether a value is admitted
//! depends on how many expired ones are still counted.
//!
//! Not covered here: a caller whose look-up missed and who registers after another flight
//! stored the key's value needs two threads between the look-up and the registration (the
//! loom models `expiry_races_a_join` and `forget_races_a_refresh_publication` cover those
//! races); and user code panicking in hooks or clones (the no-window model covers those).
//!
//! Failing cases are persisted in the target directory
//! (`target/tmp/model_reuse.proptest-regressions`), never in the source tree. A failure
//! prints its minimal case; to keep one for good, add it as a named `#[test]` calling `run`.
#![cfg(all(feature = "std", not(loom)))]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use singleflight_core::rt::{Detached, Launch};
use singleflight_core::{
    CallFuture, Entered, Error, FlightInfo, Group, Leader, ObservedKey, Observer, PanicMessage,
    Role, Waited, Waiter,
};

// The workspace's one watchdog: a hang (a lost wake-up, say) fails this binary in bounded
// time instead of stalling the run.
#[path = "support/watchdog.rs"]
mod watchdog;
pub use watchdog::{TEST_LIMIT, Watchdog};

// The clock and the spawner the tests drive by hand.
#[path = "support/manual.rs"]
mod manual;
pub use manual::{Held, Job, Manual};

const KEYS: u8 = 3;

/// The reuse window of a value, in seconds.
const WINDOW: u64 = 6;

/// A value, or an error (of fallible work).
type V = Result<u32, u32>;

type G = Group<u8, V, Hashing>;

/// The keys' hashes: spread over the group's shards, or all in one shard of the flight
/// table and one of the store, so that the keys' values share one expiry queue (where a
/// value stored with a short window waits behind one with a longer window, and stale
/// entries of replaced or forgotten values pile up).
#[derive(Clone, Copy, Debug)]
struct Hashing {
    clustered: bool,
}

struct KeyHasher {
    clustered: bool,
    hash: u64,
}

impl BuildHasher for Hashing {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher {
            clustered: self.clustered,
            hash: 0,
        }
    }
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        if self.clustered {
            // The shard is picked from the upper half, which is zero for every key.
            self.hash
        } else {
            self.hash.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.hash = self.hash.wrapping_mul(31).wrapping_add(u64::from(byte) + 1);
        }
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The error policy: an error is kept for its number modulo 4 seconds (0: not kept).
fn error_window(error: &u32) -> Option<Duration> {
    Some(secs(u64::from(*error % 4)))
}

/// What work does when it runs (or, for a held refresh, `Drop`: it never runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    Value(u32),
    Error(u32),
    Panic,
    Drop,
}

#[derive(Clone, Debug)]
enum Op {
    /// `enter`: leads, waits or is served; never refreshes.
    Call(u8),
    /// A detached call (`rt::Detached`) polled once, then dropped: served (maybe starting a
    /// refresh), or it launches its work or joins, and leaves (the launched work goes on).
    Detached(u8),
    /// `call_here_refreshing` with a deadline already passed (a caller that would wait
    /// times out at once); its work does what the plan says if it runs here.
    Refreshing(u8, Plan),
    /// A held leader ends its flight as the plan says (`Drop`: dropped, a waiter takes over).
    Finish(usize, Plan),
    /// A waiter polls once.
    Poll(usize),
    /// A waiter is dropped.
    Leave(usize),
    /// Held work (a refresh, or a detached call's launched work) runs as the plan says
    /// (`Drop`: a refresh's spawner drops it unrun, a launched leader is dropped).
    RunRefresh(usize, Plan),
    Advance(u64),
    Forget(u8),
    ForgetAll,
    PurgeExpired,
}

fn inline_plan() -> impl Strategy<Value = Plan> {
    prop_oneof![
        3 => (0..50u32).prop_map(Plan::Value),
        2 => (0..8u32).prop_map(Plan::Error),
        1 => Just(Plan::Panic),
    ]
}

fn plan() -> impl Strategy<Value = Plan> {
    prop_oneof![5 => inline_plan(), 1 => Just(Plan::Drop)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..KEYS).prop_map(Op::Call),
        2 => (0..KEYS).prop_map(Op::Detached),
        4 => (0..KEYS, inline_plan()).prop_map(|(k, p)| Op::Refreshing(k, p)),
        3 => (any::<usize>(), plan()).prop_map(|(i, p)| Op::Finish(i, p)),
        2 => any::<usize>().prop_map(Op::Poll),
        1 => any::<usize>().prop_map(Op::Leave),
        3 => (any::<usize>(), plan()).prop_map(|(i, p)| Op::RunRefresh(i, p)),
        4 => (1..=3u64).prop_map(Op::Advance),
        1 => (0..KEYS).prop_map(Op::Forget),
        1 => Just(Op::ForgetAll),
        1 => Just(Op::PurgeExpired),
    ]
}

/// How the group under test is made, and how the model checks expired values.
#[derive(Clone, Copy, Debug)]
struct Config {
    /// Errors are kept under [`error_window`].
    errors: bool,
    /// `max_reusable`.
    max: Option<usize>,
    /// `refresh_after`, in seconds (shorter than the window).
    after: Option<u64>,
    /// `purge_expired()` after every step, and exact checks (see the module docs).
    eager: bool,
    /// Every key in one shard ([`Hashing`]).
    clustered: bool,
}

fn config(bounded: bool) -> impl Strategy<Value = Config> {
    let max = if bounded { 1..=2usize } else { 0..=0 };
    (
        any::<bool>(),
        max,
        proptest::option::of(1..WINDOW),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(move |(errors, max, after, eager, clustered)| Config {
            errors,
            max: bounded.then_some(max),
            after,
            eager: eager || bounded,
            clustered,
        })
}

/// Keys a detached call can borrow for as long as it lives.
static KEY_NAMES: [u8; KEYS as usize] = [0, 1, 2];

/// Launches a detached call's work by keeping its leader, for a later step to end.
struct Stash(Rc<RefCell<Option<Leader<Arc<G>>>>>);

impl Launch<Arc<G>> for Stash {
    fn launch(self, leader: Leader<Arc<G>>, _failed: fn(&V) -> bool) {
        *self.0.borrow_mut() = Some(leader);
    }
}

/// The observer's counts of what the reuse window does.
#[derive(Default)]
struct Counts {
    reused: AtomicU64,
    refresh_started: AtomicU64,
    refresh_failed: AtomicU64,
}

impl Observer for Counts {
    fn reused(&self, _: Option<&str>, _: &dyn ObservedKey) {
        self.reused.fetch_add(1, Ordering::SeqCst);
    }
    fn refresh_started(&self, _: &FlightInfo<'_>) {
        self.refresh_started.fetch_add(1, Ordering::SeqCst);
    }
    fn refresh_failed(&self, _: &FlightInfo<'_>) {
        self.refresh_failed.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Value(V),
    Panicked,
    LeaderDropped,
}

fn outcome_of(got: Result<V, Error>) -> Outcome {
    match got {
        Ok(v) => Outcome::Value(v),
        Err(Error::Panicked(_)) => Outcome::Panicked,
        Err(Error::LeaderDropped) => Outcome::LeaderDropped,
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

#[derive(Debug)]
struct MFlight {
    key: u8,
    forgotten: bool,
    ended: bool,
    /// Callers waiting, oldest first (not counting one promoted and not yet told).
    queue: VecDeque<usize>,
}

#[derive(Clone, Debug, PartialEq)]
enum MCaller {
    Leader(usize),
    Waiting(usize),
    Promoted(usize),
    Ready(Outcome),
    Done,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum MRefresh {
    #[default]
    Idle,
    Running,
    Failed,
}

/// A value a flight stored; times in seconds of the manual clock.
#[derive(Clone, Debug)]
struct Kept {
    value: V,
    stored: u64,
    expires: u64,
    refresh_at: Option<u64>,
}

/// A key's part of the store. An expired `kept` may or may not still be held by the group
/// (see the module docs); it is never served.
#[derive(Debug, Default)]
struct MKey {
    kept: Option<Kept>,
    /// The flight that stores its outcome when it ends, if reusable.
    pending: Option<usize>,
    refresh: MRefresh,
}

/// What a look-up and registration lead to.
enum Found {
    Reused { value: V, age: u64, refreshes: bool },
    Waiter(usize),
    Leader,
}

#[derive(Debug)]
struct Model {
    config: Config,
    now: u64,
    keys: [MKey; KEYS as usize],
    flights: Vec<MFlight>,
    callers: Vec<MCaller>,
    /// Held work (refreshes, detached calls' launched work): its flights, in the order
    /// it was launched.
    jobs: Vec<usize>,
    /// Times a refreshing call's work ran (here or as a refresh).
    runs: u64,
    reused: u64,
    refresh_started: u64,
    refresh_failed: u64,
}

impl Model {
    fn new(config: Config) -> Self {
        Self {
            config,
            now: 0,
            keys: Default::default(),
            flights: Vec::new(),
            callers: Vec::new(),
            jobs: Vec::new(),
            runs: 0,
            reused: 0,
            refresh_started: 0,
            refresh_failed: 0,
        }
    }

    fn key(&mut self, key: u8) -> &mut MKey {
        &mut self.keys[usize::from(key)]
    }

    fn active(&self, key: u8) -> Option<usize> {
        self.flights
            .iter()
            .position(|f| f.key == key && !f.forgotten && !f.ended)
    }

    fn live(&self, key: u8) -> Option<&Kept> {
        self.keys[usize::from(key)]
            .kept
            .as_ref()
            .filter(|kept| kept.expires > self.now)
    }

    /// Values within their window.
    fn live_values(&self) -> usize {
        (0..KEYS).filter(|&k| self.live(k).is_some()).count()
    }

    /// Expired values not known to be dropped.
    fn expired_values(&self) -> usize {
        self.keys.iter().filter(|k| k.kept.is_some()).count() - self.live_values()
    }

    /// An entry with neither a value nor a pending flight is gone, and its refresh state
    /// with it.
    fn tidy(&mut self, key: u8) {
        let k = self.key(key);
        if k.kept.is_none() && k.pending.is_none() {
            k.refresh = MRefresh::Idle;
        }
    }

    fn purge(&mut self) -> usize {
        let now = self.now;
        let mut purged = 0;
        for key in 0..KEYS {
            let k = self.key(key);
            if k.kept.as_ref().is_some_and(|kept| kept.expires <= now) {
                k.kept = None;
                purged += 1;
            }
            self.tidy(key);
        }
        purged
    }

    fn new_flight(&mut self, key: u8) -> usize {
        self.flights.push(MFlight {
            key,
            forgotten: false,
            ended: false,
            queue: VecDeque::new(),
        });
        let flight = self.flights.len() - 1;
        // **track**: its outcome may be stored.
        self.key(key).pending = Some(flight);
        flight
    }

    /// A call for `key` registers (`refreshing`: it can start a refresh). A caller that
    /// joins is queued as `caller`.
    fn lookup(&mut self, key: u8, refreshing: bool, caller: usize) -> Found {
        let now = self.now;
        if let Some(kept) = self.live(key).cloned() {
            let k = &self.keys[usize::from(key)];
            let refreshes = refreshing
                && k.refresh == MRefresh::Idle
                && k.pending.is_none()
                && kept.refresh_at.is_some_and(|at| at <= now)
                && self.active(key).is_none();
            self.reused += 1;
            if refreshes {
                let flight = self.new_flight(key);
                self.key(key).refresh = MRefresh::Running;
                self.jobs.push(flight);
                self.refresh_started += 1;
            }
            return Found::Reused {
                value: kept.value,
                age: now - kept.stored,
                refreshes,
            };
        }
        // The look-up drops an expired value it finds.
        self.key(key).kept = None;
        self.tidy(key);
        match self.active(key) {
            Some(flight) => {
                self.flights[flight].queue.push_back(caller);
                Found::Waiter(flight)
            }
            None => Found::Leader,
        }
    }

    /// Flight `flight` ends with `outcome` (`None`: a panic or a dropped leader; `bool`:
    /// the value stands for a failure): **store** if it is the key's pending flight and the
    /// outcome is reusable, or **abandon**.
    fn publish(&mut self, flight: usize, outcome: Option<(V, bool)>) {
        let key = self.flights[flight].key;
        if self.keys[usize::from(key)].pending != Some(flight) {
            // Forgotten (or, impossible here, overtaken): stores nothing.
            return;
        }
        let (now, config) = (self.now, self.config);
        let held = self.keys.iter().filter(|k| k.kept.is_some()).count();
        let k = &mut self.keys[usize::from(key)];
        k.pending = None;
        let refreshing = k.refresh == MRefresh::Running;
        let window = match outcome {
            Some((_, false)) => Some(WINDOW),
            Some((Err(error), true)) if config.errors && !refreshing => {
                error_window(&error).map(|w| w.as_secs())
            }
            _ => None,
        }
        .filter(|&w| w > 0);
        let admitted = k.kept.is_some() || config.max.is_none_or(|max| held < max);
        match (outcome, window) {
            (Some((value, failed)), Some(window)) if admitted => {
                k.kept = Some(Kept {
                    value,
                    stored: now,
                    expires: now + window,
                    refresh_at: config.after.filter(|_| !failed).map(|after| now + after),
                });
                k.refresh = MRefresh::Idle;
            }
            _ => {
                if refreshing {
                    k.refresh = MRefresh::Failed;
                }
                self.refresh_failed += u64::from(refreshing);
                self.tidy(key);
            }
        }
    }

    /// Flight `flight` ended: its waiters have `outcome`.
    fn end(&mut self, flight: usize, outcome: Outcome) {
        let f = &mut self.flights[flight];
        f.ended = true;
        for waiter in f.queue.drain(..) {
            self.callers[waiter] = MCaller::Ready(outcome.clone());
        }
    }

    /// The leader of `flight` went away without an outcome: the oldest waiter takes over,
    /// or the flight ends.
    fn abandon(&mut self, flight: usize) {
        if let Some(next) = self.flights[flight].queue.pop_front() {
            self.callers[next] = MCaller::Promoted(flight);
        } else {
            self.publish(flight, None);
            self.end(flight, Outcome::LeaderDropped);
        }
    }

    /// Flight `flight` ran its work to `plan` (not `Drop`).
    fn ran(&mut self, flight: usize, plan: Plan) {
        match plan {
            Plan::Value(n) => {
                self.publish(flight, Some((Ok(n), false)));
                self.end(flight, Outcome::Value(Ok(n)));
            }
            Plan::Error(e) => {
                self.publish(flight, Some((Err(e), true)));
                self.end(flight, Outcome::Value(Err(e)));
            }
            Plan::Panic => {
                self.publish(flight, None);
                self.end(flight, Outcome::Panicked);
            }
            Plan::Drop => unreachable!("work that never ran"),
        }
    }

    fn forget(&mut self, key: u8) {
        if let Some(flight) = self.active(key) {
            self.flights[flight].forgotten = true;
        }
        *self.key(key) = MKey::default();
    }
}

enum Real<'g> {
    Leader(Leader<&'g G>),
    Waiter(Waiter<&'g G>),
    Done,
}

/// Work held for a later step to run.
enum Work {
    /// A refresh a refreshing call handed to the spawner, with the plan its work follows.
    Spawned { job: Job, plan: Arc<Mutex<Plan>> },
    /// The leader of a detached call's work (its own flight's, or a refresh's).
    Launched(Leader<Arc<G>>),
}

struct Noop;

impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// Silences the work's deliberate panics (messages starting `model:`).
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

/// The `i`th (modulo their number) of the items that `is` picks, if any.
fn pick<T>(items: &[T], i: usize, is: impl Fn(&T) -> bool) -> Option<usize> {
    let picked: Vec<usize> = (0..items.len()).filter(|&c| is(&items[c])).collect();
    (!picked.is_empty()).then(|| picked[i % picked.len()])
}

fn run(config: Config, ops: Vec<Op>) {
    let _watchdog = watchdog!();
    quiet();
    let clock = Manual::default();
    let counts = Arc::new(Counts::default());
    let held = Held::default();
    let runs = Arc::new(AtomicU64::new(0));
    let mut group = G::with_hasher(Hashing {
        clustered: config.clustered,
    })
    .with_observer(counts.clone())
    .reuse_for(secs(WINDOW), clock.clone());
    if config.errors {
        group = group.reuse_errors(error_window);
    }
    if let Some(max) = config.max {
        group = group.max_reusable(max);
    }
    if let Some(after) = config.after {
        group = group.refresh_after(secs(after));
    }
    let group = Arc::new(group);
    let mut model = Model::new(config);
    let mut real: Vec<Real<'_>> = Vec::new();
    let mut jobs: Vec<Work> = Vec::new();
    let waker = Waker::from(Arc::new(Noop));

    for op in ops {
        match op {
            Op::Call(key) => {
                let c = model.callers.len();
                let found = model.lookup(key, false, c);
                let entered = group.enter(&key).expect("no re-entrancy here");
                match (entered, found) {
                    (Entered::Reused(reused), Found::Reused { value, age, .. }) => {
                        assert_eq!(reused.age(), secs(age), "age of the reused value");
                        assert_eq!(reused.into_value(), value, "the reused value");
                        model.callers.push(MCaller::Done);
                        real.push(Real::Done);
                    }
                    (Entered::Waiter(waiter), Found::Waiter(flight)) => {
                        model.callers.push(MCaller::Waiting(flight));
                        real.push(Real::Waiter(waiter));
                    }
                    (Entered::Leader(leader), Found::Leader) => {
                        let flight = model.new_flight(key);
                        model.callers.push(MCaller::Leader(flight));
                        real.push(Real::Leader(leader));
                    }
                    (entered, _) => panic!("call({key}): the group says {entered:?}"),
                }
            }
            Op::Refreshing(key, plan) => {
                let cell = Arc::new(Mutex::new(plan));
                let work = {
                    let (cell, runs) = (cell.clone(), runs.clone());
                    move || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let plan = *cell.lock().unwrap();
                        match plan {
                            Plan::Value(n) => Ok(n),
                            Plan::Error(e) => Err(e),
                            Plan::Panic | Plan::Drop => panic!("model: the work panics"),
                        }
                    }
                };
                let got = catch_unwind(AssertUnwindSafe(|| {
                    group.call_here_refreshing(
                        &key,
                        Some(Instant::now()),
                        work,
                        held.clone(),
                        Result::is_err,
                    )
                }));
                let spawned: Vec<Job> = held.drain();
                let c = model.callers.len();
                model.callers.push(MCaller::Done);
                real.push(Real::Done);
                match model.lookup(key, true, c) {
                    Found::Reused {
                        value,
                        age,
                        refreshes,
                    } => {
                        let role = Role::Reused { age: secs(age) };
                        assert_eq!(got.ok(), Some((Ok(value), role)), "refreshing({key})");
                        assert_eq!(spawned.len(), usize::from(refreshes), "refreshes started");
                        for job in spawned {
                            jobs.push(Work::Spawned {
                                job,
                                plan: cell.clone(),
                            });
                        }
                    }
                    Found::Waiter(flight) => {
                        let got = got.expect("a waiter does not panic");
                        assert_eq!(got, (Err(Error::Timeout), Role::Waiter));
                        assert!(spawned.is_empty());
                        model.flights[flight].queue.retain(|&w| w != c);
                    }
                    Found::Leader => {
                        assert!(spawned.is_empty());
                        let flight = model.new_flight(key);
                        model.runs += 1;
                        model.ran(flight, plan);
                        let leader = Role::Leader { shared: false };
                        match plan {
                            Plan::Value(n) => assert_eq!(got.ok(), Some((Ok(Ok(n)), leader))),
                            Plan::Error(e) => assert_eq!(got.ok(), Some((Ok(Err(e)), leader))),
                            _ => assert!(got.is_err(), "the work's panic goes on"),
                        }
                    }
                }
            }
            Op::Detached(key) => {
                let slot = Rc::new(RefCell::new(None));
                let mut call =
                    Detached::new(&group, &KEY_NAMES[usize::from(key)], Stash(slot.clone()));
                let polled = Pin::new(&mut call).poll(&mut Context::from_waker(&waker));
                let role = call.role();
                // The caller leaves: a launcher or a waiter that gives up.
                drop(call);
                let launched = slot.borrow_mut().take();
                let c = model.callers.len();
                model.callers.push(MCaller::Done);
                real.push(Real::Done);
                match model.lookup(key, true, c) {
                    Found::Reused {
                        value,
                        age,
                        refreshes,
                    } => {
                        assert_eq!(polled, Poll::Ready(Ok(value)), "detached({key})");
                        assert_eq!(role, Some(Role::Reused { age: secs(age) }));
                        assert_eq!(launched.is_some(), refreshes, "refresh started");
                        jobs.extend(launched.map(Work::Launched));
                    }
                    Found::Waiter(flight) => {
                        assert!(polled.is_pending() && launched.is_none());
                        model.flights[flight].queue.retain(|&w| w != c);
                    }
                    Found::Leader => {
                        assert!(polled.is_pending());
                        let leader = launched.expect("the work launched");
                        let flight = model.new_flight(key);
                        model.jobs.push(flight);
                        jobs.push(Work::Launched(leader));
                    }
                }
            }
            Op::Finish(i, plan) => {
                let Some(c) = pick(&real, i, |r| matches!(r, Real::Leader(_))) else {
                    continue;
                };
                let Real::Leader(leader) = std::mem::replace(&mut real[c], Real::Done) else {
                    unreachable!("picked")
                };
                let MCaller::Leader(flight) =
                    std::mem::replace(&mut model.callers[c], MCaller::Done)
                else {
                    panic!("the model's caller {c} is no leader")
                };
                match plan {
                    Plan::Value(n) => assert_eq!(leader.complete(Ok(n)), Ok(n)),
                    Plan::Error(e) => assert_eq!(leader.complete_failed(Err(e)), Err(e)),
                    Plan::Panic => leader.panicked(PanicMessage::new("model: boom")),
                    Plan::Drop => drop(leader),
                }
                match plan {
                    Plan::Drop => model.abandon(flight),
                    plan => model.ran(flight, plan),
                }
            }
            Op::Poll(i) => {
                let Some(c) = pick(&real, i, |r| matches!(r, Real::Waiter(_))) else {
                    continue;
                };
                let Real::Waiter(waiter) = &mut real[c] else {
                    unreachable!("picked")
                };
                let polled = waiter.poll(&mut Context::from_waker(&waker));
                match (polled, model.callers[c].clone()) {
                    (Poll::Pending, MCaller::Waiting(_)) => {}
                    (Poll::Ready(Waited::Outcome(got)), MCaller::Ready(want)) => {
                        assert_eq!(outcome_of(got), want, "waiter {c}'s outcome");
                        model.callers[c] = MCaller::Done;
                        real[c] = Real::Done;
                    }
                    (Poll::Ready(Waited::Promoted(leader)), MCaller::Promoted(flight)) => {
                        model.callers[c] = MCaller::Leader(flight);
                        real[c] = Real::Leader(leader);
                    }
                    (polled, want) => panic!("waiter {c}: polled {polled:?}, model {want:?}"),
                }
            }
            Op::Leave(i) => {
                let Some(c) = pick(&real, i, |r| matches!(r, Real::Waiter(_))) else {
                    continue;
                };
                real[c] = Real::Done;
                match std::mem::replace(&mut model.callers[c], MCaller::Done) {
                    MCaller::Waiting(flight) => model.flights[flight].queue.retain(|&w| w != c),
                    MCaller::Promoted(flight) => model.abandon(flight),
                    MCaller::Ready(_) => {}
                    other => panic!("a waiter in state {other:?}"),
                }
            }
            Op::RunRefresh(i, plan) => {
                if jobs.is_empty() {
                    continue;
                }
                let j = i % jobs.len();
                let flight = model.jobs.remove(j);
                match (jobs.remove(j), plan) {
                    (Work::Spawned { job, .. }, Plan::Drop) => {
                        drop(job);
                        // Dropped unrun, the refresh's flight ends as a panic: its callers
                        // gave their work away, and nobody takes over.
                        model.publish(flight, None);
                        model.end(flight, Outcome::Panicked);
                    }
                    (Work::Spawned { job, plan: cell }, plan) => {
                        *cell.lock().unwrap() = plan;
                        job();
                        model.runs += 1;
                        model.ran(flight, plan);
                    }
                    (Work::Launched(leader), plan) => {
                        match plan {
                            Plan::Value(n) => assert_eq!(leader.complete(Ok(n)), Ok(n)),
                            Plan::Error(e) => assert_eq!(leader.complete_failed(Err(e)), Err(e)),
                            Plan::Panic => leader.panicked(PanicMessage::new("model: boom")),
                            Plan::Drop => drop(leader),
                        }
                        match plan {
                            // A dropped leader guard: a waiter takes over, as for any leader.
                            Plan::Drop => model.abandon(flight),
                            plan => model.ran(flight, plan),
                        }
                    }
                }
            }
            Op::Advance(by) => {
                clock.advance(secs(by));
                model.now += by;
            }
            Op::Forget(key) => {
                let certain = model.active(key).is_some() || model.live(key).is_some();
                let expired = model.keys[usize::from(key)].kept.is_some() && !certain;
                let forgot = group.forget(&key);
                if !expired {
                    assert_eq!(forgot, certain, "forget({key})");
                }
                model.forget(key);
            }
            Op::ForgetAll => {
                let flights = (0..KEYS).filter(|&k| model.active(k).is_some()).count();
                let at_least = flights + model.live_values();
                let at_most = at_least + model.expired_values();
                let forgot = group.forget_all();
                assert!(
                    (at_least..=at_most).contains(&forgot),
                    "forget_all: {forgot}, model {at_least}..={at_most}"
                );
                for key in 0..KEYS {
                    model.forget(key);
                }
            }
            Op::PurgeExpired => {
                let at_most = model.expired_values();
                let purged = group.purge_expired();
                assert!(
                    purged <= at_most,
                    "purge_expired: {purged}, model ≤ {at_most}"
                );
                model.purge();
            }
        }

        if config.eager {
            let expired = model.purge();
            assert_eq!(
                group.purge_expired(),
                expired,
                "purge_expired after the step"
            );
        }
        let (live, expired) = (model.live_values(), model.expired_values());
        let reusable = group.reusable();
        assert!(
            (live..=live + expired).contains(&reusable),
            "reusable: {reusable}, model {live} within the window, {expired} expired"
        );
        assert_eq!(
            group.in_flight(),
            model.flights.iter().filter(|f| !f.ended).count(),
            "in_flight"
        );
        for key in 0..KEYS {
            let active = model.active(key);
            assert_eq!(group.contains(&key), active.is_some(), "contains({key})");
            let waiters = active.map_or(0, |f| model.flights[f].queue.len());
            assert_eq!(group.waiters(&key), waiters, "waiters({key})");
        }
        assert_eq!(jobs.len(), model.jobs.len(), "refreshes held");
        let load = |c: &AtomicU64| c.load(Ordering::SeqCst);
        assert_eq!(load(&runs), model.runs, "runs of refreshing calls' work");
        assert_eq!(load(&counts.reused), model.reused, "reuses observed");
        assert_eq!(
            load(&counts.refresh_started),
            model.refresh_started,
            "refreshes started"
        );
        assert_eq!(
            load(&counts.refresh_failed),
            model.refresh_failed,
            "refreshes failed"
        );
    }

    // Every caller leaves and every held refresh is dropped: nothing may remain.
    drop(real);
    drop(jobs);
    assert_eq!(group.in_flight(), 0);
}

/// An error kept one second waits in the expiry queue behind another key's value kept six:
/// a second on, the error is over all the same, and the next call leads.
#[test]
fn a_short_window_behind_a_longer_one_ends_on_time() {
    run(
        Config {
            errors: true,
            max: None,
            after: None,
            eager: false,
            clustered: true,
        },
        vec![
            Op::Refreshing(1, Plan::Value(0)),
            Op::Call(0),
            Op::Finish(0, Plan::Error(1)),
            Op::Advance(1),
            Op::Refreshing(0, Plan::Value(0)),
        ],
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct(concat!(
            env!("CARGO_TARGET_TMPDIR"),
            "/model_reuse.proptest-regressions"
        )))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_reuse_window_matches_the_model(
        config in config(false),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        run(config, ops);
    }

    #[test]
    fn a_bounded_store_matches_the_model(
        config in config(true),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        run(config, ops);
    }
}
