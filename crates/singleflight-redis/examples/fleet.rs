//! Several worker processes, each with many concurrent callers of one hot key, count how
//! often the "expensive query" really runs: first with in-process coalescing only, then
//! with the Redis layer on top.
//!
//! ```text
//! cargo run -p singleflight-redis --example fleet            # starts its own redis-server
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run -p singleflight-redis --example fleet
//! ```
//!
//! Without `REDIS_URL` it starts `redis-server` (from the `PATH`) on a free loopback port
//! and stops it at the end.

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use singleflight_redis::{Config, Outcome, RedisGroup};

const WORKERS: usize = 6;
const CALLERS: usize = 50;

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("worker") {
        let url = args.next().expect("url");
        let mode = args.next().expect("mode");
        let namespace = args.next().expect("namespace");
        return worker(&url, &mode, &namespace);
    }

    let mut server = None;
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server (install it, or set REDIS_URL)");
        server = Some(child);
        wait_for_port(port);
        format!("redis://127.0.0.1:{port}/")
    });

    let namespace = format!("example:{}", std::process::id());
    for mode in ["local", "redis"] {
        let workers: Vec<Child> = (0..WORKERS)
            .map(|_| {
                Command::new(std::env::current_exe().expect("own path"))
                    .args(["worker", &url, mode, &namespace])
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("spawn worker")
            })
            .collect();
        let mut executions = 0;
        for worker in workers {
            let output = worker.wait_with_output().expect("worker");
            let text = String::from_utf8_lossy(&output.stdout);
            print!("{text}");
            executions += text
                .lines()
                .find_map(|l| l.split_once("executions=").map(|(_, rest)| rest))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<usize>().ok())
                .unwrap_or(0);
        }
        println!(
            "== {mode:>5}: {WORKERS} processes x {CALLERS} callers -> the query ran {executions} time(s)\n"
        );
    }

    if let Some(mut child) = server {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn wait_for_port(port: u16) {
    for _ in 0..500 {
        if std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("redis-server did not start on port {port}");
}

/// The stand-in for an app server: `CALLERS` concurrent requests for one hot key.
fn worker(url: &str, mode: &str, namespace: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let executions = Arc::new(AtomicUsize::new(0));
        // The "expensive query": slow enough that the processes overlap.
        let query = |executions: Arc<AtomicUsize>| async move {
            executions.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            "report for 2026-11".to_owned()
        };
        let mut outcomes = Vec::new();
        if mode == "local" {
            let group = singleflight_tokio::Group::<String, String>::new();
            let calls = (0..CALLERS).map(|_| {
                let (group, executions) = (group.clone(), Arc::clone(&executions));
                tokio::spawn(async move { group.call("report", || query(executions)).await })
            });
            for call in calls.collect::<Vec<_>>() {
                call.await.expect("task").expect("value");
            }
        } else {
            let group = RedisGroup::<String>::open(url, Config::new(namespace)).expect("group");
            let calls = (0..CALLERS).map(|_| {
                let (group, executions) = (group.clone(), Arc::clone(&executions));
                tokio::spawn(async move { group.call("report", || query(executions)).await })
            });
            for call in calls.collect::<Vec<_>>() {
                let (_, outcome) = call.await.expect("task").expect("value");
                outcomes.push(outcome);
            }
        }
        let outcome = match outcomes.first() {
            None => "in-process only".to_owned(),
            Some(Outcome::Leader { generation }) => format!("led flight {generation}"),
            Some(Outcome::Follower { generation }) => format!("followed flight {generation}"),
            Some(other) => format!("{other:?}"),
        };
        println!(
            "  pid {:>7}: executions={} ({outcome})",
            std::process::id(),
            executions.load(Ordering::SeqCst)
        );
    });
}
