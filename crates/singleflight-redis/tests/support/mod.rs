//! A real `redis-server` per test on a free loopback port, stopped by its pid; and the
//! worker processes (this test binary re-executed) that stand in for app servers.

#![allow(dead_code, reason = "each test uses part of the support code")]
#![allow(unreachable_pub, reason = "test support module")]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use singleflight_redis::{Config, Error, FleetRole, RedisGroup};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};

/// The server binary: `SF_REDIS_SERVER`, or `redis-server` on the `PATH`.
fn server_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SF_REDIS_SERVER") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|path| path.is_file())
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A `redis-server` child on 127.0.0.1.
pub struct Server {
    binary: PathBuf,
    pub port: u16,
    child: Option<Child>,
    /// Extra arguments (kept for restarts).
    args: Vec<String>,
    /// The default user's password, if the server requires one.
    password: Option<String>,
}

impl Server {
    /// Starts a server, or returns `None` (after saying why) if there is no server binary.
    /// Under `CI=true` a missing server fails the test instead.
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// [`start`](Self::start) with extra `redis-server` arguments (`--requirepass` is
    /// understood: [`url`](Self::url) then carries the password).
    pub fn start_with(args: &[&str]) -> Option<Self> {
        let Some(binary) = server_binary() else {
            let why = "redis-server not found (install it, or set SF_REDIS_SERVER)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{why}: CI=true requires it");
            }
            // Straight to the process's stderr: libtest captures `eprintln!` of passing tests.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED (singleflight-redis): {why}");
            return None;
        };
        let password = args
            .iter()
            .position(|a| *a == "--requirepass")
            .map(|at| args[at + 1].to_owned());
        let tls_port = args
            .iter()
            .position(|a| *a == "--tls-port")
            .map(|at| args[at + 1].parse().expect("tls port"));
        let mut server = Self {
            binary,
            port: tls_port.unwrap_or_else(free_port),
            child: None,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            password,
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let tls = self.args.iter().any(|a| a == "--tls-port");
        let port = if tls {
            "0".to_owned()
        } else {
            self.port.to_string()
        };
        let child = Command::new(&self.binary)
            .args(["--bind", "127.0.0.1", "--port", &port])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(if tls { self.accepts() } else { self.pings() }) {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A TLS port accepts connections (the handshake is the test's business).
    fn accepts(&self) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
    }

    /// A server that speaks only TLS on [`port`](Self::port), with a certificate for
    /// `127.0.0.1` issued by a CA made for it (see [`Certificates`]).
    pub fn start_tls(certs: &Certificates) -> Option<Self> {
        let path = |p: &PathBuf| p.to_str().expect("utf-8 path").to_owned();
        let port = free_port().to_string();
        let (cert, key, ca) = (
            path(&certs.server_cert),
            path(&certs.server_key),
            path(&certs.ca_cert),
        );
        Self::start_with(&[
            "--tls-port",
            &port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ])
    }

    fn pings(&self) -> bool {
        use std::io::{Read, Write};
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut reply = [0; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && (&reply == b"+PONG\r\n" || &reply == b"-NOAUTH")
    }

    /// The URL of the server, with the default user's password if it has one.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal (`"STOP"`, `"CONT"`) to the server.
    pub fn signal(&self, signal: &str) {
        signal_pid(self.pid(), signal);
    }

    /// Kills the server (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A fresh, empty server on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A plain connection for the test's own commands.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped server ignores SIGKILL until continued on some systems' shells;
            // continue it first so it really exits.
            signal_pid(child.id(), "CONT");
        }
        self.kill();
    }
}

pub fn signal_pid(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Polls `condition` until it holds (a state, not a timing assumption), for at most 20 s.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One worker process: this test binary, re-executed to run only the worker entry.
pub struct Worker {
    pub pid: u32,
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
}

/// The settings a worker reads from its environment.
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    pub url: String,
    pub namespace: String,
    pub key: String,
    pub callers: usize,
    pub work_ms: u64,
    pub behaviour: &'static str,
    pub lease_ms: u64,
    pub log: PathBuf,
    pub rounds: usize,
    /// How long the circuit breaker stays open (after 3 failures in a row).
    pub breaker_ms: u64,
}

