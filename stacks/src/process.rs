//! The two processes: the process that starts the other listens (ferry or
//! Unix socket, at a fresh abstract name), starts the server process with
//! a [`ServeSpec`] in its environment, and accepts its connection; the
//! server process connects, serves until the connection closes, and exits.
//! Tests, examples and ferry-bench all start their server this way; each
//! re-executes its own binary, which calls [`ServeSpec::from_env`] first.

use crate::error::StackError;
use crate::link::{self, Conn, Link, Listener};
use crate::stack::{self, Stack};
use ferry_transport::ConnectionConfig;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The environment variable that makes a process a stack's server.
pub const SERVE_ENV: &str = "FERRY_STACKS_SERVE";

/// How long setting up a connection between the two processes may take.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// What a server process serves: the stack, the link, where to connect,
/// and how its async ferry waiters spin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeSpec {
    /// The stack to serve.
    pub stack: Stack,
    /// The link to connect over.
    pub link: Link,
    /// The abstract name the other process listens at.
    pub name: String,
    /// The server's `ConnectionConfig::async_spin`.
    pub spin: Duration,
    /// The server's tokio runtime.
    pub runtime: Flavor,
}

/// The tokio runtime a process runs its stack on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// One thread runs every task and the reactor: nothing is handed
    /// between threads, and a spinning wait keeps that one thread awake.
    CurrentThread,
    /// tokio's work-stealing runtime with this many worker threads (`None`:
    /// one per CPU).
    MultiThread(Option<usize>),
}

impl Flavor {
    /// The name on command lines and in reports: `current-thread`,
    /// `multi-thread` (one worker per CPU) or `multi-thread:N`.
    pub fn name(&self) -> String {
        match self {
            Flavor::CurrentThread => "current-thread".into(),
            Flavor::MultiThread(None) => "multi-thread".into(),
            Flavor::MultiThread(Some(n)) => format!("multi-thread:{n}"),
        }
    }

    /// Builds the runtime.
    pub fn build(&self) -> Result<tokio::runtime::Runtime, StackError> {
        let mut builder = match self {
            Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            Flavor::MultiThread(workers) => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                if let Some(workers) = workers {
                    builder.worker_threads(*workers);
                }
                builder
            }
        };
        Ok(builder.enable_all().build()?)
    }
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl std::str::FromStr for Flavor {
    type Err = StackError;

    fn from_str(text: &str) -> Result<Flavor, StackError> {
        let bad = || {
            StackError::Process(format!(
                "unknown runtime {text:?} (current-thread, multi-thread or multi-thread:N)"
            ))
        };
        match text.split_once(':') {
            None if text == "current-thread" => Ok(Flavor::CurrentThread),
            None if text == "multi-thread" => Ok(Flavor::MultiThread(None)),
            Some(("multi-thread", n)) => match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Flavor::MultiThread(Some(n))),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl ServeSpec {
    /// The spec as one line (`STACK LINK NAME SPIN_NS RUNTIME`).
    pub fn encode(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.stack,
            self.link,
            self.name,
            self.spin.as_nanos(),
            self.runtime
        )
    }

    /// Parses [`encode`](Self::encode)'s line.
    pub fn decode(line: &str) -> Result<ServeSpec, StackError> {
        let bad = || StackError::Process(format!("bad serve spec {line:?}"));
        let mut words = line.split(' ');
        let mut word = || words.next().ok_or_else(bad);
        let stack = word()?.parse()?;
        let link = word()?.parse()?;
        let name = word()?.to_owned();
        let spin = Duration::from_nanos(word()?.parse().map_err(|_| bad())?);
        let runtime = word()?.parse()?;
        if words.next().is_some() {
            return Err(bad());
        }
        Ok(ServeSpec {
            stack,
            link,
            name,
            spin,
            runtime,
        })
    }

    /// The spec this process was started with, if it is a server process.
    pub fn from_env() -> Option<Result<ServeSpec, StackError>> {
        let line = std::env::var(SERVE_ENV).ok()?;
        Some(ServeSpec::decode(&line))
    }

    /// The server process's work: connects, serves until the other process
    /// closes the connection, and returns. Tracing is off in it
    /// ([`quiet_tracing`]).
    pub fn run(&self) -> Result<(), StackError> {
        quiet_tracing();
        let config = ConnectionConfig::default().async_spin(self.spin);
        let conn = link::connect(self.link, &self.name, &config, SETUP_TIMEOUT)?;
        self.runtime
            .build()?
            .block_on(stack::serve(self.stack, conn))
    }
}

/// Turns tracing off for the whole process, as an application that has
/// no use for the stacks' spans would: tarpc enables `tracing`'s `log`
/// feature, so with no subscriber installed every span tarpc and tonic
/// open per call is offered to `log` instead — about a fifth of a
/// tarpc process's CPU at 16 concurrent calls (`perf record`), the same
/// cost over either link. Both processes of a measurement call this
/// ([`ServeSpec::run`] and ferry-bench's `rpc`), so both links are
/// measured without it. A subscriber installed earlier stays.
pub fn quiet_tracing() {
    // An error means a subscriber is already set, which is then kept.
    let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
}

/// The command that re-executes this binary (for [`start`]): stdin and
/// stdout null, stderr shared, and the child dies with SIGKILL if the
/// thread that spawned it ends first.
pub fn self_command() -> Result<Command, StackError> {
    let mut command = Command::new(std::env::current_exe()?);
    command.stdin(Stdio::null()).stdout(Stdio::null());
    let die_with_parent = || -> std::io::Result<()> {
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
        Ok(())
    };
    // SAFETY: runs between fork and exec, where only async-signal-safe work
    // is allowed: one prctl(PR_SET_PDEATHSIG) system call through rustix's
    // raw-syscall backend, no allocation, no lock.
    unsafe { command.pre_exec(die_with_parent) };
    Ok(command)
}

/// A fresh abstract name for one connection of this process.
fn fresh_name(link: Link) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("ferry-stacks-{link}-{}-{n}", std::process::id())
}

