//! The semantics contract through `#[coalesce]`-generated functions on std threads
//! (`singleflight_blocking::coalesce`). Threads are ordered by gates and by waiter counts
//! read through the generated `<fn>_group()` accessors, never by sleeping; the only
//! durations are the timeout the timeout test checks and reuse windows (one that never ends
//! during a test, and one of zero).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::thread;
use std::time::Duration;

use singleflight_blocking::{Error, coalesce};
use singleflight_stats::Stats;
use singleflight_tests::panic_message;
use singleflight_tests::{Gate, wait_until};

#[test]
fn equal_arguments_coalesce_and_different_ones_do_not() {
    let _watchdog = singleflight_tests::watchdog!();
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

    #[coalesce]
    fn fetch(id: u64) -> u64 {
        RUNS.fetch_add(1, Ordering::SeqCst);
        if id == 42 {
            GATE.wait();
        }
        id * 10
    }

    thread::scope(|s| {
        let leader = s.spawn(|| fetch(42));
        wait_until("the leader runs", || fetch_group().contains(&42));
        let waiters: Vec<_> = (0..4).map(|_| s.spawn(|| fetch(42))).collect();
        wait_until("four callers join", || fetch_group().waiters(&42) == 4);

        // Another key runs on its own while 42 is in flight.
        assert_eq!(fetch(43), Ok(430));
        assert_eq!(RUNS.load(Ordering::SeqCst), 2);

        GATE.open();
        assert_eq!(leader.join().unwrap(), Ok(420));
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), Ok(420));
        }
    });
    assert_eq!(
        RUNS.load(Ordering::SeqCst),
        2,
        "42 ran once for five callers"
    );
    assert_eq!(fetch_group().in_flight(), 0);
}

#[test]
fn the_error_reaches_every_caller() {
    let _watchdog = singleflight_tests::watchdog!();
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

    #[coalesce]
    fn load(id: u64) -> Result<u64, String> {
        RUNS.fetch_add(1, Ordering::SeqCst);
        GATE.wait();
        Err(format!("database is down ({id})"))
    }

    thread::scope(|s| {
        let leader = s.spawn(|| load(7));
        wait_until("the leader runs", || load_group().contains(&7));
        let waiter = s.spawn(|| load(7));
        wait_until("a caller joins", || load_group().waiters(&7) == 1);
        GATE.open();
        let expected = Err(Error::Failed("database is down (7)".to_string()));
        assert_eq!(leader.join().unwrap(), expected);
        assert_eq!(waiter.join().unwrap(), expected);
    });
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
}

#[test]
fn a_panic_reaches_waiters_and_poisons_nothing() {
    let _watchdog = singleflight_tests::watchdog!();
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

    #[coalesce]
    fn risky(id: u64) -> u64 {
        let run = RUNS.fetch_add(1, Ordering::SeqCst);
        GATE.wait();
        if run == 0 {
            panic!("boom");
        }
        id
    }

    thread::scope(|s| {
        let leader = s.spawn(|| risky(1));
        wait_until("the leader runs", || risky_group().contains(&1));
        let waiter = s.spawn(|| risky(1));
        wait_until("a caller joins", || risky_group().waiters(&1) == 1);
        GATE.open();

        let payload = leader.join().expect_err("the leader's panic resumes");
        assert_eq!(panic_message(&*payload), "boom");
        match waiter.join().unwrap() {
            Err(Error::Panicked(message)) => assert_eq!(message.as_str(), "boom"),
            other => panic!("the waiter got {other:?}"),
        }
    });
    // The key is not poisoned: the next call runs the work again.
    assert_eq!(risky(1), Ok(1));
    assert_eq!(RUNS.load(Ordering::SeqCst), 2);
}

#[test]
fn forget_starts_a_new_flight_and_forget_all_every_key() {
    let _watchdog = singleflight_tests::watchdog!();
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

    /// Returns which execution answered.
    #[coalesce]
    fn version(name: String) -> usize {
        let run = RUNS.fetch_add(1, Ordering::SeqCst) + 1;
        GATE.wait();
        let _ = name;
        run
    }

    assert!(!version_group().forget("absent"), "nothing to forget");
    thread::scope(|s| {
        let first = s.spawn(|| version("a".to_string()));
        wait_until("the first flight runs", || version_group().contains("a"));
        assert!(version_group().forget("a"));
        assert!(!version_group().contains("a"));

        let second = s.spawn(|| version("a".to_string()));
        wait_until("a second flight runs", || RUNS.load(Ordering::SeqCst) == 2);
        let other = s.spawn(|| version("b".to_string()));
        wait_until("b runs", || RUNS.load(Ordering::SeqCst) == 3);
        assert_eq!(version_group().in_flight(), 3);
        assert_eq!(version_group().forget_all(), 2, "two flights still keyed");
        assert_eq!(
            version_group().in_flight(),
            3,
            "forgotten flights still run"
        );

        GATE.open();
        assert_eq!(first.join().unwrap(), Ok(1));
        assert_eq!(second.join().unwrap(), Ok(2));
        assert_eq!(other.join().unwrap(), Ok(3));
    });
    assert_eq!(version_group().in_flight(), 0);
}

