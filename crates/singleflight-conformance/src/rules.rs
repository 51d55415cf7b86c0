//! The rules of the semantics [contract](crate::contract), one async body each, generic over the
//! [`Harness`]. Each rule's docs name the contract rules it checks; [`RULES`](crate::RULES)
//! lists them with what each needs from a setup.
//!
//! Every body is `pub` so that a test can run one rule alone through [`check`](crate::check)
//! or [`run`](crate::run). A body panics when its setup breaks the rule (an assertion with
//! what it expected and what it got, or `gave up waiting until …`). Dropping a body's future
//! mid-way (it is not cancel safe) leaves its callers running until their gates open or
//! their threads end; [`run`](crate::run) only drops it with the whole executor.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use singleflight_core::{Error, Group, LeaderDropPolicy, Role};

use crate::fixtures::wait_within;
use crate::{
    Caller, Counts, Ends, Gate, Harness, Kind, ManualClock, Offload, Probe, Report, Spec, Value,
    Work,
};

/// Waits for `condition` with the setup's patience.
pub(crate) async fn wait<H: Harness>(what: &str, condition: impl FnMut() -> bool) {
    wait_within(H::PATIENCE, what, condition).await;
}

/// The kinds of call the setup accepts, among `kinds`.
fn supported<H: Harness>(kinds: &[Kind]) -> Vec<Kind> {
    kinds
        .iter()
        .copied()
        .filter(|&kind| H::CAPABILITIES.offload(kind).is_supported())
        .collect()
}

fn group<H: Harness>() -> Arc<H::Group> {
    Arc::new(H::group(LeaderDropPolicy::Takeover, None))
}

/// Starts a gated leader for `key` and waits until its work runs.
pub(crate) async fn gated_leader<H: Harness>(
    group: &Arc<H::Group>,
    key: &str,
    spec: Spec,
    probe: &Probe,
    gate: &Gate,
    value: u64,
) -> Caller {
    let before = probe.started();
    let leader = H::spawn_call(
        group,
        key,
        spec,
        Work::new(probe, Some(gate), Ends::Value(value)),
    );
    wait::<H>("the leader runs its work", || probe.started() > before).await;
    leader
}

/// Starts `n` waiters for `key` (their own work would return `value`) and waits until they
/// joined the flight.
pub(crate) async fn join_waiters<H: Harness>(
    group: &Arc<H::Group>,
    key: &str,
    spec: Spec,
    probe: &Probe,
    n: usize,
    value: u64,
) -> Vec<Caller> {
    let before = H::waiters(group, key);
    let waiters: Vec<_> = (0..n)
        .map(|_| H::spawn_call(group, key, spec, Work::new(probe, None, Ends::Value(value))))
        .collect();
    wait::<H>("the waiters join", || H::waiters(group, key) == before + n).await;
    waiters
}

/// Checks [contract](crate::contract) rules 1, 3, 13: one execution per flight, shared by every overlapping
/// caller; waiter counts.
pub async fn coalesces_concurrent_callers<H: Harness>() {
    let group = group::<H>();
    let (probe, gate) = (Probe::default(), Gate::new());
    let leader = gated_leader::<H>(&group, "k", Spec::CALL, &probe, &gate, 1).await;
    assert_eq!(H::in_flight(&group), 1);
    assert_eq!(H::waiters(&group, "k"), 0, "the leader is not a waiter");
    assert_eq!(H::waiters(&group, "absent"), 0);
    let waiters = join_waiters::<H>(&group, "k", Spec::CALL, &probe, 5, 2).await;
    assert_eq!(H::waiters(&group, "k"), 5);
    gate.open();
    assert_eq!(
        leader.join().await,
        Report::Returned(Ok(1), Role::Leader { shared: true })
    );
    for waiter in waiters {
        assert_eq!(waiter.join().await, Report::Returned(Ok(1), Role::Waiter));
    }
    assert_eq!(probe.started(), 1);
    assert_eq!(H::in_flight(&group), 0);
    assert_eq!(H::waiters(&group, "k"), 0);
}

/// Checks [contract](crate::contract) rule 1: different keys never wait on each other.
pub async fn different_keys_do_not_wait<H: Harness>() {
    let group = group::<H>();
    let (probe, gate) = (Probe::default(), Gate::new());
    let a = gated_leader::<H>(&group, "a", Spec::CALL, &probe, &gate, 1).await;
    let b = H::spawn_call(
        &group,
        "b",
        Spec::CALL,
        Work::new(&probe, None, Ends::Value(2)),
    );
    assert_eq!(
        b.join().await,
        Report::Returned(Ok(2), Role::Leader { shared: false })
    );
    assert!(!a.is_done());
    assert_eq!(H::in_flight(&group), 1);
    gate.open();
    assert_eq!(a.join().await.value(), Some(1));
    assert_eq!(H::in_flight(&group), 0);
}

/// Checks [contract](crate::contract) rule 12: a `String`-keyed group is called with `&str`; the flight is
/// found by borrowed key.
pub async fn borrowed_key_joins_without_allocating_a_key<H: Harness>() {
    let group = group::<H>();
    let (probe, gate) = (Probe::default(), Gate::new());
    let owned = String::from("user:42");
    let leader = gated_leader::<H>(&group, &owned, Spec::CALL, &probe, &gate, 42).await;
    assert!(H::contains(&group, "user:42"));
    assert!(!H::contains(&group, "user:43"));
    let waiters = join_waiters::<H>(&group, "user:42", Spec::CALL, &probe, 1, 0).await;
    gate.open();
    assert_eq!(leader.join().await.value(), Some(42));
    for waiter in waiters {
        assert_eq!(waiter.join().await.value(), Some(42));
    }
}

/// Checks [contract](crate::contract) rule 2: a fallible call shares the leader's error with every waiter;
/// nothing is retried.
pub async fn fallible_work_shares_the_error<H: Harness>() {
    let group = group::<H>();
    let (probe, gate) = (Probe::default(), Gate::new());
    let spec = Spec::CALL.fallible();
    let leader = H::spawn_call(
        &group,
        "k",
        spec,
        Work::new(&probe, Some(&gate), Ends::Fail("database is down")),
    );
    wait::<H>("the leader runs", || probe.started() == 1).await;
    let waiters = join_waiters::<H>(&group, "k", spec, &probe, 3, 9).await;
    gate.open();
    let failed = Err(Error::Failed("database is down".to_string()));
    assert_eq!(
        leader.join().await,
        Report::Returned(failed.clone(), Role::Leader { shared: true })
    );
    for waiter in waiters {
        assert_eq!(
            waiter.join().await,
            Report::Returned(failed.clone(), Role::Waiter)
        );
    }
    assert_eq!(probe.started(), 1);
    assert_eq!(H::in_flight(&group), 0);
    // Not poisoned: the next call runs the work again, and may succeed.
    let next = H::spawn_call(&group, "k", spec, Work::new(&probe, None, Ends::Value(1)));
    assert_eq!(
        next.join().await,
        Report::Returned(Ok(1), Role::Leader { shared: false })
    );
}

