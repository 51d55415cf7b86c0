//! `singleflight-stats` through the runtime front-ends (tokio, smol, async-std): the same
//! counting rules as on the blocking front-end, plus what only they have — timeouts of
//! async callers (a waiter's and a leader's) and detached work. Written once, instantiated
//! per runtime; each caller is driven by the runtime's `block_on` on its own thread, and
//! ordering comes from gates and waiter counts.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread;
use std::time::Duration;

use futures_lite::future::poll_once;
use singleflight_core::{CallFuture, Role};
use singleflight_stats::Stats;
use singleflight_tests::{Gate, assert_counts, quiet_expected_panics, wait_until};

/// A call that was polled (and so registered) before being handed to a timeout, so the
/// timeout's clock can start after the test has put other callers in place.
struct Registered<C>(Pin<Box<C>>);

impl<C: Future> Future for Registered<C> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl<C: CallFuture> CallFuture for Registered<C> {
    fn role(&self) -> Option<Role> {
        self.0.role()
    }
}

/// Long enough that a timeout never fires while a test still orders its callers.
const NEVER: Duration = Duration::from_secs(3600);
/// A timeout that must elapse: whatever it bounds waits on a gate that stays closed.
const SHORT: Duration = Duration::from_millis(5);

macro_rules! stats_suite {
    ($runtime:ident, $front:ident, $block_on:path) => {
        mod $runtime {
            use super::*;
            use $front::{Error, Group, LeaderDropPolicy};

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
                        $block_on(group.call("k", || async {
                            release.opened().await;
                            7
                        }))
                    });
                    wait_until("the flight is active", || stats.active() == 1);
                    let waiters: Vec<_> = (0..5)
                        .map(|_| s.spawn(|| $block_on(group.call("k", || async { 0 }))))
                        .collect();
                    wait_until("five waiters joined", || group.waiters("k") == 5);
                    release.open();
                    assert_eq!(leader.join().unwrap(), Ok(7));
                    for waiter in waiters {
                        assert_eq!(waiter.join().unwrap(), Ok(7));
                    }
                });
                assert_counts(&stats, [5, 1, 0, 0, 0, 0, 0, 0]);
            }

            #[test]
            fn a_failing_flight_counts_one_error() {
                let _watchdog = singleflight_tests::watchdog!();
                let stats = Arc::new(Stats::new());
                let group = observed::<Result<u32, String>>(&stats);
                let release = Gate::new();
                thread::scope(|s| {
                    let leader = s.spawn(|| {
                        $block_on(group.try_call("k", || async {
                            release.opened().await;
                            Err("down".to_string())
                        }))
                    });
                    wait_until("the leader runs", || group.contains("k"));
                    let waiters: Vec<_> = (0..2)
                        .map(|_| s.spawn(|| $block_on(group.try_call("k", || async { Ok(0) }))))
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
                        $block_on(group.call("k", || async {
                            release.opened().await;
                            panic!("expected: the work panics")
                        }))
                    });
                    wait_until("the leader runs", || group.contains("k"));
                    let waiters: Vec<_> = (0..2)
                        .map(|_| s.spawn(|| $block_on(group.call("k", || async { 0 }))))
                        .collect();
                    wait_until("two waiters joined", || group.waiters("k") == 2);
                    release.open();
                    assert!(leader.join().is_err());
                    for waiter in waiters {
                        assert!(waiter.join().unwrap().unwrap_err().is_panicked());
                    }
                });
                assert_counts(&stats, [2, 1, 0, 1, 0, 0, 0, 0]);
            }

            fn drop_the_leader(group: &Group<String, u32>) -> Vec<Result<u32, Error>> {
                let never = Gate::new();
                let mut leader = Box::pin(group.call("k", || async {
                    never.opened().await;
                    1
                }));
                assert!($block_on(poll_once(leader.as_mut())).is_none());
                thread::scope(|s| {
                    let waiters: Vec<_> = (0..3u32)
                        .map(|i| {
                            let h = s.spawn(move || {
                                $block_on(group.call("k", || async move { 100 + i }))
                            });
                            wait_until("the waiter joined", || {
                                group.waiters("k") == i as usize + 1
                            });
                            h
                        })
                        .collect();
                    drop(leader);
                    waiters.into_iter().map(|h| h.join().unwrap()).collect()
                })
            }

            #[test]
            fn a_leader_drop_and_the_takeover_are_each_counted_once() {
                let _watchdog = singleflight_tests::watchdog!();
                let stats = Arc::new(Stats::new());
                let results = drop_the_leader(&observed(&stats));
                assert_eq!(results, [Ok(100), Ok(100), Ok(100)]);
                assert_counts(&stats, [2, 2, 0, 0, 1, 1, 0, 0]);
            }

            #[test]
            fn a_leader_drop_that_fails_the_waiters_is_counted_once() {
                let _watchdog = singleflight_tests::watchdog!();
                let stats = Arc::new(Stats::new());
                let group = observed(&stats).with_leader_drop_policy(LeaderDropPolicy::FailWaiters);
                let results = drop_the_leader(&group);
                assert!(
                    results.iter().all(|r| *r == Err(Error::LeaderDropped)),
                    "{results:?}"
                );
                assert_counts(&stats, [3, 1, 0, 0, 1, 0, 0, 0]);
            }

            #[test]
            fn a_waiter_timeout_is_a_timeout_and_a_hit() {
                let _watchdog = singleflight_tests::watchdog!();
                let stats = Arc::new(Stats::new());
                let group = observed::<u32>(&stats);
                let release = Gate::new();
                thread::scope(|s| {
                    let leader = s.spawn(|| {
                        $block_on(group.call("k", || async {
                            release.opened().await;
                            1
                        }))
                    });
                    wait_until("the leader runs", || group.contains("k"));
                    // Built inside `block_on`: tokio's timer needs the runtime's context.
                    let timed_out =
                        $block_on(async { group.call_timeout("k", SHORT, || async { 0 }).await });
                    assert_eq!(timed_out, Err(Error::Timeout));
                    release.open();
                    assert_eq!(leader.join().unwrap(), Ok(1));
                });
                assert_counts(&stats, [1, 1, 0, 0, 0, 0, 1, 0]);
            }

            /// A leader's own timeout cancels it: a timeout, a leader drop, and the oldest
            /// waiter takes over.
            #[test]
            fn a_leader_timeout_is_a_timeout_a_leader_drop_and_a_takeover() {
                let _watchdog = singleflight_tests::watchdog!();
                let stats = Arc::new(Stats::new());
                let group = observed::<u32>(&stats);
                let never = Gate::new();
                let mut call = Box::pin(group.call("k", || async {
                    never.opened().await;
                    1
                }));
                assert!(
                    $block_on(poll_once(call.as_mut())).is_none(),
                    "the leader runs"
                );
                thread::scope(|s| {
                    let waiter = s.spawn(|| {
                        $block_on(async { group.call_timeout("k", NEVER, || async { 2 }).await })
                    });
                    wait_until("the waiter joined", || group.waiters("k") == 1);
                    // The leader's clock starts only now, with the waiter in place.
                    let timed_out =
                        $block_on(async { group.timeout(SHORT, Registered(call)).await });
                    assert_eq!(timed_out, Err(Error::Timeout));
                    assert_eq!(waiter.join().unwrap(), Ok(2));
                });
                assert_counts(&stats, [0, 2, 0, 0, 1, 1, 1, 0]);
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
                assert!($block_on(poll_once(leader.as_mut())).is_none());
                assert_eq!(stats.active(), 1);
                stats.reset();
                assert_counts(&stats, [0, 0, 0, 0, 0, 0, 0, 1]);
                release.open();
                assert_eq!($block_on(leader), Ok(1));
                assert_counts(&stats, [0, 0, 0, 0, 0, 0, 0, 0]);
            }

            /// Detached work is one execution (a miss); its caller is not also a hit, and
            /// the callers that join it are hits.
            #[test]
            fn detached_work_is_one_miss_and_its_joiners_are_hits() {
                let _watchdog = singleflight_tests::watchdog!();
                let stats = Arc::new(Stats::new());
                let group = observed::<u32>(&stats);
                let release = Gate::new();
                thread::scope(|s| {
                    let leader = s.spawn(|| {
                        let release = release.clone();
                        $block_on(group.call_detached("k", move || async move {
                            release.opened().await;
                            7
                        }))
                    });
                    wait_until("the flight is active", || stats.active() == 1);
                    let waiters: Vec<_> = (0..5)
                        .map(|_| s.spawn(|| $block_on(group.call("k", || async { 0 }))))
                        .collect();
                    // The detached caller leads: it is not one of the waiters.
                    wait_until("five waiters joined", || group.waiters("k") == 5);
                    release.open();
                    assert_eq!(leader.join().unwrap(), Ok(7));
                    for waiter in waiters {
                        assert_eq!(waiter.join().unwrap(), Ok(7));
                    }
                });
                assert_counts(&stats, [5, 1, 0, 0, 0, 0, 0, 0]);
            }

            /// The caller of detached work gives up: a timeout, while the work finishes on
            /// its own and is counted once, not as a leader drop.
            #[test]
            fn detached_work_outlives_its_callers_timeout() {
                let _watchdog = singleflight_tests::watchdog!();
                let stats = Arc::new(Stats::new());
                let group = observed::<u32>(&stats);
                let release = Gate::new();
                let work_gate = release.clone();
                let outcome = $block_on(async {
                    let call = group.call_detached("k", move || async move {
                        work_gate.opened().await;
                        7
                    });
                    group.timeout(SHORT, call).await
                });
                assert_eq!(outcome, Err(Error::Timeout));
                assert_eq!(stats.active(), 1, "the work goes on");
                release.open();
                wait_until("the detached work finished", || stats.active() == 0);
                assert_counts(&stats, [0, 1, 0, 0, 0, 0, 1, 0]);
            }

            #[test]
            fn hits_plus_misses_is_the_number_of_calls() {
                let _watchdog = singleflight_tests::watchdog!();
                const THREADS: usize = 4;
                const CALLS: usize = 150;
                let stats = Arc::new(Stats::new());
                let group = observed::<usize>(&stats);
                thread::scope(|s| {
                    for t in 0..THREADS {
                        let group = &group;
                        s.spawn(move || {
                            for i in 0..CALLS {
                                let key = ["a", "b"][(t + i) % 2];
                                let value = $block_on(group.call(key, || async move {
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
    };
}

/// One multi-thread tokio runtime for the whole suite: detached work is spawned on it and
/// keeps running after the caller's `block_on` returns.
fn tokio_block_on<F: std::future::Future>(future: F) -> F::Output {
    static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .expect("a tokio runtime")
    });
    RUNTIME.block_on(future)
}

stats_suite!(tokio_runtime, singleflight_tokio, tokio_block_on);
stats_suite!(smol_runtime, singleflight_smol, smol::block_on);
stats_suite!(
    async_std_runtime,
    singleflight_async_std,
    async_std::task::block_on
);
