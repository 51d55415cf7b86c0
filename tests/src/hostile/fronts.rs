//! The front-ends under test, for the hostile key and value types: blocking threads, and
//! every async runtime of the conformance setups.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use singleflight_core::rt::RuntimeGroup;
use singleflight_core::{Error, LeaderDropPolicy, Observer};

use super::types::{HKey, HValue, HWork};
use crate::Gate;
use crate::setups::Runtime;
use singleflight_conformance::{Caller, Report, block_on, drive, panic_message};

/// Maps a call's output to a report's value.
fn value(output: Result<HValue, Error>) -> Result<u64, Error<String>> {
    output.map(|value| value.n).map_err(Error::widen)
}

/// A front-end, for groups of [`HKey`] to [`HValue`].
pub trait Front: 'static {
    /// The front-end's group.
    type Group: Send + Sync + 'static;

    /// Whether a caller can be dropped mid-call and the leader-drop policy applies.
    const CANCELLABLE: bool;

    /// A waiter timeout for callers that must time out (their flight is held by a gate).
    const TIMEOUT: Duration;

    /// A group with `policy` (ignored where it does not apply) and `observer`.
    fn group(policy: LeaderDropPolicy, observer: Option<Arc<dyn Observer>>) -> Self::Group;

    /// `in_flight()`.
    fn in_flight(group: &Self::Group) -> usize;
    /// `waiters(key)`.
    fn waiters(group: &Self::Group, key: &HKey) -> usize;
    /// `contains(key)`.
    fn contains(group: &Self::Group, key: &HKey) -> bool;
    /// `forget(key)`.
    fn forget(group: &Self::Group, key: &HKey) -> bool;

    /// Starts a caller (`call`, with a waiter timeout if given) in its own thread or task.
    fn spawn_call(
        group: &Arc<Self::Group>,
        key: HKey,
        work: HWork,
        timeout: Option<Duration>,
    ) -> Caller;

    /// Starts a caller in a new OS thread of its own, whatever the runtime (async calls are
    /// driven by a parking executor there): it can join while the runtime's threads are busy.
    fn spawn_thread_call(group: &Arc<Self::Group>, key: HKey, work: HWork) -> Caller;

    /// Starts a `call_detached` caller, where the front-end has detached calls.
    fn spawn_detached(group: &Arc<Self::Group>, key: HKey, work: HWork) -> Option<Caller>;

    /// Where a call can be held unpolled (async front-ends): starts a caller whose task
    /// polls its call once (it leads, its work starts), waits for `go`, then panics with
    /// `expected: caller unwinds` while the call is alive, so that the leading call is
    /// dropped by the unwinding.
    fn spawn_unwinding_leader(
        group: &Arc<Self::Group>,
        key: HKey,
        work: HWork,
        go: &Gate,
    ) -> Option<Caller>;

    /// Runs a case's body on this front-end's runtime.
    fn block_on<F: Future<Output = ()>>(body: F);
}

/// `singleflight-blocking`.
#[derive(Debug)]
pub struct Blocking;

impl Front for Blocking {
    type Group = singleflight_blocking::Group<HKey, HValue>;

    const CANCELLABLE: bool = false;
    const TIMEOUT: Duration = Duration::from_millis(50);

    fn group(_policy: LeaderDropPolicy, observer: Option<Arc<dyn Observer>>) -> Self::Group {
        let group = singleflight_blocking::Group::new();
        match observer {
            Some(observer) => group.with_observer(observer),
            None => group,
        }
    }

    fn in_flight(group: &Self::Group) -> usize {
        group.in_flight()
    }

    fn waiters(group: &Self::Group, key: &HKey) -> usize {
        group.waiters(key)
    }

    fn contains(group: &Self::Group, key: &HKey) -> bool {
        group.contains(key)
    }

    fn forget(group: &Self::Group, key: &HKey) -> bool {
        group.forget(key)
    }

    fn spawn_call(
        group: &Arc<Self::Group>,
        key: HKey,
        work: HWork,
        timeout: Option<Duration>,
    ) -> Caller {
        let (caller, side) = Caller::new();
        let group = Arc::clone(group);
        std::thread::spawn(move || {
            let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut request = group.request(&key).with_role();
                if let Some(timeout) = timeout {
                    request = request.timeout(timeout);
                }
                request.call(|| work.run_blocking())
            }));
            drop(key);
            side.finish(match report {
                Ok((output, role)) => Report::Returned(value(output), role),
                Err(payload) => Report::Panicked(panic_message(&*payload)),
            });
        });
        caller
    }

    fn spawn_thread_call(group: &Arc<Self::Group>, key: HKey, work: HWork) -> Caller {
        Self::spawn_call(group, key, work, None)
    }

    fn spawn_detached(_group: &Arc<Self::Group>, _key: HKey, _work: HWork) -> Option<Caller> {
        None
    }

    fn spawn_unwinding_leader(
        _group: &Arc<Self::Group>,
        _key: HKey,
        _work: HWork,
        _go: &Gate,
    ) -> Option<Caller> {
        None
    }

    fn block_on<F: Future<Output = ()>>(body: F) {
        block_on(body);
    }
}

