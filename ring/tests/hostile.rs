//! A peer that breaks the protocol. First a table, in one process: each
//! adversarial value written into the shared header or a frame header
//! through a second mapping of the memfd, and the exact `Corruption` the
//! victim must report, after which it stays failed. Then a real second
//! process that maps the same memfd and scribbles random and adversarial
//! values for a while, against a consumer and against a producer: the victim
//! may only get frames within bounds or errors, never a panic, a crash, a
//! hang or an access outside the ring.

// Needs real processes, memfds and mmap: none of this runs under miri.
#![cfg(not(any(miri, loom)))]

mod support;

use ferry_ring::frame::{KIND_DATA, KIND_PADDING, encode_header, frame_size, max_payload};
use ferry_ring::{
    AttachError, Consumer, Corruption, HEADER_SIZE, MAGIC, Producer, RecvError, Region, SendError,
    WaitStrategy, ring_size,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::{RawMap, offsets, spawn_bounded, spawn_child};

const CHILD: &str = "child_main";
const SHORT: Option<Duration> = Some(Duration::from_millis(20));

/// A memfd region with one ring, and a second, raw mapping of it.
struct Bench {
    region: Arc<Region>,
    map: RawMap,
}

impl Bench {
    fn new(capacity: usize) -> Bench {
        let region = Arc::new(Region::create(ring_size(capacity)).expect("memfd region"));
        ferry_ring::init(&region, 0, capacity).expect("init");
        let map = RawMap::new(region.fd().expect("memfd"));
        Bench { region, map }
    }

    fn producer(&self) -> Producer {
        Producer::attach(Arc::clone(&self.region), 0)
            .expect("attach")
            .with_wait_strategy(WaitStrategy::Park)
    }

    fn consumer(&self) -> Consumer {
        Consumer::attach(Arc::clone(&self.region), 0)
            .expect("attach")
            .with_wait_strategy(WaitStrategy::Park)
    }

    /// Writes a frame header word at data-area `index`.
    fn frame_word(&self, index: usize, len: u32, kind: u32) {
        self.map
            .store_u64(offsets::DATA + index, encode_header(len, kind));
    }

    fn tail(&self, tail: u64) {
        self.map.store_u64(offsets::TAIL, tail);
    }

    fn head(&self, head: u64) {
        self.map.store_u64(offsets::HEAD, head);
    }
}

fn receive(rx: &mut Consumer) -> usize {
    let frame = rx.try_peek().expect("a frame");
    let len = frame.len();
    frame.release();
    len
}

#[test]
fn header_offsets_match_the_crate() {
    assert_eq!(HEADER_SIZE, offsets::DATA);
    let bench = Bench::new(1024);
    assert_eq!(bench.map.load_u64(offsets::MAGIC), MAGIC);
    assert_eq!(
        bench.map.load_u32(offsets::VERSION),
        ferry_ring::LAYOUT_VERSION
    );
    assert_eq!(bench.map.load_u64(offsets::CAPACITY), 1024);
    let mut tx = bench.producer();
    let mut rx = bench.consumer();
    tx.try_send(b"abc").unwrap();
    assert_eq!(bench.map.load_u64(offsets::TAIL), 32);
    assert_eq!(bench.map.load_u32(offsets::DATA_SEQ), 1);
    assert_eq!(
        bench.map.load_u64(offsets::DATA),
        encode_header(3, KIND_DATA)
    );
    assert_eq!(receive(&mut rx), 3);
    assert_eq!(bench.map.load_u64(offsets::HEAD), 32);
    assert_eq!(bench.map.load_u32(offsets::SPACE_SEQ), 1);
    drop(tx);
    assert_eq!(bench.map.load_u32(offsets::PRODUCER_CLOSED), 1);
    drop(rx);
    assert_eq!(bench.map.load_u32(offsets::CONSUMER_CLOSED), 1);
}

/// One consumer case: `setup` moves the ring to some state (with a legal
/// producer if it likes) and scribbles; the consumer must then report
/// exactly `expected`, and keep reporting it after `repair` has made the
/// shared memory look healthy again.
fn consumer_case(
    name: &str,
    setup: impl FnOnce(&Bench, &mut Producer, &mut Consumer),
    expected: Corruption,
    repair: impl FnOnce(&Bench),
) {
    let bench = Bench::new(1024);
    let mut tx = bench.producer();
    let mut rx = bench.consumer();
    setup(&bench, &mut tx, &mut rx);
    let want = Err(RecvError::Corrupt(expected));
    assert_eq!(rx.try_peek().map(|f| f.len()), want, "{name}");
    repair(&bench);
    assert_eq!(rx.try_peek().map(|f| f.len()), want, "{name}: stays failed");
    // At once, not after waiting: a healthy but empty ring would time out.
    assert_eq!(rx.peek(SHORT).map(|f| f.len()), want, "{name}: peek");
    let mut buf = Vec::new();
    assert_eq!(rx.recv_into(&mut buf, SHORT), want, "{name}: recv_into");
    rx.flush();
    drop(rx);
}

/// Moves both ends to data-area index 960 of a 1024-byte ring (two frames
/// of 464 bytes sent and received).
fn advance_to_960(tx: &mut Producer, rx: &mut Consumer) {
    for _ in 0..2 {
        tx.try_send(&[1; 464]).unwrap();
        assert_eq!(receive(rx), 464);
    }
}

#[test]
fn consumer_reports_each_kind_of_corruption() {
    let max = max_payload(1024); // 496
    let position = |observed, own, last_seen| Corruption::Position {
        observed,
        own,
        last_seen,
    };
    consumer_case(
        "tail u64::MAX",
        |b, _, _| b.tail(u64::MAX),
        position(u64::MAX, 0, 0),
        |b| b.tail(0),
    );
    consumer_case(
        "tail more than the capacity ahead",
        |b, _, _| b.tail(1024 + 16),
        position(1040, 0, 0),
        |b| b.tail(0),
    );
    consumer_case(
        "tail off the frame alignment",
        |b, _, _| b.tail(8),
        position(8, 0, 0),
        |b| b.tail(0),
    );
    consumer_case(
        "tail backwards",
        |b, tx, rx| {
            for _ in 0..3 {
                tx.try_send(&[]).unwrap();
                assert_eq!(receive(rx), 0);
            }
            b.tail(32);
        },
        position(32, 48, 48),
        |b| b.tail(48),
    );
    consumer_case(
        "tail more than the capacity ahead of the published head",
        |b, tx, rx| {
            // Released but deferred: the head in shared memory is still 0.
            for _ in 0..3 {
                tx.try_send(&[]).unwrap();
                rx.try_peek().unwrap().release_deferred();
            }
            b.tail(48 + 1024);
        },
        position(1072, 0, 48),
        |b| b.tail(48),
    );
    consumer_case(
        "data frame of u32::MAX bytes",
        |b, _, _| {
            b.frame_word(0, u32::MAX, KIND_DATA);
            b.tail(32);
        },
        Corruption::FrameLength {
            len: u32::MAX as usize,
            available: 32,
        },
        |b| b.frame_word(0, 16, KIND_DATA),
    );
    consumer_case(
        "data frame one byte longer than what was published",
        |b, _, _| {
            b.frame_word(0, 17, KIND_DATA);
            b.tail(32);
        },
        Corruption::FrameLength {
            len: 17,
            available: 32,
        },
        |b| b.frame_word(0, 16, KIND_DATA),
    );
    consumer_case(
        "data frame one byte over max_payload",
        |b, _, _| {
            b.frame_word(0, max as u32 + 1, KIND_DATA);
            b.tail(1024);
        },
        Corruption::FrameLength {
            len: max + 1,
            available: 1024,
        },
        |b| b.frame_word(0, max as u32, KIND_DATA),
    );
    consumer_case(
        "data frame running past the end of the data area",
        |b, tx, rx| {
            advance_to_960(tx, rx);
            b.frame_word(960, 49, KIND_DATA); // 80 bytes, 64 to the end
            b.tail(960 + 96);
        },
        Corruption::FrameLength {
            len: 49,
            available: 96,
        },
        |b| b.frame_word(960, 48, KIND_DATA),
    );
    consumer_case(
        "unknown frame kind",
        |b, _, _| {
            b.frame_word(0, 0, 0xDEAD_BEEF);
            b.tail(16);
        },
        Corruption::FrameKind { kind: 0xDEAD_BEEF },
        |b| b.frame_word(0, 0, KIND_DATA),
    );
    consumer_case(
        "tail moved over a frame never written",
        |b, _, _| b.tail(16),
        Corruption::FrameKind { kind: 0 },
        |b| b.frame_word(0, 0, KIND_DATA),
    );
    consumer_case(
        "padding that stops short of the end",
        |b, _, _| {
            b.frame_word(0, 16, KIND_PADDING);
            b.tail(32);
        },
        Corruption::Padding {
            len: 16,
            to_end: 1024,
        },
        |b| b.frame_word(0, 0, KIND_DATA),
    );
    consumer_case(
        "padding of u32::MAX bytes",
        |b, _, _| {
            b.frame_word(0, u32::MAX, KIND_PADDING);
            b.tail(1024);
        },
        Corruption::Padding {
            len: u32::MAX as usize,
            to_end: 1024,
        },
        |b| b.frame_word(0, 0, KIND_DATA),
    );
    consumer_case(
        "padding longer than what was published",
        |b, tx, rx| {
            advance_to_960(tx, rx);
            b.frame_word(960, 48, KIND_PADDING);
            b.tail(960 + 48);
        },
        Corruption::Padding {
            len: 48,
            to_end: 64,
        },
        |b| b.tail(1024),
    );
}

#[test]
fn consumer_survives_harmless_scribbles() {
    // A padding frame spanning the whole data area is legal: skipped once,
    // then the ring is empty (no endless loop over padding).
    let bench = Bench::new(1024);
    let mut rx = bench.consumer();
    bench.frame_word(0, 1024 - 16, KIND_PADDING);
    bench.tail(1024);
    assert_eq!(rx.try_peek().unwrap_err(), RecvError::Empty);
    assert_eq!(rx.peek(SHORT).unwrap_err(), RecvError::TimedOut);

    // The largest legal frame at the start.
    let bench = Bench::new(1024);
    let mut rx = bench.consumer();
    bench.frame_word(0, 496, KIND_DATA);
    bench.tail(frame_size(496) as u64);
    assert_eq!(receive(&mut rx), 496);

    // Identity scribbled after attach: the attached ends keep their own copy
    // of the capacity and carry on; a new attach refuses the ring.
    let bench = Bench::new(1024);
    let (mut tx, mut rx) = (bench.producer(), bench.consumer());
    bench.map.store_u64(offsets::MAGIC, 0);
    bench.map.store_u32(offsets::VERSION, 99);
    bench.map.store_u64(offsets::CAPACITY, 3);
    tx.try_send(b"still fine").unwrap();
    assert_eq!(receive(&mut rx), 10);
    let attach = || Consumer::attach(Arc::clone(&bench.region), 0).map(drop);
    assert_eq!(attach(), Err(AttachError::BadMagic(0)));
    bench.map.store_u64(offsets::MAGIC, MAGIC);
    assert!(matches!(
        attach(),
        Err(AttachError::BadVersion { found: 99, .. })
    ));
    bench
        .map
        .store_u32(offsets::VERSION, ferry_ring::LAYOUT_VERSION);
    assert_eq!(attach(), Err(AttachError::BadCapacity(3)));
    bench.map.store_u64(offsets::CAPACITY, 1 << 20);
    assert!(matches!(attach(), Err(AttachError::DoesNotFit { .. })));
    bench.map.store_u64(offsets::CAPACITY, u64::MAX);
    assert_eq!(attach(), Err(AttachError::BadCapacity(u64::MAX)));

    // Wake words and parked flags are only hints: garbage there costs at
    // most a spurious wake-up or a bounded sleep.
    let bench = Bench::new(1024);
    let (mut tx, mut rx) = (bench.producer(), bench.consumer());
    bench.map.store_u32(offsets::DATA_SEQ, 0xFFFF_FFFF);
    bench.map.store_u32(offsets::SPACE_SEQ, 0x1234_5678);
    bench.map.store_u32(offsets::CONSUMER_PARKED, u32::MAX);
    bench.map.store_u32(offsets::PRODUCER_PARKED, 7);
    assert_eq!(rx.peek(SHORT).unwrap_err(), RecvError::TimedOut);
    tx.send(b"hello", SHORT).unwrap();
    assert_eq!(rx.peek(SHORT).unwrap().len(), 5);

    // The consumer never reads its own head back from shared memory.
    let bench = Bench::new(1024);
    let (mut tx, mut rx) = (bench.producer(), bench.consumer());
    tx.try_send(&[1; 40]).unwrap();
    assert_eq!(receive(&mut rx), 40);
    bench.head(0xDEAD_BEE0);
    tx.try_send(&[2; 8]).unwrap();
    let frame = rx.try_peek().unwrap();
    assert_eq!(frame.payload(), &[2; 8]);
    frame.release();
    assert_eq!(bench.map.load_u64(offsets::HEAD), 64 + 32);

    // A closed flag set early: frames already published are still drained.
    let bench = Bench::new(1024);
    let (mut tx, mut rx) = (bench.producer(), bench.consumer());
    tx.try_send(b"one").unwrap();
    bench.map.store_u32(offsets::PRODUCER_CLOSED, 1);
    assert_eq!(receive(&mut rx), 3);
    assert_eq!(rx.try_peek().unwrap_err(), RecvError::Closed);
}

/// One producer case on a 256-byte ring filled with 16 empty frames (the
/// producer has loaded the head once, finding 0).
fn producer_case(
    name: &str,
    setup: impl FnOnce(&Bench, &mut Producer),
    expected: Corruption,
    repair: impl FnOnce(&Bench),
) {
    let bench = Bench::new(256);
    let mut tx = bench.producer();
    setup(&bench, &mut tx);
    let want = Err(SendError::Corrupt(expected));
    assert_eq!(tx.try_reserve(0).map(drop), want, "{name}");
    repair(&bench);
    assert_eq!(tx.try_reserve(0).map(drop), want, "{name}: stays failed");
    assert_eq!(tx.try_send(b"x"), want, "{name}: try_send");
    assert_eq!(tx.reserve(1, SHORT).map(drop), want, "{name}: reserve");
    assert_eq!(tx.send(b"x", SHORT), want, "{name}: send");
    tx.flush();
    drop(tx);
}

fn fill(tx: &mut Producer) -> u64 {
    let mut frames = 0;
    while tx.try_send(&[]).is_ok() {
        frames += 1;
    }
    assert_eq!(tx.try_send(&[]), Err(SendError::Full));
    frames * 16
}

#[test]
fn producer_reports_each_kind_of_corruption() {
    let position = |observed, own, last_seen| Corruption::Position {
        observed,
        own,
        last_seen,
    };
    producer_case(
        "head u64::MAX",
        |b, tx| {
            assert_eq!(fill(tx), 256);
            b.head(u64::MAX);
        },
        position(u64::MAX, 256, 0),
        |b| b.head(256),
    );
    producer_case(
        "head beyond the published tail",
        |b, tx| {
            fill(tx);
            b.head(256 + 16);
        },
        position(272, 256, 0),
        |b| b.head(256),
    );
    producer_case(
        "head off the frame alignment",
        |b, tx| {
            fill(tx);
            b.head(8);
        },
        position(8, 256, 0),
        |b| b.head(256),
    );
    producer_case(
        "head backwards",
        |b, tx| {
            fill(tx);
            b.head(64);
            assert_eq!(fill(tx), 64); // loads head 64, fills up to 320
            b.head(48);
        },
        position(48, 320, 64),
        |b| b.head(320),
    );
    producer_case(
        "head past what was published (a deferred frame is not published)",
        |b, tx| {
            for _ in 0..15 {
                tx.try_send(&[]).unwrap();
            }
            tx.try_reserve(0).unwrap().commit_deferred();
            b.head(256);
        },
        position(256, 240, 0),
        |b| b.head(240),
    );
}

#[test]
fn producer_survives_harmless_scribbles() {
    // Closed flag: the producer learns the consumer is gone.
    let bench = Bench::new(256);
    let mut tx = bench.producer();
    fill(&mut tx);
    bench.map.store_u32(offsets::CONSUMER_CLOSED, 1);
    assert_eq!(tx.try_send(&[]), Err(SendError::Closed));

    // Wake words and parked flags: a bounded wait, no hang.
    let bench = Bench::new(256);
    let mut tx = bench.producer();
    fill(&mut tx);
    bench.map.store_u32(offsets::SPACE_SEQ, 0xFFFF_FFFF);
    bench.map.store_u32(offsets::PRODUCER_PARKED, u32::MAX);
    bench.map.store_u32(offsets::CONSUMER_PARKED, 3);
    assert_eq!(tx.reserve(0, SHORT).map(drop), Err(SendError::TimedOut));
    bench.head(256);
    tx.send(b"room again", SHORT).unwrap();

    // The producer never reads its own tail back from shared memory.
    let bench = Bench::new(256);
    let (mut tx, mut rx) = (bench.producer(), bench.consumer());
    tx.try_send(b"one").unwrap();
    bench.tail(0x1_0000_0000);
    tx.try_send(b"two").unwrap();
    assert_eq!(bench.map.load_u64(offsets::TAIL), 64);
    assert_eq!(receive(&mut rx), 3);
    assert_eq!(receive(&mut rx), 3);
}

// ---------------------------------------------------------------------------
// A real hostile process.

/// Entry point of the scribbling helper process; a no-op in a normal run.
#[test]
fn child_main() {
    let Some(role) = support::child_role() else {
        return;
    };
    let region = support::inherited_region();
    if role == "hugetlb-victim" {
        return hugetlb_victim(region);
    }
    let map = RawMap::new(region.fd().expect("memfd"));
    let capacity: usize = support::param("CAPACITY");
    let seed: u64 = support::param("SEED");
    let until = Instant::now() + Duration::from_millis(support::param("MILLIS"));
    let mut scribbler = Scribbler {
        map: &map,
        capacity: capacity as u64,
        rng: fastrand::Rng::with_seed(seed),
    };
    let mut actions = 0u64;
    while Instant::now() < until {
        for _ in 0..32 {
            match role.as_str() {
                "against-consumer" => scribbler.against_consumer(),
                "against-producer" => scribbler.against_producer(),
                other => panic!("unknown role {other}"),
            }
            actions += 1;
        }
        if scribbler.rng.u32(0..8) == 0 {
            std::thread::sleep(Duration::from_micros(scribbler.rng.u64(0..200)));
        } else {
            std::thread::yield_now();
        }
    }
    eprintln!("scribbler ({role}): {actions} actions");
}

struct Scribbler<'a> {
    map: &'a RawMap,
    capacity: u64,
    rng: fastrand::Rng,
}

