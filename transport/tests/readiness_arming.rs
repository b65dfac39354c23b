//! Issue 11, hole 8: a blocking wait on an armed connection used to disarm
//! it silently. An event loop arms its connection, then (before it goes back
//! to `epoll_wait`) something receives on that connection with a blocking
//! call, as a nested `send_sync` does. The frames the peer sends meanwhile
//! must still make the readiness descriptor readable: otherwise the event
//! loop sleeps with a frame waiting. The peer is a real second process.

mod support;

use ferry_transport::{ConnectionConfig, WaitStrategy};
use std::os::fd::BorrowedFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::*;

/// The child test: runs the role the parent asked for, or nothing.
#[test]
fn child() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "two-frames-on-cue" => {
            let (mut conn, control) = child_connect();
            let cue = hear(&control);
            assert_eq!(cue, b"go");
            for frame in [&b"first"[..], b"second"] {
                conn.send_frame(frame, Some(OP_TIMEOUT)).expect("send");
            }
            tell(&control, b"sent");
            std::thread::sleep(Duration::from_secs(120));
            panic!("not killed");
        }
        other => panic!("unknown role {other}"),
    }
}

/// Whether `fd` is readable right now.
fn readable(fd: BorrowedFd<'_>) -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&zero)).unwrap() == 1
}

/// Whether thread `tid` of this process is asleep in the kernel.
fn thread_is_sleeping(tid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        return false;
    };
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        == Some("S")
}

#[test]
fn a_blocking_receive_on_an_armed_connection_keeps_it_armed() {
    let config = ConnectionConfig::default().wait(WaitStrategy::Park);
    let (mut conn, peer) = connect_peer("two-frames-on-cue", &config, &[]);
    assert_eq!(conn.arm(), Ok(false), "nothing there yet: armed");

    // The nested blocking receive, on another thread so that this one can
    // see it asleep before cueing the peer.
    let (tid_tx, tid_rx) = mpsc::channel();
    let receiver = std::thread::spawn(move || {
        tid_tx
            .send(rustix::thread::gettid().as_raw_nonzero().get())
            .unwrap();
        let frame = conn.recv_frame(Some(OP_TIMEOUT)).expect("a frame");
        assert_eq!(frame.bytes(), b"first");
        drop(frame);
        conn
    });
    let tid = tid_rx.recv_timeout(OP_TIMEOUT).expect("the receiver's tid");
    let deadline = Instant::now() + OP_TIMEOUT;
    while !thread_is_sleeping(tid) {
        assert!(Instant::now() < deadline, "the receiver never slept");
        std::thread::sleep(Duration::from_millis(1));
    }
    peer.tell(b"go");
    peer.expect_word(b"sent");
    let deadline = Instant::now() + OP_TIMEOUT;
    while !receiver.is_finished() {
        assert!(Instant::now() < deadline, "the blocking receive hangs");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut conn = receiver.join().expect("the receiver");

    // Back in the event loop: the descriptor is readable (the second frame
    // waits), so `epoll_wait` would not sleep on it.
    assert!(
        readable(conn.readiness_fd()),
        "frames sent during the blocking receive signalled the descriptor"
    );
    conn.disarm();
    let frame = conn.try_recv_frame().expect("the second frame");
    assert_eq!(frame.bytes(), b"second");
    drop(frame);
    assert_eq!(conn.arm(), Ok(false), "empty again: armed");
    assert!(!readable(conn.readiness_fd()), "disarm emptied it");
    peer.kill_and_reap();
}
