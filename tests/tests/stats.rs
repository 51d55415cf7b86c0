//! `singleflight-stats` counting real calls: every counter on the blocking front-end and on
//! the async path (the core's `Group::call` / `try_call` futures, each caller driven by
//! `futures_lite::future::block_on` on its own thread). Ordering comes from gates and
//! waiter counts, never from sleeping.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use singleflight_stats::{Fanout, Stats};
use singleflight_tests::{Gate, assert_counts, counts, quiet_expected_panics, wait_until};

/// Six callers on one flight: the leader blocks on `release` until five waiters joined.
const CALLERS: usize = 6;

mod blocking {
    use super::*;
    use singleflight_blocking::{Error, Group};

    fn observed<T>(stats: &Arc<Stats>) -> Group<String, T> {
        Group::new().with_observer(stats.clone())
    }

    #[test]
    fn six_callers_on_one_flight_are_five_hits_and_one_miss() {
        let _watchdog = singleflight_tests::watchdog!();
        let stats = Arc::new(Stats::new());
        let group = observed::<u32>(&stats);
        let release = Gate::new();
        thread::scope(|s| {
            let leader = s.spawn(|| {
                group.call("k", || {
                    release.wait();
                    7
                })
            });
            wait_until("the flight is active", || stats.active() == 1);
            let waiters: Vec<_> = (1..CALLERS)
                .map(|_| s.spawn(|| group.call("k", || 0)))
                .collect();
            wait_until("five waiters joined", || group.waiters("k") == CALLERS - 1);
            // In flight: one miss counted, the hits come when the waiters leave.
            assert_counts(&stats, [0, 1, 0, 0, 0, 0, 0, 1]);
            release.open();
            assert_eq!(leader.join().unwrap(), Ok(7));
            for waiter in waiters {
                assert_eq!(waiter.join().unwrap(), Ok(7));
            }
        });
        assert_counts(&stats, [5, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(stats.hit_rate(), 5.0 / 6.0);
        assert_eq!(stats.snapshot().calls(), CALLERS as u64);
    }

    #[test]
    fn a_failing_flight_counts_one_error_not_one_per_caller() {
        let _watchdog = singleflight_tests::watchdog!();
        let stats = Arc::new(Stats::new());
        let group = observed::<Result<u32, String>>(&stats);
        let release = Gate::new();
        thread::scope(|s| {
            let leader = s.spawn(|| {
                group.try_call("k", || {
                    release.wait();
                    Err("down".to_string())
                })
            });
            wait_until("the leader runs", || group.contains("k"));
            let waiters: Vec<_> = (0..2)
                .map(|_| s.spawn(|| group.try_call("k", || Ok(0))))
                .collect();
            wait_until("two waiters joined", || group.waiters("k") == 2);
            release.open();
            assert_eq!(leader.join().unwrap(), Err(Error::Failed("down".into())));
            for waiter in waiters {
                assert_eq!(waiter.join().unwrap(), Err(Error::Failed("down".into())));
            }
        });
        assert_counts(&stats, [2, 1, 1, 0, 0, 0, 0, 0]);
        // A successful flight afterwards adds no error.
        assert_eq!(group.try_call("k", || Ok(1)), Ok(1));
        assert_counts(&stats, [2, 2, 1, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn a_panic_is_counted_once() {
        let _watchdog = singleflight_tests::watchdog!();
        quiet_expected_panics();
        let stats = Arc::new(Stats::new());
        let group = observed::<u32>(&stats);
        let release = Gate::new();
        thread::scope(|s| {
            let leader = s.spawn(|| {
                group.call("k", || {
                    release.wait();
                    panic!("expected: the work panics")
                })
            });
            wait_until("the leader runs", || group.contains("k"));
            let waiters: Vec<_> = (0..3).map(|_| s.spawn(|| group.call("k", || 0))).collect();
            wait_until("three waiters joined", || group.waiters("k") == 3);
            release.open();
            assert!(
                leader.join().is_err(),
                "the leader's call resumes the panic"
            );
            for waiter in waiters {
                assert!(waiter.join().unwrap().unwrap_err().is_panicked());
            }
        });
        assert_counts(&stats, [3, 1, 0, 1, 0, 0, 0, 0]);
    }

    /// A blocking leader cannot be dropped mid-work, but a core leader can, and blocking
    /// waiters honour the promotion: one leader drop, one takeover, two misses.
    #[test]
    fn a_leader_drop_and_the_takeover_are_each_counted_once() {
        let _watchdog = singleflight_tests::watchdog!();
        let stats = Arc::new(Stats::new());
        let group = observed::<u32>(&stats);
        let Ok(singleflight_core::Entry::Leader(leader)) = group.as_core().enter("k") else {
            panic!("the first caller leads");
        };
        thread::scope(|s| {
            let waiters: Vec<_> = (0..3)
                .map(|i| {
                    let group = &group;
                    // Join one at a time, so the oldest (i = 0) is the one promoted.
                    let waiter = s.spawn(move || group.request("k").call(|| 100 + i));
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
    fn a_waiter_timeout_is_counted_and_is_also_a_hit() {
        let _watchdog = singleflight_tests::watchdog!();
        let stats = Arc::new(Stats::new());
        let group = observed::<u32>(&stats);
        let release = Gate::new();
        thread::scope(|s| {
            let leader = s.spawn(|| {
                group.call("k", || {
                    release.wait();
                    1
                })
            });
            wait_until("the leader runs", || group.contains("k"));
            // The gate stays closed until this returns, so the timeout must elapse.
            let timed_out = group.call_timeout("k", Duration::from_millis(5), || 0);
            assert_eq!(timed_out, Err(Error::Timeout));
            release.open();
            assert_eq!(leader.join().unwrap(), Ok(1));
        });
        assert_counts(&stats, [1, 1, 0, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn reset_during_a_flight_never_leaves_active_negative() {
        let _watchdog = singleflight_tests::watchdog!();
        let stats = Arc::new(Stats::new());
        let group = observed::<u32>(&stats);
        assert_eq!(group.call("warm", || 0), Ok(0));
        let release = Gate::new();
        thread::scope(|s| {
            let leader = s.spawn(|| {
                group.call("k", || {
                    release.wait();
                    1
                })
            });
            wait_until("the flight is active", || stats.active() == 1);
            stats.reset();
            // Everything is zero but the live gauge.
            assert_counts(&stats, [0, 0, 0, 0, 0, 0, 0, 1]);
            release.open();
            assert_eq!(leader.join().unwrap(), Ok(1));
        });
        // The flight that started before the reset ended after it: active is 0, not -1.
        assert_counts(&stats, [0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(stats.hit_rate(), 0.0);
        assert_eq!(group.call("k", || 2), Ok(2));
        assert_counts(&stats, [0, 1, 0, 0, 0, 0, 0, 0]);
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

    /// A call rejected as re-entrant never joined or ran anything: it is not counted.
    #[test]
    fn a_reentrant_call_is_not_counted() {
        let _watchdog = singleflight_tests::watchdog!();
        let stats = Arc::new(Stats::new());
        let group = observed::<u32>(&stats);
        let outer = group.call("k", || {
            assert_eq!(group.call("k", || 0), Err(Error::Reentrant));
            1
        });
        assert_eq!(outer, Ok(1));
        assert_counts(&stats, [0, 1, 0, 0, 0, 0, 0, 0]);
    }

    /// Many threads, few keys: whatever coalesced, every call was a hit or a miss.
    #[test]
    fn hits_plus_misses_is_the_number_of_calls() {
        let _watchdog = singleflight_tests::watchdog!();
        const THREADS: usize = 8;
        const CALLS: usize = 300;
        let stats = Arc::new(Stats::new());
        let group = observed::<usize>(&stats);
        let keys = ["a", "b", "c"];
        thread::scope(|s| {
            for t in 0..THREADS {
                let group = &group;
                s.spawn(move || {
                    for i in 0..CALLS {
                        let key = keys[(t + i) % keys.len()];
                        let value = group.call(key, || {
                            thread::yield_now();
                            i
                        });
                        assert!(value.is_ok());
                    }
                });
            }
        });
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.calls(), (THREADS * CALLS) as u64);
        assert_eq!(snapshot.active, 0);
        assert!(snapshot.misses >= 1);
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

mod core_async {
    use super::*;
    use futures_lite::future::{block_on, poll_once};
    use singleflight_core::{Error, Group, LeaderDropPolicy};

    fn observed<T>(stats: &Arc<Stats>) -> Group<String, T> {
        Group::new().with_observer(stats.clone())
    }

    #[test]
    fn six_callers_on_one_flight_are_five_hits_and_one_miss() {
        let _watchdog = singleflight_tests::watchdog!();
        let stats = Arc::new(Stats::new());
        let group = observed::<u32>(&stats);
        let release = Gate::new();
        thread::scope(|s| {
            let leader = s.spawn(|| {
                block_on(group.call("k", || async {
                    release.opened().await;
                    7
                }))
            });
            wait_until("the flight is active", || stats.active() == 1);
            let waiters: Vec<_> = (1..CALLERS)
                .map(|_| s.spawn(|| block_on(group.call("k", || async { 0 }))))
                .collect();
            wait_until("five waiters joined", || group.waiters("k") == CALLERS - 1);
            assert_counts(&stats, [0, 1, 0, 0, 0, 0, 0, 1]);
            release.open();
            assert_eq!(leader.join().unwrap(), Ok(7));
            for waiter in waiters {
                assert_eq!(waiter.join().unwrap(), Ok(7));
            }
        });
        assert_counts(&stats, [5, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(stats.snapshot().calls(), CALLERS as u64);
    }

    #[test]
    fn a_failing_flight_counts_one_error() {
        let _watchdog = singleflight_tests::watchdog!();
        let stats = Arc::new(Stats::new());
        let group = observed::<Result<u32, String>>(&stats);
        let release = Gate::new();
        thread::scope(|s| {
            let leader = s.spawn(|| {
                block_on(group.try_call("k", || async {
                    release.opened().await;
                    Err("down".to_string())
                }))
            });
            wait_until("the leader runs", || group.contains("k"));
            let waiters: Vec<_> = (0..2)
                .map(|_| s.spawn(|| block_on(group.try_call("k", || async { Ok(0) }))))
                .collect();
            wait_until("two waiters joined", || group.waiters("k") == 2);
            release.open();
            assert_eq!(leader.join().unwrap(), Err(Error::Failed("down".into())));
            for waiter in waiters {
                assert_eq!(waiter.join().unwrap(), Err(Error::Failed("down".into())));
            }
        });
        assert_counts(&stats, [2, 1, 1, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn a_panic_is_counted_once() {
        let _watchdog = singleflight_tests::watchdog!();
        quiet_expected_panics();
        let stats = Arc::new(Stats::new());
        let group = observed::<u32>(&stats);
        let release = Gate::new();
        thread::scope(|s| {
            let leader = s.spawn(|| {
                block_on(group.call("k", || async {
                    release.opened().await;
                    panic!("expected: the work panics")
                }))
            });
            wait_until("the leader runs", || group.contains("k"));
            let waiters: Vec<_> = (0..3)
                .map(|_| s.spawn(|| block_on(group.call("k", || async { 0 }))))
                .collect();
            wait_until("three waiters joined", || group.waiters("k") == 3);
            release.open();
            assert!(leader.join().is_err());
            for waiter in waiters {
                assert!(waiter.join().unwrap().unwrap_err().is_panicked());
            }
        });
        assert_counts(&stats, [3, 1, 0, 1, 0, 0, 0, 0]);
    }

    /// Drops the leading future after `waiters` callers joined; returns their results.
    fn drop_the_leader(group: &Group<String, u32>, waiters: usize) -> Vec<Result<u32, Error>> {
        let never = Gate::new();
        let mut leader = Box::pin(group.call("k", || async {
            never.opened().await;
            1
        }));
        assert!(
            block_on(poll_once(leader.as_mut())).is_none(),
            "the work waits"
        );
        thread::scope(|s| {
            let handles: Vec<_> = (0..waiters)
                .map(|i| {
                    let h = s.spawn(move || block_on(group.call("k", || async { 100 + i as u32 })));
                    wait_until("the waiter joined", || group.waiters("k") == i + 1);
                    h
                })
                .collect();
            drop(leader);
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn a_leader_drop_and_the_takeover_are_each_counted_once() {
        let _watchdog = singleflight_tests::watchdog!();
        let stats = Arc::new(Stats::new());
        let group = observed::<u32>(&stats);
        let results = drop_the_leader(&group, 3);
        assert_eq!(results, [Ok(100), Ok(100), Ok(100)]);
        // The dropped leader and the promoted waiter ran the work; two waiters shared it.
        assert_counts(&stats, [2, 2, 0, 0, 1, 1, 0, 0]);
    }

    #[test]
    fn a_leader_drop_that_fails_the_waiters_is_counted_once() {
        let _watchdog = singleflight_tests::watchdog!();
        let stats = Arc::new(Stats::new());
        let group = observed::<u32>(&stats).with_leader_drop_policy(LeaderDropPolicy::FailWaiters);
        let results = drop_the_leader(&group, 3);
        assert!(
            results.iter().all(|r| *r == Err(Error::LeaderDropped)),
            "{results:?}"
        );
        assert_eq!(results.len(), 3);
        assert_counts(&stats, [3, 1, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn a_dropped_waiter_is_a_hit_and_changes_nothing_else() {
        let _watchdog = singleflight_tests::watchdog!();
        let stats = Arc::new(Stats::new());
        let group = observed::<u32>(&stats);
        let release = Gate::new();
        let mut leader = Box::pin(group.call("k", || async {
            release.opened().await;
            1
        }));
        assert!(block_on(poll_once(leader.as_mut())).is_none());
        let mut waiter = Box::pin(group.call("k", || async { 0 }));
        assert!(block_on(poll_once(waiter.as_mut())).is_none());
        assert_eq!(group.waiters("k"), 1);
        drop(waiter);
        release.open();
        assert_eq!(block_on(leader), Ok(1));
        assert_counts(&stats, [1, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn reset_during_a_flight_never_leaves_active_negative() {
        let _watchdog = singleflight_tests::watchdog!();
        let stats = Arc::new(Stats::new());
        let group = observed::<u32>(&stats);
        let release = Gate::new();
        let mut leader = Box::pin(group.call("k", || async {
            release.opened().await;
            1
        }));
        assert!(block_on(poll_once(leader.as_mut())).is_none());
        assert_eq!(stats.active(), 1);
        stats.reset();
        assert_counts(&stats, [0, 0, 0, 0, 0, 0, 0, 1]);
        release.open();
        assert_eq!(block_on(leader), Ok(1));
        assert_counts(&stats, [0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn hits_plus_misses_is_the_number_of_calls() {
        let _watchdog = singleflight_tests::watchdog!();
        const THREADS: usize = 6;
        const CALLS: usize = 200;
        let stats = Arc::new(Stats::new());
        let group = observed::<usize>(&stats);
        thread::scope(|s| {
            for t in 0..THREADS {
                let group = &group;
                s.spawn(move || {
                    for i in 0..CALLS {
                        let key = ["a", "b"][(t + i) % 2];
                        let value = block_on(group.call(key, || async move {
                            futures_lite::future::yield_now().await;
                            i
                        }));
                        assert!(value.is_ok());
                    }
                });
            }
        });
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.calls(), (THREADS * CALLS) as u64);
        assert_eq!(snapshot.active, 0);
    }
}
