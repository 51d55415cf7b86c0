//! Compile-fail tests (in `tests/`): each case under `ui/` must fail to compile with the
//! diagnostic in its `.stderr` file. The library itself is empty.
