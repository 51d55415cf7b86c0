//! Runnable examples live in `examples/`; run one with `cargo run --release -p singleflight-examples --example <name>`.
