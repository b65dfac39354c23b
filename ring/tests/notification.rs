//! Waking a peer that waits, against a peer that lies or attacks (issue 10,
//! holes 1 and 10; issue 11, hole 8):
//!
//! - the notification socket: a real second process that holds the other
//!   end (and a copy of ours, as a hostile creator could keep), clears
//!   `O_NONBLOCK` on both and fills both queues cannot make a publish, a
//!   `clear` or the hang-up signal block;
//! - descriptors handed to us as a notification socket are checked;
//! - a consumer that holds its parked word set costs the producer one wake
//!   per sleep it announces, not one per publish;
//! - one signal per arming, and an arming survives a blocking wait.

// Needs real processes, sockets, memfds and futexes.
#![cfg(not(any(miri, loom)))]

mod support;

use ferry_ring::{
    Consumer, Notifier, NotifierError, Producer, RecvError, Region, WaitStrategy, channel,
    ring_size,
};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{
    OP_TIMEOUT, RawMap, bounded, offsets, param, parked, parked_on_futex, spawn_bounded,
    spawn_child_with_fds, wait_until,
};

const CHILD: &str = "child_main";
const CAPACITY: usize = 4096;

/// The helper process's entry point: does what `FERRY_TEST_CHILD_ROLE`
/// says; in a normal run (no role in the environment) it returns at once.
#[test]
fn child_main() {
    let Some(role) = support::child_role() else {
        return;
    };
    let region = support::inherited_region();
    match role.as_str() {
        "notify-attacker" => notify_attacker(region),
        "lying-consumer" => lying_consumer(region),
        other => panic!("unknown role {other}"),
    }
}

/// Whether `fd` is readable right now.
fn readable(fd: impl AsFd) -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&zero)).unwrap() == 1
}

/// Whether `fd`'s open file description is non-blocking.
fn nonblocking(fd: impl AsFd) -> bool {
    rustix::fs::fcntl_getfl(fd)
        .unwrap()
        .contains(rustix::fs::OFlags::NONBLOCK)
}

/// Sends one-byte datagrams on `fd` (without blocking) until its peer's
/// queue is full; returns how many went out.
fn fill(fd: impl AsFd) -> usize {
    let mut sent = 0;
    while rustix::net::send(&fd, &[7], rustix::net::SendFlags::DONTWAIT).is_ok() {
        sent += 1;
        assert!(sent < 10_000_000, "a socket queue that never fills");
    }
    sent
}

fn ring_region() -> Arc<Region> {
    let region = Arc::new(Region::create(ring_size(CAPACITY)).expect("memfd region"));
    ferry_ring::init(&region, 0, CAPACITY).expect("init");
    region
}

/// The attacker: holds the other end of the victim's notification socket
/// and a copy of the victim's own end. Clears `O_NONBLOCK` on both, fills
/// both queues, then reads the ring while announcing a new event-loop
/// arming before every frame (so that every publish of the victim tries to
/// signal) and keeps the victim's queue full, until the victim closes.
fn notify_attacker(region: Arc<Region>) {
    let [victims_end, our_end]: [OwnedFd; 2] = support::inherited_extra_fds()
        .try_into()
        .expect("two descriptors");
    for fd in [&victims_end, &our_end] {
        rustix::fs::fcntl_setfl(fd, rustix::fs::OFlags::empty()).expect("clear O_NONBLOCK");
    }
    // The victim's signals land in our end's queue: fill it (by sending on
    // the victim's end, which we hold too). And fill the victim's queue.
    fill(&victims_end);
    fill(&our_end);
    let map = RawMap::new(region.fd().expect("memfd"));
    let mut rx = Consumer::attach(region, 0).expect("attach");
    let started = Instant::now();
    let mut epoch = 1u64 << 20;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "attacker still running"
        );
        epoch += 1;
        map.store_u64(
            offsets::CONSUMER_PARKED,
            (epoch << parked::EPOCH_SHIFT) | parked::ON_EVENT,
        );
        fill(&our_end);
        match rx.try_peek() {
            Ok(frame) => frame.release(),
            Err(RecvError::Empty) => std::thread::yield_now(),
            Err(RecvError::Closed) => return,
            Err(e) => panic!("attacker: {e}"),
        }
    }
}

