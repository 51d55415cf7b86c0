//! A leader guard dropped while its thread unwinds from a panic that is not the work's (the
//! caller's own code around the guard panicked) still wakes its blocked waiters, and they
//! carry on unharmed: the promoted one runs its own work, or every one gets
//! `LeaderDropped`: no lock the unwinding thread takes on the way (the flight's, or the
//! condition variable's it wakes them through) fails them.
// What these tests use (blocking waits, panic payloads, deadlines, a counting allocator
// over the system one) exists with `std` only.
#![cfg(feature = "std")]

use std::thread;

use singleflight_core::{Entered, Error, Group, LeaderDropPolicy, Waited};

// The workspace's one watchdog: a hang (a lost wake-up, say) fails this binary in bounded
// time instead of stalling the run.
#[path = "support/watchdog.rs"]
mod watchdog;
pub use watchdog::{TEST_LIMIT, Watchdog};

/// Starts a flight for key 1 on this thread, blocks `waiters` threads on it (each hands
/// back what its wait ended with), then drops the leader guard on a thread that panics.
fn unwind_with_waiters(
    group: &Group<u32, u32>,
    waiters: usize,
    check: impl Fn(Waited<&Group<u32, u32>>) + Sync,
) {
    let Ok(Entered::Leader(leader)) = group.enter(&1) else {
        panic!("the first caller leads")
    };
    thread::scope(|s| {
        let blocked: Vec<_> = (0..waiters)
            .map(|_| {
                let check = &check;
                s.spawn(move || match group.enter(&1) {
                    Ok(Entered::Waiter(waiter)) => check(waiter.wait()),
                    _ => panic!("a flight is in progress: this caller joins it"),
                })
            })
            .collect();
        // Every waiter has joined; most are parked by the time the guard goes.
        while group.waiters(&1) < waiters {
            thread::yield_now();
        }
        let unwound = s
            .spawn(move || {
                let _leader = leader;
                panic!("the caller's own code panics while it holds the leader guard");
            })
            .join();
        assert!(unwound.is_err(), "that thread panicked");
        for waiter in blocked {
            waiter.join().expect("a woken waiter does not panic");
        }
    });
    assert_eq!(group.in_flight(), 0);
}

#[test]
fn under_takeover_the_promoted_waiter_runs_its_work_and_the_others_get_its_value() {
    let _watchdog = watchdog!();
    let group = Group::<u32, u32>::new();
    unwind_with_waiters(&group, 4, |waited| match waited {
        Waited::Promoted(leader) => assert_eq!(leader.complete(7), 7),
        Waited::Outcome(outcome) => assert_eq!(outcome, Ok(7)),
    });
}

#[test]
fn under_fail_waiters_every_waiter_gets_leader_dropped() {
    let _watchdog = watchdog!();
    let group = Group::<u32, u32>::new().with_leader_drop_policy(LeaderDropPolicy::FailWaiters);
    unwind_with_waiters(&group, 4, |waited| {
        assert!(matches!(waited, Waited::Outcome(Err(Error::LeaderDropped))));
    });
}

/// A waiter polled as a future before it blocks keeps its task's waker in its seat; promoted
/// while blocked, it is woken all the same (through the flight's condition variable, not
/// that waker) and leads.
#[test]
fn a_waiter_polled_before_it_blocks_wakes_when_promoted() {
    let _watchdog = watchdog!();
    use std::task::{Context, Waker};

    let group = Group::<u32, u32>::new();
    let Ok(Entered::Leader(leader)) = group.enter(&1) else {
        panic!("the first caller leads")
    };
    let Ok(Entered::Waiter(mut waiter)) = group.enter(&1) else {
        panic!("the second caller joins")
    };
    assert!(
        waiter
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
    );
    thread::scope(|s| {
        let blocked = s.spawn(move || match waiter.wait() {
            Waited::Promoted(leader) => leader.complete(2),
            Waited::Outcome(outcome) => panic!("promoted, not {outcome:?}"),
        });
        drop(leader);
        assert_eq!(blocked.join().expect("the promoted waiter leads"), 2);
    });
    assert_eq!(group.in_flight(), 0);
}
