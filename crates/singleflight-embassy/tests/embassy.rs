//! The embassy front-end on embassy's executor (host build: the `platform-std` executor and
//! embassy-time's `std` driver), with the core built without `std` as on a target.

mod support;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use embassy_futures::select::select;
use singleflight_embassy::{CallFuture as _, Error, Group, LeaderDropPolicy, PanicMessage, Role};
use support::{Gate, catch_panic, run, spawn, until};

/// Work that counts its runs and returns `value` once `gate` opens.
async fn gated(runs: Rc<Cell<u32>>, gate: Gate, value: u32) -> u32 {
    runs.set(runs.get() + 1);
    gate.wait().await;
    value
}

#[test]
fn two_tasks_share_one_execution() {
    run(|spawner| async move {
        let group = Group::<String, u32>::new();
        let (runs, gate) = (Rc::new(Cell::new(0)), Gate::new());

        let leader = spawn(spawner, {
            let (group, runs, gate) = (group.clone(), runs.clone(), gate.clone());
            async move {
                group
                    .call("sensor", || gated(runs, gate, 21))
                    .with_role()
                    .await
            }
        });
        until(|| group.contains("sensor")).await;
        let waiter = spawn(spawner, {
            let (group, runs, gate) = (group.clone(), runs.clone(), gate.clone());
            async move {
                group
                    .call("sensor", || gated(runs, gate, 99))
                    .with_role()
                    .await
            }
        });
        until(|| group.waiters("sensor") == 1).await;
        gate.open();

        assert_eq!(leader.await, (Ok(21), Role::Leader { shared: true }));
        assert_eq!(waiter.await, (Ok(21), Role::Waiter));
        assert_eq!(runs.get(), 1, "the work ran once for both tasks");
        assert_eq!(group.in_flight(), 0);
    });
}

#[test]
fn different_keys_run_apart_and_errors_are_shared() {
    run(|spawner| async move {
        let group = Group::<u8, Result<u32, &'static str>>::new();
        let gate = Gate::new();
        let failing = spawn(spawner, {
            let (group, gate) = (group.clone(), gate.clone());
            async move {
                group
                    .try_call(&1, || async move {
                        gate.wait().await;
                        Err("bus fault")
                    })
                    .await
            }
        });
        until(|| group.contains(&1)).await;
        // Key 2 does not wait for key 1's gate.
        assert_eq!(group.try_call(&2, || async { Ok(7) }).await, Ok(7));
        let joined = spawn(spawner, {
            let group = group.clone();
            async move { group.try_call(&1, || async { Ok(0) }).await }
        });
        until(|| group.waiters(&1) == 1).await;
        gate.open();
        assert_eq!(failing.await, Err(Error::Failed("bus fault")));
        assert_eq!(joined.await, Err(Error::Failed("bus fault")));
        assert_eq!(group.in_flight(), 0);
    });
}

#[test]
fn a_cancelled_leader_is_taken_over_by_its_waiter() {
    run(|spawner| async move {
        let group = Group::<String, u32>::new();
        let (runs, never, cancel) = (Rc::new(Cell::new(0)), Gate::new(), Gate::new());

        // The leader gives up when `cancel` opens (a `select` drops the losing call).
        let leader = spawn(spawner, {
            let (group, runs, never, cancel) =
                (group.clone(), runs.clone(), never.clone(), cancel.clone());
            async move {
                select(
                    group.call("config", || gated(runs, never, 1)),
                    cancel.wait(),
                )
                .await;
            }
        });
        until(|| group.contains("config")).await;
        let waiter = spawn(spawner, {
            let (group, runs) = (group.clone(), runs.clone());
            async move {
                group
                    .call("config", || async move {
                        runs.set(runs.get() + 1);
                        2
                    })
                    .with_role()
                    .await
            }
        });
        until(|| group.waiters("config") == 1).await;
        cancel.open();
        leader.await;

        // The waiter ran its own work, as the flight's new leader; nobody else waited.
        assert_eq!(waiter.await, (Ok(2), Role::Leader { shared: false }));
        assert_eq!(runs.get(), 2, "the cancelled work and the takeover");
        assert_eq!(group.in_flight(), 0);
    });
}

