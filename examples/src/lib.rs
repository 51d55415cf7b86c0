//! Runnable stories of request coalescing, and the pieces they share.
//!
//! The examples (`examples/`) retell shared-call-py's three scenarios — `mock_db_query`
//! (and `mock_db_query_blocking` on threads), `thundering_herd`, `ratelimit` — and run a
//! real service, `axum_sqlite`: an axum server reading a SQLite database through a pool of
//! connections, under a load generator of its own. This library holds what they share:
//!
//! * [`report`]: latencies, percentiles and the WITHOUT / WITH / improvement report;
//! * [`scale`]: `--quick` and `SCALE`, which shrink simulated latencies for CI;
//! * [`mock_db`]: the simulated database of `mock_db_query`;
//! * [`db`], [`server`], [`load`]: the demo service's database, HTTP server and load
//!   generator (the tests in `tests/` drive them too).
//!
//! Everything listens on and connects to 127.0.0.1 only, and every run is bounded.
#![forbid(unsafe_code)]

pub mod db;
pub mod load;
pub mod mock_db;
pub mod report;
pub mod scale;
pub mod server;

// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
mod readme {}
