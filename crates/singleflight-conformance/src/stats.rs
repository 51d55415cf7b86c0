//! The statistics rules (feature `stats`): the [contract](crate::contract)'s Statistics section, counted by a
//! `singleflight-stats` [`Stats`] attached to a group of the setup under test. Every call
//! counts once, as a hit (it joined) or a miss (it ran the work); errors, panics, leader
//! drops, takeovers and timeouts are counted once per event; `active` is a gauge read from
//! live state.
//!
//! [`conformance!`](crate::conformance!) makes a `$name::stats` module with one test per rule
//! of [`RULES`] when this feature is on. Like the contract's rules, each body panics when
//! the setup breaks it, and is not cancel safe.

use std::sync::Arc;

use singleflight_core::{Error, LeaderDropPolicy, Role};
pub use singleflight_stats::{Snapshot, Stats};

use crate::rules::{gated_leader, join_waiters, wait};
use crate::run::Rule;
use crate::{Capabilities, Ends, Gate, Harness, Kind, Offload, Probe, Report, Spec, Support, Work};

/// A snapshot's counters, in the order
/// `[hits, misses, errors, panics, leader_drops, takeovers, timeouts, active]`.
pub fn counts(snapshot: &Snapshot) -> [u64; 8] {
    [
        snapshot.hits,
        snapshot.misses,
        snapshot.errors,
        snapshot.panics,
        snapshot.leader_drops,
        snapshot.takeovers,
        snapshot.timeouts,
        snapshot.active,
    ]
}

/// Asserts the counters of `stats` (in the order of [`counts`]).
///
/// # Panics
///
/// If they differ, with the snapshot.
#[track_caller]
pub fn assert_counts(stats: &Stats, expected: [u64; 8]) {
    let snapshot = stats.snapshot();
    assert_eq!(
        counts(&snapshot),
        expected,
        "[hits, misses, errors, panics, leader_drops, takeovers, timeouts, active] of {snapshot:?}"
    );
}

/// A group of `H` with `policy`, observed by a fresh [`Stats`].
fn observed<H: Harness>(policy: LeaderDropPolicy) -> (Arc<Stats>, Arc<H::Group>) {
    let stats = Arc::new(Stats::new());
    let group = Arc::new(H::group(policy, Some(stats.clone())));
    (stats, group)
}

fn cancellable(c: &Capabilities) -> Support {
    if c.cancellable {
        Support::Yes
    } else {
        Support::Unsupported("callers cannot be dropped mid-call")
    }
}

/// The statistics rules, in the order [`conformance!`](crate::conformance!) makes their tests.
pub const RULES: &[Rule] = &[
    Rule {
        name: "six_callers_on_one_flight_are_five_hits_and_one_miss",
        contract: &[],
        needs: |_| Support::Yes,
    },
    Rule {
        name: "a_failing_flight_counts_one_error",
        contract: &[],
        needs: |_| Support::Yes,
    },
    Rule {
        name: "a_panic_is_counted_once",
        contract: &[],
        needs: |_| Support::Yes,
    },
    Rule {
        name: "a_leader_drop_and_the_takeover_are_each_counted_once",
        contract: &[],
        needs: cancellable,
    },
    Rule {
        name: "a_leader_drop_that_fails_the_waiters_is_counted_once",
        contract: &[],
        needs: cancellable,
    },
    Rule {
        name: "a_dropped_waiter_is_a_hit_and_changes_nothing_else",
        contract: &[],
        needs: cancellable,
    },
    Rule {
        name: "a_waiter_timeout_is_a_timeout_and_a_hit",
        contract: &[],
        needs: |c| c.timeouts,
    },
    Rule {
        name: "a_leader_timeout_is_a_timeout_a_leader_drop_and_a_takeover",
        contract: &[],
        needs: |c| c.timeouts.and(cancellable(c)),
    },
    Rule {
        name: "reset_during_a_flight_never_leaves_active_negative",
        contract: &[],
        needs: |_| Support::Yes,
    },
    Rule {
        name: "detached_work_is_one_miss_and_its_joiners_are_hits",
        contract: &[],
        needs: |c| c.detached.support(),
    },
    Rule {
        name: "detached_work_outlives_its_callers_timeout",
        contract: &[],
        needs: |c| match c.detached {
            Offload::Spawned => c.timeouts,
            Offload::Inline => Support::Unsupported("detached calls run in their caller"),
            Offload::Unsupported(reason) => Support::Unsupported(reason),
        },
    },
    Rule {
        name: "hits_plus_misses_is_the_number_of_calls",
        contract: &[],
        needs: |_| Support::Yes,
    },
    Rule {
        name: "a_reentrant_call_is_not_counted",
        contract: &[],
        needs: |c| c.reentrancy,
    },
];