/// Checks [contract](crate::contract) rule 4: waiters of a panicking leader get `Panicked` with the message;
/// the leader's own call resumes the panic.
pub async fn panic_reaches_waiters_with_its_message<H: Harness>() {
    let group = group::<H>();
    let (probe, gate) = (Probe::default(), Gate::new());
    let leader = H::spawn_call(
        &group,
        "k",
        Spec::CALL,
        Work::new(&probe, Some(&gate), Ends::Panic("the work blew up")),
    );
    wait::<H>("the leader runs", || probe.started() == 1).await;
    let waiters = join_waiters::<H>(&group, "k", Spec::CALL, &probe, 3, 9).await;
    gate.open();
    assert_eq!(
        leader.join().await,
        Report::Panicked("the work blew up".to_string())
    );
    for waiter in waiters {
        match waiter.join().await {
            Report::Returned(Err(Error::Panicked(message)), Role::Waiter) => {
                assert_eq!(message.as_str(), "the work blew up");
            }
            other => panic!("a waiter of a panicked flight got {other:?}"),
        }
    }
    assert_eq!(probe.started(), 1, "waiters never re-run the work");
    assert_eq!(H::in_flight(&group), 0);
}

/// Checks [contract](crate::contract) rule 4: after a panic the key is not poisoned: the next call starts a
/// fresh flight.
pub async fn key_is_not_poisoned_after_a_panic<H: Harness>() {
    let group = group::<H>();
    let probe = Probe::default();
    let panicking = H::spawn_call(
        &group,
        "k",
        Spec::CALL,
        Work::new(&probe, None, Ends::Panic("once")),
    );
    assert_eq!(panicking.join().await, Report::Panicked("once".to_string()));
    let next = H::spawn_call(
        &group,
        "k",
        Spec::CALL,
        Work::new(&probe, None, Ends::Value(5)),
    );
    assert_eq!(
        next.join().await,
        Report::Returned(Ok(5), Role::Leader { shared: false })
    );
    assert_eq!(probe.started(), 2);
    assert_eq!(H::in_flight(&group), 0);
}

/// Checks [contract](crate::contract) rule 3: every call can tell whether it led or joined, for every kind of
/// call.
pub async fn role_tells_leader_from_waiter<H: Harness>() {
    for kind in supported::<H>(&[Kind::Call, Kind::Detached, Kind::Blocking]) {
        for spec in [Spec::CALL.kind(kind), Spec::CALL.kind(kind).fallible()] {
            let group = group::<H>();
            let (probe, gate) = (Probe::default(), Gate::new());
            let leader = gated_leader::<H>(&group, "k", spec, &probe, &gate, 3).await;
            // The caller of detached work waits on its own flight, and counts as a waiter.
            let base = H::waiters(&group, "k");
            let waiter = H::spawn_call(&group, "k", spec, Work::new(&probe, None, Ends::Value(4)));
            wait::<H>("the waiter joins", || H::waiters(&group, "k") == base + 1).await;
            gate.open();
            assert_eq!(
                leader.join().await,
                Report::Returned(Ok(3), Role::Leader { shared: true }),
                "{spec:?}"
            );
            assert_eq!(
                waiter.join().await,
                Report::Returned(Ok(3), Role::Waiter),
                "{spec:?}"
            );
            wait::<H>("the flight ends", || H::in_flight(&group) == 0).await;
        }
    }
}

/// Checks [contract](crate::contract) rule 5: a dropped leader's oldest waiter takes over and runs its own
/// work, the others wait for it, and at no moment do two executions run. (Blocking leaders
/// cannot be dropped: the leader finishes and everyone shares its value.)
pub async fn leader_drop_takeover_runs_one_execution_at_a_time<H: Harness>() {
    let counts = Arc::new(Counts::default());
    let group = Arc::new(H::group(LeaderDropPolicy::Takeover, Some(counts.clone())));
    let (probe, first, second) = (Probe::default(), Gate::new(), Gate::new());
    let leader = gated_leader::<H>(&group, "k", Spec::CALL, &probe, &first, 1).await;
    let oldest = H::spawn_call(
        &group,
        "k",
        Spec::CALL,
        Work::new(&probe, Some(&second), Ends::Value(2)),
    );
    wait::<H>("the oldest waiter joins", || H::waiters(&group, "k") == 1).await;
    let others = join_waiters::<H>(&group, "k", Spec::CALL, &probe, 2, 3).await;
    leader.cancel();
    if H::CAPABILITIES.cancellable {
        assert_eq!(leader.join().await, Report::Cancelled);
        wait::<H>("the oldest waiter takes over", || probe.started() == 2).await;
        assert_eq!(H::waiters(&group, "k"), 2, "the others keep waiting");
        assert_eq!(H::in_flight(&group), 1);
        first.open();
        second.open();
        assert_eq!(
            oldest.join().await,
            Report::Returned(Ok(2), Role::Leader { shared: true })
        );
        for other in others {
            assert_eq!(other.join().await, Report::Returned(Ok(2), Role::Waiter));
        }
        assert_eq!(Counts::get(&counts.takeovers), 1);
        assert_eq!(Counts::get(&counts.dropped), 1);
    } else {
        first.open();
        assert_eq!(
            leader.join().await,
            Report::Returned(Ok(1), Role::Leader { shared: true })
        );
        assert_eq!(oldest.join().await, Report::Returned(Ok(1), Role::Waiter));
        for other in others {
            assert_eq!(other.join().await, Report::Returned(Ok(1), Role::Waiter));
        }
        assert_eq!(probe.started(), 1);
    }
    assert_eq!(probe.max_running(), 1, "two executions ran at once");
    assert_eq!(H::in_flight(&group), 0);
}

/// Checks [contract](crate::contract) rule 5: under `FailWaiters`, a dropped leader's waiters all get
/// `LeaderDropped`, and the next call starts a new flight. (Blocking: the leader finishes;
/// waiters share its value.)
pub async fn leader_drop_fail_waiters<H: Harness>() {
    let group = Arc::new(H::group(LeaderDropPolicy::FailWaiters, None));
    let (probe, gate) = (Probe::default(), Gate::new());
    let leader = gated_leader::<H>(&group, "k", Spec::CALL, &probe, &gate, 1).await;
    let waiters = join_waiters::<H>(&group, "k", Spec::CALL, &probe, 3, 2).await;
    leader.cancel();
    if H::CAPABILITIES.cancellable {
        assert_eq!(leader.join().await, Report::Cancelled);
        for waiter in waiters {
            assert_eq!(
                waiter.join().await,
                Report::Returned(Err(Error::LeaderDropped), Role::Waiter)
            );
        }
        assert_eq!(probe.started(), 1, "nobody took over");
    } else {
        gate.open();
        assert_eq!(leader.join().await.value(), Some(1));
        for waiter in waiters {
            assert_eq!(waiter.join().await.value(), Some(1));
        }
    }
    assert_eq!(H::in_flight(&group), 0);
    let next = H::spawn_call(
        &group,
        "k",
        Spec::CALL,
        Work::new(&probe, None, Ends::Value(7)),
    );
    assert_eq!(
        next.join().await,
        Report::Returned(Ok(7), Role::Leader { shared: false })
    );
}