#[test]
fn a_custom_key_decides_what_coalesces() {
    let _watchdog = singleflight_tests::watchdog!();
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

    // An expression over the arguments, which it sees as references.
    #[coalesce(key: u64 = *user_id)]
    fn profile(user_id: u64, details: bool) -> String {
        RUNS.fetch_add(1, Ordering::SeqCst);
        GATE.wait();
        format!("{user_id} details={details}")
    }

    thread::scope(|s| {
        let leader = s.spawn(|| profile(1, false));
        wait_until("the leader runs", || profile_group().contains(&1));
        let waiter = s.spawn(|| profile(1, true));
        wait_until("the other call joins", || profile_group().waiters(&1) == 1);
        GATE.open();
        assert_eq!(leader.join().unwrap().as_deref(), Ok("1 details=false"));
        assert_eq!(waiter.join().unwrap().as_deref(), Ok("1 details=false"));
    });
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
}

#[test]
fn a_custom_key_lets_arguments_borrow() {
    let _watchdog = singleflight_tests::watchdog!();
    #[coalesce(key: String = name.to_lowercase())]
    fn greet(name: &str, punctuation: &str) -> String {
        format!("hello {name}{punctuation}")
    }

    let name = String::from("Ada");
    assert_eq!(greet(&name, "!").as_deref(), Ok("hello Ada!"));
    assert!(!greet_group().contains("ada"));
}

#[test]
fn every_argument_is_part_of_a_functions_key() {
    let _watchdog = singleflight_tests::watchdog!();
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

    #[coalesce]
    fn feed(user: String, page: u32) -> String {
        RUNS.fetch_add(1, Ordering::SeqCst);
        GATE.wait();
        format!("{user}:{page}")
    }

    let key = |user: &str, page| (user.to_string(), page);
    thread::scope(|s| {
        let alice = s.spawn(|| feed("alice".to_string(), 1));
        wait_until("alice's page 1 runs", || {
            feed_group().contains(&key("alice", 1))
        });
        // One argument differs, either one: each runs on its own, beside the first.
        let bob = s.spawn(|| feed("bob".to_string(), 1));
        let page_two = s.spawn(|| feed("alice".to_string(), 2));
        wait_until("three flights run", || feed_group().in_flight() == 3);
        // Every argument equal: it joins.
        let joined = s.spawn(|| feed("alice".to_string(), 1));
        wait_until("the equal call joins", || {
            feed_group().waiters(&key("alice", 1)) == 1
        });
        assert_eq!(feed_group().waiters(&key("bob", 1)), 0);
        assert_eq!(feed_group().waiters(&key("alice", 2)), 0);
        GATE.open();
        assert_eq!(alice.join().unwrap().as_deref(), Ok("alice:1"));
        assert_eq!(joined.join().unwrap().as_deref(), Ok("alice:1"));
        assert_eq!(bob.join().unwrap().as_deref(), Ok("bob:1"));
        assert_eq!(page_two.join().unwrap().as_deref(), Ok("alice:2"));
    });
    assert_eq!(RUNS.load(Ordering::SeqCst), 3);
}

