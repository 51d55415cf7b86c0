//! A blocking herd: `n` std threads, released together by a barrier, call one key at once,
//! and the work sleeps [`HERD_WORK`] on the first caller's thread. Measured from the
//! release, as a user sees it: when the last thread entered the call, the executions, the
//! time beyond the work (overhead), and the **fan-out**: from the instant the work returns
//! its value to the instant the last thread has it in hand, the time a coalescer takes to
//! hand one result to every blocked thread.
//!
//! Two floors, no coalescer at all, the same threads: blocked on one bare `Mutex<bool>` +
//! `Condvar` that the first thread sets and `notify_all`s after the same sleep
//! ([`condvar_floor`]), and parked, each unparked in turn by the first thread
//! ([`unpark_floor`]). Nothing that wakes `n` blocked threads on this machine does much
//! less; a coalescer's fan-out is one of those plus its own bookkeeping.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Barrier, Condvar, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::coalescer::BlockingCoalescer;
use crate::scenarios::HERD_WORK;

/// The herd sizes: the machine's cores many times over.
pub const BLOCKING_HERD_SIZES: [usize; 2] = [16, 64];

/// One blocking herd's outcome.
#[derive(Clone, Copy, Debug)]
pub struct FanOut {
    /// How many times the work ran (1 if every thread joined the first flight).
    pub executions: usize,
    /// From the end of the (last) execution to the last thread having its value.
    pub last: Duration,
    /// From the first thread's release to the last thread's entering the call.
    pub last_arrival: Duration,
    /// From the first thread's release to the last thread having its value, less the work.
    pub overhead: Duration,
}

/// Runs `n` threads released together by a barrier; each calls `body(i)`, which returns
/// the instant its work ended if it ran the work, and the instant each thread entered and
/// had its value is noted. The instants go into atomics, so that noting them adds no lock
/// for the threads to queue on.
fn herd_threads(
    n: usize,
    executions: usize,
    body: impl Fn(usize) -> Option<Instant> + Sync,
) -> FanOut {
    let start_line = Barrier::new(n);
    let base = Instant::now();
    let since = |t: Instant| u64::try_from(t.duration_since(base).as_nanos()).unwrap_or(u64::MAX);
    let first_in = AtomicU64::new(u64::MAX);
    let last_in = AtomicU64::new(0);
    let end = AtomicU64::new(0);
    let last = AtomicU64::new(0);
    thread::scope(|scope| {
        for i in 0..n {
            let (start_line, body, since) = (&start_line, &body, &since);
            let (first_in, last_in, end, last) = (&first_in, &last_in, &end, &last);
            scope.spawn(move || {
                start_line.wait();
                let arrived = since(Instant::now());
                first_in.fetch_min(arrived, Ordering::Relaxed);
                last_in.fetch_max(arrived, Ordering::Relaxed);
                let ended = body(i);
                let had = Instant::now();
                if let Some(ended) = ended {
                    end.fetch_max(since(ended), Ordering::Relaxed);
                }
                last.fetch_max(since(had), Ordering::Relaxed);
            });
        }
    });
    let at = |nanos: &AtomicU64| Duration::from_nanos(nanos.load(Ordering::Relaxed));
    FanOut {
        executions,
        last: at(&last).saturating_sub(at(&end)),
        last_arrival: at(&last_in).saturating_sub(at(&first_in)),
        overhead: at(&last)
            .saturating_sub(at(&first_in))
            .saturating_sub(HERD_WORK),
    }
}

/// `n` threads call key 0 of a fresh `C` at once; the work sleeps [`HERD_WORK`].
pub fn blocking_herd<C: BlockingCoalescer>(n: usize) -> FanOut {
    let coalescer = C::create();
    let executions = AtomicUsize::new(0);
    let mut run = herd_threads(n, 1, |_| {
        let mut ended = None;
        let value = coalescer.call(0, || {
            executions.fetch_add(1, Ordering::Relaxed);
            thread::sleep(HERD_WORK);
            ended = Some(Instant::now());
            42
        });
        assert_eq!(value, 42);
        ended
    });
    run.executions = executions.into_inner();
    run
}

/// The floor: `n` threads, no coalescer. Thread 0 sleeps [`HERD_WORK`], sets a bare
/// `Mutex<bool>` and `notify_all`s its `Condvar`; the others wait on it.
pub fn condvar_floor(n: usize) -> FanOut {
    let done = Mutex::new(false);
    let woken = Condvar::new();
    herd_threads(n, 1, |i| {
        if i == 0 {
            thread::sleep(HERD_WORK);
            let end = Instant::now();
            *done.lock().unwrap() = true;
            woken.notify_all();
            Some(end)
        } else {
            let mut done = done.lock().unwrap();
            while !*done {
                done = woken.wait(done).unwrap();
            }
            None
        }
    })
}

/// The other floor: `n` threads, no coalescer. The others park until thread 0, after
/// [`HERD_WORK`], sets a flag and unparks each of them in turn (what a coalescer that keeps
/// a thread handle per waiter does at the end).
pub fn unpark_floor(n: usize) -> FanOut {
    let done = AtomicBool::new(false);
    let parked: Vec<OnceLock<Thread>> = (0..n).map(|_| OnceLock::new()).collect();
    let registered = AtomicUsize::new(0);
    herd_threads(n, 1, |i| {
        if i == 0 {
            thread::sleep(HERD_WORK);
            let end = Instant::now();
            done.store(true, Ordering::Release);
            while registered.load(Ordering::Acquire) < n - 1 {
                std::hint::spin_loop();
            }
            for thread in parked.iter().skip(1) {
                thread.get().expect("registered").unpark();
            }
            Some(end)
        } else {
            let _ = parked[i].set(thread::current());
            registered.fetch_add(1, Ordering::Release);
            while !done.load(Ordering::Acquire) {
                thread::park();
            }
            None
        }
    })
}

/// A contender of the blocking herd.
#[derive(Clone, Copy, Debug)]
pub struct BlockingHerdContender {
    /// Its name (a [`BlockingCoalescer::NAME`], or the floor's).
    pub name: &'static str,
    /// Runs one herd of the given size.
    pub run: fn(usize) -> FanOut,
}

/// The floors' names.
pub const CONDVAR_FLOOR: &str = "Condvar notify_all (floor)";
/// See [`CONDVAR_FLOOR`].
pub const UNPARK_FLOOR: &str = "unpark per thread (floor)";
