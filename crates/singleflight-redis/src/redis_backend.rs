//! [`Backend`] on a real Redis: five Lua scripts, sent where [`Nodes`] says. On one
//! server, one RESP3 connection per group for commands and subscriptions alike
//! ([`Link`](crate::link::Link): replaced when lost or silent, with the subscriptions
//! made again); on a cluster, the node serving the flight's slot, with `MOVED`, `ASK` and
//! `TRYAGAIN` followed here, for scripts and reads alike.
//!
//! Every script touches only keys of one flight, which share a hash tag, so they stay
//! single-slot; the channel carries the same tag, so on a cluster the scripts `SPUBLISH`
//! on the slot's own shard. RESP3 (pushed pub/sub messages on the connection) needs
//! Redis 6 or later (or Valkey); sharded pub/sub, Redis 7.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{FromRedisValue, RedisResult, Script, ToRedisArgs, Value};

use crate::backend::{Backend, BackendError, Joined, Subscription};
use crate::cluster::{self, Topology};
use crate::config::Config;
use crate::envelope::Keys;
use crate::health::ReconnectCounts;
use crate::link::{Pubsub, Shared, Target};
use crate::route::{Node, Nodes, Router};

/// Foreign data at a flight's key (another type, or a value not in our format) is never
/// trusted and never waited on: the scripts give such a key a TTL of at most `limit`, so
/// it heals on its own, and report it.
///
/// Each `redis.call` costs the server about as much as the command's own work again, so
/// the scripts make as few as they can: `str` reads a string key and learns its type in
/// one call (`TYPE` first would be two). Only `WRONGTYPE` is taken for foreign data; any
/// other error (an ACL refusal) fails the script as `redis.call` would.
const TAME: &str = r"
local function tame(k, limit)
  local t = redis.call('PTTL', k)
  if t < 0 or t > limit then redis.call('PEXPIRE', k, limit) end
end
local function wrongtype(e)
  return type(e) == 'table' and string.find(e.err or '', 'WRONGTYPE', 1, true) == 1
end
-- The string at k, false if there is none, nil if k holds another type.
local function str(k)
  local v = redis.pcall('GET', k)
  if wrongtype(v) then return nil end
  if type(v) == 'table' then error(v) end
  return v
end
";

/// KEYS: lock, generation counter, result, reuse, fence. ARGV: token, lease (ms), minimum
/// generation (0: a fresh call, which never takes a stored result), limit for foreign
/// data (ms), reuse window (ms, 0: off). Returns `{kind, generation, envelope, age}` with
/// kind 0 = result, 1 = leader, 2 = waiter, 3 = foreign data (the envelope field names
/// the key), 4 = a value kept for reuse, published `age` ms ago.
///
/// A fresh call that finds a lease whose generation a `forget` fenced off (at or below
/// the fence) takes over: the forgotten flight goes on for its own waiters, the next
/// calls start a new one.
///
/// `redis.call`s: a new leader 5 (`TYPE`, `GET` ×2, `SET` ×2; one more `HMGET` while the
/// last flight's result lingers), a waiter 3 or 4 (`TYPE`, [`HMGET`], `GET`, `PTTL`);
/// with a reuse window, a fresh call makes one more (`HMGET`), and two (and `PTTL`) when
/// it finds a value, and a fresh waiter one more (`GET` of the fence).
const JOIN: &str = r"
local lease, min, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local win = tonumber(ARGV[5])
if min == 0 and win > 0 then
  local r = redis.pcall('HMGET', KEYS[4], 'g', 'v', 'w')
  if wrongtype(r) then tame(KEYS[4], limit)
  elseif type(r) == 'table' and r.err then error(r)
  elseif r[1] or r[2] or r[3] then
    local g = r[1] and string.match(r[1], '^%d+$') and tonumber(r[1])
    local w = r[3] and string.match(r[3], '^%d+$') and tonumber(r[3])
    local t = redis.call('PTTL', KEYS[4])
    if not (g and w and r[2]) or t < 0 then tame(KEYS[4], limit)
    elseif w - t < win then return {4, g, r[2], w - t} end
  end
