//! `TracingObserver` through the OpenTelemetry bridge (`tracing-opentelemetry`) into the
//! SDK's in-memory span exporter: the parents and span links OpenTelemetry receives, and
//! that no key leaves in any attribute unless asked for, and then only as its keyed hash.
#![cfg(feature = "tracing")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use opentelemetry::trace::{SpanContext, SpanId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use singleflight_blocking::Group;
use singleflight_core::{FlightInfo, Observer};
use singleflight_stats::{EXECUTION_SPAN, Fanout, TracingObserver, WAIT_SPAN};
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt as _;

/// The key every test calls for: what must never leave as it is.
const KEY: &str = "user:ada@example.com";

/// A `tracing` dispatcher whose spans end up in `exporter`, as an application wires them.
struct Otel {
    dispatch: Dispatch,
    exporter: InMemorySpanExporter,
    _provider: SdkTracerProvider,
}

impl Otel {
    fn new() -> Self {
        let exporter = InMemorySpanExporter::default();
        // The simple processor exports each span as it closes.
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("tests"));
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
        Self {
            dispatch,
            exporter,
            _provider: provider,
        }
    }

    /// Runs `f` with this as the thread's subscriber (each thread of a test enters it).
    fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        tracing::dispatcher::with_default(&self.dispatch, f)
    }

    fn spans(&self) -> Vec<SpanData> {
        self.exporter.get_finished_spans().unwrap()
    }

    /// The spans exported once `done` holds for them, polled (no sleep; a span closes on
    /// the thread that drops it last).
    fn spans_once(&self, done: impl Fn(&[SpanData]) -> bool) -> Vec<SpanData> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(Instant::now() < deadline, "spans never came: {spans:#?}");
            thread::yield_now();
        }
    }
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn context_of(span: &SpanData) -> (String, String) {
    context(&span.span_context)
}

fn context(context: &SpanContext) -> (String, String) {
    (
        context.trace_id().to_string(),
        context.span_id().to_string(),
    )
}

/// The links of `span`, as (trace id, span id).
fn links(span: &SpanData) -> Vec<(String, String)> {
    span.links
        .iter()
        .map(|link| context(&link.span_context))
        .collect()
}

/// The value of `span`'s attribute `key`, if it has one.
fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// Every string a span exports: its name, and the keys and values of its attributes, its
/// events' and its links'.
fn exported_text(span: &SpanData) -> Vec<String> {
    let kv = |kv: &opentelemetry::KeyValue| [kv.key.to_string(), kv.value.to_string()];
    let mut text = vec![span.name.to_string()];
    text.extend(span.attributes.iter().flat_map(kv));
    for event in span.events.iter() {
        text.push(event.name.to_string());
        text.extend(event.attributes.iter().flat_map(kv));
    }
    for link in span.links.iter() {
        text.extend(link.attributes.iter().flat_map(kv));
    }
    text
}

/// Asserts that no exported string contains the key, or its part after the prefix.
fn assert_no_key(spans: &[SpanData]) {
    for span in spans {
        for text in exported_text(span) {
            assert!(
                !text.contains(KEY) && !text.contains("ada@example"),
                "the key leaked in {text:?} of {span:#?}"
            );
        }
    }
}

/// Counts the waits that have started, called after the `TracingObserver`: once it counts
/// a caller, the caller's wait span exists and follows from the execution. (A group's
/// waiter count is not enough: a caller is counted as it joins, before its hook runs, and
/// a wait whose hook runs after the execution has ended has nothing to link to.)
#[derive(Default)]
struct Joined(AtomicUsize);

impl Observer for Joined {
    fn waiter_started(&self, _: &FlightInfo<'_>) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst);
        0
    }
}

/// A group named `users` observed by `observer`, and the count of its waits started.
fn group(observer: TracingObserver) -> (Group<String, u32>, Arc<Joined>) {
    let joined = Arc::new(Joined::default());
    let group = Group::<String, u32>::new()
        .with_name("users")
        // The key is printable: still not recorded without the opt-in.
        .with_key_format(|key, f| f.write_str(key))
        .with_observer(Arc::new(Fanout::new([
            Arc::new(observer) as Arc<dyn Observer>,
            joined.clone(),
        ])));
    (group, joined)
}

