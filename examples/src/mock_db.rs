//! The simulated database of shared-call-py's `mock_db_query`: a pool of connections, and
//! queries that slow down as more of them run at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_lock::Semaphore;

use crate::scale::Scale;

/// A database with a connection pool whose queries take `base + per_running × n`, where
/// `n` is the number of queries running when one starts (itself included): the more load,
/// the slower every query, as on a real database.
#[derive(Debug)]
pub struct MockDb {
    pool: Semaphore,
    running: AtomicUsize,
    queries: AtomicUsize,
    base: Duration,
    per_running: Duration,
}

impl MockDb {
    /// shared-call-py's database: `connections` connections, 50 ms + 10 ms × queries
    /// running, both latencies scaled by `scale`.
    pub fn new(connections: usize, scale: Scale) -> Self {
        Self {
            pool: Semaphore::new(connections),
            running: AtomicUsize::new(0),
            queries: AtomicUsize::new(0),
            base: scale.ms(50.0),
            per_running: scale.ms(10.0),
        }
    }

    /// Runs a query for `user` on a pooled connection, waiting for a free connection first.
    pub async fn query(&self, user: u64) -> String {
        let _connection = self.pool.acquire().await;
        let latency = self.start();
        tokio::time::sleep(latency).await;
        self.finish(user)
    }

    /// [`query`](Self::query) for threads: blocks on the pool and on the query.
    pub fn query_blocking(&self, user: u64) -> String {
        let _connection = self.pool.acquire_blocking();
        let latency = self.start();
        std::thread::sleep(latency);
        self.finish(user)
    }

    /// Queries run so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    fn start(&self) -> Duration {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.base + self.per_running * running as u32
    }

    fn finish(&self, user: u64) -> String {
        self.running.fetch_sub(1, Ordering::SeqCst);
        format!("user {user}: Ada Lovelace")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_slow_down_with_the_queries_running_beside_them() {
        let db = MockDb::new(10, Scale::new(1.0));
        assert_eq!(db.start(), Duration::from_millis(60));
        assert_eq!(db.start(), Duration::from_millis(70));
        assert_eq!(db.finish(1), "user 1: Ada Lovelace");
        assert_eq!(db.start(), Duration::from_millis(70));
        assert_eq!(db.queries(), 3);
    }

    #[test]
    fn a_query_waits_for_a_free_connection() {
        let db = MockDb::new(1, Scale::new(0.01));
        let held = db.pool.try_acquire().expect("the only connection");
        std::thread::scope(|s| {
            let query = s.spawn(|| db.query_blocking(7));
            // The query cannot start while the connection is taken.
            assert_eq!(db.queries(), 0);
            drop(held);
            assert_eq!(query.join().expect("query thread"), "user 7: Ada Lovelace");
        });
        assert_eq!(db.queries(), 1);
    }
}
