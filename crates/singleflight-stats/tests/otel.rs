//! `OtelObserver` read back through the OpenTelemetry SDK's in-memory exporter: the exact
//! instruments, units and attributes, the values real groups produce, and that no key
//! leaves in any attribute.
#![cfg(feature = "otel")]

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use singleflight_blocking::Group;
use singleflight_core::{Execution, FlightId, FlightInfo, Observer};
use singleflight_stats::{OtelObserver, instruments};

/// A meter provider whose every `force_flush` lands in `exporter`.
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

    fn observer(&self, group: &str) -> Arc<OtelObserver> {
        let meter = self.provider.meter_with_scope(OtelObserver::scope());
        Arc::new(OtelObserver::with_meter(&meter, group))
    }

    /// Collects now and flattens the latest export.
    fn collect(&self) -> Export {
        self.exporter.reset();
        self.provider.force_flush().unwrap();
        let exports = self.exporter.get_finished_metrics().unwrap();
        Export::from(exports.last().expect("one export per flush"))
    }
}

type Attributes = BTreeMap<String, String>;

/// One data point of one instrument.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    /// A monotonic sum (a counter).
    Counter(u64),
    /// A u64 gauge.
    Gauge(u64),
    /// A histogram: its count and bucket boundaries.
    Histogram { count: u64, bounds: Vec<f64> },
}

/// Every instrument of the `singleflight-stats` scope: name -> (unit, points by attributes).
#[derive(Debug, Default)]
struct Export {
    instruments: BTreeMap<String, (String, BTreeMap<Attributes, Value>)>,
}

fn attributes<'a>(kvs: impl Iterator<Item = &'a opentelemetry::KeyValue>) -> Attributes {
    kvs.map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect()
}

impl From<&ResourceMetrics> for Export {
    fn from(resource: &ResourceMetrics) -> Self {
        let mut export = Export::default();
        for scope in resource.scope_metrics() {
            assert_eq!(scope.scope().name(), "singleflight-stats");
            assert_eq!(scope.scope().version(), Some(env!("CARGO_PKG_VERSION")));
            for metric in scope.metrics() {
                let mut points = BTreeMap::new();
                match metric.data() {
                    AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                        assert!(sum.is_monotonic(), "{} is a counter", metric.name());
                        for p in sum.data_points() {
                            points.insert(attributes(p.attributes()), Value::Counter(p.value()));
                        }
                    }
                    AggregatedMetrics::U64(MetricData::Gauge(gauge)) => {
                        for p in gauge.data_points() {
                            points.insert(attributes(p.attributes()), Value::Gauge(p.value()));
                        }
                    }
                    AggregatedMetrics::F64(MetricData::Histogram(histogram)) => {
                        for p in histogram.data_points() {
                            let value = Value::Histogram {
                                count: p.count(),
                                bounds: p.bounds().collect(),
                            };
                            points.insert(attributes(p.attributes()), value);
                        }
                    }
                    other => panic!("unexpected data for {}: {other:?}", metric.name()),
                }
                let unit = metric.unit().to_string();
                export
                    .instruments
                    .insert(metric.name().to_string(), (unit, points));
            }
        }
        export
    }
}

