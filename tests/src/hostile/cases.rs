//! The cases, one body each, generic over the [`Front`]. The module docs of
//! [`hostile`](super) tabulate what each expects.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use singleflight_core::{Error, LeaderDropPolicy, Observer};

use super::{
    Case, ClonePlan, Front, HKey, HWork, Hook, Trap, Tripwire, case_list, stage, wait_for,
    wait_for_blocking,
};
use crate::Gate;
use singleflight_conformance::{Caller, Report};

/// The name of the key most cases use.
const KEY: u64 = 1;

/// The cases of front-end `F`, labelled `front`.
pub(super) fn cases<F: Front>(front: &'static str) -> Vec<Case> {
    let mut cases = case_list![F, front;
        clone_panics_on_the_leaders_side,
        clone_panics_on_the_first_waiter,
        clone_panics_on_a_middle_waiter,
        clone_panics_on_the_last_cloning_waiter,
        leader_started_panics,
        flight_started_panics,
        execution_started_panics,
        leader_finished_panics,
        execution_finished_panics,
        flight_finished_panics,
        waiter_finished_panics,
        waiter_finished_panics_for_a_waiter_that_leaves,
        takeover_panics,
        execution_started_panics_at_a_takeover,
        timeout_panics,
        eq_panics_for_a_key_in_flight,
        eq_panics_for_a_new_key,
        hash_panics_for_a_key_in_flight,
        hash_panics_for_a_new_key,
        key_to_owned_panics,
        key_drop_calls_back_when_its_flight_ends,
        key_drop_calls_back_after_forget,
        work_drop_panics,
    ];
    if F::CANCELLABLE {
        cases.extend(case_list![F, front;
            leader_started_panics_under_fail_waiters,
            hook_panics_while_a_leader_unwinds,
            clone_panics_in_detached_work,
            detached_launcher_is_not_a_waiter,
        ]);
    }
    cases
}

/// A case's group and its execution counter.
struct Setup<F: Front> {
    group: Arc<F::Group>,
    started: Arc<AtomicUsize>,
}

impl<F: Front> Setup<F> {
    fn new(policy: LeaderDropPolicy, observer: Option<Arc<dyn Observer>>) -> Self {
        Self {
            group: Arc::new(F::group(policy, observer)),
            started: Arc::default(),
        }
    }

    fn plain() -> Self {
        Self::new(LeaderDropPolicy::Takeover, None)
    }

    fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    fn work(&self, n: u64) -> HWork {
        HWork::value(&self.started, n)
    }

    /// Starts a leader for `key` whose work waits for `gate`, and waits until it runs.
    async fn leader(&self, key: HKey, work: HWork) -> Caller {
        let before = self.started();
        let leader = F::spawn_call(&self.group, key, work, None);
        wait_for("the leader runs its work", || self.started() > before).await;
        leader
    }

    /// Starts `n` waiters on `key` (their own work would return `value`) and waits until
    /// they joined.
    async fn waiters(&self, key: u64, n: usize, value: u64) -> Vec<Caller> {
        let before = F::waiters(&self.group, &HKey::new(key));
        let waiters = (0..n)
            .map(|_| F::spawn_call(&self.group, HKey::new(key), self.work(value), None))
            .collect();
        wait_for("the waiters join", || {
            F::waiters(&self.group, &HKey::new(key)) == before + n
        })
        .await;
        waiters
    }

    /// Every case's end: nothing in flight, and the next call on `key` leads.
    async fn next_call_leads(self, key: u64) {
        let Self { group, started } = self;
        assert_eq!(F::in_flight(&group), 0, "in_flight() after the case");
        assert_eq!(F::waiters(&group, &HKey::new(key)), 0);
        assert!(!F::contains(&group, &HKey::new(key)));
        let before = started.load(Ordering::SeqCst);
        let next = F::spawn_call(&group, HKey::new(key), HWork::value(&started, 99), None);
        assert_eq!(
            join(next, "the next call returns").await,
            Got::Led(Ok(99)),
            "the next call on the key leads"
        );
        assert_eq!(started.load(Ordering::SeqCst), before + 1);
        assert_eq!(F::in_flight(&group), 0);
    }
}

