//! Named futures for async callers: the work runs inside the caller's own task, so it may
//! borrow from the caller and need not be `'static` or `Send` (unless the caller's task is).

use alloc::borrow::ToOwned;
use core::borrow::Borrow;
use core::fmt;
use core::future::Future;
use core::hash::{BuildHasher, Hash};
use core::marker::PhantomData;
use core::pin::Pin;
use core::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::call_loop::{Inline, Step, enter, entered, waited};
use crate::entered::Entered;
use crate::error::Error;
use crate::group::Group;
use crate::leader::Leader;
use crate::types::Role;
use crate::unwind::{self, Payload};
use crate::waiter::Waiter;
use crate::work::Work;

/// A future of a coalesced call that can tell which role its caller played.
///
/// Implemented by [`Call`] and [`TryCall`], and by the front-ends' wrappers around them.
pub trait CallFuture: Future {
    /// The caller's role, once settled: `None` until the call has registered and either
    /// started the work or received an outcome.
    fn role(&self) -> Option<Role>;

    /// Makes the future resolve to `(output, role)`: whether this caller ran the work or
    /// shared someone else's execution, and for a leader whether anyone joined it (Go's
    /// `shared` flag: [`Role::is_shared`]).
    fn with_role(self) -> WithRole<Self>
    where
        Self: Sized,
    {
        WithRole { inner: self }
    }
}

pin_project! {
    // Each state holds only what it needs (the group and key only until the call
    // registers), so that a waiting call, of which a herd has thousands, stays small.
    #[project = StateProj]
    enum State<'a, K, Q: ?Sized, T, S, F, Fut> {
        Start { group: &'a Group<K, T, S>, key: &'a Q, work: Option<Inline<F>> },
        Waiting { waiter: Waiter<&'a Group<K, T, S>>, work: Option<Inline<F>> },
        // The work's future lives inline if it is small (a lone leader allocates nothing),
        // boxed if it is large (a waiting call, of which a herd has thousands, holds room
        // for a small one only): see `work.rs`.
        // `fut` before `leader`: fields drop in order, so a cancelled leader's work is gone
        // before its guard promotes a waiter, and two executions never overlap.
        Leading { #[pin] fut: Work<Fut>, leader: Option<Leader<&'a Group<K, T, S>>> },
        // The caller's role lives here, not in a field of the call beside the state: a
        // call has a role only once it is done (or while it leads: `Leader { shared:
        // false }`), and `Done` is never the largest state, so every call, a waiting one
        // included, is 16 bytes smaller.
        Done { role: Role },
    }
}

impl<K, Q: ?Sized, T, S, F, Fut> State<'_, K, Q, T, S, F, Fut> {
    /// A leading call's state once its work is done and dropped, before the flight has
    /// ended: the role says whether anyone shared it once it has.
    const DONE_LEADING: Self = State::Done {
        role: Role::Leader { shared: false },
    };
}

pin_project! {
    /// The future returned by [`Group::call`]: joins or leads a flight on first poll and
    /// resolves to the flight's outcome.
    ///
    /// # Cancel safety
    ///
    /// Dropping it before it is polled does nothing: a call registers on its first poll.
    /// Dropping a waiting call removes only that caller. Dropping a leading call cancels its
    /// work; the group's [`LeaderDropPolicy`](crate::LeaderDropPolicy) decides whether the
    /// oldest waiter takes over or every waiter fails with [`Error::LeaderDropped`].
    ///
    /// # Panics
    ///
    /// If the work panics, the panic resumes in this future's `poll` after every waiter has
    /// been handed [`Error::Panicked`] (with `std`). Polling after completion panics.
    ///
    /// User code that this caller runs panics here too, and only here: the key's `Hash`,
    /// `Eq` or `ToOwned`; the value's `Clone` (a leader's clone for its waiters: they get
    /// the original; a waiter's own clone: the others get theirs); the work's `Drop` after
    /// it produced a value (the waiters get the value); an observer hook run for this call.
    /// Every other caller still gets its outcome and the key is free afterwards (see the
    /// crate docs' table of user code).
    #[must_use = "futures do nothing unless polled"]
    pub struct Call<'a, K, Q: ?Sized, T, S, F, Fut, C = Plain> {
        #[pin]
        state: State<'a, K, Q, T, S, F, Fut>,
        // Which values stand for failures: a type, not a field (a function pointer here
        // was 8 bytes in every call, and took a herd's tasks over tokio's 256-byte cell).
        classify: PhantomData<fn() -> C>,
    }
}

