//! `ferry-bench`: round-trip latency and one-way throughput between two real
//! processes, over ferry and over the baselines, measured in the same run.
//!
//! ```text
//! cargo run --release -p ferry-bench -- latency
//! cargo run --release -p ferry-bench -- throughput --size 64,4K,1M --runs 5 --json out.json
//! ```

use clap::{Args, Parser, Subcommand};
use ferry_bench::catalog::Transport;
use ferry_bench::driver::{self, Amount};
use ferry_bench::job::{Job, parse_trust, trust_name};
use ferry_bench::mode::Mode;
use ferry_bench::payload::MIN_SIZE;
use ferry_bench::report::{self, Key, LatencyRow, Summary, ThroughputRow};
use ferry_bench::session::Peer;
use ferry_bench::{BoxError, Result, cpu, peer, with_end};
use ferry_transport::{Trust, WaitStrategy};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "ferry-bench",
    version,
    about = "Latency and throughput between two processes: ferry next to the shared-memory floor, Unix sockets and pipes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ping-pong round trips: percentiles of the round-trip time.
    Latency(Options),
    /// A one-way stream, acknowledged at the end: messages and bytes per second.
    Throughput(Options),
    /// tarpc and gRPC calls over ferry and over a Unix socket (`rpc` feature).
    #[cfg(feature = "rpc")]
    Rpc(ferry_bench::rpc::RpcOptions),
}

#[derive(Args)]
struct Options {
    /// Transports, comma-separated: ferry, ferry-sync (latency), ferry-raw,
    /// ferry-ring, ferry-ring-batch (throughput), floor-spin, floor-futex,
    /// uds, pipe; iceoryx2, ipc-channel with the `peers` feature; or all.
    #[arg(long, value_name = "LIST", default_value = "all")]
    transport: String,
    /// Message sizes, comma-separated, with K/M suffixes (binary), at least 8.
    #[arg(long, value_name = "LIST", default_value = "8,64,1K,4K,64K,1M")]
    size: String,
    /// How ferry's endpoints wait, comma-separated: spin, park,
    /// spin-then-park (the default budget) or spin-then-park:DURATION (e.g.
    /// 20us).
    #[arg(long, value_name = "LIST", default_value = "spin")]
    wait: String,
    /// How ferry-transport's receivers treat the peer: trusted, untrusted.
    #[arg(long, value_name = "LIST", default_value = "trusted")]
    trust: String,
    /// Round trips (latency) or messages (throughput) per measurement.
    #[arg(long, value_name = "N", conflicts_with = "seconds")]
    iters: Option<u64>,
    /// Seconds per measurement (default 0.25).
    #[arg(long, value_name = "S")]
    seconds: Option<f64>,
    /// Unrecorded warm-up before each measurement: a count, or a time (50ms, 0.1s).
    #[arg(long, value_name = "N|TIME", default_value = "50ms")]
    warmup: String,
    /// CPUs for the measuring process and the peer (default: the first two allowed).
    #[arg(long, value_name = "A,B")]
    cores: Option<String>,
    /// Repeat every measurement R times (interleaved) and report the medians.
    #[arg(long, value_name = "R", default_value_t = 1)]
    runs: usize,
    /// On a shared machine: redo a measurement during which other tasks
    /// waited for a CPU more than PCT % of the time (Linux CPU pressure,
    /// /proc/pressure/cpu), up to --attempts times, keeping the least
    /// contended one.
    #[arg(long, value_name = "PCT")]
    max_pressure: Option<f64>,
    /// Tries per measurement with --max-pressure.
    #[arg(long, value_name = "N", default_value_t = 10)]
    attempts: usize,
    /// Data area of each ring and floor lane, in bytes (default: 1M, or
    /// larger so that two frames of the size fit).
    #[arg(long, value_name = "BYTES")]
    ring: Option<String>,
    /// Frames per publish of ferry-ring-batch.
    #[arg(long, value_name = "N", default_value_t = 64)]
    batch: usize,
    /// Write the results as JSON ({"results": [...]}).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw the latency distribution per transport as SVG.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    if peer::is_peer() {
        return peer::main();
    }
    #[cfg(feature = "rpc")]
    if let Some(code) = ferry_bench::rpc::serve_if_server() {
        return code;
    }
    let cli = Cli::parse();
    let (mode, options) = match cli.command {
        Command::Latency(options) => (Mode::Latency, options),
        Command::Throughput(options) => (Mode::Throughput, options),
        #[cfg(feature = "rpc")]
        Command::Rpc(options) => return ferry_bench::rpc::main(&options),
    };
    match run(mode, &options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("ferry-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn parse_size(text: &str) -> Result<usize> {
    let text = text.trim();
    let upper = text.to_ascii_uppercase();
    let digits = upper.trim_end_matches("IB").trim_end_matches('B');
    let (number, shift) = match digits.chars().last() {
        Some('K') => (&digits[..digits.len() - 1], 10),
        Some('M') => (&digits[..digits.len() - 1], 20),
        Some('G') => (&digits[..digits.len() - 1], 30),
        _ => (digits, 0),
    };
    let value: usize = number
        .parse()
        .map_err(|_| BoxError::from(format!("bad size {text:?}")))?;
    Ok(value << shift)
}

fn list<T>(text: &str, parse: impl Fn(&str) -> Result<T>) -> Result<Vec<T>> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse(s.trim()))
        .collect()
}