impl Export {
    fn points(&self, name: &str) -> &BTreeMap<Attributes, Value> {
        &self
            .instruments
            .get(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .1
    }

    fn value(&self, name: &str, attrs: &[(&str, &str)]) -> Option<Value> {
        self.points(name).get(&attrs_of(attrs)).cloned()
    }

    fn counter(&self, name: &str, attrs: &[(&str, &str)]) -> u64 {
        match self.value(name, attrs) {
            Some(Value::Counter(n)) => n,
            None => 0,
            other => panic!("{name} {attrs:?} is not a counter: {other:?}"),
        }
    }

    fn histogram_count(&self, name: &str, attrs: &[(&str, &str)]) -> u64 {
        match self.value(name, attrs) {
            Some(Value::Histogram { count, bounds }) => {
                assert_eq!(bounds, instruments::DURATION_BOUNDARIES);
                count
            }
            None => 0,
            other => panic!("{name} {attrs:?} is not a histogram: {other:?}"),
        }
    }

    fn active(&self, group: &str) -> u64 {
        match self.value(instruments::FLIGHTS_ACTIVE, &[(instruments::GROUP, group)]) {
            Some(Value::Gauge(n)) => n,
            other => panic!("no gauge of active flights for {group}: {other:?}"),
        }
    }
}

fn attrs_of(attrs: &[(&str, &str)]) -> Attributes {
    attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Waits (yielding, no sleep) until `key` has `n` waiters.
fn until_waiters<T: Clone>(group: &Group<String, T>, key: &str, n: usize) {
    while group.waiters(key) < n {
        thread::yield_now();
    }
}

const KEY: &str = "user:ada@example.com";
const GROUP: (&str, &str) = (instruments::GROUP, "users");
const LEADER: (&str, &str) = (instruments::ROLE, "leader");
const WAITER: (&str, &str) = (instruments::ROLE, "waiter");

#[test]
fn instruments_units_and_attributes_are_exact() {
    let sdk = Sdk::new();
    let observer = sdk.observer("users");
    let group = Group::<String, Result<u32, String>>::new().with_observer(observer.clone());

    // One leader and three waiters, the leader held until all three have joined; the gauge
    // reads the flight while it is held.
    let (release, gate) = mpsc::channel::<()>();
    let active_during_flight = thread::scope(|s| {
        let group = &group;
        let leader = s.spawn(move || {
            group.try_call(KEY, || {
                gate.recv().unwrap();
                Ok(1)
            })
        });
        while !group.contains(KEY) {
            thread::yield_now();
        }
        let waiters: Vec<_> = (0..3)
            .map(|_| s.spawn(move || group.try_call(KEY, || Ok(2))))
            .collect();
        until_waiters(group, KEY, 3);
        let active = sdk.collect().active("users");
        // A reset while the flight runs must not drive the gauge below zero afterwards.
        observer.stats().reset();
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), Ok(1));
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), Ok(1));
        }
        active
    });
    assert_eq!(active_during_flight, 1);

    // A failed execution and a panicked one.
    assert!(group.try_call(KEY, || Err("down".to_string())).is_err());
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        group.try_call(KEY, || -> Result<u32, String> { panic!("boom") })
    }));
    assert!(panicked.is_err());

    // A waiter that times out: the leader is released only once the waiter has returned.
    let (release, gate) = mpsc::channel::<()>();
    thread::scope(|s| {
        let group = &group;
        let leader = s.spawn(move || {
            group.try_call(KEY, || {
                gate.recv().unwrap();
                Ok(3)
            })
        });
        while !group.contains(KEY) {
            thread::yield_now();
        }
        let waiter = group.try_call_timeout(KEY, Duration::from_millis(1), || Ok(4));
        assert!(waiter.is_err(), "the waiter gave up: {waiter:?}");
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), Ok(3));
    });

    // A leader dropped and a waiter taking over, as an async front-end reports them.
    let flight = FlightInfo::new(Some("users"), FlightId::new(99));
    let started = observer.leader_started(&flight);
    observer.execution_finished(&flight, started, Execution::Dropped);
    observer.takeover(&flight);
    let started = observer.execution_started(&flight);
    observer.leader_finished(&flight, started, Execution::Completed);

    let export = sdk.collect();
    let names: BTreeSet<_> = export.instruments.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "singleflight.calls",
            "singleflight.execution.duration",
            "singleflight.flights.active",
            "singleflight.refresh.failures",
            "singleflight.refreshes",
            "singleflight.takeovers",
            "singleflight.timeouts",
            "singleflight.wait.duration",
        ]),
        "exactly these instruments"
    );
    let units: BTreeMap<_, _> = export
        .instruments
        .iter()
        .map(|(name, (unit, _))| (name.as_str(), unit.as_str()))
        .collect();
    assert_eq!(
        units,
        BTreeMap::from([
            ("singleflight.calls", "{call}"),
            ("singleflight.execution.duration", "s"),
            ("singleflight.flights.active", "{flight}"),
            ("singleflight.refresh.failures", "{refresh}"),
            ("singleflight.refreshes", "{refresh}"),
            ("singleflight.takeovers", "{call}"),
            ("singleflight.timeouts", "{call}"),
            ("singleflight.wait.duration", "s"),
        ])
    );

    // Calls: leaders by outcome (the completed leader of the herd, of the timeout scene and
    // the promoted waiter), waiters (three received the value, one timed out).
    let calls = instruments::CALLS;
    let error = |e| (instruments::ERROR_TYPE, e);
    assert_eq!(export.counter(calls, &[GROUP, LEADER]), 3);
    assert_eq!(export.counter(calls, &[GROUP, WAITER]), 3);
    assert_eq!(export.counter(calls, &[GROUP, WAITER, error("gave_up")]), 1);
    assert_eq!(export.counter(calls, &[GROUP, LEADER, error("error")]), 1);
    assert_eq!(export.counter(calls, &[GROUP, LEADER, error("panic")]), 1);
    assert_eq!(
        export.counter(calls, &[GROUP, LEADER, error("leader_dropped")]),
        1
    );
    assert_eq!(export.points(calls).len(), 6, "no other attribute set");

    // Waits: one sample per waiter that left, by how it left.
    let wait = instruments::WAIT_DURATION;
    assert_eq!(export.histogram_count(wait, &[GROUP]), 3);
    assert_eq!(export.histogram_count(wait, &[GROUP, error("gave_up")]), 1);
    assert_eq!(export.points(wait).len(), 2);

    let duration = instruments::EXECUTION_DURATION;
    assert_eq!(export.histogram_count(duration, &[GROUP]), 3);
    for e in ["error", "panic", "leader_dropped"] {
        assert_eq!(
            export.histogram_count(duration, &[GROUP, error(e)]),
            1,
            "{e}"
        );
    }
    assert_eq!(export.points(duration).len(), 4);

    assert_eq!(export.counter(instruments::TAKEOVERS, &[GROUP]), 1);
    assert_eq!(export.counter(instruments::TIMEOUTS, &[GROUP]), 1);
    assert_eq!(export.points(instruments::TAKEOVERS).len(), 1);
    assert_eq!(export.points(instruments::TIMEOUTS).len(), 1);

    // Every flight ended; the reset in the middle left the gauge exact.
    assert_eq!(export.active("users"), 0);
    assert_eq!(export.points(instruments::FLIGHTS_ACTIVE).len(), 1);

    // The in-process counters agree (since their reset: the herd is not in them).
    let snapshot = observer.stats().snapshot();
    assert_eq!(
        (snapshot.errors, snapshot.panics, snapshot.leader_drops),
        (1, 1, 1)
    );
    assert_eq!((snapshot.takeovers, snapshot.timeouts), (1, 1));
}

