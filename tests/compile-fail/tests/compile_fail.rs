//! Compile-fail cases: what the type system must reject (`ui/*.rs`) and each misuse of
//! `#[coalesce]` (`ui/macros/*.rs`), with the error it must produce. The `.stderr` files are
//! the expected diagnostics for the supported stable compiler; regenerate them with
//! `TRYBUILD=overwrite` after a compiler upgrade and review the diff.
//!
//! One test, so that trybuild builds the dependencies and checks every case in one batch.

#[test]
fn compile_fail() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/*.rs");
    cases.compile_fail("ui/macros/*.rs");
}
