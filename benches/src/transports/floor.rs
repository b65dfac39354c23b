//! The physical floor (`floor-spin`, `floor-futex`): what moving a message
//! between two processes costs with nothing but shared memory.
//!
//! Each direction is a *lane*: a 32-bit count of messages written (on the
//! producer's cache line), a count of messages read (on the consumer's), two
//! "sleeping" flags (each on its own line, for `floor-futex`), and a payload
//! area of fixed-size slots (the message size rounded up to 16 bytes, the
//! alignment ferry gives its payloads, or to a cache line from 2 KiB on, so
//! that no slot sits at a page offset where `memcpy` is slow: see
//! [`crate::payload`]). The producer copies the message into the next slot
//! (`memcpy`) and publishes the count (a Release store); the consumer waits
//! for the count (an Acquire load), copies the message out into its private
//! buffer (`memcpy`), and publishes its own count. Each side keeps a private copy of the other's count and
//! loads the real one only when the copy says it must wait. No frame
//! headers, no validation, no wrap-around padding: a lower bound for any
//! SPSC shared-memory transport with the same copy rule.
//!
//! `floor-spin` busy-polls. `floor-futex` sleeps at once on the count it
//! waits for (a shared futex), after announcing it in its flag with the same
//! fence-and-recheck protocol ferry uses; the other side calls `futex_wake`
//! only when the flag is set.
//!
//! The memory is a ferry [`Region`] (a sealed memfd), mapped a second time
//! with memmap2 because `Region` does not expose its bytes.

use crate::catalog::Transport;
use crate::endpoint::{Counters, Endpoint, OP_TIMEOUT};
use crate::job::Job;
use crate::payload::{self, ACK_LEN, Msg, Pattern, Sink, write_ack};
use crate::{BoxError, Result};
use ferry_ring::Region;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::{Duration, Instant};

const LINE: usize = 128;
const WRITTEN: usize = 0;
const READ: usize = LINE;
const CONSUMER_SLEEPS: usize = 2 * LINE;
const PRODUCER_SLEEPS: usize = 3 * LINE;
const DATA: usize = 4 * LINE;
/// How long one futex sleep lasts at most (then it re-checks).
const MAX_SLEEP: Duration = Duration::from_millis(50);

fn lane_len(capacity: usize) -> usize {
    DATA + capacity.next_multiple_of(LINE)
}

/// Slot size of a job: both lanes use it, so replies and acknowledgements
/// fit too.
fn stride(job: &Job) -> usize {
    let len = job.size.max(ACK_LEN);
    len.next_multiple_of(if len >= 2048 { 64 } else { 16 })
}

/// The second mapping of the region, shared by the two lanes.
struct Mapping {
    map: memmap2::MmapRaw,
    _region: Region,
}

/// One lane, seen from one end.
struct Lane {
    mapping: Arc<Mapping>,
    offset: usize,
    stride: usize,
    slots: u32,
    /// This end's own count (messages written, or read).
    next: u32,
    /// The other end's count as last loaded.
    cached: u32,
    /// Slot index of `next`.
    slot: usize,
}

impl Lane {
    fn new(mapping: &Arc<Mapping>, offset: usize, job: &Job) -> Result<Lane> {
        let stride = stride(job);
        let slots = (job.ring / stride).min(u32::MAX as usize / 2) as u32;
        if slots == 0 {
            return Err(BoxError::from(format!(
                "{} B messages do not fit a {} B lane; raise --ring",
                job.size, job.ring
            )));
        }
        Ok(Lane {
            mapping: Arc::clone(mapping),
            offset,
            stride,
            slots,
            next: 0,
            cached: 0,
            slot: 0,
        })
    }

    #[inline]
    fn word(&self, at: usize) -> &AtomicU32 {
        // SAFETY: `offset + at` is one of the lane's four 128-byte-aligned
        // header words, inside the mapping (`create` sized the region for
        // two whole lanes), which `self.mapping` keeps alive. Both processes
        // access these words only atomically.
        unsafe { AtomicU32::from_ptr(self.mapping.map.as_mut_ptr().add(self.offset + at).cast()) }
    }

