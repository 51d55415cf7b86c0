//! Responses that outlive their flight (opt-in, [`CoalesceLayer::reuse_for`]): a response
//! whose body has ended is handed to later requests for its key while it is fresh, as a
//! shared cache would (RFC 9111 §4.2), with an `Age`.
//!
//! [`CoalesceLayer::reuse_for`]: crate::CoalesceLayer::reuse_for
//!
//! # The rules
//!
//! * **What may be reused.** A response with a status RFC 9110 §15.1 calls heuristically
//!   cacheable (`200`, `203`, `204`, `300`, `301`, `404`, `405`, `410`, `414`, `501`) unless
//!   configured otherwise; never one with `Cache-Control: no-store`, `no-cache` or
//!   `private`, one that sets a cookie, or one with `Vary: *` (whatever the sharing
//!   options say: sharing within a flight is not reuse).
//! * **For how long.** At most the layer's window, and never longer than the response's
//!   own freshness lifetime (RFC 9111 §4.2.1): `s-maxage`, else `max-age`, else `Expires`
//!   minus `Date` (an `Expires` that is not a valid date means already stale). The age
//!   counts the `Age` the response arrived with (RFC 9111 §4.2.3).
//! * **Who may have it.** The key decides, as for a flight, and `Vary` too: a request
//!   whose headers named by `Vary` differ from those of the request that fetched the
//!   response does not reuse it.
//! * **When not.** A request with `Cache-Control: no-cache` or `max-age=0` bypasses reuse
//!   (RFC 9111 §5.2.1): it joins or leads a flight, whose response then replaces the
//!   stored one.
//! * **Memory.** A response is kept whole for reuse only while it holds at most half the
//!   layer's memory budget; the table keeps at most a bounded number of responses
//!   (oldest out first, expired ones before), and expired ones go on access, on insert and
//!   with [`purge_expired`](crate::CoalesceLayer::purge_expired): no background task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::header::{AGE, CACHE_CONTROL, DATE, EXPIRES, SET_COOKIE};
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::time::Instant;

use crate::conditional;
use crate::stream::{SharedResponse, Tap};

/// The statuses reused by default: those RFC 9110 §15.1 calls heuristically cacheable.
pub(crate) const HEURISTIC: [u16; 10] = [200, 203, 204, 300, 301, 404, 405, 410, 414, 501];

/// How the layer reuses responses.
#[derive(Clone, Debug)]
pub(crate) struct ReusePolicy {
    pub(crate) window: Duration,
    pub(crate) statuses: Vec<StatusCode>,
    pub(crate) capacity: usize,
}

impl ReusePolicy {
    /// How long a response with `status` and `headers`, received now, may be reused, or
    /// `None` if it may not be.
    pub(crate) fn lifetime(&self, status: StatusCode, headers: &HeaderMap) -> Option<Reuse> {
        if !self.statuses.contains(&status) || headers.contains_key(SET_COOKIE) {
            return None;
        }
        let directives = Directives::of(headers);
        if directives.no_store || directives.no_cache || directives.private {
            return None;
        }
        if crate::vary::any(headers) {
            return None;
        }
        let age = seconds(headers.get(AGE)).unwrap_or(0);
        let lifetime = match (directives.s_maxage, directives.max_age) {
            (Some(s), _) => Some(s),
            (None, Some(m)) => Some(m),
            (None, None) => headers.get(EXPIRES).map(|expires| {
                let date = headers
                    .get(DATE)
                    .and_then(|d| conditional::http_date(d.as_bytes()));
                let expires = conditional::http_date(expires.as_bytes());
                match (expires, date) {
                    (Some(expires), Some(date)) => expires.saturating_sub(date).max(0) as u64,
                    (Some(expires), None) => {
                        expires.saturating_sub(conditional::unix_now()).max(0) as u64
                    }
                    // An invalid `Expires` means already expired (RFC 9111 §5.3).
                    (None, _) => 0,
                }
            }),
        };
        let left = match lifetime {
            Some(lifetime) => Duration::from_secs(lifetime.checked_sub(age)?),
            None => self.window,
        }
        .min(self.window);
        (!left.is_zero()).then(|| Reuse {
            until: Instant::now() + left,
            received: Instant::now(),
            age: Duration::from_secs(age),
        })
    }
}

/// When a stored response stops being fresh, and how old it was when it arrived.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reuse {
    until: Instant,
    received: Instant,
    age: Duration,
}

/// Whether a request asks not to be answered from a stored response.
pub(crate) fn bypasses(headers: &HeaderMap) -> bool {
    let directives = Directives::of(headers);
    directives.no_cache || directives.max_age == Some(0)
}