/// Checks [contract](crate::contract) rule 7: a dropped waiter leaves only itself.
pub async fn dropped_waiter_affects_no_one_else<H: Harness>() {
    let group = group::<H>();
    let (probe, gate) = (Probe::default(), Gate::new());
    let leader = gated_leader::<H>(&group, "k", Spec::CALL, &probe, &gate, 1).await;
    let mut waiters = join_waiters::<H>(&group, "k", Spec::CALL, &probe, 2, 2).await;
    let leaving = waiters.remove(0);
    leaving.cancel();
    let left = if H::CAPABILITIES.cancellable {
        assert_eq!(leaving.join().await, Report::Cancelled);
        assert_eq!(H::waiters(&group, "k"), 1);
        None
    } else {
        Some(leaving)
    };
    assert!(!leader.is_done());
    gate.open();
    assert_eq!(
        leader.join().await,
        Report::Returned(Ok(1), Role::Leader { shared: true })
    );
    assert_eq!(
        waiters.remove(0).join().await,
        Report::Returned(Ok(1), Role::Waiter)
    );
    if let Some(leaving) = left {
        assert_eq!(leaving.join().await.value(), Some(1));
    }
    assert_eq!(probe.started(), 1);
    assert_eq!(H::in_flight(&group), 0);
}

/// Checks [contract](crate::contract) rule 6: detached work runs exactly once and finishes even if every
/// caller goes away; a caller arriving meanwhile still joins it. (Blocking: callers cannot
/// leave; the leader's thread runs the work to its end all the same.)
pub async fn detached_work_survives_all_callers_leaving<H: Harness>() {
    let group = group::<H>();
    let (probe, gate) = (Probe::default(), Gate::new());
    let spec = Spec::CALL.kind(Kind::Detached);
    let first = gated_leader::<H>(&group, "k", spec, &probe, &gate, 1).await;
    let base = H::waiters(&group, "k");
    let second = H::spawn_call(&group, "k", spec, Work::new(&probe, None, Ends::Value(2)));
    wait::<H>("the second caller joins", || {
        H::waiters(&group, "k") == base + 1
    })
    .await;
    first.cancel();
    second.cancel();
    let (first_report, second_report) = if H::CAPABILITIES.cancellable {
        let reports = (first.join().await, second.join().await);
        assert_eq!(reports, (Report::Cancelled, Report::Cancelled));
        assert_eq!(H::in_flight(&group), 1, "the work goes on without callers");
        assert_eq!(H::waiters(&group, "k"), 0);
        (None, None)
    } else {
        (Some(first), Some(second))
    };
    let late = H::spawn_call(&group, "k", spec, Work::new(&probe, None, Ends::Value(3)));
    wait::<H>("a late caller joins", || {
        H::waiters(&group, "k")
            == if H::CAPABILITIES.cancellable {
                1
            } else {
                base + 2
            }
    })
    .await;
    gate.open();
    assert_eq!(late.join().await, Report::Returned(Ok(1), Role::Waiter));
    wait::<H>("the work finishes", || probe.finished() == 1).await;
    wait::<H>("the flight ends", || H::in_flight(&group) == 0).await;
    if let (Some(first), Some(second)) = (first_report, second_report) {
        assert_eq!(
            first.join().await,
            Report::Returned(Ok(1), Role::Leader { shared: true })
        );
        assert_eq!(second.join().await, Report::Returned(Ok(1), Role::Waiter));
    }
    assert_eq!(probe.started(), 1, "the work ran exactly once");
}

/// Checks [contract](crate::contract) rules 4, 6: a panic of detached work reaches every caller, the one that
/// started it included, as `Panicked` with the message. (Blocking: the leader's own call
/// resumes the panic.)
pub async fn detached_panic_reaches_every_caller<H: Harness>() {
    for kind in supported::<H>(&[Kind::Detached, Kind::Blocking]) {
        let group = group::<H>();
        let (probe, gate) = (Probe::default(), Gate::new());
        let spec = Spec::CALL.kind(kind).fallible();
        let first = H::spawn_call(
            &group,
            "k",
            spec,
            Work::new(&probe, Some(&gate), Ends::Panic("detached boom")),
        );
        wait::<H>("the work runs", || probe.started() == 1).await;
        let base = H::waiters(&group, "k");
        let second = H::spawn_call(&group, "k", spec, Work::new(&probe, None, Ends::Value(2)));
        wait::<H>("the second caller joins", || {
            H::waiters(&group, "k") == base + 1
        })
        .await;
        gate.open();
        let first = first.join().await;
        if H::CAPABILITIES.offload(kind) == Offload::Spawned {
            match first {
                Report::Returned(Err(Error::Panicked(message)), Role::Leader { shared: true }) => {
                    assert_eq!(message.as_str(), "detached boom");
                }
                other => panic!("the starter of panicking detached work got {other:?}"),
            }
        } else {
            assert_eq!(first, Report::Panicked("detached boom".to_string()));
        }
        match second.join().await {
            Report::Returned(Err(Error::Panicked(message)), Role::Waiter) => {
                assert_eq!(message.as_str(), "detached boom");
            }
            other => panic!("a waiter of panicking detached work got {other:?}"),
        }
        assert_eq!(probe.started(), 1);
        wait::<H>("the flight ends", || H::in_flight(&group) == 0).await;
    }
}

/// Checks [contract](crate::contract) rule 1 for blocking closures (tokio's `spawn_blocking`, smol's
/// `unblock`): they are coalesced like any work.
pub async fn blocking_pool_work_is_coalesced<H: Harness>() {
    let group = group::<H>();
    let (probe, gate) = (Probe::default(), Gate::new());
    let spec = Spec::CALL.kind(Kind::Blocking);
    let leader = gated_leader::<H>(&group, "k", spec, &probe, &gate, 11).await;
    let base = H::waiters(&group, "k");
    let waiters: Vec<_> = (0..4)
        .map(|_| H::spawn_call(&group, "k", spec, Work::new(&probe, None, Ends::Value(0))))
        .collect();
    wait::<H>("the waiters join", || H::waiters(&group, "k") == base + 4).await;
    gate.open();
    assert_eq!(
        leader.join().await,
        Report::Returned(Ok(11), Role::Leader { shared: true })
    );
    for waiter in waiters {
        assert_eq!(waiter.join().await, Report::Returned(Ok(11), Role::Waiter));
    }
    assert_eq!(probe.started(), 1);
    wait::<H>("the flight ends", || H::in_flight(&group) == 0).await;
}

