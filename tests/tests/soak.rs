//! Soak: many tasks and threads on every front-end doing random calls, cancellations,
//! panics, errors, forgets and timeouts for a bounded time, with the contract's invariants
//! checked all along:
//!
//! * never two executions at once for one key in one group (keys that are never forgotten);
//! * every call returns: a watchdog names the stuck keys and fails the run instead of hanging;
//! * `in_flight() == 0` at the end;
//! * the statistics add up: hits + misses == calls, errors and panics == those executions.
//!
//! `SOAK_SECS` sets the seconds per front-end (default 1; CI runs a longer release soak).

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use singleflight_core::Error;
use singleflight_core::rt::{RuntimeGroup, Spawn, Timer};
use singleflight_stats::Stats;

/// Keys of the strict group (never forgotten: at most one execution per key at a time).
const STRICT_KEYS: u64 = 8;
/// Keys of the loose group (forgotten at random).
const LOOSE_KEYS: u64 = 8;
const TASKS: usize = 16;

fn soak_duration() -> Duration {
    let secs = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs)
}

/// A small, seedable random source (xorshift64*), so no dependency is needed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What happened, counted by the callers and by the work itself.
#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    /// Calls on the strict group, the one the statistics observe.
    strict_calls: AtomicU64,
    executions: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    timeouts: AtomicU64,
    cancelled: AtomicU64,
    forgets: AtomicU64,
    /// Two executions at once for one strict key: must stay 0.
    overlaps: AtomicU64,
    /// Outcomes that do not fit the work (a wrong value): must stay 0.
    wrong: AtomicU64,
    running: [AtomicUsize; STRICT_KEYS as usize],
}

/// The calls in progress, per task or thread, for the watchdog: (key, started).
struct Progress {
    slots: Vec<Mutex<Option<(u64, Instant)>>>,
    finished: AtomicBool,
}

impl Progress {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: (0..n).map(|_| Mutex::new(None)).collect(),
            finished: AtomicBool::new(false),
        })
    }

    fn enter(&self, slot: usize, key: u64) {
        *self.slots[slot].lock().unwrap() = Some((key, Instant::now()));
    }

    fn leave(&self, slot: usize) {
        *self.slots[slot].lock().unwrap() = None;
    }

    /// Fails the process, naming the stuck keys, if the run has not finished by `deadline`.
    fn watch(self: &Arc<Self>, name: &'static str, deadline: Duration) {
        let progress = Arc::clone(self);
        thread::spawn(move || {
            let start = Instant::now();
            while !progress.finished.load(Ordering::SeqCst) {
                if start.elapsed() > deadline {
                    let stuck: Vec<_> = progress
                        .slots
                        .iter()
                        .filter_map(|slot| *slot.lock().unwrap())
                        .map(|(key, since)| format!("key {key} for {:?}", since.elapsed()))
                        .collect();
                    eprintln!("soak {name}: calls did not return: {stuck:?}");
                    std::process::exit(101);
                }
                thread::park_timeout(Duration::from_millis(50));
            }
        });
    }
}

/// Marks an execution of the work; dropping it (the work finished, panicked or was
/// cancelled) ends the execution.
struct Running<'a> {
    tally: &'a Tally,
    key: u64,
    strict: bool,
}

