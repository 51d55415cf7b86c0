//! The kit checks itself: a minimal front-end over the core's async `Group` (every caller an
//! OS thread driving its call with the kit's `block_on`) passes the whole suite, and three
//! deliberately broken variants of it fail the rules they break, each with a message that
//! says what went wrong.

use std::future::Future;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use singleflight_conformance::{
    Caller, Capabilities, Harness, Offload, Report, Spec, Support, Value, Work, block_on, check,
    drive, panic_message, rules,
};
use singleflight_core::{Error, Group, LeaderDropPolicy, Observer, Role, flatten};

/// What a variant of the front-end gets wrong.
trait Mutation: 'static {
    /// Groups use this policy whatever the rule asks for.
    const FORCED_POLICY: Option<LeaderDropPolicy> = None;
    /// A caller that joined a flight runs its own work too, and returns its own value.
    const WAITERS_RERUN: bool = false;
    /// The work's panic is caught and shared as an error value.
    const SWALLOWS_PANICS: bool = false;
}

/// The front-end as it should be.
struct Correct;
impl Mutation for Correct {}

/// Drops every waiter when its leader is dropped, whatever the policy.
struct DropsWaiters;
impl Mutation for DropsWaiters {
    const FORCED_POLICY: Option<LeaderDropPolicy> = Some(LeaderDropPolicy::FailWaiters);
}

/// Runs the work again in every waiter: no coalescing.
struct RunsTwice;
impl Mutation for RunsTwice {
    const WAITERS_RERUN: bool = true;
}

/// Loses the work's panic: waiters get an ordinary error, the leader no panic.
struct LosesPanic;
impl Mutation for LosesPanic {
    const SWALLOWS_PANICS: bool = true;
}

/// A front-end over `singleflight_core::Group`, variant `M`: no spawner, no blocking pool,
/// no timer.
struct CoreThreads<M>(PhantomData<M>);

fn infallible(output: Result<Value, Error>) -> Result<u64, Error<String>> {
    flatten(output)
}

fn fallible(output: Result<u64, Error<String>>) -> Result<u64, Error<String>> {
    output
}

/// Runs `work`, turning a panic into an `Err` value if `M` swallows panics.
async fn work_of<M: Mutation>(work: Work) -> Value {
    let mut future = pin!(work.run_async());
    std::future::poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(payload) if M::SWALLOWS_PANICS => Poll::Ready(Err(panic_message(&*payload))),
            Err(payload) => std::panic::resume_unwind(payload),
        },
    )
    .await
}

impl<M: Mutation> Harness for CoreThreads<M> {
    type Group = Group<String, Value>;

    const CAPABILITIES: Capabilities = Capabilities::FUTURES
        .with_detached(Offload::Unsupported("no spawner"))
        .with_blocking_pool(Offload::Unsupported("no blocking pool"))
        .with_timeouts(Support::Unsupported("no timer"));
    const TIMEOUT: Duration = Duration::from_millis(50);
    // Broken variants hang where a correct one proceeds: give up soon.
    const PATIENCE: Duration = Duration::from_secs(3);

    fn group(policy: LeaderDropPolicy, observer: Option<Arc<dyn Observer>>) -> Self::Group {
        let group = Group::new().with_leader_drop_policy(M::FORCED_POLICY.unwrap_or(policy));
        match observer {
            Some(observer) => group.with_observer(observer),
            None => group,
        }
    }

    fn from_core(group: Group<String, Value>) -> Self::Group {
        group
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
        assert_eq!(spec.timeout, None, "the rules ask for no timeout here");
        let (caller, side) = Caller::new();
        let (group, key) = (Arc::clone(group), key.to_string());
        std::thread::spawn(move || {
            let (g, k, cancel) = (&*group, key.as_str(), side.cancel_gate());
            let own = work.clone();
            let report = block_on(async {
                let report = if spec.fallible {
                    drive(g.try_call(k, || work_of::<M>(work)), cancel, fallible).await
                } else {
                    drive(g.call(k, || work_of::<M>(work)), cancel, infallible).await
                };
                match report {
                    Report::Returned(_, Role::Waiter) if M::WAITERS_RERUN => {
                        Report::Returned(own.run_async().await.map_err(Error::Failed), Role::Waiter)
                    }
                    report => report,
                }
            });
            side.finish(report);
        });
        caller
    }

