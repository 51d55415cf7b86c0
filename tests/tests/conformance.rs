//! The semantics contract (DESIGN.md), run on every runtime setup with the same test names:
//! `cargo test -p singleflight-tests --test conformance -- tokio_current_thread::` runs one.

use singleflight_tests::conformance::{
    AsyncHarness, AsyncStd, Blocking, Smol, TokioCurrentThread, TokioMultiThread,
};

singleflight_tests::conformance!(blocking, Blocking);
singleflight_tests::conformance!(tokio_current_thread, AsyncHarness<TokioCurrentThread>);
singleflight_tests::conformance!(tokio_multi_thread, AsyncHarness<TokioMultiThread>);
singleflight_tests::conformance!(smol, AsyncHarness<Smol>);
singleflight_tests::conformance!(async_std, AsyncHarness<AsyncStd>);
