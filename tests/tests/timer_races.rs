//! Outcomes against timers: when a call's outcome and its timeout are both there, the
//! outcome wins.
//!
//! * On every async front-end, a timed call whose outcome is ready when its timer fires
//!   resolves to the outcome: a leader whose work is ready at once under a zero timeout, and
//!   a waiter (or the caller of detached work) whose flight published before the timer fired
//!   and who is polled only afterwards. tokio's clock is paused; smol's and async-std's
//!   timers are real, and the tests wait (by observing the clock, not by sleeping) until
//!   they have fired.
//! * The blocking equivalent: a waiter whose deadline passed after its flight published
//!   still takes the outcome.
//! * A blocking deadline that passes as the outcome lands: many rounds in which the work
//!   takes as long as the waiter's deadline gives it. The flight is published while the
//!   waiter blocks, and its wake-up is held back until the waiter returns; every waiter
//!   whose flight published before its deadline must return the outcome, never `Timeout`.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use singleflight_core::{Entered, Error, Group, Waited};
use singleflight_tests::{PATIENCE, wait_until};

fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// Runs `body` on a current-thread tokio runtime with a paused clock.
fn tokio_paused<F: Future<Output = ()>>(body: F) {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("build a runtime")
        .block_on(body);
}

/// Lets a timer of `duration`, armed no later than `armed`, fire: tokio's paused clock is
/// advanced; a real clock is watched until it has passed the timer's deadline.
async fn fire_timer(paused: bool, armed: Instant, duration: Duration) {
    if paused {
        tokio::time::advance(duration + Duration::from_millis(1)).await;
    } else {
        let fires = armed + duration;
        singleflight_conformance::wait_until("the timer fires", || Instant::now() > fires).await;
    }
}

/// The rule on one async front-end: `$krate` names the crate, `$block_on` runs a test body,
/// `$paused` says whether that body runs on a paused clock.
macro_rules! ready_outcome_wins {
    ($name:ident, $krate:ident, $block_on:expr, $paused:expr) => {
        mod $name {
            use super::*;
            use singleflight_core::CallFuture as _;
            use $krate::Group;

            const TIMER: Duration = Duration::from_millis(10);

            /// A leader whose work is ready at its first poll beats a zero timeout, for
            /// `call`, `try_call` and a failing `try_call`, and reports its role.
            #[test]
            fn a_leader_ready_at_once_beats_a_zero_timeout() {
                let _watchdog = singleflight_tests::watchdog!();
                $block_on(async {
                    let group = Group::<String, u32>::new();
                    assert_eq!(
                        group
                            .call_timeout("k", Duration::ZERO, || async { 7 })
                            .await,
                        Ok(7)
                    );
                    let timed = group.timeout(Duration::ZERO, group.call("k", || async { 8 }));
                    assert_eq!(
                        timed.with_role().await,
                        (Ok(8), singleflight_core::Role::Leader { shared: false })
                    );

                    let fallible = Group::<String, Result<u32, String>>::new();
                    assert_eq!(
                        fallible
                            .try_call_timeout("k", Duration::ZERO, || async { Ok(9) })
                            .await,
                        Ok(9)
                    );
                    assert_eq!(
                        fallible
                            .try_call_timeout("k", Duration::ZERO, || async {
                                Err("refused".to_string())
                            })
                            .await,
                        Err(Error::Failed("refused".to_string()))
                    );
                    assert_eq!(group.in_flight(), 0);
                    assert_eq!(fallible.in_flight(), 0);
                });
            }

            /// A waiter whose flight published, and whose timer fired, before it is polled
            /// again takes the outcome.
            #[test]
            fn a_waiter_takes_an_outcome_published_before_its_timer_fired() {
                let _watchdog = singleflight_tests::watchdog!();
                $block_on(async {
                    let group = Group::<String, u32>::new();
                    let release = singleflight_tests::Gate::new();
                    let mut leader = pin!(group.call("k", || async {
                        release.opened().await;
                        1
                    }));
                    assert!(poll_once(leader.as_mut()).is_pending());
                    let mut waiter = pin!(group.call_timeout("k", TIMER, || async { 2 }));
                    assert!(poll_once(waiter.as_mut()).is_pending());
                    let armed = Instant::now();
                    assert_eq!(group.waiters("k"), 1);

                    release.open();
                    assert_eq!(poll_once(leader.as_mut()), Poll::Ready(Ok(1)));
                    fire_timer($paused, armed, TIMER).await;
                    assert_eq!(poll_once(waiter.as_mut()), Poll::Ready(Ok(1)));
                    assert_eq!(group.in_flight(), 0);
                });
            }

            /// The caller of detached work whose work finished, and whose timer fired,
            /// before it is polled again takes the outcome.
            #[test]
            fn a_detached_caller_takes_an_outcome_published_before_its_timer_fired() {
                let _watchdog = singleflight_tests::watchdog!();
                $block_on(async {
                    let group = Group::<String, u32>::new();
                    let release = singleflight_tests::Gate::new();
                    let gate = release.clone();
                    let mut caller = pin!(group.timeout(
                        TIMER,
                        group.call_detached("k", move || async move {
                            gate.opened().await;
                            3
                        })
                    ));
                    assert!(poll_once(caller.as_mut()).is_pending());
                    let armed = Instant::now();

                    release.open();
                    singleflight_conformance::wait_until("the detached work ends", || {
                        group.in_flight() == 0
                    })
                    .await;
                    fire_timer($paused, armed, TIMER).await;
                    assert_eq!(poll_once(caller.as_mut()), Poll::Ready(Ok(3)));
                });
            }
        }
    };
}

