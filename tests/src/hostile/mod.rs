//! The hostile-types suite: user code that panics or calls back into the group at every
//! place the core runs it, on every front-end (DESIGN.md rule 14).
//!
//! Each case runs in a process of its own (the test binary re-executes itself, see
//! [`main`]): a case that aborts (a panic during a panic) or hangs then fails alone, with
//! its stage, and nothing else allocates while it is measured. Every wait is bounded: a
//! case that does not end within [`WATCHDOG`] fails with the stage it was stuck at.
//!
//! For every case, besides its own outcome table row: every call returns, callers not at
//! fault get the outcome, the work runs once per flight, the next call on the key leads,
//! `in_flight()` ends at 0 and the live heap (bytes and blocks, counted by the binary's
//! global allocator) returns exactly to what it was before the group was made (see
//! [`run_body`] for how runtimes' own bookkeeping is kept out of the count).
//!
//! | case | who panics | everyone else |
//! |---|---|---|
//! | `Clone` of the value panics on the leader's side (clone #1: the leader's copy for its waiters) | the leader's call | every waiter gets the value (the original goes to them) |
//! | `Clone` panics on the first, a middle or the last cloning waiter (clone #2, #3, #4 of four waiters; the last waiter to receive takes the original) | that one waiter's call | the leader and the other waiters get the value |
//! | `leader_started` (or `flight_started` / `execution_started` under the default `leader_started`) panics while two callers join | the caller that started the flight | the flight is abandoned like a dropped leader's: the oldest waiter takes over (runs its work), the other gets its value; under `FailWaiters` (async front-ends) both get `LeaderDropped` |
//! | `leader_finished` (or `execution_finished` / `flight_finished` under the default) panics | the leader's call | the outcome is already published: the waiters get the value |
//! | `waiter_finished` panics (a waiter receiving the value) | that waiter's call | the leader and the other waiter get the value |
//! | `waiter_finished` panics for a waiter that leaves (async: its call dropped; blocking: timed out) | the leaving call (its drop, or its timed-out call) | the flight goes on: the leader and the other waiter get the value |
//! | a leading call dropped while its task unwinds from another panic, whose `execution_finished` hook (for `Execution::Dropped`) panics (async front-ends) | the caller's own panic goes on; the hook's second panic is caught and discarded (escaping, it would abort) | the oldest waiter takes over, the other gets its value |
//! | `takeover` panics (the waiter promoted after `leader_started` panicked) | the promoted waiter's call | leadership passes on: the next waiter runs its work |
//! | `execution_started` panics at a takeover | the promoted waiter's call | as `takeover` |
//! | `timeout` panics | the timed-out waiter's call (instead of `Timeout`) | the leader and the other waiter get the value |
//! | `Eq` panics probing a key in flight (same key) or a new key (a collision) | that caller's call | the flight goes on; its callers get the value |
//! | `Hash` panics, for a key in flight and for a new key | that caller's call | the flight goes on; its callers get the value |
//! | `ToOwned` (the key's `Clone`) panics starting a flight | that caller's call | nothing is registered |
//! | a key whose `Drop` calls `in_flight`, `contains`, `waiters` and `forget` (the group's copy, dropped when its flight ends, or after `forget`) | nobody: no deadlock | everyone gets the value |
//! | the work's state panics when dropped after producing its value | async: the leader's call (its waiters get the value); blocking: counts as the work panicking | blocking waiters get `Error::Panicked` |
//! | detached work whose value's clone #1 panics (async front-ends) | the spawned task (the panic stays there) or the one receiver that made that clone | the launcher and the waiters get the value |
//! | `waiters(key)` during a detached call (async front-ends) | — | the launcher is the leader and is not counted |

mod cases;
mod fronts;
mod types;

use std::future::Future;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use fronts::{Async, AsyncGroup, Blocking, Front};
pub use types::{Bomb, ClonePlan, HKey, HValue, HWork, Hook, OnDrop, Trap, Tripwire, WorkFuture};

use singleflight_conformance::yield_now;

/// How long a case may run before it fails instead of hanging.
pub const WATCHDOG: Duration = Duration::from_secs(20);

/// How long a case waits for one observable condition (a waiter count, a caller ending).
pub const BOUND: Duration = Duration::from_secs(10);

/// How long the live heap may take to come back once a case is over (threads exiting,
/// runtimes freeing finished tasks).
const SETTLE: Duration = Duration::from_secs(2);

/// What a case is doing, for the watchdog's message.
static STAGE: Mutex<&str> = Mutex::new("starting");

/// Records what the case waits for next.
pub fn stage(what: &'static str) {
    *STAGE.lock().unwrap() = what;
}

/// Yields until `condition` holds, failing after [`BOUND`].
pub async fn wait_for(what: &'static str, mut condition: impl FnMut() -> bool) {
    stage(what);
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < BOUND, "gave up waiting until {what}");
        yield_now().await;
        std::thread::yield_now();
    }
}

/// The same, for a thread that cannot yield to a runtime.
pub fn wait_for_blocking(what: &'static str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < BOUND, "gave up waiting until {what}");
        std::thread::yield_now();
    }
}

