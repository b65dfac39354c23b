//! `ferry-bench rpc` (the `rpc` feature): the same tarpc and gRPC (tonic)
//! calls over ferry and over a Unix socket, in one run, between two
//! processes: round-trip p50/p99 and calls per second at each concurrency.
//!
//! ```text
//! cargo run --release -p ferry-bench --features rpc -- rpc --runs 5
//! ```
//!
//! Each measurement starts a server process (this binary again, serving
//! the stack over the link; see `ferry_stacks::process`), both processes
//! on the same kind of tokio runtime (`--runtime`: current-thread, where
//! one thread runs every task, or multi-thread); `C` tasks share one
//! client and call
//! `echo` back to back with a payload of `--size` bytes, each timing its own
//! calls, for `--seconds` after a warm-up. Every reply is checked against
//! its request. Runs are interleaved (every stack and link once, then
//! again) and the medians over runs are reported, with the CPU pressure
//! and load average of the machine.

use crate::Result;
use crate::cpu::Pressure;
use crate::driver::new_histogram;
use clap::Args;
use ferry_stacks::process::{self, ServeSpec};
use ferry_stacks::{Flavor, Link, Stack};
use ferry_transport::ConnectionConfig;
use hdrhistogram::Histogram;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `ferry-bench rpc`'s options.
#[derive(Args, Debug)]
pub struct RpcOptions {
    /// Stacks, comma-separated: tarpc, grpc.
    #[arg(long, value_name = "LIST", default_value = "tarpc,grpc")]
    stack: String,
    /// Links, comma-separated: ferry, uds.
    #[arg(long, value_name = "LIST", default_value = "ferry,uds")]
    link: String,
    /// Concurrent calling tasks, comma-separated.
    #[arg(long, value_name = "LIST", default_value = "1,16")]
    concurrency: String,
    /// How long a task waiting on ferry spins before it parks, comma-separated
    /// (e.g. 0,20us,100us): each value is a separate ferry measurement.
    #[arg(long, value_name = "LIST", default_value = "default")]
    spin: String,
    /// Each process's tokio runtime, comma-separated: current-thread,
    /// multi-thread (one worker per CPU) or multi-thread:N; each is a
    /// separate measurement of every link.
    #[arg(
        long,
        value_name = "LIST",
        default_value = "current-thread,multi-thread"
    )]
    runtime: String,
    /// Payload bytes per call (request and reply).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    size: usize,
    /// Seconds per measurement.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    seconds: f64,
    /// Seconds of unrecorded warm-up before each measurement.
    #[arg(long, value_name = "S", default_value_t = 0.2)]
    warmup: f64,
    /// Repeat every measurement R times (interleaved) and report medians.
    #[arg(long, value_name = "R", default_value_t = 3)]
    runs: usize,
    /// Write the results as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
}

/// When this process is an `rpc` server (started by [`main`]): serves, and
/// returns its exit code.
pub fn serve_if_server() -> Option<ExitCode> {
    let spec = ServeSpec::from_env()?;
    Some(match spec.and_then(|spec| spec.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-bench rpc server: {e}");
            ExitCode::FAILURE
        }
    })
}

/// One configuration measured: stack, runtime, link, spin (ferry only),
/// concurrency.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Case {
    stack: Stack,
    runtime: Flavor,
    link: Link,
    spin: Option<Duration>,
    concurrency: usize,
}

impl Case {
    /// Whether `other` runs on the same server process as this case.
    fn same_server(&self, other: &Case) -> bool {
        self.stack == other.stack
            && self.runtime == other.runtime
            && self.link == other.link
            && self.spin == other.spin
    }
}

/// One measurement's figures.
#[derive(Debug, Clone, Copy)]
struct Figures {
    p50_us: f64,
    p99_us: f64,
    calls_per_s: f64,
    pressure: Option<f64>,
}

/// `ferry-bench rpc`.
pub fn main(options: &RpcOptions) -> ExitCode {
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-bench rpc: {e}");
            ExitCode::from(2)
        }
    }
}

fn list<T>(text: &str, parse: impl Fn(&str) -> Result<T>) -> Result<Vec<T>> {
    text.split(',').map(|item| parse(item.trim())).collect()
}