impl Scribbler<'_> {
    fn data(&self, index: u64) -> usize {
        offsets::DATA + (index % self.capacity) as usize
    }

    fn word(&self, index: u64, len: u32, kind: u32) {
        self.map
            .store_u64(self.data(index & !15), encode_header(len, kind));
    }

    fn max(&self) -> u64 {
        self.capacity / 2 - 16
    }

    /// Plays a producer: often by the rules (so frames get through), often
    /// not.
    fn against_consumer(&mut self) {
        let map = self.map;
        let cap = self.capacity;
        let tail = map.load_u64(offsets::TAIL);
        let head = map.load_u64(offsets::HEAD);
        let sane = tail % 16 == 0 && tail >= head && tail - head <= cap;
        let index = tail % cap;
        let to_end = cap - index;
        let k = self.rng.u64(1..4) * 16;
        match self.rng.u32(0..100) {
            0..=34 if sane => self.publish_legal(tail, head),
            0..=34 => map.store_u64(offsets::TAIL, head & !15),
            35..=38 => map.store_u64(offsets::TAIL, u64::MAX),
            39..=42 => map.store_u64(offsets::TAIL, head.wrapping_add(cap + k)),
            43..=46 => map.store_u64(offsets::TAIL, tail.wrapping_sub(k)),
            47..=50 => map.store_u64(offsets::TAIL, tail.wrapping_add(self.rng.u64(1..16))),
            51..=54 => {
                self.word(tail, u32::MAX, KIND_DATA);
                map.store_u64(offsets::TAIL, tail.wrapping_add(32));
            }
            55..=58 => {
                // One byte more than what is published.
                self.word(tail, (k - 16 + 1) as u32, KIND_DATA);
                map.store_u64(offsets::TAIL, tail.wrapping_add(k));
            }
            59..=62 => {
                self.word(tail, self.max() as u32 + 1, KIND_DATA);
                map.store_u64(offsets::TAIL, tail.wrapping_add(to_end.min(cap)));
            }
            63..=66 => {
                let len = match self.rng.u32(0..4) {
                    0 => to_end.wrapping_sub(32) as u32,
                    1 => to_end as u32,
                    2 => u32::MAX,
                    _ => self.rng.u32(..),
                };
                self.word(tail, len, KIND_PADDING);
                map.store_u64(offsets::TAIL, tail.wrapping_add(to_end));
            }
            67..=70 => {
                let kind = self.rng.u32(..) | 1; // never DATA or PADDING (both even)
                let len = self.rng.u32(0..64);
                self.word(tail, len, kind);
                map.store_u64(offsets::TAIL, tail.wrapping_add(16));
            }
            71..=82 => {
                // Flip bytes of frames already published (the victim may be
                // copying them right now).
                let from = head % cap;
                for _ in 0..16 {
                    let step = self.rng.u64(0..cap);
                    let at = self.data(from + step);
                    map.u8_at(at).fetch_xor(self.rng.u8(1..), Ordering::Relaxed);
                }
            }
            83..=85 => self.identity(),
            86..=89 => {
                map.store_u32(offsets::DATA_SEQ, self.rng.u32(..));
                rustix::thread::futex::wake(
                    map.u32_at(offsets::DATA_SEQ),
                    rustix::thread::futex::Flags::empty(),
                    u32::MAX,
                )
                .ok();
            }
            90..=91 => map.store_u32(offsets::PRODUCER_CLOSED, self.flag()),
            92..=94 => self.parked_flags(),
            95..=96 => map.store_u64(offsets::HEAD, self.rng.u64(..)),
            _ => self.random_word(),
        }
    }

    /// Publishes one well-formed frame (with padding first when needed), if
    /// there is room by the (shared, possibly scribbled) positions.
    fn publish_legal(&mut self, tail: u64, head: u64) {
        let map = self.map;
        let cap = self.capacity;
        let len = match self.rng.u32(0..10) {
            0 => self.max(),
            1..=3 => self.rng.u64(0..=self.max()),
            _ => self.rng.u64(0..=64),
        };
        let size = frame_size(len as usize) as u64;
        let mut at = tail;
        let to_end = cap - at % cap;
        let needed = if size <= to_end { size } else { to_end + size };
        if tail.checked_add(needed).is_none_or(|end| end - head > cap) {
            return;
        }
        if size > to_end {
            self.word(at, (to_end - 16) as u32, KIND_PADDING);
            at += to_end;
        }
        for offset in (16..size).step_by(8).take(8) {
            map.store_u64(self.data(at + offset), self.rng.u64(..));
        }
        self.word(at, len as u32, KIND_DATA);
        map.store_u64(offsets::TAIL, at + size);
        map.u32_at(offsets::DATA_SEQ).fetch_add(1, Ordering::SeqCst);
        if map.load_u32(offsets::CONSUMER_PARKED) != 0 {
            rustix::thread::futex::wake(
                map.u32_at(offsets::DATA_SEQ),
                rustix::thread::futex::Flags::empty(),
                u32::MAX,
            )
            .ok();
        }
    }

    /// Plays a consumer: often by the rules (releasing everything), often
    /// not.
    fn against_producer(&mut self) {
        let map = self.map;
        let cap = self.capacity;
        let tail = map.load_u64(offsets::TAIL);
        let head = map.load_u64(offsets::HEAD);
        let k = self.rng.u64(1..4) * 16;
        match self.rng.u32(0..100) {
            0..=39 => {
                if tail % 16 == 0 {
                    map.store_u64(offsets::HEAD, tail);
                    map.u32_at(offsets::SPACE_SEQ)
                        .fetch_add(1, Ordering::SeqCst);
                    rustix::thread::futex::wake(
                        map.u32_at(offsets::SPACE_SEQ),
                        rustix::thread::futex::Flags::empty(),
                        u32::MAX,
                    )
                    .ok();
                }
            }
            40..=44 => map.store_u64(offsets::HEAD, u64::MAX),
            45..=49 => map.store_u64(offsets::HEAD, tail.wrapping_add(k)),
            50..=54 => map.store_u64(offsets::HEAD, head.wrapping_sub(k)),
            55..=59 => map.store_u64(offsets::HEAD, head.wrapping_add(8)),
            60..=63 => map.store_u32(offsets::CONSUMER_CLOSED, self.flag()),
            64..=68 => map.store_u32(offsets::SPACE_SEQ, self.rng.u32(..)),
            69..=73 => self.parked_flags(),
            74..=77 => self.identity(),
            78..=81 => map.store_u64(offsets::TAIL, self.rng.u64(..)),
            82..=93 => {
                for _ in 0..16 {
                    let index = self.rng.u64(0..cap);
                    let at = self.data(index);
                    map.u8_at(at).fetch_xor(self.rng.u8(1..), Ordering::Relaxed);
                }
            }
            _ => self.random_word(),
        }
    }

    /// A "closed" flag: mostly cleared again, sometimes set, sometimes junk.
    fn flag(&mut self) -> u32 {
        match self.rng.u32(0..6) {
            0 => 1,
            1 => self.rng.u32(..),
            _ => 0,
        }
    }

    fn identity(&mut self) {
        let map = self.map;
        match self.rng.u32(0..5) {
            0 => map.store_u64(offsets::MAGIC, self.rng.u64(..)),
            1 => map.store_u64(offsets::MAGIC, MAGIC),
            2 => map.store_u32(offsets::VERSION, self.rng.u32(..)),
            3 => map.store_u64(offsets::CAPACITY, u64::MAX),
            _ => map.store_u64(offsets::CAPACITY, self.capacity * 2),
        }
    }

    fn parked_flags(&mut self) {
        let map = self.map;
        let offset = if self.rng.bool() {
            offsets::PRODUCER_PARKED
        } else {
            offsets::CONSUMER_PARKED
        };
        map.store_u32(offset, self.rng.u32(..));
    }

    fn random_word(&mut self) {
        let limit = offsets::DATA + self.capacity as usize;
        let offset = self.rng.usize(0..limit / 8) * 8;
        self.map.store_u64(offset, self.rng.u64(..));
    }
}

