//! Results: medians over runs, the tables, the JSON file and the SVG plot.

use crate::catalog::Transport;
use crate::driver::new_histogram;
use crate::endpoint::Counters;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::time::Duration;

/// What identifies one row: transport, size, wait and trust.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The transport.
    pub transport: Transport,
    /// Message size in bytes.
    pub size: usize,
    /// `spin`/`park`/`hybrid` for ferry; how the others wait otherwise.
    pub wait: String,
    /// `trusted`/`untrusted` for ferry-transport; `n/a` otherwise.
    pub trust: String,
}

impl Key {
    /// How the row is named in the table (`ferry-raw`, `ferry-raw/park`, ...).
    pub fn label(&self) -> String {
        let mut label = self.transport.name().to_owned();
        if self.transport.uses_wait() && self.wait != "spin" {
            let _ = write!(label, "/{}", self.wait);
        }
        if self.trust == "untrusted" {
            label.push_str("/untrusted");
        }
        label
    }
}

/// Percentiles of one latency run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// Median, ns.
    pub p50: f64,
    /// 90th percentile, ns.
    pub p90: f64,
    /// 99th percentile, ns.
    pub p99: f64,
    /// 99.9th percentile, ns.
    pub p999: f64,
    /// Maximum, ns.
    pub max: f64,
    /// Mean, ns.
    pub mean: f64,
    /// Round trips recorded.
    pub samples: u64,
}

