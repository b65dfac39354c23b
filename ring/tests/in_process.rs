#![cfg(not(loom))]
//! The ring's behaviour within one process, on heap memory: frame layout,
//! wrap and padding, full and empty, batches, limits, attach validation,
//! close and disconnect. These run under miri too; the few that sleep on a
//! futex or need a memfd are skipped there.

use ferry_ring::{
    AttachError, Consumer, MIN_CAPACITY, Producer, RING_ALIGN, RecvError, Region, SendError,
    WaitStrategy, channel, frame, init, ring_size,
};
use std::sync::Arc;
use std::time::Duration;

const SECOND: Option<Duration> = Some(Duration::from_secs(10));

fn recv(rx: &mut Consumer) -> Vec<u8> {
    let frame = rx.try_peek().expect("a frame");
    let bytes = frame.payload().to_vec();
    frame.release();
    bytes
}

#[test]
fn frames_arrive_in_order_with_their_bytes() {
    let (mut tx, mut rx) = channel(1024);
    for i in 0..50u8 {
        let payload = vec![i; usize::from(i)];
        tx.try_send(&payload).unwrap();
        assert_eq!(recv(&mut rx), payload);
    }
    assert_eq!(rx.try_peek().unwrap_err(), RecvError::Empty);
    assert_eq!(tx.stats().frames, 50);
    assert_eq!(rx.stats().frames, 50);
    assert_eq!(tx.stats().bytes, rx.stats().bytes);
}

#[test]
fn zero_length_frames_take_one_slot() {
    let (mut tx, mut rx) = channel(MIN_CAPACITY);
    let slots = MIN_CAPACITY / frame::FRAME_HEADER_SIZE;
    for _ in 0..slots {
        tx.try_send(&[]).unwrap();
    }
    assert_eq!(tx.try_send(&[]).unwrap_err(), SendError::Full);
    for _ in 0..slots {
        let frame = rx.try_peek().unwrap();
        assert!(frame.is_empty());
        frame.release();
    }
    assert_eq!(rx.try_peek().unwrap_err(), RecvError::Empty);
}

#[test]
fn payloads_are_16_aligned_and_contiguous_across_the_wrap() {
    let cap = 1024;
    let (mut tx, mut rx) = channel(cap);
    // Sizes chosen so frames land at every offset and often wrap.
    for round in 0..200usize {
        let len = (round * 37) % (frame::max_payload(cap) + 1);
        let mut grant = tx.try_reserve(len).unwrap();
        for (i, byte) in grant.iter_mut().enumerate() {
            *byte = (i + round) as u8;
        }
        grant.commit();
        let frame = rx.try_peek().unwrap();
        assert_eq!(frame.payload().as_ptr() as usize % 16, 0);
        assert_eq!(frame.len(), len);
        assert!(
            frame
                .payload()
                .iter()
                .enumerate()
                .all(|(i, b)| *b == (i + round) as u8),
            "payload of round {round} damaged"
        );
        frame.release();
    }
}

#[test]
fn a_frame_that_does_not_fit_before_the_end_starts_at_zero() {
    let cap = 1024;
    let (mut tx, mut rx) = channel(cap);
    // Frames of 272 bytes (256 payload) at 0, 272 and 544; the 4th would
    // cross the end at 1024, so it goes after a padding frame, at 0.
    let mut addresses = Vec::new();
    for i in 0..4u8 {
        tx.try_send(&[i; 256]).unwrap();
        let frame = rx.try_peek().unwrap();
        assert_eq!(frame.payload(), &[i; 256]);
        addresses.push(frame.payload().as_ptr() as usize);
        frame.release();
    }
    assert_eq!(addresses[1] - addresses[0], 272);
    assert_eq!(addresses[2] - addresses[1], 272);
    assert_eq!(
        addresses[3], addresses[0],
        "the 4th frame wrapped to offset 0"
    );
}

