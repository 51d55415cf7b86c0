//! Detached calls: the work moves into a spawned task (or onto a blocking thread) together
//! with the flight's [`Leader`], so it runs exactly once and finishes even if every caller
//! goes away.
//!
//! The caller that starts the work then waits as a waiter of its own flight (an uncounted
//! one: observers already counted it as the execution), instead of through a separate
//! oneshot channel. That keeps one wait path for every caller — the same wake-ups, the same
//! clone-per-waiter hand-off, the same [`Timeout`](super::Timeout) behaviour (a timed-out
//! caller just leaves; the work goes on) — and the core needs no second synchronisation
//! primitive.

use alloc::borrow::ToOwned;
use alloc::sync::Arc;
use core::borrow::Borrow;
use core::fmt;
use core::future::Future;
use core::hash::{BuildHasher, Hash};
use core::pin::Pin;
use core::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::{Spawn, SpawnBlocking};
use crate::call_loop::{Launched, Step, register, waited};
use crate::error::{Error, PanicMessage};
use crate::flight::Ending;
use crate::future::{CallFuture, flatten};
use crate::group::{Group, GroupRef};
use crate::leader::Leader;
use crate::observer::Execution;
use crate::types::Role;
use crate::unwind;
use crate::waiter::Waiter;

/// What callers see when the runtime drops detached work before it finished (a runtime
/// shutting down, a blocking pool that never ran it).
const DROPPED: &str = "detached work was dropped by its runtime before it finished";

/// Starts the work of a detached call, given the flight's [`Leader`]: it must arrange for
/// the leader to be completed (or dropped) wherever the work runs.
///
/// [`SpawnWork`] and [`SpawnBlockingWork`] are the implementations the front-ends use.
pub trait Launch<G: GroupRef> {
    /// Starts the work. `failed` tells whether a value stands for a failure (for observers).
    fn launch(self, leader: Leader<G>, failed: fn(&G::Value) -> bool);
}

/// Launches async work as a task on a [`Spawn`]er.
pub struct SpawnWork<Sp, F> {
    spawner: Sp,
    work: F,
}

impl<Sp, F> SpawnWork<Sp, F> {
    /// `work` is called (on the caller's task) only if the caller ends up running the work;
    /// its future is spawned on `spawner`.
    pub fn new(spawner: Sp, work: F) -> Self {
        Self { spawner, work }
    }
}

impl<Sp, F> fmt::Debug for SpawnWork<Sp, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnWork").finish_non_exhaustive()
    }
}

impl<K, T, S, Sp, F, Fut> Launch<Arc<Group<K, T, S>>> for SpawnWork<Sp, F>
where
    K: Send + 'static,
    T: Clone + Send + 'static,
    S: Send + Sync + 'static,
    Sp: Spawn,
    F: FnOnce() -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    fn launch(self, leader: Leader<Arc<Group<K, T, S>>>, failed: fn(&T) -> bool) {
        let fut = (self.work)();
        self.spawner.spawn(Task {
            guard: Guard(Some(leader)),
            fut,
            failed,
        });
    }
}

/// Launches a blocking closure on a [`SpawnBlocking`] pool.
pub struct SpawnBlockingWork<Sp, F> {
    spawner: Sp,
    work: F,
}

impl<Sp, F> SpawnBlockingWork<Sp, F> {
    /// `work` runs on `spawner`'s blocking pool if the caller ends up running the work.
    pub fn new(spawner: Sp, work: F) -> Self {
        Self { spawner, work }
    }
}

impl<Sp, F> fmt::Debug for SpawnBlockingWork<Sp, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnBlockingWork").finish_non_exhaustive()
    }
}

