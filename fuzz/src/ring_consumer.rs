//! Target `ring_consumer`: a `ferry_ring::Consumer` over a ring whose header,
//! positions and data a hostile peer controls, before it attaches and
//! between every operation.
//!
//! The ring lives in a sealed memfd region (as between processes); the
//! harness maps the memfd a second time and writes the peer's bytes through
//! that mapping. An honest `ferry_ring::Producer` is attached to the same
//! ring, so one input can mix a real producer's frames, batches, wrap-around
//! and padding with a hostile peer's scribbles. The input is a [`Setup`]
//! followed by a sequence of [`Op`]s.
//!
//! Checked, whatever the input:
//! - `Consumer::attach` succeeds exactly when the header is valid;
//! - every frame handed out is 16-aligned, no longer than the maximum, and
//!   lies inside the ring's data area;
//! - once the consumer reports `Corrupt`, it reports the same corruption for
//!   good;
//! - no panic, no out-of-bounds access, no endless loop (the fuzzer's timeout).
//!
//! While the peer has only done what a real producer does (the honest
//! `Producer`'s operations; scribbles on the wake-up words and the closed
//! flags, which are hints), a model predicts every result: each frame arrives
//! once, in order, with its bytes; `Empty`, `Closed` and `Disconnected` come
//! exactly when they should; nothing is ever `Corrupt`.

use crate::input::{Cursor, Writer};
use ferry_ring::frame::{
    FRAME_HEADER_SIZE, KIND_DATA, KIND_PADDING, encode_header, frame_size, max_payload,
};
use ferry_ring::{
    Consumer, Corruption, Frame, HEADER_SIZE, LAYOUT_VERSION, MAGIC, MAX_CAPACITY, MIN_CAPACITY,
    Producer, RecvError, Region, SendError, WaitStrategy, init,
};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Bytes of the shared region; each ring is placed so its data area ends
/// exactly at the end of the region.
pub const REGION_LEN: usize = 8192;
/// Data-area sizes the input chooses from.
pub const CAPACITIES: [usize; 5] = [256, 512, 1024, 2048, 4096];
/// Operations run per input, at most.
const MAX_OPS: usize = 2048;
/// Positions a ring may start from (`ferry_ring`'s private `MAX_POSITION`).
const MAX_POSITION: u64 = 1 << 62;

// Offsets in the ring header (ring/src/layout.rs; asserted there).
const MAGIC_AT: usize = 0;
const VERSION_AT: usize = 8;
const CAPACITY_AT: usize = 16;
const TAIL_AT: usize = 128;
const DATA_SEQ_AT: usize = 136;
const PRODUCER_CLOSED_AT: usize = 140;
const HEAD_AT: usize = 256;
const SPACE_SEQ_AT: usize = 264;
const CONSUMER_CLOSED_AT: usize = 268;
const PRODUCER_PARKED_AT: usize = 384;
const CONSUMER_PARKED_AT: usize = 512;

/// Where a ring with a data area of `capacity` bytes starts in the region.
pub fn ring_offset(capacity: usize) -> usize {
    REGION_LEN - HEADER_SIZE - capacity
}

/// The region, reused by every run, and our second mapping of it.
struct Shared {
    region: Arc<Region>,
    map: memmap2::MmapRaw,
    /// Address of the region's own mapping (where the consumer reads).
    consumer_base: usize,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let region = Arc::new(Region::create(REGION_LEN).expect("memfd region"));
        let fd = region.fd().expect("shared region").try_clone_to_owned();
        let file = std::fs::File::from(fd.expect("dup"));
        let map = memmap2::MmapOptions::new()
            .len(REGION_LEN)
            .map_raw(&file)
            .expect("second mapping");
        // Find the region's own mapping from the payload address of a frame.
        let offset = ring_offset(MIN_CAPACITY);
        init(&region, offset, MIN_CAPACITY).expect("init");
        let mut producer = Producer::attach(Arc::clone(&region), offset).expect("producer");
        producer.try_send(b"where").expect("send");
        let mut consumer = Consumer::attach(Arc::clone(&region), offset).expect("consumer");
        let frame = consumer.try_peek().expect("frame");
        let payload = frame.payload().as_ptr() as usize;
        let consumer_base = payload - offset - HEADER_SIZE - FRAME_HEADER_SIZE;
        let _ = frame;
        drop(consumer);
        drop(producer);
        Shared {
            region,
            map,
            consumer_base,
        }
    })
}