impl Worker {
    pub fn spawn(spec: &WorkerSpec) -> Self {
        Self::spawn_with(&[
            ("SF_URL", spec.url.as_str()),
            ("SF_NS", &spec.namespace),
            ("SF_KEY", &spec.key),
            ("SF_CALLERS", &spec.callers.to_string()),
            ("SF_WORK_MS", &spec.work_ms.to_string()),
            ("SF_BEHAVIOUR", spec.behaviour),
            ("SF_LEASE_MS", &spec.lease_ms.to_string()),
            ("SF_LOG", spec.log.to_str().expect("utf-8 path")),
            ("SF_ROUNDS", &spec.rounds.to_string()),
            ("SF_BREAKER_MS", &spec.breaker_ms.to_string()),
        ])
    }

    /// A worker that reads its settings from `env` (`SF_WORKER` is set too), for a test
    /// binary whose `worker_process_entry` speaks its own protocol.
    pub fn spawn_with(env: &[(&str, &str)]) -> Self {
        let mut child = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "worker_process_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SF_WORKER", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn worker");
        let pid = child.id().expect("pid");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                // libtest may print its own "test ... " before our first line.
                if let Some(at) = line.find("SF ")
                    && tx.send(line[at + 3..].to_owned()).is_err()
                {
                    break;
                }
            }
        });
        Self {
            pid,
            child,
            stdin,
            lines,
        }
    }

    /// The next line of the worker's protocol, which must start with `prefix`.
    pub async fn expect(&mut self, prefix: &str) -> String {
        let line = tokio::time::timeout(Duration::from_secs(30), self.lines.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "worker {} said nothing for 30 s (wanted {prefix})",
                    self.pid
                )
            })
            .unwrap_or_else(|| panic!("worker {} exited (wanted {prefix})", self.pid));
        assert!(
            line.starts_with(prefix),
            "worker {}: wanted {prefix}, got {line}",
            self.pid
        );
        line
    }

    /// Lets the work of the current round finish.
    pub async fn go(&mut self) {
        let _ = self.stdin.write_all(b"go\n").await;
        let _ = self.stdin.flush().await;
    }

    /// Sends one line of the worker's protocol.
    pub async fn send(&mut self, line: &str) {
        let _ = self.stdin.write_all(format!("{line}\n").as_bytes()).await;
        let _ = self.stdin.flush().await;
    }

    /// Starts the next round.
    pub async fn next(&mut self) {
        let _ = self.stdin.write_all(b"next\n").await;
        let _ = self.stdin.flush().await;
    }

    pub fn kill(&mut self) {
        signal_pid(self.pid, "KILL");
    }

    pub async fn wait(mut self) {
        drop(self.stdin);
        let status = self.child.wait().await.expect("wait worker");
        assert!(status.success(), "worker {} failed: {status}", self.pid);
    }
}

/// Executions recorded by the workers' work functions (one line each).
pub fn executions(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |s| s.lines().count())
}

pub fn temp_log(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "sf-redis-{name}-{}-{}.log",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_file(&path);
    path
}

/// Executions of round `round` (lines `"<round> <pid>"`).
pub fn executions_in(log: &std::path::Path, round: usize) -> usize {
    let prefix = format!("{round} ");
    std::fs::read_to_string(log).map_or(0, |s| s.lines().filter(|l| l.starts_with(&prefix)).count())
}

/// `tracing` events of the process (every test of the binary shares them): install once,
/// then look for a message.
pub mod warnings {
    use std::sync::{Mutex, OnceLock};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    static MESSAGES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();

    struct Recorder;

    struct Message<'a>(&'a mut String);

    impl Visit for Message<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                *self.0 = format!("{value:?}");
            }
        }
    }

    impl Subscriber for Recorder {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut text = String::new();
            event.record(&mut Message(&mut text));
            MESSAGES
                .get_or_init(Mutex::default)
                .lock()
                .unwrap()
                .push(text);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    /// Starts recording (idempotent).
    pub fn install() {
        static ONCE: OnceLock<()> = OnceLock::new();
        ONCE.get_or_init(|| {
            let _ = tracing::subscriber::set_global_default(Recorder);
        });
    }

    /// Whether a recorded message contains every one of `parts`.
    pub fn logged(parts: &[&str]) -> bool {
        MESSAGES
            .get_or_init(Mutex::default)
            .lock()
            .unwrap()
            .iter()
            .any(|m| parts.iter().all(|p| m.contains(p)))
    }
}

