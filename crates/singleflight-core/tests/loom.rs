//! loom models of the leader/waiter state machine: every interleaving of a few threads, up to
//! a preemption bound, checked for lost wake-ups (loom reports a deadlock), double
//! executions, wrong outcomes and leaked flights.
//!
//! Run (release, so the exhaustive search finishes quickly):
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=4 \
//!     cargo test --release -p singleflight-core --test loom
//! ```
//!
//! CI uses `LOOM_MAX_PREEMPTIONS=4`: every schedule with at most four preemptions is explored
//! (about 20 s in release on two cores; 5 takes three minutes, 3 about a second).
#![cfg(loom)]

use std::sync::Arc;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use singleflight_core::{Entered, Error, Group, LeaderDropPolicy, PanicMessage, Waited};

// The workspace's one watchdog: a hang (a lost wake-up, say) fails this binary in bounded
// time instead of stalling the run.
#[path = "support/watchdog.rs"]
mod watchdog;
pub use watchdog::{TEST_LIMIT, Watchdog};

/// A hasher with fixed keys: loom replays every schedule and needs each run to make the
/// same choices, so a key must land in the same shard every time (the default hasher is
/// seeded afresh per group).
type Fixed = std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

type Flights = Group<u8, u32, Fixed>;

fn flights() -> Flights {
    Group::with_hasher(Fixed::default())
}

/// Runs the work for a caller of `key`, however it is registered, and returns its outcome.
/// Counts executions, and fails if two ever overlap.
fn call(
    group: &Flights,
    key: u8,
    value: u32,
    running: &AtomicUsize,
    runs: &AtomicUsize,
) -> Result<u32, Error> {
    let run = |leader: singleflight_core::Leader<&Flights>| {
        assert_eq!(
            running.fetch_add(1, Ordering::SeqCst),
            0,
            "two executions at once"
        );
        runs.fetch_add(1, Ordering::SeqCst);
        running.fetch_sub(1, Ordering::SeqCst);
        Ok(leader.complete(value))
    };
    match group.enter(&key)? {
        Entered::Leader(leader) => run(leader),
        Entered::Waiter(waiter) => match waiter.wait() {
            Waited::Outcome(outcome) => outcome,
            Waited::Promoted(leader) => run(leader),
        },
        Entered::Reused(_) => unreachable!("no reuse window"),
    }
}

struct Counters {
    running: AtomicUsize,
    runs: AtomicUsize,
}

fn counters() -> Arc<Counters> {
    Arc::new(Counters {
        running: AtomicUsize::new(0),
        runs: AtomicUsize::new(0),
    })
}

/// Two callers of one key: each gets a value from an execution that ran while it was
/// registered; the work runs once if they overlapped, twice if not; nothing leaks.
#[test]
fn duplicate_suppression() {
    let _watchdog = watchdog!();
    loom::model(|| {
        let group = Arc::new(flights());
        let c = counters();
        let other = {
            let (group, c) = (group.clone(), c.clone());
            thread::spawn(move || call(&group, 1, 2, &c.running, &c.runs))
        };
        let mine = call(&group, 1, 1, &c.running, &c.runs).unwrap();
        let theirs = other.join().unwrap().unwrap();
        let runs = c.runs.load(Ordering::SeqCst);
        assert!(runs == 1 || runs == 2);
        if runs == 1 {
            assert_eq!(mine, theirs, "one execution, one shared value");
        }
        assert_eq!(group.in_flight(), 0);
    });
}

/// A caller registering while the leader publishes either joins and gets the value, or
/// starts a new flight: it never hangs and never misses the outcome.
#[test]
fn waiter_registers_while_leader_publishes() {
    let _watchdog = watchdog!();
    loom::model(|| {
        let group = Arc::new(flights());
        let Ok(Entered::Leader(leader)) = group.enter(&1) else {
            panic!("leads")
        };
        let joiner = {
            let group = group.clone();
            thread::spawn(move || match group.enter(&1).unwrap() {
                Entered::Leader(leader) => leader.complete(20),
                Entered::Waiter(waiter) => match waiter.wait() {
                    Waited::Outcome(outcome) => outcome.unwrap(),
                    Waited::Promoted(_) => panic!("the leader completes; nobody is promoted"),
                },
                Entered::Reused(_) => unreachable!("no reuse window"),
            })
        };
        assert_eq!(leader.complete(10), 10);
        let got = joiner.join().unwrap();
        assert!(got == 10 || got == 20);
        assert_eq!(group.in_flight(), 0);
    });
}