    /// Start of the current slot.
    #[inline]
    fn slot_ptr(&self) -> *mut u8 {
        // SAFETY: slot < slots and slots * stride <= capacity, so the slot
        // lies in the lane's data area inside the mapping.
        unsafe {
            self.mapping
                .map
                .as_mut_ptr()
                .add(self.offset + DATA + self.slot * self.stride)
        }
    }

    #[inline]
    fn advance(&mut self) {
        self.next = self.next.wrapping_add(1);
        self.slot += 1;
        if self.slot == self.slots as usize {
            self.slot = 0;
        }
    }
}

/// Waits until `ready(word)` holds: spinning, or sleeping on the futex
/// after announcing it in `flag`. Returns the word's value.
fn wait_for(
    word: &AtomicU32,
    flag: &AtomicU32,
    futex: bool,
    parks: &mut u64,
    ready: impl Fn(u32) -> bool,
) -> Result<u32> {
    let mut spins: u32 = 0;
    let mut deadline = None;
    loop {
        let value = word.load(Ordering::Acquire);
        if ready(value) {
            return Ok(value);
        }
        if futex {
            flag.store(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            let value = word.load(Ordering::Acquire);
            if ready(value) {
                flag.store(0, Ordering::Relaxed);
                return Ok(value);
            }
            *parks += 1;
            let timeout = rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: MAX_SLEEP.as_nanos() as i64,
            };
            // Woken, changed, interrupted or timed out: look again.
            let _ = rustix::thread::futex::wait(
                word,
                rustix::thread::futex::Flags::empty(),
                value,
                Some(&timeout),
            );
            flag.store(0, Ordering::Relaxed);
        } else {
            std::hint::spin_loop();
        }
        spins = spins.wrapping_add(1);
        if futex || spins % (1 << 16) == 0 {
            let now = Instant::now();
            let deadline = *deadline.get_or_insert(now + OP_TIMEOUT);
            if now >= deadline {
                return Err("the peer made no progress for 30 s".into());
            }
        }
    }
}

/// Either end of a floor: a producer on one lane, a consumer on the other.
pub struct FloorEnd {
    tx: Lane,
    rx: Lane,
    pattern: Pattern,
    sink: Sink,
    rx_len: usize,
    /// Messages of drawn sizes: each announces its length.
    sized: bool,
    futex: bool,
    counters: Counters,
}

impl FloorEnd {
    /// Creates the region (two lanes); returns the memfd for the peer.
    pub fn create(job: &mut Job, rx_len: usize) -> Result<(FloorEnd, Vec<OwnedFd>)> {
        let region = Region::create(2 * lane_len(job.ring))?;
        let fd = region
            .fd()
            .ok_or("a created region has a memfd")?
            .try_clone_to_owned()?;
        let end = FloorEnd::map(job, region, 0, lane_len(job.ring), rx_len)?;
        Ok((end, vec![fd]))
    }

    /// Opens the region the parent created (its seals and size checked by
    /// [`Region::open`]).
    pub fn open(job: &Job, mut fds: Vec<OwnedFd>, rx_len: usize) -> Result<FloorEnd> {
        let fd = fds.pop().ok_or("no memfd with the job")?;
        let region = Region::open(fd)?;
        if region.len() != 2 * lane_len(job.ring) {
            return Err("the floor region has the wrong size".into());
        }
        FloorEnd::map(job, region, lane_len(job.ring), 0, rx_len)
    }

    fn map(job: &Job, region: Region, tx: usize, rx: usize, rx_len: usize) -> Result<FloorEnd> {
        let fd = region.fd().ok_or("a shared region has a memfd")?;
        let map = memmap2::MmapOptions::new().len(region.len()).map_raw(&fd)?;
        let mapping = Arc::new(Mapping {
            map,
            _region: region,
        });
        Ok(FloorEnd {
            tx: Lane::new(&mapping, tx, job)?,
            rx: Lane::new(&mapping, rx, job)?,
            pattern: Pattern::new(job.size),
            sink: Sink::new(rx_len),
            rx_len,
            sized: job.sizes.is_some(),
            futex: job.transport == Transport::FloorFutex,
            counters: Counters::default(),
        })
    }
}