/// The peer's view of one ring: our second mapping of its header and data.
struct Peer {
    ring: *mut u8,
    capacity: usize,
}

impl Peer {
    fn u64_at(&self, at: usize) -> &AtomicU64 {
        assert!(at.is_multiple_of(8) && at + 8 <= HEADER_SIZE + self.capacity);
        // SAFETY: inside the ring (which lies inside the mapping), 8-aligned;
        // the mapping lives as long as the process (a static); both sides
        // access these words atomically.
        unsafe { AtomicU64::from_ptr(self.ring.add(at).cast()) }
    }

    fn u32_at(&self, at: usize) -> &AtomicU32 {
        assert!(at.is_multiple_of(4) && at + 4 <= HEADER_SIZE + self.capacity);
        // SAFETY: as in `u64_at`.
        unsafe { AtomicU32::from_ptr(self.ring.add(at).cast()) }
    }

    fn store64(&self, at: usize, v: u64) {
        self.u64_at(at).store(v, Ordering::Release);
    }

    fn store32(&self, at: usize, v: u32) {
        self.u32_at(at).store(v, Ordering::Release);
    }

    fn load64(&self, at: usize) -> u64 {
        self.u64_at(at).load(Ordering::Acquire)
    }

    fn load32(&self, at: usize) -> u32 {
        self.u32_at(at).load(Ordering::Acquire)
    }

    /// Stores a frame header word at data-area `index` (made 8-aligned).
    fn word(&self, index: usize, word: u64) {
        let index = (index % self.capacity) & !7;
        self.store64(HEADER_SIZE + index, word);
    }

    /// Writes bytes into the data area from `index`, up to its end.
    fn write(&self, index: usize, bytes: &[u8]) {
        let index = index % self.capacity;
        let n = bytes.len().min(self.capacity - index);
        // SAFETY: `n` bytes from `index` lie inside the data area of the
        // ring, inside the mapping. Nothing reads them concurrently: the
        // consumer runs on this thread, between our writes.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ring.add(HEADER_SIZE + index), n)
        };
    }
}

/// How the positions in the header start out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// `head = 16 * head16`, `tail = head + 16 * ahead16`: aligned, and
    /// consistent when `16 * ahead16 <= capacity`.
    Aligned {
        /// Head in units of 16 bytes.
        head16: u32,
        /// Published bytes beyond the head, in units of 16.
        ahead16: u16,
    },
    /// Anything.
    Raw {
        /// The head.
        head: u64,
        /// The tail.
        tail: u64,
    },
}

/// The ring before the consumer attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// Index into [`CAPACITIES`] (modulo its length).
    pub capacity: u8,
    /// 0: the default wait strategy, 1: `Spin`, 2: `Park`, 3: one spin.
    pub strategy: u8,
    /// Overrides the magic number.
    pub magic: Option<u64>,
    /// Overrides the layout version.
    pub version: Option<u32>,
    /// Overrides the capacity in the header.
    pub header_capacity: Option<u64>,
    /// The positions.
    pub positions: Positions,
    /// The closed flags (producer's, consumer's).
    pub closed: Option<(u32, u32)>,
    /// The wake words: data_seq, space_seq, producer parked, consumer parked.
    pub wake: Option<[u32; 4]>,
    /// Bytes written at the start of the data area.
    pub data: Option<Vec<u8>>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            capacity: 2,
            strategy: 0,
            magic: None,
            version: None,
            header_capacity: None,
            positions: Positions::Aligned {
                head16: 0,
                ahead16: 0,
            },
            closed: None,
            wake: None,
            data: None,
        }
    }
}

