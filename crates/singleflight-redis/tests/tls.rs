//! `rediss://` against a real `redis-server` that speaks only TLS, with a CA and server
//! certificate the test makes (`openssl`). Without a server or `openssl` the test skips
//! loudly, and fails under `CI=true`.
#![cfg(feature = "tls")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::{Client, TlsCertificates};
use singleflight_redis::{Config, FallbackReason, FleetRole, RedisGroup};
use support::{Certificates, Paired, Server, wait_until};
use tokio::sync::watch;

fn config() -> Config {
    Config::new("tls")
        .lease_ttl(Duration::from_secs(2))
        .poll(Duration::from_millis(20), Duration::from_millis(200))
        .op_timeout(Duration::from_millis(500))
        .wait_timeout(Duration::from_secs(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_coalesce_over_tls_and_refuse_an_unknown_certificate() {
    let Some(certs) = Certificates::generate() else {
        return;
    };
    let Some(server) = Server::start_tls(&certs) else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{}/", server.port);
    let ca = std::fs::read(&certs.ca_cert).expect("ca");
    let trusting = || {
        Client::build_with_tls(
            url.as_str(),
            TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        )
        .expect("client")
    };
    let leader = RedisGroup::<String>::new(&trusting(), config()).expect("group");
    let waiter = RedisGroup::<String>::new(&trusting(), config()).expect("group");
    let (gate, runs) = (watch::channel(false).0, Arc::new(AtomicUsize::new(0)));
    let lead = tokio::spawn({
        let (mut gate, runs) = (gate.subscribe(), Arc::clone(&runs));
        async move {
            leader
                .call("k", || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    gate.wait_for(|open| *open).await.expect("gate");
                    "over tls".to_owned()
                })
                .with_role()
                .await
                .paired()
        }
    });
    wait_until("leader runs", || runs.load(Ordering::SeqCst) == 1).await;
    let wait = tokio::spawn({
        let (waiter, runs) = (waiter.clone(), Arc::clone(&runs));
        async move {
            waiter
                .call("k", || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    "mine".to_owned()
                })
                .with_role()
                .await
                .paired()
        }
    });
    wait_until("waiter waits", || waiter.fleet_waiting() == 1).await;
    gate.send_replace(true);
    let (value, role) = wait.await.expect("task").expect("value");
    assert_eq!(value, "over tls");
    assert!(matches!(role, FleetRole::Waiter { .. }), "{role:?}");
    let (_, role) = lead.await.expect("task").expect("value");
    assert!(matches!(role, FleetRole::Leader { .. }), "{role:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // The platform's roots do not know the test CA: the certificate is refused, and the
    // call runs locally instead of trusting it.
    let stranger = RedisGroup::<String>::open(&url, config()).expect("group");
    let (value, role) = stranger
        .call("k", || async { "local".to_owned() })
        .with_role()
        .await
        .paired()
        .expect("value");
    assert_eq!(value, "local");
    assert!(
        matches!(
            role,
            FleetRole::Fallback(FallbackReason::RedisUnavailable | FallbackReason::RedisTimeout)
        ),
        "{role:?}"
    );
    // Plain text to the TLS port goes nowhere either.
    let plain =
        RedisGroup::<String>::open(&format!("redis://127.0.0.1:{}/", server.port), config())
            .expect("group");
    let (_, role) = plain
        .call("k", || async { "local".to_owned() })
        .with_role()
        .await
        .paired()
        .expect("value");
    assert!(role.is_fallback(), "{role:?}");
}
