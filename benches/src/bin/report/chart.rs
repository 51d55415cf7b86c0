//! The report's chart: herd overhead per caller and in total, against the herd size.

use std::path::Path;

use plotters::prelude::*;

/// One line per contender: (herd size, overhead in ms).
pub(crate) type Series = (&'static str, Vec<(usize, f64)>);

const PALETTE: [RGBColor; 10] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Draws two panels into an SVG at `path`: overhead per caller (µs) and herd overhead (ms),
/// both against the number of callers, log-log. Ours is the first series, drawn thicker.
pub(crate) fn draw(path: &Path, series: &[Series]) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    let per_caller = |n: usize, ms: f64| ms * 1e3 / n as f64;
    draw_panel(
        &panels[0],
        "herd: overhead per caller (µs) vs callers",
        series,
        per_caller,
    )?;
    draw_panel(
        &panels[1],
        "herd: overhead (ms) vs callers",
        series,
        |_, ms| ms,
    )?;
    root.present()?;
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    series: &[Series],
    y_of: impl Fn(usize, f64) -> f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let points: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|(_, line)| {
            line.iter()
                .map(|&(n, ms)| (n as f64, y_of(n, ms).max(1e-3)))
                .collect()
        })
        .collect();
    let all = points.iter().flatten();
    let (x_min, x_max) = all.clone().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.0), hi.max(p.0))
    });
    let (y_min, y_max) = all.fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(
            (x_min * 0.8..x_max * 1.25).log_scale(),
            (y_min * 0.7..y_max * 1.4).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("callers on one key")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    for (i, ((name, _), line)) in series.iter().zip(&points).enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let width = if i == 0 { 3 } else { 1 };
        chart
            .draw_series(LineSeries::new(
                line.iter().copied(),
                color.stroke_width(width),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 16, y)], color.stroke_width(width))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}