#[test]
fn a_cancelled_leader_fails_its_waiters_under_fail_waiters() {
    run(|spawner| async move {
        let group =
            Group::<String, u32>::new().with_leader_drop_policy(LeaderDropPolicy::FailWaiters);
        let (never, cancel) = (Gate::new(), Gate::new());
        let leader = spawn(spawner, {
            let (group, never, cancel) = (group.clone(), never.clone(), cancel.clone());
            async move {
                let work = || gated(Rc::new(Cell::new(0)), never, 1);
                select(group.call("config", work), cancel.wait()).await;
            }
        });
        until(|| group.contains("config")).await;
        let waiter = spawn(spawner, {
            let group = group.clone();
            async move { group.call("config", || async { 2 }).await }
        });
        until(|| group.waiters("config") == 1).await;
        cancel.open();
        leader.await;
        assert_eq!(waiter.await, Err(Error::LeaderDropped));
        assert_eq!(group.in_flight(), 0);
    });
}

#[test]
fn a_waiter_times_out_on_embassy_s_timer_and_the_flight_goes_on() {
    run(|spawner| async move {
        let group = Group::<String, u32>::new();
        let (runs, gate) = (Rc::new(Cell::new(0)), Gate::new());
        let leader = spawn(spawner, {
            let (group, runs, gate) = (group.clone(), runs.clone(), gate.clone());
            async move { group.call("sensor", || gated(runs, gate, 5)).await }
        });
        until(|| group.contains("sensor")).await;

        // The gate stays shut until the timeout has returned: only the timer can end it.
        let timed = group
            .call_timeout("sensor", Duration::from_millis(20), || async { 0 })
            .with_role()
            .await;
        assert_eq!(timed, (Err(Error::Timeout), Role::Waiter));
        assert!(group.contains("sensor"), "the flight goes on");
        assert_eq!(group.waiters("sensor"), 0, "the timed-out waiter left");

        let late = spawn(spawner, {
            let group = group.clone();
            async move { group.call("sensor", || async { 0 }).with_role().await }
        });
        until(|| group.waiters("sensor") == 1).await;
        gate.open();
        assert_eq!(leader.await, Ok(5));
        assert_eq!(
            late.await,
            (Ok(5), Role::Waiter),
            "a later caller still joined"
        );
        assert_eq!(runs.get(), 1);
        assert_eq!(group.in_flight(), 0);
    });
}

#[test]
fn a_leader_that_times_out_is_cancelled_and_taken_over() {
    run(|spawner| async move {
        let group = Group::<String, u32>::new();
        let never = Gate::new();
        let leader = spawn(spawner, {
            let (group, never) = (group.clone(), never.clone());
            async move {
                let work = || gated(Rc::new(Cell::new(0)), never, 1);
                group
                    .call_timeout("sensor", Duration::from_millis(20), work)
                    .await
            }
        });
        until(|| group.contains("sensor")).await;
        let waiter = spawn(spawner, {
            let group = group.clone();
            async move { group.call("sensor", || async { 2 }).await }
        });
        until(|| group.waiters("sensor") == 1).await;
        // Only the leader's timer can end the leader's call: the gate never opens.
        assert_eq!(leader.await, Err(Error::Timeout));
        assert_eq!(waiter.await, Ok(2), "the waiter took over");
        assert_eq!(group.in_flight(), 0);
    });
}

/// Whether this build's core has `std`, read off its re-entrancy detection, which only a
/// `std` build has: a call from inside its own key's work fails at once with `std`, and
/// waits for itself (here until a zero timeout) without.
///
/// `cargo test -p singleflight-embassy` builds the core without `std`, as every embassy
/// target does. A workspace-wide build (`cargo test --workspace`) unifies in the `std` that
/// the std front-ends turn on, and then the front-end has the std behaviour.
async fn core_has_std() -> bool {
    let group = Group::<String, Result<u32, Error>>::new();
    let inner = group.clone();
    let outer = group
        .call("probe", || async move {
            inner
                .call_timeout("probe", Duration::ZERO, || async { Ok(0) })
                .await
                .and_then(|nested| nested)
        })
        .await;
    match outer {
        Ok(Err(Error::Reentrant)) => true,
        Ok(Err(Error::Timeout)) => false,
        other => panic!("a re-entrant call ends in Reentrant or Timeout, not {other:?}"),
    }
}

