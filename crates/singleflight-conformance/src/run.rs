//! Running the rules: the rule table with what each needs, the support table of a setup,
//! the watchdog that fails a hung rule, and the macro that makes a `#[test]` of each rule.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::{Capabilities, Harness, Support};

/// How long one rule may take before [`run`] fails it instead of hanging the test run.
pub const WATCHDOG: Duration = Duration::from_secs(120);

/// One rule of the kit: its name (the name of its test and of its body in
/// [`rules`](crate::rules)), the [contract](crate::contract) rules it checks, and what it needs.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// The rule's name: its function in [`rules`](crate::rules) (or
    /// `stats` with the `stats` feature), and its test.
    pub name: &'static str,
    /// The numbers of the [contract](crate::contract) rules it checks (empty: the Statistics section).
    pub contract: &'static [u8],
    /// What it needs from a setup: [`Support::Yes`], or why it cannot run there.
    pub needs: fn(&Capabilities) -> Support,
}

impl Rule {
    /// Whether setup `H` supports the rule.
    pub fn support<H: Harness>(&self) -> Support {
        (self.needs)(&H::CAPABILITIES)
    }
}

/// Every rule a setup needs nothing special for.
fn always(_: &Capabilities) -> Support {
    Support::Yes
}

/// The contract's rules, in the order [`conformance!`](crate::conformance!) makes their tests.
pub const RULES: &[Rule] = &[
    Rule {
        name: "coalesces_concurrent_callers",
        contract: &[1, 3, 13],
        needs: always,
    },
    Rule {
        name: "different_keys_do_not_wait",
        contract: &[1],
        needs: always,
    },
    Rule {
        name: "borrowed_key_joins_without_allocating_a_key",
        contract: &[12],
        needs: always,
    },
    Rule {
        name: "fallible_work_shares_the_error",
        contract: &[2],
        needs: always,
    },
    Rule {
        name: "panic_reaches_waiters_with_its_message",
        contract: &[4],
        needs: always,
    },
    Rule {
        name: "key_is_not_poisoned_after_a_panic",
        contract: &[4],
        needs: always,
    },
    Rule {
        name: "role_tells_leader_from_waiter",
        contract: &[3],
        needs: always,
    },
    Rule {
        name: "leader_drop_takeover_runs_one_execution_at_a_time",
        contract: &[5],
        needs: always,
    },
    Rule {
        name: "leader_drop_fail_waiters",
        contract: &[5],
        needs: always,
    },
    Rule {
        name: "dropped_waiter_affects_no_one_else",
        contract: &[7],
        needs: always,
    },
    Rule {
        name: "detached_work_survives_all_callers_leaving",
        contract: &[6],
        needs: |c| c.detached.support(),
    },
    Rule {
        name: "detached_panic_reaches_every_caller",
        contract: &[4, 6],
        needs: |c| match (c.detached, c.blocking_pool) {
            (d, b) if d.is_supported() || b.is_supported() => Support::Yes,
            (d, _) => d.support(),
        },
    },
    Rule {
        name: "blocking_pool_work_is_coalesced",
        contract: &[1],
        needs: |c| c.blocking_pool.support(),
    },
    Rule {
        name: "waiter_timeout_ends_only_that_waiter",
        contract: &[10],
        needs: |c| c.timeouts,
    },
    Rule {
        name: "leader_timeout_is_a_cancellation",
        contract: &[10, 5],
        needs: |c| c.timeouts,
    },
    Rule {
        name: "forget_while_in_flight_keeps_the_new_flight",
        contract: &[9],
        needs: always,
    },
    Rule {
        name: "forget_absent_key_leaves_nothing",
        contract: &[9],
        needs: always,
    },
    Rule {
        name: "forget_all_detaches_every_flight",
        contract: &[9],
        needs: always,
    },
    Rule {
        name: "reentrant_call_is_detected",
        contract: &[11],
        needs: |c| c.reentrancy,
    },
    Rule {
        name: "unpolled_call_pins_nothing",
        contract: &[8],
        needs: always,
    },
    Rule {
        name: "registering_at_the_instant_of_publication",
        contract: &[1, 2],
        needs: always,
    },
    Rule {
        name: "cancellation_churn_leaves_nothing_in_flight",
        contract: &[7],
        needs: always,
    },
    Rule {
        name: "observer_counts_every_call_once",
        contract: &[],
        needs: |c| c.timeouts,
    },
    Rule {
        name: "reuse_inside_the_window_and_not_after",
        contract: &[16],
        needs: always,
    },
    Rule {
        name: "errors_are_not_reused_without_the_policy",
        contract: &[16],
        needs: always,
    },
    Rule {
        name: "panics_and_cancellations_are_never_reused",
        contract: &[16],
        needs: always,
    },
    Rule {
        name: "forget_drops_a_reusable_value",
        contract: &[16, 9],
        needs: always,
    },
    Rule {
        name: "refresh_runs_once_under_a_herd",
        contract: &[16],
        needs: |c| c.refresh,
    },
    Rule {
        name: "a_failed_refresh_serves_the_old_value",
        contract: &[16],
        needs: |c| c.refresh,
    },
    Rule {
        name: "a_cancelled_trigger_does_not_cancel_the_refresh",
        contract: &[16, 6],
        needs: |c| c.refresh,
    },
    Rule {
        name: "forget_during_a_refresh_wins",
        contract: &[16, 9],
        needs: |c| c.refresh,
    },
];