#[test]
fn padding_costs_room_until_released() {
    let cap = 1024;
    let (mut tx, mut rx) = channel(cap);
    tx.try_send(&[0; 400]).unwrap(); // 416 bytes
    tx.try_send(&[0; 400]).unwrap(); // 416 bytes, 192 left before the end
    recv(&mut rx);
    // 496 bytes fit neither before the end (192) nor after padding (416 free).
    assert_eq!(tx.try_send(&[0; 480]).unwrap_err(), SendError::Full);
    recv(&mut rx);
    tx.try_send(&[9; 480]).unwrap();
    assert_eq!(recv(&mut rx), vec![9; 480]);
}

#[test]
fn full_then_room_again() {
    let (mut tx, mut rx) = channel(MIN_CAPACITY);
    let mut sent = 0;
    while tx.try_send(&[7; 40]).is_ok() {
        sent += 1;
    }
    assert_eq!(sent, MIN_CAPACITY / 64);
    assert_eq!(tx.try_reserve(40).unwrap_err(), SendError::Full);
    recv(&mut rx);
    tx.try_send(&[7; 40]).unwrap();
}

#[test]
fn maximum_payload_is_enforced() {
    let (mut tx, mut rx) = channel(4096);
    let max = tx.max_payload();
    assert_eq!(max, frame::max_payload(4096));
    assert_eq!(
        tx.try_reserve(max + 1).unwrap_err(),
        SendError::TooLarge { len: max + 1, max }
    );
    tx.try_send(&vec![5; max]).unwrap();
    assert_eq!(recv(&mut rx), vec![5; max]);
}

#[test]
fn abandoned_grant_publishes_nothing() {
    let (mut tx, mut rx) = channel(1024);
    {
        let _abandoned = tx.try_reserve(10).unwrap();
    }
    assert_eq!(rx.try_peek().unwrap_err(), RecvError::Empty);
    tx.try_send(b"after").unwrap();
    assert_eq!(recv(&mut rx), b"after");
}

#[test]
fn deferred_commits_publish_together() {
    let (mut tx, mut rx) = channel(4096);
    for i in 0..10u8 {
        let mut grant = tx.try_reserve(1).unwrap();
        grant[0] = i;
        grant.commit_deferred();
    }
    assert_eq!(
        rx.try_peek().unwrap_err(),
        RecvError::Empty,
        "nothing before flush"
    );
    tx.flush();
    for i in 0..10u8 {
        let frame = rx.try_peek().unwrap();
        assert_eq!(frame.payload(), &[i]);
        frame.release_deferred();
    }
    assert_eq!(rx.try_peek().unwrap_err(), RecvError::Empty);
}

#[test]
fn deferred_releases_free_room_only_on_flush() {
    let (mut tx, mut rx) = channel(MIN_CAPACITY);
    while tx.try_send(&[1; 16]).is_ok() {}
    rx.try_peek().unwrap().release_deferred();
    assert_eq!(tx.try_send(&[1; 16]).unwrap_err(), SendError::Full);
    rx.flush();
    tx.try_send(&[1; 16]).unwrap();
}

#[test]
fn an_unreleased_frame_is_peeked_again() {
    let (mut tx, mut rx) = channel(1024);
    tx.try_send(b"again").unwrap();
    {
        let _unreleased = rx.try_peek().unwrap();
    }
    assert_eq!(recv(&mut rx), b"again");
}

#[test]
fn closing_the_producer_drains_then_reports_closed() {
    let (mut tx, mut rx) = channel(1024);
    tx.try_send(b"last words").unwrap();
    let mut deferred = tx.try_reserve(3).unwrap();
    deferred.copy_from_slice(b"bye");
    deferred.commit_deferred();
    drop(tx);
    assert_eq!(recv(&mut rx), b"last words");
    assert_eq!(recv(&mut rx), b"bye", "deferred frames are flushed on drop");
    assert_eq!(rx.try_peek().unwrap_err(), RecvError::Closed);
    assert_eq!(rx.peek(SECOND).unwrap_err(), RecvError::Closed);
}