/// Checks [contract](crate::contract) rule 10: a waiter's timeout ends only that waiter; the flight goes on
/// and a later caller still joins the same flight.
pub async fn waiter_timeout_ends_only_that_waiter<H: Harness>() {
    let counts = Arc::new(Counts::default());
    let group = Arc::new(H::group(LeaderDropPolicy::Takeover, Some(counts.clone())));
    let (probe, gate) = (Probe::default(), Gate::new());
    let leader = gated_leader::<H>(&group, "k", Spec::CALL, &probe, &gate, 1).await;
    let impatient = H::spawn_call(
        &group,
        "k",
        Spec::CALL.timeout(H::TIMEOUT),
        Work::new(&probe, None, Ends::Value(2)),
    );
    assert_eq!(
        impatient.join().await,
        Report::Returned(Err(Error::Timeout), Role::Waiter)
    );
    assert_eq!(H::waiters(&group, "k"), 0);
    assert!(H::contains(&group, "k"), "the flight goes on");
    assert!(!leader.is_done());
    let later = join_waiters::<H>(&group, "k", Spec::CALL, &probe, 1, 3).await;
    gate.open();
    assert_eq!(
        leader.join().await,
        Report::Returned(Ok(1), Role::Leader { shared: true })
    );
    for waiter in later {
        assert_eq!(waiter.join().await, Report::Returned(Ok(1), Role::Waiter));
    }
    assert_eq!(
        probe.started(),
        1,
        "the later caller joined the same flight"
    );
    assert_eq!(Counts::get(&counts.timeouts), 1);
    assert_eq!(H::in_flight(&group), 0);
}

/// Checks [contract](crate::contract) rules 10, 5: a leader's timeout cancels it: its oldest waiter takes
/// over. (Blocking: a timeout bounds only waiting; the leading thread runs its work to the
/// end.)
pub async fn leader_timeout_is_a_cancellation<H: Harness>() {
    let counts = Arc::new(Counts::default());
    let group = Arc::new(H::group(LeaderDropPolicy::Takeover, Some(counts.clone())));
    let (probe, first, second) = (Probe::default(), Gate::new(), Gate::new());
    let leader = gated_leader::<H>(
        &group,
        "k",
        // Long enough on a real clock for the waiter to join first.
        Spec::CALL.timeout(H::TIMEOUT * 40),
        &probe,
        &first,
        1,
    )
    .await;
    let waiter = H::spawn_call(
        &group,
        "k",
        Spec::CALL,
        Work::new(&probe, Some(&second), Ends::Value(2)),
    );
    wait::<H>("the waiter joins", || H::waiters(&group, "k") == 1).await;
    if H::CAPABILITIES.cancellable {
        assert_eq!(
            leader.join().await,
            Report::Returned(Err(Error::Timeout), Role::Leader { shared: false })
        );
        wait::<H>("the waiter takes over", || probe.started() == 2).await;
        second.open();
        assert_eq!(
            waiter.join().await,
            Report::Returned(Ok(2), Role::Leader { shared: false })
        );
        assert_eq!(Counts::get(&counts.timeouts), 1);
        assert_eq!(Counts::get(&counts.takeovers), 1);
    } else {
        first.open();
        assert_eq!(
            leader.join().await,
            Report::Returned(Ok(1), Role::Leader { shared: true })
        );
        assert_eq!(waiter.join().await, Report::Returned(Ok(1), Role::Waiter));
        assert_eq!(Counts::get(&counts.timeouts), 0);
    }
    assert_eq!(probe.max_running(), 1);
    assert_eq!(H::in_flight(&group), 0);
}

/// Checks [contract](crate::contract) rule 9: `forget` while in flight: old callers get the old outcome, new
/// calls start a new flight, and the old flight finishing never removes the new flight's
/// entry.
pub async fn forget_while_in_flight_keeps_the_new_flight<H: Harness>() {
    let group = group::<H>();
    let (probe, old_gate, new_gate) = (Probe::default(), Gate::new(), Gate::new());
    let old = gated_leader::<H>(&group, "k", Spec::CALL, &probe, &old_gate, 1).await;
    let old_waiters = join_waiters::<H>(&group, "k", Spec::CALL, &probe, 2, 0).await;
    assert!(H::forget(&group, "k"));
    assert!(!H::contains(&group, "k"));
    assert_eq!(H::waiters(&group, "k"), 0);
    assert_eq!(H::in_flight(&group), 1, "a forgotten flight still runs");
    let new = gated_leader::<H>(&group, "k", Spec::CALL, &probe, &new_gate, 2).await;
    assert_eq!(H::in_flight(&group), 2);
    let new_waiters = join_waiters::<H>(&group, "k", Spec::CALL, &probe, 1, 0).await;
    old_gate.open();
    assert_eq!(
        old.join().await,
        Report::Returned(Ok(1), Role::Leader { shared: true })
    );
    for waiter in old_waiters {
        assert_eq!(waiter.join().await, Report::Returned(Ok(1), Role::Waiter));
    }
    assert!(
        H::contains(&group, "k"),
        "the old flight removed the new entry"
    );
    assert_eq!(H::in_flight(&group), 1);
    let late = join_waiters::<H>(&group, "k", Spec::CALL, &probe, 1, 0).await;
    new_gate.open();
    assert_eq!(
        new.join().await,
        Report::Returned(Ok(2), Role::Leader { shared: true })
    );
    for waiter in new_waiters.into_iter().chain(late) {
        assert_eq!(waiter.join().await, Report::Returned(Ok(2), Role::Waiter));
    }
    assert_eq!(probe.started(), 2);
    assert_eq!(H::in_flight(&group), 0);
}

/// Checks [contract](crate::contract) rule 9: forgetting an absent key is a no-op that leaves nothing behind.
pub async fn forget_absent_key_leaves_nothing<H: Harness>() {
    let group = group::<H>();
    assert!(!H::forget(&group, "nobody"));
    assert_eq!(H::forget_all(&group), 0);
    assert_eq!(H::in_flight(&group), 0);
    let probe = Probe::default();
    let call = H::spawn_call(
        &group,
        "nobody",
        Spec::CALL,
        Work::new(&probe, None, Ends::Value(1)),
    );
    assert_eq!(
        call.join().await,
        Report::Returned(Ok(1), Role::Leader { shared: false })
    );
    assert!(!H::forget(&group, "nobody"), "a finished flight is gone");
    assert_eq!(H::in_flight(&group), 0);
}

