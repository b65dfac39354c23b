//! Round-trip latency of a typed 64-byte message between two processes,
//! next to the ring-only floor measured in the same run.
//!
//! ```text
//! cargo run --release -p ferry-transport --example latency -- [--iters N]
//! ```
//!
//! For each wait strategy (`Spin`, then `Park`, on both ends):
//!
//! - **typed**: a `Connection` to a child process (this binary re-executed,
//!   given its end over a ferry-handoff bootstrap channel). Each round trip
//!   is a `send_sync` of `Ping { data: [u8; 64] }`: the child's handler reads
//!   every byte and replies `Pong` with each byte complemented; the parent
//!   checks every byte of the reply.
//! - **ring**: the floor underneath: two bare `ferry_ring` rings in one
//!   sealed region (like ring/examples/pingpong.rs), 64-byte frames filled
//!   in place, echoed complemented byte by byte, every byte checked.
//!
//! The two processes are pinned to different CPUs when two are allowed.
//! Percentiles of the round trip (hdrhistogram, after a warm-up) are printed
//! side by side with the ratio typed / ring.

use ferry_handoff::Channel;
use ferry_ring::{Consumer, Producer, RING_ALIGN, RecvError, Region, ring_size};
use ferry_transport::Context;
use ferry_transport::{
    Connection, ConnectionConfig, DispatchError, Endpoint, Receiver, Remote, WaitStrategy,
};
use hdrhistogram::Histogram;
use std::os::fd::{AsFd, BorrowedFd};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SIZE: usize = 64;
/// Bounds every wait: a broken peer must not hang the example.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Stops a run early on a machine too busy to finish it in reasonable time.
const RUN_LIMIT: Duration = Duration::from_secs(5);
/// Data area of each bare ring.
const RING_CAPACITY: usize = 64 * 1024;

ferry_transport::protocol! {
    /// The echo service the child runs.
    pub receiver Echo handled_by EchoHandler {
        /// 64 bytes out, their complement back.
        fn ping => Ping { data: [u8; 64] } -> Pong { data: [u8; 64] };
    }
}

const SCHEMA: u64 = ferry_transport::schema_of(&[<Echo as Receiver>::SCHEMA]);

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
            Mode::Spin => 100_000,
            Mode::Park => 20_000,
        }
    }
}

type BoxError = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--child") => child(&args[1..]),
        _ => parent(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latency: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parent(args: &[String]) -> Result<(), BoxError> {
    let iters = match args {
        [] => None,
        [flag, n] if flag == "--iters" => {
            Some(n.parse::<u64>().map_err(|_| format!("bad count {n}"))?)
        }
        _ => return Err("usage: latency [--iters N]".into()),
    };
    let cpus = allowed_cpus();
    match cpus.as_slice() {
        [a, b, ..] => {
            pin_to(*a);
            println!("parent on CPU {a}, echo child on CPU {b}");
        }
        _ => println!("only one CPU allowed: not pinning (Spin mode will suffer)"),
    }
    let child_cpu = cpus.get(1).copied();
    println!(
        "round trip of a {SIZE}-byte message, ns (typed: ferry-transport send_sync; ring: bare ferry-ring)"
    );
    println!(
        "{:<5} {:>7} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "mode", "count", "typed p50", "typed p99", "ring p50", "ring p99", "x p50", "x p99"
    );
    for mode in [Mode::Spin, Mode::Park] {
        let iters = iters.unwrap_or(mode.default_iters());
        let typed = run_typed(mode, iters, child_cpu)?;
        let ring = run_ring(mode, iters, child_cpu)?;
        let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
        let (t50, t99) = (typed.value_at_quantile(0.5), typed.value_at_quantile(0.99));
        let (r50, r99) = (ring.value_at_quantile(0.5), ring.value_at_quantile(0.99));
        println!(
            "{:<5} {:>7} {:>10} {:>10} {:>10} {:>10} {:>8.2}x {:>8.2}x",
            mode.name(),
            typed.len().min(ring.len()),
            t50,
            t99,
            r50,
            r99,
            ratio(t50, r50),
            ratio(t99, r99),
        );
    }
    Ok(())
}

fn new_histogram() -> Result<Histogram<u64>, BoxError> {
    Ok(Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?)
}

/// Spawns this binary as the echo child of `kind`, with a control channel.
fn spawn_child(kind: &str, mode: Mode, cpu: Option<usize>) -> Result<(Child, Channel), BoxError> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["--child", kind, mode.name()])
        .arg(cpu.map_or_else(|| "-".to_owned(), |cpu| cpu.to_string()))
        .stdin(Stdio::null());
    Ok(ferry_handoff::bootstrap::spawn_with_channel(command)?)
}

