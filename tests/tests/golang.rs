//! Go's singleflight test suite, ported.
//!
//! Each test below is a port of a test in `singleflight/singleflight_test.go` of
//! `golang.org/x/sync` (Copyright 2013 The Go Authors, BSD-style licence), named after it.
//! Go orders goroutines with channels and, in places, `time.Sleep`; the ports order threads
//! with gates and waiter counts instead, so each asserts the exact outcome rather than a range.
//! Where Go's semantics differ from this library's contract (a Go panic reaches every caller
//! as a panic; here waiters get `Error::Panicked`), the port says so and asserts ours.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use singleflight_blocking::{Error, Group, Role};
use singleflight_core::{Entered, Waited};
use singleflight_tests::{Gate, panic_message, wait_until};

/// Port of `TestDo`.
#[test]
fn test_do() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Group::<String, String>::new();
    let value = group.call("key", || "bar".to_string());
    assert_eq!(value.as_deref(), Ok("bar"));
}

/// Port of `TestDoErr`.
#[test]
fn test_do_err() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Group::<String, Result<String, String>>::new();
    let value = group.try_call("key", || Err("Some error".to_string()));
    assert_eq!(value, Err(Error::Failed("Some error".to_string())));
}

/// Port of `TestDoDupSuppress`. Go lets goroutines pile up behind a 10 ms sleep and accepts
/// any number of calls in `1..n`; here every caller is seen waiting before the work is
/// released, so exactly one call runs.
#[test]
fn test_do_dup_suppress() {
    let _watchdog = singleflight_tests::watchdog!();
    const N: usize = 10;
    let group = Group::<String, String>::new();
    let calls = AtomicUsize::new(0);
    let release = Gate::new();
    thread::scope(|s| {
        let callers: Vec<_> = (0..N)
            .map(|_| {
                s.spawn(|| {
                    group.call("key", || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        release.wait();
                        "bar".to_string()
                    })
                })
            })
            .collect();
        wait_until("every other caller waits for the first", || {
            group.waiters("key") == N - 1
        });
        release.open();
        for caller in callers {
            assert_eq!(caller.join().unwrap().as_deref(), Ok("bar"));
        }
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Port of `TestForget` (golang/go#31420): after `Forget`, a new call starts a new flight,
/// and the first flight finishing must not remove the second's entry, so a third call joins
/// the second flight and receives its value.
#[test]
fn test_forget() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Group::<String, u32>::new();
    let first_started = Gate::new();
    let unblock_first = Gate::new();
    let unblock_second = Gate::new();
    thread::scope(|s| {
        let first = s.spawn(|| {
            group.call("key", || {
                first_started.open();
                unblock_first.wait();
                1
            })
        });
        first_started.wait();
        assert!(group.forget("key"));

        let second = s.spawn(|| {
            group.call("key", || {
                unblock_second.wait();
                2
            })
        });
        wait_until("the second call leads a new flight", || {
            group.in_flight() == 2
        });

        unblock_first.open();
        assert_eq!(first.join().unwrap(), Ok(1));
        assert_eq!(group.in_flight(), 1, "the first flight removed only itself");

        let third = s.spawn(|| group.call("key", || 3));
        wait_until("the third call joins the second flight", || {
            group.waiters("key") == 1
        });
        unblock_second.open();
        assert_eq!(second.join().unwrap(), Ok(2));
        assert_eq!(
            third.join().unwrap(),
            Ok(2),
            "result produced by the second call"
        );
    });
    assert_eq!(group.in_flight(), 0);
}

/// Port of `TestDoChan`. Go's `DoChan` delivers the result on a channel; the blocking
/// front-end's equivalent is a call on another thread, joined.
#[test]
fn test_do_chan() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Group::<String, String>::new();
    let value = thread::scope(|s| {
        s.spawn(|| group.call("key", || "bar".to_string()))
            .join()
            .unwrap()
    });
    assert_eq!(value.as_deref(), Ok("bar"));
}

/// Port of `TestPanicDo` (golang/go#41133): a panic in the work must not hang the callers.
/// In Go every caller re-panics; here the leader's call resumes the panic and each waiter
/// returns `Error::Panicked` with the message.
#[test]
fn test_panic_do() {
    let _watchdog = singleflight_tests::watchdog!();
    const N: usize = 5;
    const MESSAGE: &str = "invalid memory address or nil pointer dereference";
    let group = Group::<String, u32>::new();
    let release = Gate::new();
    thread::scope(|s| {
        let callers: Vec<_> = (0..N)
            .map(|_| {
                s.spawn(|| {
                    group.call("key", || {
                        release.wait();
                        panic!("{MESSAGE}")
                    })
                })
            })
            .collect();
        wait_until("every caller is on the flight", || {
            group.waiters("key") == N - 1
        });
        release.open();
        let (mut panicked, mut shared) = (0, 0);
        for caller in callers {
            match caller.join() {
                Err(payload) => {
                    assert_eq!(panic_message(&*payload), MESSAGE);
                    panicked += 1;
                }
                Ok(Err(Error::Panicked(message))) => {
                    assert_eq!(message.as_str(), MESSAGE);
                    shared += 1;
                }
                Ok(other) => panic!("unexpected outcome {other:?}"),
            }
        }
        assert_eq!((panicked, shared), (1, N - 1));
    });
    assert_eq!(group.in_flight(), 0, "the key is not poisoned");
    assert_eq!(group.call("key", || 7), Ok(7));
}

/// Port of `TestGoexitDo`. Rust has no `runtime.Goexit`; its analogue is a leader that goes
/// away without a value, which the core models as dropping the `Leader` guard. Go's test
/// asks that nobody hangs and nobody sees an error; under the default takeover policy the
/// oldest waiter runs the work instead, and the rest share its value.
#[test]
fn test_goexit_do() {
    let _watchdog = singleflight_tests::watchdog!();
    const N: usize = 5;
    let group = singleflight_core::Group::<String, u32>::new();
    let Ok(Entered::Leader(leader)) = group.enter("key") else {
        panic!("the first caller leads");
    };
    let executions = AtomicUsize::new(0);
    thread::scope(|s| {
        let waiters: Vec<_> = (1..N)
            .map(|_| {
                let Ok(Entered::Waiter(waiter)) = group.enter("key") else {
                    panic!("later callers wait");
                };
                let executions = &executions;
                s.spawn(move || match waiter.wait() {
                    Waited::Outcome(outcome) => outcome,
                    Waited::Promoted(leader) => {
                        executions.fetch_add(1, Ordering::SeqCst);
                        Ok(leader.complete(2))
                    }
                })
            })
            .collect();
        drop(leader); // the leader "exits" without completing
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), Ok(2));
        }
    });
    assert_eq!(executions.load(Ordering::SeqCst), 1);
    assert_eq!(group.in_flight(), 0);
}

