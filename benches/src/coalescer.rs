//! The interface every contender implements, apart from the contenders themselves, so that
//! the scenarios (`scenarios.rs`, `blocking_herd.rs`) depend on nothing but it: the A/B
//! binary (`bin/ab.rs`) compiles them against another copy of the library.

use std::future::Future;

/// What an async coalescer hands its callers: `u64` in most scenarios, [`Payload`] in the
/// herd.
pub trait Value: Clone + Send + Sync + 'static {}

impl<V: Clone + Send + Sync + 'static> Value for V {}

/// The herd's value: 1 KiB, made by the work, shared by reference count (as the docs tell
/// users to share big values).
pub type Payload = bytes::Bytes;

/// An async coalescer of `u64` keys to `V` values, shareable across tasks.
pub trait AsyncCoalescer<V: Value = u64>: Send + Sync + 'static {
    /// The contender's name in tables and charts.
    const NAME: &'static str;

    /// An empty coalescer.
    fn create() -> Self;

    /// Runs `work` for `key`, or joins the run in progress, and returns its value.
    fn call<F, Fut>(&self, key: u64, work: F) -> impl Future<Output = V> + Send
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static;
}

/// A blocking coalescer of `u64` keys to `u64` values, shareable across threads.
pub trait BlockingCoalescer: Send + Sync + 'static {
    /// The contender's name in tables and charts.
    const NAME: &'static str;

    /// An empty coalescer.
    fn create() -> Self;

    /// Runs `work` for `key`, or waits for the run in progress, and returns its value.
    fn call(&self, key: u64, work: impl FnOnce() -> u64) -> u64;
}