/// Whether a value of a call's work stands for a failure, for observers and the reuse
/// window's error policy: chosen by the method that made the [`Call`], as a type.
/// Not nameable outside the crate: [`Plain`] and [`Fallible`] are the only two.
pub trait Classify<T> {
    /// Whether `value` is a failure.
    fn failed(value: &T) -> bool;
}

/// The [`Classify`] of [`Group::call`]: no value is a failure.
#[derive(Debug)]
pub enum Plain {}

impl<T> Classify<T> for Plain {
    #[inline]
    fn failed(_: &T) -> bool {
        false
    }
}

/// The [`Classify`] of [`Group::try_call`]: an `Err` is a failure.
#[derive(Debug)]
pub(crate) enum Fallible {}

impl<V, E> Classify<Result<V, E>> for Fallible {
    #[inline]
    fn failed(value: &Result<V, E>) -> bool {
        value.is_err()
    }
}

impl<K, T, S> Group<K, T, S>
where
    K: Hash + Eq,
    S: BuildHasher,
    T: Clone,
{
    /// Returns a future that runs `work` once for all concurrent callers of `key` and
    /// resolves to a clone of its value.
    ///
    /// The call registers on first poll. If a flight for `key` is in progress, the caller
    /// waits for it and `work` is never called (unless this caller takes over after the
    /// leader is dropped); otherwise it leads, calling `work` and driving its future inside
    /// the caller's own task. A small work future (up to 32 bytes) is stored inline in the
    /// returned [`Call`], with no allocation; a larger one is boxed by the caller that leads,
    /// so that every call, leading or waiting, holds 32 bytes of room for the work whatever
    /// its size (a herd of thousands of waiting callers stays small).
    ///
    /// # Errors
    ///
    /// [`Error::Panicked`] if the leader's work panicked, [`Error::LeaderDropped`] if the
    /// leader was dropped under [`FailWaiters`](crate::LeaderDropPolicy::FailWaiters),
    /// [`Error::Reentrant`] if called from inside this key's own work.
    ///
    /// # Cancel safety
    ///
    /// See [`Call`].
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_lite_free::block_on(async {
    /// let group = singleflight_core::Group::<String, u32>::new();
    /// let value = group.call("answer", || async { 42 }).await;
    /// assert_eq!(value, Ok(42));
    /// # });
    /// # mod futures_lite_free {
    /// #     pub fn block_on<F: core::future::Future>(f: F) -> F::Output {
    /// #         let mut f = core::pin::pin!(f);
    /// #         let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    /// #         loop { if let core::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
    /// #     }
    /// # }
    /// ```
    pub fn call<'a, Q, F, Fut>(&'a self, key: &'a Q, work: F) -> Call<'a, K, Q, T, S, F, Fut>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        Call {
            state: State::Start {
                group: self,
                key,
                work: Some(Inline(work)),
            },
            classify: PhantomData,
        }
    }
}

impl<K, V, E, S> Group<K, Result<V, E>, S>
where
    K: Hash + Eq,
    S: BuildHasher,
    V: Clone,
{
    /// Like [`call`](Self::call), for fallible work: the leader's error reaches every waiter
    /// as [`Error::Failed`].
    ///
    /// # Errors
    ///
    /// [`Error::Failed`] with (a clone of) the work's error, and the errors of [`call`](Self::call).
    ///
    /// # Cancel safety
    ///
    /// See [`Call`].
    pub fn try_call<'a, Q, F, Fut>(
        &'a self,
        key: &'a Q,
        work: F,
    ) -> TryCall<'a, K, Q, V, E, S, F, Fut>
    where
        E: crate::error::ShareableError,
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        TryCall {
            inner: Call {
                state: State::Start {
                    group: self,
                    key,
                    work: Some(Inline(work)),
                },
                classify: PhantomData,
            },
        }
    }
}

