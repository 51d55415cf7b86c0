//! Our contenders: `singleflight-tokio`'s and `singleflight-blocking`'s `Group`, apart from
//! the peers so that the A/B binary (`bin/ab.rs`) can build them against another copy of
//! the library.

use std::future::Future;

use crate::coalescer::{AsyncCoalescer, BlockingCoalescer, Value};

/// `singleflight-tokio`'s `Group` (ours).
#[derive(Debug)]
pub struct Ours<V = u64>(singleflight_tokio::Group<u64, V>);

impl<V: Value> AsyncCoalescer<V> for Ours<V> {
    const NAME: &'static str = "singleflight (ours)";

    fn create() -> Self {
        Self(singleflight_tokio::Group::new())
    }

    async fn call<F, Fut>(&self, key: u64, work: F) -> V
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        self.0
            .call(&key, work)
            .await
            .expect("the work neither panics nor is cancelled")
    }
}

/// `singleflight-blocking`'s `Group` (ours).
#[derive(Debug)]
pub struct OursBlocking(singleflight_blocking::Group<u64, u64>);

impl BlockingCoalescer for OursBlocking {
    const NAME: &'static str = "singleflight-blocking (ours)";

    fn create() -> Self {
        Self(singleflight_blocking::Group::new())
    }

    fn call(&self, key: u64, work: impl FnOnce() -> u64) -> u64 {
        self.0.call(&key, work).expect("the work does not panic")
    }
}