/// `callers` calls for `KEY` at once, each in its own `request` span: the first runs the
/// work, started before any other call and held until every other one has started
/// waiting for it.
fn herd(otel: &Otel, (group, joined): &(Group<String, u32>, Arc<Joined>), callers: usize) {
    let (release, gate) = mpsc::channel::<()>();
    let (running, started) = mpsc::channel::<()>();
    let request = |work: Box<dyn FnOnce() -> u32 + Send>| {
        otel.with(|| {
            let request = tracing::info_span!("request");
            let value = request.in_scope(|| group.call(KEY, work));
            assert_eq!(value, Ok(1));
        })
    };
    thread::scope(|s| {
        let request = &request;
        let leader = s.spawn(move || {
            request(Box::new(move || {
                running.send(()).unwrap();
                gate.recv().unwrap();
                1
            }))
        });
        // The work runs: the execution's span exists (a caller that joins before the
        // leader's hook has run has no execution to follow yet).
        started.recv().unwrap();
        let waiters: Vec<_> = (1..callers)
            .map(|_| s.spawn(move || request(Box::new(|| 2))))
            .collect();
        while joined.0.load(Ordering::SeqCst) < callers - 1 {
            thread::yield_now();
        }
        release.send(()).unwrap();
        leader.join().unwrap();
        for waiter in waiters {
            waiter.join().unwrap();
        }
    });
}

#[test]
fn a_herd_exports_one_execution_and_a_wait_linked_to_it_per_joined_caller() {
    const CALLERS: usize = 8;
    let otel = Otel::new();
    herd(&otel, &group(TracingObserver::new("users")), CALLERS);

    let spans = otel.spans_once(|spans| spans.len() == 2 * CALLERS);
    let executions = named(&spans, EXECUTION_SPAN);
    let waits = named(&spans, WAIT_SPAN);
    let requests = named(&spans, "request");
    assert_eq!(executions.len(), 1, "{spans:#?}");
    assert_eq!(waits.len(), CALLERS - 1, "{spans:#?}");
    assert_eq!(requests.len(), CALLERS, "{spans:#?}");
    let execution = executions[0];
    let (execution_trace, execution_id) = context_of(execution);

    // The execution serves every caller and belongs to none: a trace of its own, which
    // links to the call that started it (the leader's, whose request span is in a trace of
    // its own too).
    assert_eq!(execution.parent_span_id, SpanId::INVALID, "a root");
    let execution_links = links(execution);
    let [started_by] = &execution_links[..] else {
        panic!("one link, to the leader's call: {execution:#?}");
    };
    let leader = requests
        .iter()
        .find(|r| context_of(r) == *started_by)
        .expect("the link is to a request span");
    assert_ne!(context_of(leader).0, execution_trace);
    assert_eq!(
        attribute(execution, "group").as_deref(),
        Some("users"),
        "{execution:#?}"
    );

    // Each wait: one link, to the execution; a child of its own caller's request.
    for wait in &waits {
        assert_eq!(
            links(wait),
            [(execution_trace.clone(), execution_id.clone())],
            "{wait:#?}"
        );
        assert_eq!(wait.links.dropped_count, 0);
        let caller = requests
            .iter()
            .find(|r| r.span_context.span_id() == wait.parent_span_id)
            .unwrap_or_else(|| panic!("a wait is its caller's: {wait:#?}"));
        assert_eq!(caller.span_context.trace_id(), wait.span_context.trace_id());
        assert_ne!(caller.span_context.span_id(), leader.span_context.span_id());
        assert_eq!(attribute(wait, "flight"), attribute(execution, "flight"));
    }
    // Seven callers, seven distinct parents.
    let mut parents: Vec<_> = waits.iter().map(|w| w.parent_span_id).collect();
    parents.sort_by_key(|id| id.to_string());
    parents.dedup();
    assert_eq!(parents.len(), CALLERS - 1);

    assert_no_key(&spans);
    assert!(spans.iter().all(|s| attribute(s, "key.hmac").is_none()));
}

