//! The `metrics` and `tracing` exporters of `singleflight-stats`, checked against a test
//! recorder and a test subscriber. Every caller runs on the test's thread (futures polled
//! by hand), because both the local recorder and the default subscriber are thread-local.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_lite::future::{block_on, poll_once};
use singleflight_core::{Group, LeaderDropPolicy};
use singleflight_stats::{Fanout, Stats};
use singleflight_tests::Gate;

/// Polls `call` once: it registers, and (as the gates are closed) does not finish.
fn start<F: Future>(mut call: Pin<Box<F>>) -> Pin<Box<F>> {
    assert!(
        block_on(poll_once(call.as_mut())).is_none(),
        "the call waits"
    );
    call
}

mod metrics_exporter {
    use super::*;
    use metrics::{
        Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString,
        Unit,
    };
    use singleflight_stats::{MetricsObserver, names};

    /// Keeps every metric by `name{label=value,...}`.
    #[derive(Default)]
    struct TestRecorder {
        counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
        gauges: Mutex<HashMap<String, Arc<AtomicU64>>>,
        histograms: Mutex<HashMap<String, Arc<Samples>>>,
        described: Mutex<Vec<String>>,
    }

    #[derive(Default)]
    struct Samples(Mutex<Vec<f64>>);

    impl HistogramFn for Samples {
        fn record(&self, value: f64) {
            self.0.lock().unwrap().push(value);
        }
    }

    fn id(key: &Key) -> String {
        let labels: Vec<_> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        format!("{}{{{}}}", key.name(), labels.join(","))
    }

    impl TestRecorder {
        fn counter(&self, name: &str) -> u64 {
            let key = format!("{name}{{group=users}}");
            let counters = self.counters.lock().unwrap();
            counters
                .get(&key)
                .unwrap_or_else(|| panic!("no {key}"))
                .load(Ordering::SeqCst)
        }

        fn gauge(&self, name: &str) -> f64 {
            let key = format!("{name}{{group=users}}");
            let gauges = self.gauges.lock().unwrap();
            f64::from_bits(gauges.get(&key).expect("the gauge").load(Ordering::SeqCst))
        }

        fn samples(&self, name: &str) -> Vec<f64> {
            let key = format!("{name}{{group=users}}");
            let histograms = self.histograms.lock().unwrap();
            histograms
                .get(&key)
                .expect("the histogram")
                .0
                .lock()
                .unwrap()
                .clone()
        }
    }