/// Issue 10, hole 1: a second process holding the other end of our
/// notification socket (and a copy of ours) cleared `O_NONBLOCK` on both and
/// filled both queues. Our publishes (each trying to signal), `clear` and
/// `set_readable_forever` all return.
#[test]
fn a_peer_that_fills_the_socket_and_clears_o_nonblock_cannot_block_us() {
    let region = ring_region();
    let (ours, theirs) = Notifier::pair().expect("socketpair");
    let mut attacker = spawn_child_with_fds(
        CHILD,
        "notify-attacker",
        &region,
        &[],
        &[ours.as_fd(), theirs.as_fd()],
    );
    drop(theirs);
    // The attack is in place once our own end became blocking (the
    // attacker shares its open file description) and our queue is full.
    wait_until("the attacker's setup", Duration::from_secs(30), || {
        !nonblocking(&ours) && readable(&ours)
    });
    let ours = Arc::new(ours);
    let victim = {
        let ours = Arc::clone(&ours);
        spawn_bounded("victim", move || {
            let mut tx = Producer::attach(region, 0)
                .expect("attach")
                .with_wait_strategy(WaitStrategy::Park);
            tx.set_notifier(Some(ours.try_clone().expect("dup")));
            for seq in 0..2000u32 {
                tx.send(&seq.to_le_bytes(), Some(OP_TIMEOUT))
                    .unwrap_or_else(|e| panic!("frame {seq}: {e}"));
                if seq % 100 == 0 {
                    ours.clear();
                }
            }
            ours.set_readable_forever();
            let stats = tx.stats();
            drop(tx);
            stats
        })
    };
    let stats = victim.join_within(Duration::from_secs(60));
    assert!(
        stats.wakes > 100,
        "the attacker's armings made us signal: {stats:?}"
    );
    assert!(readable(&*ours));
    attacker
        .wait_timeout(Duration::from_secs(60))
        .success()
        .then_some(())
        .expect("the attacker saw every frame and the close");
}

/// Issue 10, hole 1 (the other direction): whatever a possibly hostile
/// creator hands us as our notification socket is checked.
#[test]
fn only_a_unix_datagram_socket_is_accepted_as_a_notifier() {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, socket, socketpair};
    let (pipe_read, _pipe_write) = rustix::pipe::pipe().unwrap();
    assert!(matches!(
        Notifier::from_received(pipe_read),
        Err(NotifierError::NotASocket)
    ));
    let eventfd = rustix::event::eventfd(0, rustix::event::EventfdFlags::empty()).unwrap();
    assert!(matches!(
        Notifier::from_received(eventfd),
        Err(NotifierError::NotASocket)
    ));
    let memfd = rustix::fs::memfd_create("not-a-socket", rustix::fs::MemfdFlags::empty()).unwrap();
    assert!(matches!(
        Notifier::from_received(memfd),
        Err(NotifierError::NotASocket)
    ));
    for kind in [SocketType::STREAM, SocketType::SEQPACKET] {
        let (a, _b) = socketpair(AddressFamily::UNIX, kind, SocketFlags::empty(), None).unwrap();
        let refused = Notifier::from_received(a).unwrap_err();
        assert!(
            matches!(refused, NotifierError::WrongType(_)),
            "{kind:?}: {refused}"
        );
    }
    if let Ok(udp) = socket(AddressFamily::INET, SocketType::DGRAM, None) {
        assert!(matches!(
            Notifier::from_received(udp),
            Err(NotifierError::WrongFamily(_))
        ));
    }
    let (a, b) = socketpair(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::empty(),
        None,
    )
    .unwrap();
    let (a, b) = (
        Notifier::from_received(a).unwrap(),
        Notifier::from_received(b).unwrap(),
    );
    // Even a blocking one works without blocking: full is "signalled".
    let sent = fill(&a);
    assert!(sent > 0);
    a.signal();
    assert!(readable(&b));
    b.clear();
}

