//! Results: medians over runs, the tables and the JSON file (the plots
//! are in [`crate::plot`]).

use crate::background::BackgroundRun;
use crate::catalog::Transport;
use crate::driver::new_histogram;
use crate::endpoint::Counters;
use crate::open_loop::OpenLoopRun;
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
    /// Open loop: the intended rate, requests per second; `None` for
    /// closed-loop round trips and for streams.
    pub rate: Option<u64>,
    /// A user's workload ([`crate::custom`]) measured over the transport:
    /// its name labels the row.
    pub workload: Option<String>,
}

impl Key {
    /// How the row is named in the table (`ferry-raw`, `ferry-raw/park`, ...).
    pub fn label(&self) -> String {
        let mut label = match &self.workload {
            Some(name) => format!("{name} ({})", self.transport.name()),
            None => self.transport.name().to_owned(),
        };
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

/// What an open-loop run adds to its percentiles.
#[derive(Debug, Clone)]
pub struct OpenSummary {
    /// Requests per second asked for.
    pub intended_rate: f64,
    /// Replies per second achieved.
    pub achieved_rate: f64,
    /// Requests scheduled, answered, never sent.
    pub scheduled: u64,
    /// Requests answered.
    pub completed: u64,
    /// Requests never sent (the run gave up sending).
    pub unsent: u64,
    /// Requests in flight at most.
    pub in_flight_limit: usize,
    /// Median latency of each tenth of the run, ns.
    pub timeline: Vec<f64>,
    /// Percentiles of the latency from the actual send time.
    pub from_send: Summary,
}

impl OpenSummary {
    /// Summarizes an open-loop run.
    pub fn of(run: &OpenLoopRun) -> OpenSummary {
        OpenSummary {
            intended_rate: run.intended_rate,
            achieved_rate: run.achieved_rate,
            scheduled: run.scheduled,
            completed: run.completed,
            unsent: run.unsent,
            in_flight_limit: run.in_flight_limit,
            timeline: run.timeline.clone(),
            from_send: Summary::of(&run.from_send),
        }
    }
}

/// Every run of one latency row.
pub struct LatencyRow {
    /// The row.
    pub key: Key,
    /// Each run's percentiles.
    pub runs: Vec<Summary>,
    /// The round each run was measured in (see [`paired_ratio`]).
    pub rounds: Vec<usize>,
    /// All runs' round trips together (for the plots).
    pub merged: Histogram<u64>,
    /// Both ends' counters over all runs.
    pub counters: Counters,
    /// Open loop: each run's rates and timeline.
    pub open: Vec<OpenSummary>,
    /// `--background-stream`: each run's stream.
    pub background: Vec<BackgroundRun>,
}

impl LatencyRow {
    /// An empty row.
    pub fn new(key: Key) -> LatencyRow {
        LatencyRow {
            key,
            runs: Vec::new(),
            rounds: Vec::new(),
            merged: new_histogram(),
            counters: Counters::default(),
            open: Vec::new(),
            background: Vec::new(),
        }
    }

    /// The median achieved rate over the open-loop runs (NaN if closed).
    pub fn achieved_rate(&self) -> f64 {
        median(self.open.iter().map(|o| o.achieved_rate).collect())
    }

    /// The median rate of the background stream over the runs (NaN if
    /// none).
    pub fn background_rate(&self) -> f64 {
        median(self.background.iter().map(BackgroundRun::rate).collect())
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
    /// The round each run was measured in (see [`paired_ratio`]).
    pub rounds: Vec<usize>,
    /// Both ends' counters over all runs.
    pub counters: Counters,
}

impl ThroughputRow {
    /// An empty row.
    pub fn new(key: Key) -> ThroughputRow {
        ThroughputRow {
            key,
            runs: Vec::new(),
            rounds: Vec::new(),
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

/// A row's ratio to a floor: the median, over the rounds both were
/// measured in, of the row's value over the floor's in the same round.
/// Every round runs each transport once, one after the other, so the two
/// values of a round saw the same host; the ratio of the two medians
/// could compare runs from different moods of the host (this VM's
/// cross-core latency switches between about 250 and 800 ns for minutes
/// at a time, for every transport at once). `None` when no round has both.
pub fn paired_ratio(
    (values, rounds): (&[f64], &[usize]),
    (floor, floor_rounds): (&[f64], &[usize]),
) -> Option<f64> {
    let ratios: Vec<f64> = values
        .iter()
        .zip(rounds)
        .filter_map(|(&value, round)| {
            let at = floor_rounds.iter().position(|r| r == round)?;
            let floor = floor[at];
            (floor > 0.0 && value.is_finite()).then(|| value / floor)
        })
        .collect();
    (!ratios.is_empty()).then(|| median(ratios))
}

/// A row measured in rounds, for [`floor_ratio`].
trait Rounds {
    fn key(&self) -> &Key;
    /// Each run's value, in the order of `rounds`.
    fn values(&self) -> Vec<f64>;
    fn rounds(&self) -> &[usize];
}

impl Rounds for LatencyRow {
    fn key(&self) -> &Key {
        &self.key
    }
    /// Each run's p50.
    fn values(&self) -> Vec<f64> {
        self.runs.iter().map(|s| s.p50).collect()
    }
    fn rounds(&self) -> &[usize] {
        &self.rounds
    }
}

impl Rounds for ThroughputRow {
    fn key(&self) -> &Key {
        &self.key
    }
    /// Each run's messages per second.
    fn values(&self) -> Vec<f64> {
        self.runs
            .iter()
            .map(|&(n, t)| n as f64 / t.as_secs_f64())
            .collect()
    }
    fn rounds(&self) -> &[usize] {
        &self.rounds
    }
}

/// `row` over `floor` at its size (see [`paired_ratio`]).
fn floor_ratio<R: Rounds>(rows: &[R], row: &R, floor: Transport) -> Option<f64> {
    let size = row.key().size;
    let floor = rows
        .iter()
        .find(|r| r.key().transport == floor && r.key().size == size && !r.rounds().is_empty())?;
    paired_ratio(
        (&row.values(), row.rounds()),
        (&floor.values(), floor.rounds()),
    )
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

fn ratio(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".into(), |r| format!("{r:.2}"))
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
            ratio(floor_ratio(rows, row, Transport::FloorSpin)),
            ratio(floor_ratio(rows, row, Transport::FloorFutex)),
            wakes,
            parks,
            s.samples,
        );
    }
    out
}

/// A rate as people write it: 950, 12.5K, 1.20M.
pub fn rate_label(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2}M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1}K", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

/// The open-loop table: per transport, size and intended rate, the
/// achieved rate, the latency from the intended send time, the latency from
/// the actual send time, and the background stream's rate.
pub fn open_loop_table(rows: &[LatencyRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:>5} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>7} {:>6} {:>10}",
        "transport",
        "size",
        "rate",
        "achieved",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "sent→p50",
        "sent→p99",
        "unsent",
        "window",
        "background"
    );
    let _ = writeln!(
        out,
        "{:<22} {:>5} {:>18} {:>48} {:>19} {:>14} {:>10}",
        "", "B", "req/s", "latency from intended send, ns", "from actual send", "", "msgs/s"
    );
    let mut last_size = None;
    for row in rows
        .iter()
        .filter(|r| !r.runs.is_empty() && !r.open.is_empty())
    {
        if last_size.is_some_and(|s| s != row.key.size) {
            out.push('\n');
        }
        last_size = Some(row.key.size);
        let s = row.median();
        let from_send =
            |f: fn(&Summary) -> f64| median(row.open.iter().map(|o| f(&o.from_send)).collect());
        let background = row.background_rate();
        let _ = writeln!(
            out,
            "{:<22} {:>5} {:>8} {:>9} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>10.0} {:>9.0} {:>9.0} {:>7} {:>6} {:>10}",
            row.key.label(),
            size_label(row.key.size),
            rate_label(row.key.rate.unwrap_or(0) as f64),
            rate_label(row.achieved_rate()),
            s.p50,
            s.p90,
            s.p99,
            s.p999,
            s.max,
            from_send(|s| s.p50),
            from_send(|s| s.p99),
            row.open.iter().map(|o| o.unsent).sum::<u64>(),
            row.open[0].in_flight_limit,
            if background.is_nan() {
                "-".into()
            } else {
                rate_label(background)
            },
        );
    }
    out
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
            ratio(floor_ratio(rows, row, Transport::FloorSpin)),
            ratio(floor_ratio(rows, row, Transport::FloorFutex)),
            wakes,
            parks,
            messages,
        );
    }
    out
}

