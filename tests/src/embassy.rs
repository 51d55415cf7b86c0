//! The embassy setup for the conformance kit: `singleflight-embassy` on embassy's executor
//! (`platform-std`, a fresh one on its own thread per rule) with embassy-time's std driver.
//!
//! embassy's tasks are static: every caller runs as one task function that takes its
//! future boxed, spawned through a `SendSpawner` from the rule's thread. The front-end has
//! no detached or blocking work, and no re-entrancy detection on its targets (they build
//! the core without `std`): those rules are reported as unsupported.
//!
//! This test package also builds the std front-ends, so the core here has `std` (cargo
//! unifies features): the panic rules see the std core's panic capture. What an embassy
//! target gets instead (a panic aborts, or reaches waiters as a dropped leader) is tested
//! by singleflight-embassy's own tests, which build the core without `std`.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::task::{Context, Waker};
use std::time::Duration;

use embassy_executor::{Executor, SendSpawner};
use singleflight_conformance::{
    Caller, CallerSide, Capabilities, Harness, Kind, Offload, Report, Spec, Support, Value, Work,
    drive,
};
use singleflight_core::{CallFuture, Error, LeaderDropPolicy, Observer, flatten};
use singleflight_embassy::Group;

/// `singleflight-embassy` on embassy's executor.
#[derive(Debug)]
pub struct Embassy;

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Every caller is a task of this one function (embassy's tasks are static and non-generic).
/// The pool is shared by the rules running on parallel test threads; each slot is freed
/// when its caller ends.
#[embassy_executor::task(pool_size = 256)]
async fn caller(task: Task) {
    task.await;
}

/// Does nothing: spawning it wakes the executor so that it sees it should stop.
#[embassy_executor::task(pool_size = 16)]
async fn nudge() {}

std::thread_local! {
    /// The spawner of the executor serving the rule running on this thread.
    static SPAWNER: Cell<Option<SendSpawner>> = const { Cell::new(None) };
}

fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    let spawner = SPAWNER
        .get()
        .expect("callers are started from inside `block_on`");
    spawner.spawn(caller(Box::pin(task)).expect("the caller pool has room"));
}

/// Maps a call's output to the report's shape.
type Map<V, E> = fn(Result<V, Error<E>>) -> Result<u64, Error<String>>;

fn infallible(output: Result<Value, Error>) -> Result<u64, Error<String>> {
    flatten(output)
}

fn fallible(output: Result<u64, Error<String>>) -> Result<u64, Error<String>> {
    output
}

/// Drives `call`, bounded by the group's embassy timer if the spec says so.
async fn timed<C, V, E>(
    group: &Group<String, Value>,
    spec: Spec,
    call: C,
    side: &CallerSide,
    map: Map<V, E>,
) -> Report
where
    C: CallFuture<Output = Result<V, Error<E>>>,
{
    match spec.timeout {
        None => drive(call, side.cancel_gate(), map).await,
        Some(timeout) => drive(group.timeout(timeout, call), side.cancel_gate(), map).await,
    }
}

impl Harness for Embassy {
    type Group = Group<String, Value>;

    const CAPABILITIES: Capabilities = Capabilities::FUTURES
        .with_detached(Offload::Unsupported(
            "embassy's tasks are static and non-generic: a library cannot spawn a future made at run time",
        ))
        .with_blocking_pool(Offload::Unsupported(
            "embassy has no blocking pool (its targets have no threads)",
        ))
        .with_refresh(Support::Unsupported(
            "a refresh runs detached, and embassy cannot spawn a future made at run time",
        ))
        .with_reentrancy(Support::Unsupported(
            "embassy targets build the core without std, which has no thread-local stack to detect it",
        ));
    // embassy-time's std driver runs on the real clock.
    const TIMEOUT: Duration = Duration::from_millis(50);

    fn group(policy: LeaderDropPolicy, observer: Option<Arc<dyn Observer>>) -> Self::Group {
        let group = Group::new().with_leader_drop_policy(policy);
        match observer {
            Some(observer) => group.with_observer(observer),
            None => group,
        }
    }

