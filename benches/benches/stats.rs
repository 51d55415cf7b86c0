//! What statistics add to a call: the uncontended call (one thread, a fresh key per call,
//! work that returns at once) on the blocking front-end, with no observer and with a
//! `Stats` attached (counters only, the default), and with a `timed` `Stats` (counters plus
//! two clock reads per execution). The gap is the whole cost of counting, since every hook
//! runs and no wait hides it. Target: `stats` within 15% of `no-observer`.
//!
//! Then the two exporters, each on a real backend so their hooks reach real storage:
//! `metrics-prometheus` (`MetricsObserver` on the metrics facade's Prometheus recorder) and
//! `otel-sdk` (`OtelObserver` on the OpenTelemetry SDK, read by a periodic reader into the
//! in-memory exporter), plus each with nothing installed (`metrics-noop`, `otel-noop`:
//! the facade's and the API's no-ops). Target: `otel-sdk` within 15% of
//! `metrics-prometheus`.
//!
//! Last, hot keys (`stats/hot-keys/blocking`): the same `Stats` without and with a
//! `HotKeys` record fed from the keys the hooks offer, sampled one call in 64 (`hot-keys`)
//! and every call (`hot-keys-every-call`), and sampled one in 64 from a group that formats
//! its keys (`hot-keys-formatted`: each recorded key written out, not held as its hash),
//! on the uncontended call over two key streams:
//! a fresh key per call (every call a new key, which evicts one from the record: its
//! worst case) and a skewed stream over 1,000 keys (a few hot, most cold). Target:
//! `hot-keys` within 10% of `stats` on each.
#![allow(
    missing_docs,
    reason = "criterion_group! defines an undocumented public function"
)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use metrics_exporter_prometheus::PrometheusBuilder;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use singleflight_blocking::Group;
use singleflight_stats::{HotKeys, MetricsObserver, OtelObserver, Stats};

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("stats/uncontended/blocking");

    group.bench_function("no-observer", |b| {
        let flights = Group::<u64, u64>::new();
        let mut key = 0u64;
        b.iter(|| {
            key += 1;
            flights.call(&key, || black_box(key) * 2)
        });
    });

    group.bench_function("stats", |b| {
        let stats = Arc::new(Stats::new());
        let flights = Group::<u64, u64>::new().with_observer(stats.clone());
        let mut key = 0u64;
        b.iter(|| {
            key += 1;
            flights.call(&key, || black_box(key) * 2)
        });
        black_box(stats.snapshot());
    });

    group.bench_function("stats-timed", |b| {
        let stats = Arc::new(Stats::new().timed());
        let flights = Group::<u64, u64>::new().with_observer(stats.clone());
        let mut key = 0u64;
        b.iter(|| {
            key += 1;
            flights.call(&key, || black_box(key) * 2)
        });
        black_box(stats.snapshot());
    });

    group.bench_function("metrics-noop", |b| {
        let flights =
            Group::<u64, u64>::new().with_observer(Arc::new(MetricsObserver::new("bench")));
        let mut key = 0u64;
        b.iter(|| {
            key += 1;
            flights.call(&key, || black_box(key) * 2)
        });
    });

    group.bench_function("otel-noop", |b| {
        let flights = Group::<u64, u64>::new().with_observer(Arc::new(OtelObserver::new("bench")));
        let mut key = 0u64;
        b.iter(|| {
            key += 1;
            flights.call(&key, || black_box(key) * 2)
        });
    });

    group.bench_function("metrics-prometheus", |b| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let observer = metrics::with_local_recorder(&recorder, || MetricsObserver::new("bench"));
        let flights = Group::<u64, u64>::new().with_observer(Arc::new(observer));
        let mut key = 0u64;
        b.iter(|| {
            key += 1;
            flights.call(&key, || black_box(key) * 2)
        });
        black_box(recorder.handle().render());
    });

    group.bench_function("otel-sdk", |b| {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let meter = provider.meter_with_scope(OtelObserver::scope());
        let flights = Group::<u64, u64>::new()
            .with_observer(Arc::new(OtelObserver::with_meter(&meter, "bench")));
        let mut key = 0u64;
        b.iter(|| {
            key += 1;
            flights.call(&key, || black_box(key) * 2)
        });
        provider.force_flush().unwrap();
        black_box(exporter.get_finished_metrics().unwrap());
    });

    group.finish();
}

fn hot_keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("stats/hot-keys/blocking");
    // A skewed stream: key `i` of 1,000 drawn with weight about 1/(i+1) (a Zipf law), from
    // a fixed pseudo-random sequence, so both sides see the same keys.
    let skewed: Vec<u64> = {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                // Inverse of the continuous Zipf(1) CDF over [1, 1001).
                (1001f64.powf(u) - 1.0) as u64
            })
            .collect()
    };
    for (stream, fresh) in [("fresh-key", true), ("skewed-1000", false)] {
        for (name, sample, formatted) in [
            ("stats", 0, false),
            ("hot-keys", 64, false),
            ("hot-keys-every-call", 1, false),
            ("hot-keys-formatted", 64, true),
        ] {
            let skewed = &skewed;
            group.bench_function(format!("{name}/{stream}"), |b| {
                let mut stats = Stats::new();
                if sample > 0 {
                    let hot = HotKeys::new(256).sampled(sample);
                    stats = stats.with_hot_keys(Arc::new(hot));
                }
                let stats = Arc::new(stats);
                let mut flights = Group::<u64, u64>::new().with_name("bench");
                if formatted {
                    flights = flights.with_key_format(|key, f| write!(f, "{key}"));
                }
                let flights = flights.with_observer(stats.clone());
                let mut i = 0u64;
                b.iter(|| {
                    i += 1;
                    let key = if fresh {
                        i
                    } else {
                        skewed[i as usize % skewed.len()]
                    };
                    flights.call(&key, || black_box(key) * 2)
                });
                black_box(stats.hot_keys(5));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, uncontended, hot_keys);
criterion_main!(benches);
