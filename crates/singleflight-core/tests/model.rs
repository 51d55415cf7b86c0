//! Model-based test: random sequences of operations — calls on a few keys, completions,
//! failures, panics, cancellations (of leaders and waiters), forget, forget_all, polls —
//! applied to the real group and to a small reference model. After every step the two
//! must agree on roles, outcomes, executions, flight and waiter counts, and the observer's
//! counters; and a waiter whose last poll was pending must have been woken before its
//! outcome or promotion is there to take.
//!
//! Failing cases are persisted in the target directory
//! (`target/tmp/model.proptest-regressions`), never in the source tree: a rerun on the same
//! machine replays them first, and nothing is written where it could be committed by
//! accident. A failure prints its minimal operation sequence; to keep one for good, add it
//! as a named `#[test]` calling `run` with that sequence.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use proptest::prelude::*;
use singleflight_core::{
    DEFAULT_SHARDS, Entry, Error, Execution, Group, Leader, LeaderDropPolicy, Observer,
    PanicMessage, Waited, Waiter,
};

const KEYS: u8 = 3;

#[derive(Clone, Debug)]
enum Op {
    Call(u8),
    Complete(usize, u32),
    Fail(usize, u32),
    Panic(usize),
    Drop(usize),
    Poll(usize),
    Forget(u8),
    ForgetAll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..KEYS).prop_map(Op::Call),
        2 => (any::<usize>(), any::<u32>()).prop_map(|(c, v)| Op::Complete(c, v)),
        1 => (any::<usize>(), any::<u32>()).prop_map(|(c, v)| Op::Fail(c, v)),
        1 => any::<usize>().prop_map(Op::Panic),
        2 => any::<usize>().prop_map(Op::Drop),
        3 => any::<usize>().prop_map(Op::Poll),
        1 => (0..KEYS).prop_map(Op::Forget),
        1 => Just(Op::ForgetAll),
    ]
}

/// Counts every observer hook.
#[derive(Default, Debug)]
struct Counts {
    flights_started: AtomicU64,
    flights_finished: AtomicU64,
    executions: AtomicU64,
    hits: AtomicU64,
    takeovers: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    dropped: AtomicU64,
}

