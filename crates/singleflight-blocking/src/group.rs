//! The blocking group.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use singleflight_core::{
    self as sf, DefaultHashBuilder, Entry, Error, Observer, Role, ShareableError, Waited, rt::Clock,
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
    /// assert_eq!(group.request("k").call(|| 1), (Ok(1), Role::Leader { shared: false }));
    /// // Within the window: the value again, and the work does not run.
    /// let (value, role) = group.request("k").call(|| unreachable!());
    /// assert_eq!(value, Ok(1));
    /// assert!(role.is_reused());
    /// ```
    pub fn reuse_for(self, window: Duration) -> Self {
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

    /// The runtime-free group underneath.
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
        self.request(key).call(work).0
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
        self.request(key).timeout(timeout).call(work).0
    }

    /// Starts a call with options: a timeout, and the caller's [`Role`] in the result.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use singleflight_blocking::{Group, Role};
    ///
    /// let group = Group::<String, u32>::new();
    /// let (value, role) = group.request("k").timeout(Duration::from_secs(1)).call(|| 1);
    /// assert_eq!((value, role), (Ok(1), Role::Leader { shared: false }));
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
        self.request(key).try_call(work).0
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
        self.request(key).timeout(timeout).try_call(work).0
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
        self.try_call(key, || work().map_err(Arc::new))
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

/// A call being set up: see [`Group::request`].
#[must_use = "a request does nothing until `call` or `try_call`"]
pub struct Request<'a, K, Q: ?Sized, T, S> {
    group: &'a Group<K, T, S>,
    key: &'a Q,
    deadline: Option<Instant>,
}

impl<K, Q, T, S> Request<'_, K, Q, T, S>
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

    /// Runs the call (see [`Group::call`]) and reports this thread's role with the result.
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

    fn run<F>(self, work: F, failed: fn(&T) -> bool) -> (Result<T, Error>, Role)
    where
        F: FnOnce() -> T,
    {
        let waiter = match self.group.inner.enter(self.key) {
            Err(error) => return (Err(error), Role::Waiter),
            Ok(Entry::Leader(leader)) => {
                let (value, role) = leader.run_with_role(work, failed);
                return (Ok(value), role);
            }
            Ok(Entry::Waiter(waiter)) => waiter,
            Ok(Entry::Reused(reused)) => {
                let age = reused.age();
                return (Ok(reused.into_value()), Role::Reused { age });
            }
        };
        let waited = match self.deadline {
            None => waiter.wait(),
            Some(deadline) => match waiter.wait_deadline(deadline) {
                Some(waited) => waited,
                None => return (Err(Error::Timeout), Role::Waiter),
            },
        };
        match waited {
            Waited::Outcome(outcome) => (outcome, Role::Waiter),
            // A blocking leader is never dropped mid-work, but a promotion is honoured all
            // the same: this thread runs its own work for the flight.
            Waited::Promoted(leader) => {
                let (value, role) = leader.run_with_role(work, failed);
                (Ok(value), role)
            }
        }
    }
}

impl<K, Q, V, E, S> Request<'_, K, Q, Result<V, E>, S>
where
    K: Hash + Eq + Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    S: BuildHasher,
    V: Clone,
{
    /// Runs a fallible call (see [`Group::try_call`]) and reports this thread's role.
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
}

impl<K, Q: ?Sized, T, S> fmt::Debug for Request<'_, K, Q, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