impl<K, T, S, Sp, F> Launch<Arc<Group<K, T, S>>> for SpawnBlockingWork<Sp, F>
where
    K: Send + 'static,
    T: Clone + Send + 'static,
    S: Send + Sync + 'static,
    Sp: SpawnBlocking,
    F: FnOnce() -> T + Send + 'static,
{
    fn launch(self, leader: Leader<Arc<Group<K, T, S>>>, failed: fn(&T) -> bool) {
        let mut guard = Guard(Some(leader));
        let work = self.work;
        self.spawner.spawn_blocking(move || {
            let leader = guard.0.take().expect("the closure runs once");
            // Waiters (and this flight's own caller) get `Panicked` if the work panics;
            // the pool thread must not unwind.
            leader.run_handing_over(work, failed);
        });
    }
}

/// Holds a detached flight's leader; if the runtime drops the work unfinished, the flight
/// ends with [`Error::Panicked`] instead of a takeover: its callers gave their work away.
struct Guard<G: GroupRef>(Option<Leader<G>>);

impl<G: GroupRef> Drop for Guard<G> {
    fn drop(&mut self) {
        if let Some(leader) = self.0.take() {
            let _ = leader.end(
                Ending::Panicked(PanicMessage::new(DROPPED)),
                Execution::Dropped,
            );
        }
    }
}

pin_project! {
    /// The spawned task of detached async work.
    struct Task<G: GroupRef, Fut> {
        // `fut` before `guard`: fields drop in order, so work dropped unfinished is gone
        // before its flight ends and a new one can start.
        #[pin]
        fut: Fut,
        guard: Guard<G>,
        failed: fn(&G::Value) -> bool,
    }
}

impl<G, Fut> Future for Task<G, Fut>
where
    G: GroupRef,
    G::Value: Clone,
    Fut: Future<Output = G::Value>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let Some(leader) = this.guard.0.as_ref() else {
            return Poll::Ready(());
        };
        let polled = match leader.poll_work(this.fut, cx) {
            Ok(polled) => polled,
            Err(payload) => {
                let leader = this.guard.0.take().expect("checked above");
                leader.panicked(unwind::message(&payload));
                return Poll::Ready(());
            }
        };
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(value) => {
                let leader = this.guard.0.take().expect("checked above");
                // Nobody here keeps a copy: the callers wait as waiters, so nothing is cloned.
                leader.hand_over(value, *this.failed);
                Poll::Ready(())
            }
        }
    }
}

/// The future of a detached call (for instance `call_detached` of a front-end group).
///
/// On first poll it joins the flight of its key, or starts one by handing the work and the
/// flight's leader to its [`Launch`] (a spawned task); either way it then waits for the
/// flight's outcome. The work therefore runs exactly once per flight and finishes even if
/// every caller goes away. If this caller joins a flight whose (non-detached) leader is
/// dropped and it is promoted, it launches its own work the same way.
///
/// With a refresh threshold ([`Group::refresh_after`]), a call that finds its key's value
/// past it resolves to the value at once and launches its work as the key's refresh (if
/// none is running): a flight of its own, out of reach of this future's cancellation.
///
/// # Cancel safety
///
/// Dropping it before its first poll does nothing. Dropping it later only stops this caller
/// waiting: the work, once launched, runs to the end, and other callers still get its outcome.
///
/// # Panics
///
/// Polling after completion panics. A panic of the work does not propagate into this future:
/// every caller, including the one that launched it, gets [`Error::Panicked`].
#[must_use = "futures do nothing unless polled"]
pub struct Detached<'a, K, Q: ?Sized, T, S, L> {
    group: &'a Arc<Group<K, T, S>>,
    key: &'a Q,
    launch: Option<Launched<L>>,
    failed: fn(&T) -> bool,
    role: Option<Role>,
    waiter: Option<Waiter<Arc<Group<K, T, S>>>>,
    done: bool,
}

// The launcher is only ever moved out whole, never pinned.
impl<K, Q: ?Sized, T, S, L> Unpin for Detached<'_, K, Q, T, S, L> {}

impl<'a, K, Q: ?Sized, T, S, L> Detached<'a, K, Q, T, S, L> {
    /// A detached call of `key` on `group` that starts its work with `launch`.
    pub fn new(group: &'a Arc<Group<K, T, S>>, key: &'a Q, launch: L) -> Self {
        Self::with_failed(group, key, launch, |_| false)
    }