/// Waits for a free slot in `lane`, lets `write` fill its first `len`
/// bytes, and publishes it.
#[inline]
fn produce(
    lane: &mut Lane,
    futex: bool,
    counters: &mut Counters,
    len: usize,
    write: impl FnOnce(&mut [u8]),
) -> Result<()> {
    if lane.next.wrapping_sub(lane.cached) >= lane.slots {
        let (next, slots) = (lane.next, lane.slots);
        lane.cached = wait_for(
            lane.word(READ),
            lane.word(PRODUCER_SLEEPS),
            futex,
            &mut counters.parks,
            |read| next.wrapping_sub(read) < slots,
        )?;
    }
    // SAFETY: the slot lies in the mapping (`slot_ptr`) and holds at least
    // `len` bytes (len <= stride). The consumer has read it (its count,
    // loaded with Acquire, is past it) and does not touch it again until we
    // publish it below, so nothing else accesses these bytes while the slice
    // lives.
    let slot = unsafe { std::slice::from_raw_parts_mut(lane.slot_ptr(), len) };
    write(slot);
    lane.advance();
    lane.word(WRITTEN).store(lane.next, Ordering::Release);
    if futex {
        fence(Ordering::SeqCst);
        if lane.word(CONSUMER_SLEEPS).load(Ordering::Relaxed) != 0 {
            counters.wakes += 1;
            let _ = rustix::thread::futex::wake(
                lane.word(WRITTEN),
                rustix::thread::futex::Flags::empty(),
                1,
            );
        }
    }
    counters.sent += 1;
    Ok(())
}

impl Endpoint for FloorEnd {
    #[inline]
    fn send(&mut self, tag: u64) -> Result<()> {
        let pattern = &self.pattern;
        produce(
            &mut self.tx,
            self.futex,
            &mut self.counters,
            pattern.len(),
            |slot| pattern.write(slot, tag),
        )
    }

    fn send_sized(&mut self, tag: u64, len: usize) -> Result<()> {
        let pattern = &self.pattern;
        produce(&mut self.tx, self.futex, &mut self.counters, len, |slot| {
            pattern.write_sized(slot, tag)
        })
    }

    fn send_ack(&mut self, count: u64, sum: u64) -> Result<()> {
        produce(
            &mut self.tx,
            self.futex,
            &mut self.counters,
            ACK_LEN,
            |slot| write_ack(slot, count, sum),
        )
    }

    #[inline]
    fn recv(&mut self) -> Result<Msg> {
        let lane = &mut self.rx;
        if lane.cached == lane.next {
            let next = lane.next;
            lane.cached = wait_for(
                lane.word(WRITTEN),
                lane.word(CONSUMER_SLEEPS),
                self.futex,
                &mut self.counters.parks,
                |written| written != next,
            )?;
        }
        self.take()
    }

    fn can_poll(&self) -> bool {
        true
    }

    fn try_recv(&mut self) -> Result<Option<Msg>> {
        let lane = &mut self.rx;
        if lane.cached == lane.next {
            lane.cached = lane.word(WRITTEN).load(Ordering::Acquire);
            if lane.cached == lane.next {
                return Ok(None);
            }
        }
        self.take().map(Some)
    }

    fn counters(&self) -> Counters {
        self.counters
    }
}

impl FloorEnd {
    /// Copies out the message at the consumer's slot, which the producer
    /// has published (`rx.cached` is past it), and hands the slot back.
    #[inline]
    fn take(&mut self) -> Result<Msg> {
        let lane = &mut self.rx;
        // SAFETY: the slot lies in the mapping and holds `rx_len <= stride`
        // bytes. The producer published it (its count, loaded with Acquire,
        // is past it) and does not write it again until our count passes it,
        // which happens only after this slice is dropped.
        let slot = unsafe { std::slice::from_raw_parts(lane.slot_ptr(), self.rx_len) };
        let len = if self.sized {
            // The producer wrote the length; it is bounded here before use.
            payload::announced_len(slot, self.rx_len)?
        } else {
            self.rx_len
        };
        let msg = self.sink.receive(&slot[..len])?;
        lane.advance();
        lane.word(READ).store(lane.next, Ordering::Release);
        if self.futex {
            fence(Ordering::SeqCst);
            if lane.word(PRODUCER_SLEEPS).load(Ordering::Relaxed) != 0 {
                self.counters.wakes += 1;
                let _ = rustix::thread::futex::wake(
                    lane.word(READ),
                    rustix::thread::futex::Flags::empty(),
                    1,
                );
            }
        }
        self.counters.received += 1;
        Ok(msg)
    }
}
