//! The report's blocking herd: rows and targets (see `singleflight_benches::blocking_herd`).
//! Every figure runs from the barrier's release, as a user sees it; the fan-out (from the
//! work's end) sits next to it, with two floors: a bare `Condvar::notify_all` and a bare
//! `unpark` per thread.

use std::time::Duration;

use singleflight_benches::blocking_herd::{BLOCKING_HERD_SIZES, CONDVAR_FLOOR, UNPARK_FLOOR};
use singleflight_benches::peers::blocking_herd_contenders;

use super::{
    Better, FLOOR, OURS, Plan, Row, UNPARK_FLOOR as UNPARK_COLUMN, column, interleaved_samples,
    median,
};

/// Rounds per herd size: a round is one 20 ms herd per contender.
fn rounds(plan: &Plan) -> usize {
    if plan.quick { 15 } else { 41 }
}

fn column_of(name: &'static str) -> &'static str {
    match name {
        CONDVAR_FLOOR => FLOOR,
        UNPARK_FLOOR => UNPARK_COLUMN,
        name => column(name),
    }
}

/// Rows per herd size: the last thread's arrival, the overhead and the fan-out (µs), and
/// each contender's peak RSS growth (a fresh process each).
pub(crate) fn rows(plan: &Plan) -> Vec<Row> {
    let contenders = blocking_herd_contenders();
    let rounds = rounds(plan);
    eprintln!("blocking herd ({rounds} rounds per size)…");
    let mut rows = Vec::new();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for n in BLOCKING_HERD_SIZES {
        let mut arrival = Row::new(
            format!("blocking herd of {n}: last arrival"),
            "µs",
            Better::Lower,
        );
        let mut overhead = Row::new(
            format!("blocking herd of {n}: overhead"),
            "µs",
            Better::Lower,
        );
        let mut fan_out = Row::new(
            format!("blocking herd of {n}: fan-out"),
            "µs",
            Better::Lower,
        );
        let mut memory = Row::new(
            format!("blocking herd of {n}: peak RSS growth"),
            "MiB",
            Better::Lower,
        );
        let results = interleaved_samples(&contenders, |c| c.name, rounds, |c| (c.run)(n));
        for (name, runs) in results {
            let column = column_of(name);
            arrival.figures.insert(
                column,
                median(runs.iter().map(|r| us(r.last_arrival)).collect()),
            );
            overhead.figures.insert(
                column,
                median(runs.iter().map(|r| us(r.overhead)).collect()),
            );
            fan_out
                .figures
                .insert(column, median(runs.iter().map(|r| us(r.last)).collect()));
            let total: usize = runs.iter().map(|r| r.executions).sum();
            if total != runs.len() {
                overhead
                    .notes
                    .insert(column, format!("{total} runs in {} rounds", runs.len()));
            }
            if let Some(mib) = super::child_memory("--blocking-herd-child", name, n) {
                memory.figures.insert(column, mib);
            }
        }
        rows.extend([arrival, overhead, fan_out, memory]);
    }
    rows
}

/// In a child process: one small herd, then resets the peak RSS, runs one herd of `n` for
/// `name` and prints the peak's growth in KiB.
pub(crate) fn child(name: &str, n: usize) {
    let contender = blocking_herd_contenders()
        .into_iter()
        .find(|c| c.name == name)
        .expect("a known contender");
    (contender.run)(2);
    super::print_peak_growth(|| {
        (contender.run)(n);
    });
}

/// The targets: no slower than the better of quick_cache and moka from the release, and
/// the fan-out beside the floors.
pub(crate) fn print_targets(rows: &[Row]) {
    let met = |ok: bool| if ok { "**met**" } else { "**not met**" };
    for row in rows.iter().filter(|r| {
        r.scenario.starts_with("blocking herd of")
            && (r.scenario.ends_with("overhead") || r.scenario.ends_with("fan-out"))
    }) {
        let Some(ours) = row.figures.get(OURS).copied() else {
            println!("- {}: not measured", row.scenario);
            continue;
        };
        if let Some((name, best)) = row.best_peer() {
            let lead = best / ours;
            println!(
                "- {}: {lead:.2}× the best peer ({name}; target ≥ 1×): {}",
                row.scenario,
                met(lead >= 1.0)
            );
        }
        if row.scenario.ends_with("fan-out") {
            for (column, label) in [
                (FLOOR, "a bare `Condvar::notify_all`"),
                (UNPARK_COLUMN, "a bare `unpark` per thread"),
            ] {
                if let Some(floor) = row.figures.get(column) {
                    println!(
                        "  - {:.2}× {label} over the same threads ({floor:.0} µs)",
                        ours / floor
                    );
                }
            }
        }
    }
}

/// `--blocking-herd`: the blocking herd alone, its rows and targets.
pub(crate) fn report_alone(plan: &Plan) {
    let rows = rows(plan);
    let columns = [
        OURS,
        "Mutex+Condvar baseline",
        "quick_cache",
        "moka",
        FLOOR,
        UNPARK_COLUMN,
    ];
    println!(
        "| scenario | unit | {} | ours vs best peer |",
        columns.join(" | ")
    );
    println!("|---|---|{}---:|", "---:|".repeat(columns.len()));
    for row in &rows {
        print!("| {} | {} |", row.scenario, row.unit);
        for c in columns {
            let note = row
                .notes
                .get(c)
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            match row.figures.get(c) {
                Some(v) => print!(" {v:.1}{note} |"),
                None => print!(" |"),
            }
        }
        let lead = row.lead().map(|l| format!("{l:.2}×")).unwrap_or_default();
        println!(" {lead} |");
    }
    println!();
    print_targets(&rows);
}
