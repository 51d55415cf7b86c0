//! The semantics contract through `#[coalesce]`-generated `async fn`s, on every async
//! front-end: one suite, instantiated per runtime by [`suite!`]. Callers are ordered by gates
//! and by waiter counts read through the generated `<fn>_group()` accessors, never by
//! sleeping; the only durations are the timeouts the timeout tests check and the reuse
//! windows (one that never ends during a test, one of zero, and one on tokio's paused clock).

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use singleflight_tests::Gate;
use singleflight_tests::setups::Runtime;

/// A spawned caller whose outcome (or panic) can be awaited.
struct Joined<T> {
    done: Gate,
    slot: Arc<Mutex<Option<std::thread::Result<T>>>>,
}

impl<T> Joined<T> {
    /// The caller's outcome, or its panic's payload.
    async fn join(self) -> std::thread::Result<T> {
        self.done.opened().await;
        self.slot.lock().unwrap().take().expect("joined once")
    }

    /// The caller's outcome; fails the test if it panicked.
    async fn value(self) -> T {
        self.join().await.expect("the caller did not panic")
    }
}

/// Spawns `future` on runtime `R`, catching a panic so that it never unwinds into the
/// runtime's worker.
fn spawn<R: Runtime, T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> Joined<T> {
    let done = Gate::new();
    let slot = Arc::new(Mutex::new(None));
    let (task_done, task_slot) = (done.clone(), Arc::clone(&slot));
    R::spawn(async move {
        let outcome = CatchUnwind(Box::pin(future)).await;
        *task_slot.lock().unwrap() = Some(outcome);
        task_done.open();
    });
    Joined { done, slot }
}

struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// Polls `future` once, with a waker that does nothing: enough to make a call register
/// (and, as a leader, start its work up to its first `.await`).
fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(std::task::Waker::noop()))
}

