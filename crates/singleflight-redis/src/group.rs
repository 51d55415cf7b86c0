//! [`RedisGroup`]: the in-process tokio group with the fleet layer as its leader's work.

use std::convert::Infallible;
use std::fmt::{self, Display};
use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use singleflight_core::Observer;
use singleflight_tokio::Group;

use crate::call::{Call, ResultWithRole};
use crate::cluster::Cluster;
use crate::config::{Config, ConfigError};
use crate::fleet::{Failure, Fleet};
use crate::health::FleetStats;
use crate::link::Target;
use crate::redis_backend::RedisBackend;
use crate::report::{Error, FleetRole, ForgetError};
use crate::sentinel::Sentinel;

type Local<V, E> = Group<String, Result<(V, FleetRole), Failure<E>>>;

/// Why a [`RedisGroup`] could not be opened.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// A setting is out of its accepted range.
    Config(ConfigError),
    /// The Redis client rejected the URL or settings.
    Redis(redis::RedisError),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => e.fmt(f),
            Self::Redis(e) => write!(f, "redis client: {e}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            Self::Redis(e) => Some(e),
        }
    }
}

/// Coalesces calls with equal keys within this process, then across every process that
/// shares the Redis server and namespace: see the [crate docs](crate).
///
/// `V` is the value (`Clone` for this process's callers, serde for other processes'), `E`
/// the error of fallible work (`Display` is what other processes receive, as
/// [`RemoteError`](crate::RemoteError)). Cloning shares the group.
pub struct RedisGroup<V, E = Infallible> {
    local: Local<V, E>,
    fleet: Arc<Fleet<Arc<RedisBackend>>>,
}

#[cfg(feature = "otel")]
impl<V, E> RedisGroup<V, E> {
    /// Reads [`fleet_stats`](Self::fleet_stats) for as long as the group (any clone of it)
    /// lives, without keeping it alive.
    pub(crate) fn fleet_stats_reader(
        &self,
    ) -> impl Fn() -> Option<FleetStats> + Send + Sync + 'static {
        let fleet = Arc::downgrade(&self.fleet);
        move || fleet.upgrade().map(|fleet| fleet.stats())
    }
}

impl<V, E> Clone for RedisGroup<V, E> {
    fn clone(&self) -> Self {
        Self {
            local: self.local.clone(),
            fleet: Arc::clone(&self.fleet),
        }
    }
}

impl<V, E> fmt::Debug for RedisGroup<V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisGroup")
            .field("in_flight", &self.local.in_flight())
            .field("fleet", &self.fleet.stats())
            .finish_non_exhaustive()
    }
}

