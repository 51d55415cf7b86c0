//! Several worker processes, each with many concurrent callers of one hot key, count how
//! often the "expensive query" really runs: first with in-process coalescing only, then
//! with the Redis layer on top.
//!
//! ```text
//! cargo run -p singleflight-redis --example fleet            # starts its own redis-server
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run -p singleflight-redis --example fleet
//! cargo run -p singleflight-redis --example fleet -- --cluster   # a local Redis Cluster
//! ```
//!
//! Without `REDIS_URL` it starts `redis-server` (from the `PATH`) on a free loopback port
//! and stops it at the end. With `--cluster` it starts three `redis-server`s with
//! `--cluster-enabled yes`, joins them into a three-primary cluster with `redis-cli
//! --cluster create`, and opens the groups with `RedisGroup::open_cluster`.

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use singleflight_redis::{Cluster, Config, FleetRole, RedisGroup};

const WORKERS: usize = 6;
const CALLERS: usize = 50;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [first, url, mode, namespace] = args.as_slice()
        && first == "worker"
    {
        return worker(url, mode, namespace);
    }

    let cluster = args.iter().any(|a| a == "--cluster");
    let mut servers = Vec::new();
    let dir = std::env::temp_dir().join(format!("sf-fleet-example-{}", std::process::id()));
    let url = if cluster {
        // `cluster:` and the seeds, for the workers.
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut seeds = Vec::new();
        for n in 0..3 {
            // The cluster bus's port: by default the node's port + 10000, which for a free
            // port above 55535 does not exist; a free port of its own instead.
            let bus = free_port().to_string();
            let (child, port) = start_server(&[
                "--cluster-port",
                &bus,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &format!("nodes-{n}.conf"),
                "--dir",
                dir.to_str().expect("utf-8 path"),
            ]);
            servers.push(child);
            seeds.push(format!("127.0.0.1:{port}"));
        }
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&seeds)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("run redis-cli --cluster create");
        assert!(status.success(), "redis-cli --cluster create failed");
        for seed in &seeds {
            wait_for_cluster(seed);
        }
        format!("cluster:{}", seeds.join(","))
    } else {
        std::env::var("REDIS_URL").unwrap_or_else(|_| {
            let (child, port) = start_server(&[]);
            servers.push(child);
            format!("redis://127.0.0.1:{port}/")
        })
    };
    let label = if cluster { "redis cluster" } else { "redis" };

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
        let mode = if mode == "redis" { label } else { mode };
        println!(
            "== {mode}: {WORKERS} processes x {CALLERS} callers -> the query ran {executions} time(s)\n"
        );
    }

    for mut child in servers {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A free loopback port.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A `redis-server` on a free loopback port, with `extra` arguments.
fn start_server(extra: &[&str]) -> (Child, u16) {
    let port = free_port();
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
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("start redis-server (install it, or set REDIS_URL)");
    wait_for_port(port);
    (child, port)
}

/// Polls `CLUSTER INFO` (through `redis-cli`) until the node says `cluster_state:ok`.
fn wait_for_cluster(seed: &str) {
    let (host, port) = seed.rsplit_once(':').expect("host:port");
    for _ in 0..1000 {
        let info = Command::new("redis-cli")
            .args(["-h", host, "-p", port, "cluster", "info"])
            .output()
            .expect("run redis-cli");
        if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the cluster did not reach cluster_state:ok at {seed}");
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
        let mut roles = Vec::new();
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
            let group = match url.strip_prefix("cluster:") {
                Some(seeds) => RedisGroup::<String>::open_cluster(
                    &Cluster::new(seeds.split(',')),
                    Config::new(namespace),
                ),
                None => RedisGroup::<String>::open(url, Config::new(namespace)),
            }
            .expect("group");
            let calls = (0..CALLERS).map(|_| {
                let (group, executions) = (group.clone(), Arc::clone(&executions));
                tokio::spawn(
                    async move { group.call("report", || query(executions)).with_role().await },
                )
            });
            for call in calls.collect::<Vec<_>>() {
                let (result, role) = call.await.expect("task");
                result.expect("value");
                let role = role.expect("a call with a value has a role");
                roles.push(role);
            }
        }
        let role = match roles.first() {
            None => "in-process only".to_owned(),
            Some(FleetRole::Leader { generation }) => format!("led flight {generation}"),
            Some(FleetRole::Waiter { generation }) => format!("followed flight {generation}"),
            Some(other) => format!("{other:?}"),
        };
        println!(
            "  pid {:>7}: executions={} ({role})",
            std::process::id(),
            executions.load(Ordering::SeqCst)
        );
    });
}
