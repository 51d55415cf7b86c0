//! Unit tests of the flight module: the waiters' queue, the outcome slot, and the shards.

use alloc::sync::Arc;
use core::task::Waker;

use super::*;

fn at() -> FlightRef {
    FlightRef { hash: 0, id: 0 }
}

#[test]
fn promotion_skips_departed_waiters_in_join_order() {
    let flight = Arc::new(Flight::<u8>::new(at()));
    let a = flight.join(true, None).unwrap();
    let b = flight.join(true, None).unwrap();
    let c = flight.join(true, None).unwrap();
    assert!(!flight.leave(a));
    assert_eq!(flight.joined(), 2);
    assert!(flight.promote().is_some());
    assert!(matches!(flight.check(c, None), Found::Waiting));
    assert!(matches!(flight.check(b, None), Found::Promoted));
    assert_eq!(flight.joined(), 1);
    assert!(!flight.leave(c));
    assert!(flight.promote().is_none());
    assert_eq!(flight.joined(), 0);
}

#[test]
fn the_last_receiver_takes_the_value_and_the_others_clone_it() {
    let flight = Arc::new(Flight::<alloc::string::String>::new(at()));
    flight.join(true, None).unwrap();
    flight.join(true, None).unwrap();
    assert!(Flight::publish(&flight, Outcome::Value("v".into())).0);
    assert!(matches!(flight.receive(), Outcome::Value(v) if v == "v"));
    assert!(flight.holds_outcome());
    assert!(matches!(flight.receive(), Outcome::Value(v) if v == "v"));
    assert!(!flight.holds_outcome());
}

#[test]
fn leaving_twice_counts_once() {
    let flight = Arc::new(Flight::<u8>::new(at()));
    let a = flight.join(true, None).unwrap();
    let _b = flight.join(true, None).unwrap();
    flight.leave(a);
    flight.leave(a);
    assert_eq!(flight.joined(), 1);
}

#[test]
fn with_nobody_left_publishing_keeps_no_outcome() {
    let flight = Arc::new(Flight::<u8>::new(at()));
    let a = flight.join(true, None).unwrap();
    flight.leave(a);
    assert!(
        !Flight::publish(&flight, Outcome::Value(1)).0,
        "the one who joined had left"
    );
    assert!(!flight.holds_outcome());
}

#[test]
fn the_launcher_of_detached_work_is_not_a_waiter() {
    let flight = Arc::new(Flight::<u8>::new(at()));
    let launcher = flight.join(false, None).unwrap();
    assert_eq!(flight.joined(), 0);
    flight.join(true, None).unwrap();
    assert_eq!(flight.joined(), 1);
    assert!(!flight.shared(), "not before publish");
    assert!(Flight::publish(&flight, Outcome::Value(1)).0);
    assert!(flight.shared());
    assert!(!flight.leave(launcher));
}

#[test]
fn a_waiter_that_leaves_after_publish_gives_up_its_claim() {
    let flight = Arc::new(Flight::<u8>::new(at()));
    let a = flight.join(true, None).unwrap();
    flight.join(true, None).unwrap();
    drop(Flight::publish(&flight, Outcome::Value(1)));
    assert!(!flight.leave(a));
    assert_eq!(flight.readers(), 1);
    assert!(matches!(flight.receive(), Outcome::Value(1)));
    assert!(!flight.holds_outcome());
}

struct Task;

impl alloc::task::Wake for Task {
    fn wake(self: alloc::sync::Arc<Self>) {}
}

#[test]
fn a_waker_is_swapped_in_and_the_old_one_handed_back() {
    let flight = Arc::new(Flight::<u8>::new(at()));
    let a = flight.join(true, None).unwrap();
    let waker = Waker::from(alloc::sync::Arc::new(Task));
    let other = Waker::from(alloc::sync::Arc::new(Task));
    assert!(matches!(flight.check(a, Some(&waker)), Found::NeedsWaker));
    let (found, old) = flight.install(a, waker.clone());
    assert!(matches!(found, Found::Waiting) && old.is_none());
    assert!(matches!(flight.check(a, Some(&waker)), Found::Waiting));
    assert!(matches!(flight.check(a, Some(&other)), Found::NeedsWaker));
    let (_, old) = flight.install(a, other.clone());
    assert!(old.is_some_and(|old| old.will_wake(&waker)));
}

#[test]
fn an_ended_flight_takes_no_new_seat() {
    let flight = Arc::new(Flight::<u8>::new(at()));
    assert!(flight.end_unwatched());
    assert!(!flight.shared());
    assert!(flight.join(true, None).is_err());
}

#[test]
fn a_shard_fits_its_cache_lines() {
    // A word-sized key: one line pair, as `DEFAULT_SHARDS`' docs say.
    assert_eq!(size_of::<Shard<u64, u64>>(), 128);
    assert_eq!(size_of::<Shard<alloc::string::String, u64>>(), 256);
}