/// Two instances acting for two users, equal arguments: a method shares across instances
/// only as its attribute says.
#[test]
fn a_method_shares_across_instances_only_as_it_says() {
    let _watchdog = singleflight_tests::watchdog!();
    static OWN_RUNS: AtomicUsize = AtomicUsize::new(0);
    static OWN_GATE: LazyLock<Gate> = LazyLock::new(Gate::new);
    static SHARED_RUNS: AtomicUsize = AtomicUsize::new(0);
    static SHARED_GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

    struct Client {
        token: String,
    }

    impl Client {
        /// The principal is in the key: each user gets their own answer.
        #[coalesce(key: (String, String) = (self.token.clone(), endpoint.clone()))]
        fn me(&self, endpoint: String) -> String {
            OWN_RUNS.fetch_add(1, Ordering::SeqCst);
            OWN_GATE.wait();
            format!("{endpoint} as {}", self.token)
        }

        /// Every instance shares: the answer says which execution gave it.
        #[coalesce(shared)]
        fn status(&self, endpoint: String) -> String {
            let run = SHARED_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
            SHARED_GATE.wait();
            format!("{endpoint}: run {run}")
        }
    }

    let alice = Client {
        token: "alice".to_string(),
    };
    let bob = Client {
        token: "bob".to_string(),
    };
    let key = |token: &str| (token.to_string(), "/me".to_string());

    thread::scope(|s| {
        let first = s.spawn(|| alice.me("/me".to_string()));
        wait_until("alice's call runs", || {
            Client::me_group().contains(&key("alice"))
        });
        let second = s.spawn(|| bob.me("/me".to_string()));
        // Bob's call runs beside Alice's, which is still in flight: it did not join.
        wait_until("bob's call runs", || {
            Client::me_group().contains(&key("bob"))
        });
        assert_eq!(Client::me_group().in_flight(), 2);
        assert_eq!(Client::me_group().waiters(&key("alice")), 0);
        OWN_GATE.open();
        assert_eq!(first.join().unwrap().as_deref(), Ok("/me as alice"));
        assert_eq!(second.join().unwrap().as_deref(), Ok("/me as bob"));
    });
    assert_eq!(OWN_RUNS.load(Ordering::SeqCst), 2, "one execution per user");

    thread::scope(|s| {
        let first = s.spawn(|| alice.status("/status".to_string()));
        wait_until("alice's call runs", || {
            Client::status_group().contains("/status")
        });
        let second = s.spawn(|| bob.status("/status".to_string()));
        wait_until("bob's call joins", || {
            Client::status_group().waiters("/status") == 1
        });
        SHARED_GATE.open();
        assert_eq!(first.join().unwrap().as_deref(), Ok("/status: run 1"));
        assert_eq!(
            second.join().unwrap().as_deref(),
            Ok("/status: run 1"),
            "shared: bob's call received the execution alice's call started"
        );
    });
    assert_eq!(
        SHARED_RUNS.load(Ordering::SeqCst),
        1,
        "one execution for both"
    );
}

#[test]
fn shared_may_stand_beside_a_key() {
    let _watchdog = singleflight_tests::watchdog!();
    struct Api;

    impl Api {
        // The key leaves the instance out, and `shared` says that is meant.
        #[coalesce(shared, key: String = endpoint.to_lowercase())]
        fn get(&self, endpoint: &str) -> String {
            endpoint.to_lowercase()
        }
    }

    assert_eq!(Api.get("/ME").as_deref(), Ok("/me"));
    assert_eq!(Api::get_group().in_flight(), 0);
}

#[test]
fn a_generic_impls_instantiations_share_one_group() {
    let _watchdog = singleflight_tests::watchdog!();
    struct Typed<T>(std::marker::PhantomData<T>);

    impl<T> Typed<T> {
        #[coalesce(shared)]
        fn load(&self, id: u64) -> u64 {
            id
        }
    }

    // The group is a `static`, which can't depend on `T`: one serves every instantiation,
    // as the docs' table says.
    assert!(std::ptr::eq(
        Typed::<u8>::load_group(),
        Typed::<String>::load_group()
    ));
    assert_eq!(Typed::<u8>(std::marker::PhantomData).load(3), Ok(3));
}

mod one {
    use std::sync::LazyLock;

    use singleflight_tests::Gate;

    pub(super) static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

    #[singleflight_blocking::coalesce]
    pub(super) fn load(id: u64) -> &'static str {
        GATE.wait();
        let _ = id;
        "one"
    }
}

mod two {
    #[singleflight_blocking::coalesce]
    pub(super) fn load(id: u64) -> &'static str {
        let _ = id;
        "two"
    }
}

#[test]
fn functions_with_equal_names_never_share_keys() {
    let _watchdog = singleflight_tests::watchdog!();
    thread::scope(|s| {
        let first = s.spawn(|| one::load(1));
        wait_until("one::load runs", || one::load_group().contains(&1));
        // Same name, same key, another function: it runs on its own.
        assert_eq!(two::load(1), Ok("two"));
        assert_eq!(one::load_group().waiters(&1), 0);
        one::GATE.open();
        assert_eq!(first.join().unwrap(), Ok("one"));
    });
}

