//! The same surface on every front-end: groups clone (and a clone shares the flights), and a
//! detached call takes its timeout in the same call.

use std::time::Duration;

use futures_lite::future::zip;
use singleflight_tests::{Gate, wait_until};
use singleflight_tokio::Error;

fn assert_clone<T: Clone>() {}

#[test]
fn every_front_ends_group_is_clone() {
    assert_clone::<singleflight_blocking::Group<String, u32>>();
    assert_clone::<singleflight_tokio::Group<String, u32>>();
    assert_clone::<singleflight_smol::Group<String, u32>>();
    assert_clone::<singleflight_async_std::Group<String, u32>>();
}

#[test]
fn a_clone_of_a_blocking_group_joins_the_originals_flights() {
    let group = singleflight_blocking::Group::<u64, u32>::new();
    let clone = group.clone();
    let release = Gate::new();
    std::thread::scope(|s| {
        let leader = s.spawn(|| {
            group.call(&1, || {
                release.wait();
                7
            })
        });
        wait_until("the leader runs", || clone.in_flight() == 1);
        let waiter = s.spawn(|| clone.call(&1, || unreachable!("the clone's call joins")));
        wait_until("the clone's call joins", || group.waiters(&1) == 1);
        release.open();
        assert_eq!(leader.join().unwrap(), Ok(7));
        assert_eq!(waiter.join().unwrap(), Ok(7));
    });
    assert_eq!(clone.in_flight(), 0);
}

#[test]
#[should_panic(expected = "configured before it is cloned")]
fn a_cloned_blocking_group_cannot_be_configured() {
    let group = singleflight_blocking::Group::<u64, u32>::new();
    let _clone = group.clone();
    let _ = group.with_shards(4);
}

#[test]
fn a_clone_of_an_async_group_joins_the_originals_flights() {
    smol::block_on(async {
        let group = singleflight_smol::Group::<u64, u32>::new();
        let clone = group.clone();
        let release = Gate::new();
        let leader = group.call(&1, || async {
            release.opened().await;
            7
        });
        let waiter = clone.call(&1, || async { unreachable!("the clone's call joins") });
        let opener = async {
            while group.waiters(&1) < 1 {
                smol::future::yield_now().await;
            }
            release.open();
        };
        let (leader, (waiter, ())) = zip(leader, zip(waiter, opener)).await;
        assert_eq!((leader, waiter), (Ok(7), Ok(7)));
    });
}

#[test]
fn a_detached_call_with_a_timeout_leaves_while_its_work_goes_on() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let group = singleflight_tokio::Group::<String, u32>::new();
        let release = Gate::new();
        let work = {
            let release = release.clone();
            move || async move {
                release.opened().await;
                7
            }
        };
        // The paused clock advances by itself once every task waits.
        let timed_out = group
            .call_detached_timeout("k", Duration::from_millis(10), work)
            .await;
        assert_eq!(timed_out, Err(Error::Timeout));
        assert_eq!(group.in_flight(), 1, "the work goes on");

        // A later caller joins the flight that is still running.
        let later = group.call("k", || async { unreachable!("joins the detached work") });
        let opener = async {
            while group.waiters("k") < 1 {
                tokio::task::yield_now().await;
            }
            release.open();
        };
        let (later, ()) = zip(later, opener).await;
        assert_eq!(later, Ok(7));

        let group = singleflight_tokio::Group::<String, Result<u32, &str>>::new();
        let failed = group
            .try_call_detached_timeout("f", Duration::from_secs(1), || async { Err("no") })
            .await;
        assert_eq!(failed, Err(Error::Failed("no")));
    });
}
