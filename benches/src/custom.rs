//! Benchmarking a user's own messages: a request declared with
//! [`ferry_transport::protocol!`] in the user's crate, answered by the
//! user's handler in a second process, measured with ferry-bench's loops
//! (closed-loop round trips, and open loop at fixed rates), CPU pinning,
//! tables, JSON and plots.
//!
//! The user implements [`Workload`] and calls [`main`] from their binary's
//! `main`. The binary re-executes itself as the peer (like `ferry-bench`):
//! the measuring process creates the connection with the workload's
//! [`config`](Workload::config) and hands its descriptors over a
//! ferry-handoff channel; the peer opens it, registers the user's handlers
//! ([`Workload::register`]) and dispatches until the measuring process
//! hangs up. Requests go out with
//! [`send_with_reply`](ferry_transport::Connection::send_with_reply); each
//! reply comes back through ferry's reply matching, and is accepted when
//! it answers the request the loop expects next (replies come back in
//! order) and passes [`Workload::check`].
//!
//! The command line of such a binary: `--rate LIST` (open loop, requests
//! per second, e.g. `10k,50k`), `--iters N` or `--seconds S`, `--warmup`,
//! `--runs R`, `--cores A,B`, `--json FILE`, `--plot FILE.svg`,
//! `--cdf FILE.svg`, `--quiet` (see `--help`).
//!
//! ```no_run
//! use ferry_bench::custom::{self, Workload};
//! use ferry_transport::{Connection, ConnectionConfig, Context, Receiver, Remote};
//!
//! ferry_transport::protocol! {
//!     /// A price service.
//!     pub receiver Prices handled_by PricesHandler {
//!         /// Asks for a symbol's price.
//!         fn quote => Quote { symbol: u32 } -> Price { symbol: u32, cents: u64 };
//!     }
//! }
//!
//! struct Desk;
//! impl PricesHandler for Desk {
//!     fn quote(&self, _: &mut Context, message: &ArchivedQuote) -> Price {
//!         Price { symbol: message.symbol.to_native(), cents: 100 }
//!     }
//! }
//!
//! struct QuoteBench;
//! impl Workload for QuoteBench {
//!     type Request = Quote;
//!     const NAME: &'static str = "quote";
//!     fn config(&self) -> ConnectionConfig {
//!         ConnectionConfig::default()
//!             .schema(ferry_transport::schema_of(&[<Prices as Receiver>::SCHEMA]))
//!     }
//!     fn destination(&self) -> Remote<Prices> {
//!         Remote::new(1)
//!     }
//!     fn register(&self, connection: &mut Connection) {
//!         connection.register(1, Prices::handler(Desk));
//!     }
//!     fn request(&mut self, seq: u64) -> Quote {
//!         Quote { symbol: seq as u32 }
//!     }
//!     fn check(seq: u64, reply: &ArchivedPrice) -> bool {
//!         reply.symbol.to_native() == seq as u32
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     custom::main(|| QuoteBench)
//! }
//! ```

use crate::catalog::Transport;
use crate::driver::{self, Amount};
use crate::endpoint::{Counters, Endpoint, OP_TIMEOUT};
use crate::open_loop;
use crate::payload::{self, Msg};
use crate::report::{self, Key, LatencyRow, OpenSummary, Summary};
use crate::{BoxError, Result, cpu, plot};
use clap::Parser;
use ferry_transport::rkyv::Archive;
use ferry_transport::{
    CallError, Connection, ConnectionConfig, Endpoint as FerryEndpoint, Message, Remote, Request,
};
use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Marks a process started as a workload's peer.
pub const CUSTOM_PEER_ENV: &str = "FERRY_BENCH_CUSTOM_PEER";

/// The archived form of a workload's reply.
pub type ArchivedReply<W> = <<<W as Workload>::Request as Request>::Reply as Archive>::Archived;

