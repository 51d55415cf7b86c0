//! Ordering guarantees around a cancelled leader, checked on the runtime-free core.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use singleflight_core::Group;

/// Records, when the leader's work is dropped, how many callers still waited: had a waiter
/// been promoted already, its own work could start while the old work still existed.
struct Probe<'a> {
    group: &'a Group<String, u32>,
    waiters_at_drop: &'a AtomicUsize,
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.waiters_at_drop
            .store(self.group.waiters("k"), Ordering::SeqCst);
    }
}

/// A cancelled leader's work is dropped before a waiter is promoted, so two executions never
/// overlap even for an instant (the work may hold a connection or a lock).
#[test]
fn a_cancelled_leaders_work_is_dropped_before_a_waiter_takes_over() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Group::<String, u32>::new();
    let waiters_at_drop = AtomicUsize::new(usize::MAX);
    let mut cx = Context::from_waker(Waker::noop());

    let mut leader = Box::pin(group.call("k", || {
        let probe = Probe {
            group: &group,
            waiters_at_drop: &waiters_at_drop,
        };
        async move {
            let _probe = probe;
            std::future::pending::<u32>().await
        }
    }));
    assert!(leader.as_mut().poll(&mut cx).is_pending());

    let mut waiter = pin!(group.call("k", || async { 2 }));
    assert!(waiter.as_mut().poll(&mut cx).is_pending());
    assert_eq!(group.waiters("k"), 1);

    drop(leader);
    assert_eq!(
        waiters_at_drop.load(Ordering::SeqCst),
        1,
        "the work was dropped while the waiter still waited"
    );
    assert_eq!(waiter.as_mut().poll(&mut cx), Poll::Ready(Ok(2)));
    assert_eq!(group.in_flight(), 0);
}
