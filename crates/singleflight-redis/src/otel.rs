//! The fleet counters through the OpenTelemetry metrics API (feature `otel`): the calls that
//! ran their work locally and the connections replaced, each per reason, read from
//! [`RedisGroup::fleet_stats`] when the reader collects.
//!
//! | instrument | kind | unit | attributes |
//! |---|---|---|---|
//! | `singleflight.remote.fallbacks` | observable counter | `{flight}` | `singleflight.group`, `singleflight.fallback.reason` |
//! | `singleflight.remote.reconnects` | observable counter | `{connection}` | `singleflight.group`, `singleflight.reconnect.reason` |
//!
//! Names follow OpenTelemetry's general rules, as `singleflight-stats`' `OtelObserver` does
//! (whose `singleflight.group` attribute these share): dotted lowercase names, no `_total`
//! suffix, a fixed, short set of attribute values. Every reason is reported, at zero too,
//! so that a rate over a reason that has never happened yet starts from its first count.

use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

use crate::group::RedisGroup;
use crate::health::ReconnectReason;
use crate::report::FallbackReason;

/// The names of the instruments and attributes [`RedisGroup::register_otel`] registers,
/// and their units.
pub mod instruments {
    /// Observable counter (`{flight}`): flights of this process that ran their work
    /// locally instead of coalescing across the fleet, with [`GROUP`] and
    /// [`FALLBACK_REASON`]: [`FleetStats::fallbacks`](crate::FleetStats::fallbacks).
    pub const FALLBACKS: &str = "singleflight.remote.fallbacks";
    /// Observable counter (`{connection}`): connections to Redis replaced, with [`GROUP`]
    /// and [`RECONNECT_REASON`]: [`FleetStats::reconnects`](crate::FleetStats::reconnects).
    pub const RECONNECTS: &str = "singleflight.remote.reconnects";

    /// Attribute: the group's name, given at registration (the same key as
    /// `singleflight-stats`' instruments, so both can be given the same name).
    pub const GROUP: &str = "singleflight.group";
    /// Attribute: why a flight ran locally, one of
    /// [`FallbackReason::as_str`](crate::FallbackReason::as_str)'s values.
    pub const FALLBACK_REASON: &str = "singleflight.fallback.reason";
    /// Attribute: why a connection was replaced, one of
    /// [`ReconnectReason::as_str`](crate::ReconnectReason::as_str)'s values.
    pub const RECONNECT_REASON: &str = "singleflight.reconnect.reason";

    /// The unit of fallbacks: flights (one per in-process flight that reached the fleet
    /// layer; its in-process waiters shared its local run).
    pub const UNIT_FLIGHT: &str = "{flight}";
    /// The unit of reconnects.
    pub const UNIT_CONNECTION: &str = "{connection}";
}

impl<V, E> RedisGroup<V, E> {
    /// Registers, on `meter`, observable counters of this group's fallbacks and connection
    /// replacements, per reason ([`instruments`]), labelled `singleflight.group = group`.
    ///
    /// The counters read [`fleet_stats`](Self::fleet_stats) when the meter's reader
    /// collects: nothing is added to any call's path. They hold the group weakly: they do
    /// not keep it alive, and once it (and every clone) is dropped they observe nothing
    /// more. Register a group once per meter provider: each registration reports the same
    /// counts again.
    ///
    /// # Examples
    ///
    /// ```
    /// use singleflight_redis::{Config, RedisGroup};
    ///
    /// # fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// // Opening connects lazily: nothing is asked of Redis yet.
    /// let users = RedisGroup::<String>::open("redis://127.0.0.1:6379/", Config::new("users:v1"))?;
    /// let meter = opentelemetry::global::meter("my-service");
    /// users.register_otel(&meter, "users");
    /// # Ok(()) }
    /// # example().unwrap();
    /// ```
    pub fn register_otel(&self, meter: &Meter, group: impl Into<Arc<str>>) {
        let group = KeyValue::new(instruments::GROUP, group.into());
        let reason =
            |key: &'static str, value: &'static str| [group.clone(), KeyValue::new(key, value)];
        let fallbacks =
            FallbackReason::ALL.map(|r| (r, reason(instruments::FALLBACK_REASON, r.as_str())));
        let read = self.fleet_stats_reader();
        meter
            .u64_observable_counter(instruments::FALLBACKS)
            .with_unit(instruments::UNIT_FLIGHT)
            .with_description("Flights that ran their work locally instead of across the fleet")
            .with_callback(move |counter| {
                if let Some(stats) = read() {
                    for (r, attributes) in &fallbacks {
                        counter.observe(stats.fallbacks(*r), attributes);
                    }
                }
            })
            .build();
        let reconnects =
            ReconnectReason::ALL.map(|r| (r, reason(instruments::RECONNECT_REASON, r.as_str())));
        let read = self.fleet_stats_reader();
        meter
            .u64_observable_counter(instruments::RECONNECTS)
            .with_unit(instruments::UNIT_CONNECTION)
            .with_description("Connections to Redis replaced")
            .with_callback(move |counter| {
                if let Some(stats) = read() {
                    for (r, attributes) in &reconnects {
                        counter.observe(stats.reconnects(*r), attributes);
                    }
                }
            })
            .build();
    }
}
