//! The scenarios, each a function generic over the contender, so that the criterion
//! benches and the report run exactly the same code.
//!
//! * **uncontended**: one thread, a fresh key per call, work that returns at once: what a
//!   coalescer adds to a call that turns out not to need it (async on a current-thread
//!   tokio runtime; blocking on a plain thread).
//! * **herd**: `n` tasks call one key at once on tokio with 2 workers; the work sleeps
//!   [`HERD_WORK`] and returns 1 KiB ([`Payload`]). Measured from the first spawn, as a
//!   user sees it: when the last caller arrived, executions (should be 1), the time beyond
//!   the work, and the fan-out from the work's end to the last caller's return.
//! * **mixed**: [`MIXED_TASKS`] tasks, each making calls over [`MIXED_KEYS`] keys, the work
//!   one `yield_now`: throughput with real coalescing and real contention.
//! * **disjoint**: 2 threads hammering different keys: the cost of sharing the map.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::coalescer::{AsyncCoalescer, BlockingCoalescer, Payload};

/// What the herd's work takes.
pub const HERD_WORK: Duration = Duration::from_millis(20);
/// The herd sizes.
pub const HERD_SIZES: [usize; 3] = [100, 1_000, 10_000];
/// Client tasks in the mixed scenario.
pub const MIXED_TASKS: usize = 64;
/// Calls per client task in the mixed scenario (full run).
pub const MIXED_CALLS: usize = 20_000;
/// Keys the mixed scenario's calls spread over.
pub const MIXED_KEYS: u64 = 1_000;

/// A current-thread tokio runtime with timers.
pub fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
}

/// A multi-thread tokio runtime with 2 workers and timers.
pub fn two_workers() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("a multi-thread runtime")
}

/// Uncontended async calls: `iters` calls on `rt`'s thread, each with a fresh key and work
/// that is ready at once. Returns the time they took.
pub fn uncontended_async<C: AsyncCoalescer>(rt: &Runtime, iters: u64) -> Duration {
    let coalescer = C::create();
    rt.block_on(async {
        let start = Instant::now();
        for key in 0..iters {
            black_box(
                coalescer
                    .call(key, move || async move { black_box(key) * 2 })
                    .await,
            );
        }
        start.elapsed()
    })
}

/// Uncontended blocking calls: `iters` calls on this thread, each with a fresh key and
/// work that returns at once. Returns the time they took.
pub fn uncontended_blocking<C: BlockingCoalescer>(iters: u64) -> Duration {
    let coalescer = C::create();
    let start = Instant::now();
    for key in 0..iters {
        black_box(coalescer.call(key, || black_box(key) * 2));
    }
    start.elapsed()
}

/// One herd's outcome, every figure from the first spawn.
#[derive(Clone, Copy, Debug)]
pub struct HerdRun {
    /// How many times the work ran (1 if every caller joined the first flight).
    pub executions: usize,
    /// From the first spawn to the last caller's return.
    pub elapsed: Duration,
    /// From the first caller's arrival (its task's first poll, just before `call`) to the
    /// last caller's.
    pub last_arrival: Duration,
    /// From the end of the (last) execution's work to the last caller's return.
    pub fan_out: Duration,
}

impl HerdRun {
    /// The time beyond the work itself.
    pub fn overhead(&self) -> Duration {
        self.elapsed.saturating_sub(HERD_WORK)
    }
}

/// The instants of a herd, as nanoseconds since its start, noted by its tasks in atomics
/// (no lock for them to queue on).
#[derive(Debug)]
pub struct HerdClock {
    start: Instant,
    first_arrival: AtomicU64,
    last_arrival: AtomicU64,
    work_end: AtomicU64,
    last_return: AtomicU64,
}