impl Setup {
    fn decode(c: &mut Cursor<'_>) -> Setup {
        let first = c.u8();
        let flags = c.u8();
        Setup {
            capacity: first & 7,
            strategy: (first >> 3) & 3,
            magic: (flags & 1 != 0).then(|| c.u64()),
            version: (flags & 2 != 0).then(|| c.u32()),
            header_capacity: (flags & 4 != 0).then(|| c.u64()),
            positions: if flags & 8 != 0 {
                Positions::Raw {
                    head: c.u64(),
                    tail: c.u64(),
                }
            } else {
                Positions::Aligned {
                    head16: c.u32(),
                    ahead16: c.u16(),
                }
            },
            closed: (flags & 16 != 0).then(|| (c.u32(), c.u32())),
            wake: (flags & 32 != 0).then(|| [c.u32(), c.u32(), c.u32(), c.u32()]),
            data: (flags & 64 != 0).then(|| {
                let n = usize::from(c.u16());
                c.bytes(n).to_vec()
            }),
        }
    }

    /// Appends the encoding [`run`] reads.
    pub fn encode(&self, w: &mut Writer) {
        w.u8((self.capacity & 7) | ((self.strategy & 3) << 3));
        let flags = u8::from(self.magic.is_some())
            | u8::from(self.version.is_some()) << 1
            | u8::from(self.header_capacity.is_some()) << 2
            | u8::from(matches!(self.positions, Positions::Raw { .. })) << 3
            | u8::from(self.closed.is_some()) << 4
            | u8::from(self.wake.is_some()) << 5
            | u8::from(self.data.is_some()) << 6;
        w.u8(flags);
        if let Some(v) = self.magic {
            w.u64(v);
        }
        if let Some(v) = self.version {
            w.u32(v);
        }
        if let Some(v) = self.header_capacity {
            w.u64(v);
        }
        match self.positions {
            Positions::Raw { head, tail } => w.u64(head).u64(tail),
            Positions::Aligned { head16, ahead16 } => w.u32(head16).u16(ahead16),
        };
        if let Some((p, c)) = self.closed {
            w.u32(p).u32(c);
        }
        if let Some(words) = self.wake {
            for v in words {
                w.u32(v);
            }
        }
        if let Some(data) = &self.data {
            w.u16(data.len() as u16).bytes(data);
        }
    }
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `try_peek`; then release (`action % 3 == 0`), release deferred (1) or
    /// drop the frame unreleased (2).
    Peek {
        /// What to do with the frame.
        action: u8,
    },
    /// `peek(Some(Duration::ZERO))` and release: the wait loop's path.
    PeekNow,
    /// `recv_into` with a zero timeout.
    RecvInto,
    /// `Consumer::flush`.
    Flush,
    /// `Consumer::pin`.
    Pin,
    /// `Consumer::unpin`.
    Unpin,
    /// `arm_notification`, then `disarm_notification` if `disarm`.
    Arm {
        /// Whether to disarm after.
        disarm: bool,
    },
    /// The consumer's disconnect handle fires.
    Disconnect,
    /// The honest producer reserves `len` bytes and then commits (`how % 4
    /// == 0`), commits deferred (1), abandons (2) or shrinks to half and
    /// commits (3).
    Send {
        /// Payload length.
        len: u16,
        /// What to do with the grant.
        how: u8,
    },
    /// `Producer::flush`.
    ProducerFlush,
    /// The honest producer is dropped (publishes, sets its closed flag).
    DropProducer,
    /// Peer: stores the tail.
    SetTail(u64),
    /// Peer: adds to the tail.
    AdvanceTail(u16),
    /// Peer: writes a frame header word at a data-area index. `kind` 0 is
    /// `KIND_DATA`, 1 `KIND_PADDING`, anything else itself.
    Word {
        /// Data-area index (reduced modulo the capacity, made 8-aligned).
        index: u16,
        /// Length field.
        len: u32,
        /// Kind field.
        kind: u32,
    },
    /// Peer: writes bytes into the data area.
    Bytes {
        /// Data-area index.
        index: u16,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Peer: publishes a well-formed frame of `len` bytes after the tail it
    /// finds (with a padding frame first when it does not fit the end).
    Frame {
        /// Payload length (modulo the maximum + 1).
        len: u16,
    },
    /// Peer: stores the consumer's head.
    SetHead(u64),
    /// Peer: stores the producer's (`which` even) or consumer's closed flag.
    Closed {
        /// Which flag.
        which: u8,
        /// Its value.
        value: u32,
    },
    /// Peer: stores a wake word: data_seq, space_seq, producer parked,
    /// consumer parked (`which % 4`).
    Wake {
        /// Which word.
        which: u8,
        /// Its value.
        value: u32,
    },
}

const OPS: u8 = 19;

impl Op {
    fn decode(c: &mut Cursor<'_>) -> Op {
        match c.u8() % OPS {
            0 => Op::Peek { action: c.u8() },
            1 => Op::PeekNow,
            2 => Op::RecvInto,
            3 => Op::Flush,
            4 => Op::Pin,
            5 => Op::Unpin,
            6 => Op::Arm {
                disarm: c.u8() & 1 == 1,
            },
            7 => Op::Disconnect,
            8 => Op::Send {
                len: c.u16(),
                how: c.u8(),
            },
            9 => Op::ProducerFlush,
            10 => Op::DropProducer,
            11 => Op::SetTail(c.u64()),
            12 => Op::AdvanceTail(c.u16()),
            13 => Op::Word {
                index: c.u16(),
                len: c.u32(),
                kind: c.u32(),
            },
            14 => {
                let index = c.u16();
                let n = usize::from(c.u8());
                Op::Bytes {
                    index,
                    bytes: c.bytes(n).to_vec(),
                }
            }
            15 => Op::Frame { len: c.u16() },
            16 => Op::SetHead(c.u64()),
            17 => Op::Closed {
                which: c.u8(),
                value: c.u32(),
            },
            _ => Op::Wake {
                which: c.u8(),
                value: c.u32(),
            },
        }
    }