/// `0`, `default`, or a number with a unit: `500ns`, `20us`, `1ms`.
fn parse_spin(text: &str) -> Result<Duration> {
    if text == "default" {
        return Ok(ferry_transport::DEFAULT_ASYNC_SPIN);
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("spin {text:?} needs a unit (ns, us, ms)"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("bad spin {text:?}"))?;
    let nanos = match unit {
        "ns" => number,
        "us" => number * 1e3,
        "ms" => number * 1e6,
        "s" => number * 1e9,
        _ => return Err(format!("bad spin unit in {text:?} (ns, us, ms, s)").into()),
    };
    Ok(Duration::from_nanos(nanos as u64))
}

fn run(options: &RpcOptions) -> Result<()> {
    // The server processes turn tracing off; so does the calling side.
    process::quiet_tracing();
    let stacks = list(&options.stack, |s| Ok(s.parse::<Stack>()?))?;
    let links = list(&options.link, |s| Ok(s.parse::<Link>()?))?;
    let concurrencies = list(&options.concurrency, |s| {
        s.parse::<usize>()
            .ok()
            .filter(|&c| c > 0)
            .ok_or_else(|| format!("bad concurrency {s:?}").into())
    })?;
    let spins = list(&options.spin, parse_spin)?;
    let runtimes = list(&options.runtime, |s| Ok(s.parse::<Flavor>()?))?;
    let mut cases = Vec::new();
    for &stack in &stacks {
        for &runtime in &runtimes {
            for &link in &links {
                let link_spins: Vec<Option<Duration>> = match link {
                    Link::Ferry => spins.iter().copied().map(Some).collect(),
                    Link::Unix => vec![None],
                };
                for spin in link_spins {
                    for &concurrency in &concurrencies {
                        cases.push(Case {
                            stack,
                            runtime,
                            link,
                            spin,
                            concurrency,
                        });
                    }
                }
            }
        }
    }
    let load_before = load_average();
    let started = Instant::now();
    let mut results: Vec<(Case, Vec<Figures>)> = cases.iter().map(|&c| (c, Vec::new())).collect();
    for run in 0..options.runs.max(1) {
        // One server process per (stack, runtime, link, spin); its
        // concurrencies in turn.
        let mut index = 0;
        while index < results.len() {
            let first = results[index].0;
            let group: Vec<usize> = (index..results.len())
                .take_while(|&i| results[i].0.same_server(&first))
                .collect();
            eprint!(
                "\rrun {}/{}: {} on {} over {}{}        ",
                run + 1,
                options.runs.max(1),
                first.stack,
                first.runtime,
                first.link,
                first
                    .spin
                    .map(|s| format!(" (spin {s:?})"))
                    .unwrap_or_default()
            );
            let _ = std::io::stderr().flush();
            let concurrencies: Vec<usize> =
                group.iter().map(|&i| results[i].0.concurrency).collect();
            let figures = measure_group(first, &concurrencies, options)?;
            for (&i, figures) in group.iter().zip(figures) {
                results[i].1.push(figures);
            }
            index += group.len();
        }
    }
    eprintln!();
    let load_after = load_average();
    report(
        options,
        &results,
        load_before,
        load_after,
        started.elapsed(),
    )
}

/// Starts the server for `case`'s stack, link and spin, and measures each
/// concurrency in turn on one client.
fn measure_group(
    case: Case,
    concurrencies: &[usize],
    options: &RpcOptions,
) -> Result<Vec<Figures>> {
    let config = ConnectionConfig::default().async_spin(case.spin.unwrap_or(Duration::ZERO));
    let (conn, server) = process::start_on(
        case.stack,
        case.link,
        &config,
        case.runtime,
        process::self_command()?,
    )?;
    let runtime = case.runtime.build()?;
    let figures = runtime.block_on(async {
        let caller = ferry_stacks::stack::client(case.stack, conn).await?;
        let mut all = Vec::new();
        for &concurrency in concurrencies {
            let payload = bytes::Bytes::from(vec![0x5a_u8; options.size]);
            let warmup = Duration::from_secs_f64(options.warmup);
            calls(&caller, concurrency, &payload, warmup).await?;
            let pressure = Pressure::start();
            let measured = Duration::from_secs_f64(options.seconds);
            let (histogram, count, elapsed) =
                calls(&caller, concurrency, &payload, measured).await?;
            all.push(Figures {
                p50_us: histogram.value_at_quantile(0.5) as f64 / 1e3,
                p99_us: histogram.value_at_quantile(0.99) as f64 / 1e3,
                calls_per_s: count as f64 / elapsed.as_secs_f64(),
                pressure: pressure.share(),
            });
        }
        Ok::<_, crate::BoxError>(all)
    })?;
    drop(runtime);
    server.finish(Duration::from_secs(20))?;
    Ok(figures)
}

/// `concurrency` tasks calling back to back for `duration`: the merged
/// round-trip histogram (ns), the number of calls, and the time they took.
async fn calls(
    caller: &ferry_stacks::Caller,
    concurrency: usize,
    payload: &bytes::Bytes,
    duration: Duration,
) -> Result<(Histogram<u64>, u64, Duration)> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut caller = caller.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut histogram = new_histogram();
            let mut count = 0u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let reply = caller
                    .echo(payload.clone(), Duration::from_secs(10))
                    .await?;
                histogram.saturating_record(sent.elapsed().as_nanos() as u64);
                if reply != payload {
                    return Err(ferry_stacks::StackError::WrongReply);
                }
                count += 1;
            }
            Ok((histogram, count))
        }));
    }
    let mut merged = new_histogram();
    let mut total = 0;
    for task in tasks {
        let (histogram, count) = task.await??;
        merged.add(&histogram)?;
        total += count;
    }
    Ok((merged, total, started.elapsed()))
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".into())
}

