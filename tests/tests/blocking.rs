//! The semantics contract (DESIGN.md) where the blocking front-end goes beyond the
//! conformance kit's rules (which run on it as `blocking::` in `tests/conformance.rs`):
//! clone counts, zero and unrepresentable timeouts, re-entrancy on other keys and threads,
//! custom hashers.

use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use singleflight_blocking::{Error, Group};
use singleflight_tests::{Gate, wait_until};

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
