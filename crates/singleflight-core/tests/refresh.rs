//! Stale-while-revalidate (`refresh_after`, DESIGN rule 16) on the core's blocking call
//! loop, with a manual clock and a spawner that keeps each refresh until the test runs it:
//! one refresh per key, what a failed one leaves, and what `forget` does to a running one.
#![cfg(all(feature = "std", not(loom)))]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use singleflight_core::{FlightInfo, Group, ObservedKey, Observer, Role};

// The workspace's one watchdog: a hang (a lost wake-up, say) fails this binary in bounded
// time instead of stalling the run.
#[path = "support/watchdog.rs"]
mod watchdog;
pub use watchdog::{TEST_LIMIT, Watchdog};

// The clock and the spawner the tests drive by hand.
#[path = "support/manual.rs"]
mod manual;
pub use manual::{Held, Job, Manual};

#[derive(Default)]
struct Refreshes {
    started: AtomicUsize,
    failed: AtomicUsize,
    reused: AtomicUsize,
}

impl Observer for Refreshes {
    fn reused(&self, _: Option<&str>, _: &dyn ObservedKey) {
        self.reused.fetch_add(1, Ordering::SeqCst);
    }
    fn refresh_started(&self, _: &FlightInfo<'_>) {
        self.started.fetch_add(1, Ordering::SeqCst);
    }
    fn refresh_failed(&self, _: &FlightInfo<'_>) {
        self.failed.fetch_add(1, Ordering::SeqCst);
    }
}

const WINDOW: Duration = Duration::from_secs(10);
const AFTER: Duration = Duration::from_secs(6);

type Value = Result<u64, String>;

fn group(clock: &Manual, observer: &Arc<Refreshes>) -> Arc<Group<String, Value>> {
    Arc::new(
        Group::new()
            .with_observer(observer.clone())
            .reuse_for(WINDOW, clock.clone())
            .refresh_after(AFTER),
    )
}

/// A refreshing call whose work returns `value`.
fn call(group: &Arc<Group<String, Value>>, held: &Held, value: Value) -> (Value, Role) {
    let (outcome, role) =
        group.call_here_refreshing("k", None, move || value, held.clone(), Result::is_err);
    (outcome.expect("no error of the group's own"), role)
}

fn reused(age: Duration) -> Role {
    Role::Reused { age }
}

#[test]
fn a_herd_past_the_threshold_starts_one_refresh_and_gets_the_old_value_at_once() {
    let _watchdog = watchdog!();
    let (clock, held, observer) = (Manual::default(), Held::default(), Arc::default());
    let group = group(&clock, &observer);
    assert_eq!(call(&group, &held, Ok(1)).0, Ok(1));
    clock.advance(AFTER - Duration::from_secs(1));
    assert_eq!(
        call(&group, &held, Ok(9)),
        (Ok(1), reused(AFTER - Duration::from_secs(1)))
    );
    assert_eq!(held.len(), 0, "before the threshold nothing refreshes");

    clock.advance(Duration::from_secs(1));
    for _ in 0..50 {
        assert_eq!(call(&group, &held, Ok(2)), (Ok(1), reused(AFTER)));
    }
    assert_eq!(held.len(), 1, "one refresh, whatever the number of callers");
    assert_eq!(observer.started.load(Ordering::SeqCst), 1);
    assert_eq!(group.in_flight(), 1, "the refresh is a flight");
    assert_eq!(
        group.waiters("k"),
        0,
        "callers within the window do not wait for it"
    );

    held.take()();
    assert_eq!(group.in_flight(), 0);
    assert_eq!(call(&group, &held, Ok(3)), (Ok(2), reused(Duration::ZERO)));
    // The refreshed value has a threshold of its own.
    clock.advance(AFTER);
    assert_eq!(call(&group, &held, Ok(3)), (Ok(2), reused(AFTER)));
    held.take()();
    assert_eq!(call(&group, &held, Ok(4)), (Ok(3), reused(Duration::ZERO)));
    assert_eq!(observer.failed.load(Ordering::SeqCst), 0);
}

#[test]
fn a_failed_refresh_keeps_the_old_value_until_the_window_ends() {
    let _watchdog = watchdog!();
    for ending in ["error", "panic", "dropped"] {
        let (clock, held, observer) = (Manual::default(), Held::default(), Arc::default());
        let group = group(&clock, &observer);
        assert_eq!(call(&group, &held, Ok(1)).0, Ok(1));
        clock.advance(AFTER);
        let (value, role) = match ending {
            "panic" => {
                let (outcome, role) = group.call_here_refreshing(
                    "k",
                    None,
                    || panic!("refresh panics"),
                    held.clone(),
                    Result::is_err,
                );
                (outcome.unwrap(), role)
            }
            _ => call(&group, &held, Err("down".into())),
        };
        assert_eq!((value, role), (Ok(1), reused(AFTER)), "{ending}");
        let refresh = held.take();
        if ending == "dropped" {
            // A spawner that never runs it (a pool shutting down).
            drop(refresh);
        } else {
            refresh();
        }
        assert_eq!(group.in_flight(), 0, "{ending}");
        assert_eq!(observer.failed.load(Ordering::SeqCst), 1, "{ending}");
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            call(&group, &held, Ok(5)),
            (Ok(1), reused(AFTER + Duration::from_secs(1))),
            "the old value is served ({ending})"
        );
        assert_eq!(
            held.len(),
            0,
            "a failed refresh is not retried for that value ({ending})"
        );
        clock.advance(WINDOW - AFTER - Duration::from_secs(1));
        assert_eq!(
            call(&group, &held, Ok(6)),
            (Ok(6), Role::Leader { shared: false }),
            "the window is over ({ending})"
        );
    }
}