/// Port of `TestPanicDoChan`. In Go a panic in `DoChan`'s callback crashes the process,
/// since no caller can recover it. Here the panic resumes on the thread that ran the work,
/// with its original payload, where it can be observed (and recovered).
#[test]
fn test_panic_do_chan() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Group::<String, u32>::new();
    let outcome = thread::scope(|s| {
        s.spawn(|| group.call("", || panic!("Panicking in DoChan")))
            .join()
    });
    let payload = outcome.expect_err("the leader's thread panics");
    assert_eq!(panic_message(&*payload), "Panicking in DoChan");
    assert_eq!(group.in_flight(), 0);
}

/// Port of `TestPanicDoSharedByDoChan`. A panic in `Do` reaches the `DoChan` caller that
/// joined it, and that caller's own callback never runs ("DoChan unexpectedly executed
/// callback"). Here the joined caller gets `Error::Panicked` with the leader's message.
#[test]
fn test_panic_do_shared_by_do_chan() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Group::<String, u32>::new();
    let blocked = Gate::new();
    let unblock = Gate::new();
    thread::scope(|s| {
        let leader = s.spawn(|| {
            panic::catch_unwind(AssertUnwindSafe(|| {
                group.call("", || {
                    blocked.open();
                    unblock.wait();
                    panic!("Panicking in Do")
                })
            }))
        });
        blocked.wait();
        let joined = s.spawn(|| {
            group
                .request("")
                .with_role()
                .call(|| panic!("DoChan unexpectedly executed callback"))
        });
        wait_until("the second caller joins", || group.waiters("") == 1);
        unblock.open();
        let (outcome, role) = joined.join().unwrap();
        assert_eq!(role, Role::Waiter);
        assert_eq!(
            outcome.unwrap_err().panic_message().unwrap().as_str(),
            "Panicking in Do"
        );
        let payload = leader
            .join()
            .unwrap()
            .expect_err("the leader's call resumes the panic");
        assert_eq!(panic_message(&*payload), "Panicking in Do");
    });
}

/// Port of `TestPanicErrorUnwrap`. Go wraps the panic value in a `panicError` that keeps
/// the original value reachable (`errors.As`). Here the leader's call resumes the panic with
/// its original payload, whatever its type, and waiters get the text of `&str`/`String`
/// payloads (any other payload reads `Box<dyn Any>`).
#[test]
fn test_panic_error_unwrap() {
    let _watchdog = singleflight_tests::watchdog!();
    #[derive(Debug, PartialEq)]
    struct ErrValue;

    let group = Group::<String, u32>::new();
    let release = Gate::new();
    thread::scope(|s| {
        let leader = s.spawn(|| {
            group.call("key", || {
                release.wait();
                panic::panic_any(ErrValue)
            })
        });
        wait_until("the leader's flight exists", || group.contains("key"));
        let waiter = s.spawn(|| group.call("key", || 0));
        wait_until("the waiter joins", || group.waiters("key") == 1);
        release.open();
        let payload = leader.join().expect_err("the leader resumes the panic");
        assert_eq!(payload.downcast_ref::<ErrValue>(), Some(&ErrValue));
        let error = waiter.join().unwrap().unwrap_err();
        assert_eq!(error.panic_message().unwrap().as_str(), "Box<dyn Any>");
    });
}

/// Port of `ExampleGroup`: two overlapping calls, one runs the work, both get its value, and
/// the `shared` flag (here `Role`) tells them apart.
#[test]
fn example_group() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Group::<String, String>::new();
    let release = Gate::new();
    thread::scope(|s| {
        let first = s.spawn(|| {
            group.request("key").with_role().call(|| {
                release.wait();
                "func 1".to_string()
            })
        });
        wait_until("the first call leads", || group.contains("key"));
        let second = s.spawn(|| {
            group
                .request("key")
                .with_role()
                .call(|| "func 2".to_string())
        });
        wait_until("the second call joins", || group.waiters("key") == 1);
        release.open();
        let (first, second) = (first.join().unwrap(), second.join().unwrap());
        assert_eq!(
            first,
            (Ok("func 1".to_string()), Role::Leader { shared: true })
        );
        assert_eq!(second, (Ok("func 1".to_string()), Role::Waiter));
    });
}
