//! Redis Cluster: the settings ([`Cluster`]), key slots (CRC16 of the hash tag), and the
//! slot map read from `CLUSTER SLOTS`.
//!
//! Slots are computed here rather than through the `redis` crate's cluster client: that
//! client has its own connections, reconnects and subscriptions, and the group's own
//! [`Link`](crate::link::Link) (replaced when lost or silent, one attempt at a time) is
//! then the one connection logic for a server, a Sentinel primary and a cluster node
//! alike. What the cluster adds is only routing: which node serves a slot.

use std::fmt;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, Value};

use crate::config::ConfigError;
use crate::sentinel::parse_address;

/// Number of hash slots of a Redis Cluster.
pub(crate) const SLOTS: usize = 16384;

/// Where a [`RedisGroup`](crate::RedisGroup) finds a Redis Cluster: some of its nodes'
/// addresses (seeds; one that answers is enough, and any node will do, primary or
/// replica), and credentials for every node. Pass it to
/// [`RedisGroup::open_cluster`](crate::RedisGroup::open_cluster).
///
/// The group reads the slot map (`CLUSTER SLOTS`) from a node it knows, and sends each
/// flight's commands to the primary serving the flight's slot (a flight's keys share a
/// hash tag, so each script touches one slot). Waiters wait on **sharded pub/sub**
/// (`SSUBSCRIBE` on that primary; leaders `SPUBLISH`), so a result goes to one shard, not
/// to every node. `MOVED` and `ASK` redirections are followed, `TRYAGAIN` is retried
/// within the command's deadline, and the map is read again when it proved stale or a
/// node went away.
///
/// ```no_run
/// use singleflight_redis::{Cluster, Config, RedisGroup};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let cluster = Cluster::new(["10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"])
///     .auth(Some("app"), "app password");
/// let users = RedisGroup::<String>::open_cluster(&cluster, Config::new("users:v1"))?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cluster {
    seeds: Vec<String>,
    auth: Option<(Option<String>, String)>,
    #[cfg(feature = "tls")]
    tls: bool,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = self
            .auth
            .as_ref()
            .map(|(user, _)| format!("{}:<redacted>", user.as_deref().unwrap_or("")));
        let mut debug = f.debug_struct("Cluster");
        debug.field("seeds", &self.seeds).field("auth", &auth);
        #[cfg(feature = "tls")]
        debug.field("tls", &self.tls);
        debug.finish()
    }
}

const SEEDS: &str = "one or more cluster node addresses as host:port (IPv6 as [addr]:port)";

impl Cluster {
    /// The cluster that `seeds` (`"host:port"` each, `"[::1]:6379"` for IPv6) belong to;
    /// no credentials.
    pub fn new<I, S>(seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            seeds: seeds.into_iter().map(Into::into).collect(),
            auth: None,
            #[cfg(feature = "tls")]
            tls: false,
        }
    }

    /// Credentials for every node: their `requirepass`, or an ACL user with `username`.
    /// Refused credentials are reported as
    /// [`FallbackReason::AuthFailed`](crate::FallbackReason::AuthFailed).
    #[must_use]
    pub fn auth(mut self, username: Option<&str>, password: &str) -> Self {
        self.auth = Some((username.map(str::to_owned), password.to_owned()));
        self
    }

    /// TLS to every node, each certificate checked against the platform's root
    /// certificates (as `rediss://` URLs are). Not tested against a TLS cluster here; a
    /// private CA or client certificates are not supported on a cluster yet.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    #[must_use]
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Checks the settings and builds how nodes are reached.
    pub(crate) fn topology(&self) -> Result<Topology, ConfigError> {
        if self.seeds.is_empty() {
            return Err(ConfigError::new("cluster seeds", SEEDS, "none"));
        }
        let mut settings = RedisConnectionInfo::default();
        if let Some((user, password)) = &self.auth {
            if let Some(user) = user {
                settings = settings.set_username(user);
            }
            settings = settings.set_password(password);
        }
        let topology = Topology {
            seeds: Vec::new(),
            settings,
            #[cfg(feature = "tls")]
            tls: self.tls,
        };
        let seeds = self
            .seeds
            .iter()
            .map(|seed| {
                let (host, port) = parse_address(seed)
                    .ok_or_else(|| ConfigError::new("cluster seeds", SEEDS, seed))?;
                topology
                    .info(&host, port)
                    .map_err(|_| ConfigError::new("cluster seeds", SEEDS, seed))?;
                Ok(address(&host, port))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Topology { seeds, ..topology })
    }
}

