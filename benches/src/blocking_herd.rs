//! A blocking herd: `n` std threads call one key at once, and the work sleeps
//! [`HERD_WORK`] on the first caller's thread. What the figure measures is the **fan-out**:
//! from the instant the work returns its value to the instant the last thread has the
//! value in hand, the time a coalescer takes to hand one result to every blocked thread.
//!
//! The floor is no coalescer at all: the same threads blocked on one bare `Mutex<bool>` +
//! `Condvar` that the first thread sets and `notify_all`s after the same sleep
//! ([`condvar_floor`]). Nothing that wakes `n` parked threads on this machine does much
//! less; a coalescer's fan-out is that plus its own bookkeeping.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Barrier, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::peers::BlockingCoalescer;
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
}

/// Runs `n` threads released together by a barrier; each calls `body(i)`, which returns
/// the instant its work ended if it ran the work, and the instant each thread had its
/// value is noted. Returns the latest work end and the latest value instant. The instants
/// go into atomics, so that noting them adds no lock for the threads to queue on.
fn herd_threads(n: usize, body: impl Fn(usize) -> Option<Instant> + Sync) -> (Instant, Instant) {
    let start_line = Barrier::new(n);
    let base = Instant::now();
    let since = |t: Instant| u64::try_from(t.duration_since(base).as_nanos()).unwrap_or(u64::MAX);
    let end = AtomicU64::new(0);
    let last = AtomicU64::new(0);
    thread::scope(|scope| {
        for i in 0..n {
            let (start_line, body, since, end, last) = (&start_line, &body, &since, &end, &last);
            scope.spawn(move || {
                start_line.wait();
                let ended = body(i);
                let had = Instant::now();
                if let Some(ended) = ended {
                    end.fetch_max(since(ended), Ordering::Relaxed);
                }
                last.fetch_max(since(had), Ordering::Relaxed);
            });
        }
    });
    let at = |nanos: &AtomicU64| base + Duration::from_nanos(nanos.load(Ordering::Relaxed));
    (at(&end), at(&last))
}

/// `n` threads call key 0 of a fresh `C` at once; the work sleeps [`HERD_WORK`].
pub fn blocking_herd<C: BlockingCoalescer>(n: usize) -> FanOut {
    let coalescer = C::create();
    let executions = AtomicUsize::new(0);
    let (end, last) = herd_threads(n, |_| {
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
    FanOut {
        executions: executions.into_inner(),
        last: last.saturating_duration_since(end),
    }
}

/// The floor: `n` threads, no coalescer. Thread 0 sleeps [`HERD_WORK`], sets a bare
/// `Mutex<bool>` and `notify_all`s its `Condvar`; the others wait on it.
pub fn condvar_floor(n: usize) -> FanOut {
    let done = Mutex::new(false);
    let woken = Condvar::new();
    let (end, last) = herd_threads(n, |i| {
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
    });
    FanOut {
        executions: 1,
        last: last.saturating_duration_since(end),
    }
}

/// A contender of the blocking herd.
#[derive(Clone, Copy, Debug)]
pub struct BlockingHerdContender {
    /// Its name (a [`BlockingCoalescer::NAME`], or the floor's).
    pub name: &'static str,
    /// Runs one herd of the given size.
    pub run: fn(usize) -> FanOut,
}

/// The floor's name.
pub const CONDVAR_FLOOR: &str = "Condvar notify_all (floor)";

/// Ours, the blocking peers (the textbook `Mutex<HashMap>` + `Condvar` coalescer first),
/// then the bare `Condvar` floor.
pub fn blocking_herd_contenders() -> Vec<BlockingHerdContender> {
    use crate::peers::*;
    fn of<C: BlockingCoalescer>() -> BlockingHerdContender {
        BlockingHerdContender {
            name: C::NAME,
            run: blocking_herd::<C>,
        }
    }
    vec![
        of::<OursBlocking>(),
        of::<CondvarBaseline>(),
        of::<QuickCache>(),
        of::<MokaSync>(),
        BlockingHerdContender {
            name: CONDVAR_FLOOR,
            run: condvar_floor,
        },
    ]
}
