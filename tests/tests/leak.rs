//! No leak, ever: 100,000 blocking calls on distinct keys — among them panicking work and
//! waiters that time out — leave no flight behind.
//!
//! This test has its own binary because it silences the panic hook for its thousands of
//! deliberate panics.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use singleflight_blocking::{Error, Group};

const CALLS: u64 = 100_000;
const THREADS: u64 = 4;

#[test]
fn one_hundred_thousand_calls_leave_nothing_in_flight() {
    let _watchdog = singleflight_tests::watchdog!();
    panic::set_hook(Box::new(|_| {}));
    let group = Group::<u64, u64>::new();
    let (panics, timeouts, values) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );

    thread::scope(|s| {
        for t in 0..THREADS {
            let (group, panics, timeouts, values) = (&group, &panics, &timeouts, &values);
            s.spawn(move || {
                for key in (t..CALLS).step_by(THREADS as usize) {
                    match key % 100 {
                        // Panicking work: the caller's thread sees the panic, the key is freed.
                        0..=9 => {
                            let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
                                group.call(&key, || panic!("boom {key}"))
                            }));
                            assert!(outcome.is_err());
                            panics.fetch_add(1, Ordering::Relaxed);
                        }
                        // A waiter that times out while the leader's work is still running.
                        10 => {
                            let value = group.call(&key, || {
                                thread::scope(|inner| {
                                    let waiter = inner
                                        .spawn(|| group.call_timeout(&key, Duration::ZERO, || 0));
                                    assert_eq!(waiter.join().unwrap(), Err(Error::Timeout));
                                });
                                key
                            });
                            assert_eq!(value, Ok(key));
                            timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            assert_eq!(group.call(&key, || key * 2), Ok(key * 2));
                            values.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    drop(panic::take_hook());

    assert_eq!(panics.load(Ordering::Relaxed), 10_000);
    assert_eq!(timeouts.load(Ordering::Relaxed), 1_000);
    assert_eq!(values.load(Ordering::Relaxed), 89_000);
    assert_eq!(group.in_flight(), 0);
}