/// The medians of one case.
struct Row {
    case: Case,
    p50_us: f64,
    p99_us: f64,
    calls_per_s: f64,
    pressure: f64,
}

fn report(
    options: &RpcOptions,
    results: &[(Case, Vec<Figures>)],
    load_before: String,
    load_after: String,
    took: Duration,
) -> Result<()> {
    let rows: Vec<Row> = results
        .iter()
        .map(|(case, figures)| Row {
            case: *case,
            p50_us: median(figures.iter().map(|f| f.p50_us)),
            p99_us: median(figures.iter().map(|f| f.p99_us)),
            calls_per_s: median(figures.iter().map(|f| f.calls_per_s)),
            pressure: median(figures.iter().filter_map(|f| f.pressure).map(|p| p * 100.0)),
        })
        .collect();
    println!(
        "# ferry-bench rpc: {} B payload, {} s per measurement, medians of {} runs; both processes on the runtime of the row",
        options.size,
        options.seconds,
        options.runs.max(1),
    );
    println!(
        "# load average {load_before} before, {load_after} after; {:.0} s in all; CPU pressure: share of the time other tasks waited for a CPU",
        took.as_secs_f64()
    );
    println!();
    println!(
        "| stack | runtime | link | spin | concurrency | p50 µs | p99 µs | calls/s | CPU pressure % | p50 vs uds | calls/s vs uds |"
    );
    println!("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let baseline = rows.iter().find(|other| {
            other.case.stack == row.case.stack
                && other.case.runtime == row.case.runtime
                && other.case.link == Link::Unix
                && other.case.concurrency == row.case.concurrency
        });
        let (latency_ratio, rate_ratio) = match (row.case.link, baseline) {
            (Link::Ferry, Some(uds)) => (
                format!("{:.2}×", row.p50_us / uds.p50_us),
                format!("{:.2}×", row.calls_per_s / uds.calls_per_s),
            ),
            _ => (String::new(), String::new()),
        };
        println!(
            "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.0} | {:.0} | {} | {} |",
            row.case.stack,
            row.case.runtime,
            row.case.link,
            row.case
                .spin
                .map(|s| format!("{s:?}"))
                .unwrap_or_else(|| "–".into()),
            row.case.concurrency,
            row.p50_us,
            row.p99_us,
            row.calls_per_s,
            row.pressure,
            latency_ratio,
            rate_ratio
        );
    }
    if let Some(path) = &options.json {
        let results: Vec<serde_json::Value> = rows
            .iter()
            .map(|row| {
                serde_json::json!({
                    "stack": row.case.stack.name(),
                    "runtime": row.case.runtime.name(),
                    "link": row.case.link.name(),
                    "spin_ns": row.case.spin.map(|s| s.as_nanos() as u64),
                    "concurrency": row.case.concurrency,
                    "size": options.size,
                    "p50_us": row.p50_us,
                    "p99_us": row.p99_us,
                    "calls_per_s": row.calls_per_s,
                    "cpu_pressure_pct": row.pressure,
                    "runs": options.runs.max(1),
                })
            })
            .collect();
        let document = serde_json::json!({
            "results": results,
            "load_before": load_before,
            "load_after": load_after,
        });
        std::fs::write(path, serde_json::to_string_pretty(&document)?)?;
    }
    Ok(())
}
