//! Misuse of the API gets a clear, documented panic: never a hang, never a lost result.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use singleflight_core::{LeaderDropPolicy, Waited};

/// The message `f` panics with.
fn panic_of(f: impl FnOnce()) -> String {
    let payload = panic::catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    singleflight_tests::panic_message(&*payload)
}

/// Configuring a runtime group after it was cloned would silently configure only one of
/// the clones; it panics instead, saying what to do.
#[test]
fn configuring_a_cloned_runtime_group_panics_clearly() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = singleflight_tokio::Group::<String, u32>::new();
    let _clone = group.clone();
    let message = panic_of(|| {
        let _ = group.with_leader_drop_policy(LeaderDropPolicy::FailWaiters);
    });
    assert_eq!(
        message,
        "a group is configured before it is cloned or called"
    );
}

/// Configuring before cloning works, and every clone shares the configuration.
#[test]
fn configuring_before_cloning_is_shared_by_every_clone() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = singleflight_smol::Group::<String, u32>::new()
        .with_leader_drop_policy(LeaderDropPolicy::FailWaiters);
    let clone = group.clone();
    assert_eq!(clone.leader_drop_policy(), LeaderDropPolicy::FailWaiters);
}

/// A shard count that is not a power of two (or is zero, or too large) is refused at once,
/// on every front-end, with the rule in the message.
#[test]
fn a_bad_shard_count_panics_clearly() {
    let _watchdog = singleflight_tests::watchdog!();
    let message = panic_of(|| {
        let _ = singleflight_blocking::Group::<String, u32>::new().with_shards(48);
    });
    assert_eq!(
        message,
        "a group's shard count is a power of two from 1 to 65536, not 48"
    );
    let message = panic_of(|| {
        let _ = singleflight_tokio::Group::<String, u32>::new().with_shards(1 << 17);
    });
    assert!(message.ends_with("not 131072"), "{message}");
}

/// A group of one shard (the least memory) still coalesces and keeps its keys apart.
#[test]
fn a_one_shard_group_coalesces_and_keeps_keys_apart() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = singleflight_blocking::Group::<u32, u32>::new().with_shards(1);
    assert_eq!(group.as_core().shards(), 1);
    let values: Vec<_> = (0..8).map(|key| group.call(&key, || key * 2)).collect();
    assert_eq!(values, (0..8).map(|key| Ok(key * 2)).collect::<Vec<_>>());
    let smol = singleflight_smol::Group::<u32, u32>::new().with_shards(4);
    assert_eq!(smol.as_core().shards(), 4);
}

/// A call future polled after it completed panics with its name, like std's futures.
#[test]
fn polling_a_finished_call_panics_clearly() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = singleflight_core::Group::<String, u32>::new();
    let mut call = pin!(group.call("k", || async { 1 }));
    let mut cx = Context::from_waker(Waker::noop());
    assert_eq!(call.as_mut().poll(&mut cx), Poll::Ready(Ok(1)));
    let message = panic_of(|| {
        let _ = call.as_mut().poll(&mut cx);
    });
    assert_eq!(message, "`Call` polled after completion");
    assert_eq!(group.in_flight(), 0);
}

/// A waiter polled after it received its outcome panics with its name.
#[test]
fn polling_a_finished_waiter_panics_clearly() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = singleflight_core::Group::<String, u32>::new();
    let Ok(singleflight_core::Entered::Leader(leader)) = group.enter("k") else {
        panic!("leads")
    };
    let Ok(singleflight_core::Entered::Waiter(mut waiter)) = group.enter("k") else {
        panic!("waits")
    };
    leader.complete(3);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(
        waiter.poll(&mut cx),
        Poll::Ready(Waited::Outcome(Ok(3)))
    ));
    let message = panic_of(|| {
        let _ = waiter.poll(&mut cx);
    });
    assert_eq!(message, "`Waiter` polled after it finished");
    drop(waiter);
    assert_eq!(group.in_flight(), 0);
}