impl<'a, K, Q, T, S, F, Fut, C> Future for Call<'a, K, Q, T, S, F, Fut, C>
where
    C: Classify<T>,
    K: Hash + Eq + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher,
    T: Clone,
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // The call loop's steps (see `call_loop`), matched where they are made: this is
        // every uncontended call's path.
        match this.state.as_mut().project() {
            StateProj::Start { group, key, work } => {
                let entry = enter(*group, *key, Some(cx.waker()), work, C::failed);
                let leader = match entry {
                    // The uncontended path, matched at once.
                    Ok(Entered::Leader(leader)) => leader,
                    // Every other entry is taken apart here too, not passed on whole, so
                    // that the one `enter` made is only read by parts and can stay in
                    // registers: else the leader above is copied out of it through memory
                    // right after its fields were stored, and every uncontended call
                    // stalls on that load (store forwarding; measured 52 → 46 ns a call).
                    // The arms are `entered`'s, inline.
                    Ok(Entered::Waiter(waiter)) => {
                        // Joined with this task's waker: nothing to check until woken.
                        // The work stays with the caller, in case it is promoted.
                        let work = work.take();
                        this.state.set(State::Waiting { waiter, work });
                        return Poll::Pending;
                    }
                    Ok(Entered::Reused(reused)) => {
                        let role = Role::Reused { age: reused.age() };
                        this.state.set(State::Done { role });
                        return Poll::Ready(Ok(reused.into_value()));
                    }
                    Err(error) => match entered(Err(error), work, C::failed) {
                        Step::Lead(leader) => leader,
                        Step::Done(outcome, role) => {
                            this.state.set(State::Done { role });
                            return Poll::Ready(outcome);
                        }
                        Step::Wait(waiter) => {
                            // Joined with this task's waker: nothing to check until woken.
                            // The work stays with the caller, in case it is promoted.
                            let work = work.take();
                            this.state.set(State::Waiting { waiter, work });
                            return Poll::Pending;
                        }
                        Step::Launched(_) => unreachable!("inline work is never launched"),
                    },
                };
                let work = work.take().expect("a caller keeps its work until it leads");
                return lead_first(this.state, leader, work.0, C::failed, cx);
            }
            StateProj::Waiting { waiter, work } => {
                let outcome = core::task::ready!(waiter.poll(cx));
                match waited(outcome, Role::Waiter, work, C::failed) {
                    Step::Lead(leader) => {
                        let work = work.take().expect("a caller keeps its work until it leads");
                        start_leading(this.state.as_mut(), leader, work.0);
                    }
                    Step::Done(outcome, role) => {
                        this.state.set(State::Done { role });
                        return Poll::Ready(outcome);
                    }
                    Step::Wait(_) | Step::Launched(_) => {
                        unreachable!("a waiter's wait ends with an outcome or the lead")
                    }
                }
            }
            StateProj::Leading { .. } => {}
            StateProj::Done { .. } => panic!("`Call` polled after completion"),
        }
        lead(this.state, C::failed, cx)
    }
}

/// Makes a new leader's work and keeps it, pinned in the call, with its guard. The work is
/// polled at once by [`lead`].
///
/// If `work` panics, `leader` is dropped by the unwinding and hands the flight on.
#[inline]
fn start_leading<'a, K, Q, T, S, F, Fut>(
    mut state: Pin<&mut State<'a, K, Q, T, S, F, Fut>>,
    leader: Leader<&'a Group<K, T, S>>,
    work: F,
) where
    Q: ?Sized,
    F: FnOnce() -> Fut,
{
    state.set(State::Leading {
        fut: Work::new(work()),
        leader: Some(leader),
    });
}