/// Waits for a caller to end (bounded by the watchdog, which names `what`).
async fn join(caller: Caller, what: &'static str) -> Got {
    stage(what);
    caller.join().await.into()
}

async fn join_all(callers: Vec<Caller>, what: &'static str) -> Vec<Got> {
    let mut reports = Vec::new();
    for caller in callers {
        reports.push(join(caller, what).await);
    }
    reports
}

/// How a caller ended, with its role reduced to led or joined.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Got {
    /// Returned, having run the work.
    Led(Result<u64, Error<String>>),
    /// Returned, having joined another caller's flight.
    Joined(Result<u64, Error<String>>),
    /// Panicked with this message.
    Panicked(String),
    /// Dropped on request.
    Cancelled,
}

impl From<Report> for Got {
    fn from(report: Report) -> Self {
        match report {
            Report::Returned(output, role) if role.is_leader() => Self::Led(output),
            Report::Returned(output, _) => Self::Joined(output),
            Report::Panicked(message) => Self::Panicked(message),
            Report::Cancelled => Self::Cancelled,
        }
    }
}

impl Got {
    fn led(&self) -> bool {
        matches!(self, Self::Led(_))
    }

    fn value(&self) -> Option<u64> {
        match self {
            Self::Led(Ok(n)) | Self::Joined(Ok(n)) => Some(*n),
            _ => None,
        }
    }
}

fn panicked(message: &str) -> Got {
    Got::Panicked(format!("expected: {message}"))
}

/// Asserts that exactly one of `reports` is `odd` and the others are `usual`.
#[track_caller]
fn one_of(reports: &[Got], odd: &Got, usual: &Got) {
    let odd_ones = reports.iter().filter(|r| *r == odd).count();
    let usual_ones = reports.iter().filter(|r| *r == usual).count();
    assert!(
        odd_ones == 1 && usual_ones == reports.len() - 1,
        "expected one {odd:?} and the rest {usual:?}: {reports:?}"
    );
}

/// A leader whose value's clone #`k` panics, and four waiters.
async fn clone_panics<F: Front>(k: usize) {
    let plan = ClonePlan::new(k);
    let setup = Setup::<F>::plain();
    let gate = Gate::new();
    let leader = setup
        .leader(HKey::new(KEY), setup.work(1).gated(&gate).planned(&plan))
        .await;
    let waiters = setup.waiters(KEY, 4, 2).await;
    gate.open();
    let leader = join(leader, "the leader returns").await;
    let waiters = join_all(waiters, "the waiters return").await;
    let value = Got::Joined(Ok(1));
    if k == 1 {
        assert_eq!(leader, panicked("clone #1"));
        assert!(waiters.iter().all(|w| *w == value), "{waiters:?}");
    } else {
        assert_eq!(leader, Got::Led(Ok(1)));
        one_of(&waiters, &panicked(&format!("clone #{k}")), &value);
    }
    assert_eq!(setup.started(), 1, "the work ran once");
    setup.next_call_leads(KEY).await;
}

pub(super) async fn clone_panics_on_the_leaders_side<F: Front>() {
    clone_panics::<F>(1).await;
}

pub(super) async fn clone_panics_on_the_first_waiter<F: Front>() {
    clone_panics::<F>(2).await;
}

pub(super) async fn clone_panics_on_a_middle_waiter<F: Front>() {
    clone_panics::<F>(3).await;
}

pub(super) async fn clone_panics_on_the_last_cloning_waiter<F: Front>() {
    clone_panics::<F>(4).await;
}

/// An observer panicking in armed hooks (once each), whose first panic waits until two
/// more callers, started from threads of their own, joined the flight of [`KEY`].
struct Joiners<F: Front> {
    tripwire: Arc<Tripwire>,
    /// The group, once made (the observer is made first).
    group: Arc<OnceLock<Weak<F::Group>>>,
    /// The two callers, once they joined.
    callers: Arc<OnceLock<Vec<Caller>>>,
    started: Arc<AtomicUsize>,
}

