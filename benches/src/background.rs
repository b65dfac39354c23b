//! Latency under load (`--background-stream SIZE`): a one-way stream of
//! `SIZE`-byte messages keeps running on a second connection of the same
//! transport while the round trips are measured.
//!
//! The stream runs between a second pair: a thread of the measuring process
//! (it inherits the measuring process's CPU) and a second peer process
//! (pinned to the peer's CPU). So each of the two CPUs carries one side of
//! the round trips and one side of the stream, as two services sharing two
//! cores would: a spinning transport's round trips then compete for their
//! CPU with the stream's spinning sides, time-sliced by the scheduler. The
//! stream is the transport's own throughput mode (`ferry-sync`, which
//! cannot stream, streams over `ferry`), acknowledged at the end and
//! checked like a throughput run; its achieved rate is reported beside the
//! latencies.

use crate::catalog::Transport;
use crate::endpoint::{Endpoint, OP_TIMEOUT};
use crate::job::Job;
use crate::mode::Mode;
use crate::payload::{Pattern, QUIT, SYNC};
use crate::session::Peer;
use crate::{Result, with_end};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Messages sent between two looks at the stop flag.
const CHUNK: u64 = 64;

/// What the background stream did.
#[derive(Debug, Clone, Copy)]
pub struct BackgroundRun {
    /// Message size, bytes.
    pub size: usize,
    /// Messages the peer acknowledged.
    pub messages: u64,
    /// From the stream's first message to the acknowledgement.
    pub elapsed: Duration,
}

impl BackgroundRun {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The transport a stream next to round trips over `transport` uses.
pub fn stream_transport(transport: Transport) -> Transport {
    match transport {
        Transport::FerrySync => Transport::Ferry,
        other => other,
    }
}

/// A running background stream.
pub struct Background {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<BackgroundRun>>,
}

impl Background {
    /// Starts a stream of `size`-byte messages over a second connection of
    /// `latency_job`'s transport (rings of `ring` bytes), with a second peer
    /// process; returns once the stream is running.
    pub fn start(latency_job: &Job, size: usize, ring: usize) -> Result<Background> {
        let mut job = latency_job.clone();
        job.mode = Mode::Throughput;
        job.transport = stream_transport(job.transport);
        job.size = size;
        job.ring = ring;
        job.meta = Vec::new();
        job.sizes = None;
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<std::result::Result<(), String>>();
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("background-stream".into())
            .spawn(move || -> Result<BackgroundRun> {
                let mut peer = match Peer::spawn() {
                    Ok(peer) => peer,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return Err(e);
                    }
                };
                let mut end = match peer.start(&mut job) {
                    Ok(end) => end,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return Err(e);
                    }
                };
                let run = with_end!(&mut end, end => stream_until(end, size, &flag, &ready_tx));
                drop(end);
                let run = run?;
                peer.finish()?;
                Ok(run)
            })?;
        match ready_rx.recv_timeout(OP_TIMEOUT) {
            Ok(Ok(())) => Ok(Background { stop, thread }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(format!("starting the background stream: {e}").into())
            }
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                Err("the background stream did not start".into())
            }
        }
    }

    /// Stops the stream and returns what it did.
    pub fn stop(self) -> Result<BackgroundRun> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.join() {
            Ok(run) => run.map_err(|e| format!("background stream: {e}").into()),
            Err(_) => Err("the background stream panicked".into()),
        }
    }
}

/// Streams until `stop`, then has the peer acknowledge (count and check
/// total, verified) and ends the job.
fn stream_until<E: Endpoint>(
    end: &mut E,
    size: usize,
    stop: &AtomicBool,
    ready: &mpsc::Sender<std::result::Result<(), String>>,
) -> Result<BackgroundRun> {
    let pattern = Pattern::new(size);
    let (mut seq, mut count, mut expected) = (1u64, 0u64, 0u64);
    let _ = ready.send(Ok(()));
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..CHUNK {
            end.send(seq)?;
            expected = expected.wrapping_add(pattern.expected(seq));
            seq += 1;
            count += 1;
        }
    }
    end.send(SYNC)?;
    end.flush()?;
    let ack = end.recv()?;
    let elapsed = start.elapsed();
    if ack.tag != count || ack.word1 != expected {
        return Err(format!(
            "the stream's peer acknowledged {} messages with check total {:#x}; sent {count} with {expected:#x}",
            ack.tag, ack.word1
        )
        .into());
    }
    end.send(QUIT)?;
    end.flush()?;
    end.recv()?;
    Ok(BackgroundRun {
        size,
        messages: count,
        elapsed,
    })
}