#[test]
fn closing_the_consumer_is_seen_by_the_producer() {
    let (mut tx, rx) = channel(MIN_CAPACITY);
    drop(rx);
    let mut outcome = Ok(());
    for _ in 0..MIN_CAPACITY {
        outcome = tx.try_send(&[0; 32]);
        if outcome.is_err() {
            break;
        }
    }
    assert_eq!(outcome.unwrap_err(), SendError::Closed);
}

#[test]
fn timeouts_expire() {
    let (mut tx, mut rx) = channel(MIN_CAPACITY);
    rx.set_wait_strategy(WaitStrategy::SpinThenPark {
        spin: Duration::from_micros(10),
    });
    let short = Some(Duration::from_millis(20));
    assert_eq!(rx.peek(short).unwrap_err(), RecvError::TimedOut);
    tx.set_wait_strategy(WaitStrategy::Spin);
    while tx.try_send(&[0; 32]).is_ok() {}
    assert_eq!(tx.send(&[0; 32], short).unwrap_err(), SendError::TimedOut);
}

#[test]
fn disconnect_fails_both_directions() {
    let (mut tx, mut rx) = channel(1024);
    tx.try_send(b"published before").unwrap();
    rx.disconnect_handle().disconnect();
    tx.disconnect_handle().disconnect();
    assert_eq!(recv(&mut rx), b"published before");
    assert_eq!(rx.try_peek().unwrap_err(), RecvError::Disconnected);
    assert_eq!(tx.try_send(b"x").unwrap_err(), SendError::Disconnected);
}

#[test]
fn two_rings_share_a_region() {
    let cap = 1024;
    let second = ring_size(cap).next_multiple_of(RING_ALIGN);
    let region = Arc::new(Region::heap(second + ring_size(cap)));
    init(&region, 0, cap).unwrap();
    init(&region, second, cap).unwrap();
    let mut a_tx = Producer::attach(Arc::clone(&region), 0).unwrap();
    let mut a_rx = Consumer::attach(Arc::clone(&region), 0).unwrap();
    let mut b_tx = Producer::attach(Arc::clone(&region), second).unwrap();
    let mut b_rx = Consumer::attach(Arc::clone(&region), second).unwrap();
    a_tx.try_send(b"to a").unwrap();
    b_tx.try_send(b"to b").unwrap();
    assert_eq!(recv(&mut b_rx), b"to b");
    assert_eq!(recv(&mut a_rx), b"to a");
}

#[test]
fn attach_validates_the_header() {
    let cap = 1024;
    let region = Arc::new(Region::heap(ring_size(cap)));
    assert!(matches!(
        Consumer::attach(Arc::clone(&region), 0).unwrap_err(),
        AttachError::BadMagic(0)
    ));
    assert_eq!(
        init(&region, 0, 1000).unwrap_err(),
        AttachError::BadCapacity(1000)
    );
    assert_eq!(
        init(&region, 0, 128).unwrap_err(),
        AttachError::BadCapacity(128)
    );
    assert_eq!(
        init(&region, 64, 512).unwrap_err(),
        AttachError::Misaligned(64)
    );
    assert!(matches!(
        init(&region, 0, 2048).unwrap_err(),
        AttachError::DoesNotFit { .. }
    ));
    assert!(matches!(
        init(&region, RING_ALIGN, cap).unwrap_err(),
        AttachError::DoesNotFit { .. }
    ));
    init(&region, 0, cap).unwrap();
    Consumer::attach(region, 0).unwrap();
}