/// The `Cache-Control` directives the rules read.
#[derive(Default)]
struct Directives {
    no_store: bool,
    no_cache: bool,
    private: bool,
    max_age: Option<u64>,
    s_maxage: Option<u64>,
}

impl Directives {
    fn of(headers: &HeaderMap) -> Self {
        let mut out = Self::default();
        for value in headers.get_all(CACHE_CONTROL) {
            let Ok(value) = value.to_str() else {
                // Unreadable: treat as the most restrictive.
                out.no_store = true;
                continue;
            };
            for directive in value.split(',') {
                let (name, argument) = match directive.split_once('=') {
                    Some((name, argument)) => {
                        (name.trim(), Some(argument.trim().trim_matches('"')))
                    }
                    None => (directive.trim(), None),
                };
                let seconds = || argument.and_then(|a| a.parse::<u64>().ok());
                if name.eq_ignore_ascii_case("no-store") {
                    out.no_store = true;
                } else if name.eq_ignore_ascii_case("no-cache") {
                    out.no_cache = true;
                } else if name.eq_ignore_ascii_case("private") {
                    out.private = true;
                } else if name.eq_ignore_ascii_case("max-age") {
                    // A malformed value means stale (RFC 9111 §4.2.1).
                    out.max_age = Some(seconds().unwrap_or(0));
                } else if name.eq_ignore_ascii_case("s-maxage") {
                    out.s_maxage = Some(seconds().unwrap_or(0));
                }
            }
        }
        out
    }
}

fn seconds(value: Option<&HeaderValue>) -> Option<u64> {
    value?.to_str().ok()?.trim().parse().ok()
}

/// The stored responses of one layer, by key.
#[derive(Debug)]
pub(crate) struct Fresh {
    entries: Mutex<HashMap<Vec<u8>, Stored>>,
    capacity: usize,
}

#[derive(Debug)]
struct Stored {
    shared: Arc<SharedResponse>,
    reuse: Reuse,
    // The order of insertion: the oldest goes first when the table is full.
    order: u64,
}

/// Insertion numbers, across every table (only their order matters).
static ORDER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Fresh {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<Vec<u8>, Stored>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A tap on the stored response for `key`, if it is fresh and the request's `headers`
    /// select it (`Vary`), with the `Age` to send.
    pub(crate) fn reuse(&self, key: &[u8], headers: &HeaderMap) -> Option<(Tap, HeaderValue)> {
        let now = Instant::now();
        let mut entries = self.entries();
        let stored = entries.get(key)?;
        if stored.reuse.until <= now {
            let expired = entries.remove(key);
            drop(entries);
            drop(expired);
            return None;
        }
        if !stored.shared.selected_by(headers) {
            return None;
        }
        let shared = stored.shared.clone();
        let age = stored.reuse.age + now.duration_since(stored.reuse.received);
        drop(entries);
        let tap = Tap::reuse(shared)?;
        Some((tap, HeaderValue::from(age.as_secs())))
    }

    /// Stores `shared` for `key` (replacing what was there), making room if the table is
    /// full: expired entries first, then the oldest.
    pub(crate) fn insert(&self, key: Vec<u8>, shared: Arc<SharedResponse>, reuse: Reuse) {
        let mut evicted = Vec::new();
        let mut entries = self.entries();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let now = Instant::now();
            let expired: Vec<_> = entries
                .iter()
                .filter(|(_, s)| s.reuse.until <= now)
                .map(|(k, _)| k.clone())
                .collect();
            evicted.extend(expired.iter().filter_map(|k| entries.remove(k)));
            if entries.len() >= self.capacity {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, s)| s.order)
                    .map(|(k, _)| k.clone());
                evicted.extend(oldest.and_then(|k| entries.remove(&k)));
            }
        }
        let order = ORDER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        evicted.extend(entries.insert(
            key,
            Stored {
                shared,
                reuse,
                order,
            },
        ));
        drop(entries);
        // The responses go after the lock: dropping one releases its bytes.
        drop(evicted);
    }

    /// Drops every expired response; returns how many.
    pub(crate) fn purge_expired(&self) -> usize {
        let now = Instant::now();
        let mut entries = self.entries();
        let expired: Vec<_> = entries
            .iter()
            .filter(|(_, s)| s.reuse.until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let gone: Vec<_> = expired.iter().filter_map(|k| entries.remove(k)).collect();
        drop(entries);
        gone.len()
    }

    /// The responses stored now.
    pub(crate) fn len(&self) -> usize {
        self.entries().len()
    }
}