ready_outcome_wins!(tokio_paused_clock, singleflight_tokio, tokio_paused, true);
ready_outcome_wins!(smol, singleflight_smol, ::smol::block_on, false);
ready_outcome_wins!(
    async_std,
    singleflight_async_std,
    ::async_std::task::block_on,
    false
);

/// The blocking equivalent: a waiter whose flight published before its deadline passed takes
/// the outcome, even though the deadline has passed by the time it waits.
#[test]
fn a_blocking_waiter_takes_an_outcome_published_before_its_deadline_passed() {
    let _watchdog = singleflight_tests::watchdog!();
    let group = Group::<String, u32>::new();
    let Ok(Entered::Leader(leader)) = group.enter("k") else {
        panic!("the first caller leads")
    };
    let Ok(Entered::Waiter(waiter)) = group.enter("k") else {
        panic!("the second caller waits")
    };
    assert_eq!(leader.complete(5), 5);
    let deadline = Instant::now();
    wait_until("the deadline passes", || Instant::now() > deadline);
    match waiter.wait_deadline(deadline) {
        Some(Waited::Outcome(Ok(5))) => {}
        other => panic!("a waiter whose outcome was there got {other:?}"),
    }
    assert_eq!(group.in_flight(), 0);

    // The blocking front-end: a leader's deadline bounds only waiting, never its own work.
    let group = singleflight_blocking::Group::<String, u32>::new();
    let (output, role) = group.request("k").with_role().deadline(deadline).call(|| 6);
    assert_eq!(
        (output, role),
        (Ok(6), singleflight_blocking::Role::Leader { shared: false })
    );
}

/// Holds the thread that publishes a flight inside the wake-up of an async waiter of that
/// flight (after the outcome is in, before blocked waiters are notified), until the blocked
/// waiter under test has returned; records when the outcome was in.
#[derive(Default)]
struct HoldPublisher {
    published: Mutex<Option<Instant>>,
    returned: Mutex<bool>,
    returned_changed: Condvar,
}

impl HoldPublisher {
    fn waiter_returned(&self) {
        *self.returned.lock().unwrap() = true;
        self.returned_changed.notify_all();
    }
}

impl Wake for HoldPublisher {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.published
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now);
        let returned = self.returned.lock().unwrap();
        let (_returned, timeout) = self
            .returned_changed
            .wait_timeout_while(returned, PATIENCE, |returned| !*returned)
            .unwrap();
        assert!(!timeout.timed_out(), "the blocked waiter never returned");
    }
}

