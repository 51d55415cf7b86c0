//! The semantics contract (DESIGN.md) as the blocking front-end exercises it.

use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use singleflight_blocking::{Error, Group, Role};
use singleflight_tests::{Gate, wait_until};

/// Rule 1: different keys never wait on each other.
#[test]
fn different_keys_do_not_wait_on_each_other() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Group::<String, u32>::new();
    let release = Gate::new();
    thread::scope(|s| {
        let blocked = s.spawn(|| {
            group.call("a", || {
                release.wait();
                1
            })
        });
        wait_until("key a is in flight", || group.contains("a"));
        assert_eq!(group.call("b", || 2), Ok(2));
        assert_eq!(group.in_flight(), 1);
        release.open();
        assert_eq!(blocked.join().unwrap(), Ok(1));
    });
}

/// Rule 1: once a flight ended, the next call runs the work again (coalescing is not caching).
#[test]
fn sequential_calls_each_run_the_work() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Group::<u64, u64>::new();
    let runs = AtomicUsize::new(0);
    for _ in 0..3 {
        let value = group.call(&1, || runs.fetch_add(1, Ordering::SeqCst) as u64);
        assert!(value.is_ok());
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

/// Rule 2: every waiter receives its own clone, and the value is cloned once per waiter.
#[test]
fn waiters_receive_clones_and_the_value_is_cloned_once_per_waiter() {
    let _watchdog = singleflight_tests::watchdog!();
    static CLONES: AtomicUsize = AtomicUsize::new(0);
    #[derive(Debug, PartialEq)]
    struct Counted(u32);
    impl Clone for Counted {
        fn clone(&self) -> Self {
            CLONES.fetch_add(1, Ordering::SeqCst);
            Counted(self.0)
        }
    }

    const WAITERS: usize = 4;
    let group = Group::<String, Counted>::new();
    let release = Gate::new();
    thread::scope(|s| {
        let leader = s.spawn(|| {
            group.call("k", || {
                release.wait();
                Counted(7)
            })
        });
        wait_until("the leader runs", || group.contains("k"));
        let waiters: Vec<_> = (0..WAITERS)
            .map(|_| s.spawn(|| group.call("k", || Counted(0))))
            .collect();
        wait_until("all waiters joined", || group.waiters("k") == WAITERS);
        release.open();
        assert_eq!(leader.join().unwrap(), Ok(Counted(7)));
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), Ok(Counted(7)));
        }
    });
    assert_eq!(CLONES.load(Ordering::SeqCst), WAITERS);
}

/// Rule 2: a failing flight shares the leader's error with every waiter; nothing is retried.
#[test]
fn the_leaders_error_reaches_every_waiter() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Group::<String, Result<u32, String>>::new();
    let release = Gate::new();
    let runs = AtomicUsize::new(0);
    thread::scope(|s| {
        let callers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    group.try_call("k", || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        release.wait();
                        Err("down".to_string())
                    })
                })
            })
            .collect();
        wait_until("two callers wait", || group.waiters("k") == 2);
        release.open();
        for caller in callers {
            assert_eq!(
                caller.join().unwrap(),
                Err(Error::Failed("down".to_string()))
            );
        }
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Not poisoned: the next call runs again and may succeed.
    assert_eq!(group.try_call("k", || Ok(1)), Ok(1));
}

/// Rule 3: the role says who ran the work.
#[test]
fn the_role_tells_leader_from_waiter() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Group::<String, u32>::new();
    let release = Gate::new();
    thread::scope(|s| {
        let leader = s.spawn(|| {
            group.request("k").call(|| {
                release.wait();
                1
            })
        });
        wait_until("the leader runs", || group.contains("k"));
        let waiter = s.spawn(|| group.request("k").call(|| 2));
        wait_until("the waiter joined", || group.waiters("k") == 1);
        release.open();
        assert_eq!(
            leader.join().unwrap(),
            (Ok(1), Role::Leader { shared: true })
        );
        assert_eq!(waiter.join().unwrap(), (Ok(1), Role::Waiter));
    });
}

/// Rule 10: a waiter's timeout ends only that waiter; the flight goes on and a later caller
/// still joins it.
#[test]
fn a_waiters_timeout_ends_only_that_waiter() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Group::<String, u32>::new();
    let release = Gate::new();
    let runs = AtomicUsize::new(0);
    thread::scope(|s| {
        let leader = s.spawn(|| {
            group.call("k", || {
                runs.fetch_add(1, Ordering::SeqCst);
                release.wait();
                1
            })
        });
        wait_until("the leader runs", || group.contains("k"));
        // The gate stays closed until this returns, so only the timeout can end it.
        let timed_out = group.call_timeout("k", Duration::from_millis(1), || 2);
        assert_eq!(timed_out, Err(Error::Timeout));
        assert_eq!(
            group.waiters("k"),
            0,
            "the timed-out waiter left the flight"
        );

        let later = s.spawn(|| group.call_timeout("k", Duration::from_secs(60), || 3));
        wait_until("a later caller joins the same flight", || {
            group.waiters("k") == 1
        });
        release.open();
        assert_eq!(later.join().unwrap(), Ok(1));
        assert_eq!(leader.join().unwrap(), Ok(1));
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(group.in_flight(), 0);
}

/// Rule 10 (blocking): a leader's timeout does not cut its work short; it only bounds waits.
#[test]
fn a_leader_with_a_timeout_runs_its_work_to_the_end() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Group::<String, u32>::new();
    let result = group.call_timeout("k", Duration::ZERO, || 5);
    assert_eq!(result, Ok(5));
}