macro_rules! suite {
    ($name:ident, $runtime:ty, $krate:ident) => {
        mod $name {
            use std::sync::LazyLock;
            use std::sync::atomic::{AtomicUsize, Ordering};
            use std::time::Duration;

            use singleflight_conformance::wait_until;
            use singleflight_tests::Gate;
            use singleflight_tests::panic_message;
            use singleflight_tests::setups::Runtime;
            use $krate::{Error, coalesce};

            use super::{poll_once, spawn};

            type Rt = $runtime;

            #[test]
            fn equal_arguments_coalesce_and_different_ones_do_not() {
                let _watchdog = singleflight_tests::watchdog!();
                static RUNS: AtomicUsize = AtomicUsize::new(0);
                static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

                #[coalesce]
                async fn fetch(id: u64) -> u64 {
                    RUNS.fetch_add(1, Ordering::SeqCst);
                    if id == 42 {
                        GATE.opened().await;
                    }
                    id * 10
                }

                Rt::block_on(async {
                    let leader = spawn::<Rt, _>(fetch(42));
                    wait_until("the leader runs", || fetch_group().contains(&42)).await;
                    let waiters: Vec<_> = (0..4).map(|_| spawn::<Rt, _>(fetch(42))).collect();
                    wait_until("four callers join", || fetch_group().waiters(&42) == 4).await;

                    // Another key runs on its own while 42 is in flight.
                    assert_eq!(fetch(43).await, Ok(430));
                    assert_eq!(RUNS.load(Ordering::SeqCst), 2);

                    GATE.open();
                    assert_eq!(leader.value().await, Ok(420));
                    for waiter in waiters {
                        assert_eq!(waiter.value().await, Ok(420));
                    }
                    assert_eq!(
                        RUNS.load(Ordering::SeqCst),
                        2,
                        "42 ran once for five callers"
                    );
                    assert_eq!(fetch_group().in_flight(), 0);
                });
            }

            #[test]
            fn the_error_reaches_every_caller() {
                let _watchdog = singleflight_tests::watchdog!();
                static RUNS: AtomicUsize = AtomicUsize::new(0);
                static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

                #[coalesce]
                async fn load(id: u64) -> Result<u64, String> {
                    RUNS.fetch_add(1, Ordering::SeqCst);
                    GATE.opened().await;
                    Err(format!("database is down ({id})"))
                }

                Rt::block_on(async {
                    let leader = spawn::<Rt, _>(load(7));
                    wait_until("the leader runs", || load_group().contains(&7)).await;
                    let waiter = spawn::<Rt, _>(load(7));
                    wait_until("a caller joins", || load_group().waiters(&7) == 1).await;
                    GATE.open();
                    let expected = Err(Error::Failed("database is down (7)".to_string()));
                    assert_eq!(leader.value().await, expected);
                    assert_eq!(waiter.value().await, expected);
                    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
                });
            }

            #[test]
            fn a_panic_reaches_waiters_and_poisons_nothing() {
                let _watchdog = singleflight_tests::watchdog!();
                static RUNS: AtomicUsize = AtomicUsize::new(0);
                static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

                #[coalesce]
                async fn risky(id: u64) -> u64 {
                    let run = RUNS.fetch_add(1, Ordering::SeqCst);
                    GATE.opened().await;
                    if run == 0 {
                        panic!("boom");
                    }
                    id
                }

                Rt::block_on(async {
                    let leader = spawn::<Rt, _>(risky(1));
                    wait_until("the leader runs", || risky_group().contains(&1)).await;
                    let waiter = spawn::<Rt, _>(risky(1));
                    wait_until("a caller joins", || risky_group().waiters(&1) == 1).await;
                    GATE.open();

                    let payload = leader.join().await.expect_err("the leader's panic resumes");
                    assert_eq!(panic_message(&*payload), "boom");
                    match waiter.value().await {
                        Err(Error::Panicked(message)) => assert_eq!(message.as_str(), "boom"),
                        other => panic!("the waiter got {other:?}"),
                    }
                    // The key is not poisoned: the next call runs the work again.
                    assert_eq!(risky(1).await, Ok(1));
                    assert_eq!(RUNS.load(Ordering::SeqCst), 2);
                });
            }

            #[test]
            fn forget_starts_a_new_flight_and_forget_all_every_key() {
                let _watchdog = singleflight_tests::watchdog!();
                static RUNS: AtomicUsize = AtomicUsize::new(0);
                static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

                /// Returns which execution answered.
                #[coalesce]
                async fn version(name: String) -> usize {
                    let run = RUNS.fetch_add(1, Ordering::SeqCst) + 1;
                    GATE.opened().await;
                    let _ = name;
                    run
                }

                Rt::block_on(async {
                    assert!(!version_group().forget("absent"), "nothing to forget");
                    let first = spawn::<Rt, _>(version("a".to_string()));
                    wait_until("the first flight runs", || version_group().contains("a")).await;
                    assert!(version_group().forget("a"));
                    assert!(!version_group().contains("a"));

                    let second = spawn::<Rt, _>(version("a".to_string()));
                    wait_until("a second flight runs", || RUNS.load(Ordering::SeqCst) == 2).await;
                    let other = spawn::<Rt, _>(version("b".to_string()));
                    wait_until("b runs", || RUNS.load(Ordering::SeqCst) == 3).await;
                    assert_eq!(version_group().in_flight(), 3);
                    assert_eq!(
                        version_group().forget_all(),
                        2,
                        "the two flights still keyed"
                    );
                    assert_eq!(
                        version_group().in_flight(),
                        3,
                        "forgotten flights still run"
                    );

                    GATE.open();
                    assert_eq!(first.value().await, Ok(1));
                    assert_eq!(second.value().await, Ok(2));
                    assert_eq!(other.value().await, Ok(3));
                    assert_eq!(version_group().in_flight(), 0);
                });
            }

            #[test]
            fn a_custom_key_decides_what_coalesces() {
                let _watchdog = singleflight_tests::watchdog!();
                static RUNS: AtomicUsize = AtomicUsize::new(0);
                static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

                // shared-call-py's `key_fn=lambda user_id, include_details: ...`.
                #[coalesce(key: String = |user_id, _details| format!("user:{user_id}"))]
                async fn profile(user_id: u64, details: bool) -> String {
                    RUNS.fetch_add(1, Ordering::SeqCst);
                    GATE.opened().await;
                    format!("{user_id} details={details}")
                }

                Rt::block_on(async {
                    let leader = spawn::<Rt, _>(profile(1, false));
                    wait_until("the leader runs", || profile_group().contains("user:1")).await;
                    let waiter = spawn::<Rt, _>(profile(1, true));
                    wait_until("the other call joins", || {
                        profile_group().waiters("user:1") == 1
                    })
                    .await;
                    GATE.open();
                    assert_eq!(leader.value().await.as_deref(), Ok("1 details=false"));
                    assert_eq!(waiter.value().await.as_deref(), Ok("1 details=false"));
                    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
                });
            }

            #[test]
            fn every_argument_is_part_of_a_functions_key() {
                let _watchdog = singleflight_tests::watchdog!();
                static RUNS: AtomicUsize = AtomicUsize::new(0);
                static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

                #[coalesce]
                async fn feed(user: String, page: u32) -> String {
                    RUNS.fetch_add(1, Ordering::SeqCst);
                    GATE.opened().await;
                    format!("{user}:{page}")
                }

                let key = |user: &str, page| (user.to_string(), page);
                let call = |user: &str, page| spawn::<Rt, _>(feed(user.to_string(), page));
                Rt::block_on(async {
                    let alice = call("alice", 1);
                    wait_until("alice's page 1 runs", || {
                        feed_group().contains(&key("alice", 1))
                    })
                    .await;
                    // One argument differs, either one: each runs on its own, beside the first.
                    let bob = call("bob", 1);
                    let page_two = call("alice", 2);
                    wait_until("three flights run", || feed_group().in_flight() == 3).await;
                    // Every argument equal: it joins.
                    let joined = call("alice", 1);
                    wait_until("the equal call joins", || {
                        feed_group().waiters(&key("alice", 1)) == 1
                    })
                    .await;
                    assert_eq!(feed_group().waiters(&key("bob", 1)), 0);
                    assert_eq!(feed_group().waiters(&key("alice", 2)), 0);
                    GATE.open();
                    assert_eq!(alice.value().await.as_deref(), Ok("alice:1"));
                    assert_eq!(joined.value().await.as_deref(), Ok("alice:1"));
                    assert_eq!(bob.value().await.as_deref(), Ok("bob:1"));
                    assert_eq!(page_two.value().await.as_deref(), Ok("alice:2"));
                    assert_eq!(RUNS.load(Ordering::SeqCst), 3);
                });
            }

            /// Two instances acting for two users, equal arguments: a method shares across
            /// instances only as its attribute says.
            #[test]
            fn a_method_shares_across_instances_only_as_it_says() {
                let _watchdog = singleflight_tests::watchdog!();
                static OWN_RUNS: AtomicUsize = AtomicUsize::new(0);
                static OWN_GATE: LazyLock<Gate> = LazyLock::new(Gate::new);
                static SHARED_RUNS: AtomicUsize = AtomicUsize::new(0);
                static SHARED_GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

                struct Client {
                    token: &'static str,
                }

                impl Client {
                    /// The principal is in the key: each user gets their own answer.
                    #[coalesce(key: (&'static str, String) = (self.token, endpoint.clone()))]
                    async fn me(&self, endpoint: String) -> String {
                        OWN_RUNS.fetch_add(1, Ordering::SeqCst);
                        OWN_GATE.opened().await;
                        format!("{endpoint} as {}", self.token)
                    }

                    /// Every instance shares: the answer says which execution gave it.
                    #[coalesce(shared)]
                    async fn status(&self, endpoint: String) -> String {
                        let run = SHARED_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
                        SHARED_GATE.opened().await;
                        format!("{endpoint}: run {run}")
                    }
                }

                static ALICE: Client = Client { token: "alice" };
                static BOB: Client = Client { token: "bob" };
                let key = |token| (token, "/me".to_string());
                Rt::block_on(async {
                    let first = spawn::<Rt, _>(ALICE.me("/me".to_string()));
                    wait_until("alice's call runs", || {
                        Client::me_group().contains(&key("alice"))
                    })
                    .await;
                    let second = spawn::<Rt, _>(BOB.me("/me".to_string()));
                    // Bob's call runs beside Alice's, which is still in flight: it did not join.
                    wait_until("bob's call runs", || {
                        Client::me_group().contains(&key("bob"))
                    })
                    .await;
                    assert_eq!(Client::me_group().in_flight(), 2);
                    assert_eq!(Client::me_group().waiters(&key("alice")), 0);
                    OWN_GATE.open();
                    assert_eq!(first.value().await.as_deref(), Ok("/me as alice"));
                    assert_eq!(second.value().await.as_deref(), Ok("/me as bob"));
                    assert_eq!(OWN_RUNS.load(Ordering::SeqCst), 2, "one execution per user");

                    let first = spawn::<Rt, _>(ALICE.status("/status".to_string()));
                    wait_until("alice's call runs", || {
                        Client::status_group().contains("/status")
                    })
                    .await;
                    let second = spawn::<Rt, _>(BOB.status("/status".to_string()));
                    wait_until("bob's call joins", || {
                        Client::status_group().waiters("/status") == 1
                    })
                    .await;
                    SHARED_GATE.open();
                    assert_eq!(first.value().await.as_deref(), Ok("/status: run 1"));
                    assert_eq!(
                        second.value().await.as_deref(),
                        Ok("/status: run 1"),
                        "shared: bob's call received the execution alice's call started"
                    );
                    assert_eq!(
                        SHARED_RUNS.load(Ordering::SeqCst),
                        1,
                        "one execution for both"
                    );
                });
            }

            mod one {
                pub(super) static GATE: std::sync::LazyLock<singleflight_tests::Gate> =
                    std::sync::LazyLock::new(singleflight_tests::Gate::new);

                #[$krate::coalesce]
                pub(super) async fn load(id: u64) -> &'static str {
                    GATE.opened().await;
                    let _ = id;
                    "one"
                }
            }

            mod two {
                #[$krate::coalesce]
                pub(super) async fn load(id: u64) -> &'static str {
                    let _ = id;
                    "two"
                }
            }

            #[test]
            fn functions_with_equal_names_never_share_keys() {
                let _watchdog = singleflight_tests::watchdog!();
                Rt::block_on(async {
                    let first = spawn::<Rt, _>(one::load(1));
                    wait_until("one::load runs", || one::load_group().contains(&1)).await;
                    // Same name, same key, another function: it runs on its own.
                    assert_eq!(two::load(1).await, Ok("two"));
                    assert_eq!(one::load_group().waiters(&1), 0);
                    one::GATE.open();
                    assert_eq!(first.value().await, Ok("one"));
                });
            }

            #[test]
            fn timeout_ends_the_wait_and_detached_work_still_finishes() {
                let _watchdog = singleflight_tests::watchdog!();
                static FINISHED: AtomicUsize = AtomicUsize::new(0);
                static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

                #[coalesce(detached, timeout = Duration::from_millis(20))]
                async fn refill(id: u64) -> u64 {
                    GATE.opened().await;
                    FINISHED.fetch_add(1, Ordering::SeqCst);
                    id
                }

                Rt::block_on(async {
                    // The gate is closed, so the caller times out whatever the duration.
                    assert_eq!(refill(3).await, Err(Error::Timeout));
                    assert_eq!(refill_group().in_flight(), 1, "the spawned work goes on");
                    GATE.open();
                    wait_until("the work finishes", || refill_group().in_flight() == 0).await;
                    assert_eq!(FINISHED.load(Ordering::SeqCst), 1);
                    assert_eq!(refill(3).await, Ok(3));
                });
            }

            #[test]
            fn options_combine_with_fallible_work_and_owned_receivers() {
                let _watchdog = singleflight_tests::watchdog!();
                #[coalesce(detached, timeout = Duration::from_secs(3600), leader_drop = Takeover)]
                async fn checked(id: u64) -> Result<u64, String> {
                    if id == 0 {
                        Err("zero".to_string())
                    } else {
                        Ok(id)
                    }
                }

                struct Cache {
                    scale: u64,
                }

                impl Cache {
                    // Detached work can't borrow `self`, but it may own an `Arc` of it;
                    // what tells two caches' answers apart is in the key.
                    #[coalesce(detached, key: (u64, u64) = (self.scale, *id))]
                    async fn fill(self: std::sync::Arc<Self>, id: u64) -> u64 {
                        id * self.scale
                    }
                }

                Rt::block_on(async {
                    assert_eq!(checked(0).await, Err(Error::Failed("zero".to_string())));
                    assert_eq!(checked(2).await, Ok(2));
                    let cache = std::sync::Arc::new(Cache { scale: 3 });
                    assert_eq!(cache.fill(5).await, Ok(15));
                    assert_eq!(Cache::fill_group().in_flight(), 0);
                });
            }

            #[test]
            fn a_leader_that_times_out_is_cancelled() {
                let _watchdog = singleflight_tests::watchdog!();
                static STARTED: AtomicUsize = AtomicUsize::new(0);
                static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

                #[coalesce(timeout = Duration::from_millis(20))]
                async fn slow(id: u64) -> u64 {
                    STARTED.fetch_add(1, Ordering::SeqCst);
                    GATE.opened().await;
                    id
                }

                Rt::block_on(async {
                    assert_eq!(slow(4).await, Err(Error::Timeout));
                    assert_eq!(STARTED.load(Ordering::SeqCst), 1);
                    assert_eq!(slow_group().in_flight(), 0, "the cancelled flight is gone");
                });
            }

            #[test]
            fn fail_waiters_when_the_leader_is_dropped() {
                let _watchdog = singleflight_tests::watchdog!();
                static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

                #[coalesce(leader_drop = FailWaiters)]
                async fn fragile(id: u64) -> u64 {
                    GATE.opened().await;
                    id
                }

                Rt::block_on(async {
                    let mut leader = Box::pin(fragile(5));
                    assert!(poll_once(leader.as_mut()).is_pending());
                    assert!(fragile_group().contains(&5));
                    let waiter = spawn::<Rt, _>(fragile(5));
                    wait_until("a caller joins", || fragile_group().waiters(&5) == 1).await;
                    drop(leader);
                    assert_eq!(waiter.value().await, Err(Error::LeaderDropped));
                    assert_eq!(fragile_group().in_flight(), 0);
                });
            }

            #[test]
            fn an_observer_attached_once_counts_every_call() {
                let _watchdog = singleflight_tests::watchdog!();
                static STATS: LazyLock<std::sync::Arc<singleflight_stats::Stats>> =
                    LazyLock::new(|| std::sync::Arc::new(singleflight_stats::Stats::new()));
                static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

                #[coalesce(observer = STATS.clone(), group = counted_flights)]
                async fn counted(id: u64) -> u64 {
                    GATE.opened().await;
                    id
                }

                Rt::block_on(async {
                    let leader = spawn::<Rt, _>(counted(6));
                    wait_until("the leader runs", || counted_flights().contains(&6)).await;
                    let waiter = spawn::<Rt, _>(counted(6));
                    wait_until("a caller joins", || counted_flights().waiters(&6) == 1).await;
                    GATE.open();
                    assert_eq!(leader.value().await, Ok(6));
                    assert_eq!(waiter.value().await, Ok(6));
                    let snapshot = STATS.snapshot();
                    assert_eq!((snapshot.hits, snapshot.misses), (1, 1));
                });
            }

            #[test]
            fn the_shards_option_sizes_the_group_once() {
                let _watchdog = singleflight_tests::watchdog!();
                #[coalesce(shards = 8, group = small_flights)]
                async fn small(n: u64) -> u64 {
                    n + 1
                }

                Rt::block_on(async {
                    assert_eq!(small(1).await, Ok(2));
                    assert_eq!(small_flights().as_core().shards(), 8);
                });
            }

            #[test]
            fn reuse_serves_later_calls_within_the_window_without_running_the_work() {
                let _watchdog = singleflight_tests::watchdog!();
                static RUNS: AtomicUsize = AtomicUsize::new(0);
                static ZERO_RUNS: AtomicUsize = AtomicUsize::new(0);
                static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

                /// Returns which execution answered.
                #[coalesce(reuse = Duration::from_secs(3600))]
                async fn price(item: u64) -> usize {
                    let run = RUNS.fetch_add(1, Ordering::SeqCst) + 1;
                    if item == 1 {
                        GATE.opened().await;
                    }
                    run
                }

                // The window is the expression's value, evaluated when the group is made.
                #[coalesce(reuse = Duration::ZERO)]
                async fn fresh(id: u64) -> u64 {
                    ZERO_RUNS.fetch_add(1, Ordering::SeqCst);
                    id
                }

                Rt::block_on(async {
                    // A flight's callers share it as without a window...
                    let leader = spawn::<Rt, _>(price(1));
                    wait_until("the leader runs", || price_group().contains(&1)).await;
                    let waiter = spawn::<Rt, _>(price(1));
                    wait_until("a caller joins", || price_group().waiters(&1) == 1).await;
                    GATE.open();
                    assert_eq!(leader.value().await, Ok(1));
                    assert_eq!(waiter.value().await, Ok(1));
                    // ...and its value serves the calls after it, within the window.
                    assert_eq!(price_group().in_flight(), 0);
                    assert_eq!(price(1).await, Ok(1));
                    assert_eq!(RUNS.load(Ordering::SeqCst), 1, "the work ran once");
                    assert_eq!(price(2).await, Ok(2), "another key runs its own work");
                    assert_eq!(price_group().reusable(), 2);
                    // `forget` drops a kept value: the next call runs the work again.
                    assert!(price_group().forget(&2));
                    assert_eq!(price(2).await, Ok(3));
                    assert_eq!(price(2).await, Ok(3));

                    assert_eq!(fresh(1).await, Ok(1));
                    assert_eq!(fresh(1).await, Ok(1));
                    assert_eq!(ZERO_RUNS.load(Ordering::SeqCst), 2);
                    assert_eq!(fresh_group().reusable(), 0);
                });
            }

            #[test]
            fn a_renamed_front_end_is_reached_with_crate() {
                let _watchdog = singleflight_tests::watchdog!();
                use $krate as renamed;

                #[renamed::coalesce(crate = renamed)]
                async fn double(n: u64) -> u64 {
                    n * 2
                }

                Rt::block_on(async {
                    assert_eq!(double(21).await, Ok(42));
                    assert_eq!(double_group().in_flight(), 0);
                });
            }
        }
    };
}