#[test]
fn callers_after_the_window_join_the_running_refresh() {
    let _watchdog = watchdog!();
    let (clock, held, observer) = (Manual::default(), Held::default(), Arc::default());
    let group = group(&clock, &observer);
    assert_eq!(call(&group, &held, Ok(1)).0, Ok(1));
    clock.advance(AFTER);
    assert_eq!(call(&group, &held, Ok(2)), (Ok(1), reused(AFTER)));
    clock.advance(WINDOW - AFTER);
    std::thread::scope(|s| {
        let late = s.spawn(|| call(&group, &Held::default(), Ok(7)));
        while group.waiters("k") == 0 {
            std::thread::yield_now();
        }
        held.take()();
        assert_eq!(late.join().unwrap(), (Ok(2), Role::Waiter));
    });
    assert_eq!(call(&group, &held, Ok(8)), (Ok(2), reused(Duration::ZERO)));
}

#[test]
fn forget_wins_over_a_running_refresh() {
    let _watchdog = watchdog!();
    for all in [false, true] {
        let (clock, held, observer) = (Manual::default(), Held::default(), Arc::default());
        let group = group(&clock, &observer);
        assert_eq!(call(&group, &held, Ok(1)).0, Ok(1));
        clock.advance(AFTER);
        assert_eq!(call(&group, &held, Ok(2)), (Ok(1), reused(AFTER)));
        if all {
            assert_eq!(group.forget_all(), 2, "the refresh's flight and the value");
        } else {
            assert!(group.forget("k"));
        }
        held.take()();
        assert_eq!(group.in_flight(), 0);
        assert_eq!(
            group.reusable(),
            0,
            "the refresh stored nothing (forget_all: {all})"
        );
        assert_eq!(
            call(&group, &held, Ok(3)),
            (Ok(3), Role::Leader { shared: false }),
            "forget_all: {all}"
        );
    }
}

#[test]
fn borrowed_work_never_refreshes_and_leads_after_the_window() {
    let _watchdog = watchdog!();
    let (clock, held, observer) = (Manual::default(), Held::default(), Arc::default());
    let group = group(&clock, &observer);
    let local = 5;
    let borrowed =
        |group: &Group<String, Value>| group.call_here("k", None, || Ok(local), Result::is_err);
    assert_eq!(
        borrowed(&group),
        (Ok(Ok(5)), Role::Leader { shared: false })
    );
    clock.advance(AFTER);
    assert_eq!(borrowed(&group), (Ok(Ok(5)), reused(AFTER)));
    assert_eq!(observer.started.load(Ordering::SeqCst), 0);
    assert_eq!(group.in_flight(), 0, "no refresh started");
    // A refreshing call still may: a borrowed one did not use up the value's refresh.
    assert_eq!(call(&group, &held, Ok(6)), (Ok(5), reused(AFTER)));
    assert_eq!(held.len(), 1);
    drop(held.take());
    clock.advance(WINDOW - AFTER);
    assert_eq!(
        borrowed(&group),
        (Ok(Ok(5)), Role::Leader { shared: false })
    );
}

#[test]
#[should_panic(expected = "must be shorter than the reuse window")]
fn a_threshold_not_shorter_than_the_window_is_refused() {
    let _watchdog = watchdog!();
    let _ = Group::<String, u64>::new()
        .reuse_for(WINDOW, Manual::default())
        .refresh_after(WINDOW);
}

#[test]
#[should_panic(expected = "`refresh_after` needs a reuse window")]
fn a_threshold_without_a_window_is_refused() {
    let _watchdog = watchdog!();
    let _ = Group::<String, u64>::new().refresh_after(AFTER);
}

#[test]
#[should_panic(expected = "must be shorter than the reuse window")]
fn a_window_shortened_below_the_threshold_is_refused() {
    let _watchdog = watchdog!();
    let _ = Group::<String, u64>::new()
        .reuse_for(WINDOW, Manual::default())
        .refresh_after(AFTER)
        .reuse_for(AFTER, Manual::default());
}

#[test]
fn a_kept_error_is_served_and_never_refreshed() {
    let _watchdog = watchdog!();
    // Negative caching: an error the policy keeps is served within its own window.
    let (clock, held) = (Manual::default(), Held::default());
    let group: Arc<Group<String, Value>> = Arc::new(
        Group::new()
            .reuse_for(WINDOW, clock.clone())
            .reuse_errors(|_| Some(WINDOW))
            .refresh_after(AFTER),
    );
    assert_eq!(call(&group, &held, Err("404".into())).0, Err("404".into()));
    clock.advance(AFTER);
    assert_eq!(
        call(&group, &held, Ok(1)),
        (Err("404".into()), reused(AFTER))
    );
    assert_eq!(held.len(), 0, "a kept error is not refreshed");
}

#[test]
fn a_refresh_error_never_replaces_the_value_even_under_an_error_policy() {
    let _watchdog = watchdog!();
    let (clock, held, observer) = (
        Manual::default(),
        Held::default(),
        Arc::<Refreshes>::default(),
    );
    let group: Arc<Group<String, Value>> = Arc::new(
        Group::new()
            .with_observer(observer.clone())
            .reuse_for(WINDOW, clock.clone())
            .reuse_errors(|_| Some(WINDOW))
            .refresh_after(AFTER),
    );
    assert_eq!(call(&group, &held, Ok(1)).0, Ok(1));
    clock.advance(AFTER);
    assert_eq!(
        call(&group, &held, Err("down".into())),
        (Ok(1), reused(AFTER))
    );
    held.take()();
    assert_eq!(observer.failed.load(Ordering::SeqCst), 1);
    assert_eq!(call(&group, &held, Ok(2)), (Ok(1), reused(AFTER)));
}