impl Observer for Counts {
    fn flight_started(&self) {
        self.flights_started.fetch_add(1, Ordering::Relaxed);
    }
    fn flight_finished(&self) {
        self.flights_finished.fetch_add(1, Ordering::Relaxed);
    }
    fn execution_started(&self) -> u64 {
        self.executions.fetch_add(1, Ordering::Relaxed)
    }
    fn execution_finished(&self, _started: u64, execution: Execution) {
        let counter = match execution {
            Execution::Completed => &self.completed,
            Execution::Failed => &self.failed,
            Execution::Panicked => &self.panicked,
            Execution::Dropped => &self.dropped,
            _ => unreachable!("no other executions exist"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    fn joined(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }
    fn takeover(&self) {
        self.takeovers.fetch_add(1, Ordering::Relaxed);
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
    /// Callers waiting, oldest first (not counting one promoted and not yet told).
    queue: VecDeque<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum MCaller {
    Leader(usize),
    Waiting(usize),
    Promoted(usize),
    Ready(Outcome),
    Done,
}

#[derive(Default, Debug)]
struct Model {
    flights: Vec<MFlight>,
    callers: Vec<MCaller>,
    fail_waiters: bool,
    executions: u64,
    hits: u64,
    takeovers: u64,
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

    fn call(&mut self, key: u8) -> MCaller {
        let caller = self.callers.len();
        let state = match self.active(key) {
            Some(flight) => {
                self.flights[flight].queue.push_back(caller);
                MCaller::Waiting(flight)
            }
            None => {
                self.flights.push(MFlight {
                    key,
                    forgotten: false,
                    ended: false,
                    queue: VecDeque::new(),
                });
                self.executions += 1;
                MCaller::Leader(self.flights.len() - 1)
            }
        };
        self.callers.push(state.clone());
        state
    }

    fn end(&mut self, flight: usize, outcome: Outcome) {
        let f = &mut self.flights[flight];
        f.ended = true;
        self.flights_finished += 1;
        for waiter in f.queue.drain(..) {
            self.callers[waiter] = MCaller::Ready(outcome.clone());
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

enum Real<'g> {
    Leader(Leader<&'g Group<u8, u32>>),
    Waiter(Waiter<&'g Group<u8, u32>>),
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

fn poll_once<'g>(
    waiter: &mut Waiter<&'g Group<u8, u32>>,
    woken: &Arc<Woken>,
) -> Poll<Waited<&'g Group<u8, u32>>> {
    woken.0.store(false, Ordering::SeqCst);
    waiter.poll(&mut Context::from_waker(&Waker::from(woken.clone())))
}

/// `one_shard` puts every key in one shard, whose flights then spill past its inline slots
/// into its hash table.
fn run(ops: Vec<Op>, fail_waiters: bool, one_shard: bool) {
    let counts = Arc::new(Counts::default());
    let policy = if fail_waiters {
        LeaderDropPolicy::FailWaiters
    } else {
        LeaderDropPolicy::Takeover
    };
    let group = Group::<u8, u32>::new()
        .with_shards(if one_shard { 1 } else { DEFAULT_SHARDS })
        .with_leader_drop_policy(policy)
        .with_observer(counts.clone());
    let mut model = Model {
        fail_waiters,
        ..Model::default()
    };
    let mut real: Vec<Real<'_>> = Vec::new();
    // Per caller: the waker of its last poll, if that poll was pending.
    let mut pending: Vec<Option<Arc<Woken>>> = Vec::new();

    for op in ops {
        let pick = |i: usize, len: usize| (len > 0).then(|| i % len);
        match op {
            Op::Call(key) => {
                let expected = model.call(key);
                match (group.enter(&key).expect("no re-entrancy here"), expected) {
                    (Entry::Leader(l), MCaller::Leader(_)) => real.push(Real::Leader(l)),
                    (Entry::Waiter(w), MCaller::Waiting(_)) => real.push(Real::Waiter(w)),
                    (entry, expected) => panic!("role mismatch: {entry:?} vs {expected:?}"),
                }
                pending.push(None);
            }
            Op::Complete(i, value) | Op::Fail(i, value) => {
                let Some(c) = pick(i, real.len()) else {
                    continue;
                };
                let Real::Leader(_) = &real[c] else { continue };
                let Real::Leader(leader) = std::mem::replace(&mut real[c], Real::Done) else {
                    unreachable!()
                };
                let MCaller::Leader(flight) = model.callers[c] else {
                    panic!("model disagrees: {:?} is no leader", model.callers[c])
                };
                let returned = if matches!(op, Op::Fail(..)) {
                    model.failed += 1;
                    leader.complete_failed(value)
                } else {
                    model.completed += 1;
                    leader.complete(value)
                };
                assert_eq!(returned, value);
                model.callers[c] = MCaller::Done;
                model.end(flight, Outcome::Value(value));
            }
            Op::Panic(i) => {
                let Some(c) = pick(i, real.len()) else {
                    continue;
                };
                let Real::Leader(_) = &real[c] else { continue };
                let Real::Leader(leader) = std::mem::replace(&mut real[c], Real::Done) else {
                    unreachable!()
                };
                let MCaller::Leader(flight) = model.callers[c] else {
                    panic!("no leader")
                };
                leader.panicked(PanicMessage::new("boom"));
                model.panicked += 1;
                model.callers[c] = MCaller::Done;
                model.end(flight, Outcome::Panicked);
            }
            Op::Drop(i) => {
                let Some(c) = pick(i, real.len()) else {
                    continue;
                };
                drop(std::mem::replace(&mut real[c], Real::Done));
                match std::mem::replace(&mut model.callers[c], MCaller::Done) {
                    MCaller::Leader(flight) => {
                        model.dropped += 1;
                        model.abandon(flight);
                    }
                    MCaller::Waiting(flight) => {
                        model.hits += 1;
                        model.flights[flight].queue.retain(|&w| w != c);
                    }
                    MCaller::Promoted(flight) => {
                        model.hits += 1;
                        model.abandon(flight);
                    }
                    MCaller::Ready(_) => model.hits += 1,
                    MCaller::Done => {}
                }
            }
            Op::Poll(i) => {
                let Some(c) = pick(i, real.len()) else {
                    continue;
                };
                let Real::Waiter(waiter) = &mut real[c] else {
                    continue;
                };
                if let Some(woken) = pending[c].take() {
                    if matches!(model.callers[c], MCaller::Ready(_) | MCaller::Promoted(_)) {
                        assert!(
                            woken.0.load(Ordering::SeqCst),
                            "a pending waiter was not woken"
                        );
                    }
                }
                let woken = Arc::new(Woken::default());
                let polled = poll_once(waiter, &woken);
                match (polled, model.callers[c].clone()) {
                    (Poll::Pending, MCaller::Waiting(_)) => pending[c] = Some(woken),
                    (Poll::Ready(Waited::Outcome(got)), MCaller::Ready(want)) => {
                        let got = match got {
                            Ok(v) => Outcome::Value(v),
                            Err(Error::Panicked(m)) => {
                                assert_eq!(m.as_str(), "boom");
                                Outcome::Panicked
                            }
                            Err(Error::LeaderDropped) => Outcome::LeaderDropped,
                            Err(other) => panic!("unexpected error {other:?}"),
                        };
                        assert_eq!(got, want);
                        model.hits += 1;
                        model.callers[c] = MCaller::Done;
                        real[c] = Real::Done;
                    }
                    (Poll::Ready(Waited::Promoted(leader)), MCaller::Promoted(flight)) => {
                        model.takeovers += 1;
                        model.executions += 1;
                        model.callers[c] = MCaller::Leader(flight);
                        real[c] = Real::Leader(leader);
                    }
                    (polled, expected) => panic!("poll mismatch: {polled:?} vs {expected:?}"),
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

        assert_eq!(
            group.in_flight(),
            model.in_flight(),
            "in_flight after {model:?}"
        );
        for key in 0..KEYS {
            assert_eq!(group.waiters(&key), model.waiters(key), "waiters({key})");
            assert_eq!(group.contains(&key), model.active(key).is_some());
        }
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(load(&counts.executions), model.executions, "misses");
        assert_eq!(load(&counts.hits), model.hits, "hits");
        assert_eq!(load(&counts.takeovers), model.takeovers, "takeovers");
        assert_eq!(load(&counts.completed), model.completed);
        assert_eq!(load(&counts.failed), model.failed);
        assert_eq!(load(&counts.panicked), model.panicked);
        assert_eq!(load(&counts.dropped), model.dropped);
        assert_eq!(load(&counts.flights_started), model.flights.len() as u64);
        assert_eq!(load(&counts.flights_finished), model.flights_finished);
    }

    // Every caller leaves: nothing may remain.
    drop(real);
    assert_eq!(group.in_flight(), 0);
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    assert_eq!(
        load(&counts.flights_started),
        load(&counts.flights_finished)
    );
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
