//! The measuring process's side of the two-process setup: it re-executes
//! its own binary as the peer (see [`crate::peer`]), hands it one job at a
//! time over a ferry-handoff control channel, with the transport's
//! descriptors attached, and collects the peer's counters afterwards.

use crate::endpoint::{Counters, OP_TIMEOUT};
use crate::job::Job;
use crate::transports::{self, AnyEnd};
use crate::{BoxError, Result};
use ferry_handoff::Channel;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Marks a process started as the peer.
pub const PEER_ENV: &str = "FERRY_BENCH_PEER";

/// The peer process and the control channel to it.
pub struct Peer {
    child: Child,
    control: Option<Channel>,
}

impl Peer {
    /// Starts this binary again as the peer. It dies with this process.
    pub fn spawn() -> Result<Peer> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .env(PEER_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let die_with_parent = || -> std::io::Result<()> {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            Ok(())
        };
        // SAFETY: runs between fork and exec, where only async-signal-safe
        // work is allowed: one prctl(PR_SET_PDEATHSIG) system call through
        // rustix, no allocation, no lock.
        unsafe { command.pre_exec(die_with_parent) };
        let (child, control) = ferry_handoff::bootstrap::spawn_with_channel(command)?;
        Ok(Peer {
            child,
            control: Some(control),
        })
    }

    fn control(&self) -> Result<&Channel> {
        self.control
            .as_ref()
            .ok_or_else(|| "the peer is gone".into())
    }

    /// Sets up `job`'s transport, hands the peer its end, and returns ours
    /// once the peer is ready to serve.
    pub fn start(&mut self, job: &mut Job) -> Result<AnyEnd> {
        // Unique in this process across peers (a background stream's peer
        // runs beside the main one): the peer crates name services by it.
        static JOBS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let job_number = JOBS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        job.name = format!("ferry-bench-{}-{job_number}", std::process::id());
        let (prepared, fds) = transports::prepare(job)?;
        let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
        self.control()?
            .send(job.encode().as_bytes(), &borrowed)
            .map_err(|e| format!("sending the job to the peer: {e}"))?;
        drop(borrowed);
        drop(fds);
        let end = prepared.finish()?;
        let reply = self.recv_line()?;
        if reply != "ready" {
            return Err(reply.into());
        }
        Ok(end)
    }

    /// Waits for the peer to finish the job; returns its counters.
    pub fn finish(&mut self) -> Result<Counters> {
        let reply = self.recv_line()?;
        match reply.strip_prefix("done") {
            Some(rest) => Ok(Counters::decode(rest)),
            None => Err(reply.into()),
        }
    }

    /// After the job failed on this side: what the peer reported, if it
    /// reported anything within a second (its own error explains ours).
    pub fn failure(&mut self) -> Option<String> {
        match self.recv_line_within(Duration::from_secs(1)) {
            Err(e) => Some(e.to_string()),
            Ok(line) => Some(format!("peer said {line:?}")),
        }
    }

    fn recv_line(&self) -> Result<String> {
        self.recv_line_within(OP_TIMEOUT)
    }

    fn recv_line_within(&self, timeout: Duration) -> Result<String> {
        let mut buf = vec![0u8; 4096];
        let received = self
            .control()?
            .recv(&mut buf, Some(timeout))
            .map_err(|e| BoxError::from(format!("waiting for the peer: {e}")))?;
        let line = String::from_utf8_lossy(&buf[..received.len]).into_owned();
        match line.strip_prefix("error ") {
            Some(error) => Err(format!("peer: {error}").into()),
            None => Ok(line),
        }
    }
}

impl Drop for Peer {
    /// Closes the channel (the peer exits when it sees the hang-up) and
    /// reaps the peer, killing it if it lingers.
    fn drop(&mut self) {
        self.control = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
