//! The async front-ends' `Group` and root items: one definition, expanded in each runtime
//! crate.
//!
//! Each front-end's `Group` is a newtype over [`RuntimeGroup`](super::RuntimeGroup) with its
//! spawner and timer filled in, rather than a type alias of it, so that its documentation
//! page lists every method with its docs (an alias's page only links to the aliased type)
//! and its builders return the front-end's own type. The methods forward, so the behaviour
//! is written once, in the core.

/// Defines a front-end's `Group` newtype over `RuntimeGroup<K, T, $spawner, $timer, S>`.
///
/// `pub struct Group(Spawner, Timer);` gives the whole surface; `pub struct Group(timer: Timer);`
/// leaves out detached and blocking work, for runtimes that cannot spawn a future made at run
/// time (embassy's tasks are static): its spawner slot is `()`.
///
/// The invoking crate must re-export `Error`, `LeaderDropPolicy`, `CallFuture`, `Role`,
/// `Call`, `TryCall` and `Timeout` at its root, and with a spawner also `Detached`,
/// `TryDetached`, `SpawnWork` and `SpawnBlockingWork` (the docs link them there). The paths
/// it expands to name only `core` and this crate, so a `no_std` front-end can invoke it. Not
/// public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __front_end_group {
    (
        $(#[$meta:meta])*
        pub struct $Group:ident(timer: $timer:ty);
    ) => {
        $crate::__front_end_group! { @base [$(#[$meta])*] $Group, (), $timer }
    };
    (
        $(#[$meta:meta])*
        pub struct $Group:ident($spawner:ty, $timer:ty);
    ) => {
        $crate::__front_end_group! { @base [$(#[$meta])*] $Group, $spawner, $timer }
        $crate::__front_end_group! { @detached $Group, $spawner, $timer }
    };
    // The group, its configuration and the calls whose work runs in the caller's task.
    (@base [$(#[$meta:meta])*] $Group:ident, $spawner:ty, $timer:ty) => {
        $(#[$meta])*
        pub struct $Group<K, T, S = $crate::DefaultHashBuilder>(
            $crate::rt::RuntimeGroup<K, T, $spawner, $timer, S>,
        );

        impl<K, T> $Group<K, T> {
            /// Creates an empty group with the default hasher and the
            /// [`Takeover`](crate::LeaderDropPolicy::Takeover) policy.
            pub fn new() -> Self {
                Self($crate::rt::RuntimeGroup::new())
            }
        }

        impl<K, T> ::core::default::Default for $Group<K, T> {
            fn default() -> Self {
                Self::new()
            }
        }

        impl<K, T, S> $Group<K, T, S> {
            /// Creates an empty group that hashes keys with `hasher`.
            pub fn with_hasher(hasher: S) -> Self {
                Self($crate::rt::RuntimeGroup::with_hasher(hasher))
            }

            /// Wraps a configured core group (`singleflight_core::Group`).
            pub fn from_core(group: $crate::Group<K, T, S>) -> Self {
                Self($crate::rt::RuntimeGroup::from_core(group))
            }

            /// Sets what waiters do when their leader is dropped before finishing: the oldest
            /// takes over (the default), or all fail with
            /// [`Error::LeaderDropped`](crate::Error::LeaderDropped).
            ///
            /// # Panics
            ///
            /// If the group was cloned, or a call still holds it: configure it first.
            pub fn with_leader_drop_policy(self, policy: $crate::LeaderDropPolicy) -> Self {
                Self(self.0.with_leader_drop_policy(policy))
            }

            /// Attaches an observer (statistics, metrics, tracing). One observer may watch
            /// many groups.
            ///
            /// # Panics
            ///
            /// If the group was cloned, or a call still holds it: configure it first.
            pub fn with_observer(
                self,
                observer: $crate::__private::Arc<dyn $crate::Observer>,
            ) -> Self {
                Self(self.0.with_observer(observer))
            }

            /// Names the group for its observer: every hook's `FlightInfo` carries the
            /// name.
            ///
            /// # Panics
            ///
            /// If the group was cloned, or a call still holds it: configure it first.
            pub fn with_name(self, name: &str) -> Self {
                Self(self.0.with_name(name))
            }

            /// Lets observers format keys, with `format` (see
            /// `singleflight_core::Group::with_key_format`).
            ///
            /// # Panics
            ///
            /// If the group was cloned, or a call still holds it: configure it first.
            pub fn with_key_format(self, format: $crate::KeyFormat<K>) -> Self {
                Self(self.0.with_key_format(format))
            }

            /// Splits the map of flights into `shards` shards, each under its own lock
            /// ([`DEFAULT_SHARDS`](singleflight_core::DEFAULT_SHARDS) unless set): fewer save
            /// memory (128 bytes or more each), more keep tasks calling unrelated keys on
            /// different threads further apart.
            ///
            /// # Panics
            ///
            /// If `shards` is not a power of two between 1 and
            /// [`MAX_SHARDS`](singleflight_core::MAX_SHARDS), or if the group was cloned, or
            /// a call still holds it: configure it first.
            pub fn with_shards(self, shards: usize) -> Self {
                Self(self.0.with_shards(shards))
            }

            /// Keeps each value a flight publishes for `window` on the runtime's clock: a
            /// call for its key within the window gets a clone without running the work,
            /// and its role is [`Role::Reused`](crate::Role::Reused) with the value's age.
            /// After the window the next call leads a new flight. Off by default.
            ///
            /// Errors are kept only under [`reuse_errors`](Self::reuse_errors); panics,
            /// cancellations, dropped leaders and timeouts never. [`forget`](Self::forget)
            /// and [`forget_all`](Self::forget_all) drop kept values, and a flight that
            /// started before them never stores its value afterwards. Expired values go a
            /// few at a time on every call and all at once with
            /// [`purge_expired`](Self::purge_expired); [`max_reusable`](Self::max_reusable)
            /// bounds how many are kept.
            ///
            /// # Panics
            ///
            /// If the group was cloned, or a call still holds it: configure it first.
            pub fn reuse_for(self, window: ::core::time::Duration) -> Self
            where
                T: Clone,
            {
                Self(self.0.reuse_for(window))
            }

            /// Keeps at most `max` reusable values (unbounded unless set); a value
            /// published while the group holds `max` is not kept.
            ///
            /// # Panics
            ///
            /// If the group has no reuse window ([`reuse_for`](Self::reuse_for) first), or
            /// was cloned, or a call still holds it.
            pub fn max_reusable(self, max: usize) -> Self {
                Self(self.0.max_reusable(max))
            }

            /// Drops every reusable value whose window is over. Returns how many.
            pub fn purge_expired(&self) -> usize {
                self.0.purge_expired()
            }

            /// The number of reusable values held (expired ones not yet dropped included).
            pub fn reusable(&self) -> usize {
                self.0.reusable()
            }

            /// The policy applied when a leader is dropped.
            pub fn leader_drop_policy(&self) -> $crate::LeaderDropPolicy {
                self.0.leader_drop_policy()
            }

            /// The number of flights in progress, detached work included (`0` once every
            /// call has returned and every detached work has finished).
            pub fn in_flight(&self) -> usize {
                self.0.in_flight()
            }

            /// Detaches every flight from its key: running flights still deliver to their
            /// callers, new calls start new flights. Returns how many flights were detached.
            pub fn forget_all(&self) -> usize {
                self.0.forget_all()
            }

            /// The runtime-free group underneath (its introspection, its `enter` for a call
            /// loop of your own). Every front-end's `as_core` returns `&Group`, the blocking
            /// one's too: the group is what they have in common, while how a front-end holds
            /// it is its own business. To share the group, clone this one.
            pub fn as_core(&self) -> &$crate::Group<K, T, S> {
                self.0.as_core()
            }

            /// The same group as a `singleflight_core::rt::RuntimeGroup`, the runtime-generic
            /// type every async front-end's `Group` wraps (for code generic over runtimes).
            pub fn as_runtime_group(&self) -> &$crate::rt::RuntimeGroup<K, T, $spawner, $timer, S> {
                &self.0
            }

            /// Bounds any call of this group (`call`, `try_call`, detached or blocking) by
            /// `duration` on the runtime's timer; the clock starts at the first poll. The
            /// `*_timeout` methods are shorthands for it.
            ///
            /// A waiter that times out leaves only itself: the flight goes on and later
            /// callers still join it. A leader that times out is cancelled, exactly as if
            /// dropped (the group's [`LeaderDropPolicy`](crate::LeaderDropPolicy) applies).
            /// The caller of detached work stops waiting; the work goes on.
            ///
            /// # Errors
            ///
            /// [`Error::Timeout`](crate::Error::Timeout) if `duration` passes first, and the
            /// call's own errors.
            ///
            /// # Cancel safety
            ///
            /// As the wrapped call.
            pub fn timeout<C: $crate::CallFuture>(
                &self,
                duration: ::core::time::Duration,
                call: C,
            ) -> $crate::rt::Timeout<C, $timer> {
                self.0.timeout(duration, call)
            }
        }

        impl<K, T, S> $Group<K, T, S>
        where
            K: ::core::hash::Hash + Eq,
            S: ::core::hash::BuildHasher,
        {
            /// The number of callers that joined the current flight of `key` and still wait
            /// for it; `0` if none is in progress. Its leader is not counted, and neither is
            /// the caller that launched detached work (it is that flight's leader, even while
            /// it waits for the spawned work). Tests and dashboards use it instead of sleeping.
            pub fn waiters<Q>(&self, key: &Q) -> usize
            where
                K: ::core::borrow::Borrow<Q>,
                Q: ?Sized + ::core::hash::Hash + Eq,
            {
                self.0.waiters(key)
            }

            /// Returns `true` if a flight for `key` is in progress (and not forgotten).
            pub fn contains<Q>(&self, key: &Q) -> bool
            where
                K: ::core::borrow::Borrow<Q>,
                Q: ?Sized + ::core::hash::Hash + Eq,
            {
                self.0.contains(key)
            }

            /// Detaches the current flight of `key`: its callers still receive its outcome,
            /// the next call starts a new flight, and the old flight finishing never removes
            /// the new one. Returns `false` (and leaves nothing behind) if `key` has no flight.
            pub fn forget<Q>(&self, key: &Q) -> bool
            where
                K: ::core::borrow::Borrow<Q>,
                Q: ?Sized + ::core::hash::Hash + Eq,
            {
                self.0.forget(key)
            }

            /// Starts a call with options, the one way to every kind of call: where its
            /// work runs (`.detached()`, `.blocking()`, where the runtime has them), a
            /// `.timeout(d)`, and `.with_role()` to resolve to `(result, role)`; then
            /// `.call(work)`, `.try_call(work)` or `.try_call_arc(work)` makes the future.
            /// The named methods (`call`, `try_call_detached`, `call_timeout`, …) are
            /// shorthands for the common calls, and make the same futures: a name for each
            /// of the thirty-six combinations would be too many to remember, and one was
            /// always missing.
            ///
            /// See [`Request`](singleflight_core::rt::Request) for the steps, and each
            /// terminal call's errors, panics and cancel safety.
            pub fn request<'a, Q>(
                &'a self,
                key: &'a Q,
            ) -> $crate::rt::Request<'a, $crate::rt::RuntimeGroup<K, T, $spawner, $timer, S>, Q>
            where
                K: ::core::borrow::Borrow<Q>,
                Q: ?Sized + ::core::hash::Hash + Eq + $crate::__private::ToOwned<Owned = K>,
            {
                self.0.request(key)
            }
        }

        impl<K, T, S> $Group<K, T, S>
        where
            K: ::core::hash::Hash + Eq,
            S: ::core::hash::BuildHasher,
            T: Clone,
        {
            /// Runs `work` once for all concurrent callers of `key`, inside the leading
            /// caller's own task, and resolves to a clone of its value. The work may borrow
            /// from the caller.
            ///
            /// # Errors
            ///
            /// [`Error::Panicked`](crate::Error::Panicked) (waiters) if the work panicked,
            /// [`Error::LeaderDropped`](crate::Error::LeaderDropped) if the leader was
            /// dropped under [`FailWaiters`](crate::LeaderDropPolicy::FailWaiters),
            /// [`Error::Reentrant`](crate::Error::Reentrant) if called from inside this key's
            /// own work.
            ///
            /// # Panics
            ///
            /// If this caller runs the work and it panics, the panic resumes here, after
            /// every waiter has been handed `Error::Panicked`.
            ///
            /// # Cancel safety
            ///
            /// Dropping the future before its first poll does nothing. Dropping a waiting
            /// call removes only that caller. Dropping a leading call cancels its work, and
            /// the group's [`LeaderDropPolicy`](crate::LeaderDropPolicy) decides: the oldest
            /// waiter takes over, or every waiter fails.
            pub fn call<'a, Q, F, Fut>(
                &'a self,
                key: &'a Q,
                work: F,
            ) -> $crate::Call<'a, K, Q, T, S, F, Fut>
            where
                K: ::core::borrow::Borrow<Q>,
                Q: ?Sized + ::core::hash::Hash + Eq + $crate::__private::ToOwned<Owned = K>,
                F: FnOnce() -> Fut,
                Fut: ::core::future::Future<Output = T>,
            {
                self.0.call(key, work)
            }

            /// [`call`](Self::call) bounded by `duration`: see [`timeout`](Self::timeout).
            ///
            /// # Errors
            ///
            /// [`Error::Timeout`](crate::Error::Timeout), and the errors of
            /// [`call`](Self::call).
            ///
            /// # Panics
            ///
            /// As [`call`](Self::call).
            ///
            /// # Cancel safety
            ///
            /// As [`call`](Self::call).
            #[allow(
                clippy::type_complexity,
                reason = "the named future of a timed call; an alias would only hide it"
            )]
            pub fn call_timeout<'a, Q, F, Fut>(
                &'a self,
                key: &'a Q,
                duration: ::core::time::Duration,
                work: F,
            ) -> $crate::rt::Timeout<$crate::Call<'a, K, Q, T, S, F, Fut>, $timer>
            where
                K: ::core::borrow::Borrow<Q>,
                Q: ?Sized + ::core::hash::Hash + Eq + $crate::__private::ToOwned<Owned = K>,
                F: FnOnce() -> Fut,
                Fut: ::core::future::Future<Output = T>,
            {
                self.0.call_timeout(key, duration, work)
            }
        }

        impl<K, V, E, S> $Group<K, ::core::result::Result<V, E>, S> {
            /// Negative caching: keeps an error of fallible work for the window `policy`
            /// gives it, `None` for not at all (every error, unless set): a 404 for 30 s, a
            /// rate-limit error never.
            ///
            /// # Panics
            ///
            /// If the group has no reuse window ([`reuse_for`](Self::reuse_for) first), or
            /// was cloned, or a call still holds it.
            pub fn reuse_errors(
                self,
                policy: impl Fn(&E) -> Option<::core::time::Duration> + Send + Sync + 'static,
            ) -> Self {
                Self(self.0.reuse_errors(policy))
            }
        }

        impl<K, V, E, S> $Group<K, ::core::result::Result<V, E>, S>
        where
            K: ::core::hash::Hash + Eq,
            S: ::core::hash::BuildHasher,
            V: Clone,
        {
            /// Like [`call`](Self::call), for fallible work: the leader's error reaches every
            /// waiter as [`Error::Failed`](crate::Error::Failed). Nothing is retried; the
            /// next call starts a new flight. For an error that is not `Clone`, see
            /// [`try_call_arc`](Self::try_call_arc).
            ///
            /// # Errors
            ///
            /// [`Error::Failed`](crate::Error::Failed) with (a clone of) the work's error,
            /// and the errors of [`call`](Self::call).
            ///
            /// # Panics
            ///
            /// As [`call`](Self::call).
            ///
            /// # Cancel safety
            ///
            /// As [`call`](Self::call).
            pub fn try_call<'a, Q, F, Fut>(
                &'a self,
                key: &'a Q,
                work: F,
            ) -> $crate::TryCall<'a, K, Q, V, E, S, F, Fut>
            where
                E: $crate::ShareableError,
                K: ::core::borrow::Borrow<Q>,
                Q: ?Sized + ::core::hash::Hash + Eq + $crate::__private::ToOwned<Owned = K>,
                F: FnOnce() -> Fut,
                Fut: ::core::future::Future<Output = ::core::result::Result<V, E>>,
            {
                self.0.try_call(key, work)
            }

            /// [`try_call`](Self::try_call) bounded by `duration`: see
            /// [`timeout`](Self::timeout).
            ///
            /// # Errors
            ///
            /// [`Error::Timeout`](crate::Error::Timeout), and the errors of
            /// [`try_call`](Self::try_call).
            ///
            /// # Panics
            ///
            /// As [`call`](Self::call).
            ///
            /// # Cancel safety
            ///
            /// As [`call`](Self::call).
            #[allow(
                clippy::type_complexity,
                reason = "the named future of a timed call; an alias would only hide it"
            )]
            pub fn try_call_timeout<'a, Q, F, Fut>(
                &'a self,
                key: &'a Q,
                duration: ::core::time::Duration,
                work: F,
            ) -> $crate::rt::Timeout<$crate::TryCall<'a, K, Q, V, E, S, F, Fut>, $timer>
            where
                E: $crate::ShareableError,
                K: ::core::borrow::Borrow<Q>,
                Q: ?Sized + ::core::hash::Hash + Eq + $crate::__private::ToOwned<Owned = K>,
                F: FnOnce() -> Fut,
                Fut: ::core::future::Future<Output = ::core::result::Result<V, E>>,
            {
                self.0.try_call_timeout(key, duration, work)
            }
        }

        impl<K, V, E, S> $Group<K, ::core::result::Result<V, $crate::__private::Arc<E>>, S>
        where
            K: ::core::hash::Hash + Eq,
            S: ::core::hash::BuildHasher,
            V: Clone,
        {
            /// Like [`try_call`](Self::try_call), for work whose error `E` is not `Clone`
            /// (`std::io::Error`, say): declare the group as `Group<K, Result<V, Arc<E>>>`;
            /// the work returns its plain `Result<V, E>`, and every caller, the leader too,
            /// gets the leader's error as the same `Arc<E>` in
            /// [`Error::Failed`](crate::Error::Failed) (as moka's `try_get_with` does).
            /// `Error<Arc<E>>` implements `std::error::Error` when `E` does, so `?` into
            /// `Box<dyn Error>` works, and `Error<Arc<io::Error>>` converts into
            /// `io::Error`.
            /// With a timeout: `group.request(&key).timeout(d).try_call_arc(work)` (see
            /// [`request`](Self::request)).
            ///
            /// # Errors
            ///
            /// [`Error::Failed`](crate::Error::Failed) with the work's error in an `Arc`,
            /// and the errors of [`call`](Self::call).
            ///
            /// # Panics
            ///
            /// As [`call`](Self::call).
            ///
            /// # Cancel safety
            ///
            /// As [`call`](Self::call).
            pub fn try_call_arc<'a, Q, F, Fut>(
                &'a self,
                key: &'a Q,
                work: F,
            ) -> impl $crate::CallFuture<
                Output = ::core::result::Result<V, $crate::Error<$crate::__private::Arc<E>>>,
            >
            where
                K: ::core::borrow::Borrow<Q>,
                Q: ?Sized + ::core::hash::Hash + Eq + $crate::__private::ToOwned<Owned = K>,
                F: FnOnce() -> Fut,
                Fut: ::core::future::Future<Output = ::core::result::Result<V, E>>,
            {
                self.0.try_call_arc(key, work)
            }
        }


        /// Shares the group: the clone's calls coalesce with the original's (one map of
        /// flights, one policy, one observer). Hand clones to the tasks that should coalesce
        /// with each other.
        impl<K, T, S> Clone for $Group<K, T, S> {
            fn clone(&self) -> Self {
                Self(self.0.clone())
            }
        }

        impl<K, T, S> ::core::fmt::Debug for $Group<K, T, S> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_tuple(stringify!($Group)).field(self.0.as_core()).finish()
            }
        }

        impl<K, T, S> From<$Group<K, T, S>> for $crate::rt::RuntimeGroup<K, T, $spawner, $timer, S> {
            fn from(group: $Group<K, T, S>) -> Self {
                group.0
            }
        }

        impl<K, T, S> From<$crate::rt::RuntimeGroup<K, T, $spawner, $timer, S>> for $Group<K, T, S> {
            fn from(group: $crate::rt::RuntimeGroup<K, T, $spawner, $timer, S>) -> Self {
                Self(group)
            }
        }
    };
    // Work handed to the runtime: spawned tasks and the blocking pool.
    (@detached $Group:ident, $spawner:ty, $timer:ty) => {
        impl<K, T, S> $Group<K, T, S> {
            /// Stale-while-revalidate: a value older than `after` (within the reuse window)
            /// is still served at once, and the first detached or blocking-pool call that
            /// finds it so ([`call_detached`](Self::call_detached),
            /// [`call_blocking`](Self::call_blocking) and their `try_` forms) also launches
            /// its work as the key's refresh, spawned like detached work: no caller's
            /// cancellation reaches it. One refresh per key at a time; callers that find
            /// the value expired while it runs join it; when it publishes, its value is
            /// kept fresh. A refresh that fails (an error, a panic, a task dropped
            /// unfinished) keeps the old value until the window ends, and the observer
            /// hears of it. A value nobody asks for is never refreshed (there is no timer),
            /// and a refresh running when [`forget`](Self::forget) or
            /// [`forget_all`](Self::forget_all) is called never stores its value.
            ///
            /// [`call`](Self::call), whose work may borrow from its caller, never starts a
            /// refresh: past the threshold it is served the kept value until the window
            /// ends, then leads a new flight (or joins a refresh in progress).
            ///
            /// # Panics
            ///
            /// If the group has no reuse window ([`reuse_for`](Self::reuse_for) first), if
            /// `after` is not shorter than the window, or if the group was cloned, or a
            /// call still holds it.
            pub fn refresh_after(self, after: ::core::time::Duration) -> Self {
                Self(self.0.refresh_after(after))
            }
        }

        impl<K, T, S> $Group<K, T, S>
        where
            K: ::core::hash::Hash + Eq,
            S: ::core::hash::BuildHasher,
            T: Clone,
        {
            /// Runs `work` once for all concurrent callers of `key`, as a task spawned on the
            /// runtime: it runs exactly once and finishes even if every caller goes away
            /// (cache fills behind callers with short timeouts, handlers whose clients
            /// disconnect). The caller that starts it waits for it like any waiter, and its
            /// role is [`Role::Leader`](crate::Role::Leader).
            ///
            /// # Errors
            ///
            /// [`Error::Panicked`](crate::Error::Panicked) for every caller (the one that
            /// started it too) if the work panicked or its task was dropped unfinished by
            /// the runtime, and the errors of [`call`](Self::call).
            ///
            /// # Panics
            ///
            /// If the runtime's spawner panics (tokio's does outside a runtime).
            ///
            /// # Cancel safety
            ///
            /// Dropping the future stops only this caller waiting; once started, the work
            /// runs to its end and still delivers to every other caller.
            pub fn call_detached<'a, Q, F, Fut>(
                &'a self,
                key: &'a Q,
                work: F,
            ) -> $crate::rt::Detached<'a, K, Q, T, S, $crate::rt::SpawnWork<$spawner, F>>
            where
                K: ::core::borrow::Borrow<Q>,
                Q: ?Sized + ::core::hash::Hash + Eq + $crate::__private::ToOwned<Owned = K>,
                K: Send + 'static,
                T: Send + 'static,
                S: Send + Sync + 'static,
                F: FnOnce() -> Fut,
                Fut: ::core::future::Future<Output = T> + Send + 'static,
            {
                self.0.call_detached(key, work)
            }

            /// [`call_detached`](Self::call_detached) whose caller stops waiting after
            /// `duration`, while the work goes on.
            ///
            /// # Errors
            ///
            /// [`Error::Timeout`](crate::Error::Timeout), and the errors of
            /// [`call_detached`](Self::call_detached).
            ///
            /// # Panics
            ///
            /// As [`call_detached`](Self::call_detached).
            ///
            /// # Cancel safety
            ///
            /// As [`call_detached`](Self::call_detached).
            #[allow(
                clippy::type_complexity,
                reason = "the named future of a timed call; an alias would only hide it"
            )]
            pub fn call_detached_timeout<'a, Q, F, Fut>(
                &'a self,
                key: &'a Q,
                duration: ::core::time::Duration,
                work: F,
            ) -> $crate::rt::Timeout<
                $crate::rt::Detached<'a, K, Q, T, S, $crate::rt::SpawnWork<$spawner, F>>,
                $timer,
            >
            where
                K: ::core::borrow::Borrow<Q>,
                Q: ?Sized + ::core::hash::Hash + Eq + $crate::__private::ToOwned<Owned = K>,
                K: Send + 'static,
                T: Send + 'static,
                S: Send + Sync + 'static,
                F: FnOnce() -> Fut,
                Fut: ::core::future::Future<Output = T> + Send + 'static,
            {
                self.0.call_detached_timeout(key, duration, work)
            }

            /// Runs blocking `work` once for all concurrent callers of `key`, on the
            /// runtime's blocking pool; otherwise as [`call_detached`](Self::call_detached).
            /// With a timeout: `group.request(&key).blocking().timeout(d).call(work)` (see
            /// [`request`](Self::request)).
            ///
            /// # Errors
            ///
            /// As [`call_detached`](Self::call_detached).
            ///
            /// # Panics
            ///
            /// As [`call_detached`](Self::call_detached).
            ///
            /// # Cancel safety
            ///
            /// As [`call_detached`](Self::call_detached): a blocking closure is never
            /// interrupted.
            pub fn call_blocking<'a, Q, F>(
                &'a self,
                key: &'a Q,
                work: F,
            ) -> $crate::rt::Detached<'a, K, Q, T, S, $crate::rt::SpawnBlockingWork<$spawner, F>>
            where
                K: ::core::borrow::Borrow<Q>,
                Q: ?Sized + ::core::hash::Hash + Eq + $crate::__private::ToOwned<Owned = K>,
                K: Send + 'static,
                T: Send + 'static,
                S: Send + Sync + 'static,
                F: FnOnce() -> T + Send + 'static,
            {
                self.0.call_blocking(key, work)
            }
        }

        impl<K, V, E, S> $Group<K, ::core::result::Result<V, E>, S>
        where
            K: ::core::hash::Hash + Eq,
            S: ::core::hash::BuildHasher,
            V: Clone,
        {
            /// Like [`call_detached`](Self::call_detached), for fallible work.
            ///
            /// # Errors
            ///
            /// [`Error::Failed`](crate::Error::Failed), and the errors of
            /// [`call_detached`](Self::call_detached).
            ///
            /// # Panics
            ///
            /// As [`call_detached`](Self::call_detached).
            ///
            /// # Cancel safety
            ///
            /// As [`call_detached`](Self::call_detached).
            pub fn try_call_detached<'a, Q, F, Fut>(
                &'a self,
                key: &'a Q,
                work: F,
            ) -> $crate::rt::TryDetached<'a, K, Q, V, E, S, $crate::rt::SpawnWork<$spawner, F>>
            where
                E: $crate::ShareableError + Send + 'static,
                K: ::core::borrow::Borrow<Q> + Send + 'static,
                Q: ?Sized + ::core::hash::Hash + Eq + $crate::__private::ToOwned<Owned = K>,
                V: Send + 'static,
                S: Send + Sync + 'static,
                F: FnOnce() -> Fut,
                Fut: ::core::future::Future<Output = ::core::result::Result<V, E>> + Send + 'static,
            {
                self.0.try_call_detached(key, work)
            }

            /// [`try_call_detached`](Self::try_call_detached) whose caller stops waiting
            /// after `duration`, while the work goes on.
            ///
            /// # Errors
            ///
            /// [`Error::Timeout`](crate::Error::Timeout), and the errors of
            /// [`try_call_detached`](Self::try_call_detached).
            ///
            /// # Panics
            ///
            /// As [`call_detached`](Self::call_detached).
            ///
            /// # Cancel safety
            ///
            /// As [`call_detached`](Self::call_detached).
            #[allow(
                clippy::type_complexity,
                reason = "the named future of a timed call; an alias would only hide it"
            )]
            pub fn try_call_detached_timeout<'a, Q, F, Fut>(
                &'a self,
                key: &'a Q,
                duration: ::core::time::Duration,
                work: F,
            ) -> $crate::rt::Timeout<
                $crate::rt::TryDetached<'a, K, Q, V, E, S, $crate::rt::SpawnWork<$spawner, F>>,
                $timer,
            >
            where
                E: $crate::ShareableError + Send + 'static,
                K: ::core::borrow::Borrow<Q> + Send + 'static,
                Q: ?Sized + ::core::hash::Hash + Eq + $crate::__private::ToOwned<Owned = K>,
                V: Send + 'static,
                S: Send + Sync + 'static,
                F: FnOnce() -> Fut,
                Fut: ::core::future::Future<Output = ::core::result::Result<V, E>> + Send + 'static,
            {
                self.0.try_call_detached_timeout(key, duration, work)
            }

            /// Like [`call_blocking`](Self::call_blocking), for fallible work.
            ///
            /// # Errors
            ///
            /// [`Error::Failed`](crate::Error::Failed), and the errors of
            /// [`call_detached`](Self::call_detached).
            ///
            /// # Panics
            ///
            /// As [`call_detached`](Self::call_detached).
            ///
            /// # Cancel safety
            ///
            /// As [`call_detached`](Self::call_detached).
            pub fn try_call_blocking<'a, Q, F>(
                &'a self,
                key: &'a Q,
                work: F,
            ) -> $crate::rt::TryDetached<'a, K, Q, V, E, S, $crate::rt::SpawnBlockingWork<$spawner, F>>
            where
                E: $crate::ShareableError + Send + 'static,
                K: ::core::borrow::Borrow<Q> + Send + 'static,
                Q: ?Sized + ::core::hash::Hash + Eq + $crate::__private::ToOwned<Owned = K>,
                V: Send + 'static,
                S: Send + Sync + 'static,
                F: FnOnce() -> ::core::result::Result<V, E> + Send + 'static,
            {
                self.0.try_call_blocking(key, work)
            }
        }

        impl<K, V, E, S> $Group<K, ::core::result::Result<V, $crate::__private::Arc<E>>, S>
        where
            K: ::core::hash::Hash + Eq,
            S: ::core::hash::BuildHasher,
            V: Clone,
        {
            /// Like [`try_call_detached`](Self::try_call_detached), for work whose error is
            /// not `Clone`: see [`try_call_arc`](Self::try_call_arc).
            ///
            /// # Errors
            ///
            /// [`Error::Failed`](crate::Error::Failed) with the work's error in an `Arc`,
            /// and the errors of [`call_detached`](Self::call_detached).
            ///
            /// # Panics
            ///
            /// As [`call_detached`](Self::call_detached).
            ///
            /// # Cancel safety
            ///
            /// As [`call_detached`](Self::call_detached).
            pub fn try_call_detached_arc<'a, Q, F, Fut>(
                &'a self,
                key: &'a Q,
                work: F,
            ) -> impl $crate::CallFuture<
                Output = ::core::result::Result<V, $crate::Error<$crate::__private::Arc<E>>>,
            >
            where
                K: ::core::borrow::Borrow<Q> + Send + 'static,
                Q: ?Sized + ::core::hash::Hash + Eq + $crate::__private::ToOwned<Owned = K>,
                V: Send + 'static,
                E: Send + Sync + 'static,
                S: Send + Sync + 'static,
                F: FnOnce() -> Fut,
                Fut: ::core::future::Future<Output = ::core::result::Result<V, E>> + Send + 'static,
            {
                self.0.try_call_detached_arc(key, work)
            }
        }
    };
}

