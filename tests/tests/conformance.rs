//! The semantics contract (DESIGN.md), run through the conformance kit on every runtime setup
//! with the same test names: `cargo test -p singleflight-tests --test conformance --
//! tokio_current_thread::` runs one setup; `-- --nocapture support_table` prints which rules
//! each setup runs and which it reports as unsupported.

use singleflight_tests::embassy::Embassy;
use singleflight_tests::setups::{
    AsyncHarness, AsyncStd, Blocking, Smol, TokioCurrentThread, TokioMultiThread,
};

singleflight_conformance::conformance!(blocking, Blocking);
singleflight_conformance::conformance!(tokio_current_thread, AsyncHarness<TokioCurrentThread>);
singleflight_conformance::conformance!(tokio_multi_thread, AsyncHarness<TokioMultiThread>);
singleflight_conformance::conformance!(smol, AsyncHarness<Smol>);
singleflight_conformance::conformance!(async_std, AsyncHarness<AsyncStd>);
singleflight_conformance::conformance!(embassy, Embassy);
