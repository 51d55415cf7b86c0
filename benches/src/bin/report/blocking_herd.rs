//! The report's blocking herd: fan-out rows and their targets (see
//! `singleflight_benches::blocking_herd`).

use std::collections::BTreeMap;

use singleflight_benches::blocking_herd::{
    BLOCKING_HERD_SIZES, CONDVAR_FLOOR, blocking_herd_contenders,
};

use super::{Better, FLOOR, OURS, Plan, Row, column, interleaved};

/// Rounds per herd size: a round is one 20 ms herd per contender.
fn rounds(plan: &Plan) -> usize {
    if plan.quick { 15 } else { 41 }
}

/// One row per herd size: fan-out in µs, the bare `Condvar` floor in the floor's column.
pub(crate) fn rows(plan: &Plan) -> Vec<Row> {
    let contenders = blocking_herd_contenders();
    let rounds = rounds(plan);
    eprintln!("blocking herd ({rounds} rounds per size)…");
    let mut rows = Vec::new();
    for n in BLOCKING_HERD_SIZES {
        let mut row = Row::new(
            format!("blocking herd of {n}: fan-out"),
            "µs",
            Better::Lower,
        );
        let mut executions: BTreeMap<&'static str, usize> = BTreeMap::new();
        let results = interleaved(
            &contenders,
            |c| c.name,
            rounds,
            |c| {
                let run = (c.run)(n);
                let seen = executions.entry(c.name).or_default();
                *seen = (*seen).max(run.executions);
                run.last.as_secs_f64() * 1e6
            },
        );
        for (name, value) in results {
            let column = if name == CONDVAR_FLOOR {
                FLOOR
            } else {
                column(name)
            };
            row.figures.insert(column, value);
            if column == FLOOR {
                row.notes.insert(column, "bare Condvar".to_owned());
            } else if executions[name] != 1 {
                row.notes
                    .insert(column, format!("ran {}×", executions[name]));
            }
        }
        rows.push(row);
    }
    rows
}

/// The targets: ahead of the blocking caches (quick_cache and moka, whose sync APIs
/// coalesce loads), within 1.2× of the bare `Condvar` floor.
pub(crate) fn print_targets(rows: &[Row]) {
    let met = |ok: bool| if ok { "**met**" } else { "**not met**" };
    for row in rows
        .iter()
        .filter(|r| r.scenario.starts_with("blocking herd of"))
    {
        let Some(ours) = row.figures.get(OURS).copied() else {
            println!("- {}: not measured", row.scenario);
            continue;
        };
        let caches = ["quick_cache", "moka"]
            .iter()
            .filter_map(|c| row.figures.get(c).copied())
            .reduce(f64::min);
        if let Some(best) = caches {
            let lead = best / ours;
            print!(
                "- {}: {lead:.2}× quick_cache and moka, the better of them (target ≥ 1×): {}",
                row.scenario,
                met(lead >= 1.0)
            );
            match row.best_peer() {
                Some((name, value)) => println!("; {:.2}× the best peer ({name})", value / ours),
                None => println!(),
            }
        }
        if let Some(floor) = row.figures.get(FLOOR) {
            let ratio = ours / floor;
            println!(
                "  - {ratio:.2}× a bare `Condvar::notify_all` over the same threads \
                 ({floor:.0} µs; target ≤ 1.2×): {}",
                met(ratio <= 1.2)
            );
        }
    }
}

/// `--blocking-herd`: the blocking herd alone, its rows and targets.
pub(crate) fn report_alone(plan: &Plan) {
    let rows = rows(plan);
    let columns = [OURS, "Mutex+Condvar baseline", "quick_cache", "moka", FLOOR];
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