    impl Recorder for TestRecorder {
        fn describe_counter(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
            self.described.lock().unwrap().push(key.as_str().to_owned());
        }
        fn describe_gauge(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
            self.described.lock().unwrap().push(key.as_str().to_owned());
        }
        fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
            assert_eq!(unit, Some(Unit::Seconds));
            self.described.lock().unwrap().push(key.as_str().to_owned());
        }
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let mut counters = self.counters.lock().unwrap();
            Counter::from_arc(counters.entry(id(key)).or_default().clone())
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            let mut gauges = self.gauges.lock().unwrap();
            Gauge::from_arc(gauges.entry(id(key)).or_default().clone())
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            let mut histograms = self.histograms.lock().unwrap();
            Histogram::from_arc(histograms.entry(id(key)).or_default().clone())
        }
    }

    #[test]
    fn every_counter_the_gauge_and_the_histogram_are_reported_with_the_group_label() {
        let _watchdog = singleflight_tests::watchdog!();
        let recorder = TestRecorder::default();
        let stats = Arc::new(Stats::new());
        metrics::with_local_recorder(&recorder, || {
            MetricsObserver::describe();
            let metrics = Arc::new(MetricsObserver::new("users"));
            assert_eq!(metrics.group(), "users");
            let group = Group::<String, Result<u32, String>>::new()
                .with_observer(Arc::new(Fanout::new([stats.clone() as _, metrics as _])));
            let gate = Gate::new();

            // Six callers on one flight.
            let leader = start(Box::pin(group.call("k", || async {
                gate.opened().await;
                Ok(1)
            })));
            let waiters: Vec<_> = (0..5)
                .map(|_| start(Box::pin(group.call("k", || async { Ok(0) }))))
                .collect();
            assert_eq!(recorder.gauge(names::ACTIVE), 1.0);
            gate.open();
            assert_eq!(block_on(leader), Ok(Ok(1)));
            for waiter in waiters {
                assert_eq!(block_on(waiter), Ok(Ok(1)));
            }

            // A failing flight, a panicking one, and a dropped leader with a takeover.
            assert_eq!(
                block_on(group.call("e", || async { Err("down".to_string()) })),
                Ok(Err("down".to_string()))
            );
            let never = Gate::new();
            let dropped = start(Box::pin(group.call("d", || async {
                never.opened().await;
                Ok(2)
            })));
            let promoted = start(Box::pin(group.call("d", || async { Ok(3) })));
            drop(dropped);
            assert_eq!(block_on(promoted), Ok(Ok(3)));
        });
        // The exporter and `Stats` saw the same events. (`call`, unlike `try_call`, takes
        // an `Err` for a value: no error is counted.)
        let snapshot = stats.snapshot();
        assert_eq!([snapshot.hits, snapshot.misses, snapshot.errors], [5, 4, 0]);
        assert_eq!(
            [snapshot.leader_drops, snapshot.takeovers, snapshot.active],
            [1, 1, 0]
        );
        assert_eq!(recorder.counter(names::HITS), 5);
        assert_eq!(recorder.counter(names::MISSES), 4);
        assert_eq!(recorder.counter(names::LEADER_DROPS), 1);
        assert_eq!(recorder.counter(names::TAKEOVERS), 1);
        assert_eq!(recorder.counter(names::ERRORS), 0);
        assert_eq!(recorder.counter(names::PANICS), 0);
        assert_eq!(recorder.counter(names::TIMEOUTS), 0);
        assert_eq!(recorder.gauge(names::ACTIVE), 0.0);
        // One sample per execution (4), not per caller (9).
        let samples = recorder.samples(names::EXECUTION_SECONDS);
        assert_eq!(samples.len(), 4);
        assert!(samples.iter().all(|s| *s >= 0.0));
        assert_eq!(recorder.described.lock().unwrap().len(), 12);
    }

    #[test]
    fn errors_and_panics_are_reported_once_per_execution() {
        let _watchdog = singleflight_tests::watchdog!();
        let recorder = TestRecorder::default();
        metrics::with_local_recorder(&recorder, || {
            let group = Group::<String, Result<u32, String>>::new()
                .with_observer(Arc::new(MetricsObserver::new("users")));
            let gate = Gate::new();
            let leader = start(Box::pin(group.try_call("k", || async {
                gate.opened().await;
                Err("down".to_string())
            })));
            let waiter = start(Box::pin(group.try_call("k", || async { Ok(0) })));
            gate.open();
            assert!(block_on(leader).unwrap_err().is_failed());
            assert!(block_on(waiter).unwrap_err().is_failed());

            singleflight_tests::quiet_expected_panics();
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                block_on(group.call("p", || async { panic!("expected: the work panics") }))
            }));
            assert!(panicked.is_err());
        });
        assert_eq!(recorder.counter(names::ERRORS), 1);
        assert_eq!(recorder.counter(names::PANICS), 1);
        assert_eq!(recorder.counter(names::HITS), 1);
        assert_eq!(recorder.counter(names::MISSES), 2);
        assert_eq!(recorder.samples(names::EXECUTION_SECONDS).len(), 2);
    }

    #[test]
    fn timeouts_are_reported() {
        let _watchdog = singleflight_tests::watchdog!();
        let recorder = TestRecorder::default();
        metrics::with_local_recorder(&recorder, || {
            let observer = MetricsObserver::new("users");
            singleflight_core::Observer::timeout(&observer);
        });
        assert_eq!(recorder.counter(names::TIMEOUTS), 1);
    }

    /// A reuse window's hits are counted apart from hits and misses; a refresh is counted
    /// when it starts and, if it fails, when it ends.
    #[test]
    fn reuses_and_refreshes_are_reported() {
        let _watchdog = singleflight_tests::watchdog!();
        let recorder = TestRecorder::default();
        metrics::with_local_recorder(&recorder, || {
            let group = singleflight_blocking::Group::<String, Result<u32, String>>::new()
                .with_observer(Arc::new(MetricsObserver::new("users")))
                .reuse_for(std::time::Duration::from_secs(3600))
                .refresh_after(std::time::Duration::ZERO);
            assert_eq!(group.try_call("k", || Ok::<_, String>(1)), Ok(1));
            // Past the threshold at once: served the kept value, and a refresh starts on a
            // thread of its own; its work fails, so the value stays.
            let (done, finished) = std::sync::mpsc::channel();
            let value = group.request("k").try_call_refreshing(move || {
                let _ = done.send(());
                Err("down".to_string())
            });
            assert_eq!(value, Ok(1));
            finished.recv().expect("the refresh ran");
            // The refresh's flight ends after its work returns, and its failure is reported
            // after the flight has left the table: wait for the report (then the flight is
            // gone too). Waiting for the table alone raced the report.
            while recorder.counter(names::REFRESH_FAILURES) == 0 {
                std::thread::yield_now();
            }
            assert_eq!(group.in_flight(), 0);
            assert_eq!(group.try_call("k", || Ok::<_, String>(2)), Ok(1));
        });
        assert_eq!(recorder.counter(names::REUSED), 2);
        assert_eq!(recorder.counter(names::REFRESHES), 1);
        assert_eq!(recorder.counter(names::REFRESH_FAILURES), 1);
        assert_eq!(
            recorder.counter(names::MISSES),
            2,
            "the first call and the refresh"
        );
        assert_eq!(recorder.counter(names::HITS), 0);
    }
}

