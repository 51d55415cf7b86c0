//! The real-service demo: an axum HTTP server whose handler reads a report from a real
//! SQLite database through a pool of 10 connections, hit by N concurrent requests over
//! loopback — first on a route without coalescing, then on the same handler coalesced
//! through `singleflight-tokio`. Prints the table and writes a latency chart (SVG).
//!
//! Run: `cargo run --release -p singleflight-examples --example axum_sqlite`
//!
//! Options: `--requests N` (default 100; at most 400, as each takes two sockets),
//! `--orders N` (rows in the orders table, default 200000; fewer make the query cheaper),
//! `--chart PATH` (default `target/axum_sqlite_latency.svg`), `--quick` (100000 orders,
//! for CI).
//! Everything listens on 127.0.0.1 and stops by itself.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use plotters::prelude::*;
use singleflight_examples::db::Db;
use singleflight_examples::load::{self, Load, Progress};
use singleflight_examples::report::{Run, ms, print_improvement};
use singleflight_examples::scale;
use singleflight_examples::server::{App, COALESCED, Server, UNCOALESCED};

const CONNECTIONS: usize = 10;
const CUSTOMER: u64 = 42;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let quick = scale::flag("--quick");
    let requests: usize = scale::value("--requests").unwrap_or(100).clamp(1, 400);
    let orders: u64 = scale::value("--orders").unwrap_or(if quick { 100_000 } else { 200_000 });
    let chart = scale::value::<PathBuf>("--chart").unwrap_or_else(|| {
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let workspace = workspace.parent().unwrap_or(&workspace);
        workspace.join("target").join("axum_sqlite_latency.svg")
    });

    println!(
        "Scenario: {requests} concurrent HTTP requests for one customer's report, over loopback,\n\
         to an axum server reading SQLite through a pool of {CONNECTIONS} connections\n"
    );
    let built = Instant::now();
    let db = Db::create(orders, CONNECTIONS)?;
    let app = Arc::new(App::new(db.clone()));
    let server = Server::start(Arc::clone(&app)).await?;
    let addr = server.addr();
    println!(
        "   database: {orders} orders in {} (built in {:.2?})",
        db.path().display(),
        built.elapsed()
    );

    // One request alone, to show what a single query costs (and to warm the page cache).
    let alone = Instant::now();
    let response = load::get(addr, &format!("{UNCOALESCED}/{CUSTOMER}")).await?;
    assert_eq!(response.status, 200, "{}", response.body);
    println!(
        "   one request alone: {:.2?} -> {}",
        alone.elapsed(),
        response.body.trim()
    );
    println!("   server: http://{addr}");

    eprintln!();
    let without = run(
        &db,
        addr,
        &format!("{UNCOALESCED}/{CUSTOMER}"),
        requests,
        "WITHOUT coalescing",
    )
    .await?;
    let with = run(
        &db,
        addr,
        &format!("{COALESCED}/{CUSTOMER}"),
        requests,
        "WITH coalescing",
    )
    .await?;
    server.shutdown().await?;
    println!();

    let (without_run, with_run) = (without.0, with.0);
    without_run.print("WITHOUT request coalescing", "DB queries");
    println!("   HTTP 200 responses:    {}\n", without.1.ok());
    with_run.print("WITH request coalescing (singleflight-tokio)", "DB queries");
    println!("   HTTP 200 responses:    {}", with.1.ok());
    println!(
        "   Roles:                 {} leader, {} shared\n",
        with.1.count_role("leader"),
        with.1.count_role("shared")
    );
    print_improvement(&without_run, &with_run, "DB queries");

    let distinct: std::collections::HashSet<_> = with.1.responses.iter().map(|r| &r.body).collect();
    assert_eq!(
        distinct.len(),
        1,
        "every coalesced caller gets the same report"
    );

    draw(&chart, &without_run, &with_run)?;
    println!("\nLatency chart: {}", chart.display());
    Ok(())
}

/// Fires the load at `path` and counts the queries it caused.
async fn run(
    db: &Db,
    addr: std::net::SocketAddr,
    path: &str,
    requests: usize,
    label: &str,
) -> Result<(Run, Load), Box<dyn Error>> {
    let before = db.queries();
    let mut progress = Progress::new(label, requests);
    let load = load::fire(addr, path, requests, |done| progress.update(done)).await?;
    let run = Run {
        requests,
        queries: db.queries() - before,
        total: load.total,
        latencies: load.latencies.clone(),
    };
    Ok((run, load))
}

/// Draws each run's latencies by percentile: the share of requests (x) answered within a
/// latency (y). The latency axis is logarithmic: the coalesced run answers in a fraction of
/// the uncoalesced one's time (about 130 ms against up to 8 s), and on a linear axis its line
/// would lie flat on the x axis.
fn draw(path: &std::path::Path, without: &Run, with: &Run) -> Result<(), Box<dyn Error>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let top = ms(without.latencies.max().max(with.latencies.max())) * 1.25;
    let fastest = |run: &Run| run.latencies.sorted().first().copied().unwrap_or_default();
    let bottom = (ms(fastest(without).min(fastest(with))) * 0.8).max(0.1);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{} concurrent requests: latency by percentile",
                without.requests
            ),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..100f64, (bottom..top).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("requests answered (%)")
        .y_desc("latency (ms, log scale)")
        .y_labels(30)
        .y_label_formatter(&|ms| format!("{ms:.0}"))
        .draw()?;
    for (run, color, name) in [
        (without, RED, "without coalescing"),
        (with, BLUE, "with coalescing"),
    ] {
        let n = run.latencies.len() as f64;
        let points = run
            .latencies
            .sorted()
            .iter()
            .enumerate()
            .map(move |(i, &latency)| ((i + 1) as f64 * 100.0 / n, ms(latency)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}