/// `.ci/test` runs this crate's tests on their own with `SINGLEFLIGHT_CORE_STD=0`, so that
/// the no_std branches below are the ones that run there.
#[test]
fn the_core_is_built_as_expected() {
    run(|_| async move {
        let has_std = core_has_std().await;
        match std::env::var("SINGLEFLIGHT_CORE_STD").as_deref() {
            Ok("0") => assert!(!has_std, "the core was built with std"),
            Ok("1") => assert!(has_std, "the core was built without std"),
            _ => {}
        }
    });
}

/// Without `std` the core cannot catch a panic, so waiters never see `Error::Panicked`:
/// where the panic unwinds and is caught outside the call, dropping the call is a leader
/// cancellation (on a `panic = "abort"` target the program stops instead). With `std` the
/// waiters get the message and the leader's call resumes the panic.
#[test]
fn a_panicking_leader_reaches_waiters_as_the_core_build_allows() {
    for policy in [LeaderDropPolicy::Takeover, LeaderDropPolicy::FailWaiters] {
        run(move |spawner| async move {
            let has_std = core_has_std().await;
            let group = Group::<String, u32>::new().with_leader_drop_policy(policy);
            let gate = Gate::new();
            let leader = spawn(spawner, {
                let (group, gate) = (group.clone(), gate.clone());
                async move {
                    catch_panic(group.call("sensor", || async move {
                        gate.wait().await;
                        panic!("sensor on fire")
                    }))
                    .await
                }
            });
            until(|| group.contains("sensor")).await;
            let waiter = spawn(spawner, {
                let group = group.clone();
                async move { group.call("sensor", || async { 3 }).await }
            });
            until(|| group.waiters("sensor") == 1).await;
            gate.open();

            let payload = leader.await.expect_err("the work panicked");
            assert_eq!(payload.downcast_ref::<&str>(), Some(&"sensor on fire"));
            let expected = match (has_std, policy) {
                (true, _) => Err(Error::Panicked(PanicMessage::new("sensor on fire"))),
                (false, LeaderDropPolicy::Takeover) => Ok(3),
                (false, _) => Err(Error::LeaderDropped),
            };
            assert_eq!(waiter.await, expected, "{policy:?}, std: {has_std}");
            assert_eq!(group.in_flight(), 0, "the key is free again");
            assert_eq!(group.call("sensor", || async { 4 }).await, Ok(4));
        });
    }
}

/// Without `std` a call from inside its own key's work is not detected: it joins its own
/// flight and waits for itself, here until its timeout. The flight then finishes.
#[test]
fn a_reentrant_call_without_std_waits_for_itself_until_its_timeout() {
    run(|_| async move {
        let has_std = core_has_std().await;
        let group = Group::<String, Result<u32, Error>>::new();
        let inner = group.clone();
        let outer = group
            .call("config", || async move {
                inner
                    .call_timeout("config", Duration::from_millis(20), || async { Ok(0) })
                    .await
                    .and_then(|nested| nested)
            })
            .with_role()
            .await;
        let expected = if has_std {
            Error::Reentrant
        } else {
            Error::Timeout
        };
        assert_eq!(outer, (Ok(Err(expected)), Role::Leader { shared: false }));
        assert_eq!(group.in_flight(), 0);
    });
}

#[test]
fn forget_starts_a_new_flight_and_the_old_one_still_delivers() {
    run(|spawner| async move {
        let group = Group::<String, u32>::new();
        let (runs, old_gate) = (Rc::new(Cell::new(0)), Gate::new());
        let old = spawn(spawner, {
            let (group, runs, gate) = (group.clone(), runs.clone(), old_gate.clone());
            async move { group.call("config", || gated(runs, gate, 1)).await }
        });
        until(|| group.contains("config")).await;
        assert!(group.forget("config"));
        assert!(!group.contains("config"));
        assert_eq!(group.call("config", || async { 2 }).await, Ok(2));
        old_gate.open();
        assert_eq!(old.await, Ok(1));
        assert_eq!(group.in_flight(), 0);
        assert!(
            !group.forget("config"),
            "forgetting an absent key is a no-op"
        );
    });
}
