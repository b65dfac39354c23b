//! The ring between two real processes sharing a sealed memfd: soaks in each
//! wait strategy, sleeping sides, batches, orderly close, and a peer killed
//! with SIGKILL. The peer is this test binary re-executed (see `support`).
//!
//! `FERRY_SOAK_FRAMES` sets the frame count of the two big soaks (default
//! 10^6).

// Needs real processes, memfds and futexes: none of this runs under miri.
#![cfg(not(any(miri, loom)))]

mod support;

use ferry_ring::{Consumer, Producer, RecvError, Region, SendError, WaitStrategy, ring_size};
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{
    Consumed, EXIT_TIMEOUT, OP_TIMEOUT, Produced, RawMap, Traffic, consume, frame_sizes, offsets,
    produce, spawn_bounded, spawn_child, wait_until,
};

const CHILD: &str = "child_main";

/// Not a test of its own: the entry point of the helper processes. In a
/// normal run (no role in the environment) it returns at once.
#[test]
fn child_main() {
    let Some(role) = support::child_role() else {
        return;
    };
    let region = support::inherited_region();
    let traffic = Traffic::from_params();
    match role.as_str() {
        "producer" => {
            let tx = Producer::attach(region, 0)
                .expect("attach")
                .with_wait_strategy(traffic.strategy);
            produce(tx, traffic, None);
        }
        "consumer" => {
            let rx = Consumer::attach(region, 0)
                .expect("attach")
                .with_wait_strategy(traffic.strategy);
            consume(rx, traffic, None);
        }
        // Sends its frames, then stays alive without closing: to be killed.
        "producer-then-hang" => {
            let mut tx = Producer::attach(region, 0)
                .expect("attach")
                .with_wait_strategy(traffic.strategy);
            let mut sizes = frame_sizes(traffic.seed, tx.max_payload());
            for seq in 0..traffic.frames {
                let mut grant = tx
                    .reserve(sizes.next_len(), Some(OP_TIMEOUT))
                    .expect("room");
                support::write_frame(seq, &mut grant);
                grant.commit();
            }
            hang();
        }
        // Takes its frames, then closes its end (and exits) or hangs.
        "consumer-then-close" | "consumer-then-hang" => {
            let mut rx = Consumer::attach(region, 0)
                .expect("attach")
                .with_wait_strategy(traffic.strategy);
            let mut sizes = frame_sizes(traffic.seed, rx.max_payload());
            let mut buf = Vec::new();
            for seq in 0..traffic.frames {
                let len = rx.recv_into(&mut buf, Some(OP_TIMEOUT)).expect("a frame");
                assert_eq!(len, sizes.next_len());
                support::check_frame(seq, &buf).unwrap_or_else(|e| panic!("{e}"));
            }
            if role == "consumer-then-hang" {
                hang();
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// A helper that should be killed: wait for that, but not forever.
fn hang() -> ! {
    std::thread::sleep(EXIT_TIMEOUT);
    eprintln!("helper was not killed within {EXIT_TIMEOUT:?}");
    std::process::exit(3);
}

fn soak_frames() -> u64 {
    std::env::var("FERRY_SOAK_FRAMES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000)
}

/// A fresh memfd region holding one initialised ring at offset 0.
fn ring_region(capacity: usize) -> Arc<Region> {
    let region = Arc::new(Region::create(ring_size(capacity)).expect("memfd region"));
    ferry_ring::init(&region, 0, capacity).expect("init");
    region
}

/// The child produces `producer` traffic, this process consumes the same
/// frames its own way (`consumer`). Returns what this end saw.
fn child_produces(capacity: usize, producer: Traffic, consumer: Traffic) -> Consumed {
    let region = ring_region(capacity);
    let rx = Consumer::attach(Arc::clone(&region), 0)
        .expect("attach")
        .with_wait_strategy(consumer.strategy);
    let child = spawn_child(CHILD, "producer", &region, &producer.to_params());
    drop(region);
    let started = Instant::now();
    let consumed = consume(rx, consumer, None);
    child.expect_success();
    eprintln!(
        "{} frames, {} payload bytes in {:?}; consumer {:?}",
        consumed.received,
        consumed.stats.bytes,
        started.elapsed(),
        consumed.stats
    );
    consumed
}

/// The child consumes, this process produces.
fn child_consumes(capacity: usize, producer: Traffic, consumer: Traffic) -> Produced {
    let region = ring_region(capacity);
    let tx = Producer::attach(Arc::clone(&region), 0)
        .expect("attach")
        .with_wait_strategy(producer.strategy);
    let child = spawn_child(CHILD, "consumer", &region, &consumer.to_params());
    drop(region);
    let started = Instant::now();
    let produced = produce(tx, producer, None);
    child.expect_success();
    eprintln!(
        "{} frames in {:?}; producer {:?}",
        produced.sent,
        started.elapsed(),
        produced.stats
    );
    produced
}

/// Both processes busy-poll. The ring is large (256 KiB) so the producer
/// rarely waits; on a loaded machine the two spinners still progress
/// because the scheduler preempts them.
#[test]
fn soak_spin() {
    let frames = soak_frames();
    let traffic = Traffic::new(0x5EED_0001, frames, WaitStrategy::Spin);
    let consumed = child_produces(256 * 1024, traffic, traffic);
    assert_eq!(consumed.received, frames);
}

/// Both processes sleep on the futex whenever they wait; the consumer
/// copies frames out (`recv_into`).
#[test]
fn soak_park() {
    let frames = soak_frames();
    let traffic = Traffic {
        copy_out: true,
        ..Traffic::new(0x5EED_0002, frames, WaitStrategy::Park)
    };
    let consumed = child_produces(256 * 1024, traffic, traffic);
    assert_eq!(consumed.received, frames);
}

/// A consumer (child) that stops now and then until the producer (this
/// process) has filled the ring and gone to sleep: the producer must park,
/// be woken by releases, and nothing may be lost.
#[test]
fn slow_consumer_parks_the_producer() {
    let producer = Traffic::new(0x5EED_0003, 50_000, WaitStrategy::default());
    let consumer = Traffic {
        stall_every: 5_000,
        ..producer
    };
    let produced = child_consumes(16 * 1024, producer, consumer);
    assert!(produced.stats.parks > 0, "{:?}", produced.stats);
    assert!(produced.stats.frames == 50_000);
}

/// A producer (child) that stops now and then until the consumer (this
/// process) has drained the ring and gone to sleep.
#[test]
fn slow_producer_parks_the_consumer() {
    let consumer = Traffic::new(0x5EED_0004, 50_000, WaitStrategy::Park);
    let producer = Traffic {
        stall_every: 5_000,
        strategy: WaitStrategy::default(),
        ..consumer
    };
    let consumed = child_produces(16 * 1024, producer, consumer);
    assert!(consumed.stats.parks > 0, "{:?}", consumed.stats);
}

/// Deferred commits and deferred releases in random batches (up to 32
/// frames, often more than the 4 KiB ring holds), both ways round. Neither
/// side flushes before it waits: the ring must publish pending frames and
/// pending releases itself, or the two deadlock (and time out).
#[test]
fn batched_commits_and_releases() {
    let traffic = Traffic {
        batch: 32,
        ..Traffic::new(0x5EED_0005, 200_000, WaitStrategy::default())
    };
    let consumed = child_produces(4 * 1024, traffic, traffic);
    assert_eq!(consumed.received, traffic.frames);
    let traffic = Traffic {
        seed: 0x5EED_0006,
        ..traffic
    };
    let produced = child_consumes(4 * 1024, traffic, traffic);
    assert_eq!(produced.sent, traffic.frames);
}

/// The child producer drops its end with its last frames committed deferred
/// and never flushed: the consumer here gets every frame, then `Closed`
/// (and `Closed` again: `consume` checks both).
#[test]
fn producer_close_is_seen_after_the_last_frame() {
    let consumer = Traffic::new(0x5EED_0007, 5_000, WaitStrategy::Park);
    let producer = Traffic {
        defer_last: 7,
        strategy: WaitStrategy::default(),
        ..consumer
    };
    let consumed = child_produces(4 * 1024, producer, consumer);
    assert_eq!(consumed.end, RecvError::Closed);
    assert_eq!(consumed.received, 5_000);
}

/// The child consumer takes its frames and drops its end: the producer
/// here, asleep on the full ring, is woken and gets `Closed`.
#[test]
fn consumer_close_is_seen_by_a_waiting_producer() {
    let region = ring_region(4 * 1024);
    let mut tx = Producer::attach(Arc::clone(&region), 0)
        .expect("attach")
        .with_wait_strategy(WaitStrategy::Park);
    let traffic = Traffic::new(0x5EED_0008, 1_000, WaitStrategy::Park);
    let child = spawn_child(CHILD, "consumer-then-close", &region, &traffic.to_params());
    let mut sizes = frame_sizes(traffic.seed, tx.max_payload());
    for seq in 0..traffic.frames {
        let mut grant = tx
            .reserve(sizes.next_len(), Some(OP_TIMEOUT))
            .expect("room");
        support::write_frame(seq, &mut grant);
        grant.commit();
    }
    // Keep sending until the ring is full and the close is seen.
    let filler = vec![0u8; 100];
    let end = loop {
        match tx.send(&filler, Some(OP_TIMEOUT)) {
            Ok(()) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(end, SendError::Closed);
    child.expect_success();
}

/// Which end of the ring this process holds in a death test.
enum Survivor {
    Consumer(Consumer),
    Producer(Producer),
}

/// The peer process is SIGKILLed while this end sleeps in a wait with no
/// timeout (`peek(None)` or `reserve(None)`); a watcher reaps the peer with
/// waitpid and calls `DisconnectHandle::disconnect`, which must wake the
/// sleeper with `Disconnected`.
fn killed_peer_wakes_the_sleeper(kill_producer: bool) {
    let region = ring_region(4 * 1024);
    let identity = support::memfd_identity(&region);
    let map = RawMap::new(region.fd().expect("memfd"));
    let traffic = Traffic::new(0x5EED_0009, 100, WaitStrategy::Park);
    let (survivor, handle, role, flag) = if kill_producer {
        let rx = Consumer::attach(Arc::clone(&region), 0)
            .expect("attach")
            .with_wait_strategy(WaitStrategy::Park);
        let handle = rx.disconnect_handle();
        let flag = offsets::CONSUMER_PARKED;
        (Survivor::Consumer(rx), handle, "producer-then-hang", flag)
    } else {
        let tx = Producer::attach(Arc::clone(&region), 0)
            .expect("attach")
            .with_wait_strategy(WaitStrategy::Park);
        let handle = tx.disconnect_handle();
        let flag = offsets::PRODUCER_PARKED;
        (Survivor::Producer(tx), handle, "consumer-then-hang", flag)
    };
    let mut child = spawn_child(CHILD, role, &region, &traffic.to_params());
    let tid = Arc::new(AtomicI32::new(0));
    let waiting = Arc::new(AtomicBool::new(false));
    let sleeper = {
        let (tid, waiting) = (Arc::clone(&tid), Arc::clone(&waiting));
        spawn_bounded("sleeper", move || {
            tid.store(
                rustix::thread::gettid().as_raw_nonzero().get(),
                Ordering::SeqCst,
            );
            match survivor {
                Survivor::Consumer(mut rx) => {
                    let mut sizes = frame_sizes(traffic.seed, rx.max_payload());
                    for seq in 0..traffic.frames {
                        let frame = rx.peek(Some(OP_TIMEOUT)).expect("a frame");
                        assert_eq!(frame.len(), sizes.next_len());
                        support::check_frame(seq, frame.payload()).unwrap();
                        frame.release();
                    }
                    waiting.store(true, Ordering::SeqCst);
                    let end = rx.peek(None).map(|frame| frame.len()).unwrap_err();
                    (
                        format!("{end:?}"),
                        rx.stats(),
                        end == RecvError::Disconnected,
                    )
                }
                Survivor::Producer(mut tx) => {
                    let mut sizes = frame_sizes(traffic.seed, tx.max_payload());
                    for seq in 0..traffic.frames {
                        let mut grant = tx.reserve(sizes.next_len(), None).expect("room");
                        support::write_frame(seq, &mut grant);
                        grant.commit();
                    }
                    waiting.store(true, Ordering::SeqCst);
                    // The child takes no more: fill the ring, then sleep.
                    let end = loop {
                        if let Err(e) = tx.send(&[7; 64], None) {
                            break e;
                        }
                    };
                    (
                        format!("{end:?}"),
                        tx.stats(),
                        end == SendError::Disconnected,
                    )
                }
            }
        })
    };
    // Wait until the sleeper is really asleep in its unbounded wait.
    wait_until("the survivor to sleep", Duration::from_secs(20), || {
        waiting.load(Ordering::SeqCst)
            && support::parked_on_futex(&map, flag)
            && support::thread_is_sleeping(tid.load(Ordering::SeqCst))
    });
    // The watcher: kill, reap, declare the peer gone.
    child.kill();
    let status = child.wait_timeout(EXIT_TIMEOUT);
    assert_eq!(status.signal(), Some(9), "{status}");
    let declared = Instant::now();
    handle.disconnect();
    let (end, stats, disconnected) = sleeper.join_within(Duration::from_secs(10));
    eprintln!(
        "woken {:?} after disconnect with {end}; {stats:?}",
        declared.elapsed()
    );
    assert!(disconnected, "the sleeper ended with {end}");
    assert!(stats.parks > 0, "the survivor never slept: {stats:?}");
    drop((handle, map, region));
    assert_eq!(support::open_descriptors_of(identity), 0, "memfd leaked");
}

#[test]
fn killed_producer_disconnect_wakes_a_parked_consumer() {
    killed_peer_wakes_the_sleeper(true);
}

#[test]
fn killed_consumer_disconnect_wakes_a_producer_parked_on_a_full_ring() {
    killed_peer_wakes_the_sleeper(false);
}

/// The peer is SIGKILLed at random points of a stream, in each wait
/// strategy, alternately the producer and the consumer. The survivor gets
/// every frame the dead producer published, intact and in order (a frame it
/// was writing is never seen), then `Disconnected` once the watcher declares
/// the death; the memfd is not leaked.
#[test]
fn peer_killed_at_random_points() {
    let mut rng = fastrand::Rng::with_seed(0x5EED_000A);
    let strategies = [
        WaitStrategy::Park,
        WaitStrategy::default(),
        WaitStrategy::Spin,
    ];
    for round in 0..6u64 {
        let kill_producer = round % 2 == 0;
        let strategy = strategies[(round / 2) as usize % strategies.len()];
        let traffic = Traffic {
            limit: Duration::from_secs(60),
            ..Traffic::new(0x5EED_1000 + round, u64::MAX, strategy)
        };
        let region = ring_region(16 * 1024);
        let identity = support::memfd_identity(&region);
        let progress = Arc::new(AtomicU64::new(0));
        let target = rng.u64(0..20_000);
        let (mut child, handle, survivor) = if kill_producer {
            let rx = Consumer::attach(Arc::clone(&region), 0)
                .expect("attach")
                .with_wait_strategy(strategy);
            let handle = rx.disconnect_handle();
            let child = spawn_child(CHILD, "producer", &region, &traffic.to_params());
            let progress = Arc::clone(&progress);
            let survivor = spawn_bounded("consumer", move || {
                let consumed = consume(rx, traffic, Some(&progress));
                (
                    consumed.received,
                    format!("{:?}", consumed.end),
                    consumed.end == RecvError::Disconnected,
                )
            });
            (child, handle, survivor)
        } else {
            let tx = Producer::attach(Arc::clone(&region), 0)
                .expect("attach")
                .with_wait_strategy(strategy);
            let handle = tx.disconnect_handle();
            let child = spawn_child(CHILD, "consumer", &region, &traffic.to_params());
            let progress = Arc::clone(&progress);
            let survivor = spawn_bounded("producer", move || {
                let produced = produce(tx, traffic, Some(&progress));
                (
                    produced.sent,
                    format!("{:?}", produced.error),
                    produced.error == Some(SendError::Disconnected),
                )
            });
            (child, handle, survivor)
        };
        drop(region);
        wait_until("frames to flow", OP_TIMEOUT, || {
            progress.load(Ordering::Acquire) >= target
        });
        child.kill();
        let status = child.wait_timeout(EXIT_TIMEOUT);
        assert_eq!(status.signal(), Some(9), "{status}");
        handle.disconnect();
        let (frames, end, disconnected) = survivor.join_within(OP_TIMEOUT);
        assert!(
            disconnected,
            "round {round}: survivor ended with {end} after {frames} frames"
        );
        assert!(frames >= target);
        drop(handle);
        assert_eq!(support::open_descriptors_of(identity), 0, "memfd leaked");
    }
}