/// A new leader's first poll: makes its work, in place in the call, and polls it while the
/// guard is still a local, so that a call whose work is ready at once (the uncontended
/// path) never moves the guard into the call and out again.
///
/// Without `std` nothing catches a panic of the work, and the unwinding would drop the
/// local guard (promoting a waiter) before the call drops the work: two executions could
/// overlap. So without `std` the guard goes into the call first, after the work (see
/// `State::Leading`), as on every later poll.
#[inline]
fn lead_first<'a, K, Q, T, S, F, Fut>(
    mut state: Pin<&mut State<'a, K, Q, T, S, F, Fut>>,
    leader: Leader<&'a Group<K, T, S>>,
    work: F,
    failed: fn(&T) -> bool,
    cx: &mut Context<'_>,
) -> Poll<Result<T, Error>>
where
    Q: ?Sized,
    T: Clone,
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    if !unwind::CATCHES {
        start_leading(state.as_mut(), leader, work);
        return lead(state, failed, cx);
    }
    // If `work` panics, `leader` is dropped by the unwinding and hands the flight on.
    state.set(State::Leading {
        fut: Work::new(work()),
        leader: None,
    });
    let StateProj::Leading { fut, leader: slot } = state.as_mut().project() else {
        unreachable!("the call leads")
    };
    match poll_leader(&leader, fut.future(), cx) {
        Poll::Pending => {
            *slot = Some(leader);
            Poll::Pending
        }
        Poll::Ready(value) => {
            // The finished work is dropped before its outcome is handed out.
            let dropped = unwind::catch(|| state.set(State::DONE_LEADING));
            settle(leader, value, dropped, failed, state)
        }
    }
}

/// Polls a leading call's work and, once it is done, drops it and settles the flight.
#[inline]
fn lead<K, Q, T, S, F, Fut>(
    mut state: Pin<&mut State<'_, K, Q, T, S, F, Fut>>,
    failed: fn(&T) -> bool,
    cx: &mut Context<'_>,
) -> Poll<Result<T, Error>>
where
    Q: ?Sized,
    T: Clone,
    Fut: Future<Output = T>,
{
    let StateProj::Leading { fut, leader } = state.as_mut().project() else {
        unreachable!("only a leading call has work to poll")
    };
    let guard = leader
        .as_ref()
        .expect("the leader is present while leading");
    let value = core::task::ready!(poll_leader(guard, fut.future(), cx));
    let leader = leader.take().expect("the leader is present while leading");
    // The finished work is dropped before its outcome is handed out.
    let dropped = unwind::catch(|| state.set(State::DONE_LEADING));
    settle(leader, value, dropped, failed, state)
}

/// Ends a leader's flight with what its work's last poll gave: the value (this caller's
/// role then says whether anyone shared it), or (with `std`) the work's panic, which every
/// waiter learns of before it resumes here. If dropping the finished work panicked, the
/// waiters still get the value and that panic resumes here instead.
#[inline(always)]
fn settle<K, Q, T, S, F, Fut>(
    leader: Leader<&Group<K, T, S>>,
    value: Result<T, Payload>,
    dropped: Result<(), Payload>,
    failed: fn(&T) -> bool,
    state: Pin<&mut State<'_, K, Q, T, S, F, Fut>>,
) -> Poll<Result<T, Error>>
where
    Q: ?Sized,
    T: Clone,
{
    match (value, dropped) {
        (Ok(value), Ok(())) => {
            let (value, shared) = leader.keep(value, failed);
            if let StateProj::Done { role } = state.project() {
                *role = Role::Leader { shared };
            }
            Poll::Ready(Ok(value))
        }
        (Ok(value), Err(payload)) => {
            // The value goes to the waiters as it is: this call has no use for a copy.
            leader.hand_over(value, failed);
            unwind::resume(payload)
        }
        (Err(payload), _) => {
            leader.panicked(unwind::message(&payload));
            unwind::resume(payload)
        }
    }
}