fn ratio_json(ratio: Option<f64>) -> Value {
    ratio.map_or(Value::Null, |r| json!(r))
}

/// The percentiles the JSON lists from the merged histogram of a row.
pub const JSON_PERCENTILES: [f64; 13] = [
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99, 99.999, 100.0,
];

fn summary_json(s: &Summary) -> Value {
    json!({
        "p50_ns": s.p50, "p90_ns": s.p90, "p99_ns": s.p99, "p999_ns": s.p999,
        "max_ns": s.max, "mean_ns": s.mean, "samples": s.samples,
    })
}

/// What an open-loop row adds to its JSON object.
fn open_json(row: &LatencyRow, object: &mut serde_json::Map<String, Value>) {
    if row.open.is_empty() {
        return;
    }
    let pick = |f: fn(&OpenSummary) -> f64| median(row.open.iter().map(f).collect());
    object.insert("intended_rate".into(), json!(pick(|o| o.intended_rate)));
    object.insert("achieved_rate".into(), json!(pick(|o| o.achieved_rate)));
    object.insert(
        "achieved_rate_runs".into(),
        json!(row.open.iter().map(|o| o.achieved_rate).collect::<Vec<_>>()),
    );
    let sum = |f: fn(&OpenSummary) -> u64| row.open.iter().map(f).sum::<u64>();
    object.insert("scheduled".into(), json!(sum(|o| o.scheduled)));
    object.insert("completed".into(), json!(sum(|o| o.completed)));
    object.insert("unsent".into(), json!(sum(|o| o.unsent)));
    object.insert("in_flight_limit".into(), json!(row.open[0].in_flight_limit));
    let parts = row.open[0].timeline.len();
    let timeline: Vec<Value> = (0..parts)
        .map(|i| {
            let value = median(
                row.open
                    .iter()
                    .filter_map(|o| o.timeline.get(i).copied())
                    .filter(|v| !v.is_nan())
                    .collect(),
            );
            if value.is_nan() {
                Value::Null
            } else {
                json!(value)
            }
        })
        .collect();
    object.insert("timeline_p50_ns".into(), Value::Array(timeline));
    object.insert(
        "from_send_runs".into(),
        Value::Array(
            row.open
                .iter()
                .map(|o| summary_json(&o.from_send))
                .collect(),
        ),
    );
}

