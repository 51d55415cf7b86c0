//! Request coalescing (singleflight) for std threads.
//!
//! When many threads ask for the same key at the same time, the first one (the *leader*)
//! runs the work and every other one (a *waiter*) blocks until it finishes, then receives a
//! clone of the same outcome. It protects databases from thundering herds, APIs from burning
//! rate limits and caches from stampedes.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use singleflight_blocking::Group;
//!
//! let group = Group::<String, String>::new();
//! let queries = AtomicUsize::new(0);
//! std::thread::scope(|s| {
//!     for _ in 0..8 {
//!         s.spawn(|| {
//!             let user = group.call("user:42", || {
//!                 queries.fetch_add(1, Ordering::Relaxed);
//!                 "Ada".to_string()
//!             });
//!             assert_eq!(user.as_deref(), Ok("Ada"));
//!         });
//!     }
//! });
//! // Threads that overlapped shared one query; none ran it twice at once.
//! assert!(queries.load(Ordering::Relaxed) >= 1);
//! assert_eq!(group.in_flight(), 0);
//! ```
//!
//! # Semantics
//!
//! | what happens | leader (ran the work) | waiters (joined the flight) |
//! |---|---|---|
//! | work returns `v` | `Ok(v)` | `Ok(v.clone())` |
//! | fallible work returns `Err(e)` ([`Group::try_call`]) | `Err(Error::Failed(e))` | `Err(Error::Failed(e.clone()))` |
//! | work panics | the panic resumes | `Err(Error::Panicked(message))` |
//! | waiter's timeout elapses | runs to completion (a thread can't be cancelled) | that waiter gets `Err(Error::Timeout)`; the flight goes on |
//! | [`Group::forget`] during the flight | unaffected | unaffected; new calls start a new flight |
//! | call for a key from inside its own work | — | `Err(Error::Reentrant)` instead of a deadlock |
//!
//! The key is never poisoned: after a panic or an error, the next call starts a new flight.
//!
//! # When not to use it
//!
//! Don't coalesce writes, calls whose side effects each caller relies on, or data that
//! differs per caller unless the key says so. Coalescing is not caching: a flight's outcome
//! is shared only with calls that overlap it.
//!
//! # MSRV
//!
//! Rust 1.85.
#![forbid(unsafe_code)]
// docs.rs (nightly) badges each feature-gated item with the feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod group;

pub use group::{Group, Request};
pub use singleflight_core::{
    BoxedError, DefaultHashBuilder, Error, Execution, FlightId, FlightInfo, KeyFormat, ObservedKey,
    Observer, PanicMessage, Role, Wait,
};

#[cfg(feature = "macros")]
pub use singleflight_macros::coalesce_blocking as coalesce;

/// What `#[coalesce]` expansions name, and nothing else may: the one seam between this
/// crate and `singleflight-macros`. Not public API.
#[cfg(feature = "macros")]
#[doc(hidden)]
pub mod __private {
    pub use crate::{Error, Group, Observer};
    pub use std::sync::{Arc, LazyLock};
}

// The README is the registry page: its examples compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
