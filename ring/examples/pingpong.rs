//! Round-trip latency between two processes over two ferry rings.
//!
//! ```text
//! cargo run --release -p ferry-ring --example pingpong -- \
//!     [--size BYTES[,BYTES...]] [--iters N] [--mode spin|park|both]
//! ```
//!
//! The pinger creates one sealed memfd holding two rings (ping at offset 0,
//! pong right after, aligned to `RING_ALIGN`), re-executes itself as the echo
//! process (`--echo`), handing it the memfd through an inherited descriptor
//! named in `FERRY_PINGPONG_FD`, and pins the two processes to different CPUs
//! when it may. Each round trip: the pinger fills every byte of a request in
//! place and commits it; the echo reads every byte and writes a reply of the
//! same size, each byte the complement of the request's; the pinger checks
//! every byte of the reply. Latencies are recorded after a warm-up and
//! reported as percentiles of the round trip, in nanoseconds.
//!
//! Defaults: sizes 8 B and 1 KiB, both wait strategies, 200 000 round trips
//! in Spin mode and 20 000 in Park mode.

use ferry_ring::{Consumer, Producer, RING_ALIGN, RecvError, Region, WaitStrategy, ring_size};
use hdrhistogram::Histogram;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Data area of each ring: room for several 1 KiB frames in flight.
const CAPACITY: usize = 64 * 1024;
const FD_ENV: &str = "FERRY_PINGPONG_FD";
/// Bounds every wait: a broken peer must not hang the example.
const TIMEOUT: Option<Duration> = Some(Duration::from_secs(10));
/// Stops a run early on a machine too busy to finish it in reasonable time.
const RUN_LIMIT: Duration = Duration::from_secs(15);

const USAGE: &str = "usage: pingpong [--size BYTES[,BYTES...]] [--iters N] [--mode spin|park|both]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Spin,
    Park,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Spin => "spin",
            Mode::Park => "park",
        }
    }

    fn parse(name: &str) -> Result<Mode, String> {
        match name {
            "spin" => Ok(Mode::Spin),
            "park" => Ok(Mode::Park),
            other => Err(format!("unknown mode {other}")),
        }
    }

    fn strategy(self) -> WaitStrategy {
        match self {
            Mode::Spin => WaitStrategy::Spin,
            Mode::Park => WaitStrategy::Park,
        }
    }

    fn default_iters(self) -> u64 {
        match self {
            Mode::Spin => 200_000,
            Mode::Park => 20_000,
        }
    }
}

struct Options {
    sizes: Vec<usize>,
    iters: Option<u64>,
    modes: Vec<Mode>,
}

fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        sizes: vec![8, 1024],
        iters: None,
        modes: vec![Mode::Spin, Mode::Park],
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = match inline.or_else(|| args.next()) {
            Some(value) => value,
            None => return Err(format!("{flag} needs a value")),
        };
        match flag.as_str() {
            "--size" => {
                options.sizes = value
                    .split(',')
                    .map(|s| s.parse().map_err(|_| format!("bad size {s}")))
                    .collect::<Result<_, _>>()?;
            }
            "--iters" => {
                let iters: u64 = value.parse().map_err(|_| format!("bad count {value}"))?;
                if iters == 0 {
                    return Err("--iters must be positive".into());
                }
                options.iters = Some(iters);
            }
            "--mode" => {
                options.modes = match value.as_str() {
                    "both" => vec![Mode::Spin, Mode::Park],
                    one => vec![Mode::parse(one)?],
                };
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    let max = ferry_ring::frame::max_payload(CAPACITY);
    if let Some(&size) = options.sizes.iter().find(|&&size| size > max) {
        return Err(format!("size {size} exceeds the ring's maximum of {max}"));
    }
    Ok(options)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--echo") {
        args.next();
        return match echo(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("echo: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let options = match parse_options(args) {
        Ok(options) => options,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("pingpong: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let cpus = allowed_cpus();
    match cpus.as_slice() {
        [a, b, ..] => println!("pinger on CPU {a}, echo on CPU {b}"),
        _ => println!("only one CPU allowed: not pinning (Spin mode will suffer)"),
    }
    println!(
        "{:<5} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}   round trip, ns",
        "mode", "size", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    for &mode in &options.modes {
        for &size in &options.sizes {
            let iters = options.iters.unwrap_or(mode.default_iters());
            if let Err(e) = run(mode, size, iters, &cpus) {
                eprintln!("pingpong: {} {size} B: {e}", mode.name());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

type BoxError = Box<dyn std::error::Error>;

/// Offset of the pong ring (echo to pinger) in the region.
fn pong_offset() -> usize {
    ring_size(CAPACITY).next_multiple_of(RING_ALIGN)
}

fn run(mode: Mode, size: usize, iters: u64, cpus: &[usize]) -> Result<(), BoxError> {
    let region = Arc::new(Region::create(pong_offset() + ring_size(CAPACITY))?);
    ferry_ring::init(&region, 0, CAPACITY)?;
    ferry_ring::init(&region, pong_offset(), CAPACITY)?;
    let mut ping = Producer::attach(Arc::clone(&region), 0)?.with_wait_strategy(mode.strategy());
    let mut pong =
        Consumer::attach(Arc::clone(&region), pong_offset())?.with_wait_strategy(mode.strategy());

    let mut echo = spawn_echo(&region, mode, cpus.get(1).copied())?;
    if let Some(&cpu) = cpus.first() {
        pin_to(cpu);
    }

    let warmup = (iters / 10).max(1_000);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let started = Instant::now();
    let mut cut_short = false;
    for i in 0..warmup + iters {
        let fill = i as u8;
        let sent = Instant::now();
        let mut request = ping.reserve(size, TIMEOUT)?;
        request.fill(fill);
        request.commit();
        let reply = pong.peek(TIMEOUT)?;
        let intact = reply.len() == size && reply.payload().iter().all(|&b| b == !fill);
        reply.release();
        let elapsed = sent.elapsed();
        if !intact {
            return Err(
                format!("round trip {i}: the reply is not the request's complement").into(),
            );
        }
        if i >= warmup {
            histogram.record(elapsed.as_nanos() as u64)?;
        }
        if i % 1024 == 0 && started.elapsed() > RUN_LIMIT {
            cut_short = true;
            break;
        }
    }
    let ping_stats = ping.stats();
    let pong_stats = pong.stats();
    // Dropping the ping producer closes the ring: the echo sees Closed.
    drop(ping);
    drop(pong);
    let status = wait_for(&mut echo, Duration::from_secs(10))?;
    if !status.success() {
        return Err(format!("echo process failed: {status}").into());
    }
    println!(
        "{:<5} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}{}",
        mode.name(),
        size,
        histogram.len(),
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.9),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max(),
        if cut_short { "   (cut short)" } else { "" },
    );
    if mode == Mode::Park {
        println!(
            "      pinger: {} parks waiting for the echo, {} wakes sent to it, {} parks waiting for room",
            pong_stats.parks, ping_stats.wakes, ping_stats.parks
        );
    }
    Ok(())
}

/// Re-executes this binary as the echo process, passing the memfd.
fn spawn_echo(
    region: &Region,
    mode: Mode,
    cpu: Option<usize>,
) -> std::io::Result<std::process::Child> {
    let fd = region.fd().expect("a memfd region").as_raw_fd();
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["--echo", mode.name()])
        .arg(cpu.map_or_else(|| "-".to_owned(), |cpu| cpu.to_string()))
        .env(FD_ENV, fd.to_string())
        .stdin(Stdio::null());
    // Runs in the forked child, before exec.
    let keep_memfd = move || -> std::io::Result<()> {
        // SAFETY: `fd` is the region's memfd, open in the parent for the
        // whole spawn; the forked child has a copy of the same table.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
        Ok(())
    };
    // SAFETY: between fork and exec only async-signal-safe calls are
    // allowed; `keep_memfd` makes two raw system calls (fcntl and prctl)
    // through rustix, allocating nothing and taking no lock.
    unsafe { cmd.pre_exec(keep_memfd) };
    cmd.spawn()
}

fn wait_for(
    child: &mut std::process::Child,
    limit: Duration,
) -> std::io::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            child.kill()?;
            return child.wait();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The echo process: answers every request with its complement, until the
/// pinger closes the ring.
fn echo(mut args: impl Iterator<Item = String>) -> Result<(), BoxError> {
    let mode = Mode::parse(&args.next().ok_or("missing mode")?)?;
    if let Some(cpu) = args.next().and_then(|cpu| cpu.parse().ok()) {
        pin_to(cpu);
    }
    let raw: i32 = std::env::var(FD_ENV)?.parse()?;
    rustix::io::fcntl_getfd(
        // SAFETY: borrowed for this one check that the number is open.
        unsafe { BorrowedFd::borrow_raw(raw) },
    )?;
    // SAFETY: the pinger cleared FD_CLOEXEC on its memfd for us and named it
    // in FD_ENV; nothing else in this process owns the descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let region = Arc::new(Region::open(fd)?);
    let mut requests =
        Consumer::attach(Arc::clone(&region), 0)?.with_wait_strategy(mode.strategy());
    let mut replies = Producer::attach(region, pong_offset())?.with_wait_strategy(mode.strategy());
    // The pinger may pause between runs of the histogram: wait long.
    let idle = Some(Duration::from_secs(60));
    loop {
        let request = match requests.peek(idle) {
            Ok(request) => request,
            Err(RecvError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut reply = replies.reserve(request.len(), TIMEOUT)?;
        for (out, byte) in reply.iter_mut().zip(request.payload()) {
            *out = !*byte;
        }
        reply.commit();
        request.release();
    }
}

/// CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&cpu| set.is_set(cpu))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Pins the calling thread to `cpu`; best effort.
fn pin_to(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
        eprintln!("pingpong: could not pin to CPU {cpu}: {e}");
    }
}
