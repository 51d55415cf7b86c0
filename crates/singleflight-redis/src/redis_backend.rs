//! [`Backend`] on a real Redis: one RESP3 connection per group for commands and
//! subscriptions alike ([`Link`]: replaced when lost or silent, with the subscriptions
//! made again), and four Lua scripts.
//!
//! Every script touches only keys of one flight, which share a hash tag, so they stay
//! single-slot; channels are not keys. RESP3 (pushed pub/sub messages on the command
//! connection) needs Redis 6 or later (or Valkey).

use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::{FromRedisValue, Script, Value};

use crate::backend::{Backend, BackendError, Hub, Joined, ServerState, Subscription};
use crate::config::Config;
use crate::envelope::Keys;
use crate::health::ReconnectCounts;
use crate::link::{Link, Target};

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

/// KEYS: lock, generation counter, result. ARGV: token, lease (ms), minimum generation
/// (0: never reuse a stored result), limit for foreign data (ms). Returns
/// `{kind, generation, envelope}` with kind 0 = result, 1 = leader, 2 = follower,
/// 3 = foreign data (the envelope field names the key).
///
/// `redis.call`s: a new leader 5 (`TYPE`, `GET` ×2, `SET` ×2; one more `HMGET` while the
/// last flight's result lingers), a follower 3 or 4 (`TYPE`, [`HMGET`], `GET`, `PTTL`).
const JOIN: &str = r"
local lease, min, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local rk = redis.call('TYPE', KEYS[3])['ok']
if rk ~= 'none' then
  if rk ~= 'hash' then tame(KEYS[3], limit); return {3, 0, 'result'} end
  local r = redis.call('HMGET', KEYS[3], 'g', 'v')
  local g = r[1] and string.match(r[1], '^%d+$') and tonumber(r[1])
  if not (g and r[2]) then tame(KEYS[3], limit); return {3, 0, 'result'} end
  -- Ours: its TTL is the linger (a newer one than a leader's own is tamed by `complete`).
  if min > 0 and g >= min then return {0, g, r[2]} end
end
local l = str(KEYS[1])
if l ~= false then
  local g, holder
  if l then g, holder = string.match(l, '^(%d+):(.+)$') end
  -- Our leases always expire: one that never does is not ours, whatever it looks like.
  if not g or redis.call('PTTL', KEYS[1]) == -1 then tame(KEYS[1], lease); return {3, 0, 'lease'} end
  if holder == ARGV[1] then return {1, tonumber(g), ''} end
  return {2, tonumber(g), ''}
end
local c = str(KEYS[2])
if c == nil or (c and not string.match(c, '^%d+$')) then
  tame(KEYS[2], lease); return {3, 0, 'generation counter'}
end
-- After a restart the counter may be behind generations still in flight: never reuse one.
local g = string.format('%d', math.max(c and tonumber(c) or 0, min) + 1)
redis.call('SET', KEYS[2], g, 'PX', 86400000)
redis.call('SET', KEYS[1], g .. ':' .. ARGV[1], 'PX', lease)
return {1, tonumber(g), ''}
";

/// KEYS: lock. ARGV: lock value, lease (ms). Returns 1 if renewed.
const RENEW: &str = r"
if str(KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// KEYS: lock, result, generation counter. ARGV: lock value, generation, envelope,
/// linger (ms), channel, message. A result of a newer generation is never overwritten
/// (it is only made to expire within one linger), and the counter is raised to this
/// generation (a leader elected before a Redis restart must not see its generation handed
/// out again). Foreign data in the way is replaced.
///
/// `redis.call`s: 7 (`GET`, `HGET`, `HSET`, `PEXPIRE`, `GET`, `DEL`, `PUBLISH`).
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

fn script(body: &str) -> Script {
    Script::new(&format!("{TAME}{body}"))
}

/// The real backend.
pub(crate) struct RedisBackend {
    link: Arc<Link>,
    /// The logical database of the client's URL.
    database: i64,
    hub: Arc<Hub>,
    join: Script,
    renew: Script,
    complete: Script,
    release: Script,
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
        let op_timeout = config.op_timeout;
        // The hub needs the connection to unsubscribe, and the connection's push sender
        // needs the hub: tie the knot through a weak reference set after construction.
        let slot: Arc<std::sync::OnceLock<Weak<Self>>> = Arc::new(std::sync::OnceLock::new());
        let unsubscribe_slot = Arc::clone(&slot);
        // The channel's server state is locked from the emptiness check to the end of the
        // UNSUBSCRIBE, and a new subscriber's SUBSCRIBE waits for it: the UNSUBSCRIBE can
        // never reach the server after (and so cancel) a newer SUBSCRIBE.
        let hub = Hub::new(Some(Box::new(move |channel: &str, server: ServerState| {
            let Some(backend) = unsubscribe_slot.get().and_then(Weak::upgrade) else {
                return;
            };
            let channel = channel.to_owned();
            let Ok(handle) = tokio::runtime::Handle::try_current() else {
                // No runtime to unsubscribe on (the process is shutting down).
                backend.hub.forget_if_empty(&channel, &server);
                return;
            };
            handle.spawn(async move {
                let link = Arc::clone(&backend.link);
                let name = channel.clone();
                let unsubscribe = |on: u64| async move {
                    // Only on the connection that has it: a replaced one took its
                    // subscriptions along.
                    if let Ok((id, mut conn)) = link.get().await
                        && id == on
                    {
                        let _ = tokio::time::timeout(op_timeout, conn.unsubscribe(&name)).await;
                    }
                };
                backend
                    .hub
                    .unsubscribe(&channel, &server, unsubscribe)
                    .await;
            });
        })));
        let link = Link::new(
            target,
            Arc::clone(&hub),
            op_timeout,
            (config.reconnect_min, config.reconnect_max),
            config.warn_interval,
        );
        let backend = Arc::new(Self {
            database: link.database(),
            link,
            hub,
            join: script(JOIN),
            renew: script(RENEW),
            complete: script(COMPLETE),
            release: script(RELEASE),
        });
        let _ = slot.set(Arc::downgrade(&backend));
        backend
    }

    /// Runs a script on the current connection.
    async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, BackendError> {
        let (id, mut conn) = self.link.get().await?;
        let result = invocation.invoke_async(&mut conn).await;
        self.link.check(id, result)
    }
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

    fn connection(&self) -> u64 {
        self.link.last_up()
    }

    fn timed_out(&self, connection: u64) {
        self.link.timed_out(connection);
    }

    fn answered(&self, connection: u64) {
        self.link.answered(connection);
    }

    fn reconnects(&self) -> Option<&ReconnectCounts> {
        Some(self.link.counts())
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, BackendError> {
        let link = &self.link;
        self.hub
            .subscribe(channel, |on| async move {
                let (id, mut conn) = link.get().await?;
                if on >= id {
                    // Subscribed on this connection already (or the reconnect task is
                    // subscribing it on a newer one).
                    return Ok(on);
                }
                let result = conn.subscribe(channel).await;
                link.check(id, result)?;
                Ok(id)
            })
            .await
    }

    async fn join(
        &self,
        keys: &Keys,
        token: &str,
        lease: Duration,
        limit: Duration,
        min_generation: u64,
    ) -> Result<Joined, BackendError> {
        let reply: Vec<Value> = self
            .invoke(
                &*self
                    .join
                    .key(&keys.lock)
                    .key(&keys.generation)
                    .key(&keys.result)
                    .arg(token)
                    .arg(millis(lease))
                    .arg(min_generation)
                    .arg(millis(limit)),
            )
            .await?;
        let bad = || BackendError::new(format!("unexpected join reply: {reply:?}"));
        let (kind, generation) = match reply.as_slice() {
            [kind, generation, _] => (int(kind).ok_or_else(bad)?, int(generation).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        Ok(match (kind, &reply[2]) {
            (0, Value::BulkString(envelope)) => Joined::Result(envelope.clone()),
            (1, _) => Joined::Leader(generation),
            (2, _) => Joined::Follow(generation),
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
                &*self
                    .renew
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
    ) -> Result<(), BackendError> {
        let _: i64 = self
            .invoke(
                &*self
                    .complete
                    .key(&keys.lock)
                    .key(&keys.result)
                    .key(&keys.generation)
                    .arg(lock_value)
                    .arg(generation)
                    .arg(envelope)
                    .arg(millis(linger))
                    .arg(&keys.channel)
                    .arg(message),
            )
            .await?;
        Ok(())
    }

    async fn release(
        &self,
        keys: &Keys,
        token: &str,
        message: &[u8],
    ) -> Result<bool, BackendError> {
        let released: i64 = self
            .invoke(
                &*self
                    .release
                    .key(&keys.lock)
                    .arg(token)
                    .arg(&keys.channel)
                    .arg(message),
            )
            .await?;
        Ok(released == 1)
    }

    async fn fetch(&self, keys: &Keys) -> Result<Option<Vec<u8>>, BackendError> {
        let (id, mut conn) = self.link.get().await?;
        match redis::cmd("HGET")
            .arg(&keys.result)
            .arg("v")
            .query_async(&mut conn)
            .await
        {
            // Not a hash: foreign data, which the envelope check reports as such.
            Err(e) if e.code() == Some("WRONGTYPE") => Ok(Some(Vec::new())),
            other => self.link.check(id, other),
        }
    }
}