impl Summary {
    /// Summarizes a histogram.
    pub fn of(h: &Histogram<u64>) -> Summary {
        Summary {
            p50: h.value_at_quantile(0.5) as f64,
            p90: h.value_at_quantile(0.9) as f64,
            p99: h.value_at_quantile(0.99) as f64,
            p999: h.value_at_quantile(0.999) as f64,
            max: h.max() as f64,
            mean: h.mean(),
            samples: h.len(),
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Every run of one latency row.
pub struct LatencyRow {
    /// The row.
    pub key: Key,
    /// Each run's percentiles.
    pub runs: Vec<Summary>,
    /// All runs' round trips together (for the plot).
    pub merged: Histogram<u64>,
    /// Both ends' counters over all runs.
    pub counters: Counters,
}

impl LatencyRow {
    /// An empty row.
    pub fn new(key: Key) -> LatencyRow {
        LatencyRow {
            key,
            runs: Vec::new(),
            merged: new_histogram(),
            counters: Counters::default(),
        }
    }

    /// The lowest and the highest p50 over the runs.
    pub fn p50_spread(&self) -> (f64, f64) {
        self.runs.iter().fold((f64::INFINITY, 0.0), |(lo, hi), s| {
            (lo.min(s.p50), hi.max(s.p50))
        })
    }

    /// The median of each statistic over the runs.
    pub fn median(&self) -> Summary {
        let pick = |f: fn(&Summary) -> f64| median(self.runs.iter().map(f).collect());
        Summary {
            p50: pick(|s| s.p50),
            p90: pick(|s| s.p90),
            p99: pick(|s| s.p99),
            p999: pick(|s| s.p999),
            max: pick(|s| s.max),
            mean: pick(|s| s.mean),
            samples: self.runs.iter().map(|s| s.samples).sum(),
        }
    }
}

/// Every run of one throughput row.
pub struct ThroughputRow {
    /// The row.
    pub key: Key,
    /// Each run: messages and time.
    pub runs: Vec<(u64, Duration)>,
    /// Both ends' counters over all runs.
    pub counters: Counters,
}

impl ThroughputRow {
    /// An empty row.
    pub fn new(key: Key) -> ThroughputRow {
        ThroughputRow {
            key,
            runs: Vec::new(),
            counters: Counters::default(),
        }
    }

    /// The slowest and the fastest run's messages per second.
    pub fn spread(&self) -> (f64, f64) {
        let rates = self.runs.iter().map(|&(n, t)| n as f64 / t.as_secs_f64());
        rates.fold((f64::INFINITY, 0.0), |(lo, hi), r| (lo.min(r), hi.max(r)))
    }

    /// Messages per second of the median run, and that run's message count.
    pub fn median(&self) -> (f64, u64) {
        let mut rates: Vec<(f64, u64)> = self
            .runs
            .iter()
            .map(|&(n, t)| (n as f64 / t.as_secs_f64(), n))
            .collect();
        rates.sort_by(|a, b| a.0.total_cmp(&b.0));
        rates.get(rates.len() / 2).copied().unwrap_or((f64::NAN, 0))
    }
}

/// Futex wakes and sleeps per message sent (both ends), for the
/// transports that count them.
fn per_message(key: &Key, counters: &Counters) -> Option<(f64, f64)> {
    let counts = key.transport.uses_wait()
        || matches!(key.transport, Transport::FloorSpin | Transport::FloorFutex);
    if !counts || counters.sent == 0 {
        return None;
    }
    let sent = counters.sent as f64;
    Some((counters.wakes as f64 / sent, counters.parks as f64 / sent))
}

fn floor_p50(rows: &[LatencyRow], size: usize, floor: Transport) -> Option<f64> {
    rows.iter()
        .find(|r| r.key.transport == floor && r.key.size == size && !r.runs.is_empty())
        .map(|r| r.median().p50)
}

fn floor_rate(rows: &[ThroughputRow], size: usize, floor: Transport) -> Option<f64> {
    rows.iter()
        .find(|r| r.key.transport == floor && r.key.size == size && !r.runs.is_empty())
        .map(|r| r.median().0)
}

/// A size as people write it: 64, 1K, 64K, 1M.
pub fn size_label(size: usize) -> String {
    if size >= 1 << 20 && size % (1 << 20) == 0 {
        format!("{}M", size >> 20)
    } else if size >= 1 << 10 && size % (1 << 10) == 0 {
        format!("{}K", size >> 10)
    } else {
        size.to_string()
    }
}

fn ratio(value: f64, floor: Option<f64>) -> String {
    match floor {
        Some(floor) if floor > 0.0 && value.is_finite() => format!("{:.2}", value / floor),
        _ => "-".into(),
    }
}

fn per_message_cells(key: &Key, counters: &Counters) -> (String, String) {
    match per_message(key, counters) {
        Some((wakes, parks)) => (format!("{wakes:.3}"), format!("{parks:.3}")),
        None => ("-".into(), "-".into()),
    }
}

/// The latency table.
pub fn latency_table(rows: &[LatencyRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26} {:>5} {:>9} {:>13} {:>9} {:>9} {:>9} {:>10} {:>7} {:>7} {:>7} {:>7} {:>9}",
        "transport",
        "size",
        "p50",
        "p50 of runs",
        "p90",
        "p99",
        "p99.9",
        "max",
        "×spin",
        "×futex",
        "wakes",
        "parks",
        "samples"
    );
    let _ = writeln!(
        out,
        "{:<26} {:>5} {:>64} {:>7} {:>7} {:>7} {:>7}",
        "", "B", "round trip, ns", "p50/floor", "", "/msg", "/msg"
    );
    let mut last_size = None;
    for row in rows.iter().filter(|r| !r.runs.is_empty()) {
        if last_size.is_some_and(|s| s != row.key.size) {
            out.push('\n');
        }
        last_size = Some(row.key.size);
        let s = row.median();
        let (lo, hi) = row.p50_spread();
        let (wakes, parks) = per_message_cells(&row.key, &row.counters);
        let _ = writeln!(
            out,
            "{:<26} {:>5} {:>9.0} {:>13} {:>9.0} {:>9.0} {:>9.0} {:>10.0} {:>7} {:>7} {:>7} {:>7} {:>9}",
            row.key.label(),
            size_label(row.key.size),
            s.p50,
            format!("{lo:.0}-{hi:.0}"),
            s.p90,
            s.p99,
            s.p999,
            s.max,
            ratio(s.p50, floor_p50(rows, row.key.size, Transport::FloorSpin)),
            ratio(s.p50, floor_p50(rows, row.key.size, Transport::FloorFutex)),
            wakes,
            parks,
            s.samples,
        );
    }
    out
}

fn rate_label(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2}M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1}K", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

/// The throughput table.
pub fn throughput_table(rows: &[ThroughputRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26} {:>5} {:>10} {:>17} {:>9} {:>7} {:>7} {:>7} {:>7} {:>10}",
        "transport",
        "size",
        "msgs/s",
        "runs' range",
        "GB/s",
        "×spin",
        "×futex",
        "wakes",
        "parks",
        "messages"
    );
    let _ = writeln!(
        out,
        "{:<26} {:>5} {:>38} {:>15} {:>7} {:>7}",
        "", "B", "", "rate/floor", "/msg", "/msg"
    );
    let mut last_size = None;
    for row in rows.iter().filter(|r| !r.runs.is_empty()) {
        if last_size.is_some_and(|s| s != row.key.size) {
            out.push('\n');
        }
        last_size = Some(row.key.size);
        let (rate, messages) = row.median();
        let (lo, hi) = row.spread();
        let (wakes, parks) = per_message_cells(&row.key, &row.counters);
        let _ = writeln!(
            out,
            "{:<26} {:>5} {:>10} {:>17} {:>9.2} {:>7} {:>7} {:>7} {:>7} {:>10}",
            row.key.label(),
            size_label(row.key.size),
            rate_label(rate),
            format!("{}-{}", rate_label(lo), rate_label(hi)),
            rate * row.key.size as f64 / 1e9,
            ratio(rate, floor_rate(rows, row.key.size, Transport::FloorSpin)),
            ratio(rate, floor_rate(rows, row.key.size, Transport::FloorFutex)),
            wakes,
            parks,
            messages,
        );
    }
    out
}