/// Checks [contract](crate::contract) rule 9: `forget_all` detaches every flight; each still delivers to its
/// callers.
pub async fn forget_all_detaches_every_flight<H: Harness>() {
    let group = group::<H>();
    let (probe, gate) = (Probe::default(), Gate::new());
    let a = gated_leader::<H>(&group, "a", Spec::CALL, &probe, &gate, 1).await;
    let b = gated_leader::<H>(&group, "b", Spec::CALL, &probe, &gate, 2).await;
    assert_eq!(H::forget_all(&group), 2);
    assert_eq!(H::forget_all(&group), 0, "already detached");
    let a2 = gated_leader::<H>(&group, "a", Spec::CALL, &probe, &gate, 3).await;
    assert_eq!(H::in_flight(&group), 3);
    gate.open();
    assert_eq!(
        a.join().await,
        Report::Returned(Ok(1), Role::Leader { shared: false })
    );
    assert_eq!(
        b.join().await,
        Report::Returned(Ok(2), Role::Leader { shared: false })
    );
    assert_eq!(
        a2.join().await,
        Report::Returned(Ok(3), Role::Leader { shared: false })
    );
    assert_eq!(H::in_flight(&group), 0);
}

/// Checks [contract](crate::contract) rule 11: a call for K from inside K's own work returns `Reentrant`
/// instead of hanging.
pub async fn reentrant_call_is_detected<H: Harness>() {
    let group = group::<H>();
    let caller = H::spawn_reentrant(&group, "k");
    assert_eq!(
        caller.join().await,
        Report::Returned(Ok(0), Role::Leader { shared: false }),
        "the inner call did not return Error::Reentrant"
    );
    assert_eq!(H::in_flight(&group), 0);
}

/// Checks [contract](crate::contract) rule 8: a call registers on first poll; a future never polled pins
/// nothing.
pub async fn unpolled_call_pins_nothing<H: Harness>() {
    let group = group::<H>();
    assert_eq!(H::unpolled_in_flight(&group, "k"), 0);
    assert_eq!(H::in_flight(&group), 0);
}

/// Checks [contract](crate::contract) rules 1 and 2 at the race between a caller registering and the leader
/// publishing: every caller either
/// joins the flight and gets its value, or starts a new flight; nobody hangs, nobody gets a
/// stale value, and each execution has exactly one leader.
pub async fn registering_at_the_instant_of_publication<H: Harness>() {
    const ROUNDS: u64 = 300;
    let group = group::<H>();
    let probe = Probe::default();
    let mut leaders = 0;
    for round in 0..ROUNDS {
        let callers: Vec<_> = (0..3)
            .map(|_| {
                H::spawn_call(
                    &group,
                    "hot",
                    Spec::CALL,
                    Work::new(&probe, None, Ends::Value(round)),
                )
            })
            .collect();
        for caller in callers {
            let report = caller.join().await;
            assert_eq!(report.value(), Some(round), "round {round}: {report:?}");
            if report.role().is_some_and(Role::is_leader) {
                leaders += 1;
            }
        }
        assert_eq!(H::in_flight(&group), 0, "round {round}");
    }
    assert_eq!(leaders, probe.started(), "one leader per execution");
    assert!(probe.started() >= ROUNDS as usize);
}

/// Checks [contract](crate::contract) rule 7: 100,000 calls on distinct keys that register and are dropped
/// mid-flight (a waiter with each) leave `in_flight() == 0`.
pub async fn cancellation_churn_leaves_nothing_in_flight<H: Harness>() {
    let counts = Arc::new(Counts::default());
    let group = H::group(LeaderDropPolicy::Takeover, Some(counts.clone()));
    H::churn(&group, 100_000);
    assert_eq!(H::in_flight(&group), 0);
    assert_eq!(
        Counts::get(&counts.flights_started),
        Counts::get(&counts.flights_finished)
    );
}

/// Checks the [contract](crate::contract)'s Statistics section through the core's observer hooks (what
/// `singleflight-stats` counts): every call is counted exactly once, as a hit or a miss,
/// whatever its end (value, timeout, detached).
pub async fn observer_counts_every_call_once<H: Harness>() {
    let counts = Arc::new(Counts::default());
    let group = Arc::new(H::group(LeaderDropPolicy::Takeover, Some(counts.clone())));
    let (probe, gate) = (Probe::default(), Gate::new());
    let leader = gated_leader::<H>(&group, "k", Spec::CALL, &probe, &gate, 1).await;
    let waiters = join_waiters::<H>(&group, "k", Spec::CALL, &probe, 3, 0).await;
    let impatient = H::spawn_call(
        &group,
        "k",
        Spec::CALL.timeout(H::TIMEOUT),
        Work::new(&probe, None, Ends::Value(0)),
    );
    assert_eq!(
        impatient.join().await,
        Report::Returned(Err(Error::Timeout), Role::Waiter)
    );
    // Detached work is one more execution, and its caller no hit.
    let detached = H::CAPABILITIES.detached.is_supported();
    if detached {
        let caller = H::spawn_call(
            &group,
            "d",
            Spec::CALL.kind(Kind::Detached),
            Work::new(&probe, None, Ends::Value(5)),
        );
        assert_eq!(caller.join().await.value(), Some(5));
    }
    gate.open();
    assert_eq!(leader.join().await.value(), Some(1));
    for waiter in waiters {
        assert_eq!(waiter.join().await.value(), Some(1));
    }
    wait::<H>("every flight ends", || H::in_flight(&group) == 0).await;
    let (hits, misses) = (Counts::get(&counts.hits), Counts::get(&counts.misses));
    let flights = 1 + usize::from(detached);
    assert_eq!(
        (hits, misses),
        (4, flights),
        "3 waiters + 1 timed out; one execution per flight"
    );
    assert_eq!(Counts::get(&counts.timeouts), 1);
    assert_eq!(Counts::get(&counts.flights_started), flights);
    assert_eq!(Counts::get(&counts.flights_finished), flights);
    assert_eq!(counts.executions_finished.load(Ordering::SeqCst), flights);
}

/// The reuse window of the reuse rules, on their [`ManualClock`].
const WINDOW: Duration = Duration::from_secs(10);

/// A group with a reuse window of [`WINDOW`] on `clock` (and `configure`'s further
/// settings), through the setup's front-end.
fn reuse_group<H: Harness>(
    clock: &ManualClock,
    policy: LeaderDropPolicy,
    configure: impl FnOnce(Group<String, Value>) -> Group<String, Value>,
) -> Arc<H::Group> {
    let core = Group::new()
        .with_leader_drop_policy(policy)
        .reuse_for(WINDOW, clock.clone());
    Arc::new(H::from_core(configure(core)))
}

/// One call of `key` through `spec` whose own work would end as `ends`; its report.
async fn call_once<H: Harness>(
    group: &Arc<H::Group>,
    key: &str,
    spec: Spec,
    probe: &Probe,
    ends: Ends,
) -> Report {
    H::spawn_call(group, key, spec, Work::new(probe, None, ends))
        .join()
        .await
}

