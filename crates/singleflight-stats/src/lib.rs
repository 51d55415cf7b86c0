//! Statistics for [singleflight](singleflight_core) groups: how many calls were coalesced,
//! how many ran the work, how often it failed, and how long it took.
//!
//! Attach a [`Stats`] to a group with `with_observer`, then read a [`Snapshot`]:
//!
//! ```
//! use std::sync::Arc;
//! use singleflight_blocking::Group;
//! use singleflight_stats::Stats;
//!
//! let stats = Arc::new(Stats::new());
//! let group = Group::<String, String>::new().with_observer(stats.clone());
//!
//! std::thread::scope(|s| {
//!     for _ in 0..8 {
//!         s.spawn(|| group.call("user:42", || "Ada".to_string()));
//!     }
//! });
//!
//! let snapshot = stats.snapshot();
//! assert_eq!(snapshot.calls(), 8); // every call is a hit (joined) or a miss (ran the work)
//! assert!(snapshot.misses >= 1);
//! assert_eq!(snapshot.active, 0);
//! println!("hit rate {:.1}%", snapshot.hit_rate() * 100.0);
//! ```
//!
//! # What is counted
//!
//! Each call counts once, when its role is settled: a **hit** if it joined another caller's
//! flight, a **miss** if it ran the work (a leader, or a waiter promoted after its leader
//! was dropped). Per execution: **errors** (fallible work returned `Err`), **panics**,
//! **leader drops** (the leader was cancelled), and **work time** (total and longest).
//! Per caller: **takeovers** and **timeouts**. **Active** is the number of flights in
//! progress, read from live state, so [`Stats::reset`] never drives it negative. See
//! [`Snapshot`] for the exact definitions.
//!
//! One `Stats` may observe many groups; [`Stats::with_parent`] gives each group its own
//! numbers that also add up into a shared total. [`Fanout`] feeds several observers (say,
//! `Stats` and an exporter) from one group.
//!
//! # Hot keys
//!
//! [`HotKeys`] answers "which keys are stampeding?": a fixed-memory top-K of keys by joins
//! and by executions (a space-saving sketch), fed by a group through
//! [`Stats::with_hot_keys`] (the hooks offer each call's key) or by hand. Keys are never exported by default: the
//! exports of them, [`OtelObserver::observe_hot_keys`] and
//! [`TracingObserver::with_key_hmac`], name each by a keyed hash ([`KeyHmac`]), never by
//! the key itself.
//!
//! # Cost
//!
//! A group without an observer skips every hook. With a `Stats` attached, a call that joins
//! a flight adds one to a counter, and a call that runs the work two (its miss, and the
//! flight's end); flights in progress are derived rather than counted. These counters are
//! striped by thread: each thread counts into a cache line of its own with a plain load
//! and store, not a locked read-modify-write, so counting neither serialises the
//! processor's pipeline nor bounces a line between the threads of a stampede. Nothing
//! locks or allocates per call (a thread's first count takes a slot under a short lock,
//! once). On the uncontended path (one thread, a fresh key per call), five `--quick` runs
//! of the workspace's report on a 2-core virtual machine shared with other builds measured
//! `Stats` 5-9% slower than no observer on the async front-end (47-52 ns against
//! 45-50 ns) and 15-18% on the blocking one (40-45 ns against 35-38 ns), where an observer
//! that counts nothing at all measured 6-10% and 12-16%: on a call this short, calling the
//! hooks costs more than the counting. With a locked atomic add per counter, as before
//! striping, the same machine measured 29-41% and 44-46%.
//!
//! Hot keys ([`Stats::with_hot_keys`]) add a hash of the key and a short lock per call
//! recorded: sampled one call in 64 ([`HotKeys::sampled`]), about 2 ns a call in the
//! workspace's `stats` benchmark (a fresh key per call, or a skewed stream over 1,000
//! keys), whether the group formats its keys or they are held hashed: 1-3% over `Stats`
//! with locked adds, some 4% over the striped counters; recording every call, 55-100%. A
//! recorded call allocates nothing, unless its group formats a key whose owned form
//! allocates (a `String`): then one allocation.
//!
//! Work time is opt-in ([`Stats::timed`]) because it costs more than all the counters: two
//! reads of the monotonic clock per execution, some 25 ns each on that machine (about
//! 105 ns a call in the same benchmark). Calls that join a flight are never timed.
//!
//! Each `Stats` holds its striped counters in one cache line per thread slot, up to twice
//! the available parallelism (from 4 to 64 lines of 64 bytes); threads past them, and
//! builds without `std`, share one line with atomic adds. The rarer counters (errors,
//! takeovers, timeouts, ...) are plain atomics.
//!
//! # Features
//!
//! * `std` (default): work time (`Snapshot::work_time`, `Snapshot::max_work_time`) from
//!   `std::time::Instant`, [`Fanout`] and [`HotKeys`]. Without it the crate is `no_std + alloc` and
//!   needs 64-bit atomics.
//! * `metrics`: [`MetricsObserver`], which reports through the
//!   [`metrics`](https://docs.rs/metrics) facade (implies `std`).
//! * `tracing`: [`TracingObserver`], a span per execution and an event per coalesced caller
//!   through [`tracing`](https://docs.rs/tracing) (implies `std`).
//! * `otel`: [`OtelObserver`], which records through the
//!   [OpenTelemetry](https://docs.rs/opentelemetry) metrics API (the API crate only, with
//!   no dependencies of its own; the application installs the SDK) under OpenTelemetry's
//!   naming rules: see [`instruments`] (implies `std`).
//! * `key-hmac`: [`KeyHmac`], keys turned into keyed hashes (HMAC-SHA256 under an
//!   application secret), the only form in which this crate exports a key; with `otel`,
//!   [`OtelObserver::observe_hot_keys`], with `tracing`, [`TracingObserver::with_key_hmac`]
//!   (implies `std`).
//!
//! # MSRV
//!
//! Rust 1.85.
#![no_std]
#![forbid(unsafe_code)]
// docs.rs (nightly) badges each feature-gated item with the feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(
    not(all(
        feature = "std",
        feature = "metrics",
        feature = "tracing",
        feature = "otel",
        feature = "key-hmac"
    )),
    allow(
        rustdoc::broken_intra_doc_links,
        reason = "the docs link the items of every feature; docs.rs builds with all of them"
    )
)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod clock;
#[cfg(feature = "std")]
mod fanout;
#[cfg(feature = "std")]
mod hot_keys;
#[cfg(feature = "key-hmac")]
mod key_hmac;
#[cfg(feature = "metrics")]
mod metrics;
#[cfg(feature = "otel")]
mod otel;
mod snapshot;
mod stats;
mod striped;
#[cfg(feature = "std")]
mod tokens;
#[cfg(feature = "tracing")]
mod tracing;

#[cfg(feature = "std")]
pub use fanout::Fanout;
#[cfg(feature = "std")]
pub use hot_keys::{HotKey, HotKeys};
#[cfg(feature = "key-hmac")]
pub use key_hmac::KeyHmac;
#[cfg(feature = "metrics")]
pub use metrics::{MetricsObserver, names};
#[cfg(feature = "otel")]
pub use otel::{ErrorType, OtelObserver, Role, instruments};
pub use snapshot::Snapshot;
pub use stats::Stats;
#[cfg(feature = "std")]
pub use stats::TopKeys;
#[cfg(feature = "tracing")]
pub use tracing::{EXECUTION_SPAN, TracingObserver, WAIT_SPAN};

// The README is the registry page: its examples compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
