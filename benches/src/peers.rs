//! One interface over every coalescer the benchmarks compare: ours and the peers.
//!
//! Each contender is a zero-sized-or-small type implementing [`AsyncCoalescer`] or
//! [`BlockingCoalescer`] for `u64` keys and `u64` values, calling the peer's own API the
//! way its documentation shows. Caches (quick_cache, moka) stand in for a coalescer by
//! removing the entry once the loader has filled it, so that a later call runs the work
//! again, as a coalescer's would; that removal is part of their cost.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use crate::baseline::MutexCondvarGroup;
use crate::blocking_herd::{
    BlockingHerdContender, CONDVAR_FLOOR, UNPARK_FLOOR, blocking_herd, condvar_floor, unpark_floor,
};
pub use crate::coalescer::{AsyncCoalescer, BlockingCoalescer, Payload, Value};
pub use crate::ours::{Ours, OursBlocking};
use crate::scenarios::{AsyncContender, BlockingContender, async_contender, blocking_contender};
use crate::shared_baseline::SharedGroup;

/// Ours with a [`singleflight_stats::Stats`] observer attached.
#[derive(Debug)]
pub struct OursStats<V = u64>(singleflight_tokio::Group<u64, V>);

impl<V: Value> AsyncCoalescer<V> for OursStats<V> {
    const NAME: &'static str = "singleflight + Stats";

    fn create() -> Self {
        let stats = Arc::new(singleflight_stats::Stats::new());
        Self(singleflight_tokio::Group::new().with_observer(stats))
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

/// The `futures::Shared` + `Mutex<HashMap>` baseline.
#[derive(Debug)]
pub struct SharedBaseline<V = u64>(SharedGroup<u64, V>);

impl<V: Value> AsyncCoalescer<V> for SharedBaseline<V> {
    const NAME: &'static str = "Shared+Mutex baseline";

    fn create() -> Self {
        Self(SharedGroup::new())
    }

    async fn call<F, Fut>(&self, key: u64, work: F) -> V
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        self.0.call(&key, work).await
    }
}

/// `uniflight::Merger`.
#[derive(Debug)]
pub struct Uniflight<V = u64>(uniflight::Merger<u64, V>);

impl<V: Value> AsyncCoalescer<V> for Uniflight<V> {
    const NAME: &'static str = "uniflight";

    fn create() -> Self {
        Self(uniflight::Merger::new())
    }

    async fn call<F, Fut>(&self, key: u64, work: F) -> V
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        self.0
            .execute(&key, work)
            .await
            .expect("the work does not panic")
    }
}

/// `quick_cache::sync::Cache` placeholder guards, entry removed after the fill.
#[derive(Debug)]
pub struct QuickCache<V = u64>(quick_cache::sync::Cache<u64, V>);

impl<V: Value> QuickCache<V> {
    fn new() -> Self {
        Self(quick_cache::sync::Cache::new(4096))
    }
}

impl<V: Value> AsyncCoalescer<V> for QuickCache<V> {
    const NAME: &'static str = "quick_cache";

    fn create() -> Self {
        Self::new()
    }

    async fn call<F, Fut>(&self, key: u64, work: F) -> V
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        match self.0.get_value_or_guard_async(&key).await {
            Ok(value) => value,
            Err(guard) => {
                let value = work().await;
                let _ = guard.insert(value.clone());
                self.0.remove(&key);
                value
            }
        }
    }
}

impl BlockingCoalescer for QuickCache {
    const NAME: &'static str = "quick_cache (sync)";

    fn create() -> Self {
        Self::new()
    }

    fn call(&self, key: u64, work: impl FnOnce() -> u64) -> u64 {
        match self.0.get_value_or_guard(&key, None) {
            quick_cache::sync::GuardResult::Value(value) => value,
            quick_cache::sync::GuardResult::Guard(guard) => {
                let value = work();
                let _ = guard.insert(value);
                self.0.remove(&key);
                value
            }
            quick_cache::sync::GuardResult::Timeout => unreachable!("no timeout was set"),
        }
    }
}

/// `asyncband::singleflight::Group`.
#[derive(Debug)]
pub struct Asyncband<V = u64>(asyncband::singleflight::Group<u64, V>);

impl<V: Value> AsyncCoalescer<V> for Asyncband<V> {
    const NAME: &'static str = "asyncband";

    fn create() -> Self {
        Self(asyncband::singleflight::Group::new())
    }

    async fn call<F, Fut>(&self, key: u64, work: F) -> V
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        self.0.work(key, async move || work().await).await
    }
}

/// `singleflight_async::SingleFlight`.
#[derive(Debug)]
pub struct SingleflightAsync<V = u64>(singleflight_async::SingleFlight<u64, V>);

impl<V: Value> AsyncCoalescer<V> for SingleflightAsync<V> {
    const NAME: &'static str = "singleflight-async";

    fn create() -> Self {
        Self(singleflight_async::SingleFlight::new())
    }

    async fn call<F, Fut>(&self, key: u64, work: F) -> V
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        self.0.work(key, work).await
    }
}

/// `rs_singleflight::Group` (`do_call`, values cloned out of its `Arc`).
pub struct RsSingleflight<V = u64>(rs_singleflight::Group<u64, V, Infallible>);

impl<V> std::fmt::Debug for RsSingleflight<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsSingleflight").finish_non_exhaustive()
    }
}

impl<V: Value> AsyncCoalescer<V> for RsSingleflight<V> {
    const NAME: &'static str = "rs-singleflight";

    fn create() -> Self {
        Self(rs_singleflight::Group::new())
    }

    async fn call<F, Fut>(&self, key: u64, work: F) -> V
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        let result = self
            .0
            .do_call(key, || async move { Ok::<_, Infallible>(work().await) })
            .await;
        match result {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }
}