mod tracing_exporter {
    use super::*;
    use singleflight_stats::{EXECUTION_SPAN, TracingObserver, WAIT_SPAN};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};
    use tracing_core::span::Current;

    #[derive(Debug, Clone, PartialEq)]
    struct Captured {
        name: String,
        level: Level,
        parent: Option<u64>,
        fields: String,
    }

    /// Records spans, events and span closes, up to `max_level`.
    #[derive(Clone)]
    struct Capture {
        max_level: Level,
        next_id: Arc<AtomicU64>,
        spans: Arc<Mutex<Vec<(u64, Captured)>>>,
        events: Arc<Mutex<Vec<Captured>>>,
        closed: Arc<Mutex<Vec<u64>>>,
        /// `(span, follows from)` pairs.
        follows: Arc<Mutex<Vec<(u64, u64)>>>,
        /// The spans entered, innermost last (the tests run on one thread).
        entered: Arc<Mutex<Vec<(u64, &'static Metadata<'static>)>>>,
        metadata: Arc<Mutex<HashMap<u64, &'static Metadata<'static>>>>,
    }

    impl Capture {
        fn new(max_level: Level) -> Self {
            Self {
                max_level,
                next_id: Arc::new(AtomicU64::new(1)),
                spans: Arc::default(),
                events: Arc::default(),
                closed: Arc::default(),
                follows: Arc::default(),
                entered: Arc::default(),
                metadata: Arc::default(),
            }
        }
    }

    struct Fields(String);

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!("{}={:?};", field.name(), value));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push_str(&format!("{}={};", field.name(), value));
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            *metadata.level() <= self.max_level
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let id = self.next_id.fetch_add(1, Ordering::SeqCst);
            let mut fields = Fields(String::new());
            span.record(&mut fields);
            let parent = if span.is_contextual() {
                self.entered.lock().unwrap().last().map(|(id, _)| *id)
            } else {
                span.parent().map(Id::into_u64)
            };
            self.spans.lock().unwrap().push((
                id,
                Captured {
                    name: span.metadata().name().to_owned(),
                    level: *span.metadata().level(),
                    parent,
                    fields: fields.0,
                },
            ));
            let metadata = span.metadata();
            self.metadata.lock().unwrap().insert(id, metadata);
            Id::from_u64(id)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, span: &Id, follows: &Id) {
            let pair = (span.into_u64(), follows.into_u64());
            self.follows.lock().unwrap().push(pair);
        }
        fn current_span(&self) -> Current {
            match self.entered.lock().unwrap().last() {
                Some((id, metadata)) => Current::new(Id::from_u64(*id), metadata),
                None => Current::none(),
            }
        }
        fn event(&self, event: &Event<'_>) {
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.events.lock().unwrap().push(Captured {
                name: event.metadata().name().to_owned(),
                level: *event.metadata().level(),
                parent: event.parent().map(|id| id.into_u64()),
                fields: fields.0,
            });
        }
        fn enter(&self, id: &Id) {
            let metadata = self.metadata.lock().unwrap()[&id.into_u64()];
            self.entered.lock().unwrap().push((id.into_u64(), metadata));
        }
        fn exit(&self, _: &Id) {
            self.entered.lock().unwrap().pop();
        }
        fn try_close(&self, id: Id) -> bool {
            self.closed.lock().unwrap().push(id.into_u64());
            true
        }
    }

    #[test]
    fn a_span_per_execution_and_an_event_per_coalesced_caller() {
        let _watchdog = singleflight_tests::watchdog!();
        let capture = Capture::new(Level::TRACE);
        let observer = Arc::new(TracingObserver::new("users"));
        tracing::subscriber::with_default(capture.clone(), || {
            let group = Group::<String, u32>::new().with_observer(observer.clone());
            let gate = Gate::new();
            let leader = start(Box::pin(group.call("k", || async {
                gate.opened().await;
                1
            })));
            let waiters: Vec<_> = (0..5)
                .map(|_| start(Box::pin(group.call("k", || async { 0 }))))
                .collect();
            assert!(format!("{observer:?}").contains("executions: 1"));
            gate.open();
            assert_eq!(block_on(leader), Ok(1));
            for waiter in waiters {
                assert_eq!(block_on(waiter), Ok(1));
            }
        });

        let spans = capture.spans.lock().unwrap().clone();
        assert_eq!(spans.len(), 6, "an execution and five waits: {spans:?}");
        let (span_id, span) = &spans[0];
        assert_eq!(span.name, EXECUTION_SPAN);
        assert_eq!(span.level, Level::DEBUG);
        assert!(span.fields.starts_with("group=users;flight="), "{span:?}");
        let waits: Vec<_> = spans[1..].iter().map(|(id, _)| *id).collect();
        assert!(spans[1..].iter().all(|(_, s)| s.name == WAIT_SPAN));
        assert!(spans[1..].iter().all(|(_, s)| s.fields == span.fields));
        let closed = capture.closed.lock().unwrap().clone();
        assert_eq!(closed.len(), 6, "{closed:?}");
        assert!(closed.contains(span_id), "the span ends with the execution");
        let follows = capture.follows.lock().unwrap().clone();
        let linked: Vec<_> = waits.iter().map(|&w| (w, *span_id)).collect();
        assert_eq!(follows, linked, "each wait follows from the execution");

        let events = capture.events.lock().unwrap().clone();
        let finished: Vec<_> = events
            .iter()
            .filter(|e| e.parent == Some(*span_id))
            .collect();
        assert_eq!(finished.len(), 1, "{events:?}");
        assert_eq!(finished[0].level, Level::DEBUG);
        assert!(
            finished[0].fields.contains("outcome=Completed"),
            "{finished:?}"
        );
        let joined: Vec<_> = events.iter().filter(|e| e.level == Level::TRACE).collect();
        assert_eq!(
            joined.len(),
            5,
            "one event per coalesced caller: {events:?}"
        );
        assert!(joined.iter().all(|e| e.fields.contains("group=users")));
        assert!(
            joined
                .iter()
                .all(|e| e.fields.contains("wait=Received(Completed)")),
            "{joined:?}"
        );
        let parents: Vec<_> = joined.iter().map(|e| e.parent.unwrap()).collect();
        assert_eq!(parents, waits, "each in its wait's span");
        assert!(format!("{observer:?}").contains("executions: 0"));
    }

    #[test]
    fn a_takeover_gets_its_own_span_and_a_debug_event() {
        let _watchdog = singleflight_tests::watchdog!();
        let capture = Capture::new(Level::DEBUG);
        tracing::subscriber::with_default(capture.clone(), || {
            let group = Group::<String, u32>::new()
                .with_observer(Arc::new(TracingObserver::new("users")))
                .with_leader_drop_policy(LeaderDropPolicy::Takeover);
            let never = Gate::new();
            let dropped = start(Box::pin(group.call("d", || async {
                never.opened().await;
                1
            })));
            let promoted = start(Box::pin(group.call("d", || async { 2 })));
            drop(dropped);
            assert_eq!(block_on(promoted), Ok(2));
        });
        let all = capture.spans.lock().unwrap().clone();
        let spans: Vec<_> = all
            .iter()
            .filter(|(_, s)| s.name == EXECUTION_SPAN)
            .collect();
        assert_eq!(spans.len(), 2, "one span per execution: {all:?}");
        assert_eq!(all.len(), 3, "and the promoted caller's wait: {all:?}");
        assert_eq!(capture.closed.lock().unwrap().len(), 3);
        let events = capture.events.lock().unwrap().clone();
        let outcome = |id: u64| {
            events
                .iter()
                .find(|e| e.parent == Some(id))
                .map(|e| e.fields.clone())
                .unwrap_or_default()
        };
        assert!(
            outcome(spans[0].0).contains("outcome=Dropped"),
            "{events:?}"
        );
        assert!(
            outcome(spans[1].0).contains("outcome=Completed"),
            "{events:?}"
        );
        assert!(
            events.iter().any(|e| e.fields.contains("took over")),
            "{events:?}"
        );
        // TRACE is off: the waiter's event is filtered out.
        assert!(events.iter().all(|e| e.level != Level::TRACE));
    }

    #[test]
    fn reuses_and_refreshes_are_events() {
        let _watchdog = singleflight_tests::watchdog!();
        let capture = Capture::new(Level::TRACE);
        let observer = Arc::new(TracingObserver::new("users"));
        tracing::subscriber::with_default(capture.clone(), || {
            let group = singleflight_blocking::Group::<String, u32>::new()
                .with_observer(observer.clone())
                .reuse_for(std::time::Duration::from_secs(3600))
                .refresh_after(std::time::Duration::ZERO);
            assert_eq!(group.call("k", || 1), Ok(1));
            // Served the kept value; the refresh it starts runs on a thread of its own.
            assert_eq!(group.request("k").call_refreshing(|| 2), Ok(1));
            // A refresh's failure is told on the refresh's thread: called here directly.
            let flight = singleflight_core::FlightInfo::new(
                Some("users"),
                singleflight_core::FlightId::new(7),
            );
            singleflight_core::Observer::refresh_failed(&*observer, &flight);
        });
        let events = capture.events.lock().unwrap().clone();
        let with = |text: &str| -> Vec<_> {
            events
                .iter()
                .filter(|e| e.fields.contains(text))
                .cloned()
                .collect()
        };
        let reused = with("served a kept value");
        assert_eq!(reused.len(), 1, "{events:?}");
        assert_eq!(reused[0].level, Level::TRACE);
        assert!(reused[0].fields.contains("group=users"), "{reused:?}");
        let started = with("refresh started");
        assert_eq!(started.len(), 1, "{events:?}");
        assert_eq!(started[0].level, Level::DEBUG);
        let failed = with("refresh failed");
        assert_eq!(failed.len(), 1, "{events:?}");
        assert!(failed[0].fields.contains("flight=7"), "{failed:?}");
    }

    #[test]
    fn a_disabled_span_stores_nothing() {
        let _watchdog = singleflight_tests::watchdog!();
        let capture = Capture::new(Level::INFO);
        let observer = Arc::new(TracingObserver::new("users"));
        tracing::subscriber::with_default(capture.clone(), || {
            let group = Group::<String, u32>::new().with_observer(observer.clone());
            let gate = Gate::new();
            let leader = start(Box::pin(group.call("k", || async {
                gate.opened().await;
                1
            })));
            assert!(format!("{observer:?}").contains("executions: 0"));
            gate.open();
            assert_eq!(block_on(leader), Ok(1));
        });
        assert!(capture.spans.lock().unwrap().is_empty());
        assert!(capture.events.lock().unwrap().is_empty());
    }

    #[test]
    fn an_execution_is_a_root_that_follows_from_its_callers_span_and_waits_link_to_it() {
        let _watchdog = singleflight_tests::watchdog!();
        let capture = Capture::new(Level::DEBUG);
        let observer = Arc::new(TracingObserver::new("users"));
        let (leader_request, waiter_request) =
            tracing::subscriber::with_default(capture.clone(), || {
                let group = Group::<String, u32>::new()
                    .with_name("profiles")
                    .with_observer(observer.clone());
                let gate = Gate::new();
                let leader_request = tracing::info_span!("request");
                let leader = leader_request.in_scope(|| {
                    start(Box::pin(group.call("k", || async {
                        gate.opened().await;
                        1
                    })))
                });
                let waiter_request = tracing::info_span!("request");
                let waiter =
                    waiter_request.in_scope(|| start(Box::pin(group.call("k", || async { 0 }))));
                // The leader's caller goes away before the work is done (as detached work's
                // launcher may): the execution's span is nobody's child, so nothing dangles.
                gate.open();
                assert_eq!(block_on(leader), Ok(1));
                assert_eq!(block_on(waiter), Ok(1));
                (
                    leader_request.id().unwrap().into_u64(),
                    waiter_request.id().unwrap().into_u64(),
                )
            });
        let spans = capture.spans.lock().unwrap().clone();
        let find = |name: &str| {
            spans
                .iter()
                .find(|(_, s)| s.name == name)
                .unwrap_or_else(|| panic!("no {name}: {spans:?}"))
        };
        let (execution, execution_span) = find(EXECUTION_SPAN);
        let (wait, wait_span) = find(WAIT_SPAN);
        assert_eq!(execution_span.parent, None, "an execution is a root");
        assert_eq!(
            wait_span.parent,
            Some(waiter_request),
            "a wait is its caller's"
        );
        assert!(
            execution_span.fields.starts_with("group=profiles;"),
            "the group's own name"
        );
        let follows = capture.follows.lock().unwrap().clone();
        assert_eq!(
            follows,
            [(*execution, leader_request), (*wait, *execution)],
            "the execution follows from its leader's call, the wait from the execution"
        );
        assert!(format!("{observer:?}").contains("executions: 0"));
    }
}
