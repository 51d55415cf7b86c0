//! Request coalescing (singleflight) for any executor and for `no_std + alloc`.
//!
//! When many callers ask for the same key at the same time, one of them — the *leader* —
//! runs the work, and every other caller — a *waiter* — receives a clone of the same
//! outcome. This crate is the runtime-free state machine behind the `singleflight-*`
//! front-ends (blocking threads, tokio, smol, async-std); applications normally use one of
//! those, and build on this crate only to serve another executor or a `no_std` target.
//!
//! ```
//! use singleflight_core::{Entered, Group, Waited};
//!
//! let group = Group::<String, String>::new();
//! // The first caller for a key leads; the next one joins its flight.
//! let Ok(Entered::Leader(leader)) = group.enter("user:42") else { unreachable!() };
//! let Ok(Entered::Waiter(waiter)) = group.enter("user:42") else { unreachable!() };
//! assert_eq!(group.in_flight(), 1);
//! leader.complete("Ada".to_string());
//! # #[cfg(feature = "std")]
//! assert!(matches!(waiter.wait(), Waited::Outcome(Ok(name)) if name == "Ada"));
//! assert_eq!(group.in_flight(), 0);
//! ```
//!
//! # Semantics
//!
//! * **Coalescing**: calls with equal keys that overlap a flight join it; the work runs once
//!   per flight. Different keys never wait on each other.
//! * **Sharing**: every caller receives a clone of the same `T`; a fallible flight shares the
//!   leader's error ([`Error::Failed`]).
//! * **Role**: [`Role`] says whether a caller ran the work ([`CallFuture::with_role`]),
//!   and for a leader whether anyone joined its flight (Go's `shared`).
//! * **Panics**: waiters get [`Error::Panicked`] with the message; the leader's own call
//!   resumes the panic; the key is never poisoned (needs `std`: without it a panic can't be
//!   caught and waiters see it as a leader cancellation).
//! * **Leader cancelled**: [`LeaderDropPolicy::Takeover`] (default) promotes the oldest
//!   waiter; [`LeaderDropPolicy::FailWaiters`] fails them with [`Error::LeaderDropped`].
//!   Never two executions at once for one key.
//! * **Waiter cancelled**: affects no one else. When every caller of a flight is gone, its
//!   entry is removed.
//! * **Memory follows load**: a shard's table shrinks when it falls to a quarter of its
//!   capacity and is freed when it empties, so after a burst of keys the group gives its
//!   memory back.
//! * **Lazy registration**: a [`Call`] registers on its first poll.
//! * **Forget**: [`Group::forget`] detaches a flight from its key; its callers still get its
//!   outcome and it never removes the newer flight's entry.
//! * **Reuse** (opt-in): with a window ([`Group::reuse_for`]), a published value is handed
//!   to calls for its key within the window without running the work ([`Role::Reused`]);
//!   with a refresh threshold inside it ([`Group::refresh_after`]), a call past the
//!   threshold gets the value at once and at most one refresh per key runs, detached from
//!   every caller (stale-while-revalidate). Only calls whose work can leave the caller
//!   (detached and blocking-pool calls, `Group::call_here_refreshing` with `std`) start one.
//! * **Re-entrancy**: with `std`, a call from inside its own flight's work returns
//!   [`Error::Reentrant`] when it runs on the same thread (blocking work, or a nested
//!   `.await` inside the work). A call that reaches its own flight from another task or
//!   thread the work waits for cannot be detected and waits for itself: don't.
//!
//! # User code
//!
//! Keys, values, the work, observers and wakers are user code, and none of it can break a
//! flight: a panic in it affects only the call whose code panicked (that call panics, as
//! its own code would), every other caller gets its outcome, the key is free afterwards,
//! and nothing leaks. No user code runs under a lock where it can be avoided (the lock
//! order and the exceptions are in the implementation notes of the crate's `flight`
//! module, `src/flight/mod.rs`).
//!
//! | user code | where it runs | if it panics |
//! |---|---|---|
//! | key `Hash` | the calling call, before any lock | that call panics; nothing changed |
//! | key `Eq` (through `Borrow`) | the calling call, under its shard's lock (a probe changes nothing) | that call panics; the table is as it was |
//! | key `ToOwned` | a call that starts a flight, with no lock held | that call panics; no flight started |
//! | key `Drop` | the call that ends the flight (its leader; a dropped leader or promoted waiter), after the lock and after the outcome is handed out | the flight's callers already have their outcome; that call panics |
//! | value `Clone` (leader) | the leader, once, if somebody waits; no lock | the waiters get the original value; the leader's call panics |
//! | value `Clone` (waiter) | each waiter but the last to receive, under that flight's outcome lock only | that waiter's call panics; the others get the value |
//! | value `Drop` | whoever holds the copy; an unreceived outcome, the last caller to leave, after the lock | that call panics |
//! | the work (its future or closure, and its `Drop`) | the leader, with no lock | waiters get [`Error::Panicked`]; the leader's call resumes the panic (a work future whose `Drop` panics after producing a value: the waiters get the value, the leader's call panics) |
//! | observer hooks | the call the event belongs to, with no lock, after the group's state is consistent | that call panics; a start hook's flight is abandoned as if its leader were dropped. A hook that panics while its call is already unwinding is caught and discarded (with `std`), since a second panic would abort |
//! | `Waker::clone`, `Waker::wake`, `Waker::drop` | the waiting call (clone, drop) or the publishing one (wake), with no lock | that call panics |
//!
//! # How waiting works
//!
//! A flight that nobody joins allocates nothing: it lives in its shard's table slot, and its
//! leader runs the work in its own call. The second caller to arrive allocates the flight's
//! shared part: a queue of seats (oldest first, for takeover), an outcome slot, and (with
//! `std`) one condition variable. Each waiter then waits in one of two ways, over the same
//! state:
//!
//! * **An async waiter** ([`Call`], [`Waiter::poll`]) leaves its task's `Waker` in its seat,
//!   cloned only when the task that polls changes. Ending the flight takes the queue out
//!   under the flight's lock, then wakes each seat's waker with no lock held.
//! * **A blocked thread** (`Waiter::wait`) sleeps on the flight's condition variable over
//!   the outcome lock. Ending the flight stores the outcome, then calls `notify_all` once
//!   with no lock held; each thread wakes holding the outcome lock and takes its copy (a
//!   clone, or the original for the last) with no other lock. A promotion (takeover) wakes
//!   the blocked threads too: each looks for its own promotion, and all but the promoted one
//!   sleep again.
//!
//! Why not a wake-up list such as `event-listener`, which an early design named: it was
//! measured and replaced. With blocked threads parked on an `event-listener` `Event`, 16
//! to 64 threads blocked on one key had their value 1.33-2.06x later than a bare `Mutex` +
//! `Condvar::notify_all` over the same threads (every woken thread queued on the list's lock
//! before it could take the flight's); with one condition variable per flight, 1.02x (the
//! benches' `blocking_herd`, traced in `benches/README.md`). Async waiters never used it:
//! each seat holds its waker, so a waiting call needs no allocation of its own. A change
//! back needs a measurement that beats today's.
//!
//! # When not to use it
//!
//! Coalescing hands one execution's result to many callers. Don't coalesce writes or calls
//! with side effects each caller relies on, or data that differs per caller (unless the key
//! says so).
//!
//! # `no_std`
//!
//! With default features off the crate needs `core` and `alloc` only (`.ci/no-std` checks
//! that no dependency then enables `std`, and runs a `#![no_std]`, `#![no_main]` program
//! through a flight). The async calls ([`Group::call`], [`Call`], [`rt`]) work the same;
//! what a `no_std` build loses:
//!
//! * **Panic capture.** There is no `catch_unwind`, so [`Error::Panicked`] never comes from
//!   the work: with `panic = "abort"` (the usual embedded build) a panic stops the program.
//!   Where panics unwind, a panic in the work leaves through the leader's poll; if something
//!   catches it and drops the call, that is a leader cancellation ([`LeaderDropPolicy`]
//!   decides), and the key is free again. A panic in user code under the value's `Clone` or
//!   an observer hook is not caught either: the group stays consistent (outcomes are
//!   published while unwinding), but a hook that panics in a `Drop` during unwinding aborts,
//!   where `std` would discard that second panic. Detached work ([`rt::Detached`]) whose task
//!   the runtime drops unfinished still reaches its callers as [`Error::Panicked`].
//! * **Re-entrancy detection.** It keeps a thread-local stack of the flights each thread is
//!   running; without `std` there is none, so [`Error::Reentrant`] is never returned and a
//!   call for a key from inside that key's own work joins its own flight and waits for
//!   itself: until its timeout, if it has one, or forever.
//! * **Blocking waits.** `Waiter::wait` and `Waiter::wait_deadline` park the thread
//!   (`std`'s `Instant` for deadlines): without `std` a waiter is a future, polled by an
//!   executor, and timeouts come from the runtime's [`rt::Timer`] (embassy-time, say).
//! * **Hasher seeds.** [`DefaultHashBuilder`] seeds foldhash from addresses (stack, code,
//!   statics) instead of the operating system's randomness: fine for trusted keys, but where
//!   an attacker picks keys on a target without address randomization, pass a hasher seeded
//!   from a hardware RNG with [`Group::with_hasher`].
//! * **The locks.** The group's map of flights and each flight's state are `spin::Mutex`es
//!   instead of `std`'s, held for O(1) updates only, never while work runs or a caller
//!   waits. A bare spin lock must not be shared with an interrupt handler that can preempt
//!   its holder on the same core (it would spin forever): without the `critical-section`
//!   feature, use a group from one priority level. With it, every lock is held inside a
//!   critical section (`critical_section::acquire`, from the target's implementation:
//!   interrupts masked on a single-core target), so no holder is ever preempted by another
//!   user of the group and a group may be shared across priorities, interrupt executors
//!   and cores. The cost is latency: interrupts stay masked while a lock is held, which is
//!   the crate's O(1) table and queue updates (now and then a table or queue that grows or
//!   shrinks, and so a call to the allocator), plus the user code that runs under a lock:
//!   the key's `Eq` (each probe of a shard's table) and, when a waiter takes its copy of
//!   the outcome (or a value is served from the reuse window), the value's `Clone`. Keep
//!   those cheap, or put an `Arc` in the value, where interrupt latency matters. (The
//!   key's `Hash` runs before any lock.) A critical section is one lock for the whole
//!   program: on a multi-core target every group's locks, on every core, take turns
//!   through it (each held for the short spans above).
//! * `From<Error<std::io::Error>> for std::io::Error` and its `Arc` variant.
//!
//! What the target must provide:
//!
//! * **A heap** (`alloc`): flights live in hashbrown tables, outcomes are shared through
//!   `Arc`.
//! * **Atomic compare-and-swap on pointer-sized integers.** The crate's own atomics are
//!   plain loads and stores (an `AtomicUsize` counting flights); but `alloc::sync::Arc`
//!   (`fetch_add`, `fetch_sub`, `compare_exchange`) and `spin`'s lock (`AtomicBool`
//!   `compare_exchange`) need CAS, and `alloc` offers `Arc` only
//!   where `target_has_atomic = "ptr"`. So Cortex-M3 and up, `riscv32imac` and the Xtensa
//!   ESP32s build it; `thumbv6m-none-eabi` (Cortex-M0), `riscv32imc` (ESP32-C3) and AVR do
//!   not. No 64-bit
//!   atomics: flight ids are `u64`s updated under the shard lock.
//!
//! # Features
//!
//! * `std` (default): blocking waits with deadlines, panic capture, re-entrancy detection,
//!   random hasher seeds. Without it, the group's locks are spin locks, held for O(1) map
//!   and queue operations only, never while work runs; waiters wait through wakers.
//! * `critical-section`: without `std`, hold every lock inside a critical section, so a
//!   group can be shared with interrupt handlers and executors of any priority (see "The
//!   locks" under [`no_std`](#no_std)). The application provides the implementation (its
//!   HAL's, or `critical-section`'s own `std` one on a host). No effect with `std`.
//!
//! # MSRV
//!
//! Rust 1.85.
#![no_std]
// Two modules may allow it: `work` (a small work future inline, a large one boxed) and,
// with `critical-section`, `sync::critical` (a critical section held as long as a guard).
#![deny(unsafe_code)]
// docs.rs (nightly) badges each feature-gated item with the feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod call_loop;
mod entered;
mod error;
mod flight;
mod future;
mod group;
mod hash;
mod leader;
mod observer;
#[cfg(feature = "std")]
mod reentrancy;
mod reuse;
pub mod rt;
mod shared_error;
mod sync;
mod types;
mod unwind;
mod waiter;
#[allow(
    unsafe_code,
    reason = "a union: see the module docs for the measured reason"
)]
mod work;

pub use entered::Entered;
pub use error::{BoxedError, Error, PanicMessage, ShareableError};
pub use future::{Call, CallFuture, TryCall, WithRole, flatten};
pub use group::{DEFAULT_SHARDS, Group, GroupRef, MAX_SHARDS};
pub use hash::{DefaultHashBuilder, DefaultHasher};
pub use leader::Leader;
pub use observer::{Execution, FlightInfo, KeyFormat, ObservedKey, Observer, Wait};
pub use reuse::Reused;
pub use types::{FlightId, LeaderDropPolicy, Role};
pub use waiter::{Waited, Waiter};

/// What the front-ends' `Group` macro names from `alloc`, so that a `no_std` front-end can
/// invoke it without `extern crate alloc`. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use alloc::borrow::ToOwned;
    pub use alloc::sync::Arc;
}

// The README is the registry page: its examples compile and run as doctests, with `std`
// (the default), whose blocking wait its first example shows.
#[cfg(all(doctest, feature = "std"))]
#[doc = include_str!("../README.md")]
mod readme {}