impl HerdClock {
    /// A clock started now.
    pub fn start() -> Self {
        Self {
            start: Instant::now(),
            first_arrival: AtomicU64::new(u64::MAX),
            last_arrival: AtomicU64::new(0),
            work_end: AtomicU64::new(0),
            last_return: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A caller arrives.
    pub fn arrived(&self) {
        let now = self.now();
        self.first_arrival.fetch_min(now, Ordering::Relaxed);
        self.last_arrival.fetch_max(now, Ordering::Relaxed);
    }

    /// An execution's work ends.
    pub fn work_ended(&self) {
        self.work_end.fetch_max(self.now(), Ordering::Relaxed);
    }

    /// A caller has its value.
    pub fn returned(&self) {
        self.last_return.fetch_max(self.now(), Ordering::Relaxed);
    }

    /// The figures of the herd, which ran the work `executions` times.
    pub fn run(&self, executions: usize) -> HerdRun {
        let at = |nanos: &AtomicU64| Duration::from_nanos(nanos.load(Ordering::Relaxed));
        let last_return = at(&self.last_return);
        HerdRun {
            executions,
            elapsed: last_return,
            last_arrival: at(&self.last_arrival).saturating_sub(at(&self.first_arrival)),
            fan_out: last_return.saturating_sub(at(&self.work_end)),
        }
    }
}

/// The herd's work: 1 KiB, made once per execution.
fn payload() -> Payload {
    Payload::from(vec![7_u8; 1024])
}

/// The herd's work: counts its execution, sleeps [`HERD_WORK`], notes its end, returns
/// 1 KiB.
async fn herd_work(executions: Arc<AtomicUsize>, clock: Arc<HerdClock>) -> Payload {
    executions.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(HERD_WORK).await;
    clock.work_ended();
    payload()
}

/// The bytes a herd caller's call future takes (what every waiting task holds), for `C`.
pub fn herd_call_bytes<C: AsyncCoalescer<Payload>>() -> usize {
    let coalescer = C::create();
    let (executions, clock) = (Arc::default(), Arc::new(HerdClock::start()));
    size_of_val(&coalescer.call(0, move || herd_work(executions, clock)))
}

/// `n` tasks call one key at once on `rt` (2 workers); the work sleeps [`HERD_WORK`] and
/// returns 1 KiB.
pub fn herd<C: AsyncCoalescer<Payload>>(rt: &Runtime, n: usize) -> HerdRun {
    let coalescer = Arc::new(C::create());
    let executions = Arc::new(AtomicUsize::new(0));
    let clock = rt.block_on(async {
        let clock = Arc::new(HerdClock::start());
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let coalescer = Arc::clone(&coalescer);
                let executions = Arc::clone(&executions);
                let clock = Arc::clone(&clock);
                tokio::spawn(async move {
                    clock.arrived();
                    let work_clock = Arc::clone(&clock);
                    let value = coalescer
                        .call(0, move || herd_work(executions, work_clock))
                        .await;
                    clock.returned();
                    value
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("no caller panics").len(), 1024);
        }
        clock
    });
    clock.run(executions.load(Ordering::Relaxed))
}

/// A reference for the herd: `n` tasks, spawned as [`herd`] spawns them, wait on one
/// `tokio::sync::watch` channel that the first task sets after [`HERD_WORK`]. No map, no
/// work to share: what remains beyond the work is tokio waking `n` tasks from one event,
/// running them to completion and joining them, the part of a herd's overhead that no
/// coalescer controls. (Measured here, it costs about as much as the coalescers' whole
/// overhead.)
pub fn herd_reference(rt: &Runtime, n: usize) -> HerdRun {
    let (done, watch) = tokio::sync::watch::channel(None::<Payload>);
    let mut done = Some(done);
    let clock = rt.block_on(async {
        let clock = Arc::new(HerdClock::start());
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let mut watch = watch.clone();
                let done = done.take();
                let clock = Arc::clone(&clock);
                tokio::spawn(async move {
                    clock.arrived();
                    let value = if let Some(done) = done {
                        tokio::time::sleep(HERD_WORK).await;
                        clock.work_ended();
                        let value = payload();
                        done.send_replace(Some(value.clone()));
                        value
                    } else {
                        watch
                            .wait_for(Option::is_some)
                            .await
                            .expect("the first task sets it")
                            .clone()
                            .expect("set")
                    };
                    clock.returned();
                    value
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("no task panics").len(), 1024);
        }
        clock
    });
    // The one sleeping task stands for the work, run once.
    clock.run(1)
}

/// [`MIXED_TASKS`] tasks on `rt` (2 workers), each making `calls` calls spread over
/// [`MIXED_KEYS`] keys (a per-task pseudo-random sequence); the work is one `yield_now`.
/// Returns the time all of them took.
pub fn mixed<C: AsyncCoalescer>(rt: &Runtime, calls: usize) -> Duration {
    let coalescer = Arc::new(C::create());
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..MIXED_TASKS as u64)
            .map(|task| {
                let coalescer = Arc::clone(&coalescer);
                tokio::spawn(async move {
                    let mut state = task.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    for _ in 0..calls {
                        // xorshift64: a cheap, per-task key sequence.
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        let key = state % MIXED_KEYS;
                        let value = coalescer
                            .call(key, move || async move {
                                tokio::task::yield_now().await;
                                key
                            })
                            .await;
                        assert_eq!(value, key);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("no client panics");
        }
        start.elapsed()
    })
}

/// Two threads, each making `iters` blocking calls with keys the other never uses (fresh
/// per call, work ready at once), on one shared coalescer. Returns the wall time.
pub fn disjoint_blocking<C: BlockingCoalescer>(iters: u64) -> Duration {
    let coalescer = C::create();
    two_threads(|thread| {
        for i in 0..iters {
            let key = i * 2 + thread;
            black_box(coalescer.call(key, || black_box(key)));
        }
    })
}

/// Two threads, each running a current-thread runtime that makes `iters` async calls with
/// keys the other never uses, on one shared coalescer. Returns the wall time.
pub fn disjoint_async<C: AsyncCoalescer>(iters: u64) -> Duration {
    let coalescer = C::create();
    let runtimes = [current_thread(), current_thread()];
    two_threads(|thread| {
        runtimes[thread as usize].block_on(async {
            for i in 0..iters {
                let key = i * 2 + thread;
                black_box(
                    coalescer
                        .call(key, move || async move { black_box(key) })
                        .await,
                );
            }
        });
    })
}

/// Runs `body(0)` and `body(1)` on two threads released together; returns the wall time
/// from their release to the later one's end.
fn two_threads(body: impl Fn(u64) + Sync) -> Duration {
    let barrier = Barrier::new(3);
    std::thread::scope(|scope| {
        for thread in 0..2 {
            let (barrier, body) = (&barrier, &body);
            scope.spawn(move || {
                barrier.wait();
                body(thread);
            });
        }
        barrier.wait();
        let start = Instant::now();
        // Leaving the scope joins both threads.
        start
    })
    .elapsed()
}

/// An async contender's scenarios as plain function pointers, so a list of them can mix
/// types.
#[derive(Clone, Copy, Debug)]
pub struct AsyncContender {
    /// Its name.
    pub name: &'static str,
    /// [`uncontended_async`].
    pub uncontended: fn(&Runtime, u64) -> Duration,
    /// [`herd`], with the contender's [`Payload`] variant.
    pub herd: fn(&Runtime, usize) -> HerdRun,
    /// [`herd_call_bytes`].
    pub herd_call_bytes: fn() -> usize,
    /// [`mixed`].
    pub mixed: fn(&Runtime, usize) -> Duration,
    /// [`disjoint_async`].
    pub disjoint: fn(u64) -> Duration,
}

/// The scenarios of `C`, the herd's of `H` (the same contender, for [`Payload`] values).
pub fn async_contender<C: AsyncCoalescer, H: AsyncCoalescer<Payload>>() -> AsyncContender {
    AsyncContender {
        name: C::NAME,
        uncontended: uncontended_async::<C>,
        herd: herd::<H>,
        herd_call_bytes: herd_call_bytes::<H>,
        mixed: mixed::<C>,
        disjoint: disjoint_async::<C>,
    }
}

/// A blocking contender's scenarios as plain function pointers.
#[derive(Clone, Copy, Debug)]
pub struct BlockingContender {
    /// Its name.
    pub name: &'static str,
    /// [`uncontended_blocking`].
    pub uncontended: fn(u64) -> Duration,
    /// [`disjoint_blocking`].
    pub disjoint: fn(u64) -> Duration,
}

/// The scenarios of `C`.
pub fn blocking_contender<C: BlockingCoalescer>() -> BlockingContender {
    BlockingContender {
        name: C::NAME,
        uncontended: uncontended_blocking::<C>,
        disjoint: disjoint_blocking::<C>,
    }
}
