//! The blocking group.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use singleflight_core::{
    self as sf, DefaultHashBuilder, Error, Observer, Role, ShareableError,
    rt::request::{ResultAndRole, ResultOnly},
    rt::{Clock, SpawnBlocking},
};

/// The clock of reuse windows: the monotonic clock (`std::time::Instant`), from an origin
/// taken at the first reading in the process.
#[derive(Clone, Copy, Debug)]
struct StdClock;

impl Clock for StdClock {
    fn now(&self) -> Duration {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let epoch = *EPOCH.get_or_init(Instant::now);
        Instant::now().saturating_duration_since(epoch)
    }
}

/// Coalesces concurrent blocking calls with equal keys: one thread runs the work, the others
/// block and receive clones of its outcome.
///
/// `K` is the key (`Hash + Eq`; look-ups take its borrowed form, so `&str` works for
/// `String` keys and joining a flight allocates nothing); `T` is the value every caller
/// receives (a clone each: put big values in an `Arc`); `S` is the hasher.
///
/// Cloning a `Group` is cheap and shares it: the clone's calls coalesce with the
/// original's (one map of flights, one observer), as with the async front-ends' groups. It is
/// also `Sync`, so scoped threads can share it by reference.
pub struct Group<K, T, S = DefaultHashBuilder> {
    inner: Arc<sf::Group<K, T, S>>,
}

impl<K, T> Group<K, T> {
    /// Creates an empty group.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(sf::Group::new()),
        }
    }
}

impl<K, T> Default for Group<K, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, T, S> Group<K, T, S> {
    /// Creates an empty group that hashes keys with `hasher`.
    pub fn with_hasher(hasher: S) -> Self {
        Self {
            inner: Arc::new(sf::Group::with_hasher(hasher)),
        }
    }

    /// Wraps a configured core group (`singleflight_core::Group`): its shards, its
    /// observer, and a reuse window on a clock of the caller's choosing.
    pub fn from_core(group: sf::Group<K, T, S>) -> Self {
        Self {
            inner: Arc::new(group),
        }
    }

    fn configure(self, f: impl FnOnce(sf::Group<K, T, S>) -> sf::Group<K, T, S>) -> Self {
        let Ok(group) = Arc::try_unwrap(self.inner) else {
            panic!("a group is configured before it is cloned");
        };
        Self {
            inner: Arc::new(f(group)),
        }
    }

    /// Attaches an observer (statistics, metrics, tracing). One observer may watch many groups.
    ///
    /// # Panics
    ///
    /// If the group was cloned: configure it first.
    pub fn with_observer(self, observer: Arc<dyn Observer>) -> Self {
        self.configure(|group| group.with_observer(observer))
    }

    /// Names the group for its observer (see [`sf::Group::with_name`]).
    ///
    /// # Panics
    ///
    /// If the group was cloned: configure it first.
    pub fn with_name(self, name: &str) -> Self {
        self.configure(|group| group.with_name(name))
    }

    /// Lets observers format keys, with `format` (see [`sf::Group::with_key_format`]).
    ///
    /// # Panics
    ///
    /// If the group was cloned: configure it first.
    pub fn with_key_format(self, format: sf::KeyFormat<K>) -> Self {
        self.configure(|group| group.with_key_format(format))
    }

    /// Splits the map of flights into `shards` shards, each under its own lock
    /// ([`DEFAULT_SHARDS`](sf::DEFAULT_SHARDS) unless set): fewer save memory (128 bytes or
    /// more each), more keep threads calling unrelated keys further apart.
    ///
    /// # Panics
    ///
    /// If `shards` is not a power of two between 1 and [`MAX_SHARDS`](sf::MAX_SHARDS), or if
    /// the group was cloned: configure it first.
    pub fn with_shards(self, shards: usize) -> Self {
        self.configure(|group| group.with_shards(shards))
    }

