//! `no_std` request coalescing (singleflight) for [embassy].
//!
//! When many tasks ask for the same key at the same time, the first one (the *leader*) runs
//! the work and every other one (a *waiter*) receives a clone of the same outcome: two tasks
//! that want the same sensor reading or the same configuration fetch share one bus
//! transaction or one request. The crate is `#![no_std]` and needs `alloc` (a heap, such as
//! `embedded-alloc`'s): flights live in a hash map and outcomes are shared through `Arc`.
//!
//! ```
//! # use core::time::Duration;
//! use singleflight_embassy::{CallFuture as _, Error, Group, Role};
//!
//! # async fn read_sensor() -> u16 { 21 }
//! async fn temperature(group: &Group<String, u16>) -> Result<u16, Error> {
//!     // Concurrent callers of "temp" share one reading; each waits at most 50 ms.
//!     group.call_timeout("temp", Duration::from_millis(50), read_sensor).await
//! }
//!
//! # #[embassy_executor::task] async fn run(group: &'static Group<String, u16>) {
//! # let (value, role) = group.call("temp", read_sensor).with_role().await;
//! # assert_eq!((value, role), (Ok(21), Role::Leader { shared: false }));
//! # assert_eq!(temperature(group).await, Ok(21));
//! # std::process::exit(0);
//! # }
//! # let group = Box::leak(Box::new(Group::new()));
//! # let executor = Box::leak(Box::new(embassy_executor::Executor::new()));
//! # executor.run(|spawner| spawner.spawn(run(group).unwrap()));
//! ```
//!
//! The README shows the whole embedded shape: a `static` group, two tasks sharing one
//! reading, and a heap from `embedded-alloc`.
//!
//! # Semantics
//!
//! | what happens | leader (ran the work) | waiters (joined the flight) |
//! |---|---|---|
//! | work returns `v` | `Ok(v)` | `Ok(v.clone())` |
//! | fallible work returns `Err(e)` ([`Group::try_call`]) | `Err(Error::Failed(e))` | `Err(Error::Failed(e.clone()))` |
//! | leader dropped ([`LeaderDropPolicy::Takeover`], default) | — | the oldest waiter runs its own work, the others wait for it |
//! | leader dropped ([`LeaderDropPolicy::FailWaiters`]) | — | `Err(Error::LeaderDropped)` |
//! | a caller's timeout elapses ([`Group::timeout`]) | cancelled, as if dropped | only that waiter gets `Err(Error::Timeout)` |
//! | [`Group::forget`] during the flight | unaffected | unaffected; new calls start a new flight |
//! | work panics | see [Panics](#panics) | see [Panics](#panics) |
//!
//! A call registers on its first poll; a future never polled pins nothing. The key is never
//! poisoned: after an error, the next call starts a new flight.
//!
//! # Panics
//!
//! Without `std` there is no `catch_unwind`, so the core cannot turn a panic of the work into
//! [`Error::Panicked`] for the waiters. On the usual embedded build (`panic = "abort"`, a
//! `panic-probe` or `panic-halt` handler) a panic stops the program and there is nobody left
//! to tell. Where panics do unwind and something catches one outside the call (a host, or
//! an executor that survives a panicking task) and then drops the call, its waiters see a
//! dropped leader: the group's [`LeaderDropPolicy`] applies, and the key is free again.
//!
//! This and the next section describe the core built without `std`, as every embassy
//! target builds it. A host build in which another crate turns on the core's `std` feature
//! (cargo unifies features) gets the std behaviour: waiters receive [`Error::Panicked`] with
//! the message, and a re-entrant call fails with [`Error::Reentrant`].
//!
//! # Re-entrancy
//!
//! Re-entrant calls are not detected without `std` (the detection keeps a thread-local
//! stack). A call for key K from inside K's own work joins its own flight and waits for
//! itself until its timeout, if it has one (`Err(Error::Timeout)`), or forever: don't.
//!
//! # No detached work
//!
//! The other async front-ends offer `call_detached` and `call_blocking`, which spawn the work
//! as a task of its own so that it finishes even when every caller has gone. embassy's tasks
//! are static: each is an `#[embassy_executor::task]` function, non-generic, with a pool
//! sized at compile time, so a library cannot spawn a future that a caller makes at run
//! time. This crate therefore has no detached or blocking work: the work always runs inside
//! the leading caller's task. For work that must outlive its callers, give it a task of its
//! own that calls the group, and let the callers wait on that (a `Signal`, a `Channel`).
//!
//! # Cancel safety
//!
//! Every future here may be dropped at any `.await` point (`select`, timeouts) without
//! leaking a map entry or hanging another caller:
//!
//! * a waiter that is dropped leaves only itself;
//! * a leader that is dropped cancels its work, and the group's [`LeaderDropPolicy`] decides
//!   what its waiters do.
//!
//! # Target requirements
//!
//! * A heap (`alloc`), and pointer-sized atomics with compare-and-swap: `Arc` and the
//!   core's spin locks need them, so `thumbv6m-none-eabi` (Cortex-M0) and `riscv32imc`
//!   (ESP32-C3) are out; Cortex-M3 and up, `riscv32imac` and the Xtensa ESP32s are in. No
//!   64-bit atomics.
//! * Priorities. The core's locks are spin locks without `std`, held for a few instructions
//!   at a time, but a bare spin lock cannot be shared with an interrupt handler that
//!   preempts its holder. Either use a group from tasks of one executor (or of executors at
//!   the same priority), never from an `InterruptExecutor` at a higher priority than
//!   another user of the same group; or turn on this crate's `critical-section` feature
//!   (below), and share it across any priorities.
//!
//! The `no_std` section of `singleflight-core`'s docs lists the rest.
//!
//! # Features
//!
//! * `critical-section`: the core holds each of its locks inside a critical section
//!   (`critical_section::acquire`, implemented by the HAL: `cortex-m`'s
//!   `critical-section-single-core`, `embassy-rp`, `esp-hal`, ...), so a group can be
//!   shared by thread-mode tasks, `InterruptExecutor`s and interrupt handlers of any
//!   priority. Interrupts are then masked while a lock is held: the core's O(1) map and
//!   queue updates (now and then an allocation, when one grows or shrinks), plus the key's
//!   `Eq` (on each probe of the map) and the value's `Clone` (a waiter taking its copy), so
//!   keep those cheap where interrupt latency matters.
//!
//! # When not to use it
//!
//! Don't coalesce writes, calls whose side effects each caller relies on, or data that
//! differs per caller unless the key says so. Coalescing is not caching: an outcome is
//! shared only with calls that overlap its flight.
//!
//! # MSRV
//!
//! Rust 1.85 for this crate. embassy-time 0.5 declares none (its edition, 2024, needs 1.85
//! at least); the crate is built and tested on stable 1.95.
//!
//! [embassy]: https://embassy.dev
#![no_std]
#![forbid(unsafe_code)]
// docs.rs (nightly) badges each feature-gated item with the feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(test)]
extern crate std;

