//! The request builder: every way an async front-end can call, reached one way.
//!
//! A call has three independent choices: what the work returns (a value, a `Result` whose
//! error is shared as a clone, or a `Result` whose error is shared as one `Arc`), where the
//! work runs (in the caller's task, in a spawned task, on the blocking pool), and how the
//! caller waits (with or without a timeout; with or without its role). Named methods for
//! every combination would be thirty-six names, and the grid had holes whenever one was
//! forgotten; the builder reaches each of them with the same few steps, and the named
//! methods (`call`, `try_call_detached`, `call_timeout`, …) are shorthands for the common
//! ones, implemented on it, so that the behaviour is written once.
//!
//! ```text
//! group.request(&key)          // in the caller's task, no timeout, the result only
//!     .detached()              // or .blocking(): the work runs on the runtime
//!     .timeout(duration)       // the caller gives up after `duration`
//!     .with_role()             // resolve to (result, role)
//!     .call(work)              // or .try_call(work), .try_call_arc(work)
//! ```
//!
//! The steps before the terminal call may come in any order. Each choice is a type
//! parameter of [`Request`], so the future a request makes is exactly the one the choices
//! need: no timer where there is no timeout, and the same future as the matching shorthand.

use alloc::borrow::ToOwned;
use alloc::sync::Arc;
use core::borrow::Borrow;
use core::convert::Infallible;
use core::fmt;
use core::future::Future;
use core::hash::{BuildHasher, Hash};
use core::marker::PhantomData;
use core::time::Duration;

use super::{
    Detached, RuntimeGroup, Spawn, SpawnBlocking, SpawnBlockingWork, SpawnWork, Timeout, Timer,
    TryDetached,
};
use crate::error::{Error, ShareableError};
use crate::future::{Call, CallFuture, TryCall, WithRole};
use crate::observer::Observer;
use crate::shared_error::ArcErr;

mod sealed {
    pub trait Sealed {}
}

/// Where the work runs: in the task of the caller that leads (the default).
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct InCaller;

/// Where the work runs: in a task spawned on the runtime ([`Request::detached`]).
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct Spawned;

/// Where the work runs: on the runtime's blocking pool ([`Request::blocking`]).
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct OnBlockingPool;

/// How long the caller waits: until the outcome (the default).
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct Untimed;

/// How long the caller waits: at most this long ([`Request::timeout`]).
#[derive(Clone, Copy, Debug)]
pub struct Timed(Duration);

/// What the call resolves to: its result only (the default).
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct ResultOnly;

/// What the call resolves to: `(result, role)` ([`Request::with_role`]).
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct ResultAndRole;

impl sealed::Sealed for Untimed {}
impl sealed::Sealed for Timed {}
impl sealed::Sealed for ResultOnly {}
impl sealed::Sealed for ResultAndRole {}

/// How long a [`Request`]'s caller waits: [`Untimed`] or [`Timed`]. Sealed.
pub trait TimeLimit<Tm>: sealed::Sealed {
    /// The call future, bounded or not.
    type Output<C, V, E>: CallFuture<Output = Result<V, Error<E>>>
    where
        C: CallFuture<Output = Result<V, Error<E>>>;

    /// Bounds `call` (or not), on `timer`, telling `observer` of a timeout.
    #[doc(hidden)]
    fn limit<C, V, E>(
        self,
        call: C,
        timer: &Tm,
        observer: Option<&Arc<dyn Observer>>,
    ) -> Self::Output<C, V, E>
    where
        C: CallFuture<Output = Result<V, Error<E>>>;
}

impl<Tm> TimeLimit<Tm> for Untimed {
    type Output<C, V, E>
        = C
    where
        C: CallFuture<Output = Result<V, Error<E>>>;

    fn limit<C, V, E>(self, call: C, _: &Tm, _: Option<&Arc<dyn Observer>>) -> C
    where
        C: CallFuture<Output = Result<V, Error<E>>>,
    {
        call
    }
}

impl<Tm: Timer + Clone> TimeLimit<Tm> for Timed {
    type Output<C, V, E>
        = Timeout<C, Tm>
    where
        C: CallFuture<Output = Result<V, Error<E>>>;