/// A user's request and handler to benchmark.
pub trait Workload: 'static {
    /// The request, declared with a reply (`fn name => Req {..} -> Rep {..}`).
    type Request: Request;
    /// The workload's name in the output.
    const NAME: &'static str;
    /// The connection settings, the same in both processes: at least the
    /// schema of the receivers involved.
    fn config(&self) -> ConnectionConfig;
    /// Where requests go (the destination [`register`](Self::register)
    /// uses in the peer).
    fn destination(&self) -> Remote<<Self::Request as Message>::Receiver>;
    /// In the peer process: registers the handlers that answer.
    fn register(&self, connection: &mut Connection);
    /// In the measuring process: request number `seq` (from 1; the warm-up
    /// uses the first ones).
    fn request(&mut self, seq: u64) -> Self::Request;
    /// Whether `reply` is a correct answer to request `seq` (any reply by
    /// default).
    fn check(seq: u64, reply: &ArchivedReply<Self>) -> bool {
        let _ = (seq, reply);
        true
    }
    /// The request's size in bytes, as reported (the row's size column and
    /// the open loop's in-flight window); 64 by default.
    fn size(&self) -> usize {
        64
    }
}

/// The command line of a workload's binary.
#[derive(Parser, Debug)]
#[command(about = "Round trips of a user's ferry message between two processes (ferry-bench)")]
pub struct CustomOptions {
    /// Open loop: rates, comma-separated, requests per second (10k, 1.5M).
    #[arg(long, value_name = "LIST")]
    pub rate: Option<String>,
    /// Round trips per measurement.
    #[arg(long, value_name = "N", conflicts_with = "seconds")]
    pub iters: Option<u64>,
    /// Seconds per measurement (default 0.25).
    #[arg(long, value_name = "S")]
    pub seconds: Option<f64>,
    /// Unrecorded warm-up: a count, or a time (50ms).
    #[arg(long, value_name = "N|TIME", default_value = "50ms")]
    pub warmup: String,
    /// Repeat every measurement R times; medians reported.
    #[arg(long, value_name = "R", default_value_t = 1)]
    pub runs: usize,
    /// CPUs of the measuring process and the peer (default: the first two allowed).
    #[arg(long, value_name = "A,B")]
    pub cores: Option<String>,
    /// Write the results as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Plot: latency over rate with --rate, the CDFs otherwise.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Plot the latency CDFs.
    #[arg(long, value_name = "FILE.svg")]
    pub cdf: Option<PathBuf>,
    /// Print only the table.
    #[arg(long)]
    pub quiet: bool,
}

/// A workload binary's `main`: the peer when started as one, otherwise
/// the measurements the command line asks for. Exit status 0 on success,
/// 2 with a message on stderr on an error.
pub fn main<W: Workload>(workload: impl FnOnce() -> W) -> ExitCode {
    let workload = workload();
    let outcome = if std::env::var_os(CUSTOM_PEER_ENV).is_some() {
        serve(&workload)
    } else {
        measure(workload, &CustomOptions::parse())
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e}", W::NAME);
            ExitCode::from(2)
        }
    }
}

