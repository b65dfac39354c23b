//! The plots, drawn with `plotters`' SVG backend (text is left to the SVG
//! viewer's fonts, so no font library is needed to draw them):
//!
//! - [`latency_vs_rate`]: an open-loop sweep, latency percentiles (p50
//!   solid with points, p99 dashed) over the intended rate, one colour per
//!   transport and size, both axes logarithmic;
//! - [`cdf`]: the distribution of the round-trip times of every row, all
//!   runs merged, as a cumulative distribution over a logarithmic time axis.

use crate::Result;
use crate::report::{LatencyRow, size_label};
use plotters::prelude::*;
use std::path::Path;

/// Width and height of a plot, in pixels.
const SIZE: (u32, u32) = (960, 600);
/// Points of a CDF curve.
const CDF_POINTS: usize = 400;
/// Series colours: distinct on white (the "tab10" set), then repeated.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn color(index: usize) -> RGBColor {
    COLORS[index % COLORS.len()]
}

fn failed(what: &str, e: impl std::fmt::Display) -> crate::BoxError {
    format!("drawing {what}: {e}").into()
}

/// A series' name: the row's label, with the size when the plot has
/// several sizes.
fn series_name(row: &LatencyRow, sizes: usize) -> String {
    if sizes > 1 {
        format!("{} {} B", row.key.label(), size_label(row.key.size))
    } else {
        row.key.label()
    }
}

fn distinct_sizes(rows: &[&LatencyRow]) -> usize {
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.key.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes.len()
}

/// The range of a logarithmic axis holding `values`: whole decades.
fn log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (1.0, 10.0);
    }
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
    (lo, hi)
}

/// Nanoseconds as people read them: 850 ns, 12 µs, 3 ms.
fn time_label(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{} µs", ns / 1e3)
    } else {
        format!("{ns} ns")
    }
}

/// Draws the open-loop sweep of `rows` (those with an intended rate) to
/// `path`: latency from the intended send time, p50 and p99, over the rate.
pub fn latency_vs_rate(rows: &[LatencyRow], path: &Path, title: &str) -> Result<()> {
    let rows: Vec<&LatencyRow> = rows
        .iter()
        .filter(|r| r.key.rate.is_some() && !r.runs.is_empty())
        .collect();
    if rows.is_empty() {
        return Err("no open-loop measurement to plot (use --rate)".into());
    }
    let sizes = distinct_sizes(&rows);
    // One series per transport, wait, trust and size, in the rows' order.
    let mut series: Vec<(String, Vec<&LatencyRow>)> = Vec::new();
    for row in &rows {
        let name = series_name(row, sizes);
        match series.iter_mut().find(|(n, _)| *n == name) {
            Some((_, members)) => members.push(row),
            None => series.push((name, vec![row])),
        }
    }
    let (x_lo, x_hi) = log_range(rows.iter().map(|r| r.key.rate.unwrap_or(1) as f64));
    let (y_lo, y_hi) = log_range(rows.iter().flat_map(|r| {
        let s = r.median();
        [s.p50, s.p99]
    }));
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed("the background", e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo..y_hi).log_scale())
        .map_err(|e| failed("the axes", e))?;
    chart
        .configure_mesh()
        .x_desc("intended rate, requests per second (open loop)")
        .y_desc("latency from the intended send time")
        .x_label_formatter(&|x| crate::report::rate_label(*x))
        .y_label_formatter(&|y| time_label(*y))
        .draw()
        .map_err(|e| failed("the grid", e))?;
    for (index, (name, members)) in series.iter().enumerate() {
        let color = color(index);
        let mut points: Vec<(f64, f64, f64)> = members
            .iter()
            .map(|r| {
                let s = r.median();
                (r.key.rate.unwrap_or(1) as f64, s.p50, s.p99)
            })
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|&(x, p50, _)| (x, p50)),
                color.stroke_width(2),
            ))
            .map_err(|e| failed("a p50 line", e))?
            .label(format!("{name} p50"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&(x, p50, _)| Circle::new((x, p50), 3, color.filled())),
            )
            .map_err(|e| failed("the p50 points", e))?;
        chart
            .draw_series(DashedLineSeries::new(
                points.iter().map(|&(x, _, p99)| (x, p99)),
                6,
                4,
                color.stroke_width(1),
            ))
            .map_err(|e| failed("a p99 line", e))?
            .label(format!("{name} p99 (dashed)"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| failed("the legend", e))?;
    root.present()
        .map_err(|e| failed(&path.display().to_string(), e))?;
    Ok(())
}

/// Draws the cumulative distribution of every row's round-trip times (all
/// runs merged) to `path`.
pub fn cdf(rows: &[LatencyRow], path: &Path, title: &str) -> Result<()> {
    let rows: Vec<&LatencyRow> = rows.iter().filter(|r| !r.merged.is_empty()).collect();
    if rows.is_empty() {
        return Err("no latency measurement to plot".into());
    }
    let sizes = distinct_sizes(&rows);
    let (x_lo, x_hi) = log_range(
        rows.iter()
            .flat_map(|r| [r.merged.min().max(1) as f64, r.merged.max() as f64]),
    );
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed("the background", e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), 0.0..1.0)
        .map_err(|e| failed("the axes", e))?;
    chart
        .configure_mesh()
        .x_desc("latency")
        .y_desc("fraction of round trips at most")
        .x_label_formatter(&|x| time_label(*x))
        .draw()
        .map_err(|e| failed("the grid", e))?;
    for (index, row) in rows.iter().enumerate() {
        let color = color(index);
        let mut name = series_name(row, sizes);
        if let Some(rate) = row.key.rate {
            name = format!("{name} @ {}/s", crate::report::rate_label(rate as f64));
        }
        let h = &row.merged;
        let points = (0..=CDF_POINTS).map(|i| {
            let q = i as f64 / CDF_POINTS as f64;
            ((h.value_at_quantile(q).max(1)) as f64, q)
        });
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| failed("a CDF", e))?
            .label(format!(
                "{name} (p50 {})",
                time_label(h.value_at_quantile(0.5) as f64)
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| failed("the legend", e))?;
    root.present()
        .map_err(|e| failed(&path.display().to_string(), e))?;
    Ok(())
}