#[test]
fn a_waiter_times_out_and_the_flight_goes_on() {
    let _watchdog = singleflight_tests::watchdog!();
    static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

    #[coalesce(timeout = Duration::from_millis(20))]
    fn slow(id: u64) -> u64 {
        GATE.wait();
        id
    }

    thread::scope(|s| {
        let leader = s.spawn(|| slow(4));
        wait_until("the leader runs", || slow_group().contains(&4));
        // The gate is closed, so the waiter times out whatever the duration.
        assert_eq!(slow(4), Err(Error::Timeout));
        assert!(slow_group().contains(&4), "the flight goes on");
        GATE.open();
        // A blocking leader can't be cancelled: it runs its work to the end.
        assert_eq!(leader.join().unwrap(), Ok(4));
    });
    assert_eq!(slow_group().in_flight(), 0);
}

#[test]
fn a_fallible_call_with_a_timeout_shares_its_error() {
    let _watchdog = singleflight_tests::watchdog!();
    #[coalesce(timeout = Duration::from_secs(3600))]
    fn checked(id: u64) -> Result<u64, String> {
        if id == 0 {
            Err("zero".to_string())
        } else {
            Ok(id)
        }
    }

    assert_eq!(checked(0), Err(Error::Failed("zero".to_string())));
    assert_eq!(checked(2), Ok(2));
}

#[test]
fn a_call_from_inside_its_own_flight_is_an_error() {
    let _watchdog = singleflight_tests::watchdog!();
    #[coalesce]
    fn nested(id: u64) -> bool {
        nested(id) == Err(Error::Reentrant)
    }

    assert_eq!(nested(8), Ok(true));
}

#[test]
fn an_observer_attached_once_counts_every_call() {
    let _watchdog = singleflight_tests::watchdog!();
    static STATS: LazyLock<Arc<Stats>> = LazyLock::new(|| Arc::new(Stats::new()));
    static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

    #[coalesce(observer = STATS.clone(), group = counted_flights)]
    fn counted(id: u64) -> u64 {
        GATE.wait();
        id
    }

    thread::scope(|s| {
        let leader = s.spawn(|| counted(6));
        wait_until("the leader runs", || counted_flights().contains(&6));
        let waiter = s.spawn(|| counted(6));
        wait_until("a caller joins", || counted_flights().waiters(&6) == 1);
        GATE.open();
        assert_eq!(leader.join().unwrap(), Ok(6));
        assert_eq!(waiter.join().unwrap(), Ok(6));
    });
    let snapshot = STATS.snapshot();
    assert_eq!((snapshot.hits, snapshot.misses), (1, 1));
}

#[test]
fn arguments_without_names_and_no_arguments_make_keys_too() {
    let _watchdog = singleflight_tests::watchdog!();
    #[coalesce]
    fn area((width, height): (u32, u32), mut scale: u32) -> u32 {
        scale *= 2;
        width * height * scale
    }

    #[coalesce]
    fn constant() -> &'static str {
        "fixed"
    }

    assert_eq!(area((2, 3), 1), Ok(12));
    assert!(!area_group().contains(&((2, 3), 1)));
    assert_eq!(constant(), Ok("fixed"));
    assert!(!constant_group().contains(&()));
}

#[test]
fn an_associated_function_without_self_says_in_impl() {
    let _watchdog = singleflight_tests::watchdog!();
    struct Config;

    impl Config {
        #[coalesce(in_impl)]
        fn load(name: String) -> String {
            Self::normalise(&name)
        }

        fn normalise(name: &str) -> String {
            name.to_lowercase()
        }
    }

    assert_eq!(Config::load("App".to_string()).as_deref(), Ok("app"));
    assert_eq!(Config::load_group().in_flight(), 0);
}

#[test]
fn a_renamed_front_end_is_reached_with_crate() {
    let _watchdog = singleflight_tests::watchdog!();
    use singleflight_blocking as renamed;

    #[renamed::coalesce(crate = renamed)]
    fn double(n: u64) -> u64 {
        n * 2
    }

    assert_eq!(double(21), Ok(42));
    assert_eq!(double_group().in_flight(), 0);
}

#[test]
fn the_shards_option_sizes_the_group_once() {
    let _watchdog = singleflight_tests::watchdog!();
    const SHARDS: usize = 2;

    #[coalesce(shards = SHARDS * 2, group = small_flights)]
    fn small(id: u64) -> u64 {
        id + 1
    }

    assert_eq!(small(1), Ok(2));
    assert_eq!(small_flights().as_core().shards(), 4);
    assert_eq!(small_flights().in_flight(), 0);
}