/// The work's start: counts the execution and checks that it runs alone for its key.
fn record_start(tally: &Tally, key: u64, strict: bool) -> Running<'_> {
    tally.executions.fetch_add(1, Ordering::Relaxed);
    if strict && tally.running[key as usize].fetch_add(1, Ordering::SeqCst) != 0 {
        tally.overlaps.fetch_add(1, Ordering::SeqCst);
    }
    Running { tally, key, strict }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.strict {
            self.tally.running[self.key as usize].fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The work's end: fails, panics or returns the key, as `fate` says.
fn record_end(running: Running<'_>, fate: u64) -> Result<u64, u64> {
    let (tally, key) = (running.tally, running.key);
    drop(running);
    match fate {
        0 => {
            tally.panics.fetch_add(1, Ordering::Relaxed);
            panic::panic_any(key)
        }
        1 | 2 => {
            tally.errors.fetch_add(1, Ordering::Relaxed);
            Err(key)
        }
        _ => Ok(key),
    }
}

fn check(tally: &Tally, key: u64, outcome: Result<u64, Error<u64>>) {
    let fits = match outcome {
        Ok(value) | Err(Error::Failed(value)) => value == key,
        Err(Error::Panicked(_) | Error::LeaderDropped) => true,
        Err(Error::Timeout) => {
            tally.timeouts.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(_) => false,
    };
    if !fits {
        tally.wrong.fetch_add(1, Ordering::SeqCst);
    }
}

/// Yields to the executor once.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// Polls `inner` at most `polls` times, then drops it: a cancellation that needs no clock.
struct CancelAfter<F> {
    inner: Option<Pin<Box<F>>>,
    polls: u64,
}

impl<F: Future> Future for CancelAfter<F> {
    type Output = Option<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(output) = inner.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        if self.polls == 0 {
            self.inner = None;
            return Poll::Ready(None);
        }
        self.polls -= 1;
        Poll::Pending
    }
}

/// Catches a panic that resumes in a leading caller's `poll`.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Option<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Some(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(None),
        }
    }
}

type Flights<Sp, Tm> = RuntimeGroup<u64, Result<u64, u64>, Sp, Tm>;

/// One async soaking task: random operations until `until`.
async fn soak_task<Sp, Tm>(
    strict: Flights<Sp, Tm>,
    loose: Flights<Sp, Tm>,
    tally: Arc<Tally>,
    progress: Arc<Progress>,
    slot: usize,
    until: Instant,
) where
    Sp: Spawn + Clone + Send + Sync + 'static,
    Tm: Timer + Clone + Send + Sync + 'static,
    Tm::Sleep: Send,
{
    let mut rng = Rng::new(slot as u64 + 1);
    while Instant::now() < until {
        let (on_strict, group) = if rng.below(4) == 0 {
            (false, &loose)
        } else {
            (true, &strict)
        };
        let key = if on_strict {
            rng.below(STRICT_KEYS)
        } else {
            rng.below(LOOSE_KEYS)
        };
        let fate = rng.below(20);
        let yields = rng.below(4);
        progress.enter(slot, key);
        tally.calls.fetch_add(1, Ordering::Relaxed);
        if on_strict {
            tally.strict_calls.fetch_add(1, Ordering::Relaxed);
        }
        let t = Arc::clone(&tally);
        let work = move || async move {
            let running = record_start(&t, key, on_strict);
            for _ in 0..yields {
                YieldNow(false).await;
            }
            record_end(running, fate)
        };
        match rng.below(10) {
            // Detached: runs to its end whoever leaves.
            0 => {
                let outcome = group.try_call_detached(&key, work).await;
                check(&tally, key, outcome);
            }
            // A waiter's (or leader's) timeout on the runtime's timer.
            1 => {
                let duration = Duration::from_micros(rng.below(500));
                let outcome = group.timeout(duration, group.try_call(&key, work));
                if let Some(outcome) = CatchUnwind(Box::pin(outcome)).await {
                    check(&tally, key, outcome);
                }
            }
            // Cancelled after a few polls: a dropped caller, leader or waiter.
            2 | 3 => {
                let call = CatchUnwind(Box::pin(group.try_call(&key, work)));
                let polls = rng.below(3);
                match (CancelAfter {
                    inner: Some(Box::pin(call)),
                    polls,
                })
                .await
                {
                    Some(Some(outcome)) => check(&tally, key, outcome),
                    Some(None) => {}
                    None => {
                        tally.cancelled.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ => {
                if let Some(outcome) = CatchUnwind(Box::pin(group.try_call(&key, work))).await {
                    check(&tally, key, outcome);
                }
            }
        }
        progress.leave(slot);
        if !on_strict && rng.below(8) == 0 {
            tally.forgets.fetch_add(1, Ordering::Relaxed);
            if rng.below(4) == 0 {
                loose.forget_all();
            } else {
                loose.forget(&rng.below(LOOSE_KEYS));
            }
        }
        YieldNow(false).await;
    }
}

fn quiet_panics() {
    static QUIET: OnceLock<()> = OnceLock::new();
    QUIET.get_or_init(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            // The soak's own panics carry their key (a u64); report anything else.
            if info.payload().downcast_ref::<u64>().is_none() {
                default(info);
            }
        }));
    });
}