/// What a victim saw, for the record.
#[derive(Debug, Default)]
struct Outcomes {
    lives: u64,
    attach_refused: u64,
    frames: u64,
    corrupt: u64,
    timed_out: u64,
    empty_or_full: u64,
    closed: u64,
}

fn random_strategy(rng: &mut fastrand::Rng) -> WaitStrategy {
    match rng.u32(0..3) {
        0 => WaitStrategy::Spin,
        1 => WaitStrategy::Park,
        _ => WaitStrategy::SpinThenPark {
            spin: Duration::from_nanos(rng.u64(0..50_000)),
        },
    }
}

/// Where the data area of the ring at offset 0 is mapped in this process,
/// found through a grant of an empty frame (payloads follow a 16-byte
/// frame header).
fn data_area(region: &Arc<Region>) -> usize {
    let mut tx = Producer::attach(Arc::clone(region), 0).expect("attach");
    let start = tx.try_reserve(0).expect("room").as_ptr() as usize - 16;
    drop(tx);
    start
}

const HOSTILE_RUN: Duration = Duration::from_millis(1500);
const HOSTILE_CAPACITY: usize = 4096;

/// Runs `victim` in this process against a scribbling helper process.
fn against_a_scribbler(
    role: &str,
    seed: u64,
    victim: impl FnOnce(Arc<Region>, usize, &AtomicBool) -> Outcomes + Send + 'static,
) -> Outcomes {
    let region = Arc::new(Region::create(ring_size(HOSTILE_CAPACITY)).expect("memfd region"));
    ferry_ring::init(&region, 0, HOSTILE_CAPACITY).expect("init");
    let data = data_area(&region);
    let params = [
        ("CAPACITY", HOSTILE_CAPACITY.to_string()),
        ("SEED", seed.to_string()),
        ("MILLIS", HOSTILE_RUN.as_millis().to_string()),
    ];
    let child = spawn_child(CHILD, role, &region, &params);
    let stop = Arc::new(AtomicBool::new(false));
    let running = {
        let stop = Arc::clone(&stop);
        spawn_bounded("victim", move || victim(region, data, &stop))
    };
    // The scribbler runs for HOSTILE_RUN and must exit cleanly.
    child.expect_success();
    stop.store(true, Ordering::SeqCst);
    let outcomes = running.join_within(Duration::from_secs(30));
    eprintln!("{role}: {outcomes:?}");
    outcomes
}

