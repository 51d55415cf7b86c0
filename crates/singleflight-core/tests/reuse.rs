//! The reuse window (DESIGN rule 16) on the core's own `enter`, on a manual clock: what is
//! kept, for how long, and what `forget` and the bound do to it.
#![cfg(all(feature = "std", not(loom)))]

use std::time::Duration;

use singleflight_core::{Entered, Group, PanicMessage};

// The workspace's one watchdog: a hang (a lost wake-up, say) fails this binary in bounded
// time instead of stalling the run.
#[path = "support/watchdog.rs"]
mod watchdog;
pub use watchdog::{TEST_LIMIT, Watchdog};

// The clock and the spawner the tests drive by hand.
#[path = "support/manual.rs"]
mod manual;
pub use manual::{Held, Job, Manual};

const WINDOW: Duration = Duration::from_secs(10);

fn lead<'g, T, S>(
    group: &'g Group<String, T, S>,
    key: &str,
) -> singleflight_core::Leader<&'g Group<String, T, S>>
where
    S: std::hash::BuildHasher,
{
    match group.enter(key) {
        Ok(Entered::Leader(leader)) => leader,
        other => panic!("{key} should lead, got {other:?}"),
    }
}

fn reused<T: Clone, S>(group: &Group<String, T, S>, key: &str) -> (T, Duration)
where
    S: std::hash::BuildHasher,
{
    match group.enter(key) {
        Ok(Entered::Reused(reused)) => (reused.age(), reused.into_value()),
        other => panic!("{key} should be reused, got {other:?}"),
    }
    .swap()
}

trait Swap<A, B> {
    fn swap(self) -> (B, A);
}

impl<A, B> Swap<A, B> for (A, B) {
    fn swap(self) -> (B, A) {
        (self.1, self.0)
    }
}

#[test]
fn a_value_is_reused_inside_the_window_and_not_after() {
    let _watchdog = watchdog!();
    let clock = Manual::default();
    let group = Group::<String, u32>::new().reuse_for(WINDOW, clock.clone());
    lead(&group, "k").complete(1);
    assert_eq!(group.reusable(), 1);
    clock.advance(Duration::from_secs(4));
    assert_eq!(reused(&group, "k"), (1, Duration::from_secs(4)));
    assert_eq!(group.in_flight(), 0, "a reused call registers nothing");
    clock.advance(Duration::from_secs(6));
    lead(&group, "k").complete(2);
    assert_eq!(reused(&group, "k"), (2, Duration::ZERO));
}

#[test]
fn without_a_window_nothing_is_kept() {
    let _watchdog = watchdog!();
    let group = Group::<String, u32>::new();
    lead(&group, "k").complete(1);
    lead(&group, "k").complete(2);
    assert_eq!(group.reusable(), 0);
    assert_eq!(group.purge_expired(), 0);
}

#[test]
fn errors_are_kept_only_under_the_policy() {
    let _watchdog = watchdog!();
    let clock = Manual::default();
    let group = Group::<String, Result<u32, u16>>::new().reuse_for(WINDOW, clock.clone());
    let _ = lead(&group, "k").complete_failed(Err(404));
    assert_eq!(group.reusable(), 0);
    let _ = lead(&group, "k").complete_failed(Err(404));

    let group = Group::<String, Result<u32, u16>>::new()
        .reuse_for(WINDOW, clock.clone())
        .reuse_errors(|status| (*status == 404).then_some(Duration::from_secs(2)));
    let _ = lead(&group, "404").complete_failed(Err(404));
    let _ = lead(&group, "429").complete_failed(Err(429));
    assert_eq!(reused(&group, "404").0, Err(404));
    let _ = lead(&group, "429").complete_failed(Err(429));
    clock.advance(Duration::from_secs(2));
    let _ = lead(&group, "404").complete(Ok(1));
}

#[test]
fn panics_and_dropped_leaders_are_never_kept() {
    let _watchdog = watchdog!();
    let clock = Manual::default();
    let group = Group::<String, u32>::new().reuse_for(WINDOW, clock);
    lead(&group, "k").panicked(PanicMessage::new("boom"));
    drop(lead(&group, "k"));
    assert_eq!(group.reusable(), 0);
    lead(&group, "k").complete(3);
    assert_eq!(reused(&group, "k").0, 3);
}

#[test]
fn forget_drops_the_value_and_an_older_flight_never_stores() {
    let _watchdog = watchdog!();
    let clock = Manual::default();
    let group = Group::<String, u32>::new().reuse_for(WINDOW, clock);
    lead(&group, "k").complete(1);
    assert!(group.forget("k"), "a reusable value was dropped");
    assert!(!group.forget("k"));
    let old = lead(&group, "k");
    assert!(group.forget("k"));
    let new = lead(&group, "k");
    old.complete(2);
    assert_eq!(group.reusable(), 0, "the forgotten flight stored nothing");
    new.complete(3);
    assert_eq!(reused(&group, "k").0, 3);

    let old = lead(&group, "other");
    assert_eq!(group.forget_all(), 2, "one flight, one value");
    old.complete(4);
    assert_eq!(group.reusable(), 0);
    lead(&group, "other").complete(5);
}

#[test]
fn the_bound_and_purging_keep_memory_to_the_load() {
    let _watchdog = watchdog!();
    let clock = Manual::default();
    let group = Group::<String, u32>::new()
        .reuse_for(WINDOW, clock.clone())
        .max_reusable(3);
    for key in ["a", "b", "c", "d"] {
        lead(&group, key).complete(1);
    }
    assert_eq!(group.reusable(), 3, "the fourth value is not kept");
    lead(&group, "d").complete(1);
    clock.advance(WINDOW);
    // A full store makes room from its expired values.
    lead(&group, "a").complete(2);
    assert_eq!(reused(&group, "a").0, 2);
    // Two expired values, unless a call's sweep dropped one already.
    assert!(group.purge_expired() <= 2);
    assert_eq!(group.reusable(), 1);
    clock.advance(WINDOW);
    assert_eq!(group.purge_expired(), 1);
    assert_eq!(group.reusable(), 0);
}

#[test]
fn expired_values_go_a_few_at_a_time_on_every_call() {
    let _watchdog = watchdog!();
    let clock = Manual::default();
    let group = Group::<String, u32>::new()
        .with_shards(1)
        .reuse_for(WINDOW, clock.clone());
    for key in 0..100 {
        lead(&group, &key.to_string()).complete(key);
    }
    clock.advance(WINDOW);
    // Every call drops a few of the expired values, with no background thread: those of
    // its own part of the store at once, the others' as the sweep visits them in turn
    // (one part every 64 look-ups, 16 parts: every part within 1,024 look-ups).
    for _ in 0..1_100 {
        lead(&group, "other").complete(0);
        assert!(group.forget("other"));
    }
    assert_eq!(group.reusable(), 0);
}

#[test]
fn takeover_stores_the_promoted_waiters_value() {
    let _watchdog = watchdog!();
    let clock = Manual::default();
    let group = Group::<String, u32>::new().reuse_for(WINDOW, clock);
    let leader = lead(&group, "k");
    let Ok(Entered::Waiter(waiter)) = group.enter("k") else {
        panic!("joins")
    };
    drop(leader);
    let singleflight_core::Waited::Promoted(promoted) = waiter.wait() else {
        panic!("promoted")
    };
    promoted.complete(7);
    assert_eq!(reused(&group, "k").0, 7);
}