/// Statistics: six callers on one flight are five hits and one miss; while it runs, one
/// miss is counted and `active` is 1 (the hits come as the waiters receive the value).
pub async fn six_callers_on_one_flight_are_five_hits_and_one_miss<H: Harness>() {
    let (stats, group) = observed::<H>(LeaderDropPolicy::Takeover);
    let (probe, gate) = (Probe::default(), Gate::new());
    let leader = gated_leader::<H>(&group, "k", Spec::CALL, &probe, &gate, 7).await;
    wait::<H>("the flight is active", || stats.active() == 1).await;
    let waiters = join_waiters::<H>(&group, "k", Spec::CALL, &probe, 5, 0).await;
    assert_counts(&stats, [0, 1, 0, 0, 0, 0, 0, 1]);
    gate.open();
    assert_eq!(leader.join().await.value(), Some(7));
    for waiter in waiters {
        assert_eq!(waiter.join().await.value(), Some(7));
    }
    assert_counts(&stats, [5, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(stats.hit_rate(), 5.0 / 6.0);
    assert_eq!(stats.snapshot().calls(), 6);
}

/// Statistics: a failing flight counts one error, not one per caller; a successful flight
/// afterwards adds none.
pub async fn a_failing_flight_counts_one_error<H: Harness>() {
    let (stats, group) = observed::<H>(LeaderDropPolicy::Takeover);
    let (probe, gate) = (Probe::default(), Gate::new());
    let spec = Spec::CALL.fallible();
    let work = Work::new(&probe, Some(&gate), Ends::Fail("down"));
    let leader = H::spawn_call(&group, "k", spec, work);
    wait::<H>("the leader runs", || probe.started() == 1).await;
    let waiters = join_waiters::<H>(&group, "k", spec, &probe, 2, 0).await;
    gate.open();
    let failed = Some(Err(Error::Failed("down".to_string())));
    assert_eq!(returned(leader.join().await), failed);
    for waiter in waiters {
        assert_eq!(returned(waiter.join().await), failed);
    }
    assert_counts(&stats, [2, 1, 1, 0, 0, 0, 0, 0]);
    let next = H::spawn_call(&group, "k", spec, Work::new(&probe, None, Ends::Value(1)));
    assert_eq!(next.join().await.value(), Some(1));
    assert_counts(&stats, [2, 2, 1, 0, 0, 0, 0, 0]);
}

/// A report's result, if the call returned.
fn returned(report: Report) -> Option<Result<u64, Error<String>>> {
    match report {
        Report::Returned(result, _) => Some(result),
        _ => None,
    }
}

/// Statistics: a panicking flight counts one panic; its waiters are hits.
pub async fn a_panic_is_counted_once<H: Harness>() {
    let (stats, group) = observed::<H>(LeaderDropPolicy::Takeover);
    let (probe, gate) = (Probe::default(), Gate::new());
    let work = Work::new(&probe, Some(&gate), Ends::Panic("the work panics"));
    let leader = H::spawn_call(&group, "k", Spec::CALL, work);
    wait::<H>("the leader runs", || probe.started() == 1).await;
    let waiters = join_waiters::<H>(&group, "k", Spec::CALL, &probe, 3, 0).await;
    gate.open();
    assert_eq!(
        leader.join().await,
        Report::Panicked("the work panics".to_string())
    );
    for waiter in waiters {
        let result = returned(waiter.join().await);
        assert!(
            matches!(result, Some(Err(Error::Panicked(_)))),
            "a waiter of a panicked flight got {result:?}"
        );
    }
    assert_counts(&stats, [3, 1, 0, 1, 0, 0, 0, 0]);
}

/// Drops a gated leader of `group` after three waiters joined, one at a time (their own
/// work returns 100, 101, 102: the oldest is the one promoted); returns their reports.
async fn drop_the_leader<H: Harness>(group: &Arc<H::Group>) -> Vec<Report> {
    let (probe, never) = (Probe::default(), Gate::new());
    let leader = gated_leader::<H>(group, "k", Spec::CALL, &probe, &never, 1).await;
    let mut waiters = Vec::new();
    for i in 0..3 {
        waiters.extend(join_waiters::<H>(group, "k", Spec::CALL, &probe, 1, 100 + i).await);
    }
    leader.cancel();
    assert_eq!(leader.join().await, Report::Cancelled);
    let mut reports = Vec::new();
    for waiter in waiters {
        reports.push(waiter.join().await);
    }
    reports
}

/// Statistics: a dropped leader whose oldest waiter takes over is one leader drop, one
/// takeover, two misses (both ran the work) and two hits.
pub async fn a_leader_drop_and_the_takeover_are_each_counted_once<H: Harness>() {
    let (stats, group) = observed::<H>(LeaderDropPolicy::Takeover);
    let reports = drop_the_leader::<H>(&group).await;
    let values: Vec<_> = reports.iter().map(Report::value).collect();
    assert_eq!(values, [Some(100); 3], "{reports:?}");
    assert_counts(&stats, [2, 2, 0, 0, 1, 1, 0, 0]);
}

/// Statistics: a dropped leader whose waiters all fail (`FailWaiters`) is one leader drop,
/// one miss, and three hits.
pub async fn a_leader_drop_that_fails_the_waiters_is_counted_once<H: Harness>() {
    let (stats, group) = observed::<H>(LeaderDropPolicy::FailWaiters);
    let reports = drop_the_leader::<H>(&group).await;
    for report in &reports {
        assert_eq!(
            *report,
            Report::Returned(Err(Error::LeaderDropped), Role::Waiter)
        );
    }
    assert_counts(&stats, [3, 1, 0, 0, 1, 0, 0, 0]);
}

/// Statistics: a waiter dropped mid-call is a hit and changes nothing else.
pub async fn a_dropped_waiter_is_a_hit_and_changes_nothing_else<H: Harness>() {
    let (stats, group) = observed::<H>(LeaderDropPolicy::Takeover);
    let (probe, gate) = (Probe::default(), Gate::new());
    let leader = gated_leader::<H>(&group, "k", Spec::CALL, &probe, &gate, 1).await;
    let waiters = join_waiters::<H>(&group, "k", Spec::CALL, &probe, 1, 0).await;
    for waiter in waiters {
        waiter.cancel();
        assert_eq!(waiter.join().await, Report::Cancelled);
    }
    gate.open();
    assert_eq!(leader.join().await.value(), Some(1));
    assert_counts(&stats, [1, 1, 0, 0, 0, 0, 0, 0]);
}

/// Statistics: a waiter's timeout is a timeout and a hit; the flight's leader is the miss.
pub async fn a_waiter_timeout_is_a_timeout_and_a_hit<H: Harness>() {
    let (stats, group) = observed::<H>(LeaderDropPolicy::Takeover);
    let (probe, gate) = (Probe::default(), Gate::new());
    let leader = gated_leader::<H>(&group, "k", Spec::CALL, &probe, &gate, 1).await;
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
    gate.open();
    assert_eq!(leader.join().await.value(), Some(1));
    assert_counts(&stats, [1, 1, 0, 0, 0, 0, 1, 0]);
}

/// Statistics: a leader's own timeout cancels it: a timeout, a leader drop, and a takeover
/// by its waiter, which runs the work (two misses, no hit).
pub async fn a_leader_timeout_is_a_timeout_a_leader_drop_and_a_takeover<H: Harness>() {
    let (stats, group) = observed::<H>(LeaderDropPolicy::Takeover);
    let (probe, never) = (Probe::default(), Gate::new());
    // Long enough on a real clock for the waiter to join first.
    let spec = Spec::CALL.timeout(H::TIMEOUT * 40);
    let leader = gated_leader::<H>(&group, "k", spec, &probe, &never, 1).await;
    let waiter = join_waiters::<H>(&group, "k", Spec::CALL, &probe, 1, 2).await;
    assert_eq!(
        leader.join().await,
        Report::Returned(Err(Error::Timeout), Role::Leader { shared: false })
    );
    for waiter in waiter {
        assert_eq!(waiter.join().await.value(), Some(2));
    }
    assert_counts(&stats, [0, 2, 0, 0, 1, 1, 1, 0]);
}

/// Statistics: `reset` during a flight zeroes the counters but not the live `active` gauge,
/// which the flight ending brings to 0, never -1.
pub async fn reset_during_a_flight_never_leaves_active_negative<H: Harness>() {
    let (stats, group) = observed::<H>(LeaderDropPolicy::Takeover);
    let (probe, gate) = (Probe::default(), Gate::new());
    let leader = gated_leader::<H>(&group, "k", Spec::CALL, &probe, &gate, 1).await;
    wait::<H>("the flight is active", || stats.active() == 1).await;
    stats.reset();
    assert_counts(&stats, [0, 0, 0, 0, 0, 0, 0, 1]);
    gate.open();
    assert_eq!(leader.join().await.value(), Some(1));
    assert_counts(&stats, [0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(stats.hit_rate(), 0.0);
    let next = H::spawn_call(
        &group,
        "k",
        Spec::CALL,
        Work::new(&probe, None, Ends::Value(2)),
    );
    assert_eq!(next.join().await.value(), Some(2));
    assert_counts(&stats, [0, 1, 0, 0, 0, 0, 0, 0]);
}

/// Statistics: detached work is one execution (a miss); its caller is neither a hit nor a
/// waiter ([contract](crate::contract) rule 13), and the callers that join it are hits.
pub async fn detached_work_is_one_miss_and_its_joiners_are_hits<H: Harness>() {
    let (stats, group) = observed::<H>(LeaderDropPolicy::Takeover);
    let (probe, gate) = (Probe::default(), Gate::new());
    let spec = Spec::CALL.kind(Kind::Detached);
    let leader = gated_leader::<H>(&group, "k", spec, &probe, &gate, 7).await;
    wait::<H>("the flight is active", || stats.active() == 1).await;
    assert_eq!(
        H::waiters(&group, "k"),
        0,
        "the caller of detached work is not a waiter"
    );
    let waiters = join_waiters::<H>(&group, "k", Spec::CALL, &probe, 5, 0).await;
    gate.open();
    assert_eq!(leader.join().await.value(), Some(7));
    for waiter in waiters {
        assert_eq!(waiter.join().await.value(), Some(7));
    }
    wait::<H>("the flight ends", || stats.active() == 0).await;
    assert_counts(&stats, [5, 1, 0, 0, 0, 0, 0, 0]);
}

/// Statistics: the caller of detached work gives up (a timeout) while the work finishes on
/// its own, counted once as a miss, not as a leader drop.
pub async fn detached_work_outlives_its_callers_timeout<H: Harness>() {
    let (stats, group) = observed::<H>(LeaderDropPolicy::Takeover);
    let (probe, gate) = (Probe::default(), Gate::new());
    let spec = Spec::CALL.kind(Kind::Detached).timeout(H::TIMEOUT);
    let caller = H::spawn_call(
        &group,
        "k",
        spec,
        Work::new(&probe, Some(&gate), Ends::Value(7)),
    );
    let report = caller.join().await;
    assert!(
        matches!(report, Report::Returned(Err(Error::Timeout), _)),
        "the caller of gated detached work got {report:?}"
    );
    assert_eq!(stats.active(), 1, "the work goes on");
    gate.open();
    wait::<H>("the detached work finishes", || stats.active() == 0).await;
    assert_eq!(probe.finished(), 1);
    assert_counts(&stats, [0, 1, 0, 0, 0, 0, 1, 0]);
}

/// Statistics: many callers on two keys, whatever coalesced: every call was a hit or a
/// miss, and nothing is left active.
pub async fn hits_plus_misses_is_the_number_of_calls<H: Harness>() {
    const ROUNDS: u64 = 150;
    const CALLERS: u64 = 4;
    let (stats, group) = observed::<H>(LeaderDropPolicy::Takeover);
    let probe = Probe::default();
    for round in 0..ROUNDS {
        let callers: Vec<_> = (0..CALLERS)
            .map(|i| {
                let key = ["a", "b"][((round + i) % 2) as usize];
                let work = Work::new(&probe, None, Ends::Value(round));
                H::spawn_call(&group, key, Spec::CALL, work)
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.join().await.value(), Some(round));
        }
    }
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.calls(), ROUNDS * CALLERS, "{snapshot:?}");
    assert_eq!(snapshot.misses, probe.started() as u64, "{snapshot:?}");
    assert_eq!(snapshot.active, 0);
}

/// Statistics: a call rejected as re-entrant never joined or ran anything: only its outer
/// call is counted.
pub async fn a_reentrant_call_is_not_counted<H: Harness>() {
    let (stats, group) = observed::<H>(LeaderDropPolicy::Takeover);
    let caller = H::spawn_reentrant(&group, "k");
    assert_eq!(
        caller.join().await,
        Report::Returned(Ok(0), Role::Leader { shared: false }),
        "the inner call did not return Error::Reentrant"
    );
    assert_counts(&stats, [0, 1, 0, 0, 0, 0, 0, 0]);
}