/// The data area that holds at least two frames of `size` (and 1 MiB at
/// least, ferry's default).
fn auto_ring(size: usize) -> usize {
    (2 * (size + 256)).next_power_of_two().max(1 << 20)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn load_text(load: Option<[f64; 3]>) -> String {
    load.map_or_else(
        || "unknown".into(),
        |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"),
    )
}

/// One measurement to make.
struct Plan {
    key: Key,
    job: Job,
    run: usize,
}

fn plans(mode: Mode, options: &Options, peer_cpu: Option<usize>) -> Result<Vec<Plan>> {
    let transports = if options.transport.trim() == "all" {
        Transport::all(mode)
    } else {
        list(&options.transport, Transport::parse)?
    };
    for t in &transports {
        if !t.supports(mode) {
            return Err(format!("{} does not measure {}", t.name(), mode.name()).into());
        }
        if !t.available() {
            return Err(format!(
                "{} needs the `peers` feature: cargo run --release -p ferry-bench --features peers -- ...",
                t.name()
            )
            .into());
        }
    }
    let sizes = list(&options.size, parse_size)?;
    if let Some(size) = sizes.iter().find(|&&s| s < MIN_SIZE) {
        return Err(format!("size {size} is below the {MIN_SIZE}-byte minimum (the tag)").into());
    }
    let waits = list(&options.wait, |text| {
        text.parse::<WaitStrategy>().map_err(BoxError::from)
    })?;
    let trusts = list(&options.trust, parse_trust)?;
    if transports.is_empty() || sizes.is_empty() || waits.is_empty() || trusts.is_empty() {
        return Err("nothing to measure".into());
    }
    let ring = options.ring.as_deref().map(parse_size).transpose()?;
    let mut plans = Vec::new();
    for run in 0..options.runs.max(1) {
        for &size in &sizes {
            for &transport in &transports {
                let waits: &[WaitStrategy] = if transport.uses_wait() {
                    &waits
                } else {
                    &waits[..1]
                };
                let trusts: &[Trust] = if transport.uses_trust() {
                    &trusts
                } else {
                    &trusts[..1]
                };
                for &wait in waits {
                    for &trust in trusts {
                        let key = Key {
                            transport,
                            size,
                            wait: if transport.uses_wait() {
                                wait.to_string()
                            } else {
                                transport.fixed_wait().into()
                            },
                            trust: if transport.uses_trust() {
                                trust_name(trust).into()
                            } else {
                                "n/a".into()
                            },
                        };
                        let job = Job {
                            mode,
                            transport,
                            size,
                            wait,
                            trust,
                            ring: ring.unwrap_or_else(|| auto_ring(size)),
                            batch: options.batch,
                            cpu: peer_cpu,
                            name: String::new(),
                            meta: Vec::new(),
                        };
                        plans.push(Plan { key, job, run });
                    }
                }
            }
        }
    }
    Ok(plans)
}

/// Shows where a long run is, on stderr, once it has taken a few seconds.
struct Progress {
    start: Instant,
    last: Instant,
    terminal: bool,
    quiet: bool,
    shown: bool,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        Progress {
            start: Instant::now(),
            last: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            quiet,
            shown: false,
        }
    }

    fn update(&mut self, done: usize, total: usize, what: &str) {
        let now = Instant::now();
        if self.quiet || now.duration_since(self.start) < Duration::from_secs(2) {
            return;
        }
        let elapsed = now.duration_since(self.start).as_secs_f64();
        let eta = elapsed / done.max(1) as f64 * (total - done) as f64;
        let line = format!("[{done}/{total}] {what}  ({elapsed:.0} s, ~{eta:.0} s left)");
        if self.terminal {
            eprint!("\r{line:<90}");
            let _ = std::io::stderr().flush();
            self.shown = true;
        } else if now.duration_since(self.last) >= Duration::from_secs(5) {
            eprintln!("{line}");
            self.last = now;
        }
    }

    fn clear(&mut self) {
        if self.shown {
            eprint!("\r{:<90}\r", "");
        }
    }
}

