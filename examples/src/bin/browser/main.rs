//! ferry's multi-process browser demo.
//!
//! ```sh
//! cargo run --release -p ferry-examples --bin browser             # 2 WebContent processes
//! cargo run --release -p ferry-examples --bin browser -- --crash          # a WebContent process is killed mid-load
//! cargo run --release -p ferry-examples --bin browser -- --crash network  # the Network process is killed and relaunched
//! cargo run --release -p ferry-examples --bin browser -- --evil           # a WebContent process sends garbage
//! ```
//!
//! One binary plays every part. Started without `--role` it is the **UI
//! process**: the broker ([`ferry_handoff::Broker`]). It re-executes itself
//! for each child with the handoff bootstrap socket: one **Network**
//! process, one **GPU** process, and `--web N` **WebContent** processes.
//!
//! - Each WebContent process asks the broker for a connection to `network`
//!   and one to `gpu` ([`ferry_transport::connect`]); the broker asks the
//!   target, whose [`ferry_transport::Acceptor`] creates the shared rings and
//!   hands back the requester's end, which the broker forwards. From then on
//!   the two talk directly over shared memory.
//! - WebContent loads pages of an embedded site ([`site`]): request ids of
//!   its own, `LoadResource` → `ResponseStarted`, `DataReceived`…,
//!   `LoadFinished`, each body checked against the site on arrival. The
//!   3 MiB image travels out of line, in one sealed memfd.
//! - Cookies: `GetCookies` is a synchronous call, `SetCookie` is not; the
//!   jar is the Network process's, so every tab sees every tab's cookies.
//! - Meanwhile each WebContent process streams small drawing commands to the
//!   GPU process, which acknowledges each frame.
//! - Every child reaches the UI process the same way: it asks the broker
//!   for `ui`, a service the broker process provides itself
//!   ([`ferry_handoff::Broker::serve`]).
//! - WebContent tells the UI process when a load starts and finishes; the UI
//!   process mirrors each page and prints it.
//! - The broker's policy denies WebContent → WebContent connections.
//! - Access control in the Network process: the account inbox
//!   (`/account/inbox.json`) belongs to the first tab, the one the UI
//!   process signed in; the Network process knows which WebContent process
//!   each connection belongs to (the broker names the requester, the
//!   requester cannot) and refuses it to the others (403).
//! - `--crash` (or `--crash webcontent`): the UI process kills one
//!   WebContent process with SIGKILL in the middle of its loads; the others
//!   carry on.
//! - `--crash network`: the UI process kills the Network process mid-load;
//!   the broker relaunches it (its restart policy: once), every WebContent
//!   process reconnects and reloads what was in flight.
//! - `--evil`: one more WebContent process sends the Network process frames
//!   that are no message; the Network process cuts it off and reports it to
//!   the broker, whose policy has it killed.
//!
//! The exit status is 0 only when every check passed.
//!
//! # Waiting
//!
//! Every connection of the demo parks its waiting side on the futex at once
//! (`--wait park`, the default here) rather than spinning first (ferry's
//! default `SpinThenPark`, `--wait spin-then-park`). The demo runs five
//! processes, often on a machine with two cores: a waiter that spins holds
//! the core its peer needs to answer, so the answer comes only when the
//! spin budget is spent (`ferry_ring::DEFAULT_SPIN`, a few microseconds,
//! plus the time the spinning side holds the core). Parking costs a futex
//! wake-up per message instead, and no core while idle.

mod child;
mod evil;
mod gpu;
mod network;
mod report;
mod site;
mod ui;
mod webcontent;

/// The demo's messages live in the library, so fuzz targets share them.
use ferry_examples::browser_protocol as protocol;

use clap::{Parser, ValueEnum};
use ferry_transport::WaitStrategy;
use std::process::ExitCode;

/// The part a process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Serves resources and owns the cookie jar.
    Network,
    /// Executes drawing commands.
    Gpu,
    /// Loads and "renders" pages.
    Webcontent,
    /// A compromised WebContent process (`--evil`): sends garbage to the
    /// Network process.
    Evil,
}

/// Which process `--crash` kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Crash {
    /// One WebContent process; the others carry on.
    Webcontent,
    /// The Network process; the broker relaunches it and the WebContent
    /// processes reconnect.
    Network,
}

impl Role {
    /// The service name children of this role are spawned under.
    pub fn service(self) -> &'static str {
        match self {
            Role::Network => "network",
            Role::Gpu => "gpu",
            // A compromised renderer is still a renderer to the broker.
            Role::Webcontent | Role::Evil => "webcontent",
        }
    }
}

/// ferry's multi-process browser demo: a UI process (the broker) spawns a
/// Network, a GPU and WebContent processes, introduces them to each other,
/// and checks that every page they load arrives intact.
#[derive(Debug, Clone, Parser)]
#[command(name = "browser", version)]
pub struct Args {
    /// How many WebContent processes to spawn.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub web: u32,
    /// Navigations per WebContent process (they cycle through the site's 5 pages).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pages: u32,
    /// Kill a process with SIGKILL in the middle of the loads: a WebContent
    /// process (`--crash` or `--crash webcontent`), or the Network process
    /// (`--crash network`), which the broker relaunches.
    #[arg(long, num_args = 0..=1, default_missing_value = "webcontent")]
    pub crash: Option<Crash>,
    /// Add a WebContent process that sends the Network process malformed
    /// frames; the Network process reports it and the broker kills it.
    #[arg(long)]
    pub evil: bool,
    /// Synchronous `document.cookie` reads per page.
    #[arg(long, default_value_t = 16)]
    pub cookie_reads: u32,
    /// Drawing commands in each frame streamed to the GPU process.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub frame_commands: u32,
    /// Frames per second each WebContent process streams at most (0: as fast as the GPU process acknowledges).
    #[arg(long, default_value_t = 1000)]
    pub fps: u32,

    /// How connections wait for their peer: `park`, `spin`, `spin-then-park`
    /// or `spin-then-park:DURATION` (e.g. `20us`). `park` by default: on a
    /// machine with few cores, a waiter that spins holds the core its peer
    /// needs to answer.
    #[arg(long, default_value_t = WaitStrategy::Park)]
    pub wait: WaitStrategy,
    /// Give up (and fail) after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Internal: the part this process plays (set by the UI process).
    #[arg(long, hide = true)]
    pub role: Option<Role>,
    /// Internal: which WebContent process this is (0-based).
    #[arg(long, hide = true, default_value_t = 0)]
    pub index: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(role) = args.role else {
        return ui::run(&args);
    };
    let result = match role {
        Role::Network => network::run(&args),
        Role::Gpu => gpu::run(&args),
        Role::Webcontent => webcontent::run(&args),
        Role::Evil => evil::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("[{}] error: {error}", role.service());
            ExitCode::FAILURE
        }
    }
}