impl<F: Front> Joiners<F> {
    fn new(hooks: &[Hook]) -> Self {
        let this = Self {
            tripwire: Tripwire::new(hooks),
            group: Arc::default(),
            callers: Arc::default(),
            started: Arc::default(),
        };
        let (group, callers, started) = (
            this.group.clone(),
            this.callers.clone(),
            this.started.clone(),
        );
        this.tripwire.before(move || {
            let group = group
                .get()
                .and_then(Weak::upgrade)
                .expect("the group is set before any call");
            let joined = [2, 3]
                .map(|n| F::spawn_thread_call(&group, HKey::new(KEY), HWork::value(&started, n)));
            wait_for_blocking("two callers join during the hook", || {
                F::waiters(&group, &HKey::new(KEY)) == 2
            });
            let _ = callers.set(joined.into());
        });
        this
    }
}

/// A hook that panics while a flight starts, with two callers joining at that moment.
/// `then` lists more hooks to panic once each.
async fn start_hook_panics<F: Front>(
    hook: Hook,
    then: &[Hook],
    policy: LeaderDropPolicy,
) -> (Got, Vec<Got>, Arc<AtomicUsize>) {
    let mut hooks = vec![hook];
    hooks.extend_from_slice(then);
    let Joiners {
        tripwire,
        group: group_slot,
        callers: joiners,
        started,
    } = Joiners::<F>::new(&hooks);
    let group = Arc::new(F::group(policy, Some(tripwire.clone())));
    let _ = group_slot.set(Arc::downgrade(&group));
    let leader = F::spawn_call(&group, HKey::new(KEY), HWork::value(&started, 1), None);
    let leader = join(leader, "the leader's call returns").await;
    assert_eq!(leader, panicked(&format!("observer {hook:?}")));
    let joiners = Arc::into_inner(joiners)
        .and_then(OnceLock::into_inner)
        .expect("the callers joined during the hook");
    let joiners = join_all(joiners, "the joiners return").await;
    let mut fired = tripwire.fired();
    fired.sort_by_key(|hook| format!("{hook:?}"));
    let mut expected = hooks.clone();
    expected.sort_by_key(|hook| format!("{hook:?}"));
    assert_eq!(fired, expected, "every armed hook fired once");
    Setup::<F> {
        group,
        started: started.clone(),
    }
    .next_call_leads(KEY)
    .await;
    (leader, joiners, started)
}

/// A start hook panics: the flight is abandoned as if its leader were dropped; the oldest
/// joiner takes over.
async fn start_hook_panics_takeover<F: Front>(hook: Hook) {
    let (_, joiners, started) = start_hook_panics::<F>(hook, &[], LeaderDropPolicy::Takeover).await;
    // Two joiners: one took over and ran its work (whose value both get).
    let leader = joiners
        .iter()
        .position(|r| r.led())
        .unwrap_or_else(|| panic!("a joiner takes over: {joiners:?}"));
    let value = joiners[leader].value().expect("the new leader's value");
    for (i, report) in joiners.iter().enumerate() {
        let expected = if i == leader {
            Got::Led(Ok(value))
        } else {
            Got::Joined(Ok(value))
        };
        assert_eq!(*report, expected);
    }
    // The leader that panicked never ran its work; the joiner's ran once, then the next
    // call's.
    assert_eq!(started.load(Ordering::SeqCst), 2);
}

pub(super) async fn leader_started_panics<F: Front>() {
    start_hook_panics_takeover::<F>(Hook::LeaderStarted).await;
}

pub(super) async fn flight_started_panics<F: Front>() {
    start_hook_panics_takeover::<F>(Hook::FlightStarted).await;
}

pub(super) async fn execution_started_panics<F: Front>() {
    start_hook_panics_takeover::<F>(Hook::ExecutionStarted).await;
}

/// Under `FailWaiters`, the joiners of a flight whose start hook panicked fail.
pub(super) async fn leader_started_panics_under_fail_waiters<F: Front>() {
    let (_, joiners, started) =
        start_hook_panics::<F>(Hook::LeaderStarted, &[], LeaderDropPolicy::FailWaiters).await;
    for report in &joiners {
        assert_eq!(*report, Got::Joined(Err(Error::LeaderDropped)));
    }
    assert_eq!(started.load(Ordering::SeqCst), 1, "only the next call ran");
}