/// Leader dropped with two waiters: exactly one is promoted and runs the work, the other
/// receives its value; never two executions at once.
#[test]
fn leader_dropped_takeover() {
    let _watchdog = watchdog!();
    loom::model(|| {
        let group = Arc::new(flights());
        let c = counters();
        let Ok(Entered::Leader(leader)) = group.enter(&1) else {
            panic!("leads")
        };
        let waiters: Vec<_> = (0..2)
            .map(|i| {
                let Ok(Entered::Waiter(waiter)) = group.enter_arc(&1) else {
                    panic!("waits")
                };
                let c = c.clone();
                thread::spawn(move || match waiter.wait() {
                    Waited::Outcome(outcome) => outcome.unwrap(),
                    Waited::Promoted(leader) => {
                        assert_eq!(c.running.fetch_add(1, Ordering::SeqCst), 0);
                        c.runs.fetch_add(1, Ordering::SeqCst);
                        c.running.fetch_sub(1, Ordering::SeqCst);
                        leader.complete(100 + i)
                    }
                })
            })
            .collect();
        drop(leader);
        let values: Vec<_> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
        assert_eq!(c.runs.load(Ordering::SeqCst), 1);
        assert_eq!(values[0], values[1]);
        assert_eq!(group.in_flight(), 0);
    });
}

/// Leader dropped under `FailWaiters`: the waiter gets `LeaderDropped`, the flight ends.
#[test]
fn leader_dropped_fail_waiters() {
    let _watchdog = watchdog!();
    loom::model(|| {
        let group = Arc::new(flights().with_leader_drop_policy(LeaderDropPolicy::FailWaiters));
        let Ok(Entered::Leader(leader)) = group.enter(&1) else {
            panic!("leads")
        };
        let Ok(Entered::Waiter(waiter)) = group.enter_arc(&1) else {
            panic!("waits")
        };
        let waiting = thread::spawn(move || {
            matches!(waiter.wait(), Waited::Outcome(Err(Error::LeaderDropped)))
        });
        drop(leader);
        assert!(waiting.join().unwrap());
        assert_eq!(group.in_flight(), 0);
    });
}

/// A panicking leader hands its waiter `Panicked` with the message.
#[test]
fn leader_panic_reaches_waiters() {
    let _watchdog = watchdog!();
    loom::model(|| {
        let group = Arc::new(flights());
        let Ok(Entered::Leader(leader)) = group.enter(&1) else {
            panic!("leads")
        };
        let Ok(Entered::Waiter(waiter)) = group.enter_arc(&1) else {
            panic!("waits")
        };
        let waiting = thread::spawn(move || match waiter.wait() {
            Waited::Outcome(Err(Error::Panicked(message))) => message.as_str() == "boom",
            _ => false,
        });
        leader.panicked(PanicMessage::new("boom"));
        assert!(waiting.join().unwrap());
        assert_eq!(group.in_flight(), 0);
    });
}

/// `forget` during a flight, racing a new caller and the old flight's completion: the old
/// flight never removes the new one, and the new caller gets its own flight's value or the
/// old one's, never nothing.
#[test]
fn forget_during_flight() {
    let _watchdog = watchdog!();
    loom::model(|| {
        let group = Arc::new(flights());
        let Ok(Entered::Leader(old)) = group.enter(&1) else {
            panic!("leads")
        };
        let forgetter = {
            let group = group.clone();
            thread::spawn(move || {
                group.forget(&1);
            })
        };
        let newcomer = {
            let group = group.clone();
            thread::spawn(move || match group.enter(&1).unwrap() {
                Entered::Leader(leader) => {
                    // A new flight: it must still be in the map after the old one finished.
                    let value = leader.complete(2);
                    (value, true)
                }
                Entered::Waiter(waiter) => match waiter.wait() {
                    Waited::Outcome(outcome) => (outcome.unwrap(), false),
                    Waited::Promoted(_) => panic!("nobody is promoted"),
                },
                Entered::Reused(_) => unreachable!("no reuse window"),
            })
        };
        old.complete(1);
        forgetter.join().unwrap();
        let (value, led) = newcomer.join().unwrap();
        assert_eq!(value, if led { 2 } else { 1 });
        assert_eq!(group.in_flight(), 0);
    });
}