/// Runs the async soak on one runtime; `spawn_all` spawns the tasks and waits for them.
fn soak_async<Sp, Tm>(
    name: &'static str,
    spawn_all: impl FnOnce(Vec<Pin<Box<dyn Future<Output = ()> + Send>>>),
) where
    Sp: Spawn + Clone + Default + Send + Sync + 'static,
    Tm: Timer + Clone + Default + Send + Sync + 'static,
    Tm::Sleep: Send,
{
    quiet_panics();
    let stats = Arc::new(Stats::new());
    let strict = Flights::<Sp, Tm>::new().with_observer(stats.clone());
    let loose = Flights::<Sp, Tm>::new();
    let tally = Arc::new(Tally::default());
    let progress = Progress::new(TASKS);
    let duration = soak_duration();
    progress.watch(name, duration + Duration::from_secs(60));
    let until = Instant::now() + duration;
    let tasks = (0..TASKS)
        .map(|slot| {
            Box::pin(soak_task(
                strict.clone(),
                loose.clone(),
                Arc::clone(&tally),
                Arc::clone(&progress),
                slot,
                until,
            )) as Pin<Box<dyn Future<Output = ()> + Send>>
        })
        .collect();
    spawn_all(tasks);
    // Detached work may still be finishing after its callers left.
    let settle = Instant::now();
    while strict.in_flight() + loose.in_flight() > 0 {
        assert!(
            settle.elapsed() < Duration::from_secs(30),
            "{name}: flights never ended"
        );
        thread::yield_now();
    }
    progress.finished.store(true, Ordering::SeqCst);
    verify(name, &tally, &stats);
}

/// Resident set size of the process in KiB (Linux), for the report.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn verify(name: &str, tally: &Tally, stats: &Stats) {
    let load = |c: &AtomicU64| c.load(Ordering::SeqCst);
    let snapshot = stats.snapshot();
    eprintln!(
        "soak {name}: {} calls, {} executions, {} errors, {} panics, {} timeouts, {} cancelled, {} forgets; \
         strict group: {} hits / {} misses; process RSS {} KiB",
        load(&tally.calls),
        load(&tally.executions),
        load(&tally.errors),
        load(&tally.panics),
        load(&tally.timeouts),
        load(&tally.cancelled),
        load(&tally.forgets),
        snapshot.hits,
        snapshot.misses,
        rss_kib().map_or_else(|| "unknown".to_string(), |kib| kib.to_string()),
    );
    assert_eq!(
        load(&tally.overlaps),
        0,
        "{name}: two executions at once for one key"
    );
    assert_eq!(
        load(&tally.wrong),
        0,
        "{name}: an outcome that does not fit its work"
    );
    assert!(load(&tally.calls) > 0, "{name}: the soak made no calls");
    assert_eq!(snapshot.active, 0, "{name}: flights still active");
    assert!(snapshot.hits + snapshot.misses > 0);
    assert!(
        snapshot.misses <= load(&tally.executions),
        "{name}: misses are executions"
    );
}