/// Attaching reads what another process wrote: a capacity that claims more
/// than the region holds, or a wrong version, is refused.
#[test]
#[cfg(not(miri))] // needs a memfd
fn attach_refuses_a_lying_header() {
    let cap = 1024;
    let region = Arc::new(Region::create(ring_size(cap)).unwrap());
    init(&region, 0, cap).unwrap();
    let raw = memmap_second_view(&region);
    // capacity (offset 16) claims 2048: the ring would overrun the region.
    raw.write_u64(16, 2048);
    assert!(matches!(
        Consumer::attach(Arc::clone(&region), 0).unwrap_err(),
        AttachError::DoesNotFit { .. }
    ));
    raw.write_u64(16, cap as u64);
    raw.write_u32(8, 99); // version
    assert!(matches!(
        Producer::attach(Arc::clone(&region), 0).unwrap_err(),
        AttachError::BadVersion { found: 99, .. }
    ));
    raw.write_u32(8, ferry_ring::LAYOUT_VERSION);
    raw.write_u64(128, 32); // tail ahead of head by 32
    raw.write_u64(256, 48); // head past tail
    assert!(matches!(
        Consumer::attach(Arc::clone(&region), 0).unwrap_err(),
        AttachError::Corrupt(_)
    ));
}

/// A second, independent mapping of a region's memfd, written with raw
/// stores the way a hostile peer would.
#[cfg(not(miri))]
struct RawView {
    map: memmap2::MmapRaw,
}

#[cfg(not(miri))]
fn memmap_second_view(region: &Region) -> RawView {
    let file = std::fs::File::from(region.fd().unwrap().try_clone_to_owned().unwrap());
    RawView {
        map: memmap2::MmapOptions::new().map_raw(&file).unwrap(),
    }
}

#[cfg(not(miri))]
impl RawView {
    fn write_u64(&self, offset: usize, value: u64) {
        // SAFETY: offsets used by the tests are inside the mapped ring
        // header and 8-aligned; the store is atomic like the ring's own.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(self.map.as_mut_ptr().add(offset).cast()) }
            .store(value, std::sync::atomic::Ordering::SeqCst);
    }
    fn write_u32(&self, offset: usize, value: u32) {
        // SAFETY: as in write_u64, 4-aligned.
        unsafe { std::sync::atomic::AtomicU32::from_ptr(self.map.as_mut_ptr().add(offset).cast()) }
            .store(value, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Both directions of waiting with real futexes, between threads: a slow
/// consumer makes the producer park; a slow producer makes the consumer park.
#[test]
#[cfg_attr(miri, ignore = "parks on a futex")]
fn parked_sides_are_woken() {
    for slow_consumer in [true, false] {
        let (tx, rx) = channel(MIN_CAPACITY);
        let mut tx = tx.with_wait_strategy(WaitStrategy::Park);
        let mut rx = rx.with_wait_strategy(WaitStrategy::Park);
        const FRAMES: u32 = 2_000;
        let reader = std::thread::spawn(move || {
            for i in 0..FRAMES {
                if slow_consumer && i % 200 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                let frame = rx.peek(SECOND).expect("frame");
                assert_eq!(frame.payload(), &i.to_le_bytes());
                frame.release();
            }
            assert_eq!(rx.peek(SECOND).unwrap_err(), RecvError::Closed);
            rx.stats()
        });
        for i in 0..FRAMES {
            if !slow_consumer && i % 200 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
            tx.send(&i.to_le_bytes(), SECOND).unwrap();
        }
        let tx_stats = tx.stats();
        drop(tx);
        let rx_stats = reader.join().unwrap();
        if slow_consumer {
            assert!(tx_stats.parks > 0, "producer never waited for room");
        } else {
            assert!(rx_stats.parks > 0, "consumer never waited for a frame");
        }
        assert_eq!(rx_stats.frames, u64::from(FRAMES));
    }
}

/// Threads that both spin (miri runs this one, slowly, with few frames).
#[test]
fn spinning_threads_exchange_every_frame() {
    let frames: u32 = if cfg!(miri) { 50 } else { 20_000 };
    let (tx, rx) = channel(1024);
    let mut tx = tx.with_wait_strategy(WaitStrategy::Spin);
    let mut rx = rx.with_wait_strategy(WaitStrategy::Spin);
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        for i in 0..frames {
            let len = rx.recv_into(&mut buf, SECOND).unwrap();
            assert_eq!(len, (i % 97) as usize);
            assert!(buf.iter().all(|b| *b == i as u8));
        }
    });
    for i in 0..frames {
        tx.send(&vec![i as u8; (i % 97) as usize], SECOND).unwrap();
    }
    reader.join().unwrap();
}

/// Whether `fd` is readable right now.
#[cfg(not(miri))]
fn readable(fd: impl std::os::fd::AsFd) -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&zero)).unwrap() == 1
}