/// A CA and a server certificate for `127.0.0.1`, made with the `openssl` command in a
/// temporary directory (removed on drop).
pub struct Certificates {
    dir: PathBuf,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl Certificates {
    /// Makes them, or returns `None` (after saying why) without `openssl`; under
    /// `CI=true` that fails the test instead.
    pub fn generate() -> Option<Self> {
        let dir = std::env::temp_dir().join(format!(
            "sf-redis-tls-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let openssl = |args: &[&str]| {
            Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !openssl(&["version"]) {
            let why = "openssl not found (needed to make test certificates)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{why}: CI=true requires it");
            }
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED (singleflight-redis): {why}");
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        }
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write extensions");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let steps: [&[&str]; 3] = [
            &[
                &["req", "-x509"][..],
                &ec[..],
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=sf-test-ca",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ][..],
            ]
            .concat(),
            &[
                &["req"][..],
                &ec[..],
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ][..],
            ]
            .concat(),
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        ];
        for step in steps {
            assert!(openssl(step), "openssl {step:?} failed");
        }
        Some(Self {
            ca_cert: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            dir,
        })
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the [`Proxy`] does to the bytes it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Carries them as they come.
    None,
    /// Holds each chunk this long before passing it on (both directions).
    Latency(Duration),
    /// Holds every chunk until the fault ends, then passes them on (a stalled network).
    Stall,
    /// Resets both sides of a connection as soon as it carries a byte, and every new
    /// connection at its first byte (a middlebox killing connections mid-command).
    Reset,
    /// Swallows every byte, keeping connections open; when it ends, connections that lost
    /// bytes are reset (as a long partition ends in a dead connection).
    Blackhole,
    /// Every connection open while it lasts, and every one opened meanwhile, goes silent
    /// for good: nothing passes either way and nothing is reset, ever (a host gone from
    /// behind its address, a NAT or conntrack entry dropped). Connections opened after it
    /// ends flow.
    Silent,
}

/// A fault-injecting TCP proxy on 127.0.0.1 in front of `upstream`.
pub struct Proxy {
    pub port: u16,
    fault: tokio::sync::watch::Sender<Fault>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let fault = tokio::sync::watch::channel(Fault::None).0;
        let faults = fault.clone();
        let accept = tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let faults = faults.subscribe();
                pipes.spawn(async move {
                    let Ok(server) =
                        tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, upstream)).await
                    else {
                        return;
                    };
                    pipe(client, server, faults).await;
                });
                while pipes.try_join_next().is_some() {}
            }
        });
        Self {
            port,
            fault,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, which aborts every pipe.
        self.accept.abort();
    }
}