fn common_json(key: &Key, runs: usize, counters: &Counters) -> serde_json::Map<String, Value> {
    let mut object = serde_json::Map::new();
    object.insert("transport".into(), json!(key.transport.name()));
    object.insert("size".into(), json!(key.size));
    object.insert("wait".into(), json!(key.wait));
    object.insert("trust".into(), json!(key.trust));
    object.insert("rate".into(), json!(key.rate));
    if let Some(name) = &key.workload {
        object.insert("workload".into(), json!(name));
    }
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
            object.insert(
                "ratio_floor_spin".into(),
                ratio_json(floor_ratio(rows, row, Transport::FloorSpin)),
            );
            object.insert(
                "ratio_floor_futex".into(),
                ratio_json(floor_ratio(rows, row, Transport::FloorFutex)),
            );
            object.insert(
                "runs_summary".into(),
                Value::Array(row.runs.iter().map(summary_json).collect()),
            );
            let percentiles: serde_json::Map<String, Value> = JSON_PERCENTILES
                .iter()
                .map(|&p| {
                    (
                        format!("{p}"),
                        json!(row.merged.value_at_quantile(p / 100.0)),
                    )
                })
                .collect();
            object.insert("percentiles_ns".into(), Value::Object(percentiles));
            open_json(row, &mut object);
            if !row.background.is_empty() {
                object.insert(
                    "background".into(),
                    json!({
                        "transport": crate::background::stream_transport(row.key.transport).name(),
                        "size": row.background[0].size,
                        "msgs_per_s": row.background_rate(),
                        "runs": row.background.iter().map(|b| json!({
                            "messages": b.messages,
                            "seconds": b.elapsed.as_secs_f64(),
                            "msgs_per_s": b.rate(),
                        })).collect::<Vec<_>>(),
                    }),
                );
            }
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
            object.insert(
                "ratio_floor_spin".into(),
                ratio_json(floor_ratio(rows, row, Transport::FloorSpin)),
            );
            object.insert(
                "ratio_floor_futex".into(),
                ratio_json(floor_ratio(rows, row, Transport::FloorFutex)),
            );
            Value::Object(object)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::paired_ratio;

    #[test]
    fn a_ratio_pairs_each_run_with_the_floor_of_its_round() {
        // The host switched speed after round 1: the floor ran at 250 then
        // 800, the transport at 500 then 1200. The ratio of the medians
        // (800 / 500 = 1.6 or worse) would mix the moods; each round's own
        // ratio is 2.0 or 1.5.
        let values = [500.0, 500.0, 1200.0, 1200.0, 1200.0];
        let floor = [250.0, 250.0, 800.0, 800.0, 800.0];
        let rounds = [0, 1, 2, 3, 4];
        assert_eq!(
            paired_ratio((&values, &rounds), (&floor, &rounds)),
            Some(1.5)
        );
        // A round the floor lacks (its measurement failed) is left out.
        let floor_rounds = [0, 1, 2];
        assert_eq!(
            paired_ratio((&values, &rounds), (&floor[..3], &floor_rounds)),
            Some(2.0)
        );
        assert_eq!(paired_ratio((&values, &rounds), (&[], &[])), None);
    }
}