#[test]
fn waiters_carry_the_error_type_of_the_outcome_they_received() {
    let sdk = Sdk::new();
    let observer = sdk.observer("users");
    let group = Group::<String, Result<u32, String>>::new().with_observer(observer.clone());

    // A leader that fails with two waiters, then one that panics with one waiter.
    for (waiting, fail) in [(2, true), (1, false)] {
        let (release, gate) = mpsc::channel::<()>();
        thread::scope(|s| {
            let group = &group;
            let leader = s.spawn(move || {
                catch_unwind(AssertUnwindSafe(|| {
                    group.try_call(KEY, || {
                        gate.recv().unwrap();
                        if fail {
                            Err("down".to_string())
                        } else {
                            panic!("boom")
                        }
                    })
                }))
            });
            while !group.contains(KEY) {
                thread::yield_now();
            }
            let waiters: Vec<_> = (0..waiting)
                .map(|_| s.spawn(move || group.try_call(KEY, || Ok(2))))
                .collect();
            until_waiters(group, KEY, waiting);
            release.send(()).unwrap();
            let _ = leader.join().unwrap();
            for waiter in waiters {
                assert!(waiter.join().unwrap().is_err());
            }
        });
    }

    let export = sdk.collect();
    let calls = instruments::CALLS;
    let error = |e| (instruments::ERROR_TYPE, e);
    assert_eq!(export.counter(calls, &[GROUP, WAITER, error("error")]), 2);
    assert_eq!(export.counter(calls, &[GROUP, WAITER, error("panic")]), 1);
    assert_eq!(export.counter(calls, &[GROUP, WAITER]), 0);
    let wait = instruments::WAIT_DURATION;
    assert_eq!(export.histogram_count(wait, &[GROUP, error("error")]), 2);
    assert_eq!(export.histogram_count(wait, &[GROUP, error("panic")]), 1);
    assert_eq!(export.points(wait).len(), 2);
    assert_eq!(observer.stats().snapshot().hits, 3);
}