    fn limit<C, V, E>(
        self,
        call: C,
        timer: &Tm,
        observer: Option<&Arc<dyn Observer>>,
    ) -> Timeout<C, Tm>
    where
        C: CallFuture<Output = Result<V, Error<E>>>,
    {
        Timeout::new(call, timer.clone(), self.0, observer.cloned())
    }
}

/// What a [`Request`]'s call resolves to: [`ResultOnly`] or [`ResultAndRole`]. Sealed.
pub trait Reply: sealed::Sealed {
    /// The future the caller awaits.
    type Output<C: CallFuture>: Future;

    /// Makes `call` resolve to what this reply says.
    #[doc(hidden)]
    fn reply<C: CallFuture>(call: C) -> Self::Output<C>;
}

impl Reply for ResultOnly {
    type Output<C: CallFuture> = C;

    fn reply<C: CallFuture>(call: C) -> C {
        call
    }
}

impl Reply for ResultAndRole {
    type Output<C: CallFuture> = WithRole<C>;

    fn reply<C: CallFuture>(call: C) -> WithRole<C> {
        call.with_role()
    }
}

/// A call being set up: where its work runs (`W`), how long its caller waits (`L`) and what
/// it resolves to (`R`). Made by a group's `request(&key)`; see the [module docs](self) for
/// why calls are made this way.
///
/// | step | effect |
/// |---|---|
/// | [`detached`](Self::detached) | the work runs in a spawned task, and finishes even if every caller leaves |
/// | [`blocking`](Self::blocking) | the (blocking) work runs on the runtime's blocking pool, as detached work |
/// | [`timeout`](Self::timeout) | the caller gives up after a duration ([`Error::Timeout`]) |
/// | [`with_role`](Self::with_role) | the call resolves to `(result, role)`, as [`CallFuture::with_role`] |
/// | [`call`](Self::call), [`try_call`](Self::try_call), [`try_call_arc`](Self::try_call_arc) | makes the call's future, for a value, a `Result` shared as a clone, a `Result` shared as an `Arc` |
///
/// Each terminal call makes the same future as the group's matching shorthand, with the
/// same errors, panics and cancel safety: `group.request(&k).detached().timeout(d).call(w)`
/// is `group.call_detached_timeout(&k, d, w)`.
#[must_use = "a request does nothing until `call`, `try_call` or `try_call_arc`"]
pub struct Request<'a, G, Q: ?Sized, W = InCaller, L = Untimed, R = ResultOnly> {
    group: &'a G,
    key: &'a Q,
    limit: L,
    state: PhantomData<fn() -> (W, R)>,
}

impl<'a, G, Q: ?Sized> Request<'a, G, Q> {
    pub(crate) fn new(group: &'a G, key: &'a Q) -> Self {
        Self {
            group,
            key,
            limit: Untimed,
            state: PhantomData,
        }
    }
}

impl<'a, G, Q: ?Sized, W, L, R> Request<'a, G, Q, W, L, R> {
    /// The same request in another state, with its time limit.
    fn to<W2, L2, R2>(self, limit: impl FnOnce(L) -> L2) -> Request<'a, G, Q, W2, L2, R2> {
        Request {
            group: self.group,
            key: self.key,
            limit: limit(self.limit),
            state: PhantomData,
        }
    }

    /// Bounds the call by `duration` on the runtime's timer, counted from the first poll:
    /// see [`Timeout`]. A waiter that times out leaves only itself; a leader that times out
    /// is cancelled, as if dropped; the caller of detached or blocking work stops waiting
    /// while the work goes on. A second `timeout` replaces the first.
    pub fn timeout(self, duration: Duration) -> Request<'a, G, Q, W, Timed, R> {
        self.to(|_| Timed(duration))
    }

    /// Makes the call resolve to `(result, role)`: whether this caller ran the work, joined
    /// another caller's, or reused a kept value. The same as calling
    /// [`CallFuture::with_role`] on the call's future.
    pub fn with_role(self) -> Request<'a, G, Q, W, L, ResultAndRole> {
        self.to(|limit| limit)
    }
}

