//! shared-call-py's `ratelimit` on smol: an upstream API allows 10 requests per second
//! (enforced with `governor`, the ecosystem's rate limiter) and answers in 50 ms; 100
//! concurrent identical requests arrive. Without coalescing most of them are rejected;
//! with a `singleflight_smol::Group` one upstream call serves them all.
//!
//! Run: `cargo run --release -p singleflight-examples --example ratelimit`
//! (`--quick` or `SCALE=0.1` shrink the latency; the counts stay the same).

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_lock::Barrier;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use singleflight_examples::scale::Scale;
use singleflight_smol::{Error, Group};

const REQUESTS: usize = 100;
const PER_SECOND: u32 = 10;
const ENDPOINT: &str = "/v1/exchange-rates";

/// The upstream's answer to a request over its quota (HTTP 429).
#[derive(Clone, Debug, PartialEq, Eq)]
struct RateLimited;

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("429 too many requests")
    }
}

/// An upstream API with a quota of `PER_SECOND` requests per second.
struct Upstream {
    quota: DefaultDirectRateLimiter,
    latency: Duration,
    calls: AtomicUsize,
}

impl Upstream {
    fn new(scale: Scale) -> Self {
        let per_second = NonZeroU32::new(PER_SECOND).expect("a positive quota");
        Self {
            quota: RateLimiter::direct(Quota::per_second(per_second)),
            latency: scale.ms(50.0),
            calls: AtomicUsize::new(0),
        }
    }

    /// One API call: admitted or rejected on arrival, answered after the round trip.
    async fn get(&self, endpoint: &str) -> Result<String, RateLimited> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let admitted = self.quota.check().is_ok();
        smol::Timer::after(self.latency).await;
        if admitted {
            Ok(format!("{endpoint}: EUR/USD 1.0842"))
        } else {
            Err(RateLimited)
        }
    }
}

struct Outcome {
    ok: usize,
    limited: usize,
    calls: usize,
    elapsed: Duration,
}

async fn burst(scale: Scale, group: Option<Group<String, Result<String, RateLimited>>>) -> Outcome {
    let upstream = Arc::new(Upstream::new(scale));
    let start_line = Arc::new(Barrier::new(REQUESTS + 1));
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let (upstream, group, start_line) = (
                Arc::clone(&upstream),
                group.clone(),
                Arc::clone(&start_line),
            );
            smol::spawn(async move {
                start_line.wait().await;
                match &group {
                    Some(group) => group
                        .try_call(ENDPOINT, || upstream.get(ENDPOINT))
                        .await
                        .map_err(|error| match error {
                            Error::Failed(limited) => limited,
                            other => panic!("unexpected: {other}"),
                        }),
                    None => upstream.get(ENDPOINT).await,
                }
            })
        })
        .collect();
    start_line.wait().await;
    let start = Instant::now();
    let (mut ok, mut limited) = (0, 0);
    for task in tasks {
        match task.await {
            Ok(_) => ok += 1,
            Err(RateLimited) => limited += 1,
        }
    }
    Outcome {
        ok,
        limited,
        calls: upstream.calls.load(Ordering::SeqCst),
        elapsed: start.elapsed(),
    }
}

fn main() {
    let scale = Scale::from_env();
    println!(
        "Scenario: an API allows {PER_SECOND} requests/second and answers in {:.0?};\n\
         {REQUESTS} concurrent identical requests arrive{}\n",
        scale.ms(50.0),
        scale.note()
    );
    smol::block_on(async {
        let without = burst(scale, None).await;
        println!("WITHOUT coalescing");
        println!("   Successful:         {}", without.ok);
        println!("   Failed:             {} (rate limited!)", without.limited);
        println!("   API calls made:     {}", without.calls);
        println!(
            "   Duration:           {:.3}s\n",
            without.elapsed.as_secs_f64()
        );

        let with = burst(scale, Some(Group::new())).await;
        println!("WITH coalescing (singleflight-smol)");
        println!("   Successful:         {}", with.ok);
        println!("   Failed:             {}", with.limited);
        println!("   API calls made:     {}", with.calls);
        println!("   API calls saved:    {}", REQUESTS - with.calls);
        println!("   Duration:           {:.3}s", with.elapsed.as_secs_f64());
        println!(
            "   Rate limit status:  {}",
            if with.limited == 0 {
                "no violations"
            } else {
                "VIOLATED"
            }
        );
    });
}
