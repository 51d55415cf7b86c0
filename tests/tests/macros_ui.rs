//! Compile-fail cases of `#[coalesce]` (tests/ui/macros): each misuse and the error it must
//! produce. The `.stderr` files are the expected diagnostics for the supported stable
//! compiler; regenerate them with `TRYBUILD=overwrite` after a compiler upgrade and review
//! the diff.

#[test]
fn coalesce_misuse() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/macros/*.rs");
}