    /// Keeps each value a flight publishes for `window` (on `std::time::Instant`): a call
    /// for its key within the window gets a clone without running the work, and its role is
    /// [`Role::Reused`] with the value's age. After the window the next call leads a new
    /// flight. Off by default: without a window nothing outlives its flight.
    ///
    /// Errors are kept only under [`reuse_errors`](Self::reuse_errors); panics and
    /// timeouts never. [`forget`](Self::forget) and [`forget_all`](Self::forget_all) drop
    /// kept values, and a flight that started before them never stores its value
    /// afterwards. Expired values go a few at a time on every call and all at once with
    /// [`purge_expired`](Self::purge_expired), with no background thread;
    /// [`max_reusable`](Self::max_reusable) bounds how many are kept.
    ///
    /// # Panics
    ///
    /// If the group was cloned: configure it first.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use singleflight_blocking::{Group, Role};
    ///
    /// let group = Group::<String, u32>::new().reuse_for(Duration::from_secs(60));
    /// assert_eq!(group.call("k", || 1), Ok(1));
    /// // Within the window: the value again, and the work does not run.
    /// let (value, role) = group.request("k").with_role().call(|| unreachable!());
    /// assert_eq!(value, Ok(1));
    /// assert!(role.is_reused());
    /// ```
    pub fn reuse_for(self, window: Duration) -> Self
    where
        T: Clone,
    {
        self.configure(|group| group.reuse_for(window, StdClock))
    }

    /// Keeps at most `max` reusable values (unbounded unless set); a value published while
    /// the group holds `max` is not kept.
    ///
    /// # Panics
    ///
    /// If the group has no reuse window ([`reuse_for`](Self::reuse_for) first), or was
    /// cloned.
    pub fn max_reusable(self, max: usize) -> Self {
        self.configure(|group| group.max_reusable(max))
    }

    /// Stale-while-revalidate: a value older than `after` (within the reuse window) is
    /// still returned at once, and the first call that finds it so starts the key's
    /// refresh, on a thread of its own, with that call's work. One refresh per key at a
    /// time; callers that find the value expired while it runs join it; when it publishes,
    /// its value is kept fresh. A refresh that fails (an error, a panic) keeps the old value
    /// until its window ends, and the observer hears of it. A value nobody asks for is
    /// never refreshed, and [`forget`](Self::forget) / [`forget_all`](Self::forget_all)
    /// win over a refresh running when they are called: it never stores its value.
    ///
    /// Only calls whose work can move to another thread start a refresh:
    /// [`Request::call_refreshing`] and [`Request::try_call_refreshing`]. The other calls
    /// ([`call`](Self::call), whose work may borrow from the caller) are served the kept
    /// value until the window ends, then lead a new flight (or join a refresh in progress).
    ///
    /// # Panics
    ///
    /// If the group has no reuse window ([`reuse_for`](Self::reuse_for) first), if `after`
    /// is not shorter than the window, or if the group was cloned.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use singleflight_blocking::Group;
    ///
    /// let group = Group::<String, u32>::new()
    ///     .reuse_for(Duration::from_secs(60))
    ///     .refresh_after(Duration::from_secs(50));
    /// assert_eq!(group.request("k").call_refreshing(|| 1), Ok(1));
    /// ```
    pub fn refresh_after(self, after: Duration) -> Self {
        self.configure(|group| group.refresh_after(after))
    }

    /// Drops every reusable value whose window is over. Returns how many.
    pub fn purge_expired(&self) -> usize {
        self.inner.purge_expired()
    }

    /// The number of reusable values held (expired ones not yet dropped included).
    pub fn reusable(&self) -> usize {
        self.inner.reusable()
    }

    /// The number of flights in progress (`0` once every call has returned).
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    /// Detaches every flight from its key: running flights still deliver to their callers,
    /// new calls start new flights. With a reuse window it also drops every reusable value.
    /// Returns how many flights were detached plus how many values were dropped.
    pub fn forget_all(&self) -> usize {
        self.inner.forget_all()
    }

    /// The runtime-free group underneath (its introspection, its `enter` for a call loop of
    /// your own). Every front-end's `as_core` returns `&Group`: the group is what they have
    /// in common, while how a front-end holds it (in an `Arc` here) is its own business. To
    /// share the group, clone this one.
    pub fn as_core(&self) -> &sf::Group<K, T, S> {
        &self.inner
    }
}

impl<K, T, S> Group<K, T, S>
where
    K: Hash + Eq,
    S: BuildHasher,
{
    /// The number of threads waiting for the current flight of `key` (its leader not
    /// counted); `0` if none is in progress. Use it to wait for callers to join instead of
    /// sleeping.
    pub fn waiters<Q>(&self, key: &Q) -> usize
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        self.inner.waiters(key)
    }

    /// Returns `true` if a flight for `key` is in progress.
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        self.inner.contains(key)
    }

    /// Detaches the current flight of `key`: its callers still receive its outcome, the next
    /// call starts a new flight, and the old flight finishing never removes the new one.
    /// With a reuse window it also drops the key's reusable value, and a flight that started
    /// before never stores its value afterwards. Returns `false` (and leaves nothing behind)
    /// if `key` had neither a flight nor a reusable value.
    pub fn forget<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        self.inner.forget(key)
    }
}