#[test]
fn soak_blocking() {
    let limit = soak_duration() + singleflight_tests::TEST_LIMIT;
    let _watchdog = singleflight_tests::watchdog!(limit);
    quiet_panics();
    let stats = Arc::new(Stats::new());
    let strict =
        singleflight_blocking::Group::<u64, Result<u64, u64>>::new().with_observer(stats.clone());
    let loose = singleflight_blocking::Group::<u64, Result<u64, u64>>::new();
    let tally = Tally::default();
    let threads = 8;
    let progress = Progress::new(threads);
    let duration = soak_duration();
    progress.watch("blocking", duration + Duration::from_secs(60));
    let until = Instant::now() + duration;
    thread::scope(|s| {
        for slot in 0..threads {
            let (strict, loose, tally, progress) = (&strict, &loose, &tally, &progress);
            s.spawn(move || {
                let mut rng = Rng::new(slot as u64 + 100);
                while Instant::now() < until {
                    let on_strict = rng.below(4) != 0;
                    let group = if on_strict { strict } else { loose };
                    let key = rng.below(if on_strict { STRICT_KEYS } else { LOOSE_KEYS });
                    let fate = rng.below(20);
                    let spins = rng.below(50);
                    progress.enter(slot, key);
                    tally.calls.fetch_add(1, Ordering::Relaxed);
                    if on_strict {
                        tally.strict_calls.fetch_add(1, Ordering::Relaxed);
                    }
                    let work = || {
                        let running = record_start(tally, key, on_strict);
                        // Busy for a moment without yielding the core: a yield per spin
                        // would hand it to the other soaks and starve this one.
                        for _ in 0..spins * 100 {
                            std::hint::spin_loop();
                        }
                        record_end(running, fate)
                    };
                    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
                        if rng.below(8) == 0 {
                            group.try_call_timeout(
                                &key,
                                Duration::from_micros(rng.below(200)),
                                work,
                            )
                        } else {
                            group.try_call(&key, work)
                        }
                    }));
                    if let Ok(outcome) = outcome {
                        check(tally, key, outcome);
                    }
                    progress.leave(slot);
                    if !on_strict && rng.below(8) == 0 {
                        tally.forgets.fetch_add(1, Ordering::Relaxed);
                        loose.forget(&rng.below(LOOSE_KEYS));
                    }
                }
            });
        }
    });
    progress.finished.store(true, Ordering::SeqCst);
    assert_eq!(strict.in_flight() + loose.in_flight(), 0);
    verify("blocking", &tally, &stats);
}

#[test]
fn soak_tokio_current_thread() {
    let limit = soak_duration() + singleflight_tests::TEST_LIMIT;
    let _watchdog = singleflight_tests::watchdog!(limit);
    soak_async::<singleflight_tokio::TokioSpawner, singleflight_tokio::TokioTimer>(
        "tokio current-thread",
        |tasks| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(async {
                let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
                for handle in handles {
                    handle.await.unwrap();
                }
            });
        },
    );
}

#[test]
fn soak_tokio_multi_thread() {
    let limit = soak_duration() + singleflight_tests::TEST_LIMIT;
    let _watchdog = singleflight_tests::watchdog!(limit);
    soak_async::<singleflight_tokio::TokioSpawner, singleflight_tokio::TokioTimer>(
        "tokio multi-thread",
        |tasks| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(async {
                let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
                for handle in handles {
                    handle.await.unwrap();
                }
            });
        },
    );
}

#[test]
fn soak_smol() {
    let limit = soak_duration() + singleflight_tests::TEST_LIMIT;
    let _watchdog = singleflight_tests::watchdog!(limit);
    soak_async::<singleflight_smol::SmolSpawner, singleflight_smol::SmolTimer>("smol", |tasks| {
        smol::block_on(async {
            let handles: Vec<_> = tasks.into_iter().map(smol::spawn).collect();
            for handle in handles {
                handle.await;
            }
        });
    });
}

#[test]
fn soak_async_std() {
    let limit = soak_duration() + singleflight_tests::TEST_LIMIT;
    let _watchdog = singleflight_tests::watchdog!(limit);
    soak_async::<singleflight_async_std::AsyncStdSpawner, singleflight_async_std::AsyncStdTimer>(
        "async-std",
        |tasks| {
            async_std::task::block_on(async {
                let handles: Vec<_> = tasks.into_iter().map(async_std::task::spawn).collect();
                for handle in handles {
                    handle.await;
                }
            });
        },
    );
}