/// Checks [contract](crate::contract) rule 16: within the window after a flight published
/// a value, a call gets it without running the work, for every kind of call, and its role
/// says so, with the value's age; after the window the next call leads.
pub async fn reuse_inside_the_window_and_not_after<H: Harness>() {
    for kind in supported::<H>(&[Kind::Call, Kind::Detached, Kind::Blocking]) {
        for spec in [Spec::CALL.kind(kind), Spec::CALL.kind(kind).fallible()] {
            let clock = ManualClock::new();
            let counts = Arc::new(Counts::default());
            let observer: Arc<dyn singleflight_core::Observer> = counts.clone();
            let group = reuse_group::<H>(&clock, LeaderDropPolicy::Takeover, |g| {
                g.with_observer(observer)
            });
            let probe = Probe::default();
            assert_eq!(
                call_once::<H>(&group, "k", spec, &probe, Ends::Value(1)).await,
                Report::Returned(Ok(1), Role::Leader { shared: false }),
                "{spec:?}"
            );
            wait::<H>("the flight ends", || H::in_flight(&group) == 0).await;
            clock.advance(WINDOW / 2);
            assert_eq!(
                call_once::<H>(&group, "k", spec, &probe, Ends::Value(2)).await,
                Report::Returned(Ok(1), Role::Reused { age: WINDOW / 2 }),
                "{spec:?}"
            );
            assert_eq!(probe.started(), 1, "a reused call runs no work ({spec:?})");
            assert_eq!(H::in_flight(&group), 0, "a reused call registers nothing");
            assert_eq!(Counts::get(&counts.reused), 1, "{spec:?}");
            assert_eq!(Counts::get(&counts.hits), 0, "a reuse is no hit ({spec:?})");
            // Other keys are not served another key's value.
            assert_eq!(
                call_once::<H>(&group, "other", spec, &probe, Ends::Value(3)).await,
                Report::Returned(Ok(3), Role::Leader { shared: false }),
                "{spec:?}"
            );
            clock.advance(WINDOW / 2);
            assert_eq!(
                call_once::<H>(&group, "k", spec, &probe, Ends::Value(4)).await,
                Report::Returned(Ok(4), Role::Leader { shared: false }),
                "the window is over ({spec:?})"
            );
            wait::<H>("the flight ends", || H::in_flight(&group) == 0).await;
            assert_eq!(
                call_once::<H>(&group, "k", spec, &probe, Ends::Value(5)).await,
                Report::Returned(
                    Ok(4),
                    Role::Reused {
                        age: Duration::ZERO
                    }
                ),
                "{spec:?}"
            );
            assert_eq!(probe.started(), 3, "{spec:?}");
        }
    }
}

/// Checks [contract](crate::contract) rule 16: an error is not reused unless a policy gives
/// it a window (negative caching), and then only the errors the policy names, for their
/// window.
pub async fn errors_are_not_reused_without_the_policy<H: Harness>() {
    let spec = Spec::CALL.fallible();
    let failed = |message: &str| Err(Error::Failed(message.to_string()));
    let clock = ManualClock::new();
    let probe = Probe::default();
    let group = reuse_group::<H>(&clock, LeaderDropPolicy::Takeover, |g| g);
    for _ in 0..2 {
        assert_eq!(
            call_once::<H>(&group, "k", spec, &probe, Ends::Fail("not found")).await,
            Report::Returned(failed("not found"), Role::Leader { shared: false })
        );
        wait::<H>("the flight ends", || H::in_flight(&group) == 0).await;
    }
    assert_eq!(probe.started(), 2, "an error is not reused by default");

    let short = WINDOW / 5;
    let group = reuse_group::<H>(&clock, LeaderDropPolicy::Takeover, |g| {
        g.reuse_errors(move |e: &String| (e == "not found").then_some(short))
    });
    let probe = Probe::default();
    assert_eq!(
        call_once::<H>(&group, "404", spec, &probe, Ends::Fail("not found")).await,
        Report::Returned(failed("not found"), Role::Leader { shared: false })
    );
    wait::<H>("the flight ends", || H::in_flight(&group) == 0).await;
    assert_eq!(
        call_once::<H>(&group, "404", spec, &probe, Ends::Value(1)).await,
        Report::Returned(
            failed("not found"),
            Role::Reused {
                age: Duration::ZERO
            }
        )
    );
    for _ in 0..2 {
        assert_eq!(
            call_once::<H>(&group, "429", spec, &probe, Ends::Fail("rate limited")).await,
            Report::Returned(failed("rate limited"), Role::Leader { shared: false })
        );
        wait::<H>("the flight ends", || H::in_flight(&group) == 0).await;
    }
    clock.advance(short);
    assert_eq!(
        call_once::<H>(&group, "404", spec, &probe, Ends::Value(1)).await,
        Report::Returned(Ok(1), Role::Leader { shared: false }),
        "the error's own window is over"
    );
    assert_eq!(probe.started(), 4);
}

/// Checks [contract](crate::contract) rule 16: panics, cancelled and timed-out leaders and
/// dropped leaders whose waiters fail are never reused: the next call leads.
pub async fn panics_and_cancellations_are_never_reused<H: Harness>() {
    let clock = ManualClock::new();
    let probe = Probe::default();
    let group = reuse_group::<H>(&clock, LeaderDropPolicy::Takeover, |g| g);
    assert_eq!(
        call_once::<H>(&group, "k", Spec::CALL, &probe, Ends::Panic("boom")).await,
        Report::Panicked("boom".to_string())
    );
    assert_eq!(
        call_once::<H>(&group, "k", Spec::CALL, &probe, Ends::Value(1)).await,
        Report::Returned(Ok(1), Role::Leader { shared: false }),
        "a panic is not reused"
    );
    if H::CAPABILITIES.cancellable {
        for (policy, key) in [
            (LeaderDropPolicy::Takeover, "cancelled"),
            (LeaderDropPolicy::FailWaiters, "failed"),
        ] {
            let group = reuse_group::<H>(&clock, policy, |g| g);
            let gate = Gate::new();
            let leader = gated_leader::<H>(&group, key, Spec::CALL, &probe, &gate, 1).await;
            let waiters = join_waiters::<H>(&group, key, Spec::CALL, &probe, 1, 2).await;
            leader.cancel();
            assert_eq!(leader.join().await, Report::Cancelled);
            for waiter in waiters {
                // Takeover: the waiter runs its own work, which is a value to keep.
                if let Report::Returned(Err(error), _) = waiter.join().await {
                    assert_eq!(error, Error::LeaderDropped);
                }
            }
            wait::<H>("the flight ends", || H::in_flight(&group) == 0).await;
            let next = call_once::<H>(&group, key, Spec::CALL, &probe, Ends::Value(3)).await;
            match policy {
                LeaderDropPolicy::FailWaiters => assert_eq!(
                    next,
                    Report::Returned(Ok(3), Role::Leader { shared: false }),
                    "a dropped leader is not reused"
                ),
                _ => assert_eq!(
                    next,
                    Report::Returned(
                        Ok(2),
                        Role::Reused {
                            age: Duration::ZERO
                        }
                    ),
                    "the promoted waiter's value is kept"
                ),
            }
        }
        if H::CAPABILITIES.timeouts.is_yes() {
            let gate = Gate::new();
            let leader = gated_leader::<H>(
                &group,
                "timed",
                Spec::CALL.timeout(H::TIMEOUT),
                &probe,
                &gate,
                1,
            )
            .await;
            assert_eq!(
                leader.join().await,
                Report::Returned(Err(Error::Timeout), Role::Leader { shared: false })
            );
            gate.open();
            wait::<H>("the flight ends", || H::in_flight(&group) == 0).await;
            assert_eq!(
                call_once::<H>(&group, "timed", Spec::CALL, &probe, Ends::Value(4)).await,
                Report::Returned(Ok(4), Role::Leader { shared: false }),
                "a timed-out leader is not reused"
            );
        }
    }
    assert_eq!(H::in_flight(&group), 0);
}