/// An armed consumer is signalled through its notification socket by the
/// next publish, and only while armed.
#[test]
#[cfg(not(miri))] // sockets and poll
fn armed_consumer_is_signalled_through_its_notifier() {
    let (ours, theirs) = ferry_ring::Notifier::pair().unwrap();
    let (mut tx, mut rx) = channel(1024);
    tx.set_notifier(Some(ours));

    tx.try_send(b"unarmed").unwrap();
    assert!(
        !readable(&theirs),
        "no signal while the consumer is not armed"
    );
    assert!(rx.arm_notification().unwrap(), "a frame is already there");
    assert!(!rx.is_armed(), "ready at once: not armed");
    assert_eq!(recv(&mut rx), b"unarmed");

    assert!(!rx.arm_notification().unwrap(), "empty: armed");
    assert!(rx.is_armed());
    tx.try_send(b"wake").unwrap();
    assert!(readable(&theirs), "the publish signalled the socket");
    theirs.clear();
    assert!(!readable(&theirs), "clear empties it");
    rx.disarm_notification();
    assert_eq!(recv(&mut rx), b"wake");
    tx.try_send(b"disarmed").unwrap();
    assert!(!readable(&theirs));
    drop(tx);
    assert_eq!(recv(&mut rx), b"disarmed");
    assert!(
        rx.arm_notification().unwrap(),
        "a closed ring is ready (to report Closed)"
    );
}

/// `SpinThenPark { spin: Duration::MAX }` spins until the timeout and never
/// sleeps (issue 11, hole 8: the deadline overflowed and it parked at once).
#[test]
fn spin_then_park_with_an_endless_spin_never_parks() {
    let (mut tx, rx) = channel(MIN_CAPACITY);
    let mut rx = rx.with_wait_strategy(WaitStrategy::SpinThenPark {
        spin: Duration::MAX,
    });
    assert!(matches!(
        rx.peek(Some(Duration::from_millis(30))),
        Err(RecvError::TimedOut)
    ));
    assert_eq!(rx.stats().parks, 0, "{:?}", rx.stats());
    while tx.try_send(&[0; 48]).is_ok() {}
    let mut tx = tx.with_wait_strategy(WaitStrategy::SpinThenPark {
        spin: Duration::MAX,
    });
    assert_eq!(
        tx.reserve(48, Some(Duration::from_millis(30))).map(drop),
        Err(SendError::TimedOut)
    );
    assert_eq!(tx.stats().parks, 0, "{:?}", tx.stats());
    // The control: a finite spin does park.
    let mut rx = rx.with_wait_strategy(WaitStrategy::SpinThenPark {
        spin: Duration::ZERO,
    });
    while rx.try_peek().is_ok() {
        rx.try_peek().unwrap().release();
    }
    assert!(matches!(
        rx.peek(Some(Duration::from_millis(30))),
        Err(RecvError::TimedOut)
    ));
    assert!(rx.stats().parks > 0, "{:?}", rx.stats());
}