    /// Appends the encoding [`run`] reads.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Op::Peek { action } => w.u8(0).u8(*action),
            Op::PeekNow => w.u8(1),
            Op::RecvInto => w.u8(2),
            Op::Flush => w.u8(3),
            Op::Pin => w.u8(4),
            Op::Unpin => w.u8(5),
            Op::Arm { disarm } => w.u8(6).u8(u8::from(*disarm)),
            Op::Disconnect => w.u8(7),
            Op::Send { len, how } => w.u8(8).u16(*len).u8(*how),
            Op::ProducerFlush => w.u8(9),
            Op::DropProducer => w.u8(10),
            Op::SetTail(v) => w.u8(11).u64(*v),
            Op::AdvanceTail(v) => w.u8(12).u16(*v),
            Op::Word { index, len, kind } => w.u8(13).u16(*index).u32(*len).u32(*kind),
            Op::Bytes { index, bytes } => w.u8(14).u16(*index).u8(bytes.len() as u8).bytes(bytes),
            Op::Frame { len } => w.u8(15).u16(*len),
            Op::SetHead(v) => w.u8(16).u64(*v),
            Op::Closed { which, value } => w.u8(17).u8(*which).u32(*value),
            Op::Wake { which, value } => w.u8(18).u8(*which).u32(*value),
        };
    }
}

/// An input for [`run`].
pub fn encode(setup: &Setup, ops: &[Op]) -> Vec<u8> {
    let mut w = Writer::new();
    setup.encode(&mut w);
    for op in ops {
        op.encode(&mut w);
    }
    w.finish()
}

/// What the consumer must report, as far as it can be predicted.
struct Model {
    /// The peer has only done what a real producer may do.
    honest: bool,
    /// Frames the honest producer published and the consumer has not taken.
    published: VecDeque<Vec<u8>>,
    /// Frames committed with `commit_deferred`, not yet published.
    pending: Vec<Vec<u8>>,
    disconnected: bool,
    corrupt: Option<Corruption>,
    sent: u64,
}

impl Model {
    fn publish_pending(&mut self) {
        self.published.extend(self.pending.drain(..));
    }

    fn on_frame(&self, payload: &[u8]) {
        assert!(
            self.corrupt.is_none(),
            "a frame after {:?} was reported",
            self.corrupt
        );
        if self.honest {
            let expected = self
                .published
                .front()
                .expect("a frame the producer never published");
            assert!(
                payload == &expected[..],
                "frame of {} bytes arrived as {} bytes, or damaged",
                expected.len(),
                payload.len()
            );
        }
    }