#[test]
fn no_key_leaves_in_any_attribute() {
    let sdk = Sdk::new();
    let observer = sdk.observer("users");
    let group = Group::<String, Result<u32, String>>::new().with_observer(observer);
    group.try_call(KEY, || Ok(1)).unwrap();
    group.try_call(KEY, || Err(KEY.to_string())).unwrap_err();

    let export = sdk.collect();
    let allowed = BTreeSet::from([
        instruments::GROUP,
        instruments::ROLE,
        instruments::ERROR_TYPE,
    ]);
    let mut seen = 0;
    for (name, (_, points)) in &export.instruments {
        for attrs in points.keys() {
            for (k, v) in attrs {
                seen += 1;
                assert!(allowed.contains(k.as_str()), "{name} has attribute {k}");
                assert!(!v.contains("ada"), "{name} exports {k}={v}");
            }
        }
    }
    assert!(seen > 0, "attributes were read");
}

/// Waits (yielding, no sleep) until the observer's counters satisfy `done`.
fn until_stats(observer: &OtelObserver, done: impl Fn(&singleflight_stats::Snapshot) -> bool) {
    while !done(&observer.stats().snapshot()) {
        thread::yield_now();
    }
}

const REUSED: (&str, &str) = (instruments::ROLE, "reused");

