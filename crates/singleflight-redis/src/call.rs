//! The futures of a call: its result, and with [`Call::with_role`] the role it played.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::report::{Error, FleetRole};

/// What a call resolves to with [`Call::with_role`]: its result, and the role it played
/// (see there for when it is `None`).
pub type ResultWithRole<V, E> = (Result<V, Error<E>>, Option<FleetRole>);

pin_project! {
    /// The future of [`RedisGroup::call`](crate::RedisGroup::call) and
    /// [`RedisGroup::try_call`](crate::RedisGroup::try_call): resolves to the call's
    /// result. [`with_role`](Self::with_role) makes it tell the role the call played too.
    ///
    /// # Cancel safety
    ///
    /// As [`RedisGroup::try_call`](crate::RedisGroup::try_call): dropping a waiting call
    /// affects no one else; dropping the call that runs the work (or waits on Redis)
    /// cancels it and leaves nothing behind in Redis.
    #[must_use = "futures do nothing unless polled"]
    pub struct Call<Fut> {
        #[pin]
        inner: Fut,
    }
}

impl<Fut> Call<Fut> {
    pub(crate) fn new(inner: Fut) -> Self {
        Self { inner }
    }

    /// Makes the call resolve to `(result, role)`: how the fleet settled it
    /// ([`FleetRole`]), as the async front-ends' `CallFuture::with_role` does for a
    /// process. Every caller of one in-process flight shares its role. The role is `None`
    /// only for a call that ended before the fleet layer settled it: its in-process
    /// leader panicked ([`Error::Panicked`]) or was dropped ([`Error::LeaderDropped`]),
    /// or the call was re-entrant ([`Error::Reentrant`]).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use singleflight_redis::{Config, FleetRole, RedisGroup};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let group = RedisGroup::<u64>::open("redis://127.0.0.1:6379/", Config::new("n:v1"))?;
    /// let (result, role) = group.call("k", || async { 42 }).with_role().await;
    /// assert_eq!(result?, 42);
    /// if let Some(FleetRole::Waiter { generation }) = role {
    ///     println!("another process ran flight {generation}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn with_role(self) -> WithRole<Fut> {
        WithRole { inner: self.inner }
    }
}

impl<Fut, V, E> Future for Call<Fut>
where
    Fut: Future<Output = ResultWithRole<V, E>>,
{
    type Output = Result<V, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map(|(result, _)| result)
    }
}

impl<Fut> fmt::Debug for Call<Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call").finish_non_exhaustive()
    }
}

pin_project! {
    /// A [`Call`] that resolves to `(result, role)`: see [`Call::with_role`].
    ///
    /// # Cancel safety
    ///
    /// As [`Call`].
    #[must_use = "futures do nothing unless polled"]
    pub struct WithRole<Fut> {
        #[pin]
        inner: Fut,
    }
}

impl<Fut, V, E> Future for WithRole<Fut>
where
    Fut: Future<Output = ResultWithRole<V, E>>,
{
    type Output = ResultWithRole<V, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl<Fut> fmt::Debug for WithRole<Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithRole").finish_non_exhaustive()
    }
}