    fn taken(&mut self) {
        if self.honest {
            self.published.pop_front();
        }
    }

    fn on_error(&mut self, error: RecvError, idle: RecvError, peer: &Peer) {
        if let Some(corruption) = self.corrupt {
            assert_eq!(
                error,
                RecvError::Corrupt(corruption),
                "corruption not sticky"
            );
            return;
        }
        if let RecvError::Corrupt(corruption) = error {
            assert!(
                !self.honest,
                "an honest ring reported corrupt: {corruption}"
            );
            self.corrupt = Some(corruption);
            return;
        }
        if self.honest {
            assert!(
                self.published.is_empty(),
                "{error:?} with {} frames published",
                self.published.len()
            );
            assert_eq!(error, self.idle_error(idle, peer));
        }
    }

    /// What a consumer with nothing to read reports.
    fn idle_error(&self, idle: RecvError, peer: &Peer) -> RecvError {
        if self.disconnected {
            RecvError::Disconnected
        } else if peer.load32(PRODUCER_CLOSED_AT) != 0 {
            RecvError::Closed
        } else {
            idle
        }
    }
}

/// Payload of the honest producer's `n`th frame.
fn pattern(n: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (n.wrapping_mul(131) as usize).wrapping_add(i * 7) as u8)
        .collect()
}

/// Copies a frame out, checking where it lies.
fn take(frame: &Frame<'_>, consumer_data: usize, capacity: usize) -> Vec<u8> {
    let len = frame.len();
    assert!(len <= max_payload(capacity), "frame of {len} bytes");
    let at = frame.payload().as_ptr() as usize;
    assert!(
        at.is_multiple_of(16)
            && at >= consumer_data + FRAME_HEADER_SIZE
            && at + len <= consumer_data + capacity,
        "payload at data+{} of {len} bytes, capacity {capacity}",
        at as isize - consumer_data as isize
    );
    let mut copy = Vec::with_capacity(len);
    // SAFETY: `copy` has room for `len` bytes and does not overlap the ring.
    unsafe {
        frame.copy_to(copy.as_mut_ptr());
        copy.set_len(len);
    }
    copy
}

/// What one run saw (for the seed generator and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Whether the consumer attached.
    pub attached: bool,
    /// Frames the consumer handed out.
    pub frames: usize,
    /// Whether the model stayed exact to the end.
    pub honest: bool,
    /// The corruption the consumer reported, if any.
    pub corrupt: Option<Corruption>,
}

/// Runs one input.
pub fn run(data: &[u8]) {
    run_report(data);
}