/// Waits for the child to exit (killing it after `TIMEOUT`) and requires
/// success.
fn reap(mut child: Child) -> Result<(), BoxError> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            return if status.success() {
                Ok(())
            } else {
                Err(format!("the echo child failed: {status}").into())
            };
        }
        if Instant::now() >= deadline {
            child.kill()?;
            child.wait()?;
            return Err("the echo child did not exit".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Typed round trips: `send_sync(Ping)` to the child's `Echo` handler.
fn run_typed(mode: Mode, iters: u64, cpu: Option<usize>) -> Result<Histogram<u64>, BoxError> {
    let config = ConnectionConfig::default()
        .schema(SCHEMA)
        .wait(mode.strategy())
        .peer_name("echo");
    let (mut connection, endpoint) = Connection::create(config)?;
    let (child, control) = spawn_child("typed", mode, cpu)?;
    let fds: Vec<BorrowedFd<'_>> = endpoint.fds.iter().map(|fd| fd.as_fd()).collect();
    control.send(&endpoint.metadata, &fds)?;
    drop(fds);
    // The child must hold the only copies of its end (liveness).
    drop(endpoint);

    let echo = Remote::<Echo>::new(1);
    let warmup = (iters / 10).max(1_000);
    let mut histogram = new_histogram()?;
    let started = Instant::now();
    for i in 0..warmup + iters {
        let sent = Instant::now();
        let mut data = [0u8; SIZE];
        for (j, byte) in data.iter_mut().enumerate() {
            *byte = (i as u8).wrapping_add(j as u8);
        }
        let reply = connection.send_sync(echo, &Ping { data }, TIMEOUT)?;
        let intact = reply
            .data
            .iter()
            .zip(&data)
            .all(|(got, sent)| *got == !*sent);
        drop(reply);
        let elapsed = sent.elapsed();
        if !intact {
            return Err(
                format!("typed round trip {i}: the reply is not the request's complement").into(),
            );
        }
        if i >= warmup {
            histogram.record(elapsed.as_nanos() as u64)?;
        }
        if i % 1024 == 0 && started.elapsed() > RUN_LIMIT {
            eprintln!(
                "typed {}: cut short after {} round trips",
                mode.name(),
                histogram.len()
            );
            break;
        }
    }
    // The child's dispatch ends with Disconnected and it exits.
    drop(connection);
    reap(child)?;
    Ok(histogram)
}

/// Offset of the pong ring (echo to parent) in the bare region.
fn pong_offset() -> usize {
    ring_size(RING_CAPACITY).next_multiple_of(RING_ALIGN)
}

/// Ring-only round trips over two bare rings in one sealed region.
fn run_ring(mode: Mode, iters: u64, cpu: Option<usize>) -> Result<Histogram<u64>, BoxError> {
    let region = Arc::new(Region::create(pong_offset() + ring_size(RING_CAPACITY))?);
    ferry_ring::init(&region, 0, RING_CAPACITY)?;
    ferry_ring::init(&region, pong_offset(), RING_CAPACITY)?;
    let mut ping = Producer::attach(Arc::clone(&region), 0)?.with_wait_strategy(mode.strategy());
    let mut pong =
        Consumer::attach(Arc::clone(&region), pong_offset())?.with_wait_strategy(mode.strategy());
    let (child, control) = spawn_child("ring", mode, cpu)?;
    control.send(b"region", &[region.fd().ok_or("a memfd region")?])?;

    let warmup = (iters / 10).max(1_000);
    let mut histogram = new_histogram()?;
    let started = Instant::now();
    for i in 0..warmup + iters {
        let sent = Instant::now();
        let mut request = ping.reserve(SIZE, Some(TIMEOUT))?;
        for (j, byte) in request.iter_mut().enumerate() {
            *byte = (i as u8).wrapping_add(j as u8);
        }
        request.commit();
        let reply = pong.peek(Some(TIMEOUT))?;
        let intact = reply.len() == SIZE
            && reply
                .payload()
                .iter()
                .enumerate()
                .all(|(j, &b)| b == !(i as u8).wrapping_add(j as u8));
        reply.release();
        let elapsed = sent.elapsed();
        if !intact {
            return Err(
                format!("ring round trip {i}: the reply is not the request's complement").into(),
            );
        }
        if i >= warmup {
            histogram.record(elapsed.as_nanos() as u64)?;
        }
        if i % 1024 == 0 && started.elapsed() > RUN_LIMIT {
            eprintln!(
                "ring {}: cut short after {} round trips",
                mode.name(),
                histogram.len()
            );
            break;
        }
    }
    // Dropping the ping producer closes the ring: the echo sees Closed.
    drop(ping);
    drop(pong);
    reap(child)?;
    Ok(histogram)
}

// ---------------------------------------------------------------------------
// The echo child.

fn child(args: &[String]) -> Result<(), BoxError> {
    let [kind, mode, cpu] = args else {
        return Err("usage: latency --child typed|ring spin|park CPU|-".into());
    };
    let mode = Mode::parse(mode)?;
    // Pin first: threads started later (the hang-up watcher) inherit it.
    if let Ok(cpu) = cpu.parse() {
        pin_to(cpu);
    }
    let control = ferry_handoff::bootstrap::channel_from_env()?;
    let mut buf = [0u8; 256];
    let received = control.recv(&mut buf, Some(TIMEOUT))?;
    match kind.as_str() {
        "typed" => {
            let endpoint = Endpoint {
                fds: received.fds,
                metadata: buf[..received.len].to_vec(),
            };
            let config = ConnectionConfig::default()
                .schema(SCHEMA)
                .wait(mode.strategy())
                .peer_name("parent");
            let mut connection = Connection::open(endpoint, config)?;
            connection.register(1, Echo::handler(Complement));
            // The parent may pause between runs: wait long.
            loop {
                match connection.dispatch(Some(Duration::from_secs(60))) {
                    Ok(0) => return Err("no request for 60 s".into()),
                    Ok(_) => {}
                    Err(DispatchError::Disconnected) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        "ring" => {
            let fd = received
                .fds
                .into_iter()
                .next()
                .ok_or("no region descriptor")?;
            let region = Arc::new(Region::open(fd)?);
            let mut requests =
                Consumer::attach(Arc::clone(&region), 0)?.with_wait_strategy(mode.strategy());
            let mut replies =
                Producer::attach(region, pong_offset())?.with_wait_strategy(mode.strategy());
            loop {
                let request = match requests.peek(Some(Duration::from_secs(60))) {
                    Ok(request) => request,
                    Err(RecvError::Closed) => return Ok(()),
                    Err(e) => return Err(e.into()),
                };
                let mut reply = replies.reserve(request.len(), Some(TIMEOUT))?;
                for (out, byte) in reply.iter_mut().zip(request.payload()) {
                    *out = !*byte;
                }
                reply.commit();
                request.release();
            }
        }
        other => Err(format!("unknown child kind {other}").into()),
    }
}

/// The echo handler: reads every byte, replies with its complement.
struct Complement;

impl EchoHandler for Complement {
    fn ping(&self, _: &mut Context, message: &ArchivedPing) -> Pong {
        Pong {
            data: std::array::from_fn(|i| !message.data[i]),
        }
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

/// Pins the calling thread (and the threads it starts later) to `cpu`; best
/// effort.
fn pin_to(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
        eprintln!("latency: could not pin to CPU {cpu}: {e}");
    }
}