/// A waiter leaving (its timeout, its task dropped) while the leader completes: the other
/// waiter still gets the value, and nothing leaks.
#[test]
fn waiter_leaves_while_leader_completes() {
    let _watchdog = watchdog!();
    loom::model(|| {
        let group = Arc::new(flights());
        let Ok(Entered::Leader(leader)) = group.enter(&1) else {
            panic!("leads")
        };
        let Ok(Entered::Waiter(leaving)) = group.enter_arc(&1) else {
            panic!("waits")
        };
        let Ok(Entered::Waiter(staying)) = group.enter_arc(&1) else {
            panic!("waits")
        };
        let leaver = thread::spawn(move || drop(leaving));
        let stayer = thread::spawn(move || matches!(staying.wait(), Waited::Outcome(Ok(5))));
        leader.complete(5);
        leaver.join().unwrap();
        assert!(stayer.join().unwrap());
        assert_eq!(group.in_flight(), 0);
    });
}

/// The last callers leaving together (leader dropped, waiter dropped) remove the entry,
/// whichever goes first; a promotion to a waiter that is leaving is passed on or ends the
/// flight.
#[test]
fn last_callers_leaving_remove_the_entry() {
    let _watchdog = watchdog!();
    loom::model(|| {
        let group = Arc::new(flights());
        let Ok(Entered::Leader(leader)) = group.enter(&1) else {
            panic!("leads")
        };
        let Ok(Entered::Waiter(waiter)) = group.enter_arc(&1) else {
            panic!("waits")
        };
        let leaver = thread::spawn(move || drop(waiter));
        drop(leader);
        leaver.join().unwrap();
        assert_eq!(group.in_flight(), 0);
    });
}