mod rt;

pub use rt::EmbassyTimer;
pub use singleflight_core::{
    BoxedError, Call, CallFuture, DefaultHashBuilder, Error, Execution, FlightId, FlightInfo,
    KeyFormat, LeaderDropPolicy, ObservedKey, Observer, PanicMessage, Role, TryCall, Wait,
    WithRole,
    rt::{Request, Timeout},
};

singleflight_core::__front_end_group! {
    /// Coalesces concurrent calls with equal keys on embassy: see the [crate docs](crate).
    ///
    /// `K` is the key (`Hash + Eq`; look-ups take its borrowed form, so `&str` works for
    /// `String` keys), `T` the value every caller receives (a clone each: put big values in an
    /// `Arc`; fallible work uses `T = Result<V, E>`), `S` the hasher. Cloning shares the group;
    /// so does a `&'static Group` (a `static` one, through `static_cell`'s `StaticCell`).
    ///
    /// Every kind of call is made with [`request`](Self::request); the other call methods are
    /// shorthands for the common ones. They are those of the runtime-generic
    /// [`RuntimeGroup`](singleflight_core::rt::RuntimeGroup), with [`EmbassyTimer`] filled in
    /// and without detached or blocking work (see the [crate docs](crate#no-detached-work)).
    pub struct Group(timer: EmbassyTimer);
}

// The README is the registry page: its examples compile (and run, where they can) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
