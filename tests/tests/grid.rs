//! Every kind of call, reached through the request builder: {value, fallible, fallible with
//! an `Arc` error} × {in the caller, detached, on the blocking pool} × {with and without a
//! timeout} on tokio, smol and async-std, and {value, fallible, `Arc`} × {with and without a
//! timeout} on threads. Each cell checks a lone call (its outcome, its role), a waiter that
//! joins (the same outcome, the `Arc` error shared as one), and, with a timeout, that a
//! waiter's timeout ends only that waiter and a leader's ends its work in the caller but not
//! detached or blocking work.

use std::sync::Arc;
use std::time::Duration;

use futures_lite::future::{yield_now, zip};
use singleflight_core::rt::RuntimeGroup;
use singleflight_core::{Error, Role};
use singleflight_tests::setups::{AsyncStd, Runtime, Smol, TokioMultiThread};
use singleflight_tests::{Gate, PATIENCE, wait_until};

/// A timeout that never fires here: the calls it bounds finish at once.
const LONG: Duration = Duration::from_secs(3600);

/// The work's error of the `Arc` cells: not `Clone`, so only `try_call_arc` can share it.
#[derive(Debug)]
struct NotClone;

/// A `Send + 'static` work for the cell's form: async (in the caller, detached) or a
/// blocking closure; held by `gate` if there is one.
macro_rules! work {
    (async, $gate:expr, $out:expr) => {{
        let gate: Option<Gate> = $gate;
        move || async move {
            if let Some(gate) = gate {
                gate.opened().await;
            }
            $out
        }
    }};
    (sync, $gate:expr, $out:expr) => {{
        let gate: Option<Gate> = $gate;
        move || {
            if let Some(gate) = gate {
                gate.wait();
            }
            $out
        }
    }};
}

fn check_value(what: &str, leader: &Result<u64, Error>, waiter: &Result<u64, Error>) {
    assert_eq!((leader, waiter), (&Ok(3), &Ok(3)), "{what}");
}

fn check_fallible(
    what: &str,
    leader: &Result<u64, Error<String>>,
    waiter: &Result<u64, Error<String>>,
) {
    let failed = Err(Error::Failed("no".to_string()));
    assert_eq!((leader, waiter), (&failed, &failed), "{what}");
}

fn check_arc(
    what: &str,
    leader: &Result<u64, Error<Arc<NotClone>>>,
    waiter: &Result<u64, Error<Arc<NotClone>>>,
) {
    match (leader, waiter) {
        (Err(Error::Failed(leader)), Err(Error::Failed(waiter))) => {
            assert!(Arc::ptr_eq(leader, waiter), "{what}: one error, shared");
        }
        other => panic!("{what}: {other:?}"),
    }
}

/// Yields until `condition` holds, failing with `what` after [`PATIENCE`].
async fn until(what: &str, condition: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting until {what}");
        yield_now().await;
    }
}