impl<K, T, S> Group<K, T, S>
where
    K: Hash + Eq,
    S: BuildHasher,
    T: Clone,
{
    /// Runs `work` once for all threads that call with `key` while it runs, and returns a
    /// clone of its value to each.
    ///
    /// # Errors
    ///
    /// * [`Error::Panicked`] (waiters) if the work panicked on the leader's thread;
    /// * [`Error::Reentrant`] if called from inside the work of `key`'s flight on the same
    ///   thread.
    ///
    /// # Panics
    ///
    /// If this thread runs the work and it panics, the panic resumes here, after every
    /// waiter has been handed [`Error::Panicked`]. User code this thread runs for the call
    /// panics here as well, and affects no other thread: the key's `Hash`, `Eq` or
    /// `ToOwned`, the value's `Clone` (the leader's clone for its waiters, who then get the
    /// original; or this waiter's own clone), an observer hook. Every other caller still
    /// gets its outcome and the key is free afterwards.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = singleflight_blocking::Group::<u64, u64>::new();
    /// assert_eq!(group.call(&7, || 7 * 6), Ok(42));
    /// ```
    pub fn call<Q, F>(&self, key: &Q, work: F) -> Result<T, Error>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> T,
    {
        self.request(key).call(work)
    }

    /// Like [`call`](Self::call), but a waiter gives up after `timeout`. The timeout bounds
    /// only the wait for another thread's work: a thread that leads runs the work to the
    /// end, since a thread cannot be cancelled.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if this thread waited longer than `timeout` (the flight goes on,
    /// and later callers still join it), and the errors of [`call`](Self::call).
    ///
    /// # Panics
    ///
    /// As [`call`](Self::call).
    pub fn call_timeout<Q, F>(&self, key: &Q, timeout: Duration, work: F) -> Result<T, Error>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> T,
    {
        self.request(key).timeout(timeout).call(work)
    }

    /// Starts a call with options, the one way to every kind of call: a
    /// [`timeout`](Request::timeout) or [`deadline`](Request::deadline), and
    /// [`with_role`](Request::with_role) to return `(result, role)`; then
    /// [`call`](Request::call), [`try_call`](Request::try_call) or
    /// [`try_call_arc`](Request::try_call_arc) runs it. The named methods (`call`,
    /// `try_call_timeout`, …) are shorthands for the common calls and behave the same: a name
    /// for every combination would be too many to remember, and one was always missing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use singleflight_blocking::{Group, Role};
    ///
    /// let group = Group::<String, u32>::new();
    /// let value = group.request("k").timeout(Duration::from_secs(1)).call(|| 1);
    /// assert_eq!(value, Ok(1));
    ///
    /// // The caller's role, as the async front-ends' `with_role` gives it.
    /// let (value, role) = group.request("j").with_role().call(|| 2);
    /// assert_eq!((value, role), (Ok(2), Role::Leader { shared: false }));
    /// ```
    pub fn request<'a, Q>(&'a self, key: &'a Q) -> Request<'a, K, Q, T, S>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        Request {
            group: self,
            key,
            deadline: None,
            reply: PhantomData,
        }
    }
}

impl<K, V, E, S> Group<K, Result<V, E>, S> {
    /// Negative caching: keeps an error of fallible work for the window `policy` gives it,
    /// `None` for not at all (every error, unless set): a 404 for 30 s, a rate-limit error
    /// never.
    ///
    /// # Panics
    ///
    /// If the group has no reuse window ([`reuse_for`](Self::reuse_for) first), or was
    /// cloned.
    pub fn reuse_errors(
        self,
        policy: impl Fn(&E) -> Option<Duration> + Send + Sync + 'static,
    ) -> Self {
        self.configure(|group| group.reuse_errors(policy))
    }
}