impl<'a, K, T, Sp, Tm, S, Q: ?Sized, W, L, R> Request<'a, RuntimeGroup<K, T, Sp, Tm, S>, Q, W, L, R>
where
    L: TimeLimit<Tm>,
    R: Reply,
{
    /// Bounds the call's future by the time limit and shapes its output.
    fn finish<C, V, E>(self, call: C) -> R::Output<L::Output<C, V, E>>
    where
        C: CallFuture<Output = Result<V, Error<E>>>,
    {
        let group = self.group;
        R::reply(
            self.limit
                .limit(call, group.timer(), group.as_core().observer()),
        )
    }
}

impl<'a, K, T, Sp, Tm, S, Q: ?Sized, L, R>
    Request<'a, RuntimeGroup<K, T, Sp, Tm, S>, Q, InCaller, L, R>
{
    /// Runs the work in a task spawned on the runtime: it runs exactly once and finishes
    /// even if every caller goes away. The work must be `Send + 'static`; see the group's
    /// `call_detached`.
    #[allow(
        clippy::type_complexity,
        reason = "the request in its next state, named in full; an alias would only hide it"
    )]
    pub fn detached(self) -> Request<'a, RuntimeGroup<K, T, Sp, Tm, S>, Q, Spawned, L, R>
    where
        Sp: Spawn,
    {
        self.to(|limit| limit)
    }

    /// Runs blocking work (a closure, not a future) on the runtime's blocking pool; it
    /// finishes even if every caller goes away, as detached work does. See the group's
    /// `call_blocking`.
    #[allow(
        clippy::type_complexity,
        reason = "the request in its next state, named in full; an alias would only hide it"
    )]
    pub fn blocking(self) -> Request<'a, RuntimeGroup<K, T, Sp, Tm, S>, Q, OnBlockingPool, L, R>
    where
        Sp: SpawnBlocking,
    {
        self.to(|limit| limit)
    }
}

/// The calls whose work runs in the leading caller's task, for a value.
impl<'a, K, T, Sp, Tm, S, Q, L, R> Request<'a, RuntimeGroup<K, T, Sp, Tm, S>, Q, InCaller, L, R>
where
    K: Hash + Eq + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher,
    T: Clone,
    L: TimeLimit<Tm>,
    R: Reply,
{
    /// Makes the call: `work` runs once for all concurrent callers of the key, inside the
    /// leading caller's task (it may borrow from the caller), and every caller gets a clone
    /// of its value. Without other steps this is [`RuntimeGroup::call`].
    ///
    /// # Errors
    ///
    /// As [`RuntimeGroup::call`], and [`Error::Timeout`] after [`timeout`](Self::timeout).
    ///
    /// # Panics
    ///
    /// As [`RuntimeGroup::call`].
    ///
    /// # Cancel safety
    ///
    /// As [`RuntimeGroup::call`].
    #[allow(
        clippy::type_complexity,
        reason = "the request's future, named by its steps; an alias would only hide it"
    )]
    pub fn call<F, Fut>(
        self,
        work: F,
    ) -> R::Output<L::Output<Call<'a, K, Q, T, S, F, Fut>, T, Infallible>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let call = self.group.as_core().call(self.key, work);
        self.finish(call)
    }
}

/// The calls whose work runs in the leading caller's task, for a `Result` whose error is
/// shared as a clone.
impl<'a, K, V, E, Sp, Tm, S, Q, L, R>
    Request<'a, RuntimeGroup<K, Result<V, E>, Sp, Tm, S>, Q, InCaller, L, R>
where
    K: Hash + Eq + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher,
    V: Clone,
    L: TimeLimit<Tm>,
    R: Reply,
{
    /// Makes a fallible call: as [`call`](Self::call), and the leader's error reaches every
    /// caller as [`Error::Failed`]. Without other steps this is [`RuntimeGroup::try_call`].
    ///
    /// # Errors
    ///
    /// As [`RuntimeGroup::try_call`], and [`Error::Timeout`] after
    /// [`timeout`](Self::timeout).
    ///
    /// # Panics
    ///
    /// As [`RuntimeGroup::call`].
    ///
    /// # Cancel safety
    ///
    /// As [`RuntimeGroup::call`].
    #[allow(
        clippy::type_complexity,
        reason = "the request's future, named by its steps; an alias would only hide it"
    )]
    pub fn try_call<F, Fut>(
        self,
        work: F,
    ) -> R::Output<L::Output<TryCall<'a, K, Q, V, E, S, F, Fut>, V, E>>
    where
        E: ShareableError,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let call = self.group.as_core().try_call(self.key, work);
        self.finish(call)
    }
}

