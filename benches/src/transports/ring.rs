//! ferry-ring alone (`ferry-ring`, `ferry-ring-batch`): two rings in one
//! sealed memfd, no envelope, no control socket. What the transport adds on
//! top is the difference between this and `ferry-raw`.

use crate::catalog::Transport;
use crate::endpoint::{Counters, Endpoint, OP_TIMEOUT};
use crate::job::Job;
use crate::payload::{ACK_LEN, Msg, Pattern, Sink, write_ack};
use crate::{BoxError, Result};
use ferry_ring::{Consumer, Producer, RING_ALIGN, Region, ring_size};
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// Either end: a producer on one ring, a consumer on the other.
pub struct RingEnd {
    tx: Producer,
    rx: Consumer,
    pattern: Pattern,
    sink: Sink,
    /// Frames per publish (1: every frame is published at once).
    batch: usize,
    /// Bytes per publish at most: a batch of large frames must not hold
    /// back a quarter of the ring, or the two sides stop overlapping.
    batch_bytes: usize,
    unpublished: usize,
    unpublished_bytes: usize,
    unreleased: usize,
    unreleased_bytes: usize,
}

fn offsets(capacity: usize) -> (usize, usize) {
    let second = ring_size(capacity).next_multiple_of(RING_ALIGN);
    (second, second + ring_size(capacity))
}

impl RingEnd {
    /// Creates the region and both rings; returns the memfd for the peer.
    pub fn create(job: &mut Job) -> Result<(RingEnd, Vec<OwnedFd>)> {
        let (second, len) = offsets(job.ring);
        let region = Arc::new(Region::create(len)?);
        ferry_ring::init(&region, 0, job.ring)?;
        ferry_ring::init(&region, second, job.ring)?;
        let fd = region
            .fd()
            .ok_or("a created region has a memfd")?
            .try_clone_to_owned()?;
        let end = RingEnd::attach(job, region, 0, second)?;
        Ok((end, vec![fd]))
    }

    /// Opens the region the parent created.
    pub fn open(job: &Job, mut fds: Vec<OwnedFd>) -> Result<RingEnd> {
        let fd = fds.pop().ok_or("no memfd with the job")?;
        let region = Arc::new(Region::open(fd)?);
        let (second, _) = offsets(job.ring);
        RingEnd::attach(job, region, second, 0)
    }

    fn attach(job: &Job, region: Arc<Region>, tx: usize, rx: usize) -> Result<RingEnd> {
        let strategy = job.wait;
        let tx = Producer::attach(Arc::clone(&region), tx)?.with_wait_strategy(strategy);
        let rx = Consumer::attach(region, rx)?.with_wait_strategy(strategy);
        if job.size > tx.max_payload() {
            return Err(BoxError::from(format!(
                "{} B frames do not fit a {} B ring; raise --ring",
                job.size, job.ring
            )));
        }
        Ok(RingEnd {
            tx,
            rx,
            pattern: Pattern::new(job.size),
            sink: Sink::new(job.size),
            batch: if job.transport == Transport::FerryRingBatch {
                job.batch.max(1)
            } else {
                1
            },
            batch_bytes: job.ring / 4,
            unpublished: 0,
            unpublished_bytes: 0,
            unreleased: 0,
            unreleased_bytes: 0,
        })
    }
}

impl Endpoint for RingEnd {
    #[inline]
    fn send(&mut self, tag: u64) -> Result<()> {
        let mut grant = self.tx.reserve(self.pattern.len(), Some(OP_TIMEOUT))?;
        self.pattern.write(&mut grant, tag);
        if self.batch == 1 {
            grant.commit();
        } else {
            grant.commit_deferred();
            self.unpublished += 1;
            self.unpublished_bytes += self.pattern.len();
            if self.unpublished >= self.batch || self.unpublished_bytes >= self.batch_bytes {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn send_sized(&mut self, tag: u64, len: usize) -> Result<()> {
        let mut grant = self.tx.reserve(len, Some(OP_TIMEOUT))?;
        self.pattern.write_sized(&mut grant, tag);
        grant.commit();
        Ok(())
    }

    fn send_ack(&mut self, count: u64, sum: u64) -> Result<()> {
        let mut grant = self.tx.reserve(ACK_LEN, Some(OP_TIMEOUT))?;
        write_ack(&mut grant, count, sum);
        grant.commit();
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.tx.flush();
        self.unpublished = 0;
        self.unpublished_bytes = 0;
        Ok(())
    }

    #[inline]
    fn recv(&mut self) -> Result<Msg> {
        let frame = self.rx.peek(Some(OP_TIMEOUT))?;
        let msg = self.sink.receive(frame.payload())?;
        if self.batch == 1 {
            frame.release();
        } else {
            frame.release_deferred();
            self.released_deferred(msg.len);
        }
        Ok(msg)
    }

    fn can_poll(&self) -> bool {
        true
    }

    fn try_recv(&mut self) -> Result<Option<Msg>> {
        let frame = match self.rx.try_peek() {
            Ok(frame) => frame,
            Err(ferry_ring::RecvError::Empty) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let msg = self.sink.receive(frame.payload())?;
        if self.batch == 1 {
            frame.release();
        } else {
            frame.release_deferred();
            self.released_deferred(msg.len);
        }
        Ok(Some(msg))
    }

    fn counters(&self) -> Counters {
        let (tx, rx) = (self.tx.stats(), self.rx.stats());
        Counters {
            sent: tx.frames,
            received: rx.frames,
            wakes: tx.wakes + rx.wakes,
            parks: tx.parks + rx.parks,
        }
    }
}

impl RingEnd {
    /// Counts a frame released with `release_deferred`, and hands the
    /// batch's room back once it is complete.
    #[inline]
    fn released_deferred(&mut self, len: usize) {
        self.unreleased += 1;
        self.unreleased_bytes += len;
        if self.unreleased >= self.batch || self.unreleased_bytes >= self.batch_bytes {
            self.rx.flush();
            self.unreleased = 0;
            self.unreleased_bytes = 0;
        }
    }
}