impl<V, E> RedisGroup<V, E>
where
    V: Clone + Serialize + DeserializeOwned,
    E: Clone + Display,
{
    /// A group on `client`'s server, with keys under [`Config::new`]'s namespace. It
    /// connects on first use over RESP3 (whatever the client's URL says) and reconnects
    /// and resubscribes by itself; a server that is down is not an error here (nor are
    /// wrong credentials: calls then run locally with
    /// [`FallbackReason::AuthFailed`](crate::FallbackReason::AuthFailed)).
    ///
    /// # Errors
    ///
    /// [`OpenError::Config`] if a setting is out of range ([`Config::validate`]),
    /// [`OpenError::Redis`] if the client's settings cannot make a connection manager.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new(client: &redis::Client, config: Config) -> Result<Self, OpenError> {
        config.validate().map_err(OpenError::Config)?;
        let target = Target::server(client).map_err(OpenError::Redis)?;
        Ok(Self::on(target, config))
    }

    fn on(target: Target, config: Config) -> Self {
        let backend = RedisBackend::new(target, &config);
        Self::with(backend, config)
    }

    fn with(backend: Arc<RedisBackend>, config: Config) -> Self {
        #[cfg(feature = "tls")]
        {
            // `Err` if the process already has a default provider: that one is used.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        Self {
            local: Group::new(),
            fleet: Arc::new(Fleet::new(backend, config)),
        }
    }

    /// A group on the primary that `sentinel`'s sentinels name for its service, found
    /// again before every connection attempt, so the group follows failovers: see
    /// [`Sentinel`]. Like [`new`](Self::new), it connects on first use; sentinels or a
    /// primary that cannot be reached, a service no sentinel knows, or refused
    /// credentials are not errors here: calls then run locally and say why
    /// ([`FallbackReason::RedisUnavailable`](crate::FallbackReason::RedisUnavailable),
    /// [`FallbackReason::AuthFailed`](crate::FallbackReason::AuthFailed)), each attempt
    /// bounded by [`Config::op_timeout`] per sentinel asked, and the group keeps trying
    /// ([`Config::reconnect`]). [`fleet_stats`](Self::fleet_stats) names the primary it
    /// is connected to.
    ///
    /// The database is the `Sentinel`'s ([`Sentinel::database`]); pub/sub channels carry
    /// it, as for URLs.
    ///
    /// # Errors
    ///
    /// [`OpenError::Config`] if a setting is out of range ([`Config::validate`]), or the
    /// `Sentinel` has no sentinel address, an address that is not `host:port`, an empty
    /// service name or a negative database (the error names which).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn open_sentinel(sentinel: &Sentinel, config: Config) -> Result<Self, OpenError> {
        config.validate().map_err(OpenError::Config)?;
        let discovery = sentinel.discovery().map_err(OpenError::Config)?;
        Ok(Self::on(Target::Sentinel(Arc::new(discovery)), config))
    }

    /// A group on a Redis Cluster (Redis 7 or later, or Valkey), found through `cluster`'s
    /// seed nodes: see [`Cluster`]. Each flight's commands go to the primary serving its
    /// slot, and its waiters wait on sharded pub/sub there. Like [`new`](Self::new), it
    /// connects on first use; seeds that cannot be reached or refused credentials are not
    /// errors here: calls then run locally and say why, and the group keeps trying.
    ///
    /// A slot that moves (resharding) or a shard that fails over is followed: the map is
    /// read again, and waiters subscribed where the slot was subscribe again where it
    /// is now (see [Cluster](crate#cluster) in the crate docs).
    ///
    /// # Errors
    ///
    /// [`OpenError::Config`] if a setting is out of range ([`Config::validate`]), or the
    /// `Cluster` has no seed or a seed that is not `host:port` (the error names it).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn open_cluster(cluster: &Cluster, config: Config) -> Result<Self, OpenError> {
        config.validate().map_err(OpenError::Config)?;
        let topology = cluster.topology().map_err(OpenError::Config)?;
        let backend = RedisBackend::cluster(topology, &config);
        Ok(Self::with(backend, config))
    }

    /// [`new`](Self::new) from a URL: `redis://[[user]:password@]host:port/[db]`, or
    /// `rediss://` for TLS (with the `tls` feature: the server's certificate is checked
    /// against the platform's root certificates; for a private CA or client certificates,
    /// build the client with `redis::Client::build_with_tls` and call [`new`](Self::new)).
    /// With the `tls` feature, opening a group installs rustls's `ring` provider as the
    /// process's default unless one is installed already.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new), and [`OpenError::Redis`] if the URL is invalid.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn open(url: &str, config: Config) -> Result<Self, OpenError> {
        let client = redis::Client::open(url).map_err(OpenError::Redis)?;
        Self::new(&client, config)
    }

    /// Attaches an in-process observer (such as `singleflight-stats`' `Stats`): it counts
    /// this process's calls as hits (joined another local caller) and misses (went to the
    /// fleet layer). Fleet-wide roles are in [`fleet_stats`](Self::fleet_stats).
    #[must_use]
    pub fn with_observer(self, observer: Arc<dyn Observer>) -> Self {
        Self {
            local: self.local.with_observer(observer),
            fleet: self.fleet,
        }
    }

    /// How the fleet layer settled this process's flights so far.
    pub fn fleet_stats(&self) -> FleetStats {
        self.fleet.stats()
    }

    /// Number of this process's flights in progress.
    pub fn in_flight(&self) -> usize {
        self.local.in_flight()
    }

    /// Number of this process's flights waiting for a leader in another process (tests
    /// and dashboards can wait on it instead of sleeping).
    pub fn fleet_waiting(&self) -> usize {
        self.fleet.waiting()
    }

    /// Forgets `key` in this process and across the fleet: the next call for it, in any
    /// process, starts a new flight (leads, unless another call started one since).
    ///
    /// In this process, the flight in progress (if any) is detached from the key: its
    /// callers still get its result. In Redis, the value kept for reuse
    /// ([`Config::reuse_for`]) is dropped, and every flight elected so far is fenced off:
    /// a flight still running in any process never keeps its value for reuse afterwards,
    /// and the next call does not wait for it (it elects a new leader; the old flight's
    /// leader then counts its lease as lost).
    ///
    /// # Errors
    ///
    /// [`ForgetError`] if Redis could not be reached within [`Config::op_timeout`]: the
    /// forget then took effect in this process only.
    ///
    /// # Cancel safety
    ///
    /// The in-process part takes effect at the first poll. Dropped before Redis answered,
    /// the fleet-wide part may or may not have taken effect.
    pub async fn forget(&self, key: &str) -> Result<(), ForgetError> {
        self.local.forget(key);
        self.fleet.forget(key).await.map_err(ForgetError::new)
    }

    /// Number of this process's callers waiting on `key`'s flight (not counting the one
    /// that reached the fleet layer).
    pub fn waiters(&self, key: &str) -> usize {
        self.local.waiters(key)
    }

    /// Runs infallible `work` once for `key` across the fleet (best-effort) and resolves
    /// to a copy of its value; [`Call::with_role`] tells the role the call played too
    /// ([`FleetRole`]).
    ///
    /// The work runs in this caller's task if this process leads, or falls back. Every
    /// concurrent caller of `key` in this process shares this process's one fleet call and
    /// its role.
    ///
    /// # Errors
    ///
    /// As [`try_call`](Self::try_call); `Error::Failed` cannot occur.
    ///
    /// # Panics
    ///
    /// If this caller runs the work and it panics, the panic resumes here (the fleet is
    /// told at once, so another process takes over).
    ///
    /// # Cancel safety
    ///
    /// As [`try_call`](Self::try_call).
    pub fn call<'a, F, Fut>(
        &'a self,
        key: &'a str,
        work: F,
    ) -> Call<impl Future<Output = ResultWithRole<V, E>> + 'a>
    where
        F: FnOnce() -> Fut + 'a,
        Fut: Future<Output = V> + 'a,
    {
        self.try_call(key, || async { Ok(work().await) })
    }

    /// Runs fallible `work` once for `key` across the fleet (best-effort): see
    /// [`call`](Self::call). A leader's error reaches this process's callers as
    /// [`Error::Failed`] and other processes' as [`Error::Remote`], at once.
    ///
    /// # Errors
    ///
    /// [`Error::Failed`] / [`Error::Remote`] if the work failed here / elsewhere,
    /// [`Error::Panicked`] for this process's waiters if it panicked here,
    /// [`Error::Reentrant`] if called from inside `key`'s own work. Redis trouble is never
    /// an error: the work then runs here and the role says
    /// [`FleetRole::Fallback`].
    ///
    /// # Panics
    ///
    /// As [`call`](Self::call).
    ///
    /// # Cancel safety
    ///
    /// Dropping a waiting caller affects no one else. Dropping the caller that runs the
    /// work (or waits on Redis) cancels it, whatever point it was dropped at: the oldest
    /// local waiter takes over; a lease this call's token may hold (even one taken by a
    /// command still on its way) is released and the fleet told to elect a new leader; a
    /// circuit-breaker probe it was making ends, so the next call probes.
    pub fn try_call<'a, F, Fut>(
        &'a self,
        key: &'a str,
        work: F,
    ) -> Call<impl Future<Output = ResultWithRole<V, E>> + 'a>
    where
        F: FnOnce() -> Fut + 'a,
        Fut: Future<Output = Result<V, E>> + 'a,
    {
        Call::new(async move {
            let fleet = &self.fleet;
            let result = self
                .local
                .try_call(key, || async move { fleet.run(key, work).await })
                .await;
            match result {
                Ok((value, role)) => (Ok(value), Some(role)),
                Err(singleflight_core::Error::Failed(Failure::Local(e, role))) => {
                    (Err(Error::Failed(e)), Some(role))
                }
                Err(singleflight_core::Error::Failed(Failure::Remote(e, role))) => {
                    (Err(Error::Remote(e)), Some(role))
                }
                Err(singleflight_core::Error::Panicked(message)) => {
                    (Err(Error::Panicked(message)), None)
                }
                Err(singleflight_core::Error::Reentrant) => (Err(Error::Reentrant), None),
                Err(_) => (Err(Error::LeaderDropped), None),
            }
        })
    }
}