/// Frames the lying consumer reads, and the sleeps it announces meanwhile.
const LYING_FRAMES: u64 = 20_000;
const LYING_ANNOUNCEMENTS: u64 = 10;

/// A consumer that reads every frame without ever sleeping, while holding
/// its parked word set (futex and event bits) all along; it announces a new
/// "sleep" only `ANNOUNCEMENTS` times. Reports nothing: the parent counts
/// its own wakes.
fn lying_consumer(region: Arc<Region>) {
    let announcements: u64 = param("ANNOUNCEMENTS");
    let frames: u64 = param("FRAMES");
    let map = RawMap::new(region.fd().expect("memfd"));
    let mut rx = Consumer::attach(region, 0).expect("attach");
    let claim = |epoch: u64| {
        map.store_u64(
            offsets::CONSUMER_PARKED,
            (epoch << parked::EPOCH_SHIFT) | parked::ON_FUTEX | parked::ON_EVENT,
        );
    };
    let mut epoch = 1u64 << 20;
    claim(epoch);
    let started = Instant::now();
    let mut received = 0u64;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "lying consumer still running at frame {received}"
        );
        match rx.try_peek() {
            Ok(frame) => {
                assert_eq!(frame.payload(), &received.to_le_bytes()[..]);
                frame.release();
                received += 1;
                if received % (frames / announcements) == 0 && received < frames {
                    epoch += 1;
                    claim(epoch);
                }
            }
            Err(RecvError::Empty) => std::hint::spin_loop(),
            Err(RecvError::Closed) => break,
            Err(e) => panic!("lying consumer: {e}"),
        }
    }
    assert_eq!(received, frames);
}

/// Issue 10, hole 10: a consumer that holds its parked word set while we
/// stream used to cost a `futex_wake` (and a signal) per publish. Now it
/// costs one per sleep it announces: the producer's wake count stays at the
/// number of announcements, whatever the number of frames.
#[test]
fn a_consumer_that_claims_to_sleep_costs_one_wake_per_claim() {
    let region = ring_region();
    let (ours, theirs) = Notifier::pair().expect("socketpair");
    let params = [
        ("ANNOUNCEMENTS", LYING_ANNOUNCEMENTS.to_string()),
        ("FRAMES", LYING_FRAMES.to_string()),
    ];
    let child = spawn_child_with_fds(CHILD, "lying-consumer", &region, &params, &[]);
    let stats = bounded("producer", Duration::from_secs(120), move || {
        let mut tx = Producer::attach(region, 0).expect("attach");
        tx.set_notifier(Some(ours));
        for seq in 0..LYING_FRAMES {
            tx.send(&seq.to_le_bytes(), Some(OP_TIMEOUT))
                .unwrap_or_else(|e| panic!("frame {seq}: {e}"));
        }
        let stats = tx.stats();
        drop(tx);
        stats
    });
    child.expect_success();
    eprintln!(
        "lying consumer: {} wakes for {LYING_FRAMES} frames ({LYING_ANNOUNCEMENTS} announcements)",
        stats.wakes
    );
    // The first claim, then one per announcement (the last claim is made
    // before the last frame at the latest).
    let claims = 1 + LYING_ANNOUNCEMENTS;
    assert!(
        stats.wakes <= claims + 1,
        "{} wakes for {claims} announced sleeps over {LYING_FRAMES} frames",
        stats.wakes
    );
    assert!(stats.wakes >= 1, "the claims were seen: {stats:?}");
    // Each wake also signalled: a datagram each, at most.
    let mut signals = 0;
    while rustix::net::recv(&theirs, &mut [0u8; 1], rustix::net::RecvFlags::DONTWAIT).is_ok() {
        signals += 1;
    }
    assert!(signals <= claims + 1, "{signals} signals");
}

