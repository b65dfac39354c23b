//! Model checking of the ring protocol with loom: every interleaving (up to
//! a preemption bound) of a producer and a consumer thread.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p ferry-ring --test loom --release`.
//!
//! What is checked: frames arrive exactly once, in order, whole; and no
//! wake-up is lost in either direction. Under loom the futex is a condition
//! variable with no timeout, so a lost wake-up leaves a thread asleep
//! forever, which loom reports as a deadlock.
#![cfg(loom)]

use ferry_ring::{
    Consumer, MIN_CAPACITY, Producer, RecvError, Region, WaitStrategy, create, ring_size,
};
use loom::thread;
use std::sync::Arc;

fn model(f: impl Fn() + Sync + Send + 'static) {
    model_with_bound(3, f);
}

/// `model` with another default preemption bound (`LOOM_MAX_PREEMPTIONS`
/// still overrides it), for models too large to explore at 3 in minutes.
fn model_with_bound(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(bound);
    }
    builder.check(f);
}

fn ring(strategy: WaitStrategy) -> (Producer, Consumer) {
    let region = Arc::new(Region::heap(ring_size(MIN_CAPACITY)));
    let (tx, rx) = create(region, 0, MIN_CAPACITY).unwrap();
    (
        tx.with_wait_strategy(strategy),
        rx.with_wait_strategy(strategy),
    )
}

/// Sends `lens.len()` frames whose bytes encode their sequence number.
fn produce(mut tx: Producer, lens: &[usize]) {
    for (seq, &len) in lens.iter().enumerate() {
        let mut grant = tx.reserve(len, None).unwrap();
        grant.fill(seq as u8 + 1);
        grant.commit();
    }
}

fn consume(mut rx: Consumer, lens: &[usize]) {
    for (seq, &len) in lens.iter().enumerate() {
        let frame = rx.peek(None).unwrap();
        assert_eq!(frame.len(), len, "frame {seq} has the wrong length");
        assert!(
            frame.payload().iter().all(|b| *b == seq as u8 + 1),
            "frame {seq} torn"
        );
        frame.release();
    }
}

/// The consumer sleeps for data; the producer must wake it.
#[test]
fn consumer_parked_for_data_is_woken() {
    model(|| {
        let (tx, rx) = ring(WaitStrategy::Park);
        let lens = [8, 24];
        let consumer = thread::spawn(move || consume(rx, &lens));
        produce(tx, &lens);
        consumer.join().unwrap();
    });
}

/// The producer sleeps for room (two 112-byte frames fill a 256-byte ring);
/// the consumer must wake it. The third frame also wraps behind padding.
#[test]
fn producer_parked_for_room_is_woken() {
    model(|| {
        let (tx, rx) = ring(WaitStrategy::Park);
        let lens = [112, 112, 40];
        let consumer = thread::spawn(move || consume(rx, &lens));
        produce(tx, &lens);
        consumer.join().unwrap();
    });
}

/// A frame that does not fit before the end goes after a padding frame; the
/// consumer skips the padding and sees the frame whole.
#[test]
fn wrapped_frames_arrive_whole() {
    model(|| {
        let (tx, rx) = ring(WaitStrategy::SpinThenPark {
            spin: std::time::Duration::ZERO,
        });
        let lens = [80, 80, 64];
        let consumer = thread::spawn(move || consume(rx, &lens));
        produce(tx, &lens);
        consumer.join().unwrap();
    });
}

/// Deferred commits published by one flush, and the close that follows,
/// reach a sleeping consumer: it sees every frame, then `Closed`.
#[test]
fn batch_then_close_is_seen() {
    model(|| {
        let (mut tx, mut rx) = ring(WaitStrategy::Park);
        let consumer = thread::spawn(move || {
            for expected in [1u8, 2] {
                let frame = rx.peek(None).unwrap();
                assert_eq!(frame.payload(), &[expected]);
                frame.release();
            }
            assert_eq!(rx.peek(None).unwrap_err(), RecvError::Closed);
        });
        for value in [1u8, 2] {
            let mut grant = tx.reserve(1, None).unwrap();
            grant[0] = value;
            grant.commit_deferred();
        }
        tx.flush();
        drop(tx);
        consumer.join().unwrap();
    });
}