/// The promoted joiner's `hook` panics too: leadership passes to the other joiner.
async fn takeover_hook_panics<F: Front>(hook: Hook) {
    let (_, joiners, started) =
        start_hook_panics::<F>(Hook::LeaderStarted, &[hook], LeaderDropPolicy::Takeover).await;
    let odd = panicked(&format!("observer {hook:?}"));
    let promoted = joiners.iter().position(|r| *r == odd);
    let leader = joiners.iter().position(|r| r.led());
    assert!(
        promoted.is_some() && leader.is_some(),
        "one joiner panics taking over, the other leads: {joiners:?}"
    );
    assert_eq!(started.load(Ordering::SeqCst), 2);
}

pub(super) async fn takeover_panics<F: Front>() {
    takeover_hook_panics::<F>(Hook::Takeover).await;
}

pub(super) async fn execution_started_panics_at_a_takeover<F: Front>() {
    // The start hook is `leader_started` (not the default's `execution_started`), so the
    // armed `execution_started` fires at the takeover only.
    takeover_hook_panics::<F>(Hook::ExecutionStarted).await;
}

/// A hook that runs when the leader finishes panics: the leader's call panics, its two
/// waiters get the value.
async fn finish_hook_panics<F: Front>(hook: Hook) {
    let tripwire = Tripwire::new(&[hook]);
    let setup = Setup::<F>::new(LeaderDropPolicy::Takeover, Some(tripwire.clone()));
    let gate = Gate::new();
    let leader = setup
        .leader(HKey::new(KEY), setup.work(1).gated(&gate))
        .await;
    let waiters = setup.waiters(KEY, 2, 2).await;
    gate.open();
    assert_eq!(
        join(leader, "the leader returns").await,
        panicked(&format!("observer {hook:?}"))
    );
    for waiter in join_all(waiters, "the waiters get the value").await {
        assert_eq!(waiter, Got::Joined(Ok(1)));
    }
    assert_eq!(tripwire.fired(), [hook]);
    assert_eq!(setup.started(), 1);
    setup.next_call_leads(KEY).await;
}

pub(super) async fn leader_finished_panics<F: Front>() {
    finish_hook_panics::<F>(Hook::LeaderFinished).await;
}

pub(super) async fn execution_finished_panics<F: Front>() {
    finish_hook_panics::<F>(Hook::ExecutionFinished).await;
}

pub(super) async fn flight_finished_panics<F: Front>() {
    finish_hook_panics::<F>(Hook::FlightFinished).await;
}

/// `waiter_finished` panics for the first waiter that receives the value: its call panics, the
/// other waiter and the leader get the value.
pub(super) async fn waiter_finished_panics<F: Front>() {
    let tripwire = Tripwire::new(&[Hook::WaiterFinished]);
    let setup = Setup::<F>::new(LeaderDropPolicy::Takeover, Some(tripwire.clone()));
    let gate = Gate::new();
    let leader = setup
        .leader(HKey::new(KEY), setup.work(1).gated(&gate))
        .await;
    let waiters = setup.waiters(KEY, 2, 2).await;
    gate.open();
    assert_eq!(join(leader, "the leader returns").await, Got::Led(Ok(1)));
    let waiters = join_all(waiters, "the waiters return").await;
    one_of(
        &waiters,
        &panicked("observer WaiterFinished"),
        &Got::Joined(Ok(1)),
    );
    setup.next_call_leads(KEY).await;
}

/// `waiter_finished` panics for a waiter that leaves without the outcome (async: dropped; blocking:
/// timed out): the call that left panics, the flight goes on for the others.
pub(super) async fn waiter_finished_panics_for_a_waiter_that_leaves<F: Front>() {
    let tripwire = Tripwire::new(&[Hook::WaiterFinished]);
    let setup = Setup::<F>::new(LeaderDropPolicy::Takeover, Some(tripwire.clone()));
    let gate = Gate::new();
    let leader = setup
        .leader(HKey::new(KEY), setup.work(1).gated(&gate))
        .await;
    let waiter = setup.waiters(KEY, 1, 2).await;
    let leaving = if F::CANCELLABLE {
        let leaving = setup.waiters(KEY, 1, 3).await.remove(0);
        leaving.cancel();
        leaving
    } else {
        F::spawn_call(
            &setup.group,
            HKey::new(KEY),
            setup.work(3),
            Some(F::TIMEOUT),
        )
    };
    assert_eq!(
        join(leaving, "the leaving waiter returns").await,
        panicked("observer WaiterFinished")
    );
    assert_eq!(F::waiters(&setup.group, &HKey::new(KEY)), 1);
    gate.open();
    assert_eq!(join(leader, "the leader returns").await, Got::Led(Ok(1)));
    for waiter in join_all(waiter, "the waiter returns").await {
        assert_eq!(waiter, Got::Joined(Ok(1)));
    }
    assert_eq!(tripwire.fired(), [Hook::WaiterFinished]);
    setup.next_call_leads(KEY).await;
}

