//! When a call takes its place in a flight, and when a cancelled leader gives it up, seen
//! through what other callers of the same key experience.
//!
//! * Lazy registration (DESIGN rule 8): a call that exists but was never polled is not in
//!   anyone's way. A later call of the same key leads its own flight at its first poll, the
//!   unpolled call's work never runs, the observer hears nothing of it, and once polled it
//!   leads a flight of its own.
//! * A cancelled leader's work is gone before anyone can take over (rules 1 and 5): from
//!   inside the drop of that work, the waiter it leaves behind is polled. It must still be
//!   waiting: had it been promoted already, its own work would run while the old work still
//!   existed, two executions of one key at once. Under the fail-waiters policy, it must not
//!   have been failed yet either.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use singleflight_core::{Error, Execution, FlightInfo, Group, LeaderDropPolicy, Observer, Wait};

fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// Counts every observer hook.
#[derive(Debug, Default)]
struct Hooks(AtomicUsize);

impl Hooks {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
    fn hear(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Observer for Hooks {
    fn flight_started(&self, _: &FlightInfo<'_>) {
        self.hear();
    }
    fn flight_finished(&self, _: &FlightInfo<'_>) {
        self.hear();
    }
    fn execution_started(&self, _: &FlightInfo<'_>) -> u64 {
        self.hear();
        0
    }
    fn execution_finished(&self, _: &FlightInfo<'_>, _started: u64, _execution: Execution) {
        self.hear();
    }
    fn waiter_finished(&self, _: &FlightInfo<'_>, _started: u64, wait: Wait) {
        if wait == Wait::Promoted {
            return;
        }
        self.hear();
    }
    fn takeover(&self, _: &FlightInfo<'_>) {
        self.hear();
    }
    fn timeout(&self) {
        self.hear();
    }
}

#[test]
fn a_call_never_polled_is_in_nobodys_way() {
    let _watchdog = singleflight_tests::watchdog!();
    let hooks = Arc::new(Hooks::default());
    let group = Group::<String, u32>::new().with_observer(hooks.clone());
    let early_runs = Cell::new(0);
    let mut early = Box::pin(group.call("k", || {
        early_runs.set(early_runs.get() + 1);
        async { 1 }
    }));
    assert_eq!(hooks.count(), 0, "an unpolled call is not observed");

    // A later call of the same key leads, and finishes at its first poll: nobody holds the key.
    let mut later = Box::pin(group.call("k", || async { 2 }));
    assert_eq!(poll_once(later.as_mut()), Poll::Ready(Ok(2)));
    assert_eq!(early_runs.get(), 0, "the unpolled call's work never ran");
    let one_flight = hooks.count();
    assert!(one_flight > 0, "the later call was observed");

    // The early call registers only now, and leads a flight of its own.
    assert_eq!(poll_once(early.as_mut()), Poll::Ready(Ok(1)));
    assert_eq!(early_runs.get(), 1);
    assert_eq!(
        hooks.count(),
        2 * one_flight,
        "one more flight, observed alike"
    );
    assert_eq!(group.in_flight(), 0);

    // Dropped without a poll, a call leaves no trace at all.
    drop(group.call("k", || async { 3 }));
    assert_eq!((group.in_flight(), hooks.count()), (0, 2 * one_flight));
}

/// What a call of the tests below resolves to.
type Output = Result<u32, Error>;

/// A call, boxed so that it can be kept where the drop of another call's work reaches it.
type BoxedCall<'f> = Pin<Box<dyn Future<Output = Output> + 'f>>;

/// A leader's work that, when dropped, polls the waiter left behind and records what it got.
struct PollsTheWaiterOnDrop<'r, 'f> {
    waiter: &'r RefCell<Option<BoxedCall<'f>>>,
    seen: &'r RefCell<Option<Poll<Output>>>,
}

impl Drop for PollsTheWaiterOnDrop<'_, '_> {
    fn drop(&mut self) {
        let mut waiter = self.waiter.borrow_mut();
        let waiter = waiter.as_mut().expect("the waiter is there");
        *self.seen.borrow_mut() = Some(poll_once(waiter.as_mut()));
    }
}

/// Drops a pending leader whose waiter is polled from inside the drop of the leader's work;
/// returns what that poll saw and, if it was pending, the waiter's outcome afterwards.
fn drop_leader_and_look(policy: LeaderDropPolicy) -> (Poll<Output>, Option<Output>) {
    let group = Group::<String, u32>::new().with_leader_drop_policy(policy);
    let runs = Cell::new(0);
    let waiter = RefCell::new(None);
    let seen = RefCell::new(None);
    let mut leader = Box::pin(group.call("k", || {
        let probe = PollsTheWaiterOnDrop {
            waiter: &waiter,
            seen: &seen,
        };
        async move {
            let _probe = probe;
            std::future::pending::<u32>().await
        }
    }));
    assert!(poll_once(leader.as_mut()).is_pending());
    let mut joined: BoxedCall<'_> = Box::pin(group.call("k", || {
        runs.set(runs.get() + 1);
        async { 2 }
    }));
    assert!(poll_once(joined.as_mut()).is_pending());
    *waiter.borrow_mut() = Some(joined);
    assert_eq!(group.waiters("k"), 1);

    drop(leader);
    let seen = seen.take().expect("the work was dropped");
    let mut joined = waiter.take().expect("the waiter is still there");
    let outcome = seen.is_pending().then(|| match poll_once(joined.as_mut()) {
        Poll::Ready(outcome) => outcome,
        Poll::Pending => panic!("the waiter is neither promoted nor failed"),
    });
    drop(joined);
    assert_eq!(group.in_flight(), 0);
    assert!(runs.get() <= 1);
    (seen, outcome)
}

#[test]
fn under_takeover_a_cancelled_leaders_work_is_gone_before_a_waiter_takes_over() {
    let _watchdog = singleflight_tests::watchdog!();
    let (seen, outcome) = drop_leader_and_look(LeaderDropPolicy::Takeover);
    assert_eq!(
        seen,
        Poll::Pending,
        "the waiter took over while the cancelled leader's work still existed"
    );
    assert_eq!(
        outcome,
        Some(Ok(2)),
        "then it takes over and runs its own work"
    );
}

#[test]
fn under_fail_waiters_a_cancelled_leaders_work_is_gone_before_its_waiters_fail() {
    let _watchdog = singleflight_tests::watchdog!();
    let (seen, outcome) = drop_leader_and_look(LeaderDropPolicy::FailWaiters);
    assert_eq!(
        seen,
        Poll::Pending,
        "the waiter was failed while the cancelled leader's work still existed"
    );
    assert_eq!(outcome, Some(Err(Error::LeaderDropped)));
}
