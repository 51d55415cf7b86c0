//! Fallible work whose error is not `Clone`: the error is shared behind an `Arc`.

use alloc::borrow::ToOwned;
use alloc::sync::Arc;
use core::borrow::Borrow;
use core::future::Future;
use core::hash::{BuildHasher, Hash};
use core::pin::Pin;
use core::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::error::Error;
use crate::future::CallFuture;
use crate::group::Group;

pin_project! {
    /// The work's future with its error moved into an `Arc`, so every caller can share it.
    pub(crate) struct ArcErr<Fut> {
        #[pin]
        fut: Fut,
    }
}

impl<Fut> ArcErr<Fut> {
    pub(crate) fn new(fut: Fut) -> Self {
        Self { fut }
    }
}

impl<Fut, V, E> Future for ArcErr<Fut>
where
    Fut: Future<Output = Result<V, E>>,
{
    type Output = Result<V, Arc<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project()
            .fut
            .poll(cx)
            .map(|outcome| outcome.map_err(Arc::new))
    }
}

impl<K, V, E, S> Group<K, Result<V, Arc<E>>, S>
where
    K: Hash + Eq,
    S: BuildHasher,
    V: Clone,
{
    /// Like [`try_call`](Self::try_call), for work whose error `E` is not `Clone`
    /// (`std::io::Error`, say): the work returns its plain `Result<V, E>`, and the leader's
    /// error reaches every caller, the leader too, as the same `Arc<E>` (moka's
    /// `try_get_with` shares errors the same way). `Error<Arc<E>>` implements
    /// [`core::error::Error`] when `E` does, so `?` works as for `Error<E>`.
    ///
    /// # Errors
    ///
    /// [`Error::Failed`] with the work's error in an `Arc`, and the errors of
    /// [`call`](Self::call).
    ///
    /// # Cancel safety
    ///
    /// See [`Call`](crate::Call).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io;
    /// use std::sync::Arc;
    ///
    /// # futures_lite_free::block_on(async {
    /// let files = singleflight_core::Group::<String, Result<String, Arc<io::Error>>>::new();
    /// let read = files
    ///     .try_call_arc("/etc/missing", || async { Err(io::Error::from(io::ErrorKind::NotFound)) })
    ///     .await;
    /// assert_eq!(read.unwrap_err().into_failed().unwrap().kind(), io::ErrorKind::NotFound);
    /// # });
    /// # mod futures_lite_free {
    /// #     pub fn block_on<F: core::future::Future>(f: F) -> F::Output {
    /// #         let mut f = core::pin::pin!(f);
    /// #         let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    /// #         loop { if let core::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
    /// #     }
    /// # }
    /// ```
    pub fn try_call_arc<'a, Q, F, Fut>(
        &'a self,
        key: &'a Q,
        work: F,
    ) -> impl CallFuture<Output = Result<V, Error<Arc<E>>>>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        self.try_call(key, move || ArcErr::new(work()))
    }
}