#[test]
fn reused_calls_and_refreshes_have_exact_attributes() {
    let sdk = Sdk::new();
    let observer = sdk.observer("users");
    // Every kept value is past its refresh threshold at once: each refreshing call that
    // finds one is served it and starts a refresh.
    let group = Group::<String, Result<u32, String>>::new()
        .reuse_for(Duration::from_secs(3600))
        .refresh_after(Duration::ZERO)
        .with_observer(observer.clone());

    // A leader; then a plain call, served the kept value (a plain call never refreshes).
    assert_eq!(group.try_call(KEY, || Ok(1)), Ok(1));
    assert_eq!(group.try_call(KEY, || Ok(9)), Ok(1));
    // A refreshing call: served the kept value, its work refreshes it in the background.
    assert_eq!(group.request(KEY).try_call_refreshing(|| Ok(2)), Ok(1));
    until_stats(&observer, |s| s.refreshes == 1 && s.active == 0);
    // A refresh that fails: the value of the last one stays.
    let failing = group
        .request(KEY)
        .try_call_refreshing(|| Err("down".to_string()));
    assert_eq!(failing, Ok(2));
    until_stats(&observer, |s| s.refresh_failures == 1 && s.active == 0);

    let export = sdk.collect();
    let calls = instruments::CALLS;
    let error = |e| (instruments::ERROR_TYPE, e);
    // Two refreshes ran the work as leaders (one failed) besides the first call.
    assert_eq!(export.counter(calls, &[GROUP, LEADER]), 2);
    assert_eq!(export.counter(calls, &[GROUP, LEADER, error("error")]), 1);
    assert_eq!(
        export.value(calls, &[GROUP, REUSED]),
        Some(Value::Counter(3))
    );
    assert_eq!(
        export.value(calls, &[GROUP, WAITER]),
        Some(Value::Counter(0))
    );
    // The leaders' failures are reported even at zero.
    for e in ["panic", "leader_dropped"] {
        assert_eq!(
            export.value(calls, &[GROUP, LEADER, error(e)]),
            Some(Value::Counter(0))
        );
    }
    assert_eq!(export.points(calls).len(), 6, "no other attribute set");

    for (name, n) in [
        (instruments::REFRESHES, 2),
        (instruments::REFRESH_FAILURES, 1),
    ] {
        assert_eq!(
            export.value(name, &[GROUP]),
            Some(Value::Counter(n)),
            "{name}"
        );
        assert_eq!(export.points(name).len(), 1, "{name}: the group only");
        assert_eq!(export.instruments[name].0, "{refresh}");
    }

    // The sum of the counter minus the refreshes is the number of calls made.
    let sum: u64 = export
        .points(calls)
        .values()
        .map(|v| match v {
            Value::Counter(n) => *n,
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(sum - 2, 4);
    assert_eq!(observer.stats().snapshot().calls(), 4);
}

#[test]
fn groups_are_told_apart_by_their_name() {
    let sdk = Sdk::new();
    let users = Group::<String, u32>::new().with_observer(sdk.observer("users"));
    let posts = Group::<String, u32>::new().with_observer(sdk.observer("posts"));
    users.call("1", || 1).unwrap();
    posts.call("1", || 1).unwrap();
    posts.call("2", || 2).unwrap();

    let export = sdk.collect();
    let calls = |group| export.counter(instruments::CALLS, &[(instruments::GROUP, group), LEADER]);
    assert_eq!((calls("users"), calls("posts")), (1, 2));
    assert_eq!((export.active("users"), export.active("posts")), (0, 0));
}

#[cfg(feature = "key-hmac")]
#[test]
fn hot_keys_leave_only_as_keyed_hashes() {
    use singleflight_stats::{HotKeys, KeyHmac};

    let sdk = Sdk::new();
    let meter = sdk.provider.meter_with_scope(OtelObserver::scope());
    let hot = Arc::new(HotKeys::new(16));
    let keys = KeyHmac::new(b"application secret");
    OtelObserver::observe_hot_keys(&meter, "users", hot.clone(), 2, keys.clone());
    for key in [
        "user:ada", "user:ada", "user:ada", "user:bob", "user:bob", "user:eve",
    ] {
        hot.record_join(key.as_bytes());
    }
    hot.record_execution(b"user:ada");

    let export = sdk.collect();
    let hmac = |key: &str| (instruments::KEY_HMAC, keys.label(key.as_bytes()));
    let point = |name, key| {
        let (k, v) = hmac(key);
        export.value(name, &[GROUP, (k, v.as_str())])
    };
    assert_eq!(
        point(instruments::HOT_KEY_JOINS, "user:ada"),
        Some(Value::Gauge(3))
    );
    assert_eq!(
        point(instruments::HOT_KEY_JOINS, "user:bob"),
        Some(Value::Gauge(2))
    );
    assert_eq!(
        export.points(instruments::HOT_KEY_JOINS).len(),
        2,
        "the top two only"
    );
    assert_eq!(
        point(instruments::HOT_KEY_EXECUTIONS, "user:ada"),
        Some(Value::Gauge(1))
    );
    assert_eq!(export.points(instruments::HOT_KEY_EXECUTIONS).len(), 1);
    for name in [instruments::HOT_KEY_JOINS, instruments::HOT_KEY_EXECUTIONS] {
        assert_eq!(&export.instruments[name].0, "{call}");
        for attrs in export.points(name).keys() {
            assert!(attrs.values().all(|v| !v.contains("user:")), "{attrs:?}");
        }
    }
}