#[test]
fn a_detached_execution_outlives_its_caller_without_being_its_child() {
    // The blocking front-end's detached work: a refresh, which the call that starts it
    // hands to a thread of its own and returns from at once.
    let otel = Otel::new();
    let group = Group::<String, u32>::new()
        .with_name("profiles")
        .reuse_for(Duration::from_secs(3600))
        .refresh_after(Duration::ZERO)
        .with_observer(Arc::new(TracingObserver::new("profiles")));
    otel.with(|| assert_eq!(group.call(KEY, || 1), Ok(1)));

    let started = Arc::new(Barrier::new(2));
    let (release, gate) = mpsc::channel::<()>();
    otel.with(|| {
        let request = tracing::info_span!("request");
        let work_started = started.clone();
        let served = request.in_scope(|| {
            group.request(KEY).call_refreshing(move || {
                work_started.wait();
                gate.recv().unwrap();
                2
            })
        });
        assert_eq!(served, Ok(1), "the kept value, at once");
        drop(request);
    });
    // The caller and its span are gone; the execution it launched runs on.
    started.wait();
    let spans = otel.spans_once(|spans| !named(spans, "request").is_empty());
    assert_eq!(
        named(&spans, EXECUTION_SPAN).len(),
        1,
        "only the first call's execution has ended: {spans:#?}"
    );
    let request = named(&spans, "request")[0].clone();

    release.send(()).unwrap();
    let spans = otel.spans_once(|spans| named(spans, EXECUTION_SPAN).len() == 2);
    let refresh = named(&spans, EXECUTION_SPAN)
        .into_iter()
        .find(|s| !s.links.is_empty())
        .unwrap_or_else(|| panic!("the refresh links to its caller: {spans:#?}"))
        .clone();
    assert!(
        refresh.end_time > request.end_time,
        "the execution ended after its caller"
    );
    assert_ne!(
        refresh.parent_span_id,
        request.span_context.span_id(),
        "not the caller's child"
    );
    assert_eq!(refresh.parent_span_id, SpanId::INVALID, "a root");
    assert_ne!(
        refresh.span_context.trace_id(),
        request.span_context.trace_id()
    );
    assert_eq!(
        links(&refresh),
        [context_of(&request)],
        "it follows from it"
    );
    assert_no_key(&spans);
}

#[cfg(feature = "key-hmac")]
mod key_hmac {
    use super::*;
    use singleflight_stats::KeyHmac;

    const SECRET: &[u8] = b"the application's secret";

    #[test]
    fn with_the_opt_in_spans_carry_the_keyed_hash_and_nothing_else_of_the_key() {
        const CALLERS: usize = 4;
        let otel = Otel::new();
        let observer = TracingObserver::new("users").with_key_hmac(KeyHmac::new(SECRET));
        herd(&otel, &group(observer), CALLERS);
        let spans = otel.spans_once(|spans| spans.len() == 2 * CALLERS);
        assert_no_key(&spans);

        // The bytes a `HotKeys` fed by this group holds, so the label `observe_hot_keys`
        // exports for the key.
        let label = KeyHmac::new(SECRET).label(format!("users/{KEY}").as_bytes());
        let ours: Vec<_> = spans
            .iter()
            .filter(|s| s.name == EXECUTION_SPAN || s.name == WAIT_SPAN)
            .collect();
        assert_eq!(ours.len(), CALLERS);
        for span in ours {
            assert_eq!(
                attribute(span, "key.hmac"),
                Some(label.clone()),
                "{span:#?}"
            );
        }
        // Callers' own spans are the application's: untouched.
        assert!(
            named(&spans, "request")
                .iter()
                .all(|s| attribute(s, "key.hmac").is_none())
        );
    }

    #[test]
    fn a_key_with_no_format_is_named_by_the_keyed_hash_of_its_hash_stream() {
        let otel = Otel::new();
        let observer = Arc::new(TracingObserver::new("users").with_key_hmac(KeyHmac::new(SECRET)));
        let group = Group::<String, u32>::new().with_observer(observer.clone());
        let other = Group::<String, u32>::new().with_observer(observer);
        otel.with(|| {
            assert_eq!(group.call(KEY, || 1), Ok(1));
            assert_eq!(group.call(KEY, || 1), Ok(1));
            assert_eq!(other.call("user:bob@example.com", || 1), Ok(1));
        });
        let spans = otel.spans_once(|spans| spans.len() == 3);
        assert_no_key(&spans);
        let labels: Vec<_> = spans
            .iter()
            .map(|s| attribute(s, "key.hmac").expect("a keyed hash"))
            .collect();
        assert_eq!(labels[0], labels[1], "one key, one label");
        assert_ne!(labels[0], labels[2], "two keys, two labels");
        assert!(
            labels
                .iter()
                .all(|l| l.len() == 32 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        );
        // Not the label of the key's bytes (nor of anything formatted: the group formats
        // nothing), and not the same under another secret.
        assert_ne!(labels[0], KeyHmac::new(SECRET).label(KEY.as_bytes()));
        let elsewhere = Otel::new();
        let group = Group::<String, u32>::new().with_observer(Arc::new(
            TracingObserver::new("users").with_key_hmac(KeyHmac::new(b"another secret")),
        ));
        elsewhere.with(|| assert_eq!(group.call(KEY, || 1), Ok(1)));
        let spans = elsewhere.spans_once(|spans| spans.len() == 1);
        assert_ne!(attribute(&spans[0], "key.hmac").unwrap(), labels[0]);
    }
}