fn reset(stream: tokio::net::TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn pipe(
    mut client: tokio::net::TcpStream,
    mut server: tokio::net::TcpStream,
    mut fault: tokio::sync::watch::Receiver<Fault>,
) {
    use tokio::io::AsyncReadExt;
    let (mut up, mut down) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut lost_bytes = false;
    let mut silent = *fault.borrow_and_update() == Fault::Silent;
    loop {
        let read = tokio::select! {
            read = client.read(&mut up) => Some((true, read)),
            read = server.read(&mut down) => Some((false, read)),
            changed = fault.changed(), if !silent => {
                if changed.is_err() {
                    return;
                }
                None
            }
        };
        // The fault is looked at on every wake-up, whichever branch woke us: a chunk
        // that arrives together with the end of a blackhole must not be carried on a
        // connection that lost bytes (its replies would no longer match its commands).
        let current = *fault.borrow_and_update();
        silent |= current == Fault::Silent;
        if lost_bytes && current != Fault::Blackhole && !silent {
            reset(client);
            reset(server);
            return;
        }
        let Some((from_client, read)) = read else {
            continue;
        };
        let n = match read {
            // A silent connection never tells the other side it ended.
            Ok(0) | Err(_) if silent => std::future::pending().await,
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if silent {
            continue;
        }
        match current {
            Fault::None | Fault::Silent => {}
            Fault::Latency(delay) => tokio::time::sleep(delay).await,
            Fault::Stall => {
                let _ = fault.wait_for(|f| *f != Fault::Stall).await;
                if *fault.borrow_and_update() == Fault::Silent {
                    silent = true;
                    continue;
                }
            }
            Fault::Reset => {
                reset(client);
                reset(server);
                return;
            }
            Fault::Blackhole => {
                lost_bytes = true;
                continue;
            }
        }
        let written = if from_client {
            server.write_all(&up[..n]).await
        } else {
            client.write_all(&down[..n]).await
        };
        if written.is_err() {
            return;
        }
    }
}

// Calls shared by the test files: a fast configuration, a gate, and a leader in one group
// with a waiter in another.

/// A call's `(result, role)` as `Result<(value, role), error>`, so that a test asserts
/// on both at once.
pub trait Paired<V, E> {
    fn paired(self) -> Result<(V, FleetRole), Error<E>>;
}

impl<V, E> Paired<V, E> for (Result<V, Error<E>>, Option<FleetRole>) {
    fn paired(self) -> Result<(V, FleetRole), Error<E>> {
        let (result, role) = self;
        result.map(|value| (value, role.expect("a call with a value has a role")))
    }
}

/// A configuration with short leases and timeouts, so faults heal quickly in tests.
pub fn fast(namespace: &str) -> Config {
    Config::new(namespace)
        .lease_ttl(Duration::from_secs(1))
        .poll(Duration::from_millis(20), Duration::from_millis(200))
        .op_timeout(Duration::from_millis(200))
        .wait_timeout(Duration::from_secs(5))
}

/// A gate the leader's work waits on.
#[derive(Clone)]
pub struct Gate(watch::Sender<bool>);

impl Gate {
    pub fn new() -> Self {
        Self(watch::channel(false).0)
    }
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        rx.wait_for(|open| *open).await.expect("gate");
    }
    pub fn open(&self) {
        self.0.send_replace(true);
    }
}

/// A leader in one group and a waiter in another; returns the waiter's fleet_role and
/// value, and the number of executions.
pub async fn lead_and_wait<V, W>(
    server: &Server,
    leader_config: Config,
    waiter_config: Config,
    leader_value: V,
    waiter_value: W,
    tamper: impl AsyncFnOnce(&mut redis::aio::MultiplexedConnection),
    waiter_first: bool,
) -> (FleetRole, W, usize)
where
    V: Clone + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    W: Clone + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let leader = RedisGroup::<V>::open(&server.url(), leader_config).expect("group");
    let waiter = RedisGroup::<W>::open(&server.url(), waiter_config).expect("group");
    let (gate, runs) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    let lead = tokio::spawn({
        let (gate, runs) = (gate.clone(), Arc::clone(&runs));
        async move {
            leader
                .call("k", || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    gate.wait().await;
                    leader_value
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
                    waiter_value
                })
                .with_role()
                .await
                .paired()
        }
    });
    wait_until("waiter waits", || waiter.fleet_waiting() == 1).await;
    let mut conn = server.connection().await;
    tamper(&mut conn).await;
    if !waiter_first {
        gate.open();
    }
    let (value, fleet_role) = wait.await.expect("task").expect("value");
    gate.open();
    assert!(lead.await.expect("task").is_ok());
    (fleet_role, value, runs.load(Ordering::SeqCst))
}

/// A Sentinel deployment on loopback: one primary, one replica (`--replicaof`) and three
/// `redis-sentinel`s monitoring them as [`SERVICE`](Self::SERVICE) with quorum 2, each
/// process stopped by its pid on drop.
pub struct Deployment {
    pub primary: Server,
    pub replica: Server,
    sentinels: Vec<Child>,
    pub sentinel_ports: Vec<u16>,
    dir: PathBuf,
}

/// The sentinel binary: `SF_REDIS_SENTINEL`, or `redis-sentinel` on the `PATH`.
fn sentinel_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SF_REDIS_SENTINEL") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-sentinel"))
            .find(|path| path.is_file())
    })
}

/// One command to a loopback server, with a deadline (a stopped server never answers).
pub async fn ask<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(300)))
        .set_response_timeout(Some(Duration::from_millis(300)));
    let query = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .ok()?;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await.ok()
    };
    tokio::time::timeout(Duration::from_millis(700), query)
        .await
        .ok()
        .flatten()
}

