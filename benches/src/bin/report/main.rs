//! The comparison report: runs every scenario for us and every peer, interleaved, and
//! prints a Markdown table (our figure, each peer's, the ratio to the best peer) and the
//! targets, and draws an SVG chart of herd overhead against the herd size.
//!
//! ```text
//! cargo run --release -p singleflight-benches --bin report [-- --quick] [--chart PATH] [--redis-only]
//! ```
//!
//! `--blocking-herd` runs the blocking herd alone and prints its rows.
//!
//! `--quick` runs short rounds (about a minute on 2 cores) for CI; its figures are printed,
//! not asserted. See `benches/README.md`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use singleflight_benches::peers::{
    NoCoalescing, Ours, OursBlocking, OursBlockingStats, OursStats, Payload,
};
use singleflight_benches::scenarios::{
    self, AsyncContender, BlockingContender, HERD_SIZES, HerdRun,
};

mod blocking_herd;
mod chart;
mod redis_fleet;

/// How long each scenario runs.
#[derive(Clone, Copy, Debug)]
struct Plan {
    quick: bool,
    rounds: usize,
    uncontended_iters: u64,
    mixed_calls: usize,
    disjoint_iters: u64,
    herd_rounds: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                rounds: 5,
                uncontended_iters: 100_000,
                mixed_calls: 2_000,
                disjoint_iters: 100_000,
                herd_rounds: 5,
            }
        } else {
            // Multi-thread figures are bimodal here: the herd, cheap to run, gets more rounds.
            Self {
                quick,
                rounds: 9,
                uncontended_iters: 300_000,
                mixed_calls: scenarios::MIXED_CALLS,
                disjoint_iters: 300_000,
                herd_rounds: 15,
            }
        }
    }
}

/// Whether a bigger or a smaller figure is better.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Better {
    Lower,
    Higher,
}

/// One row of the table: a figure per contender (by column name).
#[derive(Debug)]
struct Row {
    scenario: String,
    unit: &'static str,
    better: Better,
    figures: BTreeMap<&'static str, f64>,
    notes: BTreeMap<&'static str, String>,
    /// The columns that count as peers for "the best peer".
    peers: &'static [&'static str],
}

/// The peers the targets compare with: the fastest of these is "the best peer" (the
/// baselines and the other crates are shown, not compared with).
const ASYNC_PEERS: &[&str] = &[
    "singleflight-async",
    "uniflight",
    "asyncband",
    "quick_cache",
];
/// See [`ASYNC_PEERS`]: the blocking ones.
const BLOCKING_PEERS: &[&str] = &["quick_cache", "moka"];

impl Row {
    fn new(scenario: impl Into<String>, unit: &'static str, better: Better) -> Self {
        let scenario = scenario.into();
        Self {
            peers: if scenario.contains("blocking") {
                BLOCKING_PEERS
            } else {
                ASYNC_PEERS
            },
            scenario,
            unit,
            better,
            figures: BTreeMap::new(),
            notes: BTreeMap::new(),
        }
    }

    /// The best figure among the peers that the targets name.
    fn best_peer(&self) -> Option<(&'static str, f64)> {
        self.figures
            .iter()
            .filter(|(name, _)| self.peers.contains(name))
            .map(|(name, value)| (*name, *value))
            .reduce(|a, b| match self.better {
                Better::Lower if b.1 < a.1 => b,
                Better::Higher if b.1 > a.1 => b,
                _ => a,
            })
    }

    /// How many times better than the best peer we are (above 1: we lead).
    fn lead(&self) -> Option<f64> {
        let ours = *self.figures.get(OURS)?;
        let (_, best) = self.best_peer()?;
        Some(match self.better {
            Better::Lower => best / ours,
            Better::Higher => ours / best,
        })
    }
}

/// Table columns: ours, the floor, then the peers (an async peer and its blocking API
/// share a column).
const OURS: &str = "ours";
const FLOOR: &str = "no coalescing";
/// The blocking herd's second floor: each thread unparked in turn.
const UNPARK_FLOOR: &str = "unpark floor";
const COLUMNS: [&str; 12] = [
    OURS,
    "Shared+Mutex baseline",
    "Mutex+Condvar baseline",
    "uniflight",
    "quick_cache",
    "asyncband",
    "singleflight-async",
    "rs-singleflight",
    "async_singleflight",
    "moka",
    FLOOR,
    UNPARK_FLOOR,
];