/// One cell of the async grid: where the work runs (`$steps` after `request`), what it
/// returns (`$terminal`, the group's value `$T`, the work's output `$out`).
macro_rules! cell {
    ($R:ty, $mode:literal, [$($steps:tt)*], $form:ident, $terminal:ident, $T:ty, $out:expr, $check:path) => {{
        let what = concat!($mode, ", ", stringify!($terminal));
        let group =
            RuntimeGroup::<String, $T, <$R as Runtime>::Spawner, <$R as Runtime>::Timer>::new();

        // Alone, without and with a timeout: the leader's outcome, and its role.
        for timeout in [None, Some(LONG)] {
            let request = group.request("alone") $($steps)* .with_role();
            let (outcome, role) = match timeout {
                None => request.$terminal(work!($form, None, $out)).await,
                Some(timeout) => request.timeout(timeout).$terminal(work!($form, None, $out)).await,
            };
            $check(what, &outcome, &outcome);
            assert_eq!(role, Role::Leader { shared: false }, "{what}, {timeout:?}");
            until("the lone flight ends", || group.in_flight() == 0).await;
        }

        // A waiter joins: the same outcome, and each caller's role.
        let gate = Gate::new();
        let leader = group.request("shared") $($steps)* .with_role()
            .$terminal(work!($form, Some(gate.clone()), $out));
        let waiter = group.request("shared") $($steps)* .with_role()
            .$terminal(work!($form, None, $out));
        let opener = async {
            until("the waiter joins", || group.waiters("shared") == 1).await;
            gate.open();
        };
        let ((leader, leader_role), ((waiter, waiter_role), ())) =
            zip(leader, zip(waiter, opener)).await;
        $check(what, &leader, &waiter);
        assert_eq!(leader_role, Role::Leader { shared: true }, "{what}");
        assert_eq!(waiter_role, Role::Waiter, "{what}");

        // A waiter's timeout ends only that waiter: the flight goes on.
        let gate = Gate::new();
        let leader = group.request("held") $($steps)* .$terminal(work!($form, Some(gate.clone()), $out));
        let impatient = async {
            let (outcome, role) = group.request("held") $($steps)* .timeout(<$R>::TIMEOUT)
                .with_role().$terminal(work!($form, None, $out)).await;
            assert!(matches!(outcome, Err(Error::Timeout)), "{what}: {outcome:?}");
            assert_eq!(role, Role::Waiter, "{what}");
            assert!(group.contains("held"), "{what}: the flight goes on");
            gate.open();
        };
        let (leader, ()) = zip(leader, impatient).await;
        $check(what, &leader, &leader);

        // A leader's timeout cancels work in the caller; detached or blocking work goes on.
        let gate = Gate::new();
        let (outcome, role) = group.request("leader") $($steps)* .timeout(<$R>::TIMEOUT)
            .with_role().$terminal(work!($form, Some(gate.clone()), $out)).await;
        assert!(matches!(outcome, Err(Error::Timeout)), "{what}: {outcome:?}");
        assert!(role.is_leader(), "{what}: {role:?}");
        if $mode == "in the caller" {
            assert_eq!(group.in_flight(), 0, "{what}: the work is cancelled");
        } else {
            assert_eq!(group.in_flight(), 1, "{what}: the work goes on");
            gate.open();
            until("the work ends", || group.in_flight() == 0).await;
        }
    }};
}

/// The three kinds of work of one row of the grid.
macro_rules! row {
    ($R:ty, $mode:literal, [$($steps:tt)*], $form:ident) => {
        cell!($R, $mode, [$($steps)*], $form, call, u64, 3u64, check_value);
        cell!(
            $R, $mode, [$($steps)*], $form, try_call, Result<u64, String>,
            Err::<u64, String>("no".to_string()), check_fallible
        );
        cell!(
            $R, $mode, [$($steps)*], $form, try_call_arc, Result<u64, Arc<NotClone>>,
            Err::<u64, NotClone>(NotClone), check_arc
        );
    };
}

fn async_grid<R: Runtime>() {
    let _watchdog = singleflight_tests::watchdog!();
    R::block_on(async {
        row!(R, "in the caller", [], async);
        row!(R, "detached", [.detached()], async);
        row!(R, "on the blocking pool", [.blocking()], sync);
    });
}

#[test]
fn every_cell_on_tokio() {
    async_grid::<TokioMultiThread>();
}

#[test]
fn every_cell_on_smol() {
    async_grid::<Smol>();
}

#[test]
fn every_cell_on_async_std() {
    async_grid::<AsyncStd>();
}