/// A leading call is dropped while its task unwinds from an unrelated panic, and the
/// dropped leader's `execution_finished` hook (for [`Execution::Dropped`](
/// singleflight_core::Execution::Dropped)) panics too: that second panic is caught and
/// discarded (escaping, it would abort), the caller's own panic goes on, and the flight is
/// taken over.
pub(super) async fn hook_panics_while_a_leader_unwinds<F: Front>() {
    let tripwire = Tripwire::new(&[Hook::ExecutionDropped]);
    let setup = Setup::<F>::new(LeaderDropPolicy::Takeover, Some(tripwire.clone()));
    let (held, go) = (Gate::new(), Gate::new());
    let leader = F::spawn_unwinding_leader(
        &setup.group,
        HKey::new(KEY),
        setup.work(1).gated(&held),
        &go,
    )
    .expect("an async front-end can hold a call");
    wait_for("the leader runs its work", || setup.started() == 1).await;
    let waiters = setup.waiters(KEY, 2, 2).await;
    go.open();
    assert_eq!(
        join(leader, "the unwinding caller returns").await,
        panicked("caller unwinds")
    );
    let waiters = join_all(waiters, "the waiters return").await;
    let new_leader = waiters
        .iter()
        .position(|r| r.led())
        .unwrap_or_else(|| panic!("a waiter takes over: {waiters:?}"));
    for (i, report) in waiters.iter().enumerate() {
        let expected = if i == new_leader {
            Got::Led(Ok(2))
        } else {
            Got::Joined(Ok(2))
        };
        assert_eq!(*report, expected);
    }
    assert_eq!(tripwire.fired(), [Hook::ExecutionDropped]);
    held.open();
    setup.next_call_leads(KEY).await;
}

/// `timeout` panics for a waiter that gives up: its call panics instead of returning
/// `Timeout`; the flight goes on for the leader and the other waiter.
pub(super) async fn timeout_panics<F: Front>() {
    let tripwire = Tripwire::new(&[Hook::Timeout]);
    let setup = Setup::<F>::new(LeaderDropPolicy::Takeover, Some(tripwire.clone()));
    let gate = Gate::new();
    let leader = setup
        .leader(HKey::new(KEY), setup.work(1).gated(&gate))
        .await;
    let waiter = setup.waiters(KEY, 1, 2).await;
    let impatient = F::spawn_call(
        &setup.group,
        HKey::new(KEY),
        setup.work(3),
        Some(F::TIMEOUT),
    );
    assert_eq!(
        join(impatient, "the impatient waiter times out").await,
        panicked("observer Timeout")
    );
    assert_eq!(F::waiters(&setup.group, &HKey::new(KEY)), 1);
    gate.open();
    assert_eq!(join(leader, "the leader returns").await, Got::Led(Ok(1)));
    for waiter in join_all(waiter, "the waiter returns").await {
        assert_eq!(waiter, Got::Joined(Ok(1)));
    }
    setup.next_call_leads(KEY).await;
}

/// A caller whose key panics while a flight of [`KEY`] runs (with one waiter): its call
/// panics with `message`, the flight goes on.
async fn key_panics_beside_a_flight<F: Front>(hostile: HKey, message: &str) {
    let setup = Setup::<F>::plain();
    let gate = Gate::new();
    let leader = setup
        .leader(HKey::new(KEY), setup.work(1).gated(&gate))
        .await;
    let waiters = setup.waiters(KEY, 1, 2).await;
    let caller = F::spawn_call(&setup.group, hostile, setup.work(3), None);
    assert_eq!(
        join(caller, "the hostile caller returns").await,
        panicked(message)
    );
    assert_eq!(F::in_flight(&setup.group), 1);
    assert_eq!(F::waiters(&setup.group, &HKey::new(KEY)), 1);
    gate.open();
    assert_eq!(join(leader, "the leader returns").await, Got::Led(Ok(1)));
    for waiter in join_all(waiters, "the waiter returns").await {
        assert_eq!(waiter, Got::Joined(Ok(1)));
    }
    assert_eq!(setup.started(), 1);
    setup.next_call_leads(KEY).await;
}

