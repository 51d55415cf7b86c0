//! A real SQLite database behind a pool of connections, and the service's deliberately
//! heavy query.
//!
//! The database is a file in the system's temporary directory, created and filled by
//! [`Db::create`] and deleted when the last handle goes. The pool is a fixed set of
//! read-only connections guarded by an `async_lock::Semaphore`: a request waits for a
//! permit, then runs its query on tokio's blocking pool (SQLite calls block).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_lock::Semaphore;
use rusqlite::{Connection, OpenFlags, params};

/// Customers in the generated data; orders are spread over them.
pub const CUSTOMERS: u64 = 1_000;

/// The heavy query: a revenue leaderboard over every order, then one customer's place on
/// it. Aggregating the whole table on every request is what makes it expensive — exactly
/// the kind of query a herd of identical requests turns into an outage.
const REPORT: &str = "
    WITH totals AS MATERIALIZED (
        SELECT customer, count(*) AS orders, sum(amount) AS revenue
        FROM orders GROUP BY customer
    )
    SELECT t.orders, t.revenue,
           (SELECT count(*) FROM totals WHERE revenue > t.revenue) + 1,
           (SELECT count(*) FROM totals)
    FROM totals AS t WHERE t.customer = ?1";

/// One customer's line on the revenue leaderboard.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The customer.
    pub customer: u64,
    /// Orders the customer placed.
    pub orders: i64,
    /// Their total value.
    pub revenue: f64,
    /// Place on the leaderboard (1 = highest revenue).
    pub rank: i64,
    /// Customers on the leaderboard.
    pub of: i64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "customer {}: {} orders, revenue {:.2}, rank {} of {}",
            self.customer, self.orders, self.revenue, self.rank, self.of
        )
    }
}

/// A database error, as text: it is shared with every coalesced caller, so it must be
/// `Clone`, which `rusqlite::Error` is not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbError(pub String);

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DbError {}

impl From<rusqlite::Error> for DbError {
    fn from(error: rusqlite::Error) -> Self {
        Self(error.to_string())
    }
}

/// A handle to the database and its connection pool; cloning shares both.
#[derive(Clone, Debug)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Connection>>,
    queries: AtomicUsize,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.path)
            .field("queries", &self.queries)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Close every connection before deleting the file.
        self.idle.get_mut().map(Vec::clear).ok();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Db {
    /// Creates a database of `orders` orders (spread evenly over up to [`CUSTOMERS`]
    /// customers, numbered from 1; deterministic data) in a new temporary file, and a pool of `connections` read-only connections.
    ///
    /// # Errors
    ///
    /// If SQLite cannot create, fill or open the file.
    pub fn create(orders: u64, connections: usize) -> Result<Self, DbError> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "singleflight-demo-{}-{}.sqlite3",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        fill(&path, orders).inspect_err(|_| {
            let _ = std::fs::remove_file(&path);
        })?;
        let idle = (0..connections)
            .map(|_| {
                Connection::open_with_flags(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
            })
            .collect::<Result<Vec<_>, _>>();
        let idle = match idle {
            Ok(idle) => idle,
            Err(error) => {
                let _ = std::fs::remove_file(&path);
                return Err(error.into());
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                permits: Arc::new(Semaphore::new(connections)),
                idle: Mutex::new(idle),
                queries: AtomicUsize::new(0),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The pool's permits, one per connection. Holding some takes connections away from
    /// requests, as other traffic would (tests use it to hold a query back).
    pub fn permits(&self) -> &Arc<Semaphore> {
        &self.inner.permits
    }

    /// Report queries run so far.
    pub fn queries(&self) -> usize {
        self.inner.queries.load(Ordering::SeqCst)
    }

    /// Runs the heavy [`Report`] query for `customer` on a pooled connection.
    ///
    /// # Errors
    ///
    /// If the query fails, or the customer has no orders.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future while it waits for a connection gives up its place. Once the
    /// query runs it finishes on the blocking pool and returns its connection to the pool.
    pub async fn report(&self, customer: u64) -> Result<Report, DbError> {
        let permit = self.inner.permits.acquire_arc().await;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let connection = inner
                .idle
                .lock()
                .expect("pool lock")
                .pop()
                .expect("a permit guarantees an idle connection");
            inner.queries.fetch_add(1, Ordering::SeqCst);
            let report = query(&connection, customer);
            inner.idle.lock().expect("pool lock").push(connection);
            drop(permit);
            report
        })
        .await
        .map_err(|join| DbError(format!("query task failed: {join}")))?
    }
}

fn query(connection: &Connection, customer: u64) -> Result<Report, DbError> {
    let mut statement = connection.prepare(REPORT)?;
    let id = i64::try_from(customer).map_err(|_| DbError(format!("no customer {customer}")))?;
    let mut rows = statement.query(params![id])?;
    let row = rows
        .next()?
        .ok_or_else(|| DbError(format!("customer {customer} has no orders")))?;
    Ok(Report {
        customer,
        orders: row.get(0)?,
        revenue: row.get(1)?,
        rank: row.get(2)?,
        of: row.get(3)?,
    })
}

/// Creates the schema and `orders` rows of deterministic pseudo-random data.
fn fill(path: &Path, orders: u64) -> Result<(), DbError> {
    let mut connection = Connection::open(path)?;
    connection.execute_batch(
        "PRAGMA journal_mode = OFF;
         PRAGMA synchronous = OFF;
         CREATE TABLE orders (
             id INTEGER PRIMARY KEY,
             customer INTEGER NOT NULL,
             amount REAL NOT NULL
         );",
    )?;
    let transaction = connection.transaction()?;
    {
        let mut insert =
            transaction.prepare("INSERT INTO orders (customer, amount) VALUES (?1, ?2)")?;
        // Every customer gets orders in turn (customer 1 has some as soon as there are any);
        // amounts come from a fixed linear congruential generator: the same data every run.
        let customers = CUSTOMERS.min(orders).max(1);
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for order in 0..orders {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let customer = (order % customers + 1) as i64;
            let cents = ((state >> 12) % 50_000 + 100) as f64;
            insert.execute(params![customer, cents / 100.0])?;
        }
    }
    transaction.commit()?;
    Ok(())
}