/// Wakes a loom thread parked in [`wait_async`].
struct Unpark(thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Waits like `Waiter::wait`, but through `Waiter::poll` (the async path, which leaves a
/// waker in the flight instead of listening to its event): polls, and parks until woken.
fn wait_async<G: singleflight_core::GroupRef>(mut waiter: singleflight_core::Waiter<G>) -> Waited<G>
where
    G::Value: Clone,
{
    let waker = std::task::Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if let std::task::Poll::Ready(waited) = waiter.poll(&mut cx) {
            return waited;
        }
        thread::park();
    }
}

/// An async waiter polled while the leader publishes: its waker is either registered before
/// the outcome (and woken) or the outcome is already there; it never hangs.
#[test]
fn async_waiter_while_leader_publishes() {
    let _watchdog = watchdog!();
    loom::model(|| {
        let group = Arc::new(flights());
        let Ok(Entered::Leader(leader)) = group.enter(&1) else {
            panic!("leads")
        };
        let Ok(Entered::Waiter(waiter)) = group.enter_arc(&1) else {
            panic!("waits")
        };
        let waiting = thread::spawn(move || matches!(wait_async(waiter), Waited::Outcome(Ok(7))));
        assert_eq!(leader.complete(7), 7);
        assert!(waiting.join().unwrap());
        assert_eq!(group.in_flight(), 0);
    });
}

/// Leader dropped with an async and a blocking waiter: exactly one is promoted (and woken,
/// whichever way it waits) and runs the work, the other receives its value.
#[test]
fn leader_dropped_takeover_async_and_blocking() {
    let _watchdog = watchdog!();
    loom::model(|| {
        let group = Arc::new(flights());
        let c = counters();
        let Ok(Entered::Leader(leader)) = group.enter(&1) else {
            panic!("leads")
        };
        let waiters: Vec<_> = (0..2u32)
            .map(|i| {
                let Ok(Entered::Waiter(waiter)) = group.enter_arc(&1) else {
                    panic!("waits")
                };
                let c = c.clone();
                thread::spawn(move || {
                    let waited = if i == 0 {
                        wait_async(waiter)
                    } else {
                        waiter.wait()
                    };
                    match waited {
                        Waited::Outcome(outcome) => outcome.unwrap(),
                        Waited::Promoted(leader) => {
                            assert_eq!(c.running.fetch_add(1, Ordering::SeqCst), 0);
                            c.runs.fetch_add(1, Ordering::SeqCst);
                            c.running.fetch_sub(1, Ordering::SeqCst);
                            leader.complete(100 + i)
                        }
                    }
                })
            })
            .collect();
        drop(leader);
        let values: Vec<_> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
        assert_eq!(c.runs.load(Ordering::SeqCst), 1);
        assert_eq!(values[0], values[1]);
        assert_eq!(group.in_flight(), 0);
    });
}

/// Leader dropped under `FailWaiters` with an async waiter: it is woken with `LeaderDropped`.
#[test]
fn leader_dropped_fail_async_waiter() {
    let _watchdog = watchdog!();
    loom::model(|| {
        let group = Arc::new(flights().with_leader_drop_policy(LeaderDropPolicy::FailWaiters));
        let Ok(Entered::Leader(leader)) = group.enter(&1) else {
            panic!("leads")
        };
        let Ok(Entered::Waiter(waiter)) = group.enter_arc(&1) else {
            panic!("waits")
        };
        let waiting = thread::spawn(move || {
            matches!(
                wait_async(waiter),
                Waited::Outcome(Err(Error::LeaderDropped))
            )
        });
        drop(leader);
        assert!(waiting.join().unwrap());
        assert_eq!(group.in_flight(), 0);
    });
}

/// Runs `future` to completion on this loom thread: polls, and parks until woken.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let waker = std::task::Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}

/// Pending once (waking its task at once), then ready: work that is still running when the
/// other caller arrives, in some interleavings.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Two `Group::call` futures of one key. A call that joins leaves its task's waker in the
/// flight as it joins and sleeps without looking again, so the leader's publish must find
/// that waker in every interleaving (a lost wake-up is a deadlock to loom).
#[test]
fn call_futures_join_with_their_waker() {
    let _watchdog = watchdog!();
    loom::model(|| {
        let group = Arc::new(flights());
        let c = counters();
        let work = |c: Arc<Counters>| {
            move || async move {
                c.runs.fetch_add(1, Ordering::SeqCst);
                YieldOnce(false).await;
                7
            }
        };
        let other = {
            let (group, c) = (group.clone(), c.clone());
            thread::spawn(move || block_on(group.call(&1, work(c))))
        };
        assert_eq!(block_on(group.call(&1, work(c.clone()))), Ok(7));
        assert_eq!(other.join().unwrap(), Ok(7));
        assert!((1..=2).contains(&c.runs.load(Ordering::SeqCst)));
        assert_eq!(group.in_flight(), 0);
    });
}

// Blocking deadlines are not modelled here: loom models no time, so a timed wait on the
// flight's condition variable is left out of loom builds. The race of a deadline with a
// publish is the async `elapsed_timeout_races_the_publish` below, and the blocking final
// re-check has its stress test (tests/tests/timer_races.rs).

/// `forget_all` racing a new caller and the old flight's completion: the old flight never
/// removes the new one, and the new caller gets a value, never nothing.
#[test]
fn forget_all_during_flight() {
    let _watchdog = watchdog!();
    loom::model(|| {
        let group = Arc::new(flights());
        let c = counters();
        let Ok(Entered::Leader(old)) = group.enter(&1) else {
            panic!("leads")
        };
        let forgetter = {
            let group = Arc::clone(&group);
            thread::spawn(move || group.forget_all())
        };
        let newcomer = {
            let (group, c) = (Arc::clone(&group), Arc::clone(&c));
            thread::spawn(move || call(&group, 1, 2, &c.running, &c.runs).unwrap())
        };
        old.complete(1);
        assert!(forgetter.join().unwrap() <= 1);
        assert!(matches!(newcomer.join().unwrap(), 1 | 2));
        assert_eq!(group.in_flight(), 0);
    });
}

/// A value whose `Clone` panics on one chosen clone (counted across the model's threads).
#[derive(Debug)]
struct Fragile {
    value: u32,
    clones: Arc<AtomicUsize>,
    panic_at: usize,
}

impl Clone for Fragile {
    fn clone(&self) -> Self {
        let n = self.clones.fetch_add(1, Ordering::SeqCst);
        assert_ne!(n, self.panic_at, "clone #{n} panics");
        Self {
            value: self.value,
            clones: Arc::clone(&self.clones),
            panic_at: self.panic_at,
        }
    }
}

/// The leader's clone panics as it publishes: the waiter still gets the value (the
/// original), the leader's call panics, and the key is free. (The core catches the panic,
/// publishes, then resumes it: nothing wakes a waiter from an unwinding thread.)
#[test]
fn leader_clone_panics_at_publication() {
    let _watchdog = watchdog!();
    loom::model(|| {
        let group = Arc::new(Group::<u8, Fragile, Fixed>::with_hasher(Fixed::default()));
        let Ok(Entered::Leader(leader)) = group.enter(&1) else {
            panic!("leads")
        };
        let Ok(Entered::Waiter(waiter)) = group.enter_arc(&1) else {
            panic!("waits")
        };
        let waiting = thread::spawn(move || match waiter.wait() {
            Waited::Outcome(Ok(fragile)) => fragile.value,
            other => panic!("the waiter gets the value, not {other:?}"),
        });
        let value = Fragile {
            value: 9,
            clones: Arc::new(AtomicUsize::new(0)),
            panic_at: 0,
        };
        let completed =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| leader.complete(value)));
        assert!(completed.is_err(), "the leader's clone panicked");
        assert_eq!(waiting.join().unwrap(), 9);
        assert_eq!(group.in_flight(), 0);
        assert!(matches!(group.enter(&1), Ok(Entered::Leader(_))));
    });
}