/// An honest consumer that holds its head pinned (as the transport does
/// while a handler runs) and sleeps again for the next frame announces a
/// new sleep each time: it is woken every time, with no help from the
/// futex timeout. (A scheme keyed on the consumer's head, which does not
/// move while pinned, would wake it once and leave the other rounds to
/// the timeout.)
#[test]
fn a_pinned_consumer_that_sleeps_again_is_woken_every_time() {
    let region = ring_region();
    let map = RawMap::new(region.fd().expect("memfd"));
    let mut tx = Producer::attach(Arc::clone(&region), 0).expect("attach");
    let rx = Consumer::attach(region, 0)
        .expect("attach")
        .with_wait_strategy(WaitStrategy::Park);
    const ROUNDS: u32 = 20;
    let reader = spawn_bounded("pinned reader", move || {
        let mut rx = rx;
        rx.pin();
        for round in 0..ROUNDS {
            let frame = rx.peek(Some(OP_TIMEOUT)).expect("a frame");
            assert_eq!(frame.payload(), &round.to_le_bytes()[..]);
            frame.release_deferred();
        }
        rx.unpin();
        rx.stats()
    });
    let mut last_seen = 0;
    for round in 0..ROUNDS {
        // Publish only once the reader announced a new sleep: every frame
        // needs a wake.
        wait_until("the reader to sleep", OP_TIMEOUT, || {
            let word = map.load_u64(offsets::CONSUMER_PARKED);
            word & parked::ON_FUTEX != 0 && word != last_seen
        });
        last_seen = map.load_u64(offsets::CONSUMER_PARKED);
        tx.send(&round.to_le_bytes(), Some(OP_TIMEOUT)).unwrap();
    }
    let stats = reader.join_within(Duration::from_secs(60));
    // Every round is a wake, but for the rare round in which the reader's
    // 50 ms backstop ran out just between our look at its word and our
    // publish (then it found the frame itself): two are tolerated.
    let wakes = tx.stats().wakes;
    assert!(
        wakes + 2 >= u64::from(ROUNDS) && wakes <= u64::from(ROUNDS),
        "{wakes} wakes for {ROUNDS} sleeps; reader {stats:?}"
    );
}

/// One signal per arming, not one per publish: a consumer that armed and
/// then does not come to read costs the producer one signal (and one wake
/// in its stats), however much it publishes.
#[test]
fn one_signal_per_arming() {
    let (ours, theirs) = Notifier::pair().unwrap();
    let (mut tx, mut rx) = channel(64 * 1024);
    tx.set_notifier(Some(ours));
    assert!(!rx.arm_notification().unwrap());
    for _ in 0..100 {
        tx.try_send(b"x").unwrap();
    }
    assert_eq!(tx.stats().wakes, 1, "{:?}", tx.stats());
    let mut drained = 0;
    while rustix::net::recv(&theirs, &mut [0u8; 4], rustix::net::RecvFlags::DONTWAIT).is_ok() {
        drained += 1;
    }
    assert_eq!(drained, 1, "datagrams queued on the consumer's end");
    // A new arming is a new announcement: signalled again.
    rx.disarm_notification();
    while let Ok(frame) = rx.try_peek() {
        frame.release();
    }
    assert!(!rx.arm_notification().unwrap());
    tx.try_send(b"y").unwrap();
    assert_eq!(tx.stats().wakes, 2);
    assert!(readable(&theirs));
}

