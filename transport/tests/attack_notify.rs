//! Issue 10, hole 1: blocking I/O on descriptors a peer shares.
//!
//! The attacker is the *creator* of the connection, a real second process:
//! it keeps a copy of the notification descriptor it hands us (so it shares
//! the open file description of our own end), clears `O_NONBLOCK` on every
//! descriptor it holds, fills the notification queues in both directions
//! and keeps arming so that every send of ours tries to signal it. With the
//! eventfds of before, the victim's `try_send_frame` (the signal), `disarm`
//! (the read) and the process-wide hang-up watcher (the signal when the
//! peer dies) blocked forever; the last one also left every other
//! connection of the process deaf to its peer's death.
//!
//! Here the victim's sends, armings and disarmings return; when the
//! attacker is killed the attacked connection reports `Disconnected`; and a
//! bystander connection whose peer is SIGKILLed afterwards still gets
//! `Disconnected` within a bounded wait. Every wait is bounded.
//!
//! Also: a connection whose "notification descriptor" is not an `AF_UNIX`
//! datagram socket is refused at open.

mod support;

use ferry_handoff::Channel;
use ferry_testkit::process::ChildGuard;
use ferry_transport::{
    Connection, ConnectionConfig, ENDPOINT_FDS, EndpointError, OpenError, RecvError, SendError,
};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};
use support::*;

/// How long the victim may take to see a peer's death. Generous (the
/// machine is shared); it only bounds bugs.
const DISCONNECT_BOUND: Duration = Duration::from_secs(20);
/// Frames the victim sends while attacked (many times the ring).
const FRAMES: u32 = 2000;
/// Index of the notification descriptor in an endpoint.
const NOTIFY_FD: usize = ENDPOINT_FDS - 1;

/// The child test: runs the role the parent asked for, or nothing.
#[test]
fn child() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "attacker" => attacker(),
        "bystander" => bystander(),
        other => panic!("unknown role {other}"),
    }
}

fn config() -> ConnectionConfig {
    ConnectionConfig::default().ring_capacity(16 * 1024)
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

/// Sends one-byte datagrams on `fd`, without blocking, until the queue of
/// its peer is full.
fn fill(fd: BorrowedFd<'_>) {
    for _ in 0..1_000_000 {
        if rustix::net::send(fd, &[7], rustix::net::SendFlags::DONTWAIT).is_err() {
            return;
        }
    }
    panic!("a socket queue that never fills");
}

/// Clears `O_NONBLOCK` on every descriptor of this process; returns how
/// many it changed.
fn clear_nonblock_everywhere() -> usize {
    let mut changed = 0;
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let Ok(raw) = entry
            .expect("an entry")
            .file_name()
            .to_string_lossy()
            .parse::<i32>()
        else {
            continue;
        };
        // SAFETY: borrowed only for these two fcntl calls; a number that
        // is no longer open (the directory's own descriptor) just fails.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        if let Ok(flags) = rustix::fs::fcntl_getfl(fd) {
            if flags.contains(rustix::fs::OFlags::NONBLOCK)
                && rustix::fs::fcntl_setfl(fd, flags - rustix::fs::OFlags::NONBLOCK).is_ok()
            {
                changed += 1;
            }
        }
    }
    changed
}

/// The hostile creator: creates the connection, keeps a copy of the
/// victim's notification end, sends the endpoint, then attacks until
/// killed.
fn attacker() {
    let control = child_control();
    let (mut conn, endpoint) = Connection::create(config_from_params()).expect("create");
    let victims_end: OwnedFd = dup(&endpoint.fds[NOTIFY_FD]);
    send_endpoint(&control, endpoint);
    let changed = clear_nonblock_everywhere();
    assert!(changed >= 2, "only {changed} descriptors were non-blocking");
    // Our signals fill the victim's queue; signals "from the victim" (sent
    // on our copy of its end) fill ours.
    fill(conn.readiness_fd());
    fill(victims_end.as_fd());
    // Armed: every publish of the victim tries to signal us.
    let _ = conn.arm();
    tell(&control, b"ready");
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "attacker not killed"
        );
        // Read what the victim sends (so its sends find room), re-arm with
        // a new announcement, keep both queues full.
        while let Ok(frame) = conn.try_recv_frame() {
            drop(frame);
        }
        let _ = conn.arm();
        fill(conn.readiness_fd());
        fill(victims_end.as_fd());
        std::thread::yield_now();
    }
}

/// An honest peer that only waits to be killed.
fn bystander() {
    let (_conn, control) = child_connect();
    tell(&control, b"ready");
    std::thread::sleep(Duration::from_secs(120));
    panic!("bystander not killed");
}

/// Spawns `role` with a control channel, the child guarded.
fn spawn(role: &str, params: &[(&str, String)]) -> (ChildGuard, Channel) {
    let (child, control) =
        ferry_handoff::bootstrap::spawn_with_channel(child_command(role, params))
            .expect("spawning the helper process");
    (ChildGuard::new(child, role), control)
}

