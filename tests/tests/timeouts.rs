//! A call's timeout is counted from its first poll, like its registration: a timed call made
//! ahead of time, or outside the runtime, still waits its whole duration once awaited.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use singleflight_tests::Gate;
use singleflight_tokio::{Error, Group};

#[test]
fn a_timed_call_built_outside_the_runtime_can_be_awaited_inside_it() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Group::<String, u32>::new();
    // Building the future touches no timer: tokio's would panic outside a runtime.
    let call = group.call_timeout("k", Duration::from_secs(5), || async { 7 });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    assert_eq!(rt.block_on(call), Ok(7));
}

#[test]
fn the_clock_starts_at_the_first_poll() {
    let _watchdog = singleflight_tests::watchdog!();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let group = Group::<String, u32>::new();
        let release = Gate::new();
        let mut leader = pin!(group.call("k", || async {
            release.opened().await;
            1
        }));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(leader.as_mut().poll(&mut cx).is_pending());

        let waiter = group.call_timeout("k", Duration::from_millis(10), || async { 2 });
        // Time passes before the waiter is first polled: it must not count.
        tokio::time::advance(Duration::from_millis(50)).await;
        let mut waiter = pin!(waiter);
        assert!(
            waiter.as_mut().poll(&mut cx).is_pending(),
            "timed out before it started"
        );
        assert_eq!(group.waiters("k"), 1);

        tokio::time::advance(Duration::from_millis(11)).await;
        assert_eq!(
            waiter.as_mut().poll(&mut cx),
            Poll::Ready(Err(Error::Timeout))
        );
        assert_eq!(group.waiters("k"), 0);

        release.open();
        assert_eq!(leader.await, Ok(1));
    });
}