/// Issue 11, hole 8: a blocking wait while armed used to clear the arming
/// silently (the sleep announcement overwrote it, and the end of the sleep
/// zeroed it): a frame published during the wait did not signal the
/// socket, and neither did later ones. Now both do.
#[test]
fn a_blocking_wait_keeps_the_event_loop_arming() {
    let region = ring_region();
    let map = RawMap::new(region.fd().expect("memfd"));
    let (ours, theirs) = Notifier::pair().unwrap();
    let mut tx = Producer::attach(Arc::clone(&region), 0).expect("attach");
    tx.set_notifier(Some(ours));
    let mut rx = Consumer::attach(region, 0)
        .expect("attach")
        .with_wait_strategy(WaitStrategy::Park);
    assert!(!rx.arm_notification().unwrap(), "empty: armed");
    let reader = spawn_bounded("reader", move || {
        let frame = rx.peek(Some(OP_TIMEOUT)).expect("a frame");
        assert_eq!(frame.payload(), b"during");
        frame.release();
        rx
    });
    wait_until("the reader to sleep", OP_TIMEOUT, || {
        parked_on_futex(&map, offsets::CONSUMER_PARKED)
    });
    assert!(
        map.load_u64(offsets::CONSUMER_PARKED) & parked::ON_EVENT != 0,
        "the sleep announcement keeps the arming"
    );
    tx.try_send(b"during").unwrap();
    let mut rx = reader.join_within(Duration::from_secs(60));
    assert!(rx.is_armed(), "the blocking wait kept the arming");
    assert!(
        readable(&theirs),
        "the publish during the wait signalled the socket"
    );
    assert!(
        map.load_u64(offsets::CONSUMER_PARKED) & parked::ON_EVENT != 0,
        "the arming is still announced after the wait"
    );
    // What the event loop then does: disarm, empty the socket, read.
    rx.disarm_notification();
    theirs.clear();
    assert!(!readable(&theirs));
    assert_eq!(map.load_u64(offsets::CONSUMER_PARKED), 0, "disarmed");
    tx.try_send(b"after").unwrap();
    assert!(!readable(&theirs), "disarmed: no signal");
    let frame = rx.try_peek().unwrap();
    assert_eq!(frame.payload(), b"after");
    frame.release();
}

/// Write readiness: a producer armed for room on a full ring is signalled
/// once by the release that frees room; a producer not armed is never
/// signalled, however much the consumer releases.
#[test]
fn a_producer_armed_for_room_is_signalled_by_the_release_that_frees_it() {
    let (producer_end, consumer_end) = Notifier::pair().unwrap();
    let (mut tx, mut rx) = channel(4096);
    rx.set_notifier(Some(consumer_end));
    // Not armed: filling and draining the ring signals nothing.
    while tx.try_send(&[1; 100]).is_ok() {}
    while let Ok(frame) = rx.try_peek() {
        frame.release();
    }
    assert!(!readable(&producer_end), "signalled while not armed");
    assert_eq!(rx.stats().wakes, 0, "{:?}", rx.stats());
    // Full, then armed: the first release signals, once.
    while tx.try_send(&[2; 100]).is_ok() {}
    assert!(!tx.arm_room_notification(100).unwrap(), "the ring is full");
    assert!(tx.is_armed());
    assert!(!readable(&producer_end));
    for _ in 0..3 {
        rx.try_peek().unwrap().release();
    }
    assert!(readable(&producer_end), "the release did not signal");
    producer_end.clear();
    assert!(!readable(&producer_end), "more than one signal per arming");
    tx.disarm_room_notification();
    assert!(!tx.is_armed());
    tx.try_send(&[3; 100]).unwrap();
    // Room there already: arming says so and stays disarmed.
    while let Ok(frame) = rx.try_peek() {
        frame.release();
    }
    assert!(tx.arm_room_notification(100).unwrap());
    assert!(!tx.is_armed());
    assert!(!readable(&producer_end));
}

/// A consumer that goes away while the producer waits for room in an event
/// loop: arming reports it (`Ok(true)`), and the drop signals an armed
/// producer so that its event loop wakes to find out.
#[test]
fn a_closing_consumer_signals_a_producer_armed_for_room() {
    let (producer_end, consumer_end) = Notifier::pair().unwrap();
    let (mut tx, mut rx) = channel(4096);
    rx.set_notifier(Some(consumer_end));
    while tx.try_send(&[1; 100]).is_ok() {}
    assert!(!tx.arm_room_notification(100).unwrap());
    drop(rx);
    assert!(readable(&producer_end));
    tx.disarm_room_notification();
    assert!(
        tx.arm_room_notification(100).unwrap(),
        "closed: do not wait"
    );
    assert_eq!(
        tx.try_reserve(100).unwrap_err(),
        ferry_ring::SendError::Closed
    );
}
