//! What the layer holds while 50 callers read one 2 MiB body, counted by a global
//! allocator: the body once (shared chunks, never copied per caller), plus a small,
//! stated overhead per caller.

use std::alloc::System;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use singleflight_tower::CoalesceLayer;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tokio::sync::mpsc;
use tower::{Layer as _, ServiceExt as _};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The bytes allocated now.
fn live() -> isize {
    let stats = GLOBAL.stats();
    stats.bytes_allocated as isize - stats.bytes_deallocated as isize
}

/// The most [`live`] bytes seen at a sample.
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn sample() {
    PEAK.fetch_max(live(), Ordering::Relaxed);
}

const CHUNK: usize = 64 * 1024;
const CHUNKS: usize = 32;
const BODY: usize = CHUNK * CHUNKS;
const CALLERS: usize = 50;
/// The overhead allowed per caller: its task, its request, its copy of the response head
/// and its place in the shared body.
const PER_CALLER: usize = 16 * 1024;

struct Chunks {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|c| c.map(|c| Ok(Frame::data(c))))
    }
}

/// One round: 50 callers read the body to its end, keeping only its length and a checksum.
async fn round(executions: &'static AtomicUsize) {
    let layer = CoalesceLayer::new();
    let inner = tower::service_fn(move |_: Request<()>| {
        executions.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            for i in 0..CHUNKS {
                if tx.send(Bytes::from(vec![i as u8; CHUNK])).await.is_err() {
                    return;
                }
            }
        });
        let response = Response::builder()
            .header("content-length", BODY.to_string())
            .body(Chunks { rx })
            .unwrap();
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let service = layer.layer(inner);
    let calls = (0..CALLERS).map(|_| {
        let service = service.clone();
        async move {
            let response = service
                .oneshot(Request::get("/report").body(()).unwrap())
                .await
                .unwrap();
            let mut body = response.into_body();
            let (mut len, mut sum) = (0usize, 0u64);
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    len += data.len();
                    sum += data.iter().map(|&b| u64::from(b)).sum::<u64>();
                }
            }
            (len, sum)
        }
    });
    let results = futures_join_all(calls).await;
    let expected_sum: u64 = (0..CHUNKS as u64).map(|i| i * CHUNK as u64).sum();
    assert!(results.iter().all(|&r| r == (BODY, expected_sum)));
}

/// Polls every future to its end on this task (no spawned tasks per caller, so what is
/// counted is the layer's, not the runtime's), sampling the bytes allocated after each
/// future's poll.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(f) = future {
                let poll = f.as_mut().poll(cx);
                sample();
                match poll {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *future = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

#[test]
fn fifty_readers_of_a_two_mib_body_hold_it_once() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    static EXECUTIONS: AtomicUsize = AtomicUsize::new(0);
    let executions = &EXECUTIONS;
    // A first round warms the runtime up.
    runtime.block_on(round(executions));
    let before = live();
    PEAK.store(before, Ordering::SeqCst);
    runtime.block_on(round(executions));
    let peak = (PEAK.load(Ordering::SeqCst) - before) as usize;
    let after = (live() - before).max(0) as usize;
    let bound = BODY * 3 / 2 + CALLERS * PER_CALLER;
    println!(
        "{CALLERS} callers of a {} KiB body: peak {} KiB above the baseline ({:.2}× the body), \
         bound {} KiB; {} KiB left after the round",
        BODY / 1024,
        peak / 1024,
        peak as f64 / BODY as f64,
        bound / 1024,
        after / 1024
    );
    assert_eq!(
        executions.load(Ordering::SeqCst),
        2,
        "one execution per round"
    );
    assert!(peak <= bound, "peak {peak} bytes over the bound {bound}");
    assert!(after < 64 * 1024, "the round left {after} bytes behind");
}