/// Runs `future`, turning a panic in any of its polls (its locals' drops included) into
/// [`Report::Panicked`].
async fn caught(future: impl Future<Output = Report>) -> Report {
    let mut future = pin!(future);
    std::future::poll_fn(|cx| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(polled) => polled,
            Err(payload) => Poll::Ready(Report::Panicked(panic_message(&*payload))),
        }
    })
    .await
}

/// An async runtime's front-end.
#[derive(Debug)]
pub struct Async<R>(PhantomData<R>);

/// The group of runtime `R`'s front-end.
pub type AsyncGroup<R> = RuntimeGroup<HKey, HValue, <R as Runtime>::Spawner, <R as Runtime>::Timer>;

impl<R: Runtime> Front for Async<R> {
    type Group = AsyncGroup<R>;

    const CANCELLABLE: bool = true;
    const TIMEOUT: Duration = R::TIMEOUT;

    fn group(policy: LeaderDropPolicy, observer: Option<Arc<dyn Observer>>) -> Self::Group {
        let group = AsyncGroup::<R>::new().with_leader_drop_policy(policy);
        match observer {
            Some(observer) => group.with_observer(observer),
            None => group,
        }
    }

    fn in_flight(group: &Self::Group) -> usize {
        group.in_flight()
    }

    fn waiters(group: &Self::Group, key: &HKey) -> usize {
        group.waiters(key)
    }

    fn contains(group: &Self::Group, key: &HKey) -> bool {
        group.contains(key)
    }

    fn forget(group: &Self::Group, key: &HKey) -> bool {
        group.forget(key)
    }

    fn spawn_call(
        group: &Arc<Self::Group>,
        key: HKey,
        work: HWork,
        timeout: Option<Duration>,
    ) -> Caller {
        let (caller, side) = Caller::new();
        let group = Arc::clone(group);
        R::spawn(async move {
            let report = caught(async {
                let call = group.call(&key, || work.run_async());
                match timeout {
                    None => drive(call, side.cancel_gate(), value).await,
                    Some(timeout) => {
                        drive(group.timeout(timeout, call), side.cancel_gate(), value).await
                    }
                }
            })
            .await;
            drop(key);
            side.finish(report);
        });
        caller
    }

    fn spawn_thread_call(group: &Arc<Self::Group>, key: HKey, work: HWork) -> Caller {
        let (caller, side) = Caller::new();
        let group = Arc::clone(group);
        std::thread::spawn(move || {
            let report = block_on(caught(drive(
                group.call(&key, || work.run_async()),
                side.cancel_gate(),
                value,
            )));
            drop(key);
            side.finish(report);
        });
        caller
    }

    fn spawn_detached(group: &Arc<Self::Group>, key: HKey, work: HWork) -> Option<Caller> {
        let (caller, side) = Caller::new();
        let group = Arc::clone(group);
        R::spawn(async move {
            let report = caught(async {
                let call = group.call_detached(&key, || work.run_async());
                drive(call, side.cancel_gate(), value).await
            })
            .await;
            drop(key);
            side.finish(report);
        });
        Some(caller)
    }

    fn spawn_unwinding_leader(
        group: &Arc<Self::Group>,
        key: HKey,
        work: HWork,
        go: &Gate,
    ) -> Option<Caller> {
        let (caller, side) = Caller::new();
        let (group, go) = (Arc::clone(group), go.clone());
        R::spawn(async move {
            let report = caught(async {
                let mut call = Box::pin(group.call(&key, || work.run_async()));
                let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
                assert!(first.is_pending(), "the leader's work waits for its gate");
                go.opened().await;
                if go.is_open() {
                    panic!("expected: caller unwinds");
                }
                drop(call);
                Report::Cancelled
            })
            .await;
            drop(key);
            side.finish(report);
        });
        Some(caller)
    }

    fn block_on<F: Future<Output = ()>>(body: F) {
        R::block_on(body);
    }
}
