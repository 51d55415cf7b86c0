//! The workspace's five runtime setups for the conformance kit (`singleflight-conformance`):
//! blocking threads, and one generic harness for every async runtime (tokio current-thread
//! and multi-thread, smol, async-std). They use only the kit's public API, as an adapter
//! outside this workspace would.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use singleflight_core::rt::{RuntimeGroup, Spawn, SpawnBlocking, Timer};
use singleflight_core::{Error, LeaderDropPolicy, Observer, flatten};

use singleflight_conformance::{
    Caller, Capabilities, Harness, Kind, Report, Spec, Value, Work, drive, panic_message,
};

/// Maps an infallible call's output to the suite's report value.
fn infallible(output: Result<Value, Error>) -> Result<u64, Error<String>> {
    flatten(output)
}

/// Keeps a fallible call's output.
fn fallible(output: Result<u64, Error<String>>) -> Result<u64, Error<String>> {
    output
}

/// `singleflight-blocking`: every caller is a thread.
///
/// A thread cannot be dropped mid-call, so [`Caller::cancel`] does nothing, the leader-drop
/// policy does not apply, and "detached" or "blocking-pool" calls are plain blocking calls
/// (the leader's thread runs the work to its end whatever its waiters do) whose `'static`
/// work can start a refresh (`Request::call_refreshing`). Timeouts bound
/// only the wait for another thread's work.
#[derive(Debug)]
pub struct Blocking;

impl Harness for Blocking {
    type Group = singleflight_blocking::Group<String, Value>;

    const CAPABILITIES: Capabilities = Capabilities::THREADS;
    const TIMEOUT: Duration = Duration::from_millis(50);

    fn group(_policy: LeaderDropPolicy, observer: Option<Arc<dyn Observer>>) -> Self::Group {
        let group = singleflight_blocking::Group::new();
        match observer {
            Some(observer) => group.with_observer(observer),
            None => group,
        }
    }

    fn from_core(group: singleflight_core::Group<String, Value>) -> Self::Group {
        singleflight_blocking::Group::from_core(group)
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
        std::thread::spawn(move || {
            let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut request = group.request(key.as_str()).with_role();
                if let Some(timeout) = spec.timeout {
                    request = request.timeout(timeout);
                }
                // Detached and blocking-pool calls hand `Send + 'static` work over, which
                // a refresh can take (`call_refreshing`); the calling thread still runs
                // it when it leads.
                match (spec.kind, spec.fallible) {
                    (Kind::Call, true) => request.try_call(|| work.run_blocking()),
                    (Kind::Call, false) => {
                        let (output, role) = request.call(|| work.run_blocking());
                        (infallible(output), role)
                    }
                    (_, true) => request.try_call_refreshing(move || work.run_blocking()),
                    (_, false) => {
                        let (output, role) = request.call_refreshing(move || work.run_blocking());
                        (infallible(output), role)
                    }
                }
            }));
            side.finish(match report {
                Ok((output, role)) => Report::Returned(output, role),
                Err(payload) => Report::Panicked(panic_message(&*payload)),
            });
        });
        caller
    }

    fn spawn_reentrant(group: &Arc<Self::Group>, key: &str) -> Caller {
        let (caller, side) = Caller::new();
        let group = Arc::clone(group);
        let key = key.to_string();
        std::thread::spawn(move || {
            let (output, role) = group.request(key.as_str()).with_role().call(|| {
                let inner = group.call(key.as_str(), || Ok(7));
                Ok(u64::from(!matches!(inner, Err(Error::Reentrant))))
            });
            side.finish(Report::Returned(infallible(output), role));
        });
        caller
    }

    fn churn(group: &Self::Group, n: usize) {
        for i in 0..n {
            let key = format!("churn:{i}");
            assert_eq!(group.call(key.as_str(), || Ok(1)), Ok(Ok(1)));
        }
    }

    fn unpolled_in_flight(group: &Self::Group, _key: &str) -> usize {
        group.in_flight()
    }

    fn block_on<F: Future<Output = ()>>(body: F) {
        singleflight_conformance::block_on(body);
    }
}

/// An async runtime setup: how to run a test body and spawn caller tasks, and the
/// front-end's spawner and timer.
pub trait Runtime: 'static {
    /// The front-end crate's spawner.
    type Spawner: Spawn + SpawnBlocking + Clone + Default + Send + Sync + 'static;
    /// The front-end crate's timer.
    type Timer: Timer<Sleep: Send> + Clone + Default + Send + Sync + 'static;

    /// See [`Harness::TIMEOUT`].
    const TIMEOUT: Duration;

    /// Runs a test body on a fresh runtime (with a paused clock where the runtime has one).
    fn block_on<F: Future<Output = ()>>(body: F);

    /// Spawns a caller task (from inside [`block_on`](Self::block_on)).
    fn spawn<F: Future<Output = ()> + Send + 'static>(task: F);
}

/// The front-end group of runtime `R`.
pub type AsyncGroup<R> =
    RuntimeGroup<String, Value, <R as Runtime>::Spawner, <R as Runtime>::Timer>;

/// The harness of every async front-end: callers are tasks, and dropping one mid-call is
/// real cancellation.
#[derive(Debug)]
pub struct AsyncHarness<R>(PhantomData<R>);

