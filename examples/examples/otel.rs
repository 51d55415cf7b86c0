//! A tokio service under a herd, seen through OpenTelemetry: its group reports to the
//! OpenTelemetry SDK through `OtelObserver` (the `otel` feature of `singleflight-stats`),
//! and a `HotKeys` finds the keys that stampede.
//!
//! Each wave, 200 requests arrive at once for product pages, most for a few popular
//! products (a geometric skew over an even tail), and each page is a 40 ms database
//! query. The SDK's
//! in-memory exporter collects the instruments at the end; the example prints them, the
//! hit rate, the executions saved and the five hottest keys.
//!
//! The hot keys are fed by the group itself: its observer is a `Fanout` of the
//! `OtelObserver` and a `Stats` with a `HotKeys`, which records the key each call offers.
//! The group opts in to showing its keys (`with_key_format`); without it, they would be
//! held as hashes. They are printed, never exported as they are.
//!
//! Last, one herd of 100 callers on one key is traced through `TracingObserver`: the
//! execution gets a span, and each waiter's span follows from it (`follows_from`, which an
//! OpenTelemetry bridge such as `tracing-opentelemetry` exports as a span link), so a trace
//! of a slow request shows the execution it waited on. A small subscriber records what it
//! is given, and the example prints it.
//!
//! Run: `cargo run --release -p singleflight-examples --example otel`
//! (`--quick` shrinks the query time; the counts stay the same).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_lock::Barrier;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use singleflight_examples::scale::Scale;
use singleflight_stats::{
    EXECUTION_SPAN, Fanout, HotKeys, OtelObserver, Stats, TracingObserver, WAIT_SPAN,
};
use singleflight_tokio::Group;

const WAVES: usize = 10;
const REQUESTS_PER_WAVE: usize = 200;
const PRODUCTS: u64 = 50;

/// The product the `i`th request of a wave asks for, the same in every run: half the
/// requests follow a geometric skew (product 0 gets 1 in 4 of all requests, product 1 one
/// in 8, ...), the other half spread evenly over every product.
fn product(i: usize) -> u64 {
    let i = i as u64;
    if i.is_multiple_of(2) {
        (i / 2) % PRODUCTS
    } else {
        u64::from((i / 2).trailing_zeros()).min(PRODUCTS - 1)
    }
}

/// One wave: every request at once, each coalesced by its product key.
async fn wave(group: &Group<String, String>, queries: &Arc<AtomicUsize>, scale: Scale) {
    let start_line = Arc::new(Barrier::new(REQUESTS_PER_WAVE));
    let requests: Vec<_> = (0..REQUESTS_PER_WAVE)
        .map(|i| {
            let (group, queries, start_line) = (group.clone(), queries.clone(), start_line.clone());
            tokio::spawn(async move {
                let key = format!("product:{}", product(i));
                start_line.wait().await;
                let owned = key.clone();
                let page = group
                    .call(&key, move || async move {
                        // Only a leader gets here: one execution of the query.
                        queries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(scale.ms(40.0)).await;
                        format!("page of {owned}")
                    })
                    .await
                    .expect("the query does not panic");
                assert_eq!(page, format!("page of {key}"));
            })
        })
        .collect();
    for request in requests {
        request.await.expect("request task");
    }
}

#[tokio::main]
async fn main() {
    let scale = Scale::from_env();
    // The SDK, reading into memory; a service would add an OTLP or stdout exporter here.
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let meter = provider.meter_with_scope(OtelObserver::scope());
    let observer = Arc::new(OtelObserver::with_meter(&meter, "product-pages"));
    // The keys each call offers, recorded (not exported) next to the instruments.
    let hot = Arc::new(HotKeys::new(100));
    let keys = Arc::new(Stats::new().with_hot_keys(hot.clone()));
    let group = Group::<String, String>::new()
        .with_key_format(|key, f| f.write_str(key))
        .with_observer(Arc::new(Fanout::new([
            observer.clone() as _,
            keys.clone() as _,
        ])));
    let queries = Arc::new(AtomicUsize::new(0));

    println!(
        "Scenario: {WAVES} waves of {REQUESTS_PER_WAVE} simultaneous requests over {PRODUCTS} \
         products, each page a {:.0?} query{}\n",
        scale.ms(40.0),
        scale.note()
    );
    for _ in 0..WAVES {
        wave(&group, &queries, scale).await;
    }

    provider.force_flush().expect("collect");
    let exports = exporter.get_finished_metrics().expect("in-memory metrics");
    let export = exports.last().expect("one collection");
    println!(
        "OpenTelemetry instruments (scope {}):",
        OtelObserver::scope().name()
    );
    let mut calls = 0;
    let mut executions = 0;
    for scope in export.scope_metrics() {
        for metric in scope.metrics() {
            println!("   {} [{}]", metric.name(), metric.unit());
            match metric.data() {
                AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                    for point in sum.data_points() {
                        println!("      {} {}", attributes(point.attributes()), point.value());
                        if metric.name() == "singleflight.calls" {
                            calls += point.value();
                        }
                    }
                }
                AggregatedMetrics::U64(MetricData::Gauge(gauge)) => {
                    for point in gauge.data_points() {
                        println!("      {} {}", attributes(point.attributes()), point.value());
                    }
                }
                AggregatedMetrics::F64(MetricData::Histogram(histogram)) => {
                    for point in histogram.data_points() {
                        // One sample per execution; `singleflight.wait.duration` has one
                        // per waiter instead.
                        if metric.name() == "singleflight.execution.duration" {
                            executions += point.count();
                        }
                        println!(
                            "      {} count {} mean {:.1} ms",
                            attributes(point.attributes()),
                            point.count(),
                            point.sum() / point.count().max(1) as f64 * 1e3
                        );
                    }
                }
                _ => println!("      (other data)"),
            }
        }
    }

    let snapshot = observer.stats().snapshot();
    println!("\nSummary");
    println!("   Calls:             {calls}");
    println!("   Executions:        {executions}");
    println!("   Executions saved:  {}", calls - executions);
    println!("   Hit rate:          {:.1}%", snapshot.hit_rate() * 100.0);
    println!("   Queries run:       {}", queries.load(Ordering::Relaxed));
    println!("   Active flights:    {}", snapshot.active);

    println!(
        "\nTop 5 hot keys by joins (recorded from the group's hooks; never exported as they are):"
    );
    for (rank, key) in hot.top_joins(5).iter().enumerate() {
        println!(
            "   #{}: {:<12} {} joins",
            rank + 1,
            String::from_utf8_lossy(&key.key),
            key.count
        );
    }
    let top = hot.top_joins(1);
    println!(
        "   Top key:           {}",
        String::from_utf8_lossy(&top[0].key)
    );
    provider.shutdown().expect("shutdown");

    tokio::task::spawn_blocking(trace_one_herd)
        .await
        .expect("the traced herd");
}