/// What one round of the deadline race showed.
#[derive(Debug, Default)]
struct Tally {
    rounds: usize,
    /// Rounds whose flight published before the waiter's deadline and whose waiter came back
    /// through its deadline (not from a check before blocking): the rounds that test the
    /// rule.
    at_the_deadline: usize,
    /// Waiters that got `Timeout` although their flight published before their deadline.
    lost: Vec<usize>,
}

/// The work takes as long as the waiter's deadline gives it, less a small offset that varies
/// from round to round, so that its outcome lands around the moment the waiter gives up.
fn race_round(round: usize, tally: &mut Tally) {
    const DEADLINE: Duration = Duration::from_millis(3);
    const OFFSETS_MICROS: [u64; 6] = [0, 20, 60, 150, 400, 1000];

    let group = Group::<usize, usize>::new();
    let hold = Arc::new(HoldPublisher::default());
    let Ok(Entered::Leader(leader)) = group.enter(&round) else {
        panic!("the first caller leads")
    };
    let Ok(Entered::Waiter(mut async_waiter)) = group.enter(&round) else {
        panic!("the second caller waits")
    };
    let waker = Waker::from(Arc::clone(&hold));
    assert!(
        async_waiter
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );

    let (deadline_tx, deadline_rx) = std::sync::mpsc::channel();
    let (deadline, waited, returned) = thread::scope(|s| {
        let blocked = s.spawn(|| {
            let Ok(Entered::Waiter(waiter)) = group.enter(&round) else {
                panic!("the third caller waits")
            };
            // The deadline counts from the moment this caller joined.
            let deadline = Instant::now() + DEADLINE;
            deadline_tx
                .send(deadline)
                .expect("the round is waiting for it");
            let waited = waiter.wait_deadline(deadline);
            let returned = Instant::now();
            hold.waiter_returned();
            (waited, returned)
        });
        let deadline = deadline_rx
            .recv_timeout(PATIENCE)
            .expect("the blocked waiter joins");
        let offset = Duration::from_micros(OFFSETS_MICROS[round % OFFSETS_MICROS.len()]);
        let done = deadline.checked_sub(offset).unwrap_or(deadline);
        while Instant::now() < done {
            std::hint::spin_loop();
        }
        assert_eq!(leader.complete(round), round);
        let (waited, returned) = blocked.join().expect("the blocked waiter does not panic");
        (deadline, waited, returned)
    });
    let published = hold
        .published
        .lock()
        .unwrap()
        .expect("publishing woke the async waiter");
    match async_waiter.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Waited::Outcome(Ok(value))) => assert_eq!(value, round),
        other => panic!("round {round}: the async waiter got {other:?}"),
    }

    tally.rounds += 1;
    if published < deadline {
        match waited {
            Some(Waited::Outcome(Ok(value))) => {
                assert_eq!(value, round);
                if returned >= deadline {
                    tally.at_the_deadline += 1;
                }
            }
            None => tally.lost.push(round),
            Some(other) => panic!("round {round}: the blocked waiter got {other:?}"),
        }
    }
    assert_eq!(group.in_flight(), 0);
}

#[test]
fn a_blocking_deadline_that_passes_as_the_outcome_lands_still_takes_it() {
    const WANTED: usize = 25;
    const MAX_ROUNDS: usize = 2_000;
    let _watchdog = singleflight_tests::watchdog!();
    let mut tally = Tally::default();
    let start = Instant::now();
    while tally.at_the_deadline < WANTED
        && tally.lost.is_empty()
        && tally.rounds < MAX_ROUNDS
        && start.elapsed() < PATIENCE
    {
        race_round(tally.rounds, &mut tally);
    }
    println!("{tally:?}");
    assert!(
        tally.lost.is_empty(),
        "{} waiters got Timeout although their flight published before their deadline \
         (rounds {:?}); {tally:?}",
        tally.lost.len(),
        tally.lost
    );
    assert!(
        tally.at_the_deadline >= WANTED,
        "too few rounds reached the deadline to test anything: {tally:?}"
    );
}