end
local rk = redis.call('TYPE', KEYS[3])['ok']
if rk ~= 'none' then
  if rk ~= 'hash' then tame(KEYS[3], limit); return {3, 0, 'result', 0} end
  local r = redis.call('HMGET', KEYS[3], 'g', 'v')
  local g = r[1] and string.match(r[1], '^%d+$') and tonumber(r[1])
  if not (g and r[2]) then tame(KEYS[3], limit); return {3, 0, 'result', 0} end
  -- Ours: its TTL is the linger (a newer one than a leader's own is tamed by `complete`).
  if min > 0 and g >= min then return {0, g, r[2], 0} end
end
local fence = 0
local l = str(KEYS[1])
if l ~= false then
  local g, holder
  if l then g, holder = string.match(l, '^(%d+):(.+)$') end
  -- Our leases always expire: one that never does is not ours, whatever it looks like.
  if not g or redis.call('PTTL', KEYS[1]) == -1 then tame(KEYS[1], lease); return {3, 0, 'lease', 0} end
  if holder == ARGV[1] then return {1, tonumber(g), '', 0} end
  if min == 0 then
    local f = str(KEYS[5])
    fence = f and string.match(f, '^%d+$') and tonumber(f) or 0
  end
  -- A fresh call does not join a flight that a `forget` fenced off: it elects anew.
  if min > 0 or tonumber(g) > fence then return {2, tonumber(g), '', 0} end
end
local c = str(KEYS[2])
if c == nil or (c and not string.match(c, '^%d+$')) then
  tame(KEYS[2], lease); return {3, 0, 'generation counter', 0}
end
-- After a restart the counter may be behind generations still in flight: never reuse one.
local g = string.format('%d', math.max(c and tonumber(c) or 0, min, fence) + 1)
redis.call('SET', KEYS[2], g, 'PX', 86400000)
redis.call('SET', KEYS[1], g .. ':' .. ARGV[1], 'PX', lease)
return {1, tonumber(g), '', 0}
";

/// KEYS: lock. ARGV: lock value, lease (ms). Returns 1 if renewed.
const RENEW: &str = r"
if str(KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// KEYS: lock, result, generation counter, reuse, fence. ARGV: lock value, generation,
/// envelope, linger (ms), channel, message, reuse window (ms, 0: not reusable). A result
/// of a newer generation is never overwritten (it is only made to expire within one
/// linger), and the counter is raised to this generation (a leader elected before a Redis
/// restart must not see its generation handed out again). Foreign data in the way is
/// replaced. With a reuse window, the envelope is also kept for reuse for that long, with
/// the window (`w`) beside it to tell its age by, unless a `forget` fenced this
/// generation off or a newer generation's value is kept.
///
/// `redis.call`s: 7 (`GET`, `HGET`, `HSET`, `PEXPIRE`, `GET`, `DEL`, `PUBLISH`); with a
/// reuse window, 4 more (`GET` of the fence, `HGET`, `HSET`, `PEXPIRE`).
const COMPLETE: &str = r"
local gen = tonumber(ARGV[2])
local c = str(KEYS[3])
if not (c and string.match(c, '^%d+$')) or tonumber(c) < gen then
  redis.call('SET', KEYS[3], ARGV[2], 'PX', 86400000)
end
local cur = redis.pcall('HGET', KEYS[2], 'g')
if type(cur) == 'table' and not wrongtype(cur) then error(cur) end
local g = type(cur) == 'string' and string.match(cur, '^%d+$') and tonumber(cur)
if (not g) or g <= gen then
  if type(cur) == 'table' then redis.call('DEL', KEYS[2]) end
  redis.call('HSET', KEYS[2], 'g', ARGV[2], 'v', ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
else
  tame(KEYS[2], tonumber(ARGV[4]))
end
local win = tonumber(ARGV[7])
if win > 0 then
  local f = str(KEYS[5])
  local fence = f and string.match(f, '^%d+$') and tonumber(f) or 0
  if gen > fence then
    local kept = redis.pcall('HGET', KEYS[4], 'g')
    if type(kept) == 'table' and not wrongtype(kept) then error(kept) end
    local k = type(kept) == 'string' and string.match(kept, '^%d+$') and tonumber(kept)
    if (not k) or k <= gen then
      if type(kept) == 'table' or (kept and not k) then redis.call('DEL', KEYS[4]) end
      redis.call('HSET', KEYS[4], 'g', ARGV[2], 'v', ARGV[3], 'w', ARGV[7])
      redis.call('PEXPIRE', KEYS[4], ARGV[7])
    end
  end
end
if str(KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
";

/// KEYS: lock. ARGV: token, channel, message. Releases the lease if the token holds it,
/// whatever the generation.
const RELEASE: &str = r"
local l = str(KEYS[1])
if not l then return 0 end
local g, holder = string.match(l, '^(%d+):(.+)$')
if holder == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
";

/// KEYS: generation counter, reuse, fence. Drops the value kept for reuse and raises the
/// fence to the highest generation elected so far (the counter's): no flight at or below
/// it keeps a value for reuse afterwards, and a fresh `join` takes over its lease. The
/// fence lives as long as the counter (a day after the last election). Returns the fence.
///
/// `redis.call`s: 4 (`GET` ×2, `DEL`, `SET`).
const FORGET: &str = r"
local c = str(KEYS[1])
c = c and string.match(c, '^%d+$') and tonumber(c) or 0
local f = str(KEYS[3])
f = f and string.match(f, '^%d+$') and tonumber(f) or 0
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[3], string.format('%d', math.max(c, f)), 'PX', 86400000)
return math.max(c, f)
";

/// A script of this crate: its code (with `SPUBLISH` for `PUBLISH` on a cluster, where
/// waiters wait on sharded pub/sub) and the code's SHA-1.
struct Lua {
    code: String,
    hash: String,
}

impl Lua {
    fn new(body: &str, pubsub: Pubsub) -> Self {
        let code = format!("{TAME}{body}");
        let code = match pubsub {
            Pubsub::Plain => code,
            Pubsub::Sharded => code.replace("'PUBLISH'", "'SPUBLISH'"),
        };
        let hash = Script::new(&code).get_hash().to_owned();
        Self { code, hash }
    }

    fn call(&self) -> Call<'_> {
        Call {
            lua: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// One script call, sent as `EVALSHA`, then as `EVAL` if the server does not have the
/// script (which also caches it there); after an `ASK` redirection, as `ASKING` and
/// `EVAL` in one pipeline (the node that is importing the slot may not have the script).
struct Call<'a> {
    lua: &'a Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Call<'_> {
    fn key(mut self, key: &str) -> Self {
        self.keys.push(key.as_bytes().to_vec());
        self
    }

    fn arg(mut self, arg: impl ToRedisArgs) -> Self {
        self.args.extend(arg.to_redis_args());
        self
    }

    fn command(&self, name: &str, script: &str) -> redis::Cmd {
        let mut command = redis::cmd(name);
        command.arg(script).arg(self.keys.len());
        for key in &self.keys {
            command.arg(key);
        }
        for arg in &self.args {
            command.arg(arg);
        }
        command
    }

    async fn send(
        &self,
        connection: &mut MultiplexedConnection,
        asking: bool,
    ) -> RedisResult<Value> {
        if asking {
            let mut pipe = redis::pipe();
            pipe.cmd("ASKING")
                .ignore()
                .add_command(self.command("EVAL", &self.lua.code));
            let (value,): (Value,) = pipe.query_async(connection).await?;
            return Ok(value);
        }
        match self
            .command("EVALSHA", &self.lua.hash)
            .query_async(connection)
            .await
        {
            Err(e) if e.code() == Some("NOSCRIPT") => {
                self.command("EVAL", &self.lua.code)
                    .query_async(connection)
                    .await
            }
            other => other,
        }
    }
}

/// Redirections followed (`MOVED`, `ASK`) and `TRYAGAIN`s retried per command, within
/// its deadline.
const REDIRECTS: usize = 8;

/// The pause before a command that got `TRYAGAIN` (a slot migrating, the flight's keys
/// split between two nodes for a moment) is sent again.
const TRY_AGAIN: Duration = Duration::from_millis(10);

/// What a cluster's reply asks of the client.
enum Redirect {
    /// The slot is served by this node now.
    Moved(u16, String),
    /// Ask this node, once (the slot is migrating to it).
    Ask(String),
    /// Send it again shortly.
    TryAgain,
}

fn redirect<T>(result: &RedisResult<T>) -> Option<Redirect> {
    let error = result.as_ref().err()?;
    match error.code()? {
        "MOVED" => error
            .redirect_node()
            .map(|(address, slot)| Redirect::Moved(slot, address.to_owned())),
        "ASK" => error
            .redirect_node()
            .map(|(address, _)| Redirect::Ask(address.to_owned())),
        "TRYAGAIN" => Some(Redirect::TryAgain),
        _ => None,
    }
}

/// The real backend.
pub(crate) struct RedisBackend {
    nodes: Nodes,
    shared: Arc<Shared>,
    /// The logical database of the client's URL (0 on a cluster).
    database: i64,
    join: Lua,
    renew: Lua,
    complete: Lua,
    release: Lua,
    forget: Lua,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend").finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisBackend {
    /// Connects lazily (the first command connects) to `target`, over RESP3.
    pub(crate) fn new(target: Target, config: &Config) -> Arc<Self> {
        let shared = shared(config);
        let database = target.database();
        let node = Node::server(target, &shared);
        Self::with(Nodes::Server(node), shared, database, Pubsub::Plain)
    }

    /// Connects lazily to the nodes of a cluster, over RESP3, reading its slot map first.
    pub(crate) fn cluster(topology: Topology, config: &Config) -> Arc<Self> {
        let shared = shared(config);
        let router = Router::new(topology, &shared);
        Self::with(Nodes::Cluster(router), shared, 0, Pubsub::Sharded)
    }

    fn with(nodes: Nodes, shared: Arc<Shared>, database: i64, pubsub: Pubsub) -> Arc<Self> {
        Arc::new(Self {
            nodes,
            shared,
            database,
            join: Lua::new(JOIN, pubsub),
            renew: Lua::new(RENEW, pubsub),
            complete: Lua::new(COMPLETE, pubsub),
            release: Lua::new(RELEASE, pubsub),
            forget: Lua::new(FORGET, pubsub),
        })
    }

    /// A command on a node whose connection is lost or silent: on a cluster, the slot map
    /// may be out of date (a node gone, a failover).
    fn trouble(&self, error: &BackendError) {
        if let Nodes::Cluster(router) = &self.nodes
            && (error.reconnect || error.timeout)
        {
            router.refresh();
        }
    }

    /// Sends `command` to the node serving `slot`, following the cluster's redirections
    /// (`command(connection, asking)`).
    async fn send<T, Fut>(
        &self,
        slot: u16,
        command: impl Fn(MultiplexedConnection, bool) -> Fut,
    ) -> Result<T, BackendError>
    where
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut asked = None;
        for _ in 0..REDIRECTS {
            let asking = asked.is_some();
            let node = match asked.take() {
                Some(node) => node,
                None => self.nodes.route(slot)?,
            };
            let (id, conn) = node.commands.get().await.inspect_err(|e| self.trouble(e))?;
            let result = command(conn, asking).await;
            if let (Nodes::Cluster(router), Some(redirect)) = (&self.nodes, redirect(&result)) {
                node.commands.answered(id);
                match redirect {
                    Redirect::Moved(slot, address) => router.moved(slot, &address),
                    Redirect::Ask(address) => asked = Some(router.at(&address)?),
                    Redirect::TryAgain => tokio::time::sleep(TRY_AGAIN).await,
                }
                continue;
            }
            return node
                .commands
                .check(id, result)
                .inspect_err(|e| self.trouble(e));
        }
        Err(BackendError::new(format!(
            "slot {slot}: still redirected after {REDIRECTS} tries"
        )))
    }

    /// Runs a script on the node serving `keys`.
    async fn invoke<T: FromRedisValue>(
        &self,
        keys: &Keys,
        call: Call<'_>,
    ) -> Result<T, BackendError> {
        let call = &call;
        let value = self
            .send(keys.slot, |mut conn, asking| async move {
                call.send(&mut conn, asking).await
            })
            .await?;
        redis::from_redis_value(value).map_err(|e| BackendError::new(e.to_string()))
    }
}

fn shared(config: &Config) -> Arc<Shared> {
    Shared::new(
        config.op_timeout,
        (config.reconnect_min, config.reconnect_max),
        config.warn_interval,
    )
}

fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

impl Backend for Arc<RedisBackend> {
    fn database(&self) -> i64 {
        self.database
    }

    fn primaries(&self) -> Vec<String> {
        match &self.nodes {
            Nodes::Server(_) => Vec::new(),
            Nodes::Cluster(router) => router.primaries(),
        }
    }

    fn connection(&self, keys: &Keys) -> u64 {
        self.nodes
            .route(keys.slot)
            .map_or(0, |node| node.commands.last_up())
    }

    fn timed_out(&self, connection: u64) {
        if let Some(link) = self.nodes.by_connection(connection) {
            link.timed_out(connection);
        }
    }

    fn answered(&self, connection: u64) {
        if let Some(link) = self.nodes.by_connection(connection) {
            link.answered(connection);
        }
    }

    fn reconnects(&self) -> Option<&ReconnectCounts> {
        Some(&self.shared.counts)
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, BackendError> {
        let slot = cluster::slot(channel.as_bytes());
        for _ in 0..REDIRECTS {
            let node = self.nodes.route(slot)?;
            let result = node.subscribe(channel).await;
            match (&self.nodes, &result) {
                (Nodes::Cluster(router), Err(e)) if e.moved.is_some() => {
                    if let Some((slot, address)) = &e.moved {
                        router.moved(*slot, address);
                    }
                }
                _ => return result.inspect_err(|e| self.trouble(e)),
            }
        }
        Err(BackendError::new(format!(
            "channel of slot {slot}: still redirected after {REDIRECTS} tries"
        )))
    }

    async fn join(
        &self,
        keys: &Keys,
        token: &str,
        lease: Duration,
        limit: Duration,
        min_generation: u64,
        reuse: Duration,
    ) -> Result<Joined, BackendError> {
        let reply: Vec<Value> = self
            .invoke(
                keys,
                self.join
                    .call()
                    .key(&keys.lock)
                    .key(&keys.generation)
                    .key(&keys.result)
                    .key(&keys.reuse)
                    .key(&keys.fence)
                    .arg(token)
                    .arg(millis(lease))
                    .arg(min_generation)
                    .arg(millis(limit))
                    .arg(if reuse.is_zero() { 0 } else { millis(reuse) }),
            )
            .await?;
        let bad = || BackendError::new(format!("unexpected join reply: {reply:?}"));
        let (kind, generation, age) = match reply.as_slice() {
            [kind, generation, _, age] => (
                int(kind).ok_or_else(bad)?,
                int(generation).ok_or_else(bad)?,
                int(age).ok_or_else(bad)?,
            ),
            _ => return Err(bad()),
        };
        Ok(match (kind, &reply[2]) {
            (0, Value::BulkString(envelope)) => Joined::Result(envelope.clone()),
            (4, Value::BulkString(envelope)) => {
                Joined::Reused(envelope.clone(), Duration::from_millis(age))
            }
            (1, _) => Joined::Leader(generation),
            (2, _) => Joined::Wait(generation),
            (3, Value::BulkString(what)) => Joined::Foreign(String::from_utf8_lossy(what).into()),
            _ => return Err(bad()),
        })
    }

    async fn renew(
        &self,
        keys: &Keys,
        lock_value: &str,
        lease: Duration,
    ) -> Result<bool, BackendError> {
        let renewed: i64 = self
            .invoke(
                keys,
                self.renew
                    .call()
                    .key(&keys.lock)
                    .arg(lock_value)
                    .arg(millis(lease)),
            )
            .await?;
        Ok(renewed == 1)
    }

    async fn complete(
        &self,
        keys: &Keys,
        lock_value: &str,
        generation: u64,
        envelope: &[u8],
        linger: Duration,
        message: &[u8],
        reuse: Duration,
    ) -> Result<(), BackendError> {
        let _: i64 = self
            .invoke(
                keys,
                self.complete
                    .call()
                    .key(&keys.lock)
                    .key(&keys.result)
                    .key(&keys.generation)
                    .key(&keys.reuse)
                    .key(&keys.fence)
                    .arg(lock_value)
                    .arg(generation)
                    .arg(envelope)
                    .arg(millis(linger))
                    .arg(&keys.channel)
                    .arg(message)
                    .arg(if reuse.is_zero() { 0 } else { millis(reuse) }),
            )
            .await?;
        Ok(())
    }

    async fn forget(&self, keys: &Keys) -> Result<u64, BackendError> {
        self.invoke(
            keys,
            self.forget
                .call()
                .key(&keys.generation)
                .key(&keys.reuse)
                .key(&keys.fence),
        )
        .await
    }

    async fn release(
        &self,
        keys: &Keys,
        token: &str,
        message: &[u8],
    ) -> Result<bool, BackendError> {
        let released: i64 = self
            .invoke(
                keys,
                self.release
                    .call()
                    .key(&keys.lock)
                    .arg(token)
                    .arg(&keys.channel)
                    .arg(message),
            )
            .await?;
        Ok(released == 1)
    }

    async fn fetch(&self, keys: &Keys) -> Result<Option<Vec<u8>>, BackendError> {
        let mut command = redis::cmd("HGET");
        command.arg(&keys.result).arg("v");
        let command = &command;
        self.send(keys.slot, |mut conn, asking| async move {
            let reply = if asking {
                let mut pipe = redis::pipe();
                pipe.cmd("ASKING").ignore().add_command(command.clone());
                pipe.query_async::<(Option<Vec<u8>>,)>(&mut conn)
                    .await
                    .map(|(value,)| value)
            } else {
                command.query_async(&mut conn).await
            };
            match reply {
                // Not a hash: foreign data, which the envelope check reports as such.
                Err(e) if e.code() == Some("WRONGTYPE") => Ok(Some(Vec::new())),
                other => other,
            }
        })
        .await
    }
}