/// Every rule of the kit: [`RULES`], then the statistics rules with the `stats` feature.
pub fn all_rules() -> impl Iterator<Item = &'static Rule> {
    #[cfg(feature = "stats")]
    let stats = crate::stats::RULES;
    #[cfg(not(feature = "stats"))]
    let stats: &[Rule] = &[];
    RULES.iter().chain(stats)
}

/// The rule named `name`, among [`all_rules`].
pub fn rule(name: &str) -> Option<&'static Rule> {
    all_rules().find(|rule| rule.name == name)
}

/// Which rules a setup runs and which it reports as unsupported, with the reasons; its
/// `Display` is a table, one rule a line.
///
/// ```
/// # use singleflight_conformance::{Harness, SupportTable};
/// # fn print<H: Harness>() {
/// println!("{}", SupportTable::of::<H>("my_runtime"));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SupportTable {
    setup: String,
    rows: Vec<(&'static Rule, Support)>,
}

impl SupportTable {
    /// The table of setup `H` for every rule of the kit ([`all_rules`]), titled `setup`.
    pub fn of<H: Harness>(setup: &str) -> Self {
        Self {
            setup: setup.to_string(),
            rows: all_rules()
                .map(|rule| (rule, rule.support::<H>()))
                .collect(),
        }
    }

    /// The table of setup `H` for `rules` only, titled `setup`.
    pub fn for_rules<H: Harness>(setup: &str, rules: &'static [Rule]) -> Self {
        Self {
            setup: setup.to_string(),
            rows: rules
                .iter()
                .map(|rule| (rule, rule.support::<H>()))
                .collect(),
        }
    }

    /// Each rule, with the setup's support for it.
    pub fn rows(&self) -> &[(&'static Rule, Support)] {
        &self.rows
    }

    /// The rules the setup does not support.
    pub fn unsupported(&self) -> impl Iterator<Item = (&'static Rule, &'static str)> + '_ {
        self.rows
            .iter()
            .filter_map(|&(rule, support)| match support {
                Support::Yes => None,
                Support::Unsupported(reason) => Some((rule, reason)),
            })
    }
}