/// A server's role (`master`, `slave`), if it answers.
pub async fn role(port: u16) -> Option<String> {
    let reply: Vec<redis::Value> = ask(port, &["ROLE"]).await?;
    match reply.first()? {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        redis::Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

impl Deployment {
    /// The service name the sentinels monitor.
    pub const SERVICE: &'static str = "sfprimary";

    /// Starts it and waits until every sentinel knows the replica and the two other
    /// sentinels (so that a failover can be authorised), or returns `None` (after saying
    /// why) without the binaries; under `CI=true` that fails the test instead.
    pub async fn start(down_after_ms: u64, failover_timeout_ms: u64) -> Option<Self> {
        let Some(binary) = sentinel_binary() else {
            let why = "redis-sentinel not found (install it, or set SF_REDIS_SENTINEL)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{why}: CI=true requires it");
            }
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED (singleflight-redis): {why}");
            return None;
        };
        let dir = std::env::temp_dir().join(format!(
            "sf-redis-sentinel-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // The replica writes the snapshot of its first sync to its directory.
        let data = dir.to_str().expect("utf-8 path");
        let primary = Server::start_with(&["--dir", data])?;
        let port = primary.port.to_string();
        let replica = Server::start_with(&["--dir", data, "--replicaof", "127.0.0.1", &port])?;
        let mut sentinels = Vec::new();
        let mut sentinel_ports = Vec::new();
        for n in 0..3 {
            let sentinel_port = free_port();
            let conf = dir.join(format!("sentinel-{n}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {service} 127.0.0.1 {port} 2\n\
                     sentinel down-after-milliseconds {service} {down_after_ms}\n\
                     sentinel failover-timeout {service} {failover_timeout_ms}\n\
                     sentinel parallel-syncs {service} 1\n",
                    dir.display(),
                    service = Self::SERVICE,
                ),
            )
            .expect("sentinel config");
            let child = Command::new(&binary)
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-sentinel");
            sentinels.push(child);
            sentinel_ports.push(sentinel_port);
        }
        let deployment = Self {
            primary,
            replica,
            sentinels,
            sentinel_ports,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut ready = deployment.replica_in_sync().await;
            for &port in &deployment.sentinel_ports {
                let master: Option<std::collections::HashMap<String, String>> =
                    ask(port, &["SENTINEL", "MASTER", Self::SERVICE]).await;
                ready &= master.is_some_and(|m| {
                    m.get("num-slaves").is_some_and(|n| n != "0")
                        && m.get("num-other-sentinels").is_some_and(|n| n == "2")
                });
            }
            if ready {
                return Some(deployment);
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels did not discover the replica and each other within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn replica_in_sync(&self) -> bool {
        let info: Option<String> = ask(self.replica.port, &["INFO", "replication"]).await;
        info.is_some_and(|i| i.contains("master_link_status:up"))
    }

    /// The sentinels' addresses, as `host:port`.
    pub fn addresses(&self) -> Vec<String> {
        self.sentinel_ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect()
    }

    /// The primary's port as the first sentinel that answers names it.
    pub async fn named_primary(&self) -> Option<u16> {
        for &port in &self.sentinel_ports {
            let answer: Option<Option<(String, u16)>> = ask(
                port,
                &["SENTINEL", "get-master-addr-by-name", Self::SERVICE],
            )
            .await;
            if let Some(Some((_, primary))) = answer {
                return Some(primary);
            }
        }
        None
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for child in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster on loopback: three primaries and three replicas
/// (`redis-server --cluster-enabled yes`, joined by `redis-cli --cluster create
/// --cluster-replicas 1`), each server stopped by its pid on drop.
pub struct ClusterDeployment {
    pub servers: Vec<Server>,
    dir: PathBuf,
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub primary: bool,
    /// Marked failed (`fail`) by the node asked.
    pub failed: bool,
    /// A replica's primary (its id).
    pub replica_of: Option<String>,
    /// The slot ranges it serves (primaries).
    pub slots: Vec<(u16, u16)>,
}

impl ClusterDeployment {
    /// Starts `primaries` primaries, each with `replicas_each` replica(s), with
    /// `cluster-node-timeout` `node_timeout_ms`; waits until every node says
    /// `cluster_state:ok` and every replica is in sync. `None` (after saying why) without
    /// the binaries; under `CI=true` that fails the test instead.
    pub async fn start(
        primaries: usize,
        replicas_each: usize,
        node_timeout_ms: u64,
    ) -> Option<Self> {
        let cli = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("redis-cli"))
                .find(|path| path.is_file())
        });
        let Some(cli) = cli else {
            let why = "redis-cli not found (install it)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{why}: CI=true requires it");
            }
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED (singleflight-redis): {why}");
            return None;
        };
        let dir = std::env::temp_dir().join(format!(
            "sf-redis-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let data = dir.to_str().expect("utf-8 path");
        let timeout = node_timeout_ms.to_string();
        let mut servers = Vec::new();
        for n in 0..primaries * (1 + replicas_each) {
            let conf = format!("nodes-{n}.conf");
            // The cluster bus listens on its own port: by default the node's port + 10000,
            // which for a free port above 55535 does not exist (and may be taken below
            // it), so the node would not start. A free port of its own, explicitly.
            let bus = free_port().to_string();
            servers.push(Server::start_with(&[
                "--cluster-port",
                &bus,
                "--dir",
                data,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                &timeout,
                // A replica takes over however long it was cut off from its primary.
                "--cluster-replica-validity-factor",
                "0",
            ])?);
        }
        let deployment = Self { servers, dir };
        let mut create = Command::new(cli);
        create.arg("--cluster").arg("create");
        for server in &deployment.servers {
            create.arg(format!("127.0.0.1:{}", server.port));
        }
        let status = create
            .args([
                "--cluster-replicas",
                &replicas_each.to_string(),
                "--cluster-yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run redis-cli --cluster create");
        assert!(status.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if deployment.ready().await {
                return Some(deployment);
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not reach cluster_state:ok with replicas in sync within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ready(&self) -> bool {
        for server in &self.servers {
            let info: Option<String> = ask(server.port, &["CLUSTER", "INFO"]).await;
            if !info.is_some_and(|i| i.contains("cluster_state:ok")) {
                return false;
            }
            let replication: Option<String> = ask(server.port, &["INFO", "replication"]).await;
            let Some(replication) = replication else {
                return false;
            };
            if replication.contains("role:slave") && !replication.contains("master_link_status:up")
            {
                return false;
            }
        }
        let Some(nodes) = self.nodes(self.servers[0].port).await else {
            return false;
        };
        let covered: usize = nodes
            .iter()
            .flat_map(|n| &n.slots)
            .map(|(a, b)| usize::from(b - a) + 1)
            .sum();
        covered == 16384
    }

    /// The seed addresses (`host:port`) of every server.
    pub fn seeds(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// `CLUSTER NODES` as `port` sees it.
    pub async fn nodes(&self, port: u16) -> Option<Vec<ClusterNode>> {
        let text: String = ask(port, &["CLUSTER", "NODES"]).await?;
        let mut nodes = Vec::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 8 {
                continue;
            }
            let address = fields[1].split('@').next()?;
            let node_port = address.rsplit(':').next()?.parse().ok()?;
            let flags = fields[2];
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|a| (a, a)),
                })
                .collect();
            nodes.push(ClusterNode {
                id: fields[0].to_owned(),
                port: node_port,
                primary: flags.contains("master"),
                failed: flags.split(',').any(|f| f == "fail"),
                replica_of: (fields[3] != "-").then(|| fields[3].to_owned()),
                slots,
            });
        }
        Some(nodes)
    }

    /// The primary serving `slot`, as `port` sees it.
    pub async fn owner(&self, port: u16, slot: u16) -> Option<ClusterNode> {
        self.nodes(port).await?.into_iter().find(|n| {
            n.primary && !n.failed && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
        })
    }

    /// The server on `port`.
    pub fn server(&mut self, port: u16) -> &mut Server {
        self.servers
            .iter_mut()
            .find(|s| s.port == port)
            .expect("a server of the cluster")
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub async fn slot(&self, key: &str) -> u16 {
        let slot: i64 = ask(self.servers[0].port, &["CLUSTER", "KEYSLOT", key])
            .await
            .expect("CLUSTER KEYSLOT");
        u16::try_from(slot).expect("a slot")
    }
}

impl Drop for ClusterDeployment {
    fn drop(&mut self) {
        self.servers.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