/// `async_singleflight::UnaryGroup`.
#[derive(Debug)]
pub struct AsyncSingleflight<V = u64>(async_singleflight::UnaryGroup<u64, V>);

impl<V: Value> AsyncCoalescer<V> for AsyncSingleflight<V> {
    const NAME: &'static str = "async_singleflight";

    fn create() -> Self {
        Self(async_singleflight::UnaryGroup::new())
    }

    async fn call<F, Fut>(&self, key: u64, work: F) -> V
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        self.0.work(&key, work()).await
    }
}

/// `moka::future::Cache::get_with`, entry invalidated by the caller that filled it.
pub struct Moka<V = u64>(moka::future::Cache<u64, V>);

impl<V> std::fmt::Debug for Moka<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moka").finish_non_exhaustive()
    }
}

impl<V: Value> AsyncCoalescer<V> for Moka<V> {
    const NAME: &'static str = "moka";

    fn create() -> Self {
        Self(moka::future::Cache::new(4096))
    }

    async fn call<F, Fut>(&self, key: u64, work: F) -> V
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        let mut filled = false;
        let value = self
            .0
            .get_with(key, async {
                filled = true;
                work().await
            })
            .await;
        if filled {
            self.0.invalidate(&key).await;
        }
        value
    }
}

/// `moka::sync::Cache::get_with`, entry invalidated by the caller that filled it.
#[derive(Debug)]
pub struct MokaSync(moka::sync::Cache<u64, u64>);

impl BlockingCoalescer for MokaSync {
    const NAME: &'static str = "moka (sync)";

    fn create() -> Self {
        Self(moka::sync::Cache::new(4096))
    }

    fn call(&self, key: u64, work: impl FnOnce() -> u64) -> u64 {
        let mut filled = false;
        let value = self.0.get_with(key, || {
            filled = true;
            work()
        });
        if filled {
            self.0.invalidate(&key);
        }
        value
    }
}

/// Ours (blocking) with a [`singleflight_stats::Stats`] observer attached.
#[derive(Debug)]
pub struct OursBlockingStats(singleflight_blocking::Group<u64, u64>);

impl BlockingCoalescer for OursBlockingStats {
    const NAME: &'static str = "singleflight-blocking + Stats";

    fn create() -> Self {
        let stats = Arc::new(singleflight_stats::Stats::new());
        Self(singleflight_blocking::Group::new().with_observer(stats))
    }

    fn call(&self, key: u64, work: impl FnOnce() -> u64) -> u64 {
        self.0.call(&key, work).expect("the work does not panic")
    }
}

/// The `Mutex<HashMap>` + `Condvar` baseline.
#[derive(Debug)]
pub struct CondvarBaseline(MutexCondvarGroup<u64, u64>);

impl BlockingCoalescer for CondvarBaseline {
    const NAME: &'static str = "Mutex+Condvar baseline";

    fn create() -> Self {
        Self(MutexCondvarGroup::new())
    }

    fn call(&self, key: u64, work: impl FnOnce() -> u64) -> u64 {
        self.0.call(&key, work)
    }
}

/// No coalescing at all: the work is just called. The floor.
#[derive(Debug)]
pub struct NoCoalescing;

impl<V: Value> AsyncCoalescer<V> for NoCoalescing {
    const NAME: &'static str = "no coalescing";

    fn create() -> Self {
        Self
    }

    async fn call<F, Fut>(&self, _key: u64, work: F) -> V
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        work().await
    }
}

impl BlockingCoalescer for NoCoalescing {
    const NAME: &'static str = "no coalescing";

    fn create() -> Self {
        Self
    }

    fn call(&self, _key: u64, work: impl FnOnce() -> u64) -> u64 {
        work()
    }
}

/// Ours, then every async peer (the baseline first). The no-coalescing floor and the
/// stats variant are not in the list.
pub fn async_contenders() -> Vec<AsyncContender> {
    vec![
        async_contender::<Ours, Ours<Payload>>(),
        async_contender::<SharedBaseline, SharedBaseline<Payload>>(),
        async_contender::<Uniflight, Uniflight<Payload>>(),
        async_contender::<QuickCache, QuickCache<Payload>>(),
        async_contender::<Asyncband, Asyncband<Payload>>(),
        async_contender::<SingleflightAsync, SingleflightAsync<Payload>>(),
        async_contender::<RsSingleflight, RsSingleflight<Payload>>(),
        async_contender::<AsyncSingleflight, AsyncSingleflight<Payload>>(),
        async_contender::<Moka, Moka<Payload>>(),
    ]
}

/// Ours, then every blocking peer (the baseline first).
pub fn blocking_contenders() -> Vec<BlockingContender> {
    vec![
        blocking_contender::<OursBlocking>(),
        blocking_contender::<CondvarBaseline>(),
        blocking_contender::<QuickCache>(),
        blocking_contender::<MokaSync>(),
    ]
}

/// Ours, the blocking peers (the textbook `Mutex<HashMap>` + `Condvar` coalescer first),
/// then the two floors: a bare `Condvar::notify_all`, and a bare `unpark` per thread.
pub fn blocking_herd_contenders() -> Vec<BlockingHerdContender> {
    fn of<C: BlockingCoalescer>() -> BlockingHerdContender {
        BlockingHerdContender {
            name: C::NAME,
            run: blocking_herd::<C>,
        }
    }
    vec![
        of::<OursBlocking>(),
        of::<CondvarBaseline>(),
        of::<QuickCache>(),
        of::<MokaSync>(),
        BlockingHerdContender {
            name: CONDVAR_FLOOR,
            run: condvar_floor,
        },
        BlockingHerdContender {
            name: UNPARK_FLOOR,
            run: unpark_floor,
        },
    ]
}