pub(super) async fn eq_panics_for_a_key_in_flight<F: Front>() {
    key_panics_beside_a_flight::<F>(HKey::new(KEY).trap(Trap::Eq), "eq").await;
}

/// A new key whose hash collides with the flight's: the probe compares them.
pub(super) async fn eq_panics_for_a_new_key<F: Front>() {
    key_panics_beside_a_flight::<F>(HKey::new(7).in_bucket(KEY).trap(Trap::Eq), "eq").await;
}

pub(super) async fn hash_panics_for_a_key_in_flight<F: Front>() {
    key_panics_beside_a_flight::<F>(HKey::new(KEY).trap(Trap::Hash), "hash").await;
}

pub(super) async fn hash_panics_for_a_new_key<F: Front>() {
    key_panics_beside_a_flight::<F>(HKey::new(7).trap(Trap::Hash), "hash").await;
}

/// The key's `ToOwned` (its `Clone`) panics as its flight would start: nothing is left
/// registered, and the flight of another key goes on.
pub(super) async fn key_to_owned_panics<F: Front>() {
    key_panics_beside_a_flight::<F>(HKey::new(7).trap(Trap::Clone), "key clone").await;
    // (checked by the helper: `in_flight()` stayed 1 while the other flight ran.)
}

/// A drop callback that asks the group everything it can (and forgets an absent key),
/// counting its runs.
fn calling_back<F: Front>(group: &Arc<F::Group>, runs: &Arc<AtomicUsize>) -> super::OnDrop {
    let (group, runs) = (Arc::downgrade(group), Arc::clone(runs));
    Arc::new(move || {
        if let Some(group) = group.upgrade() {
            let key = HKey::new(KEY);
            let _ = F::in_flight(&group);
            let _ = F::contains(&group, &key);
            let _ = F::waiters(&group, &key);
            assert!(!F::forget(&group, &HKey::new(KEY + 1000)));
            runs.fetch_add(1, Ordering::SeqCst);
        }
    })
}

/// The group's copy of a key is dropped when its flight ends; its `Drop` calls back.
pub(super) async fn key_drop_calls_back_when_its_flight_ends<F: Front>() {
    let setup = Setup::<F>::plain();
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Gate::new();
    let key = HKey::new(KEY).on_drop(calling_back::<F>(&setup.group, &runs));
    let leader = setup.leader(key, setup.work(1).gated(&gate)).await;
    let waiters = setup.waiters(KEY, 1, 2).await;
    gate.open();
    assert_eq!(join(leader, "the leader returns").await, Got::Led(Ok(1)));
    for waiter in join_all(waiters, "the waiter returns").await {
        assert_eq!(waiter, Got::Joined(Ok(1)));
    }
    // The caller's key and the group's copy.
    wait_for("both keys are dropped", || runs.load(Ordering::SeqCst) == 2).await;
    setup.next_call_leads(KEY).await;
}

/// A forgotten flight ends while a newer flight of its key runs: dropping its key's copy
/// calls back (and must not remove or block the newer flight).
pub(super) async fn key_drop_calls_back_after_forget<F: Front>() {
    let setup = Setup::<F>::plain();
    let runs = Arc::new(AtomicUsize::new(0));
    let (old_gate, new_gate) = (Gate::new(), Gate::new());
    let key = HKey::new(KEY).on_drop(calling_back::<F>(&setup.group, &runs));
    let old = setup.leader(key, setup.work(1).gated(&old_gate)).await;
    assert!(F::forget(&setup.group, &HKey::new(KEY)));
    let new = setup
        .leader(HKey::new(KEY), setup.work(2).gated(&new_gate))
        .await;
    old_gate.open();
    assert_eq!(
        join(old, "the forgotten flight's leader returns").await,
        Got::Led(Ok(1))
    );
    wait_for("both keys are dropped", || runs.load(Ordering::SeqCst) == 2).await;
    assert!(F::contains(&setup.group, &HKey::new(KEY)));
    assert_eq!(F::in_flight(&setup.group), 1);
    new_gate.open();
    assert_eq!(
        join(new, "the new flight's leader returns").await,
        Got::Led(Ok(2))
    );
    setup.next_call_leads(KEY).await;
}

