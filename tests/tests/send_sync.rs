//! Compile-time facts about the public types, in the style of tokio's `async_send_sync.rs`:
//! groups are `Send + Sync`, every future a call returns is `Send` when its key, value and
//! work are, and the guards a front-end builds on can cross threads. A regression here is a
//! build error, not a test failure.

#![allow(dead_code, reason = "the functions exist to be type-checked")]

use std::sync::Arc;
use std::time::Duration;

use singleflight_core::{Entered, Error, Group, PanicMessage, Role};

fn require_send<T: Send>(_: &T) {}
fn require_sync<T: Sync>(_: &T) {}
fn require_unpin<T: Unpin>(_: &T) {}
fn require_send_sync<T: Send + Sync>() {}

#[test]
fn values_and_errors_cross_threads() {
    require_send_sync::<Error<String>>();
    require_send_sync::<PanicMessage>();
    require_send_sync::<Role>();
    require_send_sync::<Group<String, u64>>();
    require_send_sync::<Group<String, Result<Arc<str>, String>>>();
    require_send_sync::<singleflight_blocking::Group<String, u64>>();
    require_send_sync::<singleflight_tokio::Group<String, u64>>();
    require_send_sync::<singleflight_smol::Group<String, u64>>();
    require_send_sync::<singleflight_async_std::Group<String, u64>>();
    require_send_sync::<singleflight_tokio::TokioSpawner>();
    require_send_sync::<singleflight_tokio::TokioTimer>();
    require_send_sync::<singleflight_smol::SmolSpawner>();
    require_send_sync::<singleflight_smol::SmolTimer>();
    require_send_sync::<singleflight_async_std::AsyncStdSpawner>();
    require_send_sync::<singleflight_async_std::AsyncStdTimer>();
}

#[test]
fn core_guards_cross_threads() {
    let group = Arc::new(Group::<String, u64>::new());
    let Ok(Entered::Leader(leader)) = group.enter_arc("k") else {
        unreachable!()
    };
    let Ok(Entered::Waiter(waiter)) = group.enter_arc("k") else {
        unreachable!()
    };
    require_send(&leader);
    require_sync(&leader);
    require_send(&waiter);
    require_unpin(&waiter);
    let _ = leader.complete(1);
    drop(waiter);
}

/// Asserts the futures of one async front-end: `$group` is its group type, `$arc_group` one
/// whose error is shared as an `Arc`, `$enter` a guard that stays alive while the futures
/// are made.
macro_rules! async_front_end {
    ($name:ident, $group:ty, $arc_group:ty, $enter:expr) => {
        #[test]
        fn $name() {
            let _guard = $enter;
            let group = <$group>::new();
            let call = group.call("k", || async { Ok(1) });
            require_send(&call);
            require_sync(&call);
            let try_call = group.try_call("k", || async { Ok::<u64, String>(1) });
            require_send(&try_call);
            let detached = group.call_detached("k", || async { Ok(1) });
            require_send(&detached);
            require_sync(&detached);
            require_unpin(&detached);
            let try_detached = group.try_call_detached("k", || async { Ok(1) });
            require_send(&try_detached);
            let blocking = group.call_blocking("k", || Ok(1));
            require_send(&blocking);
            require_unpin(&blocking);
            let timed = group.call_timeout("k", Duration::from_secs(1), || async { Ok(1) });
            require_send(&timed);
            let timed_detached = group.timeout(
                Duration::from_secs(1),
                group.call_detached("k", || async { Ok(1) }),
            );
            require_send(&timed_detached);
            let with_role = singleflight_core::CallFuture::with_role(call);
            require_send(&with_role);
            // The request builder's corners: the blocking pool with a timeout and the role,
            // an `Arc` error detached with a timeout, and the request itself.
            let request = group.request("k");
            require_send(&request);
            require_sync(&request);
            let corner = group
                .request("k")
                .blocking()
                .timeout(Duration::from_secs(1))
                .with_role()
                .try_call(|| Ok(1));
            require_send(&corner);
            let arcs = <$arc_group>::new();
            let arc_corner = arcs
                .request("k")
                .detached()
                .timeout(Duration::from_secs(1))
                .try_call_arc(|| async {
                    Err::<u64, std::io::Error>(std::io::ErrorKind::Other.into())
                });
            require_send(&arc_corner);
            // Work that borrows from the caller is fine for `call` (it runs in the caller's task).
            let local = String::from("borrowed");
            let borrowing = group.call("k", || async { Ok(local.len() as u64) });
            require_send(&borrowing);
            assert_eq!(
                group.in_flight(),
                0,
                "futures never polled register nothing"
            );
        }
    };
}

async_front_end!(
    tokio_futures_are_send,
    singleflight_tokio::Group<String, Result<u64, String>>,
    singleflight_tokio::Group<String, Result<u64, Arc<std::io::Error>>>,
    tokio_runtime().enter()
);
async_front_end!(
    smol_futures_are_send,
    singleflight_smol::Group<String, Result<u64, String>>,
    singleflight_smol::Group<String, Result<u64, Arc<std::io::Error>>>,
    ()
);
async_front_end!(
    async_std_futures_are_send,
    singleflight_async_std::Group<String, Result<u64, String>>,
    singleflight_async_std::Group<String, Result<u64, Arc<std::io::Error>>>,
    ()
);

/// tokio's timer needs a runtime context to create a sleep; the runtime outlives the guard.
fn tokio_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("build a runtime")
    })
}
