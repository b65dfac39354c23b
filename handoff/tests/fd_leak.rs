//! Descriptor accounting, in a test binary of its own so that no other test
//! opens descriptors in this process meanwhile (the tests here take a lock).

mod common;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use common::{assert_success, open_fds, role_command, wait_exit};
use ferry_handoff::{AllowAll, Broker, Channel, RecvError};

/// Serialises the tests that count this process's descriptors.
static COUNTING: Mutex<()> = Mutex::new(());

#[test]
fn child_role() {
    common::child_main();
}

/// 1000 introductions (each carrying a memfd and a socket end): the
/// requester's, the target's and the broker's descriptor counts are
/// unchanged.
#[test]
fn no_descriptor_leak_over_1000_introductions() {
    let _counting = COUNTING.lock().unwrap_or_else(|p| p.into_inner());
    let mut broker = Broker::new(AllowAll).unwrap();
    let before = open_fds();
    let network = broker
        .spawn("network", role_command("network-leak"))
        .unwrap();
    let web = broker.spawn("web", role_command("web-leak:1000")).unwrap();
    let mut events = Vec::new();
    // The requester checks its own and the target's counts.
    assert_success(&mut broker, &mut events, web);
    broker.kill(network).unwrap();
    wait_exit(&mut broker, &mut events, network);
    let made = events
        .iter()
        .filter(|e| matches!(e, ferry_handoff::BrokerEvent::IntroductionMade { .. }))
        .count();
    assert!(made >= 1000, "{made} introductions");
    assert_eq!(open_fds(), before, "the broker leaked descriptors");
}

/// More descriptors than the receiver accepts: an error, and every one of
/// them closed, whether they fit the control buffer (no MSG_CTRUNC) or not.
#[test]
fn too_many_descriptors_leaks_nothing() {
    let _counting = COUNTING.lock().unwrap_or_else(|p| p.into_inner());
    let (a, mut b) = Channel::pair().unwrap();
    b.set_max_fds(2);
    let memfds: Vec<OwnedFd> = (0..ferry_handoff::channel::MAX_FDS_PER_MESSAGE)
        .map(|_| rustix::fs::memfd_create("many", rustix::fs::MemfdFlags::CLOEXEC).unwrap())
        .collect();
    let fds: Vec<BorrowedFd<'_>> = memfds.iter().map(AsFd::as_fd).collect();
    let before = open_fds();
    let mut buf = [0u8; 16];
    for round in 0..100 {
        for count in [3, 4, 5, 16, fds.len()] {
            a.send(b"many", &fds[..count]).unwrap();
            match b.recv(&mut buf, Some(Duration::from_secs(5))) {
                Err(RecvError::TooManyDescriptors { max: 2 }) => {}
                other => panic!("round {round}, {count} descriptors: {other:?}"),
            }
        }
    }
    assert_eq!(open_fds(), before);
    // And the channel is still usable.
    a.send(b"ok", &fds[..2]).unwrap();
    assert_eq!(
        b.recv(&mut buf, Some(Duration::from_secs(5)))
            .unwrap()
            .fds
            .len(),
        2
    );
}

/// A child that sends the broker more descriptors than it accepts is cut
/// off, and the broker keeps none of them.
#[test]
fn broker_closes_what_a_misbehaving_child_sends() {
    let _counting = COUNTING.lock().unwrap_or_else(|p| p.into_inner());
    let mut broker = Broker::new(AllowAll).unwrap();
    let before = open_fds();
    for kind in ["too-many-fds", "unexpected-fds", "forged-answer"] {
        let bad = broker
            .spawn("bad", role_command(&format!("garbage:{kind}")))
            .unwrap();
        let mut events = Vec::new();
        wait_exit(&mut broker, &mut events, bad);
    }
    assert_eq!(open_fds(), before);
}