/// Listens on `link`, starts `command` as the server of `stack` (adding
/// [`SERVE_ENV`]; ferry connections use `config`, the server's too, as far
/// as its `async_spin`), and accepts its connection (within
/// [`SETUP_TIMEOUT`]). Returns our end and the process.
pub fn start(
    stack: Stack,
    link: Link,
    config: &ConnectionConfig,
    command: Command,
) -> Result<(Conn, ServerProcess), StackError> {
    start_on(stack, link, config, Flavor::MultiThread(None), command)
}

/// [`start`], the server running on a `runtime` of that flavor.
pub fn start_on(
    stack: Stack,
    link: Link,
    config: &ConnectionConfig,
    runtime: Flavor,
    mut command: Command,
) -> Result<(Conn, ServerProcess), StackError> {
    let name = fresh_name(link);
    let mut listener = Listener::bind(link, &name, config)?;
    let spec = ServeSpec {
        stack,
        link,
        name,
        spin: config.async_spin,
        runtime,
    };
    command.env(SERVE_ENV, spec.encode());
    let child = command.spawn()?;
    let mut server = ServerProcess {
        child: Some(child),
        label: format!("{stack} server over {link}"),
    };
    match listener.accept(SETUP_TIMEOUT) {
        Ok(conn) => Ok((conn, server)),
        Err(e) => {
            server.kill();
            Err(e)
        }
    }
}

/// A server process. Dropping it kills (SIGKILL) and reaps it if it still
/// runs.
pub struct ServerProcess {
    child: Option<Child>,
    label: String,
}

impl ServerProcess {
    /// The process id.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits (at most `limit`) for the process to exit once its connection
    /// is closed, and requires success; kills it on timeout.
    pub fn finish(mut self, limit: Duration) -> Result<(), StackError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(StackError::Process(format!(
                        "{} exited with {status}",
                        self.label
                    )))
                };
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StackError::Process(format!(
                    "{} still running {limit:?} after its connection closed: killed",
                    self.label
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serve_spec_survives_its_line() {
        for runtime in [
            Flavor::CurrentThread,
            Flavor::MultiThread(None),
            Flavor::MultiThread(Some(3)),
        ] {
            let spec = ServeSpec {
                stack: Stack::Grpc,
                link: Link::Ferry,
                name: "ferry-stacks-ferry-12-3".into(),
                spin: Duration::from_nanos(20_500),
                runtime,
            };
            assert_eq!(ServeSpec::decode(&spec.encode()).expect("decoding"), spec);
        }
    }

    #[test]
    fn a_malformed_serve_spec_is_refused() {
        for line in [
            "",
            "grpc",
            "grpc ferry name",
            "grpc ferry name x multi-thread",
            "rpc ferry n 1 multi-thread",
            "grpc ferry n 1 0",
            "grpc ferry n 1 multi-thread:0",
            "grpc ferry n 1 current-thread extra",
        ] {
            assert!(ServeSpec::decode(line).is_err(), "{line:?} was accepted");
        }
    }
}