/// The calls whose work runs in the leading caller's task, for a `Result` whose error is
/// shared as one `Arc`.
impl<'a, K, V, E, Sp, Tm, S, Q, L, R>
    Request<'a, RuntimeGroup<K, Result<V, Arc<E>>, Sp, Tm, S>, Q, InCaller, L, R>
where
    K: Hash + Eq + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher,
    V: Clone,
    L: TimeLimit<Tm>,
    R: Reply,
{
    /// Makes a fallible call whose error `E` is not `Clone`: the work returns its plain
    /// `Result<V, E>`, and every caller gets the leader's error as the same `Arc<E>`.
    /// Without other steps this is [`RuntimeGroup::try_call_arc`].
    ///
    /// # Errors
    ///
    /// As [`RuntimeGroup::try_call_arc`], and [`Error::Timeout`] after
    /// [`timeout`](Self::timeout).
    ///
    /// # Panics
    ///
    /// As [`RuntimeGroup::call`].
    ///
    /// # Cancel safety
    ///
    /// As [`RuntimeGroup::call`].
    #[allow(
        clippy::type_complexity,
        reason = "the request's future, named by its steps; an alias would only hide it"
    )]
    pub fn try_call_arc<F, Fut>(
        self,
        work: F,
    ) -> R::Output<L::Output<impl CallFuture<Output = Result<V, Error<Arc<E>>>>, V, Arc<E>>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let call = self.group.as_core().try_call_arc(self.key, work);
        self.finish(call)
    }
}

/// The calls whose work runs in a spawned task, for a value.
impl<'a, K, T, Sp, Tm, S, Q, L, R> Request<'a, RuntimeGroup<K, T, Sp, Tm, S>, Q, Spawned, L, R>
where
    K: Hash + Eq + Borrow<Q> + Send + 'static,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher + Send + Sync + 'static,
    T: Clone + Send + 'static,
    Sp: Spawn + Clone,
    L: TimeLimit<Tm>,
    R: Reply,
{
    /// Makes the call: `work`'s future runs once for all concurrent callers of the key, in
    /// a task spawned on the runtime, and every caller gets a clone of its value. Without
    /// other steps this is [`RuntimeGroup::call_detached`].
    ///
    /// # Errors
    ///
    /// As [`RuntimeGroup::call_detached`], and [`Error::Timeout`] after
    /// [`timeout`](Self::timeout).
    ///
    /// # Panics
    ///
    /// As [`RuntimeGroup::call_detached`].
    ///
    /// # Cancel safety
    ///
    /// As [`RuntimeGroup::call_detached`]: dropping the future stops only this caller
    /// waiting.
    #[allow(
        clippy::type_complexity,
        reason = "the request's future, named by its steps; an alias would only hide it"
    )]
    pub fn call<F, Fut>(
        self,
        work: F,
    ) -> R::Output<L::Output<Detached<'a, K, Q, T, S, SpawnWork<Sp, F>>, T, Infallible>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let launch = SpawnWork::new(self.group.spawner().clone(), work);
        let call = Detached::new(self.group.shared(), self.key, launch);
        self.finish(call)
    }
}

/// The calls whose work runs in a spawned task, for a `Result` whose error is shared as a
/// clone.
impl<'a, K, V, E, Sp, Tm, S, Q, L, R>
    Request<'a, RuntimeGroup<K, Result<V, E>, Sp, Tm, S>, Q, Spawned, L, R>
