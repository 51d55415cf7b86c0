//! Finding the primary through Redis Sentinel: the settings ([`Sentinel`]), asking the
//! sentinels for the current primary before every connection attempt, checking `ROLE` on
//! the new connection, and following the sentinels' `+switch-master` announcements.
//!
//! The sentinels are asked over short-lived plain connections of the `redis` crate
//! (`SENTINEL get-master-addr-by-name`), in order; the one that answered moves to the
//! front, as the Sentinel client guidelines ask. Nothing is cached: every attempt asks
//! again, so a reconnect after a failover finds the new primary.

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo,
    ProtocolVersion, RedisConnectionInfo, Value,
};

use crate::backend::BackendError;
use crate::config::ConfigError;
use crate::link::{error, tcp_settings};

/// Where a [`RedisGroup`](crate::RedisGroup) finds its primary through Redis Sentinel:
/// the sentinels' addresses, the service (master) name they monitor, and credentials for
/// the sentinels and for the primary. Pass it to
/// [`RedisGroup::open_sentinel`](crate::RedisGroup::open_sentinel).
///
/// Before every connection attempt the group asks the sentinels, one after another, for
/// the service's current primary (`SENTINEL get-master-addr-by-name`), connects to it, and
/// checks with `ROLE` that it is a primary (a replica is not: the attempt fails and the
/// next one asks again). A connection whose server answers `READONLY` (a primary demoted
/// after a failover) is replaced, and so is one to a primary the sentinels announce they
/// have replaced (`+switch-master`, followed on one sentinel at a time).
///
/// ```no_run
/// use singleflight_redis::{Config, RedisGroup, Sentinel};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let sentinel = Sentinel::new("mymaster", ["10.0.0.1:26379", "10.0.0.2:26379", "10.0.0.3:26379"])
///     .sentinel_auth(None, "sentinel password")
///     .primary_auth(Some("app"), "app password")
///     .database(2);
/// let users = RedisGroup::<String>::open_sentinel(&sentinel, Config::new("users:v1"))?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Sentinel {
    service: String,
    sentinels: Vec<String>,
    sentinel_auth: Option<(Option<String>, String)>,
    primary_auth: Option<(Option<String>, String)>,
    database: i64,
    #[cfg(feature = "tls")]
    tls: bool,
}

impl fmt::Debug for Sentinel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = |a: &Option<(Option<String>, String)>| {
            a.as_ref()
                .map(|(user, _)| format!("{}:<redacted>", user.as_deref().unwrap_or("")))
        };
        let mut debug = f.debug_struct("Sentinel");
        debug
            .field("service", &self.service)
            .field("sentinels", &self.sentinels)
            .field("sentinel_auth", &auth(&self.sentinel_auth))
            .field("primary_auth", &auth(&self.primary_auth))
            .field("database", &self.database);
        #[cfg(feature = "tls")]
        debug.field("tls", &self.tls);
        debug.finish()
    }
}

const ADDRESSES: &str = "one or more sentinel addresses as host:port (IPv6 as [addr]:port)";

/// `host:port` or `[v6]:port`.
pub(crate) fn parse_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.trim().rsplit_once(':')?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    let port: u16 = port.parse().ok()?;
    (!host.is_empty() && port != 0).then(|| (host.to_owned(), port))
}

