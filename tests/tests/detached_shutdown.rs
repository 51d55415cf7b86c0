//! Detached work whose runtime shuts down before it finishes (DESIGN rules 4 and 6).
//!
//! The callers of detached work gave the work away: when the runtime drops it unfinished,
//! nobody is promoted to run it again. Every caller, the one that started it and those that
//! joined from other runtimes or threads, gets `Error::Panicked`; the work ran once; the
//! flight ends; and the work is dropped before its flight ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use singleflight_core::CallFuture as _;
use singleflight_tokio::{Error, Group, Role};

type TokioGroup = Group<String, u32>;

/// Counts an execution when made, and records when dropped how many flights were in
/// progress and how many callers waited: the work must be gone before its flight ends.
struct Execution {
    group: TokioGroup,
    in_flight_at_drop: Arc<AtomicUsize>,
    waiters_at_drop: Arc<AtomicUsize>,
}

impl Drop for Execution {
    fn drop(&mut self) {
        self.in_flight_at_drop
            .store(self.group.in_flight(), Ordering::SeqCst);
        self.waiters_at_drop
            .store(self.group.waiters("k"), Ordering::SeqCst);
    }
}

struct Scenario {
    group: TokioGroup,
    executions: Arc<AtomicUsize>,
    in_flight_at_drop: Arc<AtomicUsize>,
    waiters_at_drop: Arc<AtomicUsize>,
}

impl Scenario {
    fn new() -> Self {
        Self {
            group: TokioGroup::new(),
            executions: Arc::default(),
            in_flight_at_drop: Arc::new(AtomicUsize::new(usize::MAX)),
            waiters_at_drop: Arc::new(AtomicUsize::new(usize::MAX)),
        }
    }

    /// Work that counts itself and never finishes.
    fn work(&self) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = u32> + Send>> {
        let execution = Execution {
            group: self.group.clone(),
            in_flight_at_drop: Arc::clone(&self.in_flight_at_drop),
            waiters_at_drop: Arc::clone(&self.waiters_at_drop),
        };
        let executions = Arc::clone(&self.executions);
        move || {
            Box::pin(async move {
                let _execution = execution;
                executions.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<u32>().await
            })
        }
    }

    /// Asserts what a caller other than the starter got: the flight's panic, as a waiter.
    fn assert_failed(output: (Result<u32, Error>, Role)) {
        match output {
            (Err(Error::Panicked(message)), Role::Waiter) => assert!(
                message.as_str().contains("runtime"),
                "the message says what happened: {message:?}"
            ),
            other => panic!("a waiter of detached work dropped by its runtime got {other:?}"),
        }
    }

    fn assert_ended(&self) {
        assert_eq!(
            self.executions.load(Ordering::SeqCst),
            1,
            "the work ran once"
        );
        assert_eq!(self.group.in_flight(), 0, "the flight ended");
        assert_eq!(
            self.in_flight_at_drop.load(Ordering::SeqCst),
            1,
            "the work was dropped before its flight ended"
        );
    }
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("build a runtime")
}

/// The starter still waits when the runtime goes: it and a waiter from another thread both
/// get `Panicked`, and neither runs the work again.
#[test]
fn detached_work_dropped_by_its_runtime_fails_every_caller() {
    let _watchdog = singleflight_tests::watchdog!();
    let scenario = Scenario::new();
    let group = &scenario.group;
    let runtime = current_thread_runtime();
    let mut starter = Box::pin(group.call_detached("k", scenario.work()).with_role());
    runtime.block_on(async {
        assert!(
            std::future::poll_fn(|cx| Poll::Ready(starter.as_mut().poll(cx)))
                .await
                .is_pending()
        );
        singleflight_conformance::wait_until("the work starts", || {
            scenario.executions.load(Ordering::SeqCst) == 1
        })
        .await;
    });

    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            futures_lite::future::block_on(
                group
                    .call("k", || async {
                        scenario.executions.fetch_add(1, Ordering::SeqCst);
                        9
                    })
                    .with_role(),
            )
        });
        // The starter leads its flight: only the other caller counts as a waiter.
        singleflight_tests::wait_until("the other caller joins", || group.waiters("k") == 1);

        drop(runtime);
        assert_eq!(
            scenario.waiters_at_drop.load(Ordering::SeqCst),
            1,
            "the caller that joined still waited when the work was dropped"
        );
        match starter
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready((Err(Error::Panicked(_)), Role::Leader { .. })) => {}
            other => panic!("the starter of detached work dropped by its runtime got {other:?}"),
        }
        Scenario::assert_failed(waiter.join().expect("the waiter does not panic"));
    });
    scenario.assert_ended();
}

/// The starter has gone (say it timed out) when the runtime goes: the waiter left is not
/// promoted to run the work a second time; it gets `Panicked`.
#[test]
fn detached_work_dropped_by_its_runtime_is_not_run_again_by_a_waiter() {
    let _watchdog = singleflight_tests::watchdog!();
    let scenario = Scenario::new();
    let group = &scenario.group;
    let runtime = current_thread_runtime();
    runtime.block_on(async {
        let mut starter = Box::pin(group.call_detached("k", scenario.work()));
        assert!(
            std::future::poll_fn(|cx| Poll::Ready(starter.as_mut().poll(cx)))
                .await
                .is_pending()
        );
        singleflight_conformance::wait_until("the work starts", || {
            scenario.executions.load(Ordering::SeqCst) == 1
        })
        .await;
    });
    assert_eq!(group.in_flight(), 1, "the work goes on without its starter");

    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            futures_lite::future::block_on(
                group
                    .call("k", || async {
                        scenario.executions.fetch_add(1, Ordering::SeqCst);
                        9
                    })
                    .with_role(),
            )
        });
        singleflight_tests::wait_until("the other caller joins", || group.waiters("k") == 1);
        drop(runtime);
        Scenario::assert_failed(waiter.join().expect("the waiter does not panic"));
    });
    assert_eq!(
        scenario.waiters_at_drop.load(Ordering::SeqCst),
        1,
        "the waiter still waited when the work was dropped"
    );
    scenario.assert_ended();
}
