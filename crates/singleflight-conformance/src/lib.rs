#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// docs.rs (nightly) badges each feature-gated item with the feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod caller;
mod fixtures;
mod harness;
pub mod rules;
mod run;
#[cfg(feature = "stats")]
pub mod stats;

pub use caller::{Caller, CallerSide, Report, drive};
pub use fixtures::{
    Counts, Ends, Gate, PATIENCE, Probe, Work, block_on, panic_message, wait_until, yield_now,
};
pub use harness::{Capabilities, Harness, Kind, Offload, Spec, Support, Value};
pub use run::{RULES, Rule, SupportTable, WATCHDOG, all_rules, check, rule, run};

#[doc(hidden)]
pub use run::__check_names;

/// Without the `stats` feature, [`conformance!`] makes no statistics tests.
#[cfg(not(feature = "stats"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __stats_tests {
    ($harness:ty) => {};
}

/// The statistics tests of [`conformance!`]: a module `stats` with one test per rule of
/// [`stats::RULES`].
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
