//! `singleflight-stats` itself on the blocking front-end: snapshots, parents, work time,
//! fan-out, and blocking waiters promoted by a core leader's drop. The counting rules run on
//! every front-end through the conformance kit's statistics rules (`tests/conformance.rs`,
//! `<setup>::stats::`). Ordering comes from gates and waiter counts, never from sleeping.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use singleflight_conformance::stats::{assert_counts, counts};
use singleflight_stats::{Fanout, Stats};
use singleflight_tests::{Gate, wait_until};

mod blocking {
    use super::*;
    use singleflight_blocking::{Error, Group};

    fn observed<T>(stats: &Arc<Stats>) -> Group<String, T> {
        Group::new().with_observer(stats.clone())
    }

    /// A blocking leader cannot be dropped mid-work, but a core leader can, and blocking
    /// waiters honour the promotion: one leader drop, one takeover, two misses.
    #[test]
    fn a_leader_drop_and_the_takeover_are_each_counted_once() {
        let _watchdog = singleflight_tests::watchdog!();
        let stats = Arc::new(Stats::new());
        let group = observed::<u32>(&stats);
        let Ok(singleflight_core::Entered::Leader(leader)) = group.as_core().enter("k") else {
            panic!("the first caller leads");
        };
        thread::scope(|s| {
            let waiters: Vec<_> = (0..3)
                .map(|i| {
                    let group = &group;
                    // Join one at a time, so the oldest (i = 0) is the one promoted.
                    let waiter = s.spawn(move || group.request("k").with_role().call(|| 100 + i));
                    wait_until("the waiter joined", || group.waiters("k") == i as usize + 1);
                    waiter
                })
                .collect();
            drop(leader);
            let results: Vec<_> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
            assert_eq!(
                results[0],
                (
                    Ok(100),
                    singleflight_blocking::Role::Leader { shared: true }
                )
            );
            assert_eq!(results[1], (Ok(100), singleflight_blocking::Role::Waiter));
            assert_eq!(results[2], (Ok(100), singleflight_blocking::Role::Waiter));
        });
        // Calls: the core leader and three blocking callers = 2 hits + 2 misses.
        assert_counts(&stats, [2, 2, 0, 0, 1, 1, 0, 0]);
    }

    #[test]
    fn a_snapshot_does_not_change_afterwards() {
        let _watchdog = singleflight_tests::watchdog!();
        let stats = Arc::new(Stats::new());
        let group = observed::<u32>(&stats);
        assert_eq!(group.call("a", || 1), Ok(1));
        let snapshot = stats.snapshot();
        let copy = snapshot;
        assert_eq!(group.call("b", || 2), Ok(2));
        assert_eq!(stats.snapshot().misses, 2);
        stats.reset();
        assert_eq!(stats.snapshot().misses, 0);
        assert_eq!(snapshot, copy);
        assert_eq!(counts(&snapshot), [0, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn per_group_stats_add_up_into_a_shared_parent() {
        let _watchdog = singleflight_tests::watchdog!();
        let all = Arc::new(Stats::new());
        let a_stats = Arc::new(Stats::with_parent(all.clone()).timed());
        let b_stats = Arc::new(Stats::with_parent(all.clone()));
        let a = observed::<u32>(&a_stats);
        let b = observed::<Result<u32, u32>>(&b_stats);
        assert_eq!(a.call("x", || 1), Ok(1));
        assert_eq!(a.call("y", || 2), Ok(2));
        assert_eq!(b.try_call("x", || Err(3)), Err(Error::Failed(3)));
        assert_counts(&a_stats, [0, 2, 0, 0, 0, 0, 0, 0]);
        assert_counts(&b_stats, [0, 1, 1, 0, 0, 0, 0, 0]);
        assert_counts(&all, [0, 3, 1, 0, 0, 0, 0, 0]);
        // Resetting a child leaves the parent alone, and the reverse.
        a_stats.reset();
        assert_eq!(all.snapshot().misses, 3);
        all.reset();
        assert_eq!(b_stats.snapshot().misses, 1);
        assert!(!all.is_timed() && a_stats.is_timed());
    }

    /// Work time: one sample per execution, however many callers shared it.
    #[test]
    fn work_time_is_measured_once_per_execution() {
        let _watchdog = singleflight_tests::watchdog!();
        let stats = Arc::new(Stats::new().timed());
        let group = observed::<u32>(&stats);
        let release = Gate::new();
        let work = Duration::from_millis(20);
        thread::scope(|s| {
            let leader = s.spawn(|| {
                group.call("k", || {
                    release.wait();
                    // Not for ordering: the work must take measurable time.
                    thread::sleep(work);
                    1
                })
            });
            wait_until("the leader runs", || group.contains("k"));
            let waiters: Vec<_> = (0..4).map(|_| s.spawn(|| group.call("k", || 0))).collect();
            wait_until("four waiters joined", || group.waiters("k") == 4);
            release.open();
            assert_eq!(leader.join().unwrap(), Ok(1));
            waiters
                .into_iter()
                .for_each(|w| assert_eq!(w.join().unwrap(), Ok(1)));
        });
        let first = stats.snapshot();
        assert!(first.work_time >= work, "{first:?}");
        // Five callers, one execution: far less than five times the work.
        assert!(first.work_time < work * 5, "{first:?}");
        assert_eq!(first.max_work_time, first.work_time);
        assert_eq!(group.call("quick", || 2), Ok(2));
        let second = stats.snapshot();
        assert!(second.work_time > first.work_time);
        assert_eq!(second.max_work_time, first.max_work_time);
        stats.reset();
        let reset = stats.snapshot();
        assert_eq!(
            (reset.work_time, reset.max_work_time),
            (Duration::ZERO, Duration::ZERO)
        );
    }

    #[test]
    fn an_untimed_stats_reports_no_work_time() {
        let _watchdog = singleflight_tests::watchdog!();
        let stats = Arc::new(Stats::new());
        let group = observed::<u32>(&stats);
        assert_eq!(
            group.call("k", || {
                thread::sleep(Duration::from_millis(1));
                1
            }),
            Ok(1)
        );
        assert_eq!(stats.snapshot().work_time, Duration::ZERO);
    }

    #[test]
    fn a_fanout_hands_each_observer_its_own_token() {
        let _watchdog = singleflight_tests::watchdog!();
        let timed = Arc::new(Stats::new().timed());
        let plain = Arc::new(Stats::new());
        let fanout = Arc::new(Fanout::new([timed.clone() as _, plain.clone() as _]));
        let group = Group::<String, u32>::new().with_observer(fanout.clone());
        assert_eq!(
            group.call("k", || {
                thread::sleep(Duration::from_millis(2));
                1
            }),
            Ok(1)
        );
        assert_counts(&timed, [0, 1, 0, 0, 0, 0, 0, 0]);
        assert_counts(&plain, [0, 1, 0, 0, 0, 0, 0, 0]);
        assert!(timed.snapshot().work_time >= Duration::from_millis(2));
        // A token came back and its slot was freed.
        assert!(
            format!("{fanout:?}").contains("executions: 0"),
            "{fanout:?}"
        );
    }
}