// A waiter's own clone panicking is not modelled here: loom runs every model thread on
// one OS thread, so while one model thread unwinds, the locks the others release look
// poisoned to loom. The hostile-types suite (tests/tests/hostile.rs) runs that case on every
// front-end, and the model test (tests/model.rs) with random interleavings of calls.

/// A spawner for detached work under loom: each task runs on a new model thread.
struct LoomSpawn;

impl singleflight_core::rt::Spawn for LoomSpawn {
    fn spawn<F>(&self, future: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        thread::spawn(move || block_on(future));
    }
}

/// A detached call and a plain caller of one key: the work runs once, on its own thread;
/// the launcher leads (it is not counted among the waiters) and both get the value.
#[test]
fn detached_call_and_a_joining_caller() {
    let _watchdog = watchdog!();
    use singleflight_core::rt::{Detached, SpawnWork};
    loom::model(|| {
        let group = Arc::new(flights());
        let runs = Arc::new(AtomicUsize::new(0));
        let launcher = {
            let (group, runs) = (Arc::clone(&group), Arc::clone(&runs));
            thread::spawn(move || {
                let work = SpawnWork::new(LoomSpawn, move || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    3
                });
                block_on(Detached::new(&group, &1, work))
            })
        };
        let joined = {
            let (group, runs) = (Arc::clone(&group), Arc::clone(&runs));
            thread::spawn(move || {
                block_on(group.call(&1, || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    3
                }))
            })
        };
        assert_eq!(launcher.join().unwrap(), Ok(3));
        assert_eq!(joined.join().unwrap(), Ok(3));
        assert!(matches!(runs.load(Ordering::SeqCst), 1 | 2));
        assert_eq!(group.in_flight(), 0);
    });
}

/// Sleeps that are over at once: a timeout that has already passed when first polled.
struct Elapsed;

impl singleflight_core::rt::Timer for Elapsed {
    type Sleep = std::future::Ready<()>;

    fn sleep(&self, _: std::time::Duration) -> Self::Sleep {
        std::future::ready(())
    }
}

/// A caller whose timeout has already passed, racing the leader's publish: it returns the
/// value (an outcome that is ready when the timer fires wins) or `Timeout`, never hangs,
/// and leaves nothing behind.
#[test]
fn elapsed_timeout_races_the_publish() {
    let _watchdog = watchdog!();
    use singleflight_core::rt::Timeout;
    loom::model(|| {
        let group = Arc::new(flights());
        let Ok(Entered::Leader(leader)) = group.enter(&1) else {
            panic!("leads")
        };
        let caller = {
            let group = Arc::clone(&group);
            thread::spawn(move || {
                let call = group.call(&1, || async { 0 });
                block_on(Timeout::new(call, Elapsed, std::time::Duration::ZERO, None))
            })
        };
        leader.complete(6);
        assert!(matches!(
            caller.join().unwrap(),
            Ok(6) | Ok(0) | Err(Error::Timeout)
        ));
        assert_eq!(group.in_flight(), 0);
    });
}

/// A clock the model moves by hand (loom's atomic, so its reads are part of the schedule).
#[derive(Clone, Default)]
struct Manual(Arc<loom::sync::atomic::AtomicU64>);

