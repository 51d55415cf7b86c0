//! Errors that fit `?`: work errors that are not `Clone` (shared as one `Arc`), `Error<E>` as
//! a `std::error::Error` with its source, conversions into `io::Error`, a boxed error, an
//! application's own error type, and HTTP statuses.

use std::error::Error as _;
use std::fmt;
use std::io;
use std::sync::Arc;

use futures_lite::future::zip;
use singleflight_tests::{Gate, wait_until};
use singleflight_tokio::{Error, Group};

fn not_found() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "no such row")
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn an_io_error_reaches_the_leader_and_its_waiter_as_one_arc() {
    current_thread().block_on(async {
        let rows = Group::<u64, Result<String, Arc<io::Error>>>::new();
        let release = Gate::new();
        let leader = rows.try_call_arc(&1, || async {
            release.opened().await;
            Err(not_found())
        });
        let waiter = rows.try_call_arc(&1, || async { unreachable!("the waiter joins") });
        let opener = async {
            while rows.waiters(&1) < 1 {
                tokio::task::yield_now().await;
            }
            release.open();
        };
        let (leader, (waiter, ())) = zip(leader, zip(waiter, opener)).await;
        let (Err(Error::Failed(a)), Err(Error::Failed(b))) = (leader, waiter) else {
            panic!("both callers must see the work's error");
        };
        assert!(Arc::ptr_eq(&a, &b), "one error, shared");
        assert_eq!(a.kind(), io::ErrorKind::NotFound);
        assert_eq!(rows.in_flight(), 0);
    });
}

#[test]
fn question_mark_turns_a_shared_io_error_into_an_io_error_of_the_same_kind() {
    async fn read(rows: &Group<u64, Result<String, Arc<io::Error>>>) -> io::Result<String> {
        Ok(rows.try_call_arc(&1, || async { Err(not_found()) }).await?)
    }
    let rows = Group::new();
    let error = current_thread().block_on(read(&rows)).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::NotFound);
    assert_eq!(error.to_string(), "no such row");
}

#[test]
fn io_errors_convert_with_their_kind_and_timeouts_as_timed_out() {
    let error: io::Error = Error::Failed(not_found()).into();
    assert_eq!(error.kind(), io::ErrorKind::NotFound);
    let error: io::Error = Error::<io::Error>::Timeout.into();
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    let error: io::Error = Error::<Arc<io::Error>>::LeaderDropped.into();
    assert_eq!(error.kind(), io::ErrorKind::Other);
    assert!(error.to_string().contains("dropped"), "{error}");
}

#[test]
fn question_mark_boxes_a_shared_io_error_with_the_io_error_as_its_source() {
    async fn read(
        rows: &Group<u64, Result<String, Arc<io::Error>>>,
    ) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        Ok(rows.try_call_arc(&1, || async { Err(not_found()) }).await?)
    }
    let rows = Group::new();
    let error = current_thread().block_on(read(&rows)).unwrap_err();
    assert_eq!(error.to_string(), "coalesced work failed: no such row");
    let source = error.source().expect("the work's error is the source");
    let io = source
        .downcast_ref::<Arc<io::Error>>()
        .expect("the shared io::Error");
    assert_eq!(io.kind(), io::ErrorKind::NotFound);
}

#[test]
fn detached_work_shares_an_io_error_too() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    rt.block_on(async {
        let rows = Group::<String, Result<String, Arc<io::Error>>>::new();
        let error = rows
            .try_call_detached_arc("k", || async { Err(not_found()) })
            .await
            .unwrap_err();
        assert_eq!(
            error.into_failed().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
    });
}

#[test]
fn blocking_and_smol_groups_share_io_errors_as_well() {
    let files = singleflight_blocking::Group::<u64, Result<u8, Arc<io::Error>>>::new();
    let release = Gate::new();
    let (leader, waiter) = std::thread::scope(|s| {
        let leader = s.spawn(|| {
            files.try_call_arc(&1, || {
                release.wait();
                Err(not_found())
            })
        });
        wait_until("the leader runs", || files.in_flight() == 1);
        let waiter = s.spawn(|| files.try_call_arc(&1, || unreachable!("the waiter joins")));
        wait_until("the waiter joins", || files.waiters(&1) == 1);
        release.open();
        (leader.join().unwrap(), waiter.join().unwrap())
    });
    let (Err(Error::Failed(a)), Err(Error::Failed(b))) = (leader, waiter) else {
        panic!("both threads must see the work's error");
    };
    assert!(Arc::ptr_eq(&a, &b));

    let rates = singleflight_smol::Group::<u64, Result<u8, Arc<io::Error>>>::new();
    let error = smol::block_on(rates.try_call_arc(&1, || async { Err(not_found()) }));
    assert_eq!(
        error.unwrap_err().into_failed().map(|e| e.kind()),
        Some(io::ErrorKind::NotFound)
    );
}