/// Checks [contract](crate::contract) rule 16 with rule 9: `forget` and `forget_all` drop
/// reusable values, and a flight that started before them never stores its value
/// afterwards, though its callers still get it.
pub async fn forget_drops_a_reusable_value<H: Harness>() {
    let clock = ManualClock::new();
    let probe = Probe::default();
    let group = reuse_group::<H>(&clock, LeaderDropPolicy::Takeover, |g| g);
    assert_eq!(
        call_once::<H>(&group, "k", Spec::CALL, &probe, Ends::Value(1)).await,
        Report::Returned(Ok(1), Role::Leader { shared: false })
    );
    assert!(H::forget(&group, "k"), "a reusable value was dropped");
    assert!(!H::forget(&group, "k"), "nothing is left to drop");
    assert_eq!(
        call_once::<H>(&group, "k", Spec::CALL, &probe, Ends::Value(2)).await,
        Report::Returned(Ok(2), Role::Leader { shared: false })
    );
    assert!(H::forget_all(&group) >= 1);
    // A flight that started before a forget never stores its value afterwards.
    for forget_all in [false, true] {
        let gate = Gate::new();
        let old = gated_leader::<H>(&group, "k", Spec::CALL, &probe, &gate, 3).await;
        let waiters = join_waiters::<H>(&group, "k", Spec::CALL, &probe, 1, 0).await;
        if forget_all {
            assert_eq!(H::forget_all(&group), 1);
        } else {
            assert!(H::forget(&group, "k"));
        }
        gate.open();
        assert_eq!(
            old.join().await,
            Report::Returned(Ok(3), Role::Leader { shared: true })
        );
        for waiter in waiters {
            assert_eq!(waiter.join().await, Report::Returned(Ok(3), Role::Waiter));
        }
        wait::<H>("the flight ends", || H::in_flight(&group) == 0).await;
        assert_eq!(
            call_once::<H>(&group, "k", Spec::CALL, &probe, Ends::Value(4)).await,
            Report::Returned(Ok(4), Role::Leader { shared: false }),
            "the forgotten flight stored its value (forget_all: {forget_all})"
        );
        assert!(H::forget(&group, "k"));
    }
}

/// The refresh threshold of the refresh rules, inside [`WINDOW`].
const AFTER: Duration = Duration::from_secs(6);

/// The kinds of call that can start a refresh, among those the setup accepts.
fn refreshing<H: Harness>() -> Vec<Kind> {
    supported::<H>(&[Kind::Detached, Kind::Blocking])
}

/// A group with a reuse window of [`WINDOW`] and a refresh threshold of [`AFTER`] on
/// `clock`, observed by `counts`, with one value stored for `key` (the leader's work
/// returned `1`), and `clock` moved to the threshold.
async fn stale_group<H: Harness>(
    clock: &ManualClock,
    counts: &Arc<Counts>,
    key: &str,
    spec: Spec,
    probe: &Probe,
) -> Arc<H::Group> {
    let observer: Arc<dyn singleflight_core::Observer> = counts.clone();
    let group = reuse_group::<H>(clock, LeaderDropPolicy::Takeover, |g| {
        g.with_observer(observer).refresh_after(AFTER)
    });
    assert_eq!(
        call_once::<H>(&group, key, spec, probe, Ends::Value(1)).await,
        Report::Returned(Ok(1), Role::Leader { shared: false }),
        "{spec:?}"
    );
    wait::<H>("the flight ends", || H::in_flight(&group) == 0).await;
    clock.advance(AFTER);
    group
}

/// Starts a caller whose own work waits for `gate` and then returns `value`.
fn gated_call<H: Harness>(
    group: &Arc<H::Group>,
    spec: Spec,
    probe: &Probe,
    gate: &Gate,
    ends: Ends,
) -> Caller {
    H::spawn_call(group, "k", spec, Work::new(probe, Some(gate), ends))
}

/// The role of a call served the value stored at the start, at the threshold.
const STALE: Role = Role::Reused { age: AFTER };

/// Checks [contract](crate::contract) rule 16: past the refresh threshold, a herd of
/// callers gets the current value at once, and one refresh runs for the key, whatever the
/// number of callers; once it publishes, its value is served fresh. A call whose work may
/// borrow from its caller (`call`) starts none: it is served the value.
pub async fn refresh_runs_once_under_a_herd<H: Harness>() {
    for kind in refreshing::<H>() {
        for spec in [Spec::CALL.kind(kind), Spec::CALL.kind(kind).fallible()] {
            let (clock, counts, probe) = (ManualClock::new(), Arc::default(), Probe::default());
            let group = stale_group::<H>(&clock, &counts, "k", spec, &probe).await;
            assert_eq!(
                call_once::<H>(&group, "k", Spec::CALL, &probe, Ends::Value(9)).await,
                Report::Returned(Ok(1), STALE),
                "a borrowing call is served the value ({spec:?})"
            );
            assert_eq!(H::in_flight(&group), 0, "and starts no refresh ({spec:?})");
            assert_eq!(Counts::get(&counts.refreshes), 0, "{spec:?}");

            let gate = Gate::new();
            let herd: Vec<_> = (0..8)
                .map(|_| gated_call::<H>(&group, spec, &probe, &gate, Ends::Value(2)))
                .collect();
            for caller in herd {
                assert_eq!(
                    caller.join().await,
                    Report::Returned(Ok(1), STALE),
                    "the current value, at once ({spec:?})"
                );
            }
            wait::<H>("the refresh runs", || probe.started() == 2).await;
            assert_eq!(Counts::get(&counts.refreshes), 1, "one refresh ({spec:?})");
            assert_eq!(
                H::in_flight(&group),
                1,
                "the refresh is a flight ({spec:?})"
            );
            assert_eq!(H::waiters(&group, "k"), 0, "nobody waits for it ({spec:?})");
            gate.open();
            wait::<H>("the refresh ends", || H::in_flight(&group) == 0).await;
            assert_eq!(
                call_once::<H>(&group, "k", spec, &probe, Ends::Value(3)).await,
                Report::Returned(
                    Ok(2),
                    Role::Reused {
                        age: Duration::ZERO
                    }
                ),
                "the refresh's value is stored fresh ({spec:?})"
            );
            assert_eq!(probe.started(), 2, "{spec:?}");
            assert_eq!(Counts::get(&counts.refresh_failures), 0, "{spec:?}");
        }
    }
}

