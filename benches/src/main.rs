//! `ferry-bench`: round-trip latency and one-way throughput between two real
//! processes, over ferry and over the baselines, measured in the same run.
//!
//! ```text
//! cargo run --release -p ferry-bench -- latency
//! cargo run --release -p ferry-bench -- throughput --size 64,4K,1M --runs 5 --json out.json
//! cargo run --release -p ferry-bench -- latency --rate 10k,100k,300k --plot sweep.svg
//! ```

use clap::{Args, Parser, Subcommand};
use ferry_bench::background::{Background, BackgroundRun};
use ferry_bench::catalog::Transport;
use ferry_bench::driver::{self, Amount};
use ferry_bench::job::{Job, parse_trust, trust_name};
use ferry_bench::mode::Mode;
use ferry_bench::payload::MIN_SIZE;
use ferry_bench::report::{self, Key, LatencyRow, OpenSummary, Summary, ThroughputRow};
use ferry_bench::session::Peer;
use ferry_bench::sizes::{Sizes, parse_size};
use ferry_bench::{BoxError, Result, cpu, open_loop, peer, plot, with_end};
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
    /// Open loop (latency): send at these rates, comma-separated, in
    /// requests per second (10k, 250000, 1.5M), and measure each latency
    /// from the request's intended send time.
    #[arg(long, value_name = "LIST")]
    rate: Option<String>,
    /// Latency under load: keep a one-way stream of SIZE-byte messages
    /// running over a second connection of the same transport (a second
    /// peer process) while the round trips are measured.
    #[arg(long, value_name = "SIZE")]
    background_stream: Option<String>,
    /// Latency: draw each round trip's size from this distribution (one
    /// size a line, or `SIZE COUNT` histogram lines; at least 24 bytes)
    /// instead of --size.
    #[arg(long, value_name = "FILE")]
    sizes_from: Option<PathBuf>,
    /// Seed of the draws from --sizes-from.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Draw a plot as SVG: latency percentiles over the rate with --rate,
    /// the latency CDFs otherwise.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Draw the latency CDFs (every transport, size and rate) as SVG.
    #[arg(long, value_name = "FILE.svg")]
    cdf: Option<PathBuf>,
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
    let sizes_from = match &options.sizes_from {
        None => None,
        Some(_) if mode != Mode::Latency => {
            return Err("--sizes-from draws the sizes of round trips (latency)".into());
        }
        Some(path) => Some(Sizes::from_file(path, options.seed)?),
    };
    let sizes = match &sizes_from {
        Some(distribution) => vec![distribution.max()],
        None => list(&options.size, parse_size)?,
    };
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
    let rates: Vec<Option<u64>> = match &options.rate {
        None => vec![None],
        Some(_) if mode != Mode::Latency => {
            return Err("--rate sets the request rate of round trips (latency)".into());
        }
        Some(text) => list(text, open_loop::parse_rate)?
            .into_iter()
            .map(|r| Some(r.round() as u64))
            .collect(),
    };
    if rates.is_empty() {
        return Err("--rate lists no rate".into());
    }
    let mut plans = Vec::new();
    for run in 0..options.runs.max(1) {
        for &size in &sizes {
            for &rate in &rates {
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
                                rate,
                                workload: None,
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
                                sizes: sizes_from.clone(),
                            };
                            plans.push(Plan { key, job, run });
                        }
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
    let background = match &options.background_stream {
        None => None,
        Some(_) if mode != Mode::Latency => {
            return Err("--background-stream runs beside round trips (latency)".into());
        }
        Some(text) => {
            let size = parse_size(text)?;
            if size < MIN_SIZE {
                return Err(format!(
                    "background stream size {size} is below the {MIN_SIZE}-byte minimum"
                )
                .into());
            }
            Some(size)
        }
    };
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
    let sizes_from = plans.first().and_then(|plan| plan.job.sizes.clone());
    if let (Some(sizes), Some(path)) = (&sizes_from, &options.sizes_from) {
        println!(
            "message sizes drawn from {} (seed {}): {} distinct, {}-{} B, median {} B, mean {:.0} B; the size column shows the largest",
            path.display(),
            sizes.seed(),
            sizes.distinct(),
            sizes.min(),
            sizes.max(),
            sizes.quantile(0.5),
            sizes.mean()
        );
    }
    let mut latency_rows: Vec<LatencyRow> = Vec::new();
    let mut throughput_rows: Vec<ThroughputRow> = Vec::new();
    let ring = options.ring.as_deref().map(parse_size).transpose()?;
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
                "{} {} B{}, run {}",
                plan.key.label(),
                plan.key.size,
                plan.key.rate.map_or_else(String::new, |r| format!(
                    " at {}/s",
                    report::rate_label(r as f64)
                )),
                plan.run + 1
            ),
        );
        let setup = Setup {
            mode,
            warmup,
            measure,
            rate: plan.key.rate,
            background,
            ring,
        };
        let (outcome, contended) = measure_quietly(&mut peer, &mut plan.job, &setup, options);
        pressures.push(contended);
        match outcome {
            Ok(Outcome::Latency(histogram, counters, open, stream)) => {
                let row = match latency_rows.iter_mut().position(|r| r.key == plan.key) {
                    Some(i) => &mut latency_rows[i],
                    None => {
                        latency_rows.push(LatencyRow::new(plan.key.clone()));
                        latency_rows.last_mut().expect("just pushed")
                    }
                };
                row.runs.push(Summary::of(&histogram));
                row.rounds.push(plan.run);
                row.merged.add(&histogram).map_err(|e| format!("{e:?}"))?;
                row.counters = row.counters.plus(counters);
                row.open.extend(open.map(|open| *open));
                row.background.extend(stream);
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
                row.rounds.push(plan.run);
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
        Mode::Latency if options.rate.is_some() => {
            print!("{}", report::open_loop_table(&latency_rows))
        }
        Mode::Latency => {
            print!("{}", report::latency_table(&latency_rows));
            for row in latency_rows.iter().filter(|r| !r.background.is_empty()) {
                println!(
                    "background stream beside {} {} B: {} B messages at {} msgs/s",
                    row.key.label(),
                    report::size_label(row.key.size),
                    report::size_label(row.background[0].size),
                    report::rate_label(row.background_rate())
                );
            }
        }
        Mode::Throughput => print!("{}", report::throughput_table(&throughput_rows)),
    }
    println!("\nload average {} after", load_text(load_after));
    if let Some(text) = pressure_text(&mut pressures) {
        println!("CPU pressure during the measurements kept: {text}");
    }
    if let Some(path) = &options.json {
        let mut results = match mode {
            Mode::Latency => report::latency_json(&latency_rows),
            Mode::Throughput => report::throughput_json(&throughput_rows),
        };
        let sizes_json = sizes_from.as_ref().map(|sizes| {
            let mut summary = sizes.summary_json();
            if let (Some(object), Some(path)) = (summary.as_object_mut(), &options.sizes_from) {
                object.insert("file".into(), path.display().to_string().into());
            }
            summary
        });
        if let Some(summary) = &sizes_json {
            for result in &mut results {
                if let Some(object) = result.as_object_mut() {
                    object.insert("sizes_from".into(), summary.clone());
                }
            }
        }
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
                "rates": options.rate,
                "background_stream_size": background,
                "sizes_from": sizes_json,
                "cpu_pressure": pressures,
            }
        });
        std::fs::write(path, serde_json::to_string_pretty(&document)? + "\n")
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let load = format!(
        "{}, load {} before, {} after",
        cpu_model(),
        load_text(load_before),
        load_text(load_after)
    );
    if let Some(path) = &options.plot {
        if mode != Mode::Latency {
            eprintln!("ferry-bench: --plot draws latencies; nothing to draw for throughput");
        } else if options.rate.is_some() {
            let title = format!("ferry-bench open-loop latency over rate ({load})");
            plot::latency_vs_rate(&latency_rows, path, &title)?;
        } else {
            let title = format!("ferry-bench round-trip time CDF ({load})");
            plot::cdf(&latency_rows, path, &title)?;
        }
    }
    if let Some(path) = &options.cdf {
        if mode != Mode::Latency {
            eprintln!("ferry-bench: --cdf draws latencies; nothing to draw for throughput");
        } else {
            let title = format!("ferry-bench latency CDF ({load})");
            plot::cdf(&latency_rows, path, &title)?;
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
    setup: &Setup,
    options: &Options,
) -> (Result<Outcome>, f64) {
    let mut best: Option<(Result<Outcome>, f64)> = None;
    for attempt in 0..options.attempts.max(1) {
        if attempt > 0 {
            // Let the other work run rather than compete with it.
            std::thread::sleep(Duration::from_millis(200));
        }
        let pressure = cpu::Pressure::start();
        let outcome = measure_one(peer, job, setup);
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

/// How every measurement of a run is made.
struct Setup {
    mode: Mode,
    warmup: Amount,
    measure: Amount,
    /// Open loop at this rate (requests per second).
    rate: Option<u64>,
    /// A background stream of messages of this size.
    background: Option<usize>,
    /// `--ring`, if given.
    ring: Option<usize>,
}

enum Outcome {
    Latency(
        hdrhistogram::Histogram<u64>,
        ferry_bench::endpoint::Counters,
        Option<Box<OpenSummary>>,
        Option<BackgroundRun>,
    ),
    Throughput(u64, Duration, ferry_bench::endpoint::Counters),
}

fn measure_one(peer: &mut Peer, job: &mut Job, setup: &Setup) -> Result<Outcome> {
    let stream = match setup.background {
        Some(size) => Some(Background::start(
            job,
            size,
            setup.ring.unwrap_or_else(|| auto_ring(size)),
        )?),
        None => None,
    };
    let outcome = measure_round_trips(peer, job, setup);
    let stream = stream.map(Background::stop).transpose();
    let mut outcome = outcome?;
    if let Outcome::Latency(_, _, _, slot) = &mut outcome {
        *slot = stream?;
    }
    Ok(outcome)
}

fn measure_round_trips(peer: &mut Peer, job: &mut Job, setup: &Setup) -> Result<Outcome> {
    let mut end = peer.start(job)?;
    let (size, ring) = (job.size, job.ring);
    let sizes = job.sizes.clone();
    let sizes = sizes.as_ref();
    let (warmup, measure) = (setup.warmup, setup.measure);
    let outcome = with_end!(&mut end, end => match (setup.mode, setup.rate) {
        (Mode::Latency, Some(rate)) => open_loop::open_loop(end, size, sizes, ring, rate as f64, warmup, measure)
            .map(|run| {
                let open = Box::new(OpenSummary::of(&run));
                Outcome::Latency(run.histogram, run.counters, Some(open), None)
            }),
        (Mode::Latency, None) => driver::latency(end, size, sizes, warmup, measure)
            .map(|run| Outcome::Latency(run.histogram, run.counters, None, None)),
        (Mode::Throughput, _) => driver::throughput(end, size, warmup, measure)
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
        Outcome::Latency(h, ours, open, stream) => {
            Outcome::Latency(h, ours.plus(theirs), open, stream)
        }
        Outcome::Throughput(n, t, ours) => Outcome::Throughput(n, t, ours.plus(theirs)),
    })
}