#[test]
fn consumer_against_a_hostile_producer_process() {
    let outcomes = against_a_scribbler("against-consumer", 0x0BAD_0001, |region, data, stop| {
        let capacity = HOSTILE_CAPACITY;
        let max = max_payload(capacity);
        let mut rng = fastrand::Rng::with_seed(0x0BAD_1001);
        let mut seen = Outcomes::default();
        let mut buf = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            // A new life: a fresh ring under the scribbler's feet.
            ferry_ring::init(&region, 0, capacity).expect("init");
            let mut rx = match Consumer::attach(Arc::clone(&region), 0) {
                Ok(rx) => rx,
                Err(_) => {
                    seen.attach_refused += 1;
                    continue;
                }
            };
            seen.lives += 1;
            rx.set_wait_strategy(random_strategy(&mut rng));
            for _ in 0..rng.u32(1..300) {
                let timeout = Some(Duration::from_micros(rng.u64(0..3000)));
                let result = match rng.u32(0..4) {
                    0 => rx.try_peek(),
                    1 | 2 => rx.peek(timeout),
                    _ => {
                        match rx.recv_into(&mut buf, timeout) {
                            Ok(len) => {
                                assert!(len <= max && buf.len() == len);
                                seen.frames += 1;
                            }
                            Err(e) => record_recv(&mut seen, e),
                        }
                        continue;
                    }
                };
                match result {
                    Ok(frame) => {
                        let len = frame.len();
                        assert!(len <= max, "frame of {len} bytes");
                        // The address only: the bytes are read with copy_to,
                        // never through a reference (the peer may write them).
                        let at = frame.payload().as_ptr() as usize;
                        assert!(
                            at >= data + 16 && at + len <= data + capacity && (at - data) % 16 == 0,
                            "payload {:#x}+{len} outside the data area {data:#x}+{capacity}",
                            at
                        );
                        let mut copy = vec![0u8; len];
                        // SAFETY: `copy` holds `len` bytes, outside the ring.
                        unsafe { frame.copy_to(copy.as_mut_ptr()) };
                        seen.frames += 1;
                        match rng.u32(0..4) {
                            0 => frame.release_deferred(),
                            // Not released: the next peek sees it again.
                            1 => {}
                            _ => frame.release(),
                        }
                    }
                    Err(RecvError::Corrupt(c)) => {
                        seen.corrupt += 1;
                        // Failed for good.
                        assert_eq!(rx.try_peek().map(|f| f.len()), Err(RecvError::Corrupt(c)));
                        assert_eq!(
                            rx.peek(timeout).map(|f| f.len()),
                            Err(RecvError::Corrupt(c))
                        );
                        break;
                    }
                    Err(e) => record_recv(&mut seen, e),
                }
                if rng.u32(0..16) == 0 {
                    rx.flush();
                }
            }
        }
        seen
    });
    assert!(outcomes.frames > 0 && outcomes.corrupt > 0, "{outcomes:?}");
}