#[test]
fn a_bad_shards_option_panics_clearly_at_the_first_call() {
    let _watchdog = singleflight_tests::watchdog!();
    #[coalesce(shards = 3)]
    fn odd(id: u64) -> u64 {
        id
    }

    let payload = std::panic::catch_unwind(|| odd(1)).expect_err("three shards are refused");
    assert_eq!(
        panic_message(&*payload),
        "a group's shard count is a power of two from 1 to 65536, not 3"
    );
}

#[test]
fn reuse_serves_later_calls_within_the_window_without_running_the_work() {
    let _watchdog = singleflight_tests::watchdog!();
    static RUNS: AtomicUsize = AtomicUsize::new(0);

    /// Returns which execution answered.
    #[coalesce(reuse = Duration::from_secs(3600))]
    fn price(item: u64) -> usize {
        let _ = item;
        RUNS.fetch_add(1, Ordering::SeqCst) + 1
    }

    assert_eq!(price(1), Ok(1));
    // The flight is over; its value serves the next call for its key.
    assert_eq!(price_group().in_flight(), 0);
    assert_eq!(price(1), Ok(1));
    assert_eq!(RUNS.load(Ordering::SeqCst), 1, "the work ran once");
    // Another key is not served by it.
    assert_eq!(price(2), Ok(2));
    assert_eq!(price_group().reusable(), 2);
    // `forget` drops a kept value: the next call runs the work again.
    assert!(price_group().forget(&1));
    assert_eq!(price(1), Ok(3));
    assert_eq!(price(1), Ok(3));
    assert_eq!(price_group().forget_all(), 2, "both kept values dropped");
    assert_eq!(price(2), Ok(4));
}

#[test]
fn reuse_keeps_no_error_and_a_zero_window_keeps_nothing() {
    let _watchdog = singleflight_tests::watchdog!();
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    static ZERO_RUNS: AtomicUsize = AtomicUsize::new(0);

    #[coalesce(reuse = Duration::from_secs(3600))]
    fn lookup(id: u64) -> Result<u64, String> {
        let run = RUNS.fetch_add(1, Ordering::SeqCst) + 1;
        if run == 1 {
            Err("down".to_string())
        } else {
            Ok(id)
        }
    }

    // The window is the expression's value, evaluated when the group is made.
    #[coalesce(reuse = Duration::ZERO)]
    fn fresh(id: u64) -> u64 {
        ZERO_RUNS.fetch_add(1, Ordering::SeqCst);
        id
    }

    assert_eq!(lookup(7), Err(Error::Failed("down".to_string())));
    assert_eq!(lookup_group().reusable(), 0, "an error is not kept");
    assert_eq!(lookup(7), Ok(7));
    assert_eq!(lookup(7), Ok(7));
    assert_eq!(RUNS.load(Ordering::SeqCst), 2, "the value is kept");

    assert_eq!(fresh(1), Ok(1));
    assert_eq!(fresh(1), Ok(1));
    assert_eq!(ZERO_RUNS.load(Ordering::SeqCst), 2);
    assert_eq!(fresh_group().reusable(), 0);
}

#[test]
fn reuse_on_a_method_keeps_results_apart_as_its_key_says() {
    let _watchdog = singleflight_tests::watchdog!();
    static RUNS: AtomicUsize = AtomicUsize::new(0);

    struct Client {
        token: String,
    }

    impl Client {
        // The principal is in the key, so a kept result reaches only its own principal.
        #[coalesce(reuse = Duration::from_secs(3600), key: (String, String) = (self.token.clone(), endpoint.clone()))]
        fn me(&self, endpoint: String) -> String {
            RUNS.fetch_add(1, Ordering::SeqCst);
            format!("{endpoint} as {}", self.token)
        }
    }

    let alice = Client {
        token: "alice".into(),
    };
    let bob = Client {
        token: "bob".into(),
    };
    assert_eq!(alice.me("/me".into()).as_deref(), Ok("/me as alice"));
    assert_eq!(bob.me("/me".into()).as_deref(), Ok("/me as bob"));
    // A second instance for the same principal is served the kept value.
    let alice_again = Client {
        token: "alice".into(),
    };
    assert_eq!(alice_again.me("/me".into()).as_deref(), Ok("/me as alice"));
    assert_eq!(RUNS.load(Ordering::SeqCst), 2);
    assert_eq!(Client::me_group().reusable(), 2);
}