impl fmt::Display for SupportTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let contract = |rule: &Rule| match rule.contract {
            [] => "Statistics".to_string(),
            numbers => {
                let numbers: Vec<String> = numbers.iter().map(u8::to_string).collect();
                format!("rule {}", numbers.join(", "))
            }
        };
        let name_width = self.rows.iter().map(|(rule, _)| rule.name.len()).max();
        let contract_width = self.rows.iter().map(|(rule, _)| contract(rule).len()).max();
        let (name_width, contract_width) = (name_width.unwrap_or(0), contract_width.unwrap_or(0));
        writeln!(f, "{}: {} rules", self.setup, self.rows.len())?;
        for (rule, support) in &self.rows {
            writeln!(
                f,
                "  {:name_width$}  {:contract_width$}  {support}",
                rule.name,
                contract(rule)
            )?;
        }
        Ok(())
    }
}

/// Runs the rule `name` on setup `H` if `H` supports it; otherwise prints
/// `unsupported: <reason>` (to the test's output) and returns, so that the rule's test
/// passes and says why it did not run. What [`conformance!`](crate::conformance!)'s tests call.
///
/// # Panics
///
/// If no rule is named `name`, or as [`run`] does.
#[track_caller]
pub fn check<H: Harness, F, Fut>(name: &str, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let rule = rule(name).unwrap_or_else(|| panic!("no rule is named `{name}`"));
    match rule.support::<H>() {
        Support::Yes => run::<H, F, Fut>(name, body),
        Support::Unsupported(reason) => println!("unsupported: {reason}"),
    }
}

/// Runs `body` on `H` ([`Harness::block_on`]) in a thread of its own, and fails instead of
/// hanging if it takes longer than [`WATCHDOG`].
///
/// # Panics
///
/// With the body's panic (a failed assertion), or ``watchdog: `NAME` hung`` after
/// [`WATCHDOG`] (the hung thread is left behind).
#[track_caller]
pub fn run<H: Harness, F, Fut>(name: &str, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (done, finished) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                H::block_on(body());
            }));
            let _ = done.send(());
            result
        })
        .expect("spawn the test thread");
    match finished.recv_timeout(WATCHDOG) {
        Ok(()) => {
            if let Err(payload) = thread.join().expect("the test thread reports its panic") {
                std::panic::resume_unwind(payload);
            }
        }
        Err(_) => panic!("watchdog: `{name}` hung for {WATCHDOG:?}"),
    }
}

/// Instantiates every rule for one setup: a module `$name` with one `#[test]` per rule of
/// [`RULES`] (and, with the `stats` feature, a module `$name::stats` with one per
/// statistics rule), named after the rule, plus a `support_table` test that prints which
/// rules the setup runs and which it reports as unsupported.
///
/// `conformance!(my_runtime, MyHarness);` in an integration test; then
/// `cargo test -- my_runtime::` runs the suite, and
/// `cargo test -- --nocapture my_runtime::support_table` prints the table. The crate docs
/// walk through a whole harness.
#[macro_export]
macro_rules! conformance {
    ($name:ident, $harness:ty) => {
        mod $name {
            #[allow(unused_imports, reason = "the harness type is named at the call site")]
            use super::*;

            $crate::__conformance_tests!(
                $harness; rules;
                coalesces_concurrent_callers,
                different_keys_do_not_wait,
                borrowed_key_joins_without_allocating_a_key,
                fallible_work_shares_the_error,
                panic_reaches_waiters_with_its_message,
                key_is_not_poisoned_after_a_panic,
                role_tells_leader_from_waiter,
                leader_drop_takeover_runs_one_execution_at_a_time,
                leader_drop_fail_waiters,
                dropped_waiter_affects_no_one_else,
                detached_work_survives_all_callers_leaving,
                detached_panic_reaches_every_caller,
                blocking_pool_work_is_coalesced,
                waiter_timeout_ends_only_that_waiter,
                leader_timeout_is_a_cancellation,
                forget_while_in_flight_keeps_the_new_flight,
                forget_absent_key_leaves_nothing,
                forget_all_detaches_every_flight,
                reentrant_call_is_detected,
                unpolled_call_pins_nothing,
                registering_at_the_instant_of_publication,
                cancellation_churn_leaves_nothing_in_flight,
                observer_counts_every_call_once,
                reuse_inside_the_window_and_not_after,
                errors_are_not_reused_without_the_policy,
                panics_and_cancellations_are_never_reused,
                forget_drops_a_reusable_value,
                refresh_runs_once_under_a_herd,
                a_failed_refresh_serves_the_old_value,
                a_cancelled_trigger_does_not_cancel_the_refresh,
                forget_during_a_refresh_wins,
            );

            /// Prints the setup's support of the contract's rules, and checks that this
            /// module has a test for each.
            #[test]
            fn support_table() {
                let table = $crate::SupportTable::for_rules::<$harness>(
                    ::core::module_path!(),
                    $crate::RULES,
                );
                ::std::println!("{table}");
                $crate::__check_names(&TESTS, $crate::RULES);
            }

            $crate::__stats_tests!($harness);
        }
    };
}