fn record_recv(seen: &mut Outcomes, error: RecvError) {
    match error {
        RecvError::Corrupt(_) => seen.corrupt += 1,
        RecvError::TimedOut => seen.timed_out += 1,
        RecvError::Empty => seen.empty_or_full += 1,
        // The hostile peer may set the producer's closed flag: a lie, but
        // one the consumer cannot tell from the truth.
        RecvError::Closed => seen.closed += 1,
        RecvError::Disconnected => panic!("nobody declared the peer gone"),
    }
}

#[test]
fn producer_against_a_hostile_consumer_process() {
    let outcomes = against_a_scribbler("against-producer", 0x0BAD_0002, |region, data, stop| {
        let capacity = HOSTILE_CAPACITY;
        let max = max_payload(capacity);
        let mut rng = fastrand::Rng::with_seed(0x0BAD_1002);
        let mut seen = Outcomes::default();
        let payload = vec![0xA5u8; max];
        while !stop.load(Ordering::SeqCst) {
            ferry_ring::init(&region, 0, capacity).expect("init");
            let mut tx = match Producer::attach(Arc::clone(&region), 0) {
                Ok(tx) => tx,
                Err(_) => {
                    seen.attach_refused += 1;
                    continue;
                }
            };
            seen.lives += 1;
            tx.set_wait_strategy(random_strategy(&mut rng));
            // A scribbled parked word with the event bit also makes the
            // producer signal the consumer's notification socket: give it
            // one (the other end is kept, so the signals queue up and fill
            // it).
            let (notifier, _other_end) = ferry_ring::Notifier::pair().expect("socketpair");
            tx.set_notifier(Some(notifier));
            for _ in 0..rng.u32(1..300) {
                let timeout = Some(Duration::from_micros(rng.u64(0..3000)));
                let len = if rng.bool() {
                    rng.usize(0..=64)
                } else {
                    rng.usize(0..=max)
                };
                let result = match rng.u32(0..5) {
                    0 => tx.try_send(&payload[..len]),
                    1 => tx.send(&payload[..len], timeout),
                    choice => {
                        let grant = if choice == 2 {
                            tx.try_reserve(len)
                        } else {
                            tx.reserve(len, timeout)
                        };
                        grant.map(|mut grant| {
                            let at = grant.as_ptr() as usize;
                            assert!(
                                at >= data + 16
                                    && at + len <= data + capacity
                                    && (at - data) % 16 == 0,
                                "grant {at:#x}+{len} outside the data area {data:#x}+{capacity}"
                            );
                            grant.fill(0x5A);
                            match rng.u32(0..4) {
                                0 => grant.commit_deferred(),
                                // Abandoned: nothing is published.
                                1 => {}
                                _ => grant.commit(),
                            }
                        })
                    }
                };
                match result {
                    Ok(()) => seen.frames += 1,
                    Err(SendError::Corrupt(c)) => {
                        seen.corrupt += 1;
                        assert_eq!(tx.try_send(b"x"), Err(SendError::Corrupt(c)));
                        assert_eq!(tx.reserve(0, timeout).map(drop), Err(SendError::Corrupt(c)));
                        break;
                    }
                    Err(SendError::Full) => seen.empty_or_full += 1,
                    Err(SendError::TimedOut) => seen.timed_out += 1,
                    // A lie the producer cannot tell from the truth.
                    Err(SendError::Closed) => seen.closed += 1,
                    Err(e @ (SendError::TooLarge { .. } | SendError::Disconnected)) => {
                        panic!("unexpected {e}")
                    }
                }
                if rng.u32(0..16) == 0 {
                    tx.flush();
                }
            }
        }
        seen
    });
    assert!(outcomes.frames > 0 && outcomes.corrupt > 0, "{outcomes:?}");
}