impl<K, V, E, S> Group<K, Result<V, E>, S>
where
    K: Hash + Eq,
    S: BuildHasher,
    V: Clone,
{
    /// Like [`call`](Self::call), for fallible work: when the work fails, the leader and
    /// every waiter get [`Error::Failed`] with (a clone of) its error. Nothing is retried and
    /// the key is not poisoned: the next call starts a new flight.
    ///
    /// # Errors
    ///
    /// [`Error::Failed`], and the errors of [`call`](Self::call).
    ///
    /// # Panics
    ///
    /// As [`call`](Self::call).
    ///
    /// # Examples
    ///
    /// ```
    /// use singleflight_blocking::{Error, Group};
    ///
    /// let group = Group::<String, Result<u32, String>>::new();
    /// let result = group.try_call("k", || Err("database is down".to_string()));
    /// assert_eq!(result, Err(Error::Failed("database is down".to_string())));
    /// ```
    pub fn try_call<Q, F>(&self, key: &Q, work: F) -> Result<V, Error<E>>
    where
        E: ShareableError,
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> Result<V, E>,
    {
        self.request(key).try_call(work)
    }

    /// [`try_call`](Self::try_call) with a waiter timeout, as in [`call_timeout`](Self::call_timeout).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], and the errors of [`try_call`](Self::try_call).
    ///
    /// # Panics
    ///
    /// As [`call`](Self::call).
    pub fn try_call_timeout<Q, F>(&self, key: &Q, timeout: Duration, work: F) -> Result<V, Error<E>>
    where
        E: ShareableError,
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> Result<V, E>,
    {
        self.request(key).timeout(timeout).try_call(work)
    }
}

impl<K, V, E, S> Group<K, Result<V, Arc<E>>, S>
where
    K: Hash + Eq,
    S: BuildHasher,
    V: Clone,
{
    /// Like [`try_call`](Self::try_call), for work whose error `E` is not `Clone`
    /// (`std::io::Error`, say): declare the group as `Group<K, Result<V, Arc<E>>>`; the work
    /// returns its plain `Result<V, E>`, and every caller, the leader too, gets the leader's
    /// error as the same `Arc<E>` in [`Error::Failed`] (as moka's `try_get_with` does).
    /// `Error<Arc<E>>` implements `std::error::Error` when `E` does, so `?` into
    /// `Box<dyn Error>` works, and `Error<Arc<io::Error>>` converts into `io::Error`.
    ///
    /// # Errors
    ///
    /// [`Error::Failed`] with the work's error in an `Arc`, and the errors of
    /// [`call`](Self::call).
    ///
    /// # Panics
    ///
    /// As [`call`](Self::call).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::{fs, io, sync::Arc};
    /// use singleflight_blocking::Group;
    ///
    /// fn config(files: &Group<String, Result<String, Arc<io::Error>>>) -> io::Result<String> {
    ///     Ok(files.try_call_arc("/no/such/file", || fs::read_to_string("/no/such/file"))?)
    /// }
    ///
    /// let files = Group::new();
    /// assert_eq!(config(&files).unwrap_err().kind(), io::ErrorKind::NotFound);
    /// ```
    pub fn try_call_arc<Q, F>(&self, key: &Q, work: F) -> Result<V, Error<Arc<E>>>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> Result<V, E>,
    {
        self.request(key).try_call_arc(work)
    }
}

impl<K, T, S> Clone for Group<K, T, S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, T, S> fmt::Debug for Group<K, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Group").field(&self.inner).finish()
    }
}

/// A call being set up: see [`Group::request`]. `R` says what it returns: the result
/// ([`ResultOnly`], the default) or `(result, role)` ([`ResultAndRole`], after
/// [`with_role`](Self::with_role)).
#[must_use = "a request does nothing until `call`, `try_call` or `try_call_arc`"]
pub struct Request<'a, K, Q: ?Sized, T, S, R = ResultOnly> {
    group: &'a Group<K, T, S>,
    key: &'a Q,
    deadline: Option<Instant>,
    reply: PhantomData<fn() -> R>,
}

impl<'a, K, Q: ?Sized, T, S> Request<'a, K, Q, T, S> {
    /// Makes the call return `(result, role)`: whether this thread ran the work, joined
    /// another thread's, or reused a kept value.
    pub fn with_role(self) -> Request<'a, K, Q, T, S, ResultAndRole> {
        Request {
            group: self.group,
            key: self.key,
            deadline: self.deadline,
            reply: PhantomData,
        }
    }
}