/// Checks [contract](crate::contract) rule 16: a refresh that fails (an error, a panic)
/// keeps the old value served until the window ends, is reported to the observer, and is
/// not retried for that value; after the window the next call leads.
pub async fn a_failed_refresh_serves_the_old_value<H: Harness>() {
    for kind in refreshing::<H>() {
        for (spec, ends) in [
            (Spec::CALL.kind(kind).fallible(), Ends::Fail("down")),
            (Spec::CALL.kind(kind), Ends::Panic("refresh panicked")),
        ] {
            let (clock, counts, probe) = (ManualClock::new(), Arc::default(), Probe::default());
            let group = stale_group::<H>(&clock, &counts, "k", spec, &probe).await;
            assert_eq!(
                call_once::<H>(&group, "k", spec, &probe, ends).await,
                Report::Returned(Ok(1), STALE),
                "{ends:?}"
            );
            wait::<H>("the refresh ends", || {
                Counts::get(&counts.refresh_failures) == 1 && H::in_flight(&group) == 0
            })
            .await;
            assert_eq!(probe.started(), 2, "the refresh ran ({ends:?})");
            clock.advance(Duration::from_secs(1));
            assert_eq!(
                call_once::<H>(&group, "k", spec, &probe, Ends::Value(5)).await,
                Report::Returned(
                    Ok(1),
                    Role::Reused {
                        age: AFTER + Duration::from_secs(1)
                    }
                ),
                "the old value is served ({ends:?})"
            );
            assert_eq!(
                H::in_flight(&group),
                0,
                "and not refreshed again ({ends:?})"
            );
            assert_eq!(Counts::get(&counts.refreshes), 1, "{ends:?}");
            clock.advance(WINDOW - AFTER - Duration::from_secs(1));
            assert_eq!(
                call_once::<H>(&group, "k", spec, &probe, Ends::Value(6)).await,
                Report::Returned(Ok(6), Role::Leader { shared: false }),
                "the window is over ({ends:?})"
            );
        }
    }
}

/// Checks [contract](crate::contract) rules 16 and 6: the refresh runs out of reach of
/// every caller's cancellation. The call that started it has returned (and its future is
/// gone) while it runs; a caller that finds the value expired joins it, and dropping that
/// caller (where callers can be dropped) does not stop it: it stores its value.
pub async fn a_cancelled_trigger_does_not_cancel_the_refresh<H: Harness>() {
    for kind in refreshing::<H>() {
        let spec = Spec::CALL.kind(kind);
        let (clock, counts, probe) = (ManualClock::new(), Arc::default(), Probe::default());
        let group = stale_group::<H>(&clock, &counts, "k", spec, &probe).await;
        let gate = Gate::new();
        let trigger = gated_call::<H>(&group, spec, &probe, &gate, Ends::Value(2));
        assert_eq!(trigger.join().await, Report::Returned(Ok(1), STALE));
        wait::<H>("the refresh runs", || probe.started() == 2).await;
        clock.advance(WINDOW - AFTER);
        let late = join_waiters::<H>(&group, "k", spec, &probe, 2, 7).await;
        let mut late = late.into_iter();
        let (mut dropped, kept) = (late.next(), late.next().expect("two late callers"));
        if H::CAPABILITIES.cancellable {
            let dropped = dropped.take().expect("two late callers");
            dropped.cancel();
            assert_eq!(dropped.join().await, Report::Cancelled, "{spec:?}");
            wait::<H>("the dropped caller leaves", || H::waiters(&group, "k") == 1).await;
            assert_eq!(H::in_flight(&group), 1, "the refresh goes on ({spec:?})");
        }
        gate.open();
        assert_eq!(
            kept.join().await,
            Report::Returned(Ok(2), Role::Waiter),
            "a caller after the window joins the refresh ({spec:?})"
        );
        if let Some(other) = dropped {
            // Threads cannot be dropped: the other late caller gets the refresh's value too.
            assert_eq!(other.join().await, Report::Returned(Ok(2), Role::Waiter));
        }
        wait::<H>("the refresh ends", || H::in_flight(&group) == 0).await;
        assert_eq!(
            call_once::<H>(&group, "k", spec, &probe, Ends::Value(3)).await,
            Report::Returned(
                Ok(2),
                Role::Reused {
                    age: Duration::ZERO
                }
            ),
            "the refresh stored its value ({spec:?})"
        );
        assert_eq!(probe.started(), 2, "no caller ran its own work ({spec:?})");
        assert_eq!(Counts::get(&counts.refresh_failures), 0, "{spec:?}");
    }
}

/// Checks [contract](crate::contract) rules 16 and 9: `forget` and `forget_all` win over a
/// refresh running when they are called: it never stores its value afterwards.
pub async fn forget_during_a_refresh_wins<H: Harness>() {
    let Some(&kind) = refreshing::<H>().first() else {
        return;
    };
    let spec = Spec::CALL.kind(kind);
    for forget_all in [false, true] {
        let (clock, counts, probe) = (ManualClock::new(), Arc::default(), Probe::default());
        let group = stale_group::<H>(&clock, &counts, "k", spec, &probe).await;
        let gate = Gate::new();
        let trigger = gated_call::<H>(&group, spec, &probe, &gate, Ends::Value(2));
        assert_eq!(trigger.join().await, Report::Returned(Ok(1), STALE));
        wait::<H>("the refresh runs", || probe.started() == 2).await;
        if forget_all {
            assert!(H::forget_all(&group) >= 1);
        } else {
            assert!(H::forget(&group, "k"));
        }
        gate.open();
        wait::<H>("the refresh ends", || H::in_flight(&group) == 0).await;
        assert_eq!(
            call_once::<H>(&group, "k", spec, &probe, Ends::Value(3)).await,
            Report::Returned(Ok(3), Role::Leader { shared: false }),
            "the refresh stored nothing (forget_all: {forget_all})"
        );
    }
}