suite!(
    tokio_current_thread,
    singleflight_tests::setups::TokioCurrentThread,
    singleflight_tokio
);
suite!(
    tokio_multi_thread,
    singleflight_tests::setups::TokioMultiThread,
    singleflight_tokio
);
suite!(smol, singleflight_tests::setups::Smol, singleflight_smol);
suite!(
    async_std,
    singleflight_tests::setups::AsyncStd,
    singleflight_async_std
);

/// The reuse window on tokio's paused clock: a value serves calls until the window ends,
/// and the first call after it runs the work again. Virtual time moves only by `advance`.
#[test]
fn reuse_ends_with_its_window_on_a_paused_clock() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use singleflight_tests::setups::{Runtime, TokioCurrentThread};
    use singleflight_tokio::coalesce;

    let _watchdog = singleflight_tests::watchdog!();
    static RUNS: AtomicUsize = AtomicUsize::new(0);

    /// Returns which execution answered.
    #[coalesce(reuse = Duration::from_secs(30))]
    async fn rate(currency: String) -> usize {
        let _ = currency;
        RUNS.fetch_add(1, Ordering::SeqCst) + 1
    }

    TokioCurrentThread::block_on(async {
        assert_eq!(rate("EUR".into()).await, Ok(1));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(
            rate("EUR".into()).await,
            Ok(1),
            "29 s old: within the window"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            rate("EUR".into()).await,
            Ok(2),
            "31 s old: the work runs again"
        );
        assert_eq!(
            rate("EUR".into()).await,
            Ok(2),
            "and its value is kept anew"
        );
        assert_eq!(RUNS.load(Ordering::SeqCst), 2);
    });
}