where
    K: Hash + Eq + Borrow<Q> + Send + 'static,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher + Send + Sync + 'static,
    V: Clone + Send + 'static,
    Sp: Spawn + Clone,
    L: TimeLimit<Tm>,
    R: Reply,
{
    /// Makes a fallible detached call: as [`call`](Self::call), and the leader's error
    /// reaches every caller as [`Error::Failed`]. Without other steps this is
    /// [`RuntimeGroup::try_call_detached`].
    ///
    /// # Errors
    ///
    /// As [`RuntimeGroup::try_call_detached`], and [`Error::Timeout`] after
    /// [`timeout`](Self::timeout).
    ///
    /// # Panics
    ///
    /// As [`RuntimeGroup::call_detached`].
    ///
    /// # Cancel safety
    ///
    /// As [`RuntimeGroup::call_detached`].
    #[allow(
        clippy::type_complexity,
        reason = "the request's future, named by its steps; an alias would only hide it"
    )]
    pub fn try_call<F, Fut>(
        self,
        work: F,
    ) -> R::Output<L::Output<TryDetached<'a, K, Q, V, E, S, SpawnWork<Sp, F>>, V, E>>
    where
        E: ShareableError + Send + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let launch = SpawnWork::new(self.group.spawner().clone(), work);
        let call = TryDetached::new(self.group.shared(), self.key, launch);
        self.finish(call)
    }
}

/// The calls whose work runs in a spawned task, for a `Result` whose error is shared as one
/// `Arc`.
impl<'a, K, V, E, Sp, Tm, S, Q, L, R>
    Request<'a, RuntimeGroup<K, Result<V, Arc<E>>, Sp, Tm, S>, Q, Spawned, L, R>
where
    K: Hash + Eq + Borrow<Q> + Send + 'static,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher + Send + Sync + 'static,
    V: Clone + Send + 'static,
    E: Send + Sync + 'static,
    Sp: Spawn + Clone,
    L: TimeLimit<Tm>,
    R: Reply,
{
    /// Makes a fallible detached call whose error `E` is not `Clone`: every caller gets the
    /// leader's error as the same `Arc<E>`. Without other steps this is
    /// [`RuntimeGroup::try_call_detached_arc`].
    ///
    /// # Errors
    ///
    /// As [`RuntimeGroup::try_call_detached_arc`], and [`Error::Timeout`] after
    /// [`timeout`](Self::timeout).
    ///
    /// # Panics
    ///
    /// As [`RuntimeGroup::call_detached`].
    ///
    /// # Cancel safety
    ///
    /// As [`RuntimeGroup::call_detached`].
    #[allow(
        clippy::type_complexity,
        reason = "the request's future, named by its steps; an alias would only hide it"
    )]
    pub fn try_call_arc<F, Fut>(
        self,
        work: F,
    ) -> R::Output<L::Output<impl CallFuture<Output = Result<V, Error<Arc<E>>>>, V, Arc<E>>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let launch = SpawnWork::new(self.group.spawner().clone(), move || ArcErr::new(work()));
        let call = TryDetached::new(self.group.shared(), self.key, launch);
        self.finish(call)
    }
}

/// The calls whose work runs on the blocking pool, for a value.
impl<'a, K, T, Sp, Tm, S, Q, L, R>
    Request<'a, RuntimeGroup<K, T, Sp, Tm, S>, Q, OnBlockingPool, L, R>
where
    K: Hash + Eq + Borrow<Q> + Send + 'static,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher + Send + Sync + 'static,
    T: Clone + Send + 'static,
    Sp: SpawnBlocking + Clone,
    L: TimeLimit<Tm>,
    R: Reply,
{
    /// Makes the call: the blocking closure `work` runs once for all concurrent callers of
    /// the key, on the runtime's blocking pool, and every caller gets a clone of its value.
    /// Without other steps this is [`RuntimeGroup::call_blocking`].
    ///
    /// # Errors
    ///
    /// As [`RuntimeGroup::call_blocking`], and [`Error::Timeout`] after
    /// [`timeout`](Self::timeout).
    ///
    /// # Panics
    ///
    /// As [`RuntimeGroup::call_detached`].
    ///
    /// # Cancel safety
    ///
    /// As [`RuntimeGroup::call_detached`]: a blocking closure is never interrupted.
    #[allow(
        clippy::type_complexity,
        reason = "the request's future, named by its steps; an alias would only hide it"
    )]
    pub fn call<F>(
        self,
        work: F,
    ) -> R::Output<L::Output<Detached<'a, K, Q, T, S, SpawnBlockingWork<Sp, F>>, T, Infallible>>
    where
        F: FnOnce() -> T + Send + 'static,
    {
        let launch = SpawnBlockingWork::new(self.group.spawner().clone(), work);
        let call = Detached::new(self.group.shared(), self.key, launch);
        self.finish(call)
    }
}

