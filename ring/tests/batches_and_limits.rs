//! Batches larger than the ring, and the limits of the frame header: found
//! as defects while writing the multi-process tests (a batch of deferred
//! commits or releases larger than the ring deadlocked; capacities above 2^33
//! let payload lengths overflow the header's 32-bit length).

// Real futex waits: not under miri.
#![cfg(not(any(miri, loom)))]

use ferry_ring::{Region, WaitStrategy, ring_size};
use std::time::Duration;

const WAIT: Option<Duration> = Some(Duration::from_secs(5));

/// Runs `f` on a thread, failing (not hanging) if it takes over 20 s.
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(value) => {
            handle.join().unwrap();
            value
        }
        Err(_) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("hang"),
        },
    }
}

/// `Producer::reserve` waits for room without publishing the frames already
/// committed with `commit_deferred`. When those fill the ring, the consumer
/// sees nothing, frees nothing, and the producer waits until its timeout
/// (forever with `None`): a batch larger than the ring deadlocks.
/// Expected: a producer publishes its pending frames before it waits.
#[test]
fn reserve_publishes_deferred_frames_before_waiting() {
    let (mut tx, mut rx) = ferry_ring::channel(1024);
    rx.set_wait_strategy(WaitStrategy::Park);
    let consumer = std::thread::spawn(move || {
        let mut got = 0;
        while got < 64 {
            match rx.peek(WAIT) {
                Ok(frame) => {
                    frame.release();
                    got += 1;
                }
                Err(e) => return Err((got, e)),
            }
        }
        Ok(got)
    });
    let sent = bounded(move || {
        // One batch of 64 frames of 48 bytes: 4 KiB through a 1 KiB ring.
        for i in 0..64 {
            match tx.reserve(32, WAIT) {
                Ok(grant) => grant.commit_deferred(),
                Err(e) => return Err((i, e)),
            }
        }
        tx.flush();
        Ok(64)
    });
    assert_eq!(sent, Ok(64), "the producer gave up waiting for room");
    assert_eq!(consumer.join().unwrap(), Ok(64));
}

/// The mirror image: `Consumer::peek` waits for frames without publishing
/// the room of frames released with `release_deferred`. When the producer
/// waits for exactly that room, both sides wait for each other.
/// Expected: a consumer publishes its pending releases before it waits.
#[test]
fn peek_publishes_deferred_releases_before_waiting() {
    let (mut tx, mut rx) = ferry_ring::channel(1024);
    tx.set_wait_strategy(WaitStrategy::Park);
    let producer = std::thread::spawn(move || {
        for i in 0..64 {
            if let Err(e) = tx.send(&[7; 32], WAIT) {
                return Err((i, e));
            }
        }
        Ok(64)
    });
    let received = bounded(move || {
        // Release everything in one batch at the end.
        for i in 0..64 {
            match rx.peek(WAIT) {
                Ok(frame) => frame.release_deferred(),
                Err(e) => return Err((i, e)),
            }
        }
        rx.flush();
        Ok(64)
    });
    assert_eq!(received, Ok(64), "the consumer gave up waiting for frames");
    assert_eq!(producer.join().unwrap(), Ok(64));
}

/// The frame header stores the payload length in 32 bits, but
/// `max_payload(capacity)` is `capacity / 2 - 16`, which exceeds `u32::MAX`
/// for every capacity from 2^34 up to `MAX_CAPACITY` (2^36). The producer
/// accepts such a length and `Grant::finish` writes `len as u32`, so the
/// consumer receives a frame of the wrong length (and then reads the middle
/// of the payload as the next frame header). Padding frames are truncated the
/// same way in `Producer::grant`. Expected: the producer refuses the length
/// (`TooLarge`), or the consumer gets the length that was sent.
///
/// The ring is a sparse 16 GiB memfd; only a few pages are ever touched.
#[test]
fn capacities_whose_payloads_overflow_the_length_field_are_refused() {
    let capacity = ferry_ring::MAX_CAPACITY * 2;
    let region = Region::heap(ring_size(ferry_ring::MIN_CAPACITY));
    assert_eq!(
        ferry_ring::init(&region, 0, capacity),
        Err(ferry_ring::AttachError::BadCapacity(capacity as u64))
    );
    assert!(ferry_ring::frame::max_payload(ferry_ring::MAX_CAPACITY) <= u32::MAX as usize);
}