impl singleflight_core::rt::Clock for Manual {
    fn now(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

/// The window a kept value is reused for, in the clock's seconds.
const WINDOW: u64 = 10;

/// One caller of a group with a reuse window: `Ok((value, reused))`, after running the work
/// (returning `value`) if it leads or is promoted. A reused value must be younger than the
/// window.
fn call_reusing(
    group: &Group<u8, u32, Fixed>,
    value: u32,
    runs: &AtomicUsize,
) -> Result<(u32, bool), Error> {
    let run = |leader: singleflight_core::Leader<&Group<u8, u32, Fixed>>| {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok((leader.complete(value), false))
    };
    match group.enter(&1)? {
        Entered::Leader(leader) => run(leader),
        Entered::Waiter(waiter) => match waiter.wait() {
            Waited::Outcome(outcome) => outcome.map(|value| (value, false)),
            Waited::Promoted(leader) => run(leader),
        },
        Entered::Reused(reused) => {
            assert!(
                reused.age() < std::time::Duration::from_secs(WINDOW),
                "a value is reused only inside its window (age {:?})",
                reused.age()
            );
            Ok((reused.into_value(), true))
        }
    }
}

/// A kept value expiring (the clock passes its window) while two callers arrive: each
/// gets the kept value (only while it is inside the window), joins the one new flight, or
/// leads it; the work runs at most once more, and the group ends with no flight and at
/// most one kept value.
#[test]
fn expiry_races_a_join() {
    let _watchdog = watchdog!();
    loom::model(|| {
        let clock = Manual::default();
        let group = Arc::new(
            Group::<u8, u32, Fixed>::with_hasher(Fixed::default())
                .reuse_for(std::time::Duration::from_secs(WINDOW), clock.clone()),
        );
        let Ok(Entered::Leader(first)) = group.enter(&1) else {
            panic!("the first caller leads")
        };
        assert_eq!(first.complete(1), 1);
        let runs = Arc::new(AtomicUsize::new(0));
        let expire = {
            let clock = clock.clone();
            thread::spawn(move || clock.0.fetch_add(WINDOW, Ordering::SeqCst))
        };
        let other = {
            let (group, runs) = (group.clone(), runs.clone());
            thread::spawn(move || call_reusing(&group, 2, &runs))
        };
        let mine = call_reusing(&group, 3, &runs).expect("a value, never an error");
        let theirs = other.join().unwrap().expect("a value, never an error");
        expire.join().unwrap();
        let runs = runs.load(Ordering::SeqCst);
        assert!(runs <= 1, "the work ran {runs} more times");
        for (value, reused) in [mine, theirs] {
            if reused {
                // The first flight's value, or the new flight's once it was kept.
                assert!(value == 1 || runs == 1, "reused {value}");
            } else {
                assert!(value == 2 || value == 3, "got {value} from a flight");
            }
        }
        assert_eq!(group.in_flight(), 0);
        assert!(group.reusable() <= 1);
    });
}

/// Keeps the refresh a call hands to its spawner, for the model to run on a thread of its
/// choosing.
#[derive(Clone, Default)]
struct Held(Arc<std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>>);

impl singleflight_core::rt::SpawnBlocking for Held {
    fn spawn_blocking<F>(&self, f: F)
    where
        F: FnOnce() + Send + 'static,
    {
        let previous = self.0.lock().unwrap().replace(Box::new(f));
        assert!(previous.is_none(), "one refresh at a time");
    }
}

/// `forget` racing a refresh's publication: a refresh that started before the forget never
/// leaves its value reusable after it, whichever comes first; the next call leads.
#[test]
fn forget_races_a_refresh_publication() {
    let _watchdog = watchdog!();
    loom::model(|| {
        let clock = Manual::default();
        let group = Arc::new(
            Group::<u8, u32, Fixed>::with_hasher(Fixed::default())
                .reuse_for(std::time::Duration::from_secs(WINDOW), clock.clone())
                .refresh_after(std::time::Duration::from_secs(WINDOW / 2)),
        );
        let held = Held::default();
        let refreshing = |value: u32| {
            group.call_here_refreshing(&1, None, move || value, held.clone(), |_| false)
        };
        assert_eq!(refreshing(1).0, Ok(1));
        clock.0.store(WINDOW / 2, Ordering::SeqCst);
        let (value, role) = refreshing(2);
        assert_eq!(value, Ok(1), "past the threshold: the kept value at once");
        assert!(role.is_reused());
        let refresh = held.0.lock().unwrap().take().expect("a refresh started");
        let refresher = thread::spawn(refresh);
        let forgetter = {
            let group = group.clone();
            thread::spawn(move || {
                group.forget(&1);
            })
        };
        refresher.join().unwrap();
        forgetter.join().unwrap();
        assert_eq!(group.in_flight(), 0);
        assert_eq!(
            group.reusable(),
            0,
            "the refresh stored nothing after the forget"
        );
        let (value, role) = refreshing(3);
        assert_eq!(value, Ok(3), "the next call leads");
        assert!(!role.is_reused(), "{role:?}");
    });
}