/// Receives a control message and checks it is `expected`.
fn expect_word(control: &Channel, expected: &[u8]) {
    assert_eq!(hear(control), expected, "unexpected control message");
}

#[test]
fn a_creator_that_blocks_and_fills_the_notification_socket_cannot_hang_us() {
    let config = config();
    // The bystander: a connection we created, its peer honest.
    let (mut bystander_conn, mut bystander) = connect_peer("bystander", &config, &[]);
    bystander.expect_word(b"ready");

    // The attacked connection: the attacker created it.
    let (mut attacker, control) = spawn("attacker", &config_params(&config));
    let endpoint = recv_endpoint(&control);
    let attacked = Connection::open(endpoint, config.clone()).expect("open");
    expect_word(&control, b"ready");
    let notify_flags = rustix::fs::fcntl_getfl(attacked.readiness_fd()).unwrap();
    assert!(
        !notify_flags.contains(rustix::fs::OFlags::NONBLOCK),
        "the attacker cleared O_NONBLOCK on our end"
    );

    // Everything we do on the attacked connection returns.
    let mut attacked = bounded("victim", Duration::from_secs(120), move || {
        let mut attacked = attacked;
        let mut sent = 0u32;
        let mut full = 0u32;
        let started = Instant::now();
        for attempt in 0u64.. {
            // At least FRAMES, and on until the attacker's armings made us
            // signal it more than once (on a loaded machine the attacker
            // may drain the ring only now and then), within a minute.
            let signalled = attacked.stats().tx_ring.wakes > 1;
            if sent >= FRAMES && (signalled || started.elapsed() > Duration::from_secs(60)) {
                break;
            }
            match attacked.try_send_frame(&sent.to_le_bytes()) {
                Ok(()) => sent += 1,
                // The attacker reads (and re-arms) at its own pace.
                Err(SendError::Full) => {
                    full += 1;
                    std::thread::yield_now();
                }
                Err(e) => panic!("frame {sent}: {e}"),
            }
            if attempt % 64 == 0 {
                // Armed or not (the attacker sends nothing), then disarmed:
                // the disarm drains our end, which the attacker keeps full
                // and blocking.
                let _ = attacked.arm().expect("arm");
                attacked.disarm();
            }
        }
        eprintln!("victim: {sent} frames sent, {full} times full");
        attacked
    });
    let wakes = attacked.stats().tx_ring.wakes;
    // Each time the attacker emptied the ring it had armed anew: more than
    // one of our sends signalled its full, blocking socket.
    assert!(wakes > 1, "the attacker's armings made us signal it");
    eprintln!("victim: {wakes} signals into the attacker's full socket");

    // The attacker dies: the hang-up watcher marks the attacked connection
    // (whose notification socket the attacker filled and made blocking).
    attacker.kill();
    attacker.wait_timeout(EXIT_TIMEOUT);
    let deadline = Instant::now() + DISCONNECT_BOUND;
    loop {
        match attacked.try_recv_frame() {
            Err(RecvError::Disconnected) => break,
            Ok(frame) => panic!("the attacker sent {} bytes", frame.bytes().len()),
            Err(RecvError::Empty) => {}
            Err(e) => panic!("attacked connection: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "the attacker's death went unnoticed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        readable(attacked.readiness_fd()),
        "the death made the readiness descriptor readable"
    );
    assert_eq!(attacked.arm(), Err(RecvError::Disconnected));

    // The watcher still works for every other connection of the process.
    bystander.kill();
    let killed = Instant::now();
    bystander.wait_timeout(EXIT_TIMEOUT);
    let outcome = bounded("bystander", DISCONNECT_BOUND * 2, move || {
        bystander_conn
            .recv_frame(Some(DISCONNECT_BOUND))
            .map(|frame| frame.bytes().len())
    });
    assert_eq!(outcome, Err(RecvError::Disconnected));
    eprintln!(
        "bystander: Disconnected {:?} after its peer's SIGKILL",
        killed.elapsed()
    );
}

/// A creator that hands us anything but an `AF_UNIX` datagram socket as
/// our notification descriptor gets the open refused with a clear error.
#[test]
fn a_notification_descriptor_that_is_not_a_datagram_socket_is_refused() {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
    let (pipe_read, _pipe_write) = rustix::pipe::pipe().unwrap();
    let eventfd = rustix::event::eventfd(0, rustix::event::EventfdFlags::empty()).unwrap();
    let (stream, _stream_peer) = socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::empty(),
        None,
    )
    .unwrap();
    for (what, fd) in [
        ("a pipe", pipe_read),
        ("an eventfd", eventfd),
        ("a stream socket", stream),
    ] {
        let (_creator, mut endpoint) = Connection::create(config()).expect("create");
        endpoint.fds[NOTIFY_FD] = fd;
        match Connection::open(endpoint, config()) {
            Err(OpenError::Endpoint(EndpointError::Notification(reason))) => {
                eprintln!("{what}: {reason}")
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}