/// A timeout too large for an `Instant` means no timeout, not a panic.
#[test]
fn an_unrepresentable_timeout_means_no_timeout() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Group::<String, u32>::new();
    let release = Gate::new();
    thread::scope(|s| {
        let leader = s.spawn(|| {
            group.call("k", || {
                release.wait();
                1
            })
        });
        wait_until("the leader runs", || group.contains("k"));
        let waiter = s.spawn(|| group.call_timeout("k", Duration::MAX, || 2));
        wait_until("the waiter joined", || group.waiters("k") == 1);
        release.open();
        assert_eq!(waiter.join().unwrap(), Ok(1));
        assert_eq!(leader.join().unwrap(), Ok(1));
    });
}

/// Rule 9: forgetting an absent key is a no-op that leaves nothing behind; `forget_all`
/// detaches every flight and later calls start new ones.
#[test]
fn forget_absent_key_and_forget_all() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Group::<String, u32>::new();
    assert!(!group.forget("nothing"));
    assert_eq!(group.in_flight(), 0);

    let release = Gate::new();
    thread::scope(|s| {
        let old: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|key| {
                let (group, release) = (&group, &release);
                s.spawn(move || {
                    group.call(key, || {
                        release.wait();
                        1
                    })
                })
            })
            .collect();
        wait_until("both flights run", || group.in_flight() == 2);
        assert_eq!(group.forget_all(), 2);
        assert!(!group.contains("a"));
        assert_eq!(
            group.call("a", || 2),
            Ok(2),
            "a new flight, not the forgotten one"
        );
        release.open();
        for flight in old {
            assert_eq!(flight.join().unwrap(), Ok(1));
        }
    });
    assert_eq!(group.in_flight(), 0);
}

/// Rule 11: a call for the key a thread is itself leading fails instead of deadlocking;
/// other keys work from inside the work.
#[test]
fn reentrant_calls_fail_instead_of_deadlocking() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Group::<String, Result<u32, Error>>::new();
    let outcome = group.try_call("outer", || {
        let inner_other = group
            .try_call("other", || Ok(2))
            .map_err(|e| e.map_failed(|_| ()));
        assert_eq!(inner_other, Ok(2));
        match group.try_call("outer", || Ok(3)) {
            Err(Error::Reentrant) => Err(Error::Reentrant),
            other => panic!("expected a re-entrancy error, got {other:?}"),
        }
    });
    assert_eq!(outcome, Err(Error::Failed(Error::Reentrant)));
    assert_eq!(group.in_flight(), 0);
}

/// Rule 11: the same key on another thread is not re-entrancy: it waits as usual.
#[test]
fn the_same_key_from_another_thread_is_not_reentrancy() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Group::<String, u32>::new();
    let value = group.call("k", || {
        thread::scope(|s| {
            let other = s.spawn(|| group.call_timeout("k", Duration::ZERO, || 9));
            assert_eq!(other.join().unwrap(), Err(Error::Timeout));
        });
        1
    });
    assert_eq!(value, Ok(1));
}

/// Rule 12: `String` keys are looked up by `&str`; a custom hasher is accepted.
#[test]
fn borrowed_keys_and_custom_hashers() {
    let _watchdog = singleflight_tests::watchdog!();
    let group: Group<String, u32, BuildHasherDefault<std::hash::DefaultHasher>> =
        Group::with_hasher(BuildHasherDefault::default());
    let key = String::from("borrowed");
    assert_eq!(group.call(key.as_str(), || 4), Ok(4));

    let owned = Group::<Vec<u8>, u8>::new();
    assert_eq!(owned.call(&b"bytes"[..], || 1), Ok(1));
}

/// Rule 13: introspection counts flights and waiters.
#[test]
fn introspection_counts_flights_and_waiters() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Arc::new(Group::<String, u32>::new());
    let release = Gate::new();
    thread::scope(|s| {
        let leader = s.spawn(|| {
            group.call("k", || {
                release.wait();
                1
            })
        });
        wait_until("the flight starts", || group.in_flight() == 1);
        assert_eq!(group.waiters("k"), 0);
        assert_eq!(group.waiters("absent"), 0);
        let waiters: Vec<_> = (0..3).map(|_| s.spawn(|| group.call("k", || 2))).collect();
        wait_until("three waiters", || group.waiters("k") == 3);
        release.open();
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), Ok(1));
        }
        assert_eq!(leader.join().unwrap(), Ok(1));
    });
    assert_eq!(group.in_flight(), 0);
}

/// The group is `Send + Sync` for `Send` keys and values, so it can be shared.
#[test]
fn groups_are_send_and_sync() {
    let _watchdog = singleflight_tests::watchdog!();
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Group<String, u32>>();
    assert_send_sync::<Group<String, Result<Vec<u8>, String>>>();
}