    fn from_core(group: singleflight_core::Group<String, Value>) -> Self::Group {
        Group::from_core(group)
    }

    fn in_flight(group: &Self::Group) -> usize {
        group.in_flight()
    }

    fn waiters(group: &Self::Group, key: &str) -> usize {
        group.waiters(key)
    }

    fn contains(group: &Self::Group, key: &str) -> bool {
        group.contains(key)
    }

    fn forget(group: &Self::Group, key: &str) -> bool {
        group.forget(key)
    }

    fn forget_all(group: &Self::Group) -> usize {
        group.forget_all()
    }

    fn spawn_call(group: &Arc<Self::Group>, key: &str, spec: Spec, work: Work) -> Caller {
        let (caller, side) = Caller::new();
        let group = Arc::clone(group);
        let key = key.to_string();
        spawn(async move {
            let g = &*group;
            let k = key.as_str();
            let report = match (spec.kind, spec.fallible) {
                (Kind::Call, false) => {
                    timed(g, spec, g.call(k, || work.run_async()), &side, infallible).await
                }
                (Kind::Call, true) => {
                    timed(g, spec, g.try_call(k, || work.run_async()), &side, fallible).await
                }
                (kind, _) => unreachable!("{kind:?} calls are reported as unsupported"),
            };
            side.finish(report);
        });
        caller
    }

    fn spawn_reentrant(group: &Arc<Self::Group>, key: &str) -> Caller {
        // Re-entrancy is reported as unsupported, so no rule calls this; it behaves as the
        // other setups' would, for a core built with `std`.
        let (caller, side) = Caller::new();
        let group = Arc::clone(group);
        let key = key.to_string();
        spawn(async move {
            let g = &*group;
            let k = key.as_str();
            let call = g.call(k, || async move {
                let inner = g.call(k, || async { Ok(7) }).await;
                Ok(u64::from(!matches!(inner, Err(Error::Reentrant))))
            });
            let report = drive(call, side.cancel_gate(), infallible).await;
            side.finish(report);
        });
        caller
    }

    fn churn(group: &Self::Group, n: usize) {
        let mut cx = Context::from_waker(Waker::noop());
        for i in 0..n {
            let key = format!("churn:{i}");
            let mut leader = Box::pin(group.call(key.as_str(), std::future::pending::<Value>));
            assert!(leader.as_mut().poll(&mut cx).is_pending());
            let mut waiter = Box::pin(group.call(key.as_str(), std::future::pending::<Value>));
            assert!(waiter.as_mut().poll(&mut cx).is_pending());
            if i % 2 == 0 {
                drop(waiter);
                drop(leader);
            } else {
                drop(leader);
                drop(waiter);
            }
        }
    }

    fn unpolled_in_flight(group: &Self::Group, key: &str) -> usize {
        let call = group.call(key, || async { Ok(1) });
        let in_flight = group.in_flight();
        drop(call);
        in_flight
    }

    /// Starts a fresh embassy executor on a thread of its own for the callers, runs `body`
    /// here (it only waits on gates and reads the group), then stops that executor.
    fn block_on<F: Future<Output = ()>>(body: F) {
        let (spawners, spawner) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let executor = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                // `run_until` needs the executor for `'static`: one leaked per rule.
                let executor = Box::leak(Box::new(Executor::new()));
                executor.run_until(
                    |spawner| {
                        spawners
                            .send(spawner.make_send())
                            .expect("the rule waits for the spawner");
                    },
                    || stop.load(Ordering::Acquire),
                );
            }
        });
        let spawner = spawner
            .recv()
            .expect("the executor thread sends its spawner");
        SPAWNER.set(Some(spawner));
        singleflight_conformance::block_on(body);
        SPAWNER.set(None);
        stop.store(true, Ordering::Release);
        spawner.spawn(nudge().expect("the nudge pool has room"));
        executor.join().expect("the executor thread stops");
    }
}