    fn spawn_reentrant(group: &Arc<Self::Group>, key: &str) -> Caller {
        let (caller, side) = Caller::new();
        let (group, key) = (Arc::clone(group), key.to_string());
        std::thread::spawn(move || {
            let (g, k) = (&*group, key.as_str());
            let call = g.call(k, || async move {
                let inner = g.call(k, || async { Ok(7) }).await;
                Ok(u64::from(!matches!(inner, Err(Error::Reentrant))))
            });
            side.finish(block_on(drive(call, side.cancel_gate(), infallible)));
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

    fn block_on<F: Future<Output = ()>>(body: F) {
        block_on(body);
    }
}

// The correct front-end passes every rule it supports, and reports the others.
singleflight_conformance::conformance!(correct, CoreThreads<Correct>);

/// Runs rule `name` of `H` (its body `body`), which must fail; returns its panic message.
fn failure<H: Harness, Fut: Future<Output = ()> + 'static>(
    name: &str,
    body: fn() -> Fut,
) -> String {
    let payload = catch_unwind(|| check::<H, _, _>(name, body))
        .expect_err("the broken front-end passed the rule");
    panic_message(&*payload)
}

#[test]
fn dropping_waiters_with_their_leader_fails_the_takeover_rule() {
    type H = CoreThreads<DropsWaiters>;
    let message = failure::<H, _>(
        "leader_drop_takeover_runs_one_execution_at_a_time",
        rules::leader_drop_takeover_runs_one_execution_at_a_time::<H>,
    );
    assert_eq!(
        message,
        "gave up waiting until the oldest waiter takes over"
    );
    // The rules it does not break still pass: the failure is the rule's, not the setup's.
    check::<H, _, _>(
        "leader_drop_fail_waiters",
        rules::leader_drop_fail_waiters::<H>,
    );
    check::<H, _, _>(
        "coalesces_concurrent_callers",
        rules::coalesces_concurrent_callers::<H>,
    );
}

#[test]
fn running_the_work_in_every_waiter_fails_coalescing() {
    type H = CoreThreads<RunsTwice>;
    let message = failure::<H, _>(
        "coalesces_concurrent_callers",
        rules::coalesces_concurrent_callers::<H>,
    );
    // The first waiter got its own work's value (2), not the leader's (1).
    assert!(
        message.contains("left: Returned(Ok(2), Waiter)")
            && message.contains("right: Returned(Ok(1), Waiter)"),
        "{message}"
    );
    let message = failure::<H, _>(
        "fallible_work_shares_the_error",
        rules::fallible_work_shares_the_error::<H>,
    );
    assert!(
        message.contains("left: Returned(Ok(9), Waiter)"),
        "{message}"
    );
    check::<H, _, _>(
        "different_keys_do_not_wait",
        rules::different_keys_do_not_wait::<H>,
    );
}

#[test]
fn losing_the_works_panic_fails_the_panic_rules() {
    type H = CoreThreads<LosesPanic>;
    let message = failure::<H, _>(
        "panic_reaches_waiters_with_its_message",
        rules::panic_reaches_waiters_with_its_message::<H>,
    );
    // The leader's call returned an error instead of resuming the panic.
    assert!(
        message.contains(
            r#"left: Returned(Err(Failed("the work blew up")), Leader { shared: true })"#
        ) && message.contains(r#"right: Panicked("the work blew up")"#),
        "{message}"
    );
    let message = failure::<H, _>(
        "key_is_not_poisoned_after_a_panic",
        rules::key_is_not_poisoned_after_a_panic::<H>,
    );
    assert!(message.contains(r#"right: Panicked("once")"#), "{message}");
    check::<H, _, _>(
        "coalesces_concurrent_callers",
        rules::coalesces_concurrent_callers::<H>,
    );
}

/// Unsupported rules are reported, never silently skipped: the table says which and why.
#[test]
fn the_support_table_names_what_the_front_end_lacks() {
    let table = singleflight_conformance::SupportTable::of::<CoreThreads<Correct>>("core");
    let unsupported: Vec<_> = table
        .unsupported()
        .map(|(rule, reason)| (rule.name, reason))
        .collect();
    for (name, reason) in [
        ("detached_work_survives_all_callers_leaving", "no spawner"),
        ("detached_panic_reaches_every_caller", "no spawner"),
        ("blocking_pool_work_is_coalesced", "no blocking pool"),
        ("waiter_timeout_ends_only_that_waiter", "no timer"),
        ("leader_timeout_is_a_cancellation", "no timer"),
        ("observer_counts_every_call_once", "no timer"),
    ] {
        assert!(
            unsupported.contains(&(name, reason)),
            "{name}: {unsupported:?}"
        );
    }
    let text = table.to_string();
    assert!(
        text.contains("unsupported: no blocking pool") && text.contains("runs"),
        "{text}"
    );
}
