//! Baselines, peer adapters and scenarios that the criterion benchmarks in `benches/` and
//! the comparison report (`src/bin/report.rs`) share; see `benches/README.md` for the
//! scenarios and how to run them.

pub mod baseline;
pub mod blocking_herd;
pub mod coalescer;
pub mod ours;
pub mod peers;
pub mod scenarios;
pub mod shared_baseline;