/// The calls whose work runs on the blocking pool, for a `Result` whose error is shared as
/// a clone.
impl<'a, K, V, E, Sp, Tm, S, Q, L, R>
    Request<'a, RuntimeGroup<K, Result<V, E>, Sp, Tm, S>, Q, OnBlockingPool, L, R>
where
    K: Hash + Eq + Borrow<Q> + Send + 'static,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher + Send + Sync + 'static,
    V: Clone + Send + 'static,
    Sp: SpawnBlocking + Clone,
    L: TimeLimit<Tm>,
    R: Reply,
{
    /// Makes a fallible blocking call: as [`call`](Self::call), and the leader's error
    /// reaches every caller as [`Error::Failed`]. Without other steps this is
    /// [`RuntimeGroup::try_call_blocking`].
    ///
    /// # Errors
    ///
    /// As [`RuntimeGroup::try_call_blocking`], and [`Error::Timeout`] after
    /// [`timeout`](Self::timeout).
    ///
    /// # Panics
    ///
    /// As [`RuntimeGroup::call_detached`].
    ///
    /// # Cancel safety
    ///
    /// As [`RuntimeGroup::call_detached`]: a blocking closure is never interrupted.
    #[allow(
        clippy::type_complexity,
        reason = "the request's future, named by its steps; an alias would only hide it"
    )]
    pub fn try_call<F>(
        self,
        work: F,
    ) -> R::Output<L::Output<TryDetached<'a, K, Q, V, E, S, SpawnBlockingWork<Sp, F>>, V, E>>
    where
        E: ShareableError + Send + 'static,
        F: FnOnce() -> Result<V, E> + Send + 'static,
    {
        let launch = SpawnBlockingWork::new(self.group.spawner().clone(), work);
        let call = TryDetached::new(self.group.shared(), self.key, launch);
        self.finish(call)
    }
}

/// The calls whose work runs on the blocking pool, for a `Result` whose error is shared as
/// one `Arc`.
impl<'a, K, V, E, Sp, Tm, S, Q, L, R>
    Request<'a, RuntimeGroup<K, Result<V, Arc<E>>, Sp, Tm, S>, Q, OnBlockingPool, L, R>
where
    K: Hash + Eq + Borrow<Q> + Send + 'static,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher + Send + Sync + 'static,
    V: Clone + Send + 'static,
    E: Send + Sync + 'static,
    Sp: SpawnBlocking + Clone,
    L: TimeLimit<Tm>,
    R: Reply,
{
    /// Makes a fallible blocking call whose error `E` is not `Clone`: every caller gets the
    /// leader's error as the same `Arc<E>`.
    ///
    /// # Errors
    ///
    /// [`Error::Failed`] with the work's error in an `Arc`, the errors of
    /// [`RuntimeGroup::call_blocking`], and [`Error::Timeout`] after
    /// [`timeout`](Self::timeout).
    ///
    /// # Panics
    ///
    /// As [`RuntimeGroup::call_detached`].
    ///
    /// # Cancel safety
    ///
    /// As [`RuntimeGroup::call_detached`]: a blocking closure is never interrupted.
    #[allow(
        clippy::type_complexity,
        reason = "the request's future, named by its steps; an alias would only hide it"
    )]
    pub fn try_call_arc<F>(
        self,
        work: F,
    ) -> R::Output<L::Output<impl CallFuture<Output = Result<V, Error<Arc<E>>>>, V, Arc<E>>>
    where
        F: FnOnce() -> Result<V, E> + Send + 'static,
    {
        let launch = SpawnBlockingWork::new(self.group.spawner().clone(), move || {
            work().map_err(Arc::new)
        });
        let call = TryDetached::new(self.group.shared(), self.key, launch);
        self.finish(call)
    }
}

impl<G, Q: ?Sized, W, L: fmt::Debug, R> fmt::Debug for Request<'_, G, Q, W, L, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("where", &core::any::type_name::<W>())
            .field("limit", &self.limit)
            .field("reply", &core::any::type_name::<R>())
            .finish_non_exhaustive()
    }
}