fn ratio_json(value: f64, floor: Option<f64>) -> Value {
    match floor {
        Some(floor) if floor > 0.0 && value.is_finite() => json!(value / floor),
        _ => Value::Null,
    }
}

fn common_json(key: &Key, runs: usize, counters: &Counters) -> serde_json::Map<String, Value> {
    let mut object = serde_json::Map::new();
    object.insert("transport".into(), json!(key.transport.name()));
    object.insert("size".into(), json!(key.size));
    object.insert("wait".into(), json!(key.wait));
    object.insert("trust".into(), json!(key.trust));
    object.insert("runs".into(), json!(runs));
    let (wakes, parks) = per_message(key, counters).unzip();
    object.insert("wakes_per_msg".into(), json!(wakes));
    object.insert("parks_per_msg".into(), json!(parks));
    object
}

/// The latency rows as JSON objects.
pub fn latency_json(rows: &[LatencyRow]) -> Vec<Value> {
    rows.iter()
        .filter(|r| !r.runs.is_empty())
        .map(|row| {
            let s = row.median();
            let mut object = common_json(&row.key, row.runs.len(), &row.counters);
            for (name, value) in [
                ("p50_ns", s.p50),
                ("p90_ns", s.p90),
                ("p99_ns", s.p99),
                ("p999_ns", s.p999),
                ("max_ns", s.max),
                ("mean_ns", s.mean),
            ] {
                object.insert(name.into(), json!(value));
            }
            object.insert("samples".into(), json!(s.samples));
            let (lo, hi) = row.p50_spread();
            object.insert("p50_ns_runs_min".into(), json!(lo));
            object.insert("p50_ns_runs_max".into(), json!(hi));
            let size = row.key.size;
            object.insert(
                "ratio_floor_spin".into(),
                ratio_json(s.p50, floor_p50(rows, size, Transport::FloorSpin)),
            );
            object.insert(
                "ratio_floor_futex".into(),
                ratio_json(s.p50, floor_p50(rows, size, Transport::FloorFutex)),
            );
            Value::Object(object)
        })
        .collect()
}

/// The throughput rows as JSON objects.
pub fn throughput_json(rows: &[ThroughputRow]) -> Vec<Value> {
    rows.iter()
        .filter(|r| !r.runs.is_empty())
        .map(|row| {
            let (rate, messages) = row.median();
            let mut object = common_json(&row.key, row.runs.len(), &row.counters);
            object.insert("messages".into(), json!(messages));
            object.insert("msgs_per_s".into(), json!(rate));
            object.insert("bytes_per_s".into(), json!(rate * row.key.size as f64));
            let (lo, hi) = row.spread();
            object.insert("msgs_per_s_runs_min".into(), json!(lo));
            object.insert("msgs_per_s_runs_max".into(), json!(hi));
            let size = row.key.size;
            object.insert(
                "ratio_floor_spin".into(),
                ratio_json(rate, floor_rate(rows, size, Transport::FloorSpin)),
            );
            object.insert(
                "ratio_floor_futex".into(),
                ratio_json(rate, floor_rate(rows, size, Transport::FloorFutex)),
            );
            Value::Object(object)
        })
        .collect()
}