/// An application's own error, as in the README.
#[derive(Clone, Debug, PartialEq)]
struct DbError(String);

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "database: {}", self.0)
    }
}

impl std::error::Error for DbError {}

#[derive(Debug, PartialEq)]
enum AppError {
    Db(DbError),
    Coalescing(Error),
}

impl From<DbError> for AppError {
    fn from(e: DbError) -> Self {
        Self::Db(e)
    }
}

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        Self::Coalescing(e)
    }
}

impl From<Error<DbError>> for AppError {
    fn from(e: Error<DbError>) -> Self {
        e.flatten_into()
    }
}

async fn user_name(
    users: &Group<u64, Result<String, DbError>>,
    id: u64,
) -> Result<String, AppError> {
    let name = users
        .try_call(&id, || async move {
            if id == 0 {
                Err(DbError("no user 0".into()))
            } else {
                Ok(format!("user {id}"))
            }
        })
        .await?;
    Ok(name.to_uppercase())
}

#[test]
fn question_mark_turns_a_call_error_into_the_applications_own_error() {
    let users = Group::new();
    let rt = current_thread();
    assert_eq!(rt.block_on(user_name(&users, 7)), Ok("USER 7".to_string()));
    assert_eq!(
        rt.block_on(user_name(&users, 0)),
        Err(AppError::Db(DbError("no user 0".into())))
    );
    let timed_out: Result<(), AppError> = Err(Error::<DbError>::Timeout.into());
    assert_eq!(timed_out, Err(AppError::Coalescing(Error::Timeout)));
}

#[test]
fn a_failed_call_is_an_error_whose_source_is_the_works_error() {
    let error = Error::Failed(DbError("down".into()));
    assert_eq!(error.to_string(), "coalesced work failed: database: down");
    let source = error.source().expect("a source");
    assert_eq!(
        source.downcast_ref::<DbError>(),
        Some(&DbError("down".into()))
    );
    assert!(Error::<DbError>::Timeout.source().is_none());
    assert!(
        Error::<DbError>::Panicked(singleflight_tokio::PanicMessage::new("boom"))
            .source()
            .is_none()
    );
}

#[test]
fn a_string_error_boxes_for_question_mark() {
    fn price(outcome: Result<f64, Error<String>>) -> Result<f64, Box<dyn std::error::Error>> {
        Ok(outcome.map_err(Error::into_boxed)?)
    }
    assert_eq!(price(Ok(1.5)).unwrap(), 1.5);
    let error = price(Err(Error::Failed("market closed".into()))).unwrap_err();
    assert_eq!(error.to_string(), "coalesced work failed: market closed");
    assert_eq!(error.source().unwrap().to_string(), "market closed");
    let error = price(Err(Error::Reentrant)).unwrap_err();
    assert!(error.source().is_none());
}

#[test]
fn call_errors_map_to_http_statuses_and_the_works_errors_as_told() {
    let status = |e: &Error<DbError>| e.http_status(|_| 418);
    assert_eq!(status(&Error::Failed(DbError("x".into()))), 418);
    assert_eq!(status(&Error::Timeout), 504);
    assert_eq!(status(&Error::LeaderDropped), 503);
    assert_eq!(status(&Error::Reentrant), 500);
    assert_eq!(
        status(&Error::Panicked(singleflight_tokio::PanicMessage::new(
            "boom"
        ))),
        500
    );
}

#[test]
fn split_failed_separates_the_works_error_from_the_call_errors() {
    assert_eq!(Error::Failed(3).split_failed(), Ok(3));
    assert_eq!(
        Error::<i32>::LeaderDropped.split_failed(),
        Err(Error::LeaderDropped)
    );
}
