//! Baselines the criterion benchmarks in `benches/` measure the crates against; see
//! `benches/README.md` for the scenarios and how to run them.

pub mod baseline;
