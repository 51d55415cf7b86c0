#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// docs.rs (nightly) badges each feature-gated item with the feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod caller;
#[doc = include_str!("../CONTRACT.md")]
pub mod contract {}
mod fixtures;
mod harness;
pub mod rules;
mod run;
#[cfg(feature = "stats")]
pub mod stats;

pub use caller::{Caller, CallerSide, Report, drive};
pub use fixtures::{
    Counts, Ends, Gate, ManualClock, PATIENCE, Probe, Work, block_on, panic_message, wait_until,
    yield_now,
};
pub use harness::{Capabilities, Harness, Kind, Offload, Spec, Support, Value};
pub use run::{RULES, Rule, SupportTable, WATCHDOG, all_rules, check, rule, run};

#[doc(hidden)]
pub use run::__check_names;