/// In ferry the side that receives a ring attaches to a header its peer
/// wrote, so a peer can start both positions at `u64::MAX - 15`; the
/// producer's `tail + needed` would then overflow (a panic in debug builds,
/// wrapped positions in release). Found by this test; attach now refuses
/// positions of 2^62 and above. Correct answers: attach refuses the ring, or
/// the send fails with an error, or the frame arrives.
#[test]
fn positions_near_u64_max_neither_panic_nor_wrap() {
    let bench = Bench::new(1024);
    let far = u64::MAX - 15;
    bench.tail(far);
    bench.head(far);
    let (Ok(mut tx), Ok(mut rx)) = (
        Producer::attach(Arc::clone(&bench.region), 0),
        Consumer::attach(Arc::clone(&bench.region), 0),
    ) else {
        return;
    };
    let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tx.try_send(b"x")))
        .expect("a header written by the peer made the producer panic");
    if sent.is_ok() {
        let got = rx.try_peek().map(|frame| frame.payload().to_vec());
        assert_eq!(got, Ok(b"x".to_vec()), "the frame sent was not received");
    }
}

/// Region::open requires the SHRINK and GROW seals so that a peer cannot
/// take pages away from under our mapping (SIGBUS). But a memfd created with
/// `MFD_HUGETLB` carries those seals too, and the seals do not forbid
/// `fallocate(FALLOC_FL_PUNCH_HOLE)`. On an ordinary memfd a punched hole
/// just reads back as zeroes; on a hugetlb memfd it frees the huge page and
/// its reservation, and if the pool has no free huge page when the victim
/// touches the ring again, the kernel sends it SIGBUS. Found by this test;
/// `Region::open` now refuses hugetlb memfds (fstatfs f_type
/// HUGETLBFS_MAGIC), and this test then returns early. (The refusal itself is
/// asserted by `region::tests::open_refuses_hugetlbfs`; showing the crash
/// without the fix needs `echo 1 > /proc/sys/vm/nr_hugepages`.)
#[test]
fn a_hugetlb_memfd_cannot_kill_the_receiver() {
    use rustix::fs::{FallocateFlags, MemfdFlags, SealFlags};
    const HUGE: u64 = 2 << 20;
    let hugetlb = || {
        let fd = rustix::fs::memfd_create(
            "hostile-hugetlb",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING | MemfdFlags::HUGETLB,
        )?;
        rustix::fs::ftruncate(&fd, HUGE)?;
        Ok::<_, rustix::io::Errno>(fd)
    };
    let Ok(fd) = hugetlb() else {
        eprintln!("no hugetlb memfd on this kernel");
        return;
    };
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
        .unwrap();
    let region = match Region::open(fd.try_clone().unwrap()) {
        Ok(region) => Arc::new(region),
        Err(e) => {
            eprintln!("Region::open refused the hugetlb memfd (or no free huge page): {e}");
            return;
        }
    };
    ferry_ring::init(&region, 0, 4096).unwrap();
    let mut tx = Producer::attach(Arc::clone(&region), 0).unwrap();
    tx.try_send(b"ready").unwrap();
    let child = spawn_child(CHILD, "hugetlb-victim", &region, &[]);
    let map = RawMap::new(region.fd().unwrap());
    support::wait_until(
        "the victim to take the first frame",
        Duration::from_secs(20),
        || map.load_u64(offsets::HEAD) == 32,
    );
    // Nothing of ours touches the pages after this point.
    drop((tx, map, region));
    rustix::fs::fallocate(
        &fd,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        0,
        HUGE,
    )
    .unwrap();
    // Take every free huge page, so the victim cannot get one back.
    let mut hogs = Vec::new();
    while let Ok(hog) = hugetlb() {
        // SAFETY: a fresh shared mapping of our own hugetlb memfd.
        let Ok(ptr) = (unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                HUGE as usize,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &hog,
                0,
            )
        }) else {
            break;
        };
        // SAFETY: the mapping is HUGE bytes long and ours alone; mmap
        // reserved the page, so this touch cannot fail.
        unsafe { ptr.cast::<u8>().write_volatile(1) };
        hogs.push((hog, ptr));
    }
    eprintln!("holding {} huge pages", hogs.len());
    let result = std::panic::catch_unwind(|| child.expect_success());
    for (_, ptr) in hogs {
        // SAFETY: unmapping the mappings made above, once.
        let _ = unsafe { rustix::mm::munmap(ptr, HUGE as usize) };
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// The victim of `a_hugetlb_memfd_cannot_kill_the_receiver`: a consumer that
/// keeps polling the ring for 3 s.
fn hugetlb_victim(region: Arc<Region>) {
    let mut rx = Consumer::attach(region, 0).expect("attach");
    rx.peek(Some(Duration::from_secs(20)))
        .expect("the first frame")
        .release();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let _ = rx.try_peek().map(|frame| frame.len());
        std::thread::sleep(Duration::from_millis(1));
    }
}