    fn with_failed(
        group: &'a Arc<Group<K, T, S>>,
        key: &'a Q,
        launch: L,
        failed: fn(&T) -> bool,
    ) -> Self {
        Self {
            group,
            key,
            launch: Some(Launched(launch)),
            failed,
            role: None,
            waiter: None,
            done: false,
        }
    }
}

impl<K, Q, T, S, L> Future for Detached<'_, K, Q, T, S, L>
where
    K: Hash + Eq + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher,
    T: Clone,
    L: Launch<Arc<Group<K, T, S>>>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // The call loop's steps (see `call_loop`): register once, then wait, launching
        // this caller's work whenever it is to lead.
        let mut step = match this.waiter.take() {
            Some(waiter) => Step::Wait(waiter),
            None => {
                assert!(!this.done, "`Detached` polled after completion");
                register(
                    Arc::clone(this.group),
                    this.key,
                    None,
                    &mut this.launch,
                    this.failed,
                )
            }
        };
        loop {
            step = match step {
                Step::Done(outcome, role) => {
                    this.role = Some(role);
                    this.done = true;
                    return Poll::Ready(outcome);
                }
                Step::Launched(waiter) => {
                    this.role = Some(Role::Leader { shared: false });
                    Step::Wait(waiter)
                }
                Step::Wait(mut waiter) => match waiter.poll(cx) {
                    Poll::Pending => {
                        this.waiter = Some(waiter);
                        return Poll::Pending;
                    }
                    // The launcher learns its `shared` answer with the outcome.
                    Poll::Ready(outcome) => {
                        waited(outcome, waiter.role(), &mut this.launch, this.failed)
                    }
                },
                Step::Lead(_) => unreachable!("launched work never runs in place"),
            };
        }
    }
}

impl<K, Q, T, S, L> CallFuture for Detached<'_, K, Q, T, S, L>
where
    Self: Future,
    Q: ?Sized,
{
    fn role(&self) -> Option<Role> {
        self.role
    }
}

impl<K, Q: ?Sized, T, S, L> fmt::Debug for Detached<'_, K, Q, T, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detached")
            .field("role", &self.role)
            .field("waiting", &self.waiter.is_some())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// A [`Detached`] call of fallible work: the work's error reaches every caller as
/// [`Error::Failed`].
///
/// # Cancel safety
///
/// As [`Detached`].
///
/// # Panics
///
/// As [`Detached`].
#[must_use = "futures do nothing unless polled"]
pub struct TryDetached<'a, K, Q: ?Sized, V, E, S, L> {
    inner: Detached<'a, K, Q, Result<V, E>, S, L>,
}

impl<'a, K, Q: ?Sized, V, E, S, L> TryDetached<'a, K, Q, V, E, S, L> {
    /// A detached call of fallible work: see [`Detached::new`].
    pub fn new(group: &'a Arc<Group<K, Result<V, E>, S>>, key: &'a Q, launch: L) -> Self {
        Self {
            inner: Detached::with_failed(group, key, launch, Result::is_err),
        }
    }
}

impl<K, Q, V, E, S, L> Future for TryDetached<'_, K, Q, V, E, S, L>
where
    K: Hash + Eq + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher,
    V: Clone,
    E: Clone,
    L: Launch<Arc<Group<K, Result<V, E>, S>>>,
{
    type Output = Result<V, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.get_mut().inner).poll(cx).map(flatten)
    }
}

impl<K, Q, V, E, S, L> CallFuture for TryDetached<'_, K, Q, V, E, S, L>
where
    Self: Future,
    Q: ?Sized,
{
    fn role(&self) -> Option<Role> {
        self.inner.role
    }
}

impl<K, Q: ?Sized, V, E, S, L> fmt::Debug for TryDetached<'_, K, Q, V, E, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TryDetached").field(&self.inner).finish()
    }
}
