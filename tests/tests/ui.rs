//! Compile-fail cases (tests/ui): what the type system must reject. Each `.stderr` file is
//! the expected diagnostic; regenerate with `TRYBUILD=overwrite` after a compiler upgrade.

#[test]
fn compile_fail() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/*.rs");
}
