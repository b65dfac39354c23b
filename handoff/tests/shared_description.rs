//! A peer that shares our end's open file description (issue 10, hole 1):
//! it holds a copy of our end of a [`Channel`] (passed to it with
//! `SCM_RIGHTS`, as a hostile creator of a socketpair keeps one), clears
//! `O_NONBLOCK` on it, and never reads. None of our calls may block: a
//! non-blocking send reports `WouldBlock`, timed sends and receives return
//! within their timeouts.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use ferry_handoff::bootstrap::{channel_from_env, spawn_with_channel};
use ferry_handoff::{Channel, RecvError, SendError};
use ferry_testkit::bounded::bounded;
use ferry_testkit::process::{ChildGuard, OP_TIMEOUT, ReExec};
use rustix::fs::OFlags;

const REEXEC: ReExec = ReExec::new("FERRY_SHARED_ROLE", "FERRY_SHARED_");

/// The attacker: takes the two descriptors it is sent (a copy of the
/// victim's end, and the other end, which it never reads), clears
/// `O_NONBLOCK` on the victim's end, says so, and holds both until the
/// victim hangs up the bootstrap channel.
#[test]
fn attacker_role() {
    let Some(role) = REEXEC.role() else {
        return;
    };
    assert_eq!(role, "clear-nonblock");
    let control = channel_from_env().expect("bootstrap channel");
    let mut buf = [0u8; 16];
    let got = control
        .recv(&mut buf, Some(OP_TIMEOUT))
        .expect("descriptors");
    let mut fds = got.fds.into_iter();
    let victims_end: OwnedFd = fds.next().expect("the victim's end");
    let _never_read: OwnedFd = fds.next().expect("the other end");
    let flags = rustix::fs::fcntl_getfl(&victims_end).expect("F_GETFL");
    rustix::fs::fcntl_setfl(&victims_end, flags - OFlags::NONBLOCK).expect("F_SETFL");
    control.send(b"cleared", &[]).expect("report");
    // Hold everything until the victim is done (it closes the channel).
    let _ = control.wait_hangup(Some(OP_TIMEOUT));
}

#[test]
fn a_peer_that_clears_o_nonblock_on_our_end_cannot_block_us() {
    let (ours, theirs) = Channel::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let command = REEXEC.command("attacker_role", "clear-nonblock", &[]);
    let (child, control) = spawn_with_channel(command).expect("spawn the attacker");
    let attacker = ChildGuard::new(child, "clear-nonblock");
    control
        .send(b"fds", &[ours.as_fd(), theirs.as_fd()])
        .expect("hand over the descriptors");
    drop(theirs); // Only the attacker holds the other end now.
    let mut buf = [0u8; 16];
    let got = control
        .recv(&mut buf, Some(OP_TIMEOUT))
        .expect("attacker reports");
    assert_eq!(&buf[..got.len], b"cleared");
    // The attack reached our open file description.
    let flags = rustix::fs::fcntl_getfl(&ours).unwrap();
    assert!(
        !flags.contains(OFlags::NONBLOCK),
        "the test must share the description: O_NONBLOCK is still set"
    );

    // The victim's calls run on a bounded thread: a hang fails the test.
    let (outcome, control) = bounded("victim", OP_TIMEOUT, move || {
        let chunk = vec![7u8; 16 * 1024];
        let mut sent = 0usize;
        let full = loop {
            match ours.send(&chunk, &[]) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 100_000, "the socket buffer never filled");
        };
        assert!(
            matches!(full, SendError::WouldBlock),
            "non-blocking send on a full socket: {full:?}"
        );
        let timeout = Duration::from_millis(50);
        let started = Instant::now();
        let timed = ours.send_timeout(&chunk, &[], timeout);
        let send_took = started.elapsed();
        let started = Instant::now();
        let mut buf = [0u8; 64];
        let received = ours.recv(&mut buf, Some(timeout));
        let recv_took = started.elapsed();
        assert!(matches!(timed, Err(SendError::TimedOut)), "{timed:?}");
        assert!(matches!(received, Err(RecvError::TimedOut)), "{received:?}");
        assert!(matches!(
            ours.try_send(&chunk, &[]),
            Err(SendError::WouldBlock)
        ));
        assert!(ours.try_recv(&mut buf).unwrap().is_none());
        ((sent, send_took, recv_took), control)
    });
    let (sent, send_took, recv_took) = outcome;
    eprintln!(
        "{sent} messages filled the socket; timed send returned after {send_took:?}, \
         timed recv after {recv_took:?} (timeouts 50 ms)"
    );
    drop(control);
    attacker.expect_success();
}