impl Sentinel {
    /// The primary of `service` (the name in the sentinels' `sentinel monitor`), found
    /// through `sentinels` (`"host:port"` each, `"[::1]:26379"` for IPv6); no credentials,
    /// database 0.
    pub fn new<I, S>(service: impl Into<String>, sentinels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            service: service.into(),
            sentinels: sentinels.into_iter().map(Into::into).collect(),
            sentinel_auth: None,
            primary_auth: None,
            database: 0,
            #[cfg(feature = "tls")]
            tls: false,
        }
    }

    /// Credentials for the sentinels (their `requirepass`, or an ACL user with `username`).
    #[must_use]
    pub fn sentinel_auth(mut self, username: Option<&str>, password: &str) -> Self {
        self.sentinel_auth = Some((username.map(str::to_owned), password.to_owned()));
        self
    }

    /// Credentials for the primary (and any server promoted in its place): its
    /// `requirepass`, or an ACL user with `username`. Refused credentials are reported as
    /// [`FallbackReason::AuthFailed`](crate::FallbackReason::AuthFailed).
    #[must_use]
    pub fn primary_auth(mut self, username: Option<&str>, password: &str) -> Self {
        self.primary_auth = Some((username.map(str::to_owned), password.to_owned()));
        self
    }

    /// The logical database on the primary (default 0).
    #[must_use]
    pub fn database(mut self, database: i64) -> Self {
        self.database = database;
        self
    }

    /// TLS to the sentinels and to the primary, each certificate checked against the
    /// platform's root certificates (as `rediss://` URLs are). Not tested against a TLS
    /// Sentinel deployment here; a private CA or client certificates are not supported
    /// through Sentinel yet.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    #[must_use]
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Checks the settings and builds what asks the sentinels.
    pub(crate) fn discovery(&self) -> Result<Discovery, ConfigError> {
        if self.service.trim().is_empty() || self.service.contains(char::is_whitespace) {
            return Err(ConfigError::new(
                "sentinel service",
                "the non-empty name the sentinels monitor, without spaces",
                &self.service,
            ));
        }
        if self.sentinels.is_empty() {
            return Err(ConfigError::new("sentinel addresses", ADDRESSES, "none"));
        }
        if self.database < 0 {
            return Err(ConfigError::new(
                "sentinel database",
                "0 or more",
                self.database,
            ));
        }
        let settings = |auth: &Option<(Option<String>, String)>| {
            let mut settings = RedisConnectionInfo::default();
            if let Some((user, password)) = auth {
                if let Some(user) = user {
                    settings = settings.set_username(user);
                }
                settings = settings.set_password(password);
            }
            settings
        };
        let sentinel_settings = settings(&self.sentinel_auth).set_skip_set_lib_name();
        let sentinels = self
            .sentinels
            .iter()
            .map(|address| {
                let (host, port) = parse_address(address)
                    .ok_or_else(|| ConfigError::new("sentinel addresses", ADDRESSES, address))?;
                Ok(SentinelAddress {
                    name: address.trim().to_owned(),
                    info: self
                        .address(host, port)
                        .into_connection_info()
                        .map_err(|_| ConfigError::new("sentinel addresses", ADDRESSES, address))?
                        .set_redis_settings(sentinel_settings.clone())
                        .set_tcp_settings(tcp_settings()),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Discovery {
            service: self.service.clone(),
            sentinels: Mutex::new(sentinels),
            primary: settings(&self.primary_auth)
                .set_db(self.database)
                .set_protocol(ProtocolVersion::RESP3),
            #[cfg(feature = "tls")]
            tls: self.tls,
        })
    }

    fn address(&self, host: String, port: u16) -> ConnectionAddr {
        #[cfg(feature = "tls")]
        if self.tls {
            return ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            };
        }
        ConnectionAddr::Tcp(host, port)
    }
}

#[derive(Clone)]
struct SentinelAddress {
    /// As configured, for messages.
    name: String,
    info: ConnectionInfo,
}

/// Asks the sentinels for the primary and connects to it (see the module docs).
pub(crate) struct Discovery {
    service: String,
    /// In the order to ask them: the last one that answered first.
    sentinels: Mutex<Vec<SentinelAddress>>,
    /// How to talk to the primary: credentials, database, RESP3.
    primary: RedisConnectionInfo,
    #[cfg(feature = "tls")]
    tls: bool,
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// A connection to a sentinel, for one question (or the `+switch-master` subscription).
async fn open_sentinel(
    sentinel: &SentinelAddress,
    config: &AsyncConnectionConfig,
) -> Result<MultiplexedConnection, BackendError> {
    let client = Client::open(sentinel.info.clone()).map_err(|e| error(&e))?;
    client
        .get_multiplexed_async_connection_with_config(config)
        .await
        .map_err(|e| error(&e))
}

impl Discovery {
    pub(crate) fn database(&self) -> i64 {
        self.primary.db()
    }

    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    fn sentinels(&self) -> Vec<SentinelAddress> {
        self.sentinels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Moves the sentinel named `name` to the front of the list.
    fn answered(&self, name: &str) {
        let mut sentinels = self
            .sentinels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = sentinels.iter().position(|s| s.name == name) {
            sentinels[..=at].rotate_right(1);
        }
    }

    /// The service's primary as the first sentinel that answers names it, each sentinel
    /// given `timeout` to connect and `timeout` to answer.
    pub(crate) async fn locate(&self, timeout: Duration) -> Result<(String, u16), BackendError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let mut failures = Vec::new();
        let mut auth = false;
        for sentinel in self.sentinels() {
            let answer = async {
                let mut connection = open_sentinel(&sentinel, &config).await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.service)
                    .query_async::<Option<(String, u16)>>(&mut connection)
                    .await
                    .map_err(|e| error(&e))
            };
            match tokio::time::timeout(timeout * 2, answer).await {
                Ok(Ok(Some(primary))) => {
                    self.answered(&sentinel.name);
                    return Ok(primary);
                }
                Ok(Ok(None)) => failures.push(format!(
                    "{} knows no primary named {:?}",
                    sentinel.name, self.service
                )),
                Ok(Err(e)) => {
                    auth |= e.auth;
                    failures.push(format!("{}: {e}", sentinel.name));
                }
                Err(_) => failures.push(format!("{}: no answer within {timeout:?}", sentinel.name)),
            }
        }
        let mut error = BackendError::new(format!(
            "no sentinel named the primary of {:?} ({})",
            self.service,
            failures.join("; ")
        ));
        // Refused sentinel credentials are reported as such (a wrong setting, not an
        // outage).
        error.auth = auth;
        Err(error)
    }

    /// A connection to the service's current primary, checked with `ROLE`, and its
    /// address (`host:port`).
    pub(crate) async fn connect(
        &self,
        config: &AsyncConnectionConfig,
        timeout: Duration,
    ) -> Result<(MultiplexedConnection, String), BackendError> {
        let (host, port) = self.locate(timeout).await?;
        let name = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        #[cfg(feature = "tls")]
        let addr = if self.tls {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host, port)
        };
        #[cfg(not(feature = "tls"))]
        let addr = ConnectionAddr::Tcp(host, port);
        let info = addr
            .into_connection_info()
            .map_err(|e| error(&e))?
            .set_redis_settings(self.primary.clone())
            .set_tcp_settings(tcp_settings());
        let client = Client::open(info).map_err(|e| error(&e))?;
        let mut connection = client
            .get_multiplexed_async_connection_with_config(config)
            .await
            .map_err(|e| error(&e))?;
        let role = tokio::time::timeout(
            timeout,
            redis::cmd("ROLE").query_async::<Value>(&mut connection),
        )
        .await
        .map_err(|_| {
            BackendError::new(format!("ROLE got no answer from {name} within {timeout:?}"))
        })?
        .map_err(|e| error(&e))?;
        match role_of(&role) {
            Some("master") => Ok((connection, name)),
            role => Err(BackendError::new(format!(
                "the sentinels named {name} as the primary of {:?}, but it is {} (a failover is under way): asking again",
                self.service,
                role.map_or_else(|| "not a primary".to_owned(), |r| format!("a {r}"))
            ))),
        }
    }

    /// A RESP3 connection to one of the sentinels (tried in order), subscribed to
    /// `+switch-master`, whose messages go to `config`'s push sender; and the sentinel's
    /// name.
    pub(crate) async fn watch(
        &self,
        config: &AsyncConnectionConfig,
        timeout: Duration,
    ) -> Result<(MultiplexedConnection, String), BackendError> {
        let mut last = BackendError::new("no sentinel configured");
        for sentinel in self.sentinels() {
            let mut info = sentinel.info.clone();
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            info = info.set_redis_settings(settings);
            let subscribed = async {
                let client = Client::open(info).map_err(|e| error(&e))?;
                let mut connection = client
                    .get_multiplexed_async_connection_with_config(config)
                    .await
                    .map_err(|e| error(&e))?;
                connection
                    .subscribe("+switch-master")
                    .await
                    .map_err(|e| error(&e))?;
                Ok::<_, BackendError>(connection)
            };
            match tokio::time::timeout(timeout * 2, subscribed).await {
                Ok(Ok(connection)) => return Ok((connection, sentinel.name)),
                Ok(Err(e)) => last = e,
                Err(_) => last = BackendError::new(format!("{}: no answer", sentinel.name)),
            }
        }
        Err(last)
    }
}

