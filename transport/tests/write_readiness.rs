//! Write readiness across processes: a connection whose ring is full arms
//! for room (`arm_send`), and the peer process that drains the ring makes
//! the readiness descriptor readable; without the arming, draining signals
//! nothing. An event loop waits with `poll(2)` on the descriptor, as an
//! epoll- or mio-based one would.

mod support;

use ferry_transport::{ConnectionConfig, RecvError};
use std::os::fd::BorrowedFd;
use std::time::Duration;
use support::*;

const RING: usize = 4096;
const FRAME: usize = 500;

/// The child test: runs the role the parent asked for, or nothing.
#[test]
fn child() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "drain-on-cue" => {
            // On each "go", receives every frame there is, then says
            // "drained".
            let (mut conn, control) = child_connect();
            loop {
                if hear(&control) != b"go" {
                    panic!("unexpected cue");
                }
                loop {
                    match conn.try_recv_frame() {
                        Ok(frame) => assert_eq!(frame.bytes().len(), FRAME),
                        Err(RecvError::Empty) => break,
                        Err(e) => panic!("drain: {e}"),
                    }
                }
                tell(&control, b"drained");
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// Waits up to `timeout` for `fd` to become readable.
fn readable_within(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let timeout = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    poll(&mut fds, Some(&timeout)).unwrap() == 1
}

#[test]
fn armed_for_room_the_peer_draining_signals_and_unarmed_it_does_not() {
    let config = ConnectionConfig::default().ring_capacity(RING);
    let (mut conn, peer) = connect_peer("drain-on-cue", &config, &[]);

    // Not armed: the ring fills, the peer drains it, nothing is signalled.
    while conn.try_send_frame(&[1; FRAME]).is_ok() {}
    peer.tell(b"go");
    peer.expect_word(b"drained");
    assert!(
        !readable_within(conn.readiness_fd(), Duration::ZERO),
        "signalled without arming"
    );

    // Full and armed: the peer's draining makes the descriptor readable.
    while conn.try_send_frame(&[2; FRAME]).is_ok() {}
    assert_eq!(conn.arm_send(FRAME), Ok(false), "full: armed");
    assert!(!readable_within(conn.readiness_fd(), Duration::ZERO));
    peer.tell(b"go");
    assert!(
        readable_within(conn.readiness_fd(), OP_TIMEOUT),
        "the peer freed room and nothing signalled it"
    );
    peer.expect_word(b"drained");
    conn.disarm_send();
    assert!(!readable_within(conn.readiness_fd(), Duration::ZERO));
    conn.try_send_frame(&[3; FRAME])
        .expect("room after the drain");
    // Room there already: arming says so and waits for nothing.
    assert_eq!(conn.arm_send(FRAME), Ok(true));
    drop(conn);
    let _ = peer.kill_and_reap();
}