/// Without the `stats` feature, [`conformance!`](crate::conformance!) makes no statistics tests.
#[cfg(not(feature = "stats"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __stats_tests {
    ($harness:ty) => {};
}

/// The statistics tests of [`conformance!`](crate::conformance!): a module `stats` with one test per rule of
/// [`stats::RULES`](crate::stats::RULES).
#[cfg(feature = "stats")]
#[doc(hidden)]
#[macro_export]
macro_rules! __stats_tests {
    ($harness:ty) => {
        mod stats {
            #[allow(unused_imports, reason = "the harness type is named at the call site")]
            use super::*;

            $crate::__conformance_tests!(
                $harness; stats;
                six_callers_on_one_flight_are_five_hits_and_one_miss,
                a_failing_flight_counts_one_error,
                a_panic_is_counted_once,
                a_leader_drop_and_the_takeover_are_each_counted_once,
                a_leader_drop_that_fails_the_waiters_is_counted_once,
                a_dropped_waiter_is_a_hit_and_changes_nothing_else,
                a_waiter_timeout_is_a_timeout_and_a_hit,
                a_leader_timeout_is_a_timeout_a_leader_drop_and_a_takeover,
                reset_during_a_flight_never_leaves_active_negative,
                detached_work_is_one_miss_and_its_joiners_are_hits,
                detached_work_outlives_its_callers_timeout,
                hits_plus_misses_is_the_number_of_calls,
                a_reentrant_call_is_not_counted,
            );

            /// Prints the setup's support of the statistics rules, and checks that this
            /// module has a test for each.
            #[test]
            fn support_table() {
                let table = $crate::SupportTable::for_rules::<$harness>(
                    ::core::module_path!(),
                    $crate::stats::RULES,
                );
                ::std::println!("{table}");
                $crate::__check_names(&TESTS, $crate::stats::RULES);
            }
        }
    };
}

/// Checks that a setup's tests cover `rules` exactly, in order (an implementation detail
/// of [`conformance!`](crate::conformance!)).
#[doc(hidden)]
#[track_caller]
pub fn __check_names(tests: &[&str], rules: &[Rule]) {
    let rules: Vec<&str> = rules.iter().map(|rule| rule.name).collect();
    assert_eq!(
        tests, rules,
        "the macro's tests and the kit's rule table differ"
    );
}

/// The test functions of [`conformance!`](crate::conformance!) (an implementation detail).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($harness:ty; $module:ident; $($test:ident),* $(,)?) => {
        /// The rules this module has a test for.
        const TESTS: [&str; [$(stringify!($test)),*].len()] = [$(stringify!($test)),*];

        $(
            #[test]
            fn $test() {
                $crate::check::<$harness, _, _>(
                    stringify!($test),
                    $crate::$module::$test::<$harness>,
                );
            }
        )*
    };
}
