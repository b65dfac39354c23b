//! The peer process: started by [`crate::session::Peer::spawn`], it takes
//! jobs from its control channel one at a time, opens the transport's end
//! from the descriptors that came with the job, serves it until the
//! measuring process says `QUIT`, and reports its counters.

use crate::endpoint::{self, Counters};
use crate::job::Job;
use crate::mode::Mode;
use crate::session::PEER_ENV;
use crate::transports::{self, PeerEnd};
use crate::{Result, cpu, with_end};
use ferry_handoff::Channel;
use std::process::ExitCode;

/// Whether this process was started as the peer.
pub fn is_peer() -> bool {
    std::env::var_os(PEER_ENV).is_some()
}

/// The peer's `main`.
pub fn main() -> ExitCode {
    let control = match ferry_handoff::bootstrap::channel_from_env() {
        Ok(control) => control,
        Err(e) => {
            eprintln!("ferry-bench peer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    // The last job's end stays open until the next job arrives: dropping it
    // at once could make the measuring process's last receive race with the
    // close (ferry-ring's consumer can report `Disconnected` for a frame
    // published just before the producer's orderly close; see the README).
    let mut previous: Option<PeerEnd> = None;
    loop {
        let received = match control.recv(&mut buf, None) {
            Ok(received) => received,
            // The measuring process closed the channel: all done.
            Err(ferry_handoff::RecvError::Disconnected) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ferry-bench peer: {e}");
                return ExitCode::FAILURE;
            }
        };
        let line = String::from_utf8_lossy(&buf[..received.len]).into_owned();
        drop(previous.take());
        match run(&control, &line, received.fds) {
            Ok((counters, end)) => {
                previous = Some(end);
                let _ = control.send(format!("done {}", counters.encode()).as_bytes(), &[]);
            }
            Err(e) => {
                let _ = control.send(format!("error {e}").as_bytes(), &[]);
                return ExitCode::FAILURE;
            }
        }
    }
}

fn run(
    control: &Channel,
    line: &str,
    fds: Vec<std::os::fd::OwnedFd>,
) -> Result<(Counters, PeerEnd)> {
    let job = Job::decode(line)?;
    if let Some(cpu) = job.cpu {
        cpu::pin(cpu)?;
    }
    let mut end = transports::open(&job, fds)?;
    control.send(b"ready", &[])?;
    let counters = match &mut end {
        PeerEnd::Typed(server) => {
            server.serve()?;
            server.counters()
        }
        PeerEnd::Generic(any) => with_end!(any, end => {
            match job.mode {
                Mode::Latency => endpoint::serve_latency(end, job.sizes.is_some())?,
                Mode::Throughput => endpoint::serve_throughput(end)?,
            }
            endpoint::Endpoint::counters(end)
        }),
    };
    Ok((counters, end))
}