/// The leader's work panics when its state is dropped after producing its value. Async:
/// the leader's call panics and its waiters get the value. Blocking: the closure's state
/// drops inside the work, so it is the work panicking: waiters get `Panicked`.
pub(super) async fn work_drop_panics<F: Front>() {
    let setup = Setup::<F>::plain();
    let gate = Gate::new();
    let leader = setup
        .leader(HKey::new(KEY), setup.work(1).gated(&gate).bomb())
        .await;
    let waiters = setup.waiters(KEY, 2, 2).await;
    gate.open();
    assert_eq!(
        join(leader, "the leader returns").await,
        panicked("work dropped")
    );
    let expected = if F::CANCELLABLE {
        Ok(1)
    } else {
        Err(Error::Panicked(singleflight_core::PanicMessage::new(
            "expected: work dropped",
        )))
    };
    for waiter in join_all(waiters, "the waiters return").await {
        assert_eq!(waiter, Got::Joined(expected.clone()));
    }
    assert_eq!(setup.started(), 1, "the work ran once");
    setup.next_call_leads(KEY).await;
}

/// Detached work whose value's first clone panics: a panic in the spawned task stays in
/// that task, and a panic in a receiver's clone stays in that receiver's call. Which side
/// makes clone #1 (the task, for its receivers, or a receiver) is the core's choice; every
/// other caller gets the value, the work runs once, the key is free after.
pub(super) async fn clone_panics_in_detached_work<F: Front>() {
    let plan = ClonePlan::new(1);
    let setup = Setup::<F>::plain();
    let gate = Gate::new();
    let launcher = F::spawn_detached(
        &setup.group,
        HKey::new(KEY),
        setup.work(1).gated(&gate).planned(&plan),
    )
    .expect("an async front-end has detached calls");
    wait_for("the detached work runs", || setup.started() == 1).await;
    let waiters = setup.waiters(KEY, 2, 2).await;
    gate.open();
    let mut callers = vec![join(launcher, "the launcher returns").await];
    callers.extend(join_all(waiters, "the waiters return").await);
    let panicked_ones = callers
        .iter()
        .filter(|got| **got == panicked("clone #1"))
        .count();
    let with_value = [Got::Led(Ok(1)), Got::Joined(Ok(1))];
    assert!(
        panicked_ones <= 1
            && callers
                .iter()
                .all(|got| *got == panicked("clone #1") || with_value.contains(got)),
        "at most one receiver panics, every other caller gets the value: {callers:?}"
    );
    assert!(plan.clones() >= 1, "the value was cloned for its receivers");
    assert_eq!(setup.started(), 1, "the work ran once");
    setup.next_call_leads(KEY).await;
}

/// `waiters(key)` counts joined callers only: the caller that launched detached work is its
/// flight's leader.
pub(super) async fn detached_launcher_is_not_a_waiter<F: Front>() {
    let setup = Setup::<F>::plain();
    let gate = Gate::new();
    let launcher = F::spawn_detached(&setup.group, HKey::new(KEY), setup.work(1).gated(&gate))
        .expect("an async front-end has detached calls");
    wait_for("the detached work runs", || setup.started() == 1).await;
    assert_eq!(
        F::waiters(&setup.group, &HKey::new(KEY)),
        0,
        "the launcher is not a waiter"
    );
    let waiters = setup.waiters(KEY, 2, 2).await;
    assert_eq!(F::waiters(&setup.group, &HKey::new(KEY)), 2);
    gate.open();
    assert_eq!(
        join(launcher, "the launcher returns").await,
        Got::Led(Ok(1))
    );
    for waiter in join_all(waiters, "the waiters return").await {
        assert_eq!(waiter, Got::Joined(Ok(1)));
    }
    setup.next_call_leads(KEY).await;
}
