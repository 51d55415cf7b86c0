//! `RedisGroup::register_otel` read back through the OpenTelemetry SDK's in-memory
//! exporter: the exact instruments, units and attributes, and the values of
//! `fleet_stats`: fallbacks with Redis unreachable (no server needed), reconnects against
//! a real `redis-server` (skipped without one, unless `CI` is set).
#![cfg(feature = "otel")]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use singleflight_redis::otel::instruments;
use singleflight_redis::{Config, FallbackReason, FleetStats, ReconnectReason, RedisGroup};
use support::Server;

type Attributes = BTreeMap<String, String>;

/// Instrument name -> (unit, counter value by attributes).
type Export = BTreeMap<String, (String, BTreeMap<Attributes, u64>)>;

struct Sdk {
    provider: SdkMeterProvider,
    exporter: InMemoryMetricExporter,
}

impl Sdk {
    fn new() -> Self {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        Self { provider, exporter }
    }

    fn register<V, E>(&self, group: &RedisGroup<V, E>, name: &str) {
        group.register_otel(&self.provider.meter("singleflight-redis-test"), name);
    }

    /// Collects now and flattens the latest export (counters only: all there is).
    fn collect(&self) -> Export {
        self.exporter.reset();
        self.provider.force_flush().unwrap();
        let exports = self.exporter.get_finished_metrics().unwrap();
        let mut export = Export::new();
        for scope in exports
            .last()
            .expect("one export per flush")
            .scope_metrics()
        {
            for metric in scope.metrics() {
                let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric.data() else {
                    panic!("{} is not a u64 counter", metric.name());
                };
                assert!(sum.is_monotonic(), "{} is a counter", metric.name());
                let points = sum
                    .data_points()
                    .map(|p| {
                        let attributes = p
                            .attributes()
                            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                            .collect();
                        (attributes, p.value())
                    })
                    .collect();
                export.insert(metric.name().to_owned(), (metric.unit().to_owned(), points));
            }
        }
        export
    }
}

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The points `fleet_stats` says both instruments must report for group `name`: every
/// reason, zeros included.
fn expected(stats: &FleetStats, name: &str) -> Export {
    let group = (instruments::GROUP, name);
    let fallbacks = FALLBACK_REASONS
        .iter()
        .map(|&r| {
            let key = attrs(&[group, (instruments::FALLBACK_REASON, r.as_str())]);
            (key, stats.fallbacks(r))
        })
        .collect();
    let reconnects = RECONNECT_REASONS
        .iter()
        .map(|&r| {
            let key = attrs(&[group, (instruments::RECONNECT_REASON, r.as_str())]);
            (key, stats.reconnects(r))
        })
        .collect();
    Export::from([
        (
            instruments::FALLBACKS.to_owned(),
            ("{flight}".to_owned(), fallbacks),
        ),
        (
            instruments::RECONNECTS.to_owned(),
            ("{connection}".to_owned(), reconnects),
        ),
    ])
}

const RECONNECT_REASONS: [ReconnectReason; 5] = [
    ReconnectReason::Closed,
    ReconnectReason::Timeouts,
    ReconnectReason::HealthCheck,
    ReconnectReason::ReadOnly,
    ReconnectReason::Failover,
];

const FALLBACK_REASONS: [FallbackReason; 9] = [
    FallbackReason::RedisUnavailable,
    FallbackReason::RedisTimeout,
    FallbackReason::CircuitOpen,
    FallbackReason::WaitTimeout,
    FallbackReason::Decode,
    FallbackReason::TooLarge,
    FallbackReason::AuthFailed,
    FallbackReason::ForeignData,
    FallbackReason::Unverified,
];

#[tokio::test]
async fn fallbacks_per_reason_with_redis_unreachable() {
    let sdk = Sdk::new();
    // Nothing listens on port 1: every flight runs locally.
    let config = Config::new("otel").op_timeout(Duration::from_millis(50));
    let group = RedisGroup::<u64>::open("redis://127.0.0.1:1/", config).expect("group");
    sdk.register(&group, "users");

    let before = sdk.collect();
    assert_eq!(before, expected(&group.fleet_stats(), "users"));
    let total = |export: &Export| -> u64 { export[instruments::FALLBACKS].1.values().sum() };
    assert_eq!(total(&before), 0, "every reason reported, at zero");

    for key in ["a", "b", "c"] {
        assert_eq!(group.call(key, || async { 7 }).await, Ok(7));
    }
    let stats = group.fleet_stats();
    assert_eq!(stats.total_fallbacks(), 3, "{stats:?}");
    let export = sdk.collect();
    assert_eq!(export, expected(&stats, "users"));
    assert_eq!(total(&export), 3);
    // Refused connections are attempts that failed, not connections replaced.
    assert!(
        export[instruments::RECONNECTS].1.values().all(|&n| n == 0),
        "{export:?}"
    );
    for (name, (_, points)) in &export {
        for attributes in points.keys() {
            assert_eq!(attributes.len(), 2, "{name}: the group and a reason");
        }
    }

    // The instruments hold the group weakly: one dropped before any collection never
    // reports.
    let gone = RedisGroup::<u64>::open("redis://127.0.0.1:1/", Config::new("gone")).unwrap();
    sdk.register(&gone, "gone");
    drop(gone);
    let after = sdk.collect();
    assert_eq!(
        after,
        expected(&stats, "users"),
        "no point of the dropped group"
    );
}

/// Kills every client of `server` but the test's own connection.
async fn kill_other_clients(conn: &mut redis::aio::MultiplexedConnection) -> usize {
    let own: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(conn)
        .await
        .unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(conn)
        .await
        .unwrap();
    let mut killed = 0;
    for id in list.lines().filter_map(|line| {
        line.split(' ')
            .find_map(|f| f.strip_prefix("id="))
            .and_then(|id| id.parse::<i64>().ok())
    }) {
        if id != own {
            let n: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .query_async(conn)
                .await
                .unwrap();
            killed += usize::try_from(n).unwrap();
        }
    }
    killed
}

#[tokio::test]
async fn reconnects_per_reason_when_the_server_closes_the_connection() {
    let Some(server) = Server::start() else {
        return;
    };
    let sdk = Sdk::new();
    let group = RedisGroup::<u64>::open(&server.url(), Config::new("otel")).expect("group");
    sdk.register(&group, "users");
    assert_eq!(group.call("k", || async { 1 }).await, Ok(1));
    assert_eq!(group.fleet_stats().total_reconnects(), 0);

    let mut conn = server.connection().await;
    assert!(
        kill_other_clients(&mut conn).await >= 1,
        "the group's connection"
    );
    // Calls notice the closed connection (if its reader has not already) and replace it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    while group.fleet_stats().reconnects(ReconnectReason::Closed) == 0 {
        assert!(Instant::now() < deadline, "{:?}", group.fleet_stats());
        n += 1;
        // Each call is a round trip to the server: the loop waits on the network, not a timer.
        let _ = group.call(&format!("k{n}"), || async { 2 }).await;
    }

    let stats = group.fleet_stats();
    let export = sdk.collect();
    assert_eq!(export, expected(&stats, "users"));
    let closed = attrs(&[
        (instruments::GROUP, "users"),
        (instruments::RECONNECT_REASON, "closed"),
    ]);
    assert!(
        export[instruments::RECONNECTS].1[&closed] >= 1,
        "{export:?}"
    );
}