/// A pinned consumer keeps released room from the producer, even when it
/// finds the ring empty; the last unpin gives it back.
#[test]
fn pinned_consumer_does_not_give_room_back() {
    let (mut tx, mut rx) = channel(MIN_CAPACITY);
    while tx.try_send(&[1; 48]).is_ok() {}
    rx.pin();
    rx.pin();
    while let Ok(frame) = rx.try_peek() {
        frame.release_deferred();
    }
    assert_eq!(rx.try_peek().unwrap_err(), RecvError::Empty);
    assert_eq!(
        tx.try_send(&[1; 48]).unwrap_err(),
        SendError::Full,
        "still pinned"
    );
    rx.unpin();
    assert_eq!(
        tx.try_send(&[1; 48]).unwrap_err(),
        SendError::Full,
        "one pin left"
    );
    rx.unpin();
    tx.try_send(&[1; 48]).unwrap();
}

#[test]
fn frames_given_back_hold_the_head_until_the_last_kept_one_is_gone() {
    // Two frames of the largest payload fill the ring: the producer has room
    // again only once the consumer published a head past one of them.
    let (mut tx, mut rx) = channel(4096);
    let max = tx.max_payload();
    tx.try_send(&vec![1u8; max]).unwrap();
    tx.try_send(&vec![2u8; max]).unwrap();

    // A frame of another ring given back is dropped, not kept as this
    // consumer's spare (it would then count this ring's frames on the other
    // ring's token).
    let (mut other_tx, mut other_rx) = channel(4096);
    other_tx.try_send(b"other").unwrap();
    let foreign = other_rx.try_peek().unwrap().keep_in_place();
    rx.give_back(foreign);

    let first = rx.try_peek().unwrap().keep_in_place();
    let second = rx.try_peek().unwrap().keep_in_place();
    rx.give_back(second);
    assert!(
        !tx.has_room(max).unwrap(),
        "head published while a frame is kept"
    );
    assert!(first.bytes().iter().all(|&b| b == 1));
    rx.give_back(first);
    assert!(
        tx.has_room(max).unwrap(),
        "head not published once every frame is back"
    );

    // The next frame kept takes the spare; dropping it (not giving it
    // back) releases it too.
    tx.try_send(&vec![3u8; max]).unwrap();
    tx.try_send(&vec![4u8; max]).unwrap();
    let third = rx.try_peek().unwrap().keep_in_place();
    rx.flush();
    assert!(
        !tx.has_room(max).unwrap(),
        "head published past a kept spare"
    );
    assert!(third.bytes().iter().all(|&b| b == 3));
    drop(third);
    rx.flush();
    assert!(tx.has_room(max).unwrap());
    assert_eq!(recv(&mut rx), vec![4u8; max]);
}

#[test]
fn room_found_by_another_producer_or_before_a_reserve_is_looked_for_again() {
    let (mut tx, mut rx) = channel(4096);
    let (mut full, _full_rx) = channel(4096);
    let max = tx.max_payload();
    // Both producers at the same tail; `tx`'s frames were read, `full`'s not.
    for _ in 0..2 {
        tx.try_send(&vec![0u8; max]).unwrap();
        full.try_send(&vec![0u8; max]).unwrap();
        recv(&mut rx);
    }
    let room = tx.room_now(max).expect("room on tx");
    assert!(matches!(full.take_room(room), Err(SendError::Full)));

    // Found, then used by another reserve: looked for again.
    let room = tx.room_now(max).expect("room on tx");
    tx.try_send(&vec![1u8; max]).unwrap();
    tx.try_send(&vec![2u8; max]).unwrap();
    assert!(matches!(tx.take_room(room), Err(SendError::Full)));

    assert_eq!(recv(&mut rx), vec![1u8; max]);
    let room = tx.wait_for_room(max, SECOND).unwrap();
    let mut grant = tx.take_room(room).unwrap();
    grant.fill(3);
    grant.commit();
    assert_eq!(recv(&mut rx), vec![2u8; max]);
    assert_eq!(recv(&mut rx), vec![3u8; max]);
}