/// Live heap: bytes and blocks allocated and not freed, by the binary's global allocator
/// (both 0 in a binary that does not install [`stats_alloc::INSTRUMENTED_SYSTEM`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Live {
    /// Bytes.
    pub bytes: isize,
    /// Blocks.
    pub blocks: isize,
}

impl Live {
    /// Reads the counters now.
    pub fn now() -> Self {
        let stats = stats_alloc::INSTRUMENTED_SYSTEM.stats();
        Self {
            bytes: stats.bytes_allocated as isize - stats.bytes_deallocated as isize,
            blocks: stats.allocations as isize - stats.deallocations as isize,
        }
    }
}

/// A case of the suite on one front-end.
pub struct Case {
    /// `blocking`, `tokio_current_thread`, ...
    pub front: &'static str,
    /// The case's name.
    pub name: &'static str,
    run: fn(),
}

impl Case {
    /// `front::name`.
    pub fn id(&self) -> String {
        format!("{}::{}", self.front, self.name)
    }
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id())
    }
}

/// How many times a case may run before its heap must have come back once.
const RUNS: usize = 3;

/// Runs one case's body on `F` in this process and prints its `RESULT` line: the live heap
/// before the group existed and after everything was dropped. Fails (panics) if the body
/// fails, or if the heap does not come back.
///
/// The smol and async-std executors keep global bookkeeping (sleeper lists, queues) that
/// grows to a high-water mark as threads park and wake, and is never freed; a run that
/// pushes it a little higher leaves a few bytes behind that are the executor's, not the
/// group's (seen: one block of 32 bytes, now and then, on smol and async-std; never on
/// tokio or with blocking threads). So the case runs once unmeasured first (the runtime
/// grows to what the case needs), and a measured run whose heap does not come back exactly
/// is repeated, up to three runs: a leak of the group or of a call recurs in every run,
/// executor growth does not. Each run's figures are printed.
pub fn run_body<F: Front, Fut: Future<Output = ()>>(body: fn() -> Fut) {
    crate::quiet_expected_panics();
    let mut runs = Vec::new();
    F::block_on(async {
        // Warm the runtime (lazily started threads, first-task allocations) outside the
        // measured section, and let the heap come to rest.
        warm_up::<F>().await;
        stage("the unmeasured run");
        body().await;
        settle().await;
        for _ in 0..RUNS {
            let before = Live::now();
            body().await;
            stage("the live heap comes back");
            let start = Instant::now();
            let mut after = Live::now();
            while after != before && start.elapsed() < SETTLE {
                yield_now().await;
                std::thread::sleep(Duration::from_millis(1));
                after = Live::now();
            }
            runs.push((before, after));
            if after == before {
                break;
            }
        }
    });
    let (before, after) = runs[0];
    let repeats: Vec<String> = runs
        .iter()
        .skip(1)
        .map(|(before, after)| {
            format!(
                "{:+} B {:+} blocks",
                after.bytes - before.bytes,
                after.blocks - before.blocks
            )
        })
        .collect();
    println!(
        "RESULT heap before: {} B in {} blocks; after: {} B in {} blocks{}",
        before.bytes,
        before.blocks,
        after.bytes,
        after.blocks,
        if repeats.is_empty() {
            String::new()
        } else {
            format!("; repeated: {}", repeats.join(", "))
        }
    );
    let (before, after) = runs[runs.len() - 1];
    assert_eq!(
        after,
        before,
        "the live heap did not come back in {} runs: {:+} B, {:+} blocks in the last",
        runs.len(),
        after.bytes - before.bytes,
        after.blocks - before.blocks
    );
}

/// One call on the runtime, then a wait until the heap is still: a case's baseline is
/// taken after the runtime did its lazy set-up.
async fn warm_up<F: Front>() {
    let group = std::sync::Arc::new(F::group(Default::default(), None));
    let started = std::sync::Arc::default();
    let caller = F::spawn_call(&group, HKey::new(0), HWork::value(&started, 0), None);
    caller.join().await;
    drop(group);
    settle().await;
}

