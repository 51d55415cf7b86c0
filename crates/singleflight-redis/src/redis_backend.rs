//! [`Backend`] on a real Redis: one RESP3 `ConnectionManager` per group for commands and
//! subscriptions alike (reconnects and resubscribes by itself), and three Lua scripts.
//!
//! Every script touches only keys of one flight, which share a hash tag, so they stay
//! single-slot; channels are not keys. The scripts use nothing newer than Redis 2.6.

use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ProtocolVersion, PushInfo, PushKind, RedisResult, Script, Value};

use crate::backend::{Backend, BackendError, Hub, Joined, Subscription};
use crate::envelope::Keys;

/// KEYS: lock, generation counter, result. ARGV: token, lease (ms), minimum generation
/// (0: never reuse a stored result). Returns `{kind, generation, envelope}` with kind
/// 0 = result, 1 = leader, 2 = follower.
const JOIN: &str = r"
local min = tonumber(ARGV[3])
if min > 0 then
  local r = redis.call('HMGET', KEYS[3], 'g', 'v')
  if r[1] and tonumber(r[1]) >= min then return {0, tonumber(r[1]), r[2]} end
end
local l = redis.call('GET', KEYS[1])
if l then
  local sep = string.find(l, ':', 1, true)
  local g = tonumber(string.sub(l, 1, sep - 1))
  if string.sub(l, sep + 1) == ARGV[1] then return {1, g, ''} end
  return {2, g, ''}
end
-- After a restart the counter may be behind generations still in flight: never reuse one.
if min > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') < min then
  redis.call('SET', KEYS[2], min)
end
local g = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 86400000)
redis.call('SET', KEYS[1], g .. ':' .. ARGV[1], 'PX', ARGV[2])
return {1, g, ''}
";

/// KEYS: lock. ARGV: lock value, lease (ms). Returns 1 if renewed.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// KEYS: lock, result, generation counter. ARGV: lock value, generation, envelope,
/// linger (ms), channel, message. A result of a newer generation is never overwritten,
/// and the counter is raised to this generation (a leader elected before a Redis restart
/// must not see its generation handed out again).
const COMPLETE: &str = r"
if tonumber(redis.call('GET', KEYS[3]) or '0') < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[3], ARGV[2], 'PX', 86400000)
end
local cur = redis.call('HGET', KEYS[2], 'g')
if (not cur) or tonumber(cur) <= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[2], 'g', ARGV[2], 'v', ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
";

/// KEYS: lock. ARGV: lock value, channel, message.
const ABANDON: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
";

/// The real backend.
pub(crate) struct RedisBackend {
    conn: ConnectionManager,
    hub: Arc<Hub>,
    join: Script,
    renew: Script,
    complete: Script,
    abandon: Script,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend").finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn err(e: redis::RedisError) -> BackendError {
    BackendError {
        timeout: e.is_timeout(),
        message: e.to_string(),
    }
}

impl RedisBackend {
    /// Connects lazily (the first command connects), over RESP3 whatever the URL says.
    pub(crate) fn new(client: &Client, op_timeout: Duration) -> RedisResult<Arc<Self>> {
        let info = client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = Client::open(info.set_redis_settings(settings))?;

        // The hub needs the connection to unsubscribe, and the connection's push sender
        // needs the hub: tie the knot through a weak reference set after construction.
        let slot: Arc<std::sync::OnceLock<Weak<Self>>> = Arc::new(std::sync::OnceLock::new());
        let unsubscribe_slot = Arc::clone(&slot);
        let hub = Hub::new(Box::new(move |channel: &str| {
            let Some(backend) = unsubscribe_slot.get().and_then(Weak::upgrade) else {
                return;
            };
            let channel = channel.to_owned();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    if backend.hub.has_subscribers(&channel) {
                        return;
                    }
                    let mut conn = backend.conn.clone();
                    let _ = tokio::time::timeout(op_timeout, conn.unsubscribe(&channel)).await;
                });
            }
        }));
        let push_hub = Arc::downgrade(&hub);
        let push = move |info: PushInfo| -> Result<(), ()> {
            let Some(hub) = push_hub.upgrade() else {
                return Err(());
            };
            match info.kind {
                PushKind::Message => {
                    if let [Value::BulkString(channel), Value::BulkString(payload)] =
                        info.data.as_slice()
                    {
                        hub.deliver(&String::from_utf8_lossy(channel), payload);
                    }
                }
                PushKind::Disconnection => hub.disconnected(),
                _ => {}
            }
            Ok(())
        };
        let config = ConnectionManagerConfig::new()
            .set_push_sender(push)
            .set_automatic_resubscription()
            .set_response_timeout(Some(op_timeout))
            .set_connection_timeout(Some(op_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        let backend = Arc::new(Self {
            conn,
            hub,
            join: Script::new(JOIN),
            renew: Script::new(RENEW),
            complete: Script::new(COMPLETE),
            abandon: Script::new(ABANDON),
        });
        let _ = slot.set(Arc::downgrade(&backend));
        Ok(backend)
    }
}

fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

impl Backend for Arc<RedisBackend> {
    async fn subscribe(&self, channel: &str) -> Result<Subscription, BackendError> {
        // Register first: a message that arrives right after the server's confirmation
        // must find us.
        let subscription = self.hub.register(channel);
        let mut conn = self.conn.clone();
        conn.subscribe(channel).await.map_err(err)?;
        Ok(subscription)
    }

    async fn join(
        &self,
        keys: &Keys,
        token: &str,
        lease: Duration,
        min_generation: u64,
    ) -> Result<Joined, BackendError> {
        let mut conn = self.conn.clone();
        let reply: Vec<Value> = self
            .join
            .key(&keys.lock)
            .key(&keys.generation)
            .key(&keys.result)
            .arg(token)
            .arg(millis(lease))
            .arg(min_generation)
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        let bad = || BackendError::new(format!("unexpected join reply: {reply:?}"));
        let (kind, generation) = match reply.as_slice() {
            [kind, generation, _] => (int(kind).ok_or_else(bad)?, int(generation).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        Ok(match (kind, &reply[2]) {
            (0, Value::BulkString(envelope)) => Joined::Result(envelope.clone()),
            (1, _) => Joined::Leader(generation),
            (2, _) => Joined::Follow(generation),
            _ => return Err(bad()),
        })
    }

    async fn renew(
        &self,
        keys: &Keys,
        lock_value: &str,
        lease: Duration,
    ) -> Result<bool, BackendError> {
        let mut conn = self.conn.clone();
        let renewed: i64 = self
            .renew
            .key(&keys.lock)
            .arg(lock_value)
            .arg(millis(lease))
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
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
        let mut conn = self.conn.clone();
        let _: i64 = self
            .complete
            .key(&keys.lock)
            .key(&keys.result)
            .key(&keys.generation)
            .arg(lock_value)
            .arg(generation)
            .arg(envelope)
            .arg(millis(linger))
            .arg(&keys.channel)
            .arg(message)
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn abandon(
        &self,
        keys: &Keys,
        lock_value: &str,
        message: &[u8],
    ) -> Result<(), BackendError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .abandon
            .key(&keys.lock)
            .arg(lock_value)
            .arg(&keys.channel)
            .arg(message)
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn fetch(&self, keys: &Keys) -> Result<Option<Vec<u8>>, BackendError> {
        let mut conn = self.conn.clone();
        redis::cmd("HGET")
            .arg(&keys.result)
            .arg("v")
            .query_async(&mut conn)
            .await
            .map_err(err)
    }
}
