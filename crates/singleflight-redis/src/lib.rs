//! Best-effort request coalescing across processes and machines, on Redis (or Valkey).
//!
//! [`RedisGroup`] is two levels of coalescing:
//!
//! 1. **In-process**: concurrent calls for a key share one flight of
//!    [`singleflight-tokio`](singleflight_tokio), so at most one call per process and key
//!    reaches Redis.
//! 2. **Fleet-wide**: that call tries a lease (`SET NX PX` with a random token, in a Lua
//!    script). The winner runs the work, renewing its lease while it runs, and publishes
//!    the result (or its error) to the waiters, which also find it in a result key if
//!    they missed the message. A waiter subscribes to the flight's channel and then
//!    asks again, so a result published in between is not missed. Waiters re-check on a
//!    jittered backoff and when the connection drops; a leader that vanished is replaced
//!    when its lease expires by exactly one new leader (the lease is still `SET NX`); a
//!    leader that panics or is cancelled says so at once.
//!
//! ```no_run
//! use singleflight_redis::{Config, FleetRole, RedisGroup};
//!
//! # async fn load_user(id: u64) -> String { format!("user {id}") }
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let users = RedisGroup::<String>::open("redis://127.0.0.1:6379/", Config::new("users:v1"))?;
//! // The result alone: `users.call(key, work).await?`. With the role the call played:
//! let (user, role) = users.call("user:42", || load_user(42)).with_role().await;
//! let user = user?;
//! match role {
//!     Some(FleetRole::Leader { generation }) => println!("loaded {user} (flight {generation})"),
//!     Some(FleetRole::Waiter { .. }) => println!("{user} came from another process"),
//!     Some(FleetRole::Reused { age, .. }) => println!("{user}, published {age:?} ago"),
//!     other => println!("{user}: {other:?}"),
//! }
//! # Ok(()) }
//! ```
//!
//! # Round trips
//!
//! Each Redis command is one round trip; each script runs atomically on the server. (A
//! script's first use on a server costs two more: `NOSCRIPT`, then `SCRIPT LOAD`.)
//!
//! * **A leader** (any call no other process contends): two, both on its path: the join
//!   before its work, the completion (store the result, release the lease, publish)
//!   after it. No subscription. Its lease renewals (every third of
//!   [`Config::lease_ttl`]) run beside the work.
//! * **A waiter**: three before it waits (join, subscribe, join again); then the value
//!   comes in the pushed message, with no read after it, when its envelope is at most
//!   [`Config::inline_max`], and with one read (`HGET`) when larger. Its unsubscription
//!   is sent after it has the value, off its path.
//! * **A call that reuses** a value ([`Config::reuse_for`]): one, the join, which finds
//!   the value and hands it over.
//!
//! # Guarantees: best-effort, never a lock
//!
//! * **Healthy Redis**: one execution per key across the fleet per flight.
//! * **Redis down, slow or unreachable**: the call runs the work in this process, still
//!   coalesced within it (at most one execution per process and key), and the
//!   call's role ([`Call::with_role`]) says [`Fallback`](FleetRole::Fallback) with the
//!   reason. Every Redis command
//!   has its own deadline ([`Config::op_timeout`]); after repeated failures a circuit
//!   breaker skips Redis for a while, so a dead Redis costs nothing per call.
//! * **Rarely, two or more executions across processes**: a leader whose lease expired
//!   (partition, stalled process), a Redis restart or failover, evicted keys.
//! * **Cancelled calls leave nothing behind**: a call dropped at any point (a client
//!   timeout) releases a lease its token may hold, even one taken by a command still on
//!   its way, and ends a circuit-breaker probe it was making. A command that finds its
//!   connection lost is sent once more within its deadline on the new connection.
//! * **Never** use this as a mutual-exclusion lock for side effects. The generation in
//!   [`FleetRole`] grows with every election and can serve as a fencing token for
//!   downstream writes; a late leader never overwrites a newer generation's result.
//!
//! Coalescing is not caching: a result is handed only to calls that overlapped its flight
//! (it lingers briefly, [`Config::result_linger`], for waiters that missed the push).
//!
//! # Reuse across the fleet (opt-in)
//!
//! With [`Config::reuse_for`], a success published by any process is handed to every call
//! for its key that starts within the window after its publication, in every process whose
//! group sets a window, without running the work or waiting for a flight
//! ([`FleetRole::Reused`], with the value's age). The window is kept by Redis (the value's
//! key expires at its end), so the fleet agrees on it whatever the processes' clocks say.
//! Errors, panics, cancellations, timeouts and fallbacks are never reused; with
//! [`Config::secret`], a reused value is verified like a pushed one.
//! [`RedisGroup::forget`] reaches the fleet: it drops the value, and a flight elected
//! before it (in any process, still running or not) never leaves its value reusable: its
//! generation is at or below the fence the forget set, which the completion script checks.
//!
//! # Values
//!
//! Values cross processes through serde in a small versioned envelope that names the full
//! key: JSON by default, MessagePack with the `msgpack` feature ([`Codec`]). A value that
//! cannot be decoded (another version or codec) or is larger than the leader's or the
//! waiter's own [`Config::max_value`] makes the waiter run the work itself
//! ([`FallbackReason::Decode`], [`FallbackReason::TooLarge`]). Put a schema version in
//! the namespace. Errors cross as their `Display` text ([`RemoteError`]).
//!
//! # Who shares a result with whom
//!
//! A result goes only to calls that overlap its flight and agree on every row below; by
//! default nothing else separates callers. Two users, tenants or sessions that call the
//! same key in the same namespace and database **share one result**: when the result
//! depends on who asks, name the principal in the key (`"user:42:profile"`) or the
//! namespace.
//!
//! | the two calls differ in… | do they share a result? |
//! |---|---|
//! | nothing (same server, namespace, database, key) | yes: that is the point |
//! | start time: a call that starts after the flight ended | only within [`Config::reuse_for`] (off by default) after a success was published, and only if the caller's group sets a window too |
//! | key | never: names are SHA-256 of (namespace, key), and every envelope carries the full key, checked on receipt |
//! | namespace ([`Config::new`]) | never (as for the key); put a schema version in it |
//! | database (`redis://host/1` vs `/2`) | never: keys are per database, and each database's pub/sub channels are its own (channels are server-wide, so their names carry the database) |
//! | server (or Sentinel service) | never |
//! | [`Config::secret`]: waiter has one, leader another or none | never: the waiter runs the work itself ([`FallbackReason::Unverified`]) |
//! | [`Config::secret`]: leader has one, waiter none | yes: a waiter without a secret trusts whatever Redis holds |
//! | value type (same namespace) | only if the bytes decode as the waiter's type, else it runs the work ([`FallbackReason::Decode`]): version the namespace |
//! | [`Config`] knobs (deadlines, lease, sizes, codec) | yes: a waiter applies its own [`Config::max_value`], and decodes with the leader's codec if its build has it |
//!
//! Without a secret, anyone who can write to Redis can also hand any caller any value:
//! see [Trust](#trust).
//!
//! # Trust
//!
//! Without [`Config::secret`], **Redis and everyone who can write to it (or `PUBLISH` on
//! it) are trusted**: they can hand every waiter any value or error. Key names are
//! SHA-256 of (namespace, key), truncated to 128 bits, and every envelope carries the full
//! key, so no two keys can be made to share a flight by accident or design.
//!
//! With a secret (the same in every process of the namespace), leaders sign each result
//! with HMAC-SHA256 and waiters run the work themselves rather than accept one that is
//! unsigned or signed with another secret ([`FallbackReason::Unverified`], warned about).
//! Whoever can write to Redis can then still delay or prevent coalescing (hold a lease,
//! delete keys) and replay a result of the same key, but not forge one.
//!
//! Data at a flight's keys that is not ours (another format, a truncated lease) is
//! reported as [`FallbackReason::ForeignData`], warned about, and given a TTL of at most
//! one lease (or [`Config::result_linger`], if longer): the key coalesces again after it.
//!
//! # Connection and recovery
//!
//! Each group has one connection, for commands and subscriptions alike. It is replaced
//! when the server or the network closes it; when three commands in a row get no answer
//! within [`Config::op_timeout`]; or when the health `PING` sent after a command timed
//! out gets no answer within it. That last case is the silent one: a host gone from
//! behind its address, a NAT or conntrack entry dropped, with no reset ever arriving.
//! It is also replaced when the server refuses a write with `READONLY` (a primary
//! demoted to a replica under it).
//!
//! * New connections are opened one at a time, in the background, after a pause
//!   ([`Config::reconnect`]: up to 100 ms before the first attempt, then doubling up to
//!   1 s, jittered), so a fleet that lost Redis does not storm it. Meanwhile calls run
//!   their work locally, and no call fails.
//! * On the new connection the channels of waiting waiters are subscribed again, and
//!   every waiting waiter re-checks the result key (messages sent meanwhile were lost).
//! * A new connection that answers ends the circuit breaker's cool-down: the next call
//!   probes Redis at once.
//! * Sockets have TCP keepalive (first probe after 10 s idle, then every 5 s, 3 probes)
//!   and, on Linux, `TCP_USER_TIMEOUT` (20 s), so the kernel also closes a dead
//!   connection that no command uses.
//!
//! **Recovery target**: after a network that went silent heals, the fleet coalesces
//! again within `lease_ttl + 3 × op_timeout + reconnect cap` (10 s + 0.75 s + 1 s with
//! the defaults), with no failed call in between. (A lease taken before the fault may be
//! held until it expires; a connection still silent is replaced within three command
//! deadlines; the next attempt to connect comes within the cap.) Tested with a loopback
//! proxy that silences every open connection for 3 s and never resets one.
//!
//! # Sentinel
//!
//! [`RedisGroup::open_sentinel`] finds the primary through Redis Sentinel ([`Sentinel`]:
//! the sentinels' addresses, the service name, credentials for the sentinels and for the
//! primary, the database, and TLS with the `tls` feature). Every connection attempt asks
//! the sentinels for the current primary (`SENTINEL get-master-addr-by-name`, one sentinel
//! after another), and checks with `ROLE` that the server it reached is a primary; a
//! replica is not (a failover under way): the attempt fails, and the next one asks
//! again. The group also follows `+switch-master` on one sentinel, so a connection to a
//! primary the sentinels replaced is dropped when they announce it, even if that server
//! still answers (an old primary back from a pause takes writes until it is demoted).
//! [`FleetStats::primary`] names the primary of the current connection.
//!
//! **Failover target**: after the primary dies or stops and a replica is promoted, the
//! fleet coalesces again within `lease_ttl + reconnect cap + 3 × op_timeout` of the
//! promotion, with no failed call; meanwhile calls run locally, at most one execution per
//! process and key. An old primary that comes back before it is demoted adds at most one
//! execution per key. Tested against real processes: three `redis-sentinel`s, a primary
//! and a replica, with the primary killed (`SIGKILL`), and stopped past
//! `down-after-milliseconds` (`SIGSTOP`) then resumed after the promotion.
//!
//! # Cluster
//!
//! [`RedisGroup::open_cluster`] works on a Redis Cluster (Redis 7 or later, or Valkey),
//! from seed nodes ([`Cluster`]: their addresses, credentials for every node, and TLS with
//! the `tls` feature). The election, the lease and the settling are the same as on one
//! server; what differs is where commands go and how waiters wait:
//!
//! * Each flight's keys share a hash tag, so its scripts touch one slot: they go to the
//!   primary serving it, found in the slot map (`CLUSTER SLOTS`, read from any node).
//!   `MOVED` moves the slot in the map and has the map read again, `ASK` is followed once
//!   (`ASKING`), and `TRYAGAIN` (a slot half-migrated) is sent again within the command's
//!   deadline. While a flight's slot migrates (between `SETSLOT MIGRATING` and
//!   `SETSLOT NODE`), Redis answers `TRYAGAIN` to a script that names keys some of which
//!   exist on the node and some not, on either node; a join or a completion names five,
//!   so it gets `TRYAGAIN` until the migration ends, and after the deadline the call runs
//!   its work locally (no failed call). Single-key commands (a renewal, a release, a read
//!   of the result) follow `ASK`, so a lease taken before the migration is kept.
//! * Waiters wait on **sharded pub/sub** (`SSUBSCRIBE` on that primary; the scripts
//!   `SPUBLISH`), so a result reaches one shard, not every node. Each node gets two
//!   connections, one for commands and one for subscriptions: a node's own
//!   `SUNSUBSCRIBE` (sent when a slot leaves it) is never taken for a script's reply.
//! * **A slot that moves** (resharding, a migration) or **a shard that fails over**: a
//!   server-sent `SUNSUBSCRIBE`, a `MOVED` reply or a slot map in which the node no longer
//!   serves the slot (a node lost) counts as a lost subscription. The waiter subscribes
//!   again on the slot's new node and re-checks the result key, so a result published
//!   meanwhile is not missed; no waiter waits past its poll cap
//!   ([`Config::poll`]) for it. A command on a node that stopped answering has the map
//!   read again (at most every 100 ms), so the replica promoted in its place is found.
//! * A lease on a shard that failed over is treated like one on a restarted Redis: at
//!   most one extra execution per key, never a failed call; until the promotion, calls
//!   for the shard's keys run locally.
//!
//! Tested against a local cluster of three primaries and three replicas: a fleet of 8
//! processes × 25 callers over 64 keys in every shard (one execution per key per round);
//! a slot migrated (`SETSLOT IMPORTING/MIGRATING`, `MIGRATE`, `SETSLOT NODE`) under
//! waiters; a slot left mid-migration under a leader (`TRYAGAIN`, then `ASK`); a primary
//! killed (`SIGKILL`) under a leader. [`FleetStats::lost_subscriptions`] counts the
//! subscriptions lost, per [`SubscriptionLoss`], and [`FleetStats::primaries`] names the
//! primaries of the group's slot map.
//!
//! # Reporting
//!
//! Each call's [`FleetRole`] ([`Call::with_role`]); [`RedisGroup::fleet_stats`] (which
//! also counts connections replaced, per [`ReconnectReason`], and waiters' subscriptions
//! lost, per [`SubscriptionLoss`]), also as OpenTelemetry counters with the `otel`
//! feature; an in-process
//! [`Observer`](singleflight_core::Observer) via [`RedisGroup::with_observer`]; and
//! `tracing` warnings (target `singleflight_redis`), at most one per kind of trouble per
//! [`Config::warn_interval`].
//!
//! # Deployment
//!
//! **Redis 6 or later** (or Valkey): the connection speaks RESP3, so pub/sub messages
//! arrive on the command connection. Use `maxmemory-policy noeviction` (or a dedicated
//! database): evicted leases mean duplicate executions. One group per process and
//! namespace shares one connection for commands and subscriptions.
//!
//! Credentials go in the URL (`redis://user:password@host:port/`, or `redis://:password@…`
//! for the default user). The least an ACL user needs (tested):
//! `~sf:* &sf:* -@all +hello +evalsha +eval +script|load +subscribe +unsubscribe +hget`
//! and, for the scripts, `+get +set +pexpire +pttl +type +hmget +hset +del +publish`;
//! through Sentinel also `+role`; on a cluster also `+ssubscribe +sunsubscribe +spublish
//! +asking +cluster|slots` (not tested with an ACL user on a cluster). Refused credentials are reported as [`FallbackReason::AuthFailed`] (and
//! warned about), not as a timeout; the group keeps trying to connect (see
//! [Connection](#connection-and-recovery)), so credentials fixed on the server are taken up
//! without a restart.
//!
//! Keys of one flight share a hash tag (`sf:{ns:hash}:…`), so the scripts are
//! single-slot, on a cluster too (see [Cluster](#cluster)).
//!
//! # Features
//!
//! * `msgpack`: the `Codec::MessagePack` codec (see [`Codec`]).
//! * `tls`: `rediss://` URLs, through the `redis` crate's rustls support with the `ring`
//!   provider and the platform's root certificates (see [`RedisGroup::open`]); and
//!   `Sentinel::tls` for sentinels and a primary that speak TLS.
//! * `otel`: `RedisGroup::register_otel`, the fallbacks and connection replacements of
//!   [`fleet_stats`](RedisGroup::fleet_stats), per reason, as OpenTelemetry observable
//!   counters (see the `otel` module).
//!
//! # MSRV
//!
//! Rust 1.88 (the `redis` crate's).
#![forbid(unsafe_code)]
// docs.rs (nightly) badges each feature-gated item with the feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod call;
mod cluster;
mod config;
mod envelope;
mod fleet;
mod group;
mod health;
mod link;
#[cfg(feature = "otel")]
pub mod otel;
mod redis_backend;
mod report;
mod route;
mod sentinel;

#[cfg(test)]
mod fake;

pub use call::{Call, ResultWithRole, WithRole};
pub use cluster::Cluster;
pub use config::{Codec, Config, ConfigError};
pub use group::{OpenError, RedisGroup};
pub use health::{FleetStats, ReconnectReason, SubscriptionLoss};
pub use report::{Error, FallbackReason, FleetRole, ForgetError, PanicMessage, RemoteError};
pub use sentinel::Sentinel;

// The README is the registry page: its examples compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