/// A node's name, `host:port` (`[v6]:port`), as `MOVED` and `ASK` name it.
pub(crate) fn address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// How the nodes of one cluster are reached.
pub(crate) struct Topology {
    /// The seeds' addresses (`host:port`).
    pub(crate) seeds: Vec<String>,
    /// Credentials (RESP3 is set by the link).
    settings: RedisConnectionInfo,
    #[cfg(feature = "tls")]
    tls: bool,
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("seeds", &self.seeds)
            .finish_non_exhaustive()
    }
}

impl Topology {
    /// How to connect to the node at `address` (`host:port`).
    pub(crate) fn node(&self, address: &str) -> redis::RedisResult<ConnectionInfo> {
        let (host, port) = parse_address(address).ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "not a node address",
                address.to_owned(),
            ))
        })?;
        self.info(&host, port)
    }

    fn info(&self, host: &str, port: u16) -> redis::RedisResult<ConnectionInfo> {
        #[cfg(feature = "tls")]
        let addr = if self.tls {
            ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.to_owned(), port)
        };
        #[cfg(not(feature = "tls"))]
        let addr = ConnectionAddr::Tcp(host.to_owned(), port);
        Ok(addr
            .into_connection_info()?
            .set_redis_settings(self.settings.clone()))
    }
}

/// The slot of `key`: CRC16 (XMODEM) of its hash tag (the text between the first `{` and
/// the next `}`, if not empty), else of the whole key, modulo 16384.
pub(crate) fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    let mut crc: u16 = 0;
    for &byte in tagged.unwrap_or(key) {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    #[allow(clippy::cast_possible_truncation, reason = "SLOTS fits in u16")]
    let slots = SLOTS as u16;
    crc % slots
}

/// The primaries' slot ranges in a `CLUSTER SLOTS` reply: `(first, last, address)`. A
/// primary named with an empty host (the node asked does not know its own address) is
/// `asked`'s host.
pub(crate) fn parse_slots(reply: &Value, asked: &str) -> Option<Vec<(u16, u16, String)>> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let asked_host = parse_address(asked).map(|(host, _)| host);
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(items) = range else {
            return None;
        };
        let [
            Value::Int(first),
            Value::Int(last),
            Value::Array(primary),
            ..,
        ] = items.as_slice()
        else {
            return None;
        };
        let host = match primary.first()? {
            Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok()?,
            Value::SimpleString(text) => text.clone(),
            _ => return None,
        };
        let Value::Int(port) = primary.get(1)? else {
            return None;
        };
        let host = if host.is_empty() || host == "?" {
            asked_host.clone()?
        } else {
            host
        };
        let (first, last, port) = (
            u16::try_from(*first).ok()?,
            u16::try_from(*last).ok()?,
            u16::try_from(*port).ok()?,
        );
        if first > last || usize::from(last) >= SLOTS {
            return None;
        }
        out.push((first, last, address(&host, port)));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_crc16_of_the_hash_tag() {
        // The values Redis's own CLUSTER KEYSLOT gives.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        // An empty tag, or no closing brace: the whole key.
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
    }

    #[test]
    fn bad_seeds_are_named() {
        let none: [&str; 0] = [];
        assert_eq!(
            Cluster::new(none).topology().unwrap_err().setting(),
            "cluster seeds"
        );
        let error = Cluster::new(["127.0.0.1:7000", "nope"])
            .topology()
            .unwrap_err();
        assert_eq!(error.setting(), "cluster seeds");
        assert!(error.to_string().contains("\"nope\""), "{error}");
        let topology = Cluster::new(["127.0.0.1:7000", " [::1]:7001 "])
            .topology()
            .unwrap();
        assert_eq!(topology.seeds, ["127.0.0.1:7000", "[::1]:7001"]);
    }

    #[test]
    fn passwords_are_not_in_debug_output() {
        let cluster = Cluster::new(["127.0.0.1:1"]).auth(Some("app"), "s3cret");
        let text = format!("{cluster:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("app:<redacted>"), "{text}");
    }

    #[test]
    fn cluster_slots_replies_parse() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 7000),
                node("127.0.0.1", 7003),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node("", 7001)]),
        ]);
        assert_eq!(
            parse_slots(&reply, "10.0.0.9:7001"),
            Some(vec![
                (0, 5460, "127.0.0.1:7000".to_owned()),
                (5461, 16383, "10.0.0.9:7001".to_owned()),
            ])
        );
        let bad = Value::Array(vec![Value::Array(vec![
            Value::Int(5),
            Value::Int(16384),
            node("h", 1),
        ])]);
        assert_eq!(parse_slots(&bad, "h:1"), None);
        assert_eq!(parse_slots(&Value::Nil, "h:1"), None);
    }
}