/// A producer that publishes and is then declared gone (as the hang-up
/// watcher does when the peer process dies right after sending): the frame
/// is delivered before `Disconnected`, whatever the interleaving. (Found by
/// the benchmark: the consumer had loaded the tail as empty, then saw the
/// disconnect flag and reported `Disconnected` without loading it again.)
#[test]
fn a_frame_published_before_disconnect_is_delivered() {
    model(|| {
        let (mut tx, rx) = ring(WaitStrategy::Park);
        let gone = rx.disconnect_handle();
        let consumer = thread::spawn(move || {
            let mut rx = rx;
            let frame = rx.peek(None).expect("the frame comes before Disconnected");
            assert_eq!(frame.payload(), &[9]);
            frame.release();
            assert_eq!(rx.peek(None).unwrap_err(), RecvError::Disconnected);
        });
        let mut grant = tx.reserve(1, None).unwrap();
        grant[0] = 9;
        grant.commit();
        gone.disconnect();
        consumer.join().unwrap();
        // Keep the producer (its drop would close the ring) until the end.
        drop(tx);
    });
}

/// A consumer that holds its head pinned (as the transport does while a
/// handler runs) and sleeps again for the next frame: its head does not
/// move, but each sleep is a new announcement, so the producer, which wakes
/// an announcement once only, still wakes every one of them.
#[test]
fn pinned_consumer_sleeping_again_is_woken() {
    model(|| {
        let (tx, mut rx) = ring(WaitStrategy::Park);
        let lens = [8, 8, 8];
        let consumer = thread::spawn(move || {
            rx.pin();
            for (seq, &len) in lens.iter().enumerate() {
                let frame = rx.peek(None).unwrap();
                assert_eq!(frame.len(), len);
                assert!(frame.payload().iter().all(|b| *b == seq as u8 + 1));
                frame.release_deferred();
            }
            rx.unpin();
        });
        produce(tx, &lens);
        consumer.join().unwrap();
    });
}

/// The producer sleeps for room several times in a row (two frames fill the
/// ring; the third and the fourth each wait for a release): each sleep is a
/// new announcement the consumer wakes. (Four frames at a preemption bound
/// of 3 take about 7 minutes; 2 covers the one or two preemptions a lost
/// wake-up needs.)
#[test]
fn producer_sleeping_for_room_repeatedly_is_woken() {
    model_with_bound(2, || {
        let (tx, rx) = ring(WaitStrategy::Park);
        let lens = [112, 112, 112, 112];
        let consumer = thread::spawn(move || consume(rx, &lens));
        produce(tx, &lens);
        consumer.join().unwrap();
    });
}

/// Write readiness: a producer arms for room on a full ring (as an event
/// loop would before waiting on its notification descriptor) while the
/// consumer releases a frame. Whatever the interleaving, either arming finds
/// the room (`Ok(true)`: no wait), or the consumer's release signals the
/// descriptor: an armed producer is never left without a signal (a lost
/// wake-up would leave its event loop waiting for good).
#[test]
fn producer_armed_for_room_is_signalled() {
    model(|| {
        let (producer_end, consumer_end) = ferry_ring::Notifier::pair().unwrap();
        let (mut tx, mut rx) = ring(WaitStrategy::Park);
        rx.set_notifier(Some(consumer_end));
        // Two 112-byte frames fill the 256-byte ring.
        for _ in 0..2 {
            tx.try_send(&[7; 112]).unwrap();
        }
        let consumer = thread::spawn(move || {
            rx.try_peek().unwrap().release();
            rx
        });
        let armed = !tx.arm_room_notification(112).unwrap();
        let rx = consumer.join().unwrap();
        if armed {
            assert!(signalled(&producer_end), "armed for room, never signalled");
        }
        tx.disarm_room_notification();
        tx.try_send(&[8; 112]).expect("the released room is there");
        drop(rx);
    });
}

/// Whether the peer signalled `ours` (drains one signal, never blocks).
fn signalled(ours: &ferry_ring::Notifier) -> bool {
    use std::os::fd::AsFd;
    rustix::net::recv(
        ours.as_fd(),
        &mut [0u8; 1],
        rustix::net::RecvFlags::DONTWAIT,
    )
    .is_ok()
}