impl<K, Q, T, S> Request<'_, K, Q, T, S>
where
    K: Hash + Eq + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher,
    T: Clone,
{
    /// Runs the call: [`Group::call`], with this request's timeout.
    ///
    /// # Errors
    ///
    /// As [`Group::call_timeout`].
    ///
    /// # Panics
    ///
    /// As [`Group::call`].
    pub fn call<F>(self, work: F) -> Result<T, Error>
    where
        F: FnOnce() -> T,
    {
        self.run(work, |_| false).0
    }

    /// Like [`call`](Self::call), for work that can move to another thread: with a
    /// refresh threshold ([`Group::refresh_after`]), a call that finds its key's value past
    /// it returns the value at once and hands `work` to the key's refresh, which runs it on
    /// a thread of its own. Otherwise as [`call`](Self::call).
    ///
    /// # Errors
    ///
    /// As [`Group::call_timeout`].
    ///
    /// # Panics
    ///
    /// As [`Group::call`], and if the refresh's thread cannot be spawned.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use singleflight_blocking::Group;
    ///
    /// let group = Group::<String, u32>::new()
    ///     .reuse_for(Duration::from_secs(60))
    ///     .refresh_after(Duration::ZERO);
    /// assert_eq!(group.request("k").call_refreshing(|| 1), Ok(1));
    /// // Past the threshold: the kept value at once, and `|| 2` runs as the refresh.
    /// let (value, role) = group.request("k").with_role().call_refreshing(|| 2);
    /// assert_eq!(value, Ok(1));
    /// assert!(role.is_reused());
    /// ```
    pub fn call_refreshing<F>(self, work: F) -> Result<T, Error>
    where
        K: Send + 'static,
        T: Send + 'static,
        S: Send + Sync + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.run_refreshing(work, |_| false).0
    }
}

impl<K, Q, T, S> Request<'_, K, Q, T, S, ResultAndRole>
where
    K: Hash + Eq + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher,
    T: Clone,
{
    /// Runs the call (see [`Group::call`]) and returns this thread's role with its result.
    ///
    /// # Errors
    ///
    /// As [`Group::call_timeout`].
    ///
    /// # Panics
    ///
    /// As [`Group::call`].
    pub fn call<F>(self, work: F) -> (Result<T, Error>, Role)
    where
        F: FnOnce() -> T,
    {
        self.run(work, |_| false)
    }

    /// [`Request::call_refreshing`], returning this thread's role with its result: a call
    /// served the kept value while it starts the refresh is [`Role::Reused`].
    ///
    /// # Errors
    ///
    /// As [`Group::call_timeout`].
    ///
    /// # Panics
    ///
    /// As [`Request::call_refreshing`].
    pub fn call_refreshing<F>(self, work: F) -> (Result<T, Error>, Role)
    where
        K: Send + 'static,
        T: Send + 'static,
        S: Send + Sync + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.run_refreshing(work, |_| false)
    }
}

impl<K, Q, V, E, S> Request<'_, K, Q, Result<V, E>, S>
where
    K: Hash + Eq + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher,
    V: Clone,
{
    /// Runs a fallible call: [`Group::try_call`], with this request's timeout.
    ///
    /// # Errors
    ///
    /// As [`Group::try_call_timeout`].
    ///
    /// # Panics
    ///
    /// As [`Group::call`].
    pub fn try_call<F>(self, work: F) -> Result<V, Error<E>>
    where
        E: ShareableError,
        F: FnOnce() -> Result<V, E>,
    {
        self.with_role().try_call(work).0
    }

    /// [`call_refreshing`](Request::call_refreshing) for fallible work: a refresh whose
    /// work fails keeps the old value served until its window ends.
    ///
    /// # Errors
    ///
    /// As [`Group::try_call_timeout`].
    ///
    /// # Panics
    ///
    /// As [`Request::call_refreshing`].
    pub fn try_call_refreshing<F>(self, work: F) -> Result<V, Error<E>>
    where
        K: Send + 'static,
        V: Send + 'static,
        E: ShareableError + Send + 'static,
        S: Send + Sync + 'static,
        F: FnOnce() -> Result<V, E> + Send + 'static,
    {
        self.with_role().try_call_refreshing(work).0
    }
}

impl<K, Q, V, E, S> Request<'_, K, Q, Result<V, Arc<E>>, S>
where
    K: Hash + Eq + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher,
    V: Clone,
{
    /// Runs a fallible call whose error `E` is not `Clone`: [`Group::try_call_arc`], with
    /// this request's timeout.
    ///
    /// # Errors
    ///
    /// [`Error::Failed`] with the work's error in an `Arc`, and the errors of
    /// [`Group::call_timeout`].
    ///
    /// # Panics
    ///
    /// As [`Group::call`].
    pub fn try_call_arc<F>(self, work: F) -> Result<V, Error<Arc<E>>>
    where
        F: FnOnce() -> Result<V, E>,
    {
        self.with_role().try_call_arc(work).0
    }
}