/// Emits what the root of every async front-end with a spawner has in common: the
/// re-exports of the core's types, the `Group` (through [`__front_end_group!`]), `coalesce`
/// and the seam its expansions name. The crate keeps its own docs, its runtime module and
/// its README doctest:
///
/// ```text
/// mod rt;
/// pub use rt::{TokioSpawner, TokioTimer};
/// singleflight_core::__front_end_exports! {
///     runtime: "tokio", spawner: TokioSpawner, timer: TokioTimer, coalesce: coalesce_tokio,
/// }
/// ```
///
/// The invoking crate must have a `macros` feature that enables its optional
/// `singleflight-macros` dependency, and `std`. Not public API.
#[doc(hidden)]
#[macro_export]
#[allow(
    clippy::crate_in_macro_def,
    reason = "`crate::Group` is the invoking front-end's own `Group`, which `#[coalesce]` names"
)]
macro_rules! __front_end_exports {
    (
        runtime: $runtime:literal,
        spawner: $spawner:ident,
        timer: $timer:ident,
        coalesce: $coalesce:ident $(,)?
    ) => {
        pub use $crate::{
            BoxedError, Call, CallFuture, DefaultHashBuilder, Error, Execution, FlightId,
            FlightInfo, KeyFormat, LeaderDropPolicy, ObservedKey, Observer, PanicMessage, Role,
            TryCall, Wait, WithRole,
            rt::{Detached, Request, SpawnBlockingWork, SpawnWork, Timeout, TryDetached},
        };

        $crate::__front_end_group! {
            #[doc = concat!(
                "Coalesces concurrent calls with equal keys on ", $runtime,
                ": see the [crate docs](crate)."
            )]
            ///
            /// `K` is the key (`Hash + Eq`; look-ups take its borrowed form, so `&str` works
            /// for `String` keys), `T` the value every caller receives (a clone each: put big
            /// values in an `Arc`; fallible work uses `T = Result<V, E>`), `S` the hasher.
            /// Cloning shares the group.
            ///
            /// Every kind of call is made with [`request`](Self::request); the other call
            /// methods are shorthands for the common ones. They are those of the
            /// runtime-generic [`RuntimeGroup`](singleflight_core::rt::RuntimeGroup),
            #[doc = concat!(
                "with [`", stringify!($spawner), "`] and [`", stringify!($timer),
                "`] filled in."
            )]
            pub struct Group($spawner, $timer);
        }

        #[cfg(feature = "macros")]
        pub use singleflight_macros::$coalesce as coalesce;

        /// What `#[coalesce]` expansions name, and nothing else may: the one seam between
        /// this crate and `singleflight-macros`. Not public API.
        #[cfg(feature = "macros")]
        #[doc(hidden)]
        pub mod __private {
            pub use crate::{Error, Group, LeaderDropPolicy, Observer};
            pub use std::sync::{Arc, LazyLock};
        }
    };
}