/// What the trace's subscriber was given: each span's name, and which span follows from
/// which.
#[derive(Default)]
struct Spans {
    next: AtomicU64,
    names: Mutex<HashMap<u64, &'static str>>,
    follows: Mutex<Vec<(u64, u64)>>,
}

/// A subscriber that records span names and links, and nothing else.
struct Recorder(Arc<Spans>);

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut names = self.0.names.lock().expect("no panic under this lock");
        names.insert(id, span.metadata().name());
        tracing::span::Id::from_u64(id)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, span: &tracing::span::Id, follows: &tracing::span::Id) {
        let mut links = self.0.follows.lock().expect("no panic under this lock");
        links.push((span.into_u64(), follows.into_u64()));
    }

    fn event(&self, _: &tracing::Event<'_>) {}

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// One herd of 100 callers on one key, traced: every caller joins before the work ends (the
/// work waits until 99 callers wait), then the spans and their links are printed. On a
/// current-thread runtime of its own, under a subscriber for this thread only: a caller
/// counted as waiting has finished its first poll, span and link included.
fn trace_one_herd() {
    let spans = Arc::new(Spans::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    tracing::subscriber::with_default(Recorder(spans.clone()), || {
        runtime.block_on(herd());
    });
    print_trace(&spans);
}

const CALLERS: usize = 100;

async fn herd() {
    let group = Group::<String, u32>::new()
        .with_name("product-pages")
        .with_observer(Arc::new(TracingObserver::new("product-pages")));
    let release = Arc::new(tokio::sync::Notify::new());
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (group, release) = (group.clone(), release.clone());
            tokio::spawn(async move {
                group
                    .call("product:0", || async move {
                        release.notified().await;
                        1
                    })
                    .await
            })
        })
        .collect();
    while group.waiters("product:0") < CALLERS - 1 {
        tokio::task::yield_now().await;
    }
    release.notify_one();
    for caller in callers {
        assert_eq!(caller.await.expect("caller task"), Ok(1));
    }
}

fn print_trace(spans: &Spans) {
    let names = spans
        .names
        .lock()
        .expect("no panic under this lock")
        .clone();
    let follows = spans
        .follows
        .lock()
        .expect("no panic under this lock")
        .clone();
    let executions: Vec<u64> = names
        .iter()
        .filter(|(_, name)| **name == EXECUTION_SPAN)
        .map(|(id, _)| *id)
        .collect();
    let waits = names.values().filter(|name| **name == WAIT_SPAN).count();
    let linked = follows
        .iter()
        .filter(|(span, to)| names.get(span) == Some(&WAIT_SPAN) && executions.contains(to))
        .count();
    println!(
        "
One herd of {CALLERS} callers on product:0, traced (TracingObserver):"
    );
    println!("   Execution spans:   {}", executions.len());
    println!("   Wait spans:        {waits}");
    println!("   Waits linked:      {linked}");
    println!(
        "   (each wait span follows from the execution's span: a span link through an \
         OpenTelemetry bridge)"
    );
}

fn attributes<'a>(kvs: impl Iterator<Item = &'a opentelemetry::KeyValue>) -> String {
    let mut kvs: Vec<String> = kvs.map(|kv| format!("{}={}", kv.key, kv.value)).collect();
    kvs.sort();
    format!("{{{}}}", kvs.join(", "))
}