fn run(mode: Mode, options: &Options) -> Result<bool> {
    let measure = match (options.iters, options.seconds) {
        (Some(n), _) => Amount::Iters(n.max(1)),
        (None, Some(s)) => Amount::Time(Duration::from_secs_f64(s)),
        (None, None) => Amount::Time(Duration::from_millis(250)),
    };
    let warmup = Amount::parse(&options.warmup)?;
    let allowed = cpu::allowed();
    let cores = match &options.cores {
        Some(text) => {
            let cores = list(text, |s| {
                s.parse::<usize>()
                    .map_err(|_| BoxError::from(format!("bad CPU {s:?}")))
            })?;
            match cores.as_slice() {
                [a, b] => Some((*a, *b)),
                _ => return Err("--cores takes two CPUs: A,B".into()),
            }
        }
        None => match allowed.as_slice() {
            [a, b, ..] => Some((*a, *b)),
            _ => None,
        },
    };
    let plans = plans(mode, options, cores.map(|(_, b)| b))?;
    if let Some((a, _)) = cores {
        cpu::pin(a).map_err(|e| format!("pinning to CPU {a}: {e}"))?;
    }
    let load_before = cpu::load_average();
    let clock_ns = driver::clock_overhead_ns();
    println!(
        "ferry-bench {}: {}, {} CPUs allowed; {}",
        mode.name(),
        cpu_model(),
        allowed.len(),
        match cores {
            Some((a, b)) => format!("measuring process on CPU {a}, peer on CPU {b}"),
            None => "not pinned (fewer than two CPUs)".into(),
        }
    );
    println!(
        "load average {} before; clock read {clock_ns:.0} ns ({}); {} per measurement after {} warm-up, {} run(s), median reported",
        load_text(load_before),
        if mode == Mode::Latency {
            "included once in every round trip"
        } else {
            "once per 256 messages"
        },
        match measure {
            Amount::Iters(n) => format!("{n} iterations"),
            Amount::Time(t) => format!("{:.2} s", t.as_secs_f64()),
        },
        options.warmup,
        options.runs.max(1),
    );
    let mut latency_rows: Vec<LatencyRow> = Vec::new();
    let mut throughput_rows: Vec<ThroughputRow> = Vec::new();
    let mut peer = Peer::spawn()?;
    let mut progress = Progress::new(options.quiet);
    let mut failures = 0;
    let mut pressures: Vec<f64> = Vec::new();
    let total = plans.len();
    for (done, mut plan) in plans.into_iter().enumerate() {
        progress.update(
            done,
            total,
            &format!(
                "{} {} B, run {}",
                plan.key.label(),
                plan.key.size,
                plan.run + 1
            ),
        );
        let (outcome, contended) =
            measure_quietly(&mut peer, &mut plan.job, mode, warmup, measure, options);
        pressures.push(contended);
        match outcome {
            Ok(Outcome::Latency(histogram, counters)) => {
                let row = match latency_rows.iter_mut().position(|r| r.key == plan.key) {
                    Some(i) => &mut latency_rows[i],
                    None => {
                        latency_rows.push(LatencyRow::new(plan.key.clone()));
                        latency_rows.last_mut().expect("just pushed")
                    }
                };
                row.runs.push(Summary::of(&histogram));
                row.merged.add(&histogram).map_err(|e| format!("{e:?}"))?;
                row.counters = row.counters.plus(counters);
            }
            Ok(Outcome::Throughput(messages, elapsed, counters)) => {
                let row = match throughput_rows.iter_mut().position(|r| r.key == plan.key) {
                    Some(i) => &mut throughput_rows[i],
                    None => {
                        throughput_rows.push(ThroughputRow::new(plan.key.clone()));
                        throughput_rows.last_mut().expect("just pushed")
                    }
                };
                row.runs.push((messages, elapsed));
                row.counters = row.counters.plus(counters);
            }
            Err(e) => {
                progress.clear();
                eprintln!(
                    "ferry-bench: {} {} B: {e}",
                    plan.key.label(),
                    report::size_label(plan.key.size)
                );
                failures += 1;
                // The peer may be stuck in the failed job: start afresh.
                drop(peer);
                peer = Peer::spawn()?;
            }
        }
    }
    progress.clear();
    drop(peer);
    let load_after = cpu::load_average();
    println!();
    match mode {
        Mode::Latency => print!("{}", report::latency_table(&latency_rows)),
        Mode::Throughput => print!("{}", report::throughput_table(&throughput_rows)),
    }
    println!("\nload average {} after", load_text(load_after));
    if let Some(text) = pressure_text(&mut pressures) {
        println!("CPU pressure during the measurements kept: {text}");
    }
    if let Some(path) = &options.json {
        let results = match mode {
            Mode::Latency => report::latency_json(&latency_rows),
            Mode::Throughput => report::throughput_json(&throughput_rows),
        };
        let document = serde_json::json!({
            "results": results,
            "meta": {
                "mode": mode.name(),
                "command": std::env::args().collect::<Vec<_>>().join(" "),
                "cpu": cpu_model(),
                "cores": cores.map(|(a, b)| vec![a, b]),
                "load_before": load_before,
                "load_after": load_after,
                "clock_read_ns": clock_ns,
                "runs": options.runs.max(1),
                "cpu_pressure": pressures,
            }
        });
        std::fs::write(path, serde_json::to_string_pretty(&document)? + "\n")
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if let Some(path) = &options.plot {
        if mode != Mode::Latency {
            eprintln!(
                "ferry-bench: --plot draws latency distributions; nothing to draw for throughput"
            );
        } else {
            let title = format!(
                "ferry-bench latency: round-trip time by percentile ({}, load {})",
                cpu_model(),
                load_text(load_before)
            );
            std::fs::write(path, report::latency_svg(&latency_rows, &title))
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
    }
    Ok(failures == 0)
}

/// The median and the highest CPU pressure of the measurements kept.
fn pressure_text(pressures: &mut [f64]) -> Option<String> {
    if pressures.is_empty() || pressures.iter().any(|p| p.is_nan()) {
        return None;
    }
    pressures.sort_by(f64::total_cmp);
    Some(format!(
        "median {:.1} %, highest {:.1} % of the time some task waited for a CPU",
        100.0 * pressures[pressures.len() / 2],
        100.0 * pressures[pressures.len() - 1]
    ))
}

/// Makes one measurement, again (up to `--attempts` times) while the CPUs
/// were contended beyond `--max-pressure`; keeps the least contended one.
/// Returns it with its CPU pressure (NaN if unknown).
fn measure_quietly(
    peer: &mut Peer,
    job: &mut Job,
    mode: Mode,
    warmup: Amount,
    measure: Amount,
    options: &Options,
) -> (Result<Outcome>, f64) {
    let mut best: Option<(Result<Outcome>, f64)> = None;
    for attempt in 0..options.attempts.max(1) {
        if attempt > 0 {
            // Let the other work run rather than compete with it.
            std::thread::sleep(Duration::from_millis(200));
        }
        let pressure = cpu::Pressure::start();
        let outcome = measure_one(peer, job, mode, warmup, measure);
        let share = pressure.share().unwrap_or(f64::NAN);
        let failed = outcome.is_err();
        if best.as_ref().is_none_or(|(_, kept)| share < *kept) || failed {
            best = Some((outcome, share));
        }
        let quiet = options
            .max_pressure
            .is_none_or(|limit| share.is_nan() || share * 100.0 <= limit);
        if failed || quiet {
            break;
        }
    }
    best.expect("at least one attempt")
}

enum Outcome {
    Latency(
        hdrhistogram::Histogram<u64>,
        ferry_bench::endpoint::Counters,
    ),
    Throughput(u64, Duration, ferry_bench::endpoint::Counters),
}

fn measure_one(
    peer: &mut Peer,
    job: &mut Job,
    mode: Mode,
    warmup: Amount,
    measure: Amount,
) -> Result<Outcome> {
    let mut end = peer.start(job)?;
    let size = job.size;
    let outcome = with_end!(&mut end, end => match mode {
        Mode::Latency => driver::latency(end, size, warmup, measure)
            .map(|run| Outcome::Latency(run.histogram, run.counters)),
        Mode::Throughput => driver::throughput(end, size, warmup, measure)
            .map(|run| Outcome::Throughput(run.messages, run.elapsed, run.counters)),
    });
    drop(end);
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            return Err(match peer.failure() {
                Some(theirs) => format!("{e} ({theirs})").into(),
                None => e,
            });
        }
    };
    let theirs = peer.finish()?;
    Ok(match outcome {
        Outcome::Latency(h, ours) => Outcome::Latency(h, ours.plus(theirs)),
        Outcome::Throughput(n, t, ours) => Outcome::Throughput(n, t, ours.plus(theirs)),
    })
}