/// Runs one input and says what the consumer did.
pub fn run_report(data: &[u8]) -> Report {
    let mut report = Report::default();
    let shared = shared();
    let mut c = Cursor::new(data);
    let setup = Setup::decode(&mut c);
    let capacity = CAPACITIES[usize::from(setup.capacity) % CAPACITIES.len()];
    let offset = ring_offset(capacity);
    // SAFETY: `offset` is inside the mapping of REGION_LEN bytes.
    let ring = unsafe { shared.map.as_mut_ptr().add(offset) };
    let mut peer = Peer { ring, capacity };

    // The ring as the peer lays it out.
    // SAFETY: the whole region is ours to write; no endpoint is attached.
    unsafe { std::ptr::write_bytes(shared.map.as_mut_ptr(), 0, REGION_LEN) };
    init(&shared.region, offset, capacity).expect("init");
    let magic = setup.magic.unwrap_or(MAGIC);
    let version = setup.version.unwrap_or(LAYOUT_VERSION);
    let header_capacity = setup.header_capacity.unwrap_or(capacity as u64);
    let (head, tail) = match setup.positions {
        Positions::Aligned { head16, ahead16 } => {
            let head = u64::from(head16) * 16;
            (head, head + u64::from(ahead16) * 16)
        }
        Positions::Raw { head, tail } => (head, tail),
    };
    peer.store64(MAGIC_AT, magic);
    peer.store32(VERSION_AT, version);
    peer.store64(CAPACITY_AT, header_capacity);
    peer.store64(HEAD_AT, head);
    peer.store64(TAIL_AT, tail);
    if let Some((p, c)) = setup.closed {
        peer.store32(PRODUCER_CLOSED_AT, p);
        peer.store32(CONSUMER_CLOSED_AT, c);
    }
    if let Some([d, s, pp, cp]) = setup.wake {
        peer.store32(DATA_SEQ_AT, d);
        peer.store32(SPACE_SEQ_AT, s);
        peer.store32(PRODUCER_PARKED_AT, pp);
        peer.store32(CONSUMER_PARKED_AT, cp);
    }
    if let Some(bytes) = &setup.data {
        peer.write(0, bytes);
    }

    let valid = magic == MAGIC
        && version == LAYOUT_VERSION
        && header_capacity.is_power_of_two()
        && (MIN_CAPACITY as u64..=MAX_CAPACITY as u64).contains(&header_capacity)
        && offset as u64 + HEADER_SIZE as u64 + header_capacity <= REGION_LEN as u64
        && head % 16 == 0
        && tail % 16 == 0
        && head <= tail
        && tail - head <= header_capacity
        && tail < MAX_POSITION;
    let attached = Consumer::attach(Arc::clone(&shared.region), offset);
    assert_eq!(attached.is_ok(), valid, "attach: {attached:?}");
    let Ok(consumer) = attached else {
        return report;
    };
    report.attached = true;
    let strategy = match setup.strategy {
        0 => WaitStrategy::default(),
        1 => WaitStrategy::Spin,
        2 => WaitStrategy::Park,
        _ => WaitStrategy::SpinThenPark {
            spin: std::time::Duration::ZERO,
        },
    };
    let mut consumer = consumer.with_wait_strategy(strategy);
    let mut producer =
        Some(Producer::attach(Arc::clone(&shared.region), offset).expect("a valid ring attaches"));
    // The ring may be smaller than the room the region leaves it.
    let capacity = consumer.capacity();
    peer.capacity = capacity;
    let consumer_data = shared.consumer_base + offset + HEADER_SIZE;
    let mut model = Model {
        honest: head == tail,
        published: VecDeque::new(),
        pending: Vec::new(),
        disconnected: false,
        corrupt: None,
        sent: 0,
    };

    let mut ops = 0;
    while !c.is_empty() && ops < MAX_OPS {
        ops += 1;
        match Op::decode(&mut c) {
            Op::Peek { action } => match consumer.try_peek() {
                Ok(frame) => {
                    report.frames += 1;
                    model.on_frame(&take(&frame, consumer_data, capacity));
                    match action % 3 {
                        0 => {
                            frame.release();
                            model.taken();
                        }
                        1 => {
                            frame.release_deferred();
                            model.taken();
                        }
                        // Left unreleased: the next peek returns it again.
                        _ => {}
                    }
                }
                Err(e) => model.on_error(e, RecvError::Empty, &peer),
            },
            Op::PeekNow => match consumer.peek(Some(Duration::ZERO)) {
                Ok(frame) => {
                    report.frames += 1;
                    model.on_frame(&take(&frame, consumer_data, capacity));
                    frame.release();
                    model.taken();
                }
                Err(e) => model.on_error(e, RecvError::TimedOut, &peer),
            },
            Op::RecvInto => {
                let mut out = vec![0xa5; 3];
                match consumer.recv_into(&mut out, Some(Duration::ZERO)) {
                    Ok(len) => {
                        report.frames += 1;
                        assert_eq!(len, out.len());
                        model.on_frame(&out);
                        model.taken();
                    }
                    Err(e) => model.on_error(e, RecvError::TimedOut, &peer),
                }
            }
            Op::Flush => consumer.flush(),
            Op::Pin => consumer.pin(),
            Op::Unpin => consumer.unpin(),
            Op::Arm { disarm } => {
                let result = consumer.arm_notification();
                match result {
                    Ok(ready) => {
                        assert!(model.corrupt.is_none(), "armed after {:?}", model.corrupt);
                        if model.honest {
                            let idle = model.idle_error(RecvError::Empty, &peer);
                            let expected = !model.published.is_empty() || idle != RecvError::Empty;
                            assert_eq!(ready, expected, "arm_notification");
                        }
                    }
                    Err(e) => model.on_error(e, RecvError::Empty, &peer),
                }
                if disarm {
                    consumer.disarm_notification();
                }
            }
            Op::Disconnect => {
                consumer.disconnect_handle().disconnect();
                model.disconnected = true;
            }
            Op::Send { len, how } => {
                let Some(producer) = producer.as_mut() else {
                    continue;
                };
                let len = usize::from(len) % (producer.max_payload() + 2);
                match producer.try_reserve(len) {
                    Ok(mut grant) => {
                        let payload = pattern(model.sent, len);
                        model.sent += 1;
                        grant.copy_from_slice(&payload);
                        match how % 4 {
                            0 => {
                                grant.commit();
                                model.publish_pending();
                                model.published.push_back(payload);
                            }
                            1 => {
                                grant.commit_deferred();
                                model.pending.push(payload);
                            }
                            // Abandoned: nothing is published.
                            2 => {}
                            _ => {
                                grant.shrink_to(len / 2);
                                grant.commit();
                                model.publish_pending();
                                model.published.push_back(payload[..len / 2].to_vec());
                            }
                        }
                    }
                    // A producer that finds the ring full publishes its batch.
                    Err(SendError::Full) => model.publish_pending(),
                    Err(SendError::TooLarge { .. }) => assert!(len > max_payload(capacity)),
                    Err(SendError::Closed) => {
                        assert!(peer.load32(CONSUMER_CLOSED_AT) != 0 || !model.honest)
                    }
                    Err(e) => assert!(!model.honest, "honest producer failed: {e}"),
                }
            }
            Op::ProducerFlush => {
                if let Some(producer) = producer.as_mut() {
                    producer.flush();
                    model.publish_pending();
                }
            }
            Op::DropProducer => {
                if producer.take().is_some() {
                    model.publish_pending();
                }
            }
            Op::SetTail(v) => {
                peer.store64(TAIL_AT, v);
                model.honest = false;
            }
            Op::AdvanceTail(v) => {
                peer.store64(TAIL_AT, peer.load64(TAIL_AT).wrapping_add(u64::from(v)));
                model.honest = false;
            }
            Op::Word { index, len, kind } => {
                let kind = match kind {
                    0 => KIND_DATA,
                    1 => KIND_PADDING,
                    other => other,
                };
                peer.word(usize::from(index), encode_header(len, kind));
                model.honest = false;
            }
            Op::Bytes { index, bytes } => {
                peer.write(usize::from(index), &bytes);
                model.honest = false;
            }
            Op::Frame { len } => {
                let len = usize::from(len) % (max_payload(capacity) + 1);
                let mut tail = peer.load64(TAIL_AT);
                let mut index = (tail % capacity as u64) as usize & !15;
                let size = frame_size(len);
                if size > capacity - index {
                    let padding = capacity - index - FRAME_HEADER_SIZE;
                    peer.word(index, encode_header(padding as u32, KIND_PADDING));
                    tail = tail.wrapping_add((capacity - index) as u64);
                    index = 0;
                }
                peer.word(index, encode_header(len as u32, KIND_DATA));
                peer.write(index + FRAME_HEADER_SIZE, &pattern(u64::MAX - tail, len));
                peer.store64(TAIL_AT, tail.wrapping_add(size as u64));
                model.honest = false;
            }
            Op::SetHead(v) => {
                peer.store64(HEAD_AT, v);
                model.honest = false;
            }
            // The closed flags and the wake words are hints a real peer
            // writes too: the model stays exact.
            Op::Closed { which, value } => {
                let at = if which % 2 == 0 {
                    PRODUCER_CLOSED_AT
                } else {
                    CONSUMER_CLOSED_AT
                };
                peer.store32(at, value);
            }
            Op::Wake { which, value } => {
                let at = [
                    DATA_SEQ_AT,
                    SPACE_SEQ_AT,
                    PRODUCER_PARKED_AT,
                    CONSUMER_PARKED_AT,
                ][usize::from(which % 4)];
                peer.store32(at, value);
            }
        }
    }
    drop(producer);
    drop(consumer);
    report.honest = model.honest;
    report.corrupt = model.corrupt;
    report
}
