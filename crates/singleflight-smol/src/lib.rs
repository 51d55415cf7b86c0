//! Request coalescing (singleflight) for smol.
//!
//! When many tasks ask for the same key at the same time, the first one (the *leader*) runs
//! the work and every other one (a *waiter*) receives a clone of the same outcome. It
//! protects databases from thundering herds, APIs from burnt rate limits and caches from
//! stampedes.
//!
//! ```
//! use std::time::Duration;
//! use singleflight_smol::{CallFuture as _, Group, Role};
//!
//! fn main() { smol::block_on(async {
//!     let group = Group::<String, String>::new();
//!
//!     // The work runs inside the caller's task and may borrow.
//!     let name = "Ada".to_string();
//!     let (user, role) = group.call("user:42", || async { name.clone() }).with_role().await;
//!     assert_eq!((user.as_deref(), role), (Ok("Ada"), Role::Leader { shared: false }));
//!
//!     // Detached work is spawned: it finishes (and fills caches) even if this caller
//!     // gives up after 5 s.
//!     let user = group
//!         .timeout(
//!             Duration::from_secs(5),
//!             group.call_detached("user:7", || async { "Grace".to_string() }),
//!         )
//!         .await;
//!     assert_eq!(user.as_deref(), Ok("Grace"));
//!
//!     // Blocking work goes to smol's blocking pool.
//!     let sum = Group::<u32, u64>::new().call_blocking(&1, || (1..=10).sum()).await;
//!     assert_eq!(sum, Ok(55));
//!
//!     // Every kind of call is a request; the methods above are its shorthands. Blocking
//!     // work whose caller gives up after 5 s, say:
//!     let sum = Group::<u32, u64>::new()
//!         .request(&2)
//!         .blocking()
//!         .timeout(Duration::from_secs(5))
//!         .call(|| (1..=20).sum())
//!         .await;
//!     assert_eq!(sum, Ok(210));
//!     assert_eq!(group.in_flight(), 0);
//! }) }
//! ```
//!
//! # Semantics
//!
//! | what happens | leader (ran the work) | waiters (joined the flight) |
//! |---|---|---|
//! | work returns `v` | `Ok(v)` | `Ok(v.clone())` |
//! | fallible work returns `Err(e)` ([`Group::try_call`]) | `Err(Error::Failed(e))` | `Err(Error::Failed(e.clone()))` |
//! | work panics | the panic resumes (detached: `Err(Error::Panicked(message))`) | `Err(Error::Panicked(message))` |
//! | leader dropped ([`LeaderDropPolicy::Takeover`], default) | — | the oldest waiter runs its own work, the others wait for it |
//! | leader dropped ([`LeaderDropPolicy::FailWaiters`]) | — | `Err(Error::LeaderDropped)` |
//! | a caller's timeout elapses ([`Group::timeout`]) | cancelled, as if dropped | only that waiter gets `Err(Error::Timeout)` |
//! | every caller of detached work leaves | the work still finishes | — |
//! | [`Group::forget`] during the flight | unaffected | unaffected; new calls start a new flight |
//!
//! A call registers on its first poll; a future never polled pins nothing. The key is never
//! poisoned: after a panic or an error, the next call starts a new flight.
//!
//! # Cancel safety
//!
//! Every future here may be dropped at any `.await` point (`select!`, timeouts, client
//! disconnects) without leaking a map entry or hanging another caller:
//!
//! * a waiter that is dropped leaves only itself;
//! * a leader of [`Group::call`] that is dropped cancels its work, and the group's
//!   [`LeaderDropPolicy`] decides what its waiters do;
//! * the work of [`Group::call_detached`] and [`Group::call_blocking`] runs to its end no
//!   matter who is dropped.
//!
//! # When not to use it
//!
//! Don't coalesce writes, calls whose side effects each caller relies on, or data that
//! differs per caller unless the key says so. Coalescing is not caching: an outcome is
//! shared only with calls that overlap its flight.
//!
//! # Runtime
//!
//! Detached work runs on smol's global executor ([`smol::spawn`]) and blocking work on its
//! blocking pool ([`smol::unblock`]); both tasks are `detach()`ed, because dropping a smol
//! task cancels it. Timeouts use [`smol::Timer`]. Any executor may poll the calls.
//!
//! # MSRV
//!
//! Rust 1.85.
#![forbid(unsafe_code)]
// docs.rs (nightly) badges each feature-gated item with the feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod rt;

pub use rt::{SmolSpawner, SmolTimer};

// The core's types, the `Group`, `coalesce`: what every async front-end's root shares.
singleflight_core::__front_end_exports! {
    runtime: "smol",
    spawner: SmolSpawner,
    timer: SmolTimer,
    coalesce: coalesce_smol,
}

// The README is the registry page: its examples compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