impl<R: Runtime> Harness for AsyncHarness<R> {
    type Group = AsyncGroup<R>;

    const CAPABILITIES: Capabilities = Capabilities::FUTURES;
    const TIMEOUT: Duration = R::TIMEOUT;

    fn group(policy: LeaderDropPolicy, observer: Option<Arc<dyn Observer>>) -> Self::Group {
        let group = AsyncGroup::<R>::new().with_leader_drop_policy(policy);
        match observer {
            Some(observer) => group.with_observer(observer),
            None => group,
        }
    }

    fn from_core(group: singleflight_core::Group<String, Value>) -> Self::Group {
        AsyncGroup::<R>::from_core(group)
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
        R::spawn(async move {
            let g = &*group;
            let k = key.as_str();
            // Every call goes through the request builder, the one way to each kind of
            // call; the named methods are shorthands for it.
            macro_rules! run {
                ($request:expr, $terminal:ident, $work:expr, $map:expr) => {
                    match spec.timeout {
                        None => drive($request.$terminal($work), side.cancel_gate(), $map).await,
                        Some(timeout) => {
                            let call = $request.timeout(timeout).$terminal($work);
                            drive(call, side.cancel_gate(), $map).await
                        }
                    }
                };
            }
            let report = match (spec.kind, spec.fallible) {
                (Kind::Call, false) => run!(g.request(k), call, || work.run_async(), infallible),
                (Kind::Call, true) => run!(g.request(k), try_call, || work.run_async(), fallible),
                (Kind::Detached, false) => {
                    run!(
                        g.request(k).detached(),
                        call,
                        || work.run_async(),
                        infallible
                    )
                }
                (Kind::Detached, true) => {
                    run!(
                        g.request(k).detached(),
                        try_call,
                        || work.run_async(),
                        fallible
                    )
                }
                (Kind::Blocking, false) => {
                    run!(
                        g.request(k).blocking(),
                        call,
                        || work.run_blocking(),
                        infallible
                    )
                }
                (Kind::Blocking, true) => {
                    run!(
                        g.request(k).blocking(),
                        try_call,
                        || work.run_blocking(),
                        fallible
                    )
                }
            };
            side.finish(report);
        });
        caller
    }

    fn spawn_reentrant(group: &Arc<Self::Group>, key: &str) -> Caller {
        let (caller, side) = Caller::new();
        let group = Arc::clone(group);
        let key = key.to_string();
        R::spawn(async move {
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
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        for i in 0..n {
            let key = format!("churn:{i}");
            let mut leader = Box::pin(group.call(key.as_str(), std::future::pending::<Value>));
            assert!(leader.as_mut().poll(&mut cx).is_pending());
            let mut waiter = Box::pin(group.call(key.as_str(), std::future::pending::<Value>));
            assert!(waiter.as_mut().poll(&mut cx).is_pending());
            // Alternate which one leaves first: a waiter alone, or a leader with a waiter
            // (which takes over, and is then dropped as a leader).
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

    fn block_on<F: Future<Output = ()>>(body: F) {
        R::block_on(body);
    }
}

/// tokio's current-thread runtime, with a paused clock: timeouts elapse as soon as every
/// task waits, in virtual time.
#[derive(Debug)]
pub struct TokioCurrentThread;

impl Runtime for TokioCurrentThread {
    type Spawner = singleflight_tokio::TokioSpawner;
    type Timer = singleflight_tokio::TokioTimer;

    const TIMEOUT: Duration = Duration::from_secs(3600);

    fn block_on<F: Future<Output = ()>>(body: F) {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("build a current-thread runtime")
            .block_on(body);
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(task: F) {
        drop(tokio::spawn(task));
    }
}

/// tokio's multi-thread runtime (two workers). tokio pauses clocks only on the
/// current-thread runtime, so timeouts here run on the real clock.
#[derive(Debug)]
pub struct TokioMultiThread;

impl Runtime for TokioMultiThread {
    type Spawner = singleflight_tokio::TokioSpawner;
    type Timer = singleflight_tokio::TokioTimer;

    const TIMEOUT: Duration = Duration::from_millis(50);

    fn block_on<F: Future<Output = ()>>(body: F) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .expect("build a multi-thread runtime")
            .block_on(body);
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(task: F) {
        drop(tokio::spawn(task));
    }
}

/// smol's global executor; test bodies run in `smol::block_on`.
#[derive(Debug)]
pub struct Smol;

impl Runtime for Smol {
    type Spawner = singleflight_smol::SmolSpawner;
    type Timer = singleflight_smol::SmolTimer;

    const TIMEOUT: Duration = Duration::from_millis(50);

    fn block_on<F: Future<Output = ()>>(body: F) {
        smol::block_on(body);
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(task: F) {
        smol::spawn(task).detach();
    }
}

/// async-std's executor; test bodies run in `async_std::task::block_on`.
#[derive(Debug)]
pub struct AsyncStd;

impl Runtime for AsyncStd {
    type Spawner = singleflight_async_std::AsyncStdSpawner;
    type Timer = singleflight_async_std::AsyncStdTimer;

    const TIMEOUT: Duration = Duration::from_millis(50);

    fn block_on<F: Future<Output = ()>>(body: F) {
        async_std::task::block_on(body);
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(task: F) {
        drop(async_std::task::spawn(task));
    }
}