/// The role in a `ROLE` reply (`master`, `slave`, `sentinel`).
fn role_of(reply: &Value) -> Option<&str> {
    let Value::Array(items) = reply else {
        return None;
    };
    match items.first()? {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

/// The new primary (`host:port`) in a `+switch-master` message
/// (`<service> <old host> <old port> <new host> <new port>`) about `service`.
pub(crate) fn switched(message: &[u8], service: &str) -> Option<String> {
    let text = std::str::from_utf8(message).ok()?;
    let parts: Vec<&str> = text.split(' ').collect();
    match parts.as_slice() {
        [name, _, _, host, port] if *name == service => Some(if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_address("127.0.0.1:26379"),
            Some(("127.0.0.1".to_owned(), 26379))
        );
        assert_eq!(
            parse_address(" sentinel-0.local:5000 "),
            Some(("sentinel-0.local".to_owned(), 5000))
        );
        assert_eq!(
            parse_address("[::1]:26379"),
            Some(("::1".to_owned(), 26379))
        );
        for bad in [
            "",
            "host",
            "host:",
            ":26379",
            "host:0",
            "host:99999",
            "::1:26379",
            "[::1:1",
        ] {
            assert_eq!(parse_address(bad), None, "{bad}");
        }
        let error = Sentinel::new("mymaster", ["127.0.0.1:26379", "nope"])
            .discovery()
            .unwrap_err();
        assert_eq!(error.setting(), "sentinel addresses");
        assert!(error.to_string().contains("\"nope\""), "{error}");
        let none: [&str; 0] = [];
        assert_eq!(
            Sentinel::new("mymaster", none)
                .discovery()
                .unwrap_err()
                .setting(),
            "sentinel addresses"
        );
        for service in ["", "my master"] {
            assert_eq!(
                Sentinel::new(service, ["127.0.0.1:26379"])
                    .discovery()
                    .unwrap_err()
                    .setting(),
                "sentinel service"
            );
        }
        assert_eq!(
            Sentinel::new("m", ["127.0.0.1:1"])
                .database(-1)
                .discovery()
                .unwrap_err()
                .setting(),
            "sentinel database"
        );
    }

    #[test]
    fn passwords_are_not_in_debug_output() {
        let sentinel = Sentinel::new("m", ["127.0.0.1:1"])
            .sentinel_auth(None, "s3cret-sentinel")
            .primary_auth(Some("app"), "s3cret-primary");
        let text = format!("{sentinel:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("app:<redacted>"), "{text}");
    }

    #[test]
    fn the_answering_sentinel_moves_to_the_front() {
        let discovery = Sentinel::new("m", ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
            .discovery()
            .unwrap();
        discovery.answered("127.0.0.1:3");
        let names: Vec<String> = discovery.sentinels().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["127.0.0.1:3", "127.0.0.1:1", "127.0.0.1:2"]);
    }

    #[test]
    fn roles_and_switch_messages_parse() {
        let reply = Value::Array(vec![Value::BulkString(b"slave".to_vec())]);
        assert_eq!(role_of(&reply), Some("slave"));
        assert_eq!(role_of(&Value::Nil), None);
        assert_eq!(
            switched(b"mymaster 127.0.0.1 6379 127.0.0.1 6380", "mymaster").as_deref(),
            Some("127.0.0.1:6380")
        );
        assert_eq!(
            switched(b"other 127.0.0.1 6379 127.0.0.1 6380", "mymaster"),
            None
        );
        assert_eq!(switched(b"mymaster", "mymaster"), None);
    }
}