const COLORS: [&str; 12] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#000000", "#aec7e8",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The latency distribution per transport: one panel per size, round-trip
/// time (log scale) against percentile (0, 90, 99, 99.9, 99.99 %), all runs
/// of a row merged.
pub fn latency_svg(rows: &[LatencyRow], title: &str) -> String {
    let rows: Vec<&LatencyRow> = rows.iter().filter(|r| !r.merged.is_empty()).collect();
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.key.size).collect();
    sizes.dedup();
    sizes.sort_unstable();
    sizes.dedup();
    let mut labels: Vec<String> = Vec::new();
    for row in &rows {
        if !labels.contains(&row.key.label()) {
            labels.push(row.key.label());
        }
    }
    let color = |label: &str| {
        let index = labels.iter().position(|l| l == label).unwrap_or(0);
        COLORS[index % COLORS.len()]
    };
    let (left, right, top, panel_h, plot_w, gap) = (80.0, 230.0, 50.0, 300.0, 640.0, 70.0);
    let width = left + plot_w + right;
    let height = top + sizes.len() as f64 * (panel_h + gap) + 10.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{left}" y="24" font-size="16">{}</text>"#,
        escape(title)
    );
    const MAX_NINES: f64 = 4.0;
    for (panel, &size) in sizes.iter().enumerate() {
        let y0 = top + panel as f64 * (panel_h + gap);
        let in_panel: Vec<&&LatencyRow> = rows.iter().filter(|r| r.key.size == size).collect();
        let (mut lo, mut hi) = (f64::MAX, 1.0f64);
        for row in &in_panel {
            lo = lo.min(row.merged.min().max(1) as f64);
            hi = hi.max(row.merged.max() as f64);
        }
        let (log_lo, log_hi) = (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        );
        let x_of = |nines: f64| left + nines / MAX_NINES * plot_w;
        let y_of =
            |ns: f64| y0 + panel_h - (ns.max(1.0).log10() - log_lo) / (log_hi - log_lo) * panel_h;
        let _ = writeln!(
            svg,
            r##"<rect x="{left}" y="{y0}" width="{plot_w}" height="{panel_h}" fill="none" stroke="#999"/><text x="{left}" y="{}" font-weight="bold">{} B round trip</text>"##,
            y0 - 6.0,
            size_label(size)
        );
        for (nines, label) in [
            (0.0, "0%"),
            (1.0, "90%"),
            (2.0, "99%"),
            (3.0, "99.9%"),
            (4.0, "99.99%"),
        ] {
            let x = x_of(nines);
            let _ = writeln!(
                svg,
                r##"<line x1="{x}" y1="{y0}" x2="{x}" y2="{}" stroke="#eee"/><text x="{x}" y="{}" text-anchor="middle">{label}</text>"##,
                y0 + panel_h,
                y0 + panel_h + 16.0
            );
        }
        let mut decade = log_lo;
        while decade <= log_hi {
            let ns = 10f64.powf(decade);
            let y = y_of(ns);
            let label = if ns >= 1e6 {
                format!("{} ms", ns / 1e6)
            } else if ns >= 1e3 {
                format!("{} µs", ns / 1e3)
            } else {
                format!("{ns} ns")
            };
            let _ = writeln!(
                svg,
                r##"<line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{label}</text>"##,
                left + plot_w,
                left - 6.0,
                y + 4.0
            );
            decade += 1.0;
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
            left + plot_w / 2.0,
            y0 + panel_h + 32.0
        );
        for (i, row) in in_panel.iter().enumerate() {
            let label = row.key.label();
            let h = &row.merged;
            let max_nines = (h.len() as f64).log10().min(MAX_NINES);
            let mut points = String::new();
            let mut nines = 0.0;
            while nines <= max_nines + 1e-9 {
                let q = 1.0 - 10f64.powf(-nines);
                let v = h.value_at_quantile(q) as f64;
                let _ = write!(points, "{:.1},{:.1} ", x_of(nines), y_of(v));
                nines += 0.05;
            }
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.6" points="{}"/>"#,
                color(&label),
                points.trim_end()
            );
            let ly = y0 + 14.0 + i as f64 * 16.0;
            let lx = left + plot_w + 14.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{lx}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="3"/><text x="{}" y="{ly}">{} (p50 {} ns)</text>"#,
                ly - 4.0,
                lx + 18.0,
                ly - 4.0,
                color(&label),
                lx + 24.0,
                escape(&label),
                h.value_at_quantile(0.5)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}