fn column(name: &str) -> &'static str {
    match name {
        n if n.starts_with("singleflight (ours)")
            || n.starts_with("singleflight-blocking (ours)") =>
        {
            OURS
        }
        n if n.starts_with("quick_cache") => "quick_cache",
        n if n.starts_with("moka") => "moka",
        n => COLUMNS
            .iter()
            .find(|c| **c == n)
            .copied()
            .unwrap_or_else(|| panic!("no column for {n}")),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

fn ns_per_call(elapsed: Duration, calls: u64) -> f64 {
    elapsed.as_nanos() as f64 / calls as f64
}

/// Runs `measure` for every contender, `rounds` times interleaved; returns medians by name.
fn interleaved<C: Copy>(
    contenders: &[C],
    name: impl Fn(&C) -> &'static str,
    rounds: usize,
    measure: impl FnMut(&C) -> f64,
) -> Vec<(&'static str, f64)> {
    interleaved_samples(contenders, name, rounds, measure)
        .into_iter()
        .map(|(name, samples)| (name, median(samples)))
        .collect()
}

/// Runs `measure` for every contender, `rounds` times interleaved, after one untimed
/// round; returns every round's result by name.
fn interleaved_samples<C: Copy, R>(
    contenders: &[C],
    name: impl Fn(&C) -> &'static str,
    rounds: usize,
    mut measure: impl FnMut(&C) -> R,
) -> Vec<(&'static str, Vec<R>)> {
    // One untimed round first: whoever runs first would otherwise pay for the runtime's and
    // the allocator's first touches (worker threads' arenas, cold caches), which a median
    // of two or three rounds does not discard.
    for contender in contenders {
        measure(contender);
    }
    let mut samples: Vec<Vec<R>> = (0..contenders.len())
        .map(|_| Vec::with_capacity(rounds))
        .collect();
    for _ in 0..rounds {
        for (contender, samples) in contenders.iter().zip(&mut samples) {
            samples.push(measure(contender));
        }
    }
    contenders
        .iter()
        .zip(samples)
        .map(|(contender, samples)| (name(contender), samples))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--herd-child") {
        herd_child(&args[i + 1], args[i + 2].parse().expect("a herd size"));
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--blocking-herd-child") {
        blocking_herd::child(&args[i + 1], args[i + 2].parse().expect("a herd size"));
        return;
    }
    let plan = Plan::new(args.iter().any(|a| a == "--quick"));
    if args.iter().any(|a| a == "--redis-only") {
        redis_fleet::print(redis_fleet::run(plan.quick).as_ref());
        return;
    }
    let chart_path = args
        .iter()
        .position(|a| a == "--chart")
        .map(|i| PathBuf::from(&args[i + 1]))
        .unwrap_or_else(|| PathBuf::from("target/singleflight-report.svg"));
    let started = std::time::Instant::now();
    if args.iter().any(|a| a == "--blocking-herd") {
        return blocking_herd::report_alone(&plan);
    }

    let mut async_list = singleflight_benches::peers::async_contenders();
    let mut blocking_list = singleflight_benches::peers::blocking_contenders();
    let async_floor = scenarios::async_contender::<NoCoalescing, NoCoalescing>();
    let blocking_floor = scenarios::blocking_contender::<NoCoalescing>();
    let mut rows = Vec::new();

    eprintln!("uncontended ({} rounds)…", plan.rounds);
    let current = scenarios::current_thread();
    async_list.push(async_floor);
    let mut row = Row::new("uncontended async", "ns/call", Better::Lower);
    for (name, value) in interleaved(
        &async_list,
        |c| c.name,
        plan.rounds,
        |c| {
            ns_per_call(
                (c.uncontended)(&current, plan.uncontended_iters),
                plan.uncontended_iters,
            )
        },
    ) {
        row.figures.insert(column(name), value);
    }
    rows.push(row);
    blocking_list.push(blocking_floor);
    let mut row = Row::new("uncontended blocking", "ns/call", Better::Lower);
    for (name, value) in interleaved(
        &blocking_list,
        |c| c.name,
        plan.rounds,
        |c| {
            ns_per_call(
                (c.uncontended)(plan.uncontended_iters),
                plan.uncontended_iters,
            )
        },
    ) {
        row.figures.insert(column(name), value);
    }
    rows.push(row);
    async_list.pop();
    blocking_list.pop();

    eprintln!("stats…");
    let stats_rows = stats(&plan, &current);

    eprintln!("herd ({} rounds per size)…", plan.herd_rounds);
    let workers = scenarios::two_workers();
    // The no-coalescing column holds a reference: tasks that all wait on one watch channel
    // set at the work's end, with no map and nothing coalesced (see `scenarios::herd_reference`).
    let mut herd_list = async_list.clone();
    herd_list.push(scenarios::AsyncContender {
        herd: scenarios::herd_reference,
        ..scenarios::async_contender::<NoCoalescing, NoCoalescing>()
    });
    let mut herd_series: Vec<(&'static str, Vec<(usize, f64)>)> = herd_list
        .iter()
        .map(|c| match column(c.name) {
            FLOOR => ("tokio watch (reference)", Vec::new()),
            _ => (c.name, Vec::new()),
        })
        .collect();
    for n in HERD_SIZES {
        let results = interleaved_samples(
            &herd_list,
            |c| c.name,
            plan.herd_rounds,
            |c| (c.herd)(&workers, n),
        );
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mut arrival = Row::new(format!("herd of {n}: last arrival"), "ms", Better::Lower);
        let mut overhead = Row::new(format!("herd of {n}: overhead"), "ms", Better::Lower);
        let mut fan_out = Row::new(format!("herd of {n}: fan-out"), "ms", Better::Lower);
        let mut once = Row::new(
            format!("herd of {n}: rounds that ran the work once"),
            "rounds",
            Better::Higher,
        );
        for ((name, runs), series) in results.into_iter().zip(&mut herd_series) {
            let column = column(name);
            let figure =
                |f: fn(&HerdRun) -> Duration| median(runs.iter().map(|r| ms(f(r))).collect());
            arrival.figures.insert(column, figure(|r| r.last_arrival));
            overhead.figures.insert(column, figure(HerdRun::overhead));
            fan_out.figures.insert(column, figure(|r| r.fan_out));
            series.1.push((n, overhead.figures[column]));
            let ran_once = runs.iter().filter(|r| r.executions == 1).count();
            let total: usize = runs.iter().map(|r| r.executions).sum();
            once.figures.insert(column, ran_once as f64);
            once.notes
                .insert(column, format!("of {}; {total} runs", runs.len()));
            if column == FLOOR {
                for row in [&mut arrival, &mut overhead, &mut fan_out] {
                    row.notes.insert(column, "tokio watch".to_owned());
                }
            } else if total != runs.len() {
                overhead
                    .notes
                    .insert(column, format!("{total} runs in {} rounds", runs.len()));
            }
        }
        if n == 10_000 {
            rows.extend([arrival, overhead, fan_out, once]);
        } else {
            rows.push(overhead);
        }
    }

    let mut row = Row::new("herd: a caller's call future", "bytes", Better::Lower);
    for contender in &async_list {
        row.figures
            .insert(column(contender.name), (contender.herd_call_bytes)() as f64);
    }
    rows.push(row);

    eprintln!("herd peak memory (one process per contender)…");
    let memory_sizes: &[usize] = if plan.quick { &[10_000] } else { &HERD_SIZES };
    for &n in memory_sizes {
        let mut row = Row::new(
            format!("herd of {n}: peak RSS growth"),
            "MiB",
            Better::Lower,
        );
        for contender in &async_list {
            if let Some(mib) = herd_memory(contender.name, n) {
                row.figures.insert(column(contender.name), mib);
            }
        }
        rows.push(row);
    }

    eprintln!("mixed ({} calls per task)…", plan.mixed_calls);
    let mixed_rounds = if plan.quick { 2 } else { 5 };
    let calls = (scenarios::MIXED_TASKS * plan.mixed_calls) as f64;
    let mut row = Row::new(
        format!(
            "mixed: {} tasks × {} calls",
            scenarios::MIXED_TASKS,
            plan.mixed_calls
        ),
        "M calls/s",
        Better::Higher,
    );
    for (name, value) in interleaved(
        &async_list,
        |c| c.name,
        mixed_rounds,
        |c| calls / (c.mixed)(&workers, plan.mixed_calls).as_secs_f64() / 1e6,
    ) {
        row.figures.insert(column(name), value);
    }
    rows.push(row);
    drop(workers);

    eprintln!("disjoint…");
    let mut row = Row::new("disjoint async, 2 threads", "ns/call", Better::Lower);
    for (name, value) in interleaved(
        &async_list,
        |c| c.name,
        plan.rounds,
        |c| ns_per_call((c.disjoint)(plan.disjoint_iters), plan.disjoint_iters * 2),
    ) {
        row.figures.insert(column(name), value);
    }
    rows.push(row);
    let mut row = Row::new("disjoint blocking, 2 threads", "ns/call", Better::Lower);
    for (name, value) in interleaved(
        &blocking_list,
        |c| c.name,
        plan.rounds,
        |c| ns_per_call((c.disjoint)(plan.disjoint_iters), plan.disjoint_iters * 2),
    ) {
        row.figures.insert(column(name), value);
    }
    rows.push(row);

    rows.extend(blocking_herd::rows(&plan));
    let redis = redis_fleet::run(plan.quick);

    print_report(&plan, &rows, &stats_rows, started.elapsed());
    redis_fleet::print(redis.as_ref());
    match chart::draw(&chart_path, &herd_series) {
        Ok(()) => println!("\nChart: `{}`", chart_path.display()),
        Err(error) => eprintln!("could not draw {}: {error}", chart_path.display()),
    }
}

/// Uncontended calls with and without a `Stats` observer, interleaved: (label, off, on).
fn stats(plan: &Plan, current: &tokio::runtime::Runtime) -> Vec<(&'static str, f64, f64)> {
    let asyncs: [AsyncContender; 2] = [
        scenarios::async_contender::<Ours, Ours<Payload>>(),
        scenarios::async_contender::<OursStats, OursStats<Payload>>(),
    ];
    let blockings: [BlockingContender; 2] = [
        scenarios::blocking_contender::<OursBlocking>(),
        scenarios::blocking_contender::<OursBlockingStats>(),
    ];
    let iters = plan.uncontended_iters;
    let rounds = plan.rounds + 2;
    let a = interleaved(
        &asyncs,
        |c| c.name,
        rounds,
        |c| ns_per_call((c.uncontended)(current, iters), iters),
    );
    let b = interleaved(
        &blockings,
        |c| c.name,
        rounds,
        |c| ns_per_call((c.uncontended)(iters), iters),
    );
    vec![
        ("uncontended async", a[0].1, a[1].1),
        ("uncontended blocking", b[0].1, b[1].1),
    ]
}

/// Runs one herd of `n` for `name` in a fresh process and returns its peak RSS growth.
fn herd_memory(name: &str, n: usize) -> Option<f64> {
    child_memory("--herd-child", name, n)
}

/// Runs `exe <mode> name n` and reads the peak RSS growth (KiB) it prints, in MiB.
fn child_memory(mode: &str, name: &str, n: usize) -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    let output = Command::new(exe)
        .args([mode, name, &n.to_string()])
        .output()
        .ok()?;
    if !output.status.success() {
        eprintln!(
            "{mode} {name} {n} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    }
    let kib: f64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// In a child process: a small warm-up herd, then one herd of `n`, and its peak RSS growth.
fn herd_child(name: &str, n: usize) {
    let contender = singleflight_benches::peers::async_contenders()
        .into_iter()
        .find(|c| c.name == name)
        .expect("a known contender");
    let workers = scenarios::two_workers();
    (contender.herd)(&workers, 10);
    print_peak_growth(|| assert!((contender.herd)(&workers, n).executions >= 1));
}

/// Resets the peak RSS, runs `f`, and prints the peak's growth in KiB.
fn print_peak_growth(f: impl FnOnce()) {
    let before = proc_status_kib("VmRSS");
    // Resets VmHWM to the current RSS (Linux 4.0+); if it fails, the warm-up's peak stays.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    f();
    let peak = proc_status_kib("VmHWM");
    println!("{}", peak.saturating_sub(before));
}

fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn format_figure(value: f64, unit: &str) -> String {
    match unit {
        "ns/call" | "rounds" | "µs" | "bytes" => format!("{value:.0}"),
        "ms" | "M calls/s" => format!("{value:.2}"),
        _ => format!("{value:.1}"),
    }
}

fn print_report(
    plan: &Plan,
    rows: &[Row],
    stats_rows: &[(&'static str, f64, f64)],
    took: Duration,
) {
    println!("# singleflight vs its peers");
    println!();
    println!(
        "Measured {} UTC, {} mode ({} rounds, medians), {} in all. Same process, contenders \
         interleaved; compare ratios, not absolute figures, across runs.",
        utc_now(),
        if plan.quick { "quick" } else { "full" },
        plan.rounds,
        format_duration(took),
    );
    println!();
    let used: Vec<&str> = COLUMNS
        .iter()
        .copied()
        .filter(|c| rows.iter().any(|r| r.figures.contains_key(c)))
        .collect();
    print!("| scenario | unit |");
    for c in &used {
        print!(" {c} |");
    }
    println!(" best peer | ours vs best peer |");
    print!("|---|---|");
    for _ in &used {
        print!("---:|");
    }
    println!("---|---:|");
    for row in rows {
        print!("| {} | {} |", row.scenario, row.unit);
        for c in &used {
            match row.figures.get(c) {
                Some(v) => {
                    let note = row
                        .notes
                        .get(c)
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default();
                    let cell = format_figure(*v, row.unit);
                    if *c == OURS {
                        print!(" **{cell}**{note} |");
                    } else {
                        print!(" {cell}{note} |");
                    }
                }
                None => print!(" |"),
            }
        }
        let best = row.best_peer().map(|(n, _)| n).unwrap_or("-");
        let lead = row.lead().map(|l| format!("{l:.2}×")).unwrap_or_default();
        println!(" {best} | {lead} |");
    }
    println!();
    println!("`ours vs best peer` is how many times better we are (above 1×: we lead).");
    println!();
    println!("| statistics | off, ns/call | `Stats` on, ns/call | cost |");
    println!("|---|---:|---:|---:|");
    for (label, off, on) in stats_rows {
        println!(
            "| {label} | {off:.0} | {on:.0} | {:+.1}% |",
            (on / off - 1.0) * 100.0
        );
    }
    println!();
    println!("## Targets");
    println!();
    let lead = |prefix: &str| {
        rows.iter()
            .find(|r| r.scenario.starts_with(prefix))
            .and_then(Row::lead)
    };
    let check = |label: &str, lead: Option<f64>, wanted: f64| match lead {
        Some(l) => println!(
            "- {label}: {l:.2}× the best peer (target ≥ {wanted}×): {}",
            if l >= wanted {
                "**met**"
            } else {
                "**not met**"
            }
        ),
        None => println!("- {label}: not measured"),
    };
    check("uncontended async", lead("uncontended async"), 2.5);
    check("uncontended blocking", lead("uncontended blocking"), 3.0);
    check("mixed throughput", lead("mixed"), 2.0);
    let row = |name: &str| rows.iter().find(|r| r.scenario == name);
    if let Some(row) = row("herd of 10000: last arrival") {
        check(
            "herd of 10,000, the last caller's arrival (from the first call)",
            row.lead(),
            1.0,
        );
    }
    if let Some(row) = row("herd of 10000: rounds that ran the work once") {
        if let Some(ours) = row.figures.get(OURS) {
            let rounds = plan.herd_rounds as f64;
            println!(
                "- herd of 10,000, the work ran once in {ours:.0} of {rounds:.0} rounds \
                 (target ≥ 8 in 9): {}",
                if *ours >= (rounds * 8.0 / 9.0).ceil() {
                    "**met**"
                } else {
                    "**not met**"
                }
            );
        }
    }
    check(
        "herd of 10,000 overhead (from the first spawn)",
        lead("herd of 10000: overhead"),
        1.0,
    );
    if let Some(row) = row("herd of 10000: overhead") {
        if let (Some(floor), Some((_, best))) = (row.figures.get(FLOOR), row.best_peer()) {
            println!(
                "  - for scale: the same tasks waiting on one tokio `watch` channel, with no map, \
                 take {floor:.2} ms ({:.2}× the best peer): most of a herd's overhead is tokio \
                 spawning, waking, polling and joining its tasks",
                best / floor,
            );
        }
    }
    check(
        "herd of 10,000 peak memory",
        lead("herd of 10000: peak"),
        1.0,
    );
    blocking_herd::print_targets(rows);
    for (label, off, on) in stats_rows {
        let cost = on / off - 1.0;
        println!(
            "- stats on, {label}: {:+.1}% (target ≤ +5%): {}",
            cost * 100.0,
            if cost <= 0.05 {
                "**met**"
            } else {
                "**not met**"
            }
        );
    }
}

fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    format!("{}m{:02}s", secs / 60, secs % 60)
}

/// `YYYY-MM-DD HH:MM` in UTC, without a date crate (Howard Hinnant's civil-from-days).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rem / 3_600,
        rem % 3_600 / 60
    )
}