impl<K, Q, V, E, S> Request<'_, K, Q, Result<V, Arc<E>>, S, ResultAndRole>
where
    K: Hash + Eq + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher,
    V: Clone,
{
    /// Runs a fallible call whose error `E` is not `Clone` (see [`Group::try_call_arc`]) and
    /// returns this thread's role with its result.
    ///
    /// # Errors
    ///
    /// [`Error::Failed`] with the work's error in an `Arc`, and the errors of
    /// [`Group::call_timeout`].
    ///
    /// # Panics
    ///
    /// As [`Group::call`].
    pub fn try_call_arc<F>(self, work: F) -> (Result<V, Error<Arc<E>>>, Role)
    where
        F: FnOnce() -> Result<V, E>,
    {
        self.try_call(|| work().map_err(Arc::new))
    }
}

impl<K, Q, T, S, R> Request<'_, K, Q, T, S, R>
where
    K: Hash + Eq + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher,
    T: Clone,
{
    /// Gives up waiting for another thread's work after `timeout`. A timeout too large to
    /// represent as an [`Instant`] means no timeout.
    pub fn timeout(self, timeout: Duration) -> Self {
        let deadline = Instant::now().checked_add(timeout);
        Self { deadline, ..self }
    }

    /// Gives up waiting for another thread's work at `deadline`.
    pub fn deadline(self, deadline: Instant) -> Self {
        Self {
            deadline: Some(deadline),
            ..self
        }
    }

    fn run<F>(self, work: F, failed: fn(&T) -> bool) -> (Result<T, Error>, Role)
    where
        F: FnOnce() -> T,
    {
        self.group
            .inner
            .call_here(self.key, self.deadline, work, failed)
    }

    fn run_refreshing<F>(self, work: F, failed: fn(&T) -> bool) -> (Result<T, Error>, Role)
    where
        K: Send + 'static,
        T: Send + 'static,
        S: Send + Sync + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.group
            .inner
            .call_here_refreshing(self.key, self.deadline, work, ThreadSpawner, failed)
    }
}

/// Runs a refresh on a thread of its own.
#[derive(Clone, Copy, Debug)]
struct ThreadSpawner;

impl SpawnBlocking for ThreadSpawner {
    fn spawn_blocking<F>(&self, f: F)
    where
        F: FnOnce() + Send + 'static,
    {
        std::thread::Builder::new()
            .name("singleflight-refresh".into())
            .spawn(f)
            .expect("spawn a thread for a refresh");
    }
}

impl<K, Q, V, E, S> Request<'_, K, Q, Result<V, E>, S, ResultAndRole>
where
    K: Hash + Eq + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher,
    V: Clone,
{
    /// Runs a fallible call (see [`Group::try_call`]) and returns this thread's role with
    /// its result.
    ///
    /// # Errors
    ///
    /// As [`Group::try_call_timeout`].
    ///
    /// # Panics
    ///
    /// As [`Group::call`].
    pub fn try_call<F>(self, work: F) -> (Result<V, Error<E>>, Role)
    where
        E: ShareableError,
        F: FnOnce() -> Result<V, E>,
    {
        let (outcome, role) = self.run(work, Result::is_err);
        (sf::flatten(outcome), role)
    }

    /// [`Request::try_call_refreshing`], returning this thread's role with its result.
    ///
    /// # Errors
    ///
    /// As [`Group::try_call_timeout`].
    ///
    /// # Panics
    ///
    /// As [`Request::call_refreshing`].
    pub fn try_call_refreshing<F>(self, work: F) -> (Result<V, Error<E>>, Role)
    where
        K: Send + 'static,
        V: Send + 'static,
        E: ShareableError + Send + 'static,
        S: Send + Sync + 'static,
        F: FnOnce() -> Result<V, E> + Send + 'static,
    {
        let (outcome, role) = self.run_refreshing(work, Result::is_err);
        (sf::flatten(outcome), role)
    }
}

impl<K, Q: ?Sized, T, S, R> fmt::Debug for Request<'_, K, Q, T, S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