/// Waits until the live heap has not changed for 20 polls in a row (threads exiting,
/// runtimes freeing finished tasks), or [`SETTLE`].
async fn settle() {
    let start = Instant::now();
    let mut still = 0;
    let mut last = Live::now();
    while still < 20 && start.elapsed() < SETTLE {
        yield_now().await;
        std::thread::sleep(Duration::from_millis(1));
        let now = Live::now();
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
}

/// The cases of every front-end.
pub fn all_cases() -> Vec<Case> {
    let mut all = Vec::new();
    all.extend(cases::cases::<Blocking>("blocking"));
    all.extend(cases::cases::<Async<crate::setups::TokioCurrentThread>>(
        "tokio_current_thread",
    ));
    all.extend(cases::cases::<Async<crate::setups::TokioMultiThread>>(
        "tokio_multi_thread",
    ));
    all.extend(cases::cases::<Async<crate::setups::Smol>>("smol"));
    all.extend(cases::cases::<Async<crate::setups::AsyncStd>>("async_std"));
    all
}

/// The test binary's `main`: with `--case ID`, runs that case in this process (with a
/// watchdog); otherwise runs every case whose id contains one of the arguments (all of
/// them without arguments) each in a child process, one line per case (one character
/// with `-q`, as libtest), and a summary in libtest's words. Exits non-zero if any case
/// failed. `--list` lists the cases; `--ignored` runs none (no case is ignored).
pub fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|arg| arg == "--case") {
        let id = args.get(i + 1).expect("--case needs an id");
        std::process::exit(run_in_process(id));
    }
    assert!(
        Live::now().blocks > 0,
        "the binary must install stats_alloc::INSTRUMENTED_SYSTEM as its global allocator"
    );
    let filters: Vec<&String> = args.iter().filter(|arg| !arg.starts_with('-')).collect();
    let list = args.iter().any(|arg| arg == "--list");
    // libtest's terse output: one character per case, then the summary.
    let quiet = args.iter().any(|arg| arg == "-q" || arg == "--quiet");
    if args.iter().any(|arg| arg == "--ignored") {
        // No case is ignored.
        println!("\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
        return;
    }
    let cases: Vec<Case> = all_cases()
        .into_iter()
        .filter(|case| filters.is_empty() || filters.iter().any(|f| case.id().contains(*f)))
        .collect();
    if list {
        for case in &cases {
            println!("{}: test", case.id());
        }
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let start = Instant::now();
    let (mut passed, mut failed) = (0, Vec::new());
    println!("running {} hostile cases, one process each", cases.len());
    for case in &cases {
        let case_start = Instant::now();
        let (ok, output) = run_child(&exe, &case.id());
        let heap = output
            .lines()
            .find_map(|line| line.strip_prefix("RESULT "))
            .unwrap_or("heap not measured")
            .to_string();
        let took = case_start.elapsed();
        match (ok, quiet) {
            (true, true) => print!("."),
            (false, true) => print!("F"),
            (true, false) => println!("test {} ... ok ({took:.2?}; {heap})", case.id()),
            (false, false) => println!("test {} ... FAILED ({took:.2?}; {heap})", case.id()),
        }
        if ok {
            passed += 1;
        } else {
            failed.push((case.id(), output));
        }
        let _ = std::io::stdout().flush();
    }
    if quiet {
        println!();
    }
    if !failed.is_empty() {
        println!("\nfailures:");
        for (id, output) in &failed {
            println!("---- {id} ----\n{output}");
        }
        println!("\nfailures:");
        for (id, _) in &failed {
            println!("    {id}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; 0 ignored; 0 measured; 0 filtered out; finished in {:.2}s",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        start.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}

/// Runs case `id` in a child process, killing it if it outlives the watchdog by far; its
/// success and its combined output.
fn run_child(exe: &std::path::Path, id: &str) -> (bool, String) {
    let out_path = std::env::temp_dir().join(format!(
        "singleflight-hostile-{}-{}.log",
        std::process::id(),
        id.replace("::", "-")
    ));
    let out = std::fs::File::create(&out_path).expect("create the case's log");
    let mut child = Command::new(exe)
        .args(["--case", id])
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("share the log"))
        .stderr(out)
        .spawn()
        .expect("start the case's process");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the case's process") {
            break Some(status);
        }
        if start.elapsed() > WATCHDOG * 2 {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        // A bound on the child's life, not an ordering: poll its exit every few ms.
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut output = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    match status {
        Some(status) if status.success() => (true, output),
        Some(status) => {
            output.push_str(&format!("\n(the case's process ended: {status})"));
            (false, output)
        }
        None => {
            output.push_str("\n(the case's process was killed: it outlived its watchdog)");
            (false, output)
        }
    }
}

/// Runs case `id` here, under the watchdog; the process's exit code.
fn run_in_process(id: &str) -> i32 {
    let Some(case) = all_cases().into_iter().find(|case| case.id() == id) else {
        eprintln!("no case {id}");
        return 2;
    };
    let (done, finished) = std::sync::mpsc::channel();
    let run = case.run;
    std::thread::Builder::new()
        .name(id.to_string())
        .spawn(move || {
            let result = std::panic::catch_unwind(run);
            let _ = done.send(result.map_err(|payload| crate::panic_message(&*payload)));
        })
        .expect("spawn the case's thread");
    match finished.recv_timeout(WATCHDOG) {
        Ok(Ok(())) => 0,
        Ok(Err(message)) => {
            eprintln!("case failed: {message}");
            1
        }
        Err(_) => {
            eprintln!(
                "watchdog: hung for {WATCHDOG:?} at stage: {}",
                STAGE.lock().unwrap()
            );
            1
        }
    }
}

/// Builds the case list of one front-end: `cases![F, "front"; name, ...]`.
macro_rules! case_list {
    ($front:ty, $label:expr; $($case:ident),* $(,)?) => {
        vec![$(
            $crate::hostile::Case {
                front: $label,
                name: stringify!($case),
                run: || $crate::hostile::run_body::<$front, _>($case::<$front>),
            }
        ),*]
    };
}
use case_list;