/// Polls the leader's work: with `std`, inside a re-entrancy scope and with panics caught.
fn poll_leader<K, T, S, Fut>(
    leader: &Leader<&Group<K, T, S>>,
    fut: Pin<&mut Fut>,
    cx: &mut Context<'_>,
) -> Poll<Result<T, Payload>>
where
    T: Clone,
    Fut: Future<Output = T>,
{
    match leader.poll_work(fut, cx) {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
        Err(payload) => Poll::Ready(Err(payload)),
    }
}

impl<K, Q: ?Sized, T, S, F, Fut, C> Call<'_, K, Q, T, S, F, Fut, C> {
    /// See [`CallFuture::role`].
    fn settled_role(&self) -> Option<Role> {
        match &self.state {
            State::Start { .. } | State::Waiting { .. } => None,
            State::Leading { .. } => Some(Role::Leader { shared: false }),
            State::Done { role } => Some(*role),
        }
    }
}

impl<K, Q, T, S, F, Fut, C> CallFuture for Call<'_, K, Q, T, S, F, Fut, C>
where
    Self: Future,
    Q: ?Sized,
{
    fn role(&self) -> Option<Role> {
        self.settled_role()
    }
}

impl<K, Q: ?Sized, T, S, F, Fut, C> fmt::Debug for Call<'_, K, Q, T, S, F, Fut, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Start { .. } => "start",
            State::Waiting { .. } => "waiting",
            State::Leading { .. } => "leading",
            State::Done { .. } => "done",
        };
        f.debug_struct("Call")
            .field("state", &state)
            .field("role", &self.settled_role())
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The future returned by [`Group::try_call`]: a [`Call`] whose work is fallible, with
    /// the work's error flattened into [`Error::Failed`].
    ///
    /// # Cancel safety
    ///
    /// As [`Call`].
    #[must_use = "futures do nothing unless polled"]
    pub struct TryCall<'a, K, Q: ?Sized, V, E, S, F, Fut> {
        #[pin]
        inner: Call<'a, K, Q, Result<V, E>, S, F, Fut, Fallible>,
    }
}

impl<K, Q, V, E, S, F, Fut> Future for TryCall<'_, K, Q, V, E, S, F, Fut>
where
    K: Hash + Eq + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher,
    V: Clone,
    E: Clone,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    type Output = Result<V, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map(flatten)
    }
}

/// Turns a shared `Result<V, E>` outcome into the caller's `Result<V, Error<E>>`.
pub fn flatten<V, E>(outcome: Result<Result<V, E>, Error>) -> Result<V, Error<E>> {
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Error::Failed(e)),
        Err(error) => Err(error.widen()),
    }
}

impl<K, Q, V, E, S, F, Fut> CallFuture for TryCall<'_, K, Q, V, E, S, F, Fut>
where
    Self: Future,
    Q: ?Sized,
{
    fn role(&self) -> Option<Role> {
        self.inner.settled_role()
    }
}

impl<K, Q: ?Sized, V, E, S, F, Fut> fmt::Debug for TryCall<'_, K, Q, V, E, S, F, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TryCall").field(&self.inner).finish()
    }
}

pin_project! {
    /// A call that resolves to `(output, role)`; see [`CallFuture::with_role`].
    ///
    /// # Cancel safety
    ///
    /// As the wrapped call.
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct WithRole<C> {
        #[pin]
        inner: C,
    }
}

impl<C: CallFuture> Future for WithRole<C> {
    type Output = (C::Output, Role);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut inner = self.project().inner;
        let output = core::task::ready!(inner.as_mut().poll(cx));
        let role = inner.as_ref().get_ref().role().unwrap_or(Role::Waiter);
        Poll::Ready((output, role))
    }
}