/// The peer: opens the connection it was handed, registers the workload's
/// handlers and dispatches until the measuring process hangs up.
fn serve<W: Workload>(workload: &W) -> Result<()> {
    let control = ferry_handoff::bootstrap::channel_from_env()?;
    let mut buf = vec![0u8; 64 * 1024];
    let received = control.recv(&mut buf, Some(OP_TIMEOUT))?;
    let line = String::from_utf8_lossy(&buf[..received.len]).into_owned();
    let mut words = line.split_ascii_whitespace();
    if words.next() != Some("custom") {
        return Err(format!("not a workload setup: {line:?}").into());
    }
    let cpu = words.next().ok_or("the setup lacks the CPU")?;
    if cpu != "-" {
        cpu::pin(cpu.parse()?)?;
    }
    let metadata = decode_hex(words.next().ok_or("the setup lacks the metadata")?)?;
    let endpoint = FerryEndpoint {
        fds: received.fds,
        metadata,
    };
    let mut connection = Connection::open(endpoint, workload.config())?;
    workload.register(&mut connection);
    control.send(b"ready", &[])?;
    loop {
        match connection.dispatch(Some(OP_TIMEOUT)) {
            Ok(_) if connection.is_open() => {}
            Ok(_) | Err(ferry_transport::DispatchError::Disconnected) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

fn decode_hex(text: &str) -> Result<Vec<u8>> {
    if text == "-" {
        return Ok(Vec::new());
    }
    if text.len() % 2 != 0 {
        return Err("bad metadata".into());
    }
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| BoxError::from("bad metadata"))
}

/// The measuring process's end of a workload: requests with replies over
/// the user's connection, as an [`Endpoint`] the measuring loops drive.
pub struct WorkloadEnd<W: Workload> {
    workload: W,
    connection: Connection,
    destination: Remote<<W::Request as Message>::Receiver>,
    /// Replies delivered by ferry's reply matching: the request's number,
    /// and whether it was a correct answer.
    replies: Arc<Mutex<VecDeque<(u64, bool)>>>,
    size: usize,
}

impl<W: Workload> WorkloadEnd<W> {
    fn reply(&mut self) -> Option<Msg> {
        let (seq, ok) = self.replies.lock().ok()?.pop_front()?;
        // A correct reply reads as the reply to request `seq` in the
        // payload convention the loops check (so they verify the order);
        // a wrong one as an empty message, which they report.
        Some(if ok {
            Msg {
                tag: seq,
                word1: 0,
                check: payload::expected(self.size, payload::expected(self.size, seq)),
                len: self.size,
            }
        } else {
            Msg::default()
        })
    }
}

impl<W: Workload> Endpoint for WorkloadEnd<W> {
    fn send(&mut self, tag: u64) -> Result<()> {
        let request = self.workload.request(tag);
        let replies = Arc::clone(&self.replies);
        self.connection.send_with_reply(
            self.destination,
            &request,
            move |_, reply: std::result::Result<&ArchivedReply<W>, CallError>| {
                let ok = reply.is_ok_and(|reply| W::check(tag, reply));
                if let Ok(mut replies) = replies.lock() {
                    replies.push_back((tag, ok));
                }
            },
        )?;
        Ok(())
    }

    fn send_ack(&mut self, _: u64, _: u64) -> Result<()> {
        Err("a workload measures round trips only".into())
    }

    fn recv(&mut self) -> Result<Msg> {
        loop {
            if let Some(msg) = self.reply() {
                return Ok(msg);
            }
            if self.connection.dispatch(Some(OP_TIMEOUT))? == 0 {
                return Err("timed out waiting for the peer's reply".into());
            }
        }
    }

    fn can_poll(&self) -> bool {
        true
    }

    fn try_recv(&mut self) -> Result<Option<Msg>> {
        if let Some(msg) = self.reply() {
            return Ok(Some(msg));
        }
        self.connection.try_dispatch()?;
        Ok(self.reply())
    }

    fn counters(&self) -> Counters {
        let stats = self.connection.stats();
        Counters {
            sent: stats.frames_sent,
            received: stats.frames_received,
            wakes: stats.tx_ring.wakes + stats.rx_ring.wakes,
            parks: stats.tx_ring.parks + stats.rx_ring.parks,
        }
    }
}

/// The peer process of a workload and the control channel to it.
struct WorkloadPeer {
    child: std::process::Child,
    control: ferry_handoff::Channel,
}

impl Drop for WorkloadPeer {
    /// The peer exits when the connection hangs up; reap it, killing it if
    /// it lingers.
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) | Err(_) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the peer and hands it the workload's connection.
fn start<W: Workload>(
    workload: W,
    peer_cpu: Option<usize>,
) -> Result<(WorkloadEnd<W>, WorkloadPeer)> {
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .env(CUSTOM_PEER_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let die_with_parent = || -> std::io::Result<()> {
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
        Ok(())
    };
    // SAFETY: runs between fork and exec, where only async-signal-safe work
    // is allowed: one prctl(PR_SET_PDEATHSIG) system call through rustix,
    // no allocation, no lock.
    unsafe { command.pre_exec(die_with_parent) };
    let (child, control) = ferry_handoff::bootstrap::spawn_with_channel(command)?;
    let peer = WorkloadPeer { child, control };
    let (connection, endpoint) = Connection::create(workload.config())?;
    let hex: String = endpoint
        .metadata
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let line = format!(
        "custom {} {}",
        peer_cpu.map_or_else(|| "-".to_owned(), |c| c.to_string()),
        if hex.is_empty() { "-" } else { &hex }
    );
    let fds: Vec<_> = endpoint.fds.iter().map(|fd| fd.as_fd()).collect();
    peer.control.send(line.as_bytes(), &fds)?;
    drop(fds);
    drop(endpoint);
    let mut buf = [0u8; 64];
    let received = peer
        .control
        .recv(&mut buf, Some(OP_TIMEOUT))
        .map_err(|e| format!("waiting for the peer: {e}"))?;
    if &buf[..received.len] != b"ready" {
        return Err("the peer did not get ready".into());
    }
    let destination = workload.destination();
    let size = workload.size().max(payload::MIN_SIZE);
    Ok((
        WorkloadEnd {
            workload,
            connection,
            destination,
            replies: Arc::new(Mutex::new(VecDeque::new())),
            size,
        },
        peer,
    ))
}

fn list<T>(text: &str, parse: impl Fn(&str) -> Result<T>) -> Result<Vec<T>> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse(s.trim()))
        .collect()
}

/// Runs the measurements `options` ask for over `workload`, printing the
/// table and writing the JSON and plots asked for.
pub fn measure<W: Workload>(workload: W, options: &CustomOptions) -> Result<()> {
    let amount = match (options.iters, options.seconds) {
        (Some(n), _) => Amount::Iters(n.max(1)),
        (None, Some(s)) => Amount::Time(Duration::from_secs_f64(s)),
        (None, None) => Amount::Time(Duration::from_millis(250)),
    };
    let warmup = Amount::parse(&options.warmup)?;
    let rates: Vec<Option<u64>> = match &options.rate {
        None => vec![None],
        Some(text) => list(text, open_loop::parse_rate)?
            .into_iter()
            .map(|r| Some(r.round() as u64))
            .collect(),
    };
    let cores = match &options.cores {
        Some(text) => match list(text, |s| Ok(s.parse::<usize>()?))?.as_slice() {
            [a, b] => Some((*a, *b)),
            _ => return Err("--cores takes two CPUs: A,B".into()),
        },
        None => match cpu::allowed().as_slice() {
            [a, b, ..] => Some((*a, *b)),
            _ => None,
        },
    };
    if let Some((a, _)) = cores {
        cpu::pin(a).map_err(|e| format!("pinning to CPU {a}: {e}"))?;
    }
    let config = workload.config();
    let (wait, trust) = (config.wait, config.trust);
    let (mut end, _peer) = start(workload, cores.map(|(_, b)| b))?;
    if !options.quiet {
        println!(
            "{} over ferry: {} B requests; {}",
            W::NAME,
            end.size,
            match cores {
                Some((a, b)) => format!("measuring process on CPU {a}, peer on CPU {b}"),
                None => "not pinned (fewer than two CPUs)".into(),
            }
        );
    }
    let size = end.size;
    let mut rows: Vec<LatencyRow> = Vec::new();
    for round in 0..options.runs.max(1) {
        for &rate in &rates {
            let key = Key {
                transport: Transport::Ferry,
                size,
                wait: wait.to_string(),
                trust: crate::job::trust_name(trust).into(),
                rate,
                workload: Some(W::NAME.into()),
            };
            let (histogram, counters, open) = match rate {
                Some(rate) => {
                    let run = open_loop::open_loop(
                        &mut end,
                        size,
                        None,
                        1 << 20,
                        rate as f64,
                        warmup,
                        amount,
                    )?;
                    let open = OpenSummary::of(&run);
                    (run.histogram, run.counters, Some(open))
                }
                None => {
                    let run = driver::latency(&mut end, size, None, warmup, amount)?;
                    (run.histogram, run.counters, None)
                }
            };
            let row = match rows.iter().position(|r| r.key == key) {
                Some(i) => &mut rows[i],
                None => {
                    rows.push(LatencyRow::new(key));
                    rows.last_mut().expect("just pushed")
                }
            };
            row.runs.push(Summary::of(&histogram));
            row.rounds.push(round);
            row.merged.add(&histogram).map_err(|e| format!("{e:?}"))?;
            // One connection serves every run: its counters are running
            // totals already.
            row.counters = counters;
            row.open.extend(open);
        }
    }
    if options.rate.is_some() {
        print!("{}", report::open_loop_table(&rows));
    } else {
        print!("{}", report::latency_table(&rows));
    }
    if let Some(path) = &options.json {
        let document = serde_json::json!({
            "results": report::latency_json(&rows),
            "meta": {
                "workload": W::NAME,
                "command": std::env::args().collect::<Vec<_>>().join(" "),
                "cores": cores.map(|(a, b)| vec![a, b]),
                "runs": options.runs.max(1),
            }
        });
        std::fs::write(path, serde_json::to_string_pretty(&document)? + "\n")
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if let Some(path) = &options.plot {
        if options.rate.is_some() {
            plot::latency_vs_rate(&rows, path, &format!("{}: latency over rate", W::NAME))?;
        } else {
            plot::cdf(&rows, path, &format!("{}: round-trip time CDF", W::NAME))?;
        }
    }
    if let Some(path) = &options.cdf {
        plot::cdf(&rows, path, &format!("{}: latency CDF", W::NAME))?;
    }
    Ok(())
}