/// One cell of the blocking grid.
macro_rules! blocking_cell {
    ($terminal:ident, $T:ty, $out:expr, $check:path) => {{
        let what = concat!("threads, ", stringify!($terminal));
        let group = singleflight_blocking::Group::<String, $T>::new();

        // Alone, without and with a timeout; the result only unless `with_role`.
        let outcome = group.request("alone").$terminal(work!(sync, None, $out));
        $check(what, &outcome, &outcome);
        let (outcome, role) = group
            .request("alone")
            .timeout(LONG)
            .with_role()
            .$terminal(work!(sync, None, $out));
        $check(what, &outcome, &outcome);
        assert_eq!(role, Role::Leader { shared: false }, "{what}");

        let gate = Gate::new();
        std::thread::scope(|s| {
            let leader = s.spawn(|| {
                group
                    .request("shared")
                    .with_role()
                    .$terminal(work!(sync, Some(gate.clone()), $out))
            });
            wait_until("the leader runs", || group.contains("shared"));
            let waiter = s.spawn(|| {
                group
                    .request("shared")
                    .timeout(LONG)
                    .with_role()
                    .$terminal(work!(sync, None, $out))
            });
            wait_until("the waiter joins", || group.waiters("shared") == 1);
            // A waiter with a short timeout leaves; the flight goes on.
            let (outcome, role) = group
                .request("shared")
                .timeout(Duration::from_millis(20))
                .with_role()
                .$terminal(work!(sync, None, $out));
            assert!(
                matches!(outcome, Err(Error::Timeout)),
                "{what}: {outcome:?}"
            );
            assert_eq!(role, Role::Waiter, "{what}");
            assert!(group.contains("shared"), "{what}: the flight goes on");
            gate.open();
            let ((leader, leader_role), (waiter, waiter_role)) =
                (leader.join().unwrap(), waiter.join().unwrap());
            $check(what, &leader, &waiter);
            assert_eq!(leader_role, Role::Leader { shared: true }, "{what}");
            assert_eq!(waiter_role, Role::Waiter, "{what}");
        });
        assert_eq!(group.in_flight(), 0, "{what}");
    }};
}

#[test]
fn every_cell_on_threads() {
    let _watchdog = singleflight_tests::watchdog!();
    blocking_cell!(call, u64, 3u64, check_value);
    blocking_cell!(
        try_call,
        Result<u64, String>,
        Err::<u64, String>("no".to_string()),
        check_fallible
    );
    blocking_cell!(
        try_call_arc,
        Result<u64, Arc<NotClone>>,
        Err::<u64, NotClone>(NotClone),
        check_arc
    );
}

/// The front-ends' own groups make the same requests (their `request` forwards to the
/// runtime group's), and the shorthands are the builder's calls.
#[test]
fn front_end_groups_reach_the_corners_of_the_grid() {
    let _watchdog = singleflight_tests::watchdog!();
    TokioMultiThread::block_on(async {
        let group = singleflight_tokio::Group::<String, Result<u64, Arc<NotClone>>>::new();
        let outcome = group
            .request("k")
            .blocking()
            .timeout(LONG)
            .try_call_arc(|| Err(NotClone))
            .await;
        assert!(matches!(outcome, Err(Error::Failed(_))));
        let group = singleflight_tokio::Group::<String, u64>::new();
        let (value, role) = group.request("k").with_role().call(|| async { 1 }).await;
        assert_eq!((value, role), (Ok(1), Role::Leader { shared: false }));
    });
    smol::block_on(async {
        let group = singleflight_smol::Group::<String, u64>::new();
        let value = group.request("k").blocking().timeout(LONG).call(|| 2).await;
        assert_eq!(value, Ok(2));
        let group = singleflight_smol::Group::<String, Result<u64, Arc<NotClone>>>::new();
        let outcome = group
            .request("k")
            .timeout(LONG)
            .try_call_arc(|| async { Err(NotClone) })
            .await;
        assert!(matches!(outcome, Err(Error::Failed(_))));
    });
    async_std::task::block_on(async {
        let group = singleflight_async_std::Group::<String, Result<u64, Arc<NotClone>>>::new();
        let (outcome, role) = group
            .request("k")
            .detached()
            .timeout(LONG)
            .with_role()
            .try_call_arc(|| async { Err(NotClone) })
            .await;
        assert!(matches!(outcome, Err(Error::Failed(_))));
        assert!(role.is_leader());
    });
}
