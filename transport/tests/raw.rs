//! The raw frame API across real processes: self-checking frames of random
//! sizes both ways, back-pressure (`Full`, `TimedOut`), frames written in
//! place, batches, the peer dying or leaving while we block, descriptors
//! (and their hygiene), and the readiness descriptor in an epoll set.

mod support;

use ferry_transport::{Connection, ConnectionConfig, RecvError, SendError, WaitStrategy};
use rustix::event::epoll;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};
use support::*;

/// The child test: runs the role the parent asked for, or nothing.
#[test]
fn child() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "frames" => child_frames(),
        "stalled-reader" => child_stalled_reader(),
        "idle" => child_idle(),
        "send-and-drop" => child_send_and_drop(),
        "stream" => child_stream(),
        "fds" => child_fds(),
        "count-frames" => child_count_frames(),
        "on-demand" => child_on_demand(),
        other => panic!("unknown role {other}"),
    }
}

fn small_ring() -> ConnectionConfig {
    ConnectionConfig::default().ring_capacity(64 * 1024)
}

/// Receives `n` frames numbered from `first` with lengths from `seed`,
/// checking every byte.
fn recv_checked(conn: &mut Connection, seed: u64, first: u64, n: u64, max: usize) {
    let mut sizes = Sizes::messages(seed, max.min(conn.max_inline_payload()));
    for seq in first..first + n {
        let len = sizes.next_len();
        let frame = conn
            .recv_frame(Some(OP_TIMEOUT))
            .unwrap_or_else(|e| panic!("receiving frame {seq}: {e}"));
        assert_eq!(frame.bytes().len(), len, "length of frame {seq}");
        check_frame(seq, frame.bytes()).unwrap();
    }
}

/// Sends `n` frames numbered from `first` with lengths from `seed`.
fn send_checked(conn: &mut Connection, seed: u64, first: u64, n: u64, max: usize) {
    let mut sizes = Sizes::messages(seed, max.min(conn.max_inline_payload()));
    let mut buf = Vec::new();
    for seq in first..first + n {
        buf.resize(sizes.next_len(), 0);
        write_frame(seq, &mut buf);
        conn.send_frame(&buf, Some(OP_TIMEOUT))
            .unwrap_or_else(|e| panic!("sending frame {seq}: {e}"));
    }
}

/// Sends and receives `n` frames each way at the same time, never blocking
/// on one direction while the other could make progress.
fn both_ways(conn: &mut Connection, seed_out: u64, seed_in: u64, first: u64, n: u64) {
    let max = conn.max_inline_payload();
    let mut out_sizes = Sizes::messages(seed_out, max);
    let mut in_sizes = Sizes::messages(seed_in, max);
    let (mut sent, mut received) = (0, 0);
    let mut pending: Option<Vec<u8>> = None;
    let deadline = Instant::now() + OP_TIMEOUT;
    while sent < n || received < n {
        assert!(
            Instant::now() < deadline,
            "both ways: stuck at {sent} sent, {received} received"
        );
        let mut progress = false;
        if sent < n {
            let frame = pending
                .take()
                .unwrap_or_else(|| make_frame(first + sent, out_sizes.next_len()));
            match conn.try_send_frame(&frame) {
                Ok(()) => {
                    sent += 1;
                    progress = true;
                }
                Err(SendError::Full) => pending = Some(frame),
                Err(e) => panic!("sending frame {}: {e}", first + sent),
            }
        }
        if received < n {
            let seq = first + received;
            let wait = if progress {
                None
            } else {
                Some(Duration::from_millis(1))
            };
            let result = match wait {
                None => conn.try_recv_frame(),
                Some(timeout) => conn.recv_frame(Some(timeout)),
            };
            match result {
                Ok(frame) => {
                    assert_eq!(
                        frame.bytes().len(),
                        in_sizes.next_len(),
                        "length of frame {seq}"
                    );
                    check_frame(seq, frame.bytes()).unwrap();
                    received += 1;
                }
                Err(RecvError::Empty | RecvError::TimedOut) => {}
                Err(e) => panic!("receiving frame {seq}: {e}"),
            }
        } else if !progress {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn expect_disconnected(conn: &mut Connection) {
    match conn.recv_frame(Some(OP_TIMEOUT)) {
        Err(RecvError::Disconnected) => {}
        Err(e) => panic!("expected Disconnected, got {e}"),
        Ok(frame) => panic!(
            "expected Disconnected, got a frame of {} bytes",
            frame.bytes().len()
        ),
    }
}

const FRAMES: u64 = 1500;

fn child_frames() {
    let (mut conn, _control) = child_connect();
    recv_checked(&mut conn, 1, 0, FRAMES, usize::MAX);
    send_checked(&mut conn, 2, 10_000, FRAMES, usize::MAX);
    both_ways(&mut conn, 4, 3, 20_000, FRAMES);
    expect_disconnected(&mut conn);
}

/// Frames of random sizes from 0 to the largest inline payload, every byte
/// checked: one way, then the other, then both at once; the ring wraps many
/// times. Both sides see the other's drop as `Disconnected` at the end.
#[test]
fn random_frames_both_ways() {
    let config = small_ring();
    let (mut conn, peer) = connect_peer("frames", &config, &[]);
    send_checked(&mut conn, 1, 0, FRAMES, usize::MAX);
    recv_checked(&mut conn, 2, 10_000, FRAMES, usize::MAX);
    both_ways(&mut conn, 3, 4, 20_000, FRAMES);
    let stats = conn.stats();
    assert_eq!(stats.frames_sent, 2 * FRAMES);
    assert_eq!(stats.frames_received, 2 * FRAMES);
    assert_eq!(stats.out_of_line_sent, 0, "every frame fits the ring");
    drop(conn);
    peer.expect_success();
}

const STALL_FRAME: usize = 1000;

fn parse_count(word: &[u8], prefix: &str) -> u64 {
    let text = std::str::from_utf8(word).expect("utf-8");
    text.strip_prefix(prefix)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected {prefix}<n>, got {text}"))
}

fn child_stalled_reader() {
    let (mut conn, control) = child_connect();
    tell(&control, b"ready");
    // The parent fills the ring while we do not read.
    let k = parse_count(&hear(&control), "drain:");
    for seq in 0..k {
        let frame = conn.recv_frame(Some(OP_TIMEOUT)).expect("a queued frame");
        assert_eq!(frame.bytes().len(), STALL_FRAME);
        check_frame(seq, frame.bytes()).unwrap();
    }
    assert!(
        matches!(conn.try_recv_frame(), Err(RecvError::Empty)),
        "nothing beyond the {k} frames"
    );
    tell(&control, b"drained");
    // Frames written in place.
    let m = parse_count(&hear(&control), "inplace:");
    for seq in 0..m {
        let frame = conn
            .recv_frame(Some(OP_TIMEOUT))
            .expect("an in-place frame");
        assert_eq!(frame.bytes().len(), 64 + seq as usize);
        check_frame(1000 + seq, frame.bytes()).unwrap();
    }
    tell(&control, b"ok");
    // A batch queued before we look: all there, in order, without waiting.
    let b = parse_count(&hear(&control), "batch:");
    for seq in 0..b {
        let frame = conn
            .try_recv_frame()
            .expect("a frame of the batch, already there");
        check_frame(2000 + seq, frame.bytes()).unwrap();
    }
    assert!(matches!(conn.try_recv_frame(), Err(RecvError::Empty)));
    tell(&control, b"ok");
    expect_disconnected(&mut conn);
}

/// Back-pressure: with a peer that does not read, `try_send_frame` fills the
/// ring and then returns `Full`, and `send_frame` with a timeout returns
/// `TimedOut`; nothing is lost, and the frames arrive once the peer reads.
/// Then frames written in place with `reserve_frame`, and a batch queued
/// before the peer looks.
#[test]
fn back_pressure_in_place_and_batches() {
    let config = ConnectionConfig::default().ring_capacity(16 * 1024);
    let (mut conn, peer) = connect_peer("stalled-reader", &config, &[]);
    peer.expect_word(b"ready");
    let mut sent = 0u64;
    loop {
        assert!(
            sent < 1000,
            "a 16 KiB ring took 1000 frames of {STALL_FRAME} bytes"
        );
        match conn.try_send_frame(&make_frame(sent, STALL_FRAME)) {
            Ok(()) => sent += 1,
            Err(SendError::Full) => break,
            Err(e) => panic!("try_send_frame: {e}"),
        }
    }
    assert!(sent > 0, "an empty ring refused a frame");
    assert_eq!(
        conn.send_frame(
            &make_frame(sent, STALL_FRAME),
            Some(Duration::from_millis(20))
        ),
        Err(SendError::TimedOut)
    );
    assert!(matches!(
        conn.reserve_frame(STALL_FRAME, Some(Duration::ZERO)),
        Err(SendError::TimedOut)
    ));
    assert!(
        conn.is_open(),
        "back-pressure does not close the connection"
    );
    peer.tell(format!("drain:{sent}").as_bytes());
    peer.expect_word(b"drained");

    // In place.
    let too_long = conn.max_inline_payload() + 1;
    assert!(matches!(
        conn.reserve_frame(too_long, None),
        Err(SendError::TooLarge { len, max }) if len == too_long && max == too_long - 1
    ));
    let m = 200u64;
    peer.tell(format!("inplace:{m}").as_bytes());
    for seq in 0..m {
        let mut writer = conn
            .reserve_frame(64 + seq as usize, Some(OP_TIMEOUT))
            .expect("reserve_frame");
        write_frame(1000 + seq, &mut writer);
        writer.commit();
    }
    peer.expect_word(b"ok");

    // A batch, all queued before the peer is told.
    let b = 10u64;
    for seq in 0..b {
        conn.try_send_frame(&make_frame(2000 + seq, 100 * seq as usize))
            .expect("room for the batch");
    }
    peer.tell(format!("batch:{b}").as_bytes());
    peer.expect_word(b"ok");
    drop(conn);
    peer.expect_success();
}

fn child_idle() {
    let (_conn, control) = child_connect();
    tell(&control, b"ready");
    // Killed by the parent long before this returns.
    let _ = control.recv(&mut [0u8; 16], Some(Duration::from_secs(120)));
    panic!("the idle child was not killed");
}

/// Kills the peer on another thread, a moment after this call.
fn kill_soon(peer: &Peer) -> std::thread::JoinHandle<()> {
    let kill = peer.killer();
    std::thread::spawn(move || {
        // Only makes it likely that the test thread is blocked by then; the
        // outcome must be the same either way.
        std::thread::sleep(Duration::from_millis(100));
        kill();
    })
}

/// A receive blocked without a timeout ends with `Disconnected` when the
/// peer is SIGKILLed, whether it spins, parks, or both; so do later
/// receives and sends.
#[test]
fn peer_killed_while_blocked_in_recv() {
    for wait in [
        WaitStrategy::Spin,
        WaitStrategy::Park,
        WaitStrategy::default(),
    ] {
        let config = ConnectionConfig::default().wait(wait);
        let (conn, mut peer) = connect_peer("idle", &config, &[]);
        peer.expect_word(b"ready");
        let killer = kill_soon(&peer);
        let (mut conn, outcome) = bounded("recv_frame(None)", OP_TIMEOUT, move || {
            let mut conn = conn;
            let outcome = conn.recv_frame(None).map(|frame| frame.bytes().len());
            (conn, outcome)
        });
        assert_eq!(outcome, Err(RecvError::Disconnected), "{wait:?}");
        assert!(!conn.peer_closed_cleanly(), "a killed peer closes nothing");
        assert!(!conn.is_open());
        assert!(matches!(
            conn.try_recv_frame(),
            Err(RecvError::Disconnected)
        ));
        assert_eq!(conn.send_frame(b"late", None), Err(SendError::Disconnected));
        killer.join().unwrap();
        assert!(!peer.wait_timeout(EXIT_TIMEOUT).success());
    }
}

/// A send blocked without a timeout on a full ring ends with `Disconnected`
/// when the peer is SIGKILLed.
#[test]
fn peer_killed_while_blocked_on_a_full_ring() {
    let config = ConnectionConfig::default().ring_capacity(16 * 1024);
    let (mut conn, mut peer) = connect_peer("idle", &config, &[]);
    peer.expect_word(b"ready");
    let frame = make_frame(0, 500);
    let mut sent = 0;
    while conn.try_send_frame(&frame).is_ok() {
        sent += 1;
        assert!(sent < 1000, "the ring never filled");
    }
    let killer = kill_soon(&peer);
    let (conn, outcome) = bounded("send_frame(None)", OP_TIMEOUT, move || {
        let mut conn = conn;
        let outcome = conn.send_frame(&frame, None);
        (conn, outcome)
    });
    assert_eq!(outcome, Err(SendError::Disconnected));
    assert!(!conn.is_open());
    killer.join().unwrap();
    assert!(!peer.wait_timeout(EXIT_TIMEOUT).success());
}

fn child_send_and_drop() {
    let (mut conn, control) = child_connect();
    let n: u64 = param("N");
    send_checked(&mut conn, param("SEED"), 0, n, param("MAXLEN"));
    drop(conn);
    tell(&control, b"dropped");
}

/// An orderly drop of the peer's connection: every frame it sent is received
/// first, then `Disconnected`. Once with the peer already gone (all frames
/// fit the ring), once reading while it still sends (they do not).
#[test]
fn orderly_drop_delivers_everything_first() {
    // All fit: the peer has exited before we read the first frame.
    let config = ConnectionConfig::default();
    let params = [
        ("N", "300".to_string()),
        ("SEED", "7".to_string()),
        ("MAXLEN", "1024".to_string()),
    ];
    let (mut conn, mut peer) = connect_peer("send-and-drop", &config, &params);
    peer.expect_word(b"dropped");
    assert!(peer.wait_timeout(EXIT_TIMEOUT).success());
    let mut sizes = Sizes::messages(7, 1024);
    let total: usize = (0..300)
        .map(|_| frame_size_estimate(sizes.next_len()))
        .sum();
    assert!(total < config.ring_capacity, "the frames fit the ring");
    recv_checked(&mut conn, 7, 0, 300, 1024);
    expect_disconnected(&mut conn);
    assert!(
        conn.peer_closed_cleanly(),
        "the peer dropped its connection"
    );

    // More than fits: read while the peer sends.
    let config = small_ring();
    let params = [
        ("N", "2000".to_string()),
        ("SEED", "8".to_string()),
        ("MAXLEN", usize::MAX.to_string()),
    ];
    let (mut conn, peer) = connect_peer("send-and-drop", &config, &params);
    recv_checked(&mut conn, 8, 0, 2000, usize::MAX);
    expect_disconnected(&mut conn);
    peer.expect_word(b"dropped");
    peer.expect_success();
}

/// Upper bound of the ring bytes a frame of `len` payload bytes takes.
fn frame_size_estimate(len: usize) -> usize {
    16 + (ferry_transport::wire::ENVELOPE_SIZE + len).next_multiple_of(16)
}

fn child_stream() {
    let (mut conn, control) = child_connect();
    tell(&control, b"ready");
    let mut sizes = Sizes::messages(param("SEED"), conn.max_inline_payload().min(8192));
    let deadline = Instant::now() + Duration::from_secs(120);
    for seq in 0.. {
        assert!(
            Instant::now() < deadline,
            "the streaming child was not killed"
        );
        let frame = make_frame(seq, sizes.next_len());
        conn.send_frame(&frame, Some(OP_TIMEOUT))
            .expect("streaming");
    }
}

/// SIGKILL at a random point of a stream: every frame received is intact,
/// and the receiver then sees `Disconnected`, without hanging.
#[test]
fn peer_killed_mid_stream() {
    let seed = fastrand::u64(..);
    let kill_after = fastrand::u64(1..3000);
    eprintln!("peer_killed_mid_stream: seed {seed}, kill after {kill_after} frames");
    let config = small_ring();
    let params = [("SEED", seed.to_string())];
    let (mut conn, mut peer) = connect_peer("stream", &config, &params);
    peer.expect_word(b"ready");
    let mut sizes = Sizes::messages(seed, conn.max_inline_payload().min(8192));
    let deadline = Instant::now() + OP_TIMEOUT;
    let mut seq = 0u64;
    loop {
        assert!(
            Instant::now() < deadline,
            "no Disconnected after {seq} frames"
        );
        if seq == kill_after {
            peer.kill();
        }
        match conn.recv_frame(Some(OP_TIMEOUT)) {
            Ok(frame) => {
                assert_eq!(
                    frame.bytes().len(),
                    sizes.next_len(),
                    "length of frame {seq}"
                );
                check_frame(seq, frame.bytes()).unwrap();
                seq += 1;
            }
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("after {seq} frames: {e}"),
        }
    }
    assert!(
        seq >= kill_after,
        "Disconnected before the kill, after {seq} frames"
    );
    assert!(!peer.wait_timeout(EXIT_TIMEOUT).success());
}

// ---------------------------------------------------------------------------
// Descriptors.

const FD_FRAMES: u64 = 1000;
const MEMFD_TEXT: &[u8] = b"read through a passed memfd";

fn memfd_with(text: &[u8]) -> OwnedFd {
    let fd = rustix::fs::memfd_create("ferry-test", rustix::fs::MemfdFlags::CLOEXEC)
        .expect("memfd_create");
    let mut file = std::fs::File::from(fd);
    file.write_all(text).expect("write");
    OwnedFd::from(file)
}

fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe")
}

/// Sends `FD_FRAMES` frames each carrying a memfd and a pipe's read end,
/// after writing the frame's number into the pipe.
fn send_with_fds(conn: &mut Connection) {
    let memfd = memfd_with(MEMFD_TEXT);
    let (read, write) = pipe();
    for seq in 0..FD_FRAMES {
        rustix::io::write(&write, &[seq as u8]).expect("write to the pipe");
        let frame = make_frame(seq, 24);
        conn.send_frame_with_fds(&frame, &[memfd.as_fd(), read.as_fd()], Some(OP_TIMEOUT))
            .unwrap_or_else(|e| panic!("sending frame {seq} with descriptors: {e}"));
    }
}

/// Receives what `send_with_fds` sent and reads through each descriptor.
fn recv_with_fds(conn: &mut Connection) {
    for seq in 0..FD_FRAMES {
        let mut frame = conn
            .recv_frame(Some(OP_TIMEOUT))
            .expect("a frame with descriptors");
        check_frame(seq, frame.bytes()).unwrap();
        assert_eq!(frame.envelope().fd_count, 2);
        let fds = frame.take_fds();
        assert_eq!(fds.len(), 2, "frame {seq} carries two descriptors");
        let mut text = vec![0u8; MEMFD_TEXT.len()];
        let n = rustix::io::pread(&fds[0], &mut text, 0).expect("pread the memfd");
        assert_eq!(&text[..n], MEMFD_TEXT);
        let mut byte = [0u8; 1];
        assert_eq!(
            rustix::io::read(&fds[1], &mut byte).expect("read the pipe"),
            1
        );
        assert_eq!(byte[0], seq as u8, "the pipe delivers frame {seq}'s byte");
    }
}

fn child_fds() {
    let (mut conn, control) = child_connect();
    // Connection and its threads are up: count from here.
    let before = open_fd_count();
    recv_with_fds(&mut conn);
    let after_receiving = open_fd_count();
    assert_eq!(
        before, after_receiving,
        "descriptors leaked receiving {FD_FRAMES} frames"
    );
    assert_eq!(conn.stats().fds_received, 2 * FD_FRAMES);
    tell(&control, b"received");
    send_with_fds(&mut conn);
    let after_sending = open_fd_count();
    assert_eq!(
        before, after_sending,
        "descriptors leaked sending {FD_FRAMES} frames"
    );
    assert_eq!(conn.stats().fds_sent, 2 * FD_FRAMES);
    // Over the limit: refused before anything is sent.
    let memfd = memfd_with(b"x");
    let max = conn.config().max_fds_per_message;
    let too_many: Vec<BorrowedFd<'_>> = (0..=max).map(|_| memfd.as_fd()).collect();
    assert_eq!(
        conn.send_frame_with_fds(b"too many", &too_many, Some(OP_TIMEOUT)),
        Err(SendError::TooManyFds {
            count: max + 1,
            max
        })
    );
    drop(too_many);
    drop(memfd);
    assert_eq!(open_fd_count(), before);
    conn.send_frame(b"still open", Some(OP_TIMEOUT))
        .expect("the connection survives a refusal");
    tell(&control, b"sent");
    // Out-of-line frames: a memfd and a mapping each, all given back.
    assert_eq!(blob_mappings(), 0);
    recv_out_of_line(&mut conn);
    assert_eq!(
        open_fd_count(),
        before,
        "descriptors leaked receiving out-of-line frames"
    );
    assert_eq!(blob_mappings(), 0, "blob mappings leaked receiving");
    send_out_of_line(&mut conn);
    assert_eq!(
        open_fd_count(),
        before,
        "descriptors leaked sending out-of-line frames"
    );
    assert_eq!(blob_mappings(), 0, "blob mappings leaked sending");
    tell(&control, b"out-of-line");
    expect_disconnected(&mut conn);
}

const OUT_OF_LINE_FRAMES: u64 = 200;

/// Mappings of out-of-line blobs in this process.
fn blob_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps")
        .lines()
        .filter(|line| line.contains("ferry-blob"))
        .count()
}

fn send_out_of_line(conn: &mut Connection) {
    let len = conn.max_inline_payload() + 100;
    for seq in 0..OUT_OF_LINE_FRAMES {
        conn.send_frame(&make_frame(seq, len), Some(OP_TIMEOUT))
            .expect("an out-of-line frame");
    }
}

fn recv_out_of_line(conn: &mut Connection) {
    let len = conn.max_inline_payload() + 100;
    let before = conn.stats().out_of_line_received;
    for seq in 0..OUT_OF_LINE_FRAMES {
        let frame = conn
            .recv_frame(Some(OP_TIMEOUT))
            .expect("an out-of-line frame");
        assert_eq!(frame.bytes().len(), len);
        check_frame(seq, frame.bytes()).unwrap();
    }
    assert_eq!(
        conn.stats().out_of_line_received - before,
        OUT_OF_LINE_FRAMES
    );
}

/// Descriptors travel with their frames and the receiver reads through them
/// (a memfd's contents, a pipe's bytes); 1000 frames each way with two
/// descriptors, and 200 out-of-line frames each way, leave the descriptor
/// count and the blob mappings of both processes unchanged (each counted in
/// the child, whose descriptors no other test touches); more than
/// `max_fds_per_message` descriptors are refused with `TooManyFds`.
#[test]
fn descriptors_travel_and_do_not_leak() {
    let config = ConnectionConfig::default().ring_capacity(16 * 1024);
    let (mut conn, peer) = connect_peer("fds", &config, &[]);
    send_with_fds(&mut conn);
    peer.expect_word(b"received");
    recv_with_fds(&mut conn);
    peer.expect_word(b"sent");
    let frame = conn
        .recv_frame(Some(OP_TIMEOUT))
        .expect("the frame after the refusal");
    assert_eq!(frame.bytes(), b"still open");
    assert_eq!(frame.envelope().fd_count, 0);
    drop(frame);
    // And here, on the parent's side, typed and raw.
    let memfd = memfd_with(b"x");
    let max = conn.config().max_fds_per_message;
    let too_many: Vec<BorrowedFd<'_>> = (0..=max).map(|_| memfd.as_fd()).collect();
    assert_eq!(
        conn.send_frame_with_fds(b"too many", &too_many, None),
        Err(SendError::TooManyFds {
            count: max + 1,
            max
        })
    );
    send_out_of_line(&mut conn);
    recv_out_of_line(&mut conn);
    peer.expect_word(b"out-of-line");
    drop(conn);
    peer.expect_success();
}

fn child_count_frames() {
    let (mut conn, control) = child_connect();
    let mut count = 0u64;
    loop {
        match conn.recv_frame(Some(OP_TIMEOUT)) {
            Ok(_) => count += 1,
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("{e}"),
        }
    }
    tell(&control, format!("count:{count}").as_bytes());
}

/// A connection whose descriptor limit is lowered refuses one descriptor
/// more, on both ends' terms, and the peer receives nothing for it.
#[test]
fn too_many_fds_sends_nothing() {
    let config = ConnectionConfig::default().max_fds_per_message(3);
    let (mut conn, peer) = connect_peer("count-frames", &config, &[]);
    let memfd = memfd_with(b"x");
    let fds: Vec<BorrowedFd<'_>> = (0..4).map(|_| memfd.as_fd()).collect();
    assert_eq!(
        conn.send_frame_with_fds(b"four", &fds, None),
        Err(SendError::TooManyFds { count: 4, max: 3 })
    );
    conn.send_frame_with_fds(b"three", &fds[..3], None)
        .expect("three descriptors");
    drop(conn);
    assert_eq!(parse_count(&peer.hear(), "count:"), 1);
    peer.expect_success();
}

/// `stats().frames_sent` counts the frames the peer receives: not a
/// `reserve_frame` that timed out, nor a `FrameWriter` dropped without
/// being committed.
#[test]
fn frames_sent_counts_only_committed_frames() {
    let config = ConnectionConfig::default().ring_capacity(16 * 1024);
    let (mut conn, peer) = connect_peer("count-frames", &config, &[]);
    {
        // Abandoned: nothing is sent.
        let _writer = conn.reserve_frame(100, Some(OP_TIMEOUT)).expect("reserve");
    }
    let mut writer = conn.reserve_frame(100, Some(OP_TIMEOUT)).expect("reserve");
    writer.fill(1);
    writer.commit();
    let too_big = conn.max_inline_payload() - 64;
    let mut sent = 1;
    while conn.try_send_frame(&vec![0u8; too_big / 4]).is_ok() {
        sent += 1;
    }
    assert!(matches!(
        conn.reserve_frame(too_big, Some(Duration::ZERO)),
        Err(SendError::TimedOut)
    ));
    assert_eq!(conn.stats().frames_sent, sent, "frames sent, as counted");
    drop(conn);
    assert_eq!(
        parse_count(&peer.hear(), "count:"),
        sent,
        "frames the peer received"
    );
    peer.expect_success();
}

// ---------------------------------------------------------------------------
// Readiness.

fn child_on_demand() {
    let (mut conn, control) = child_connect();
    loop {
        let word = hear(&control);
        if word == b"hold" {
            // Killed while holding.
            let _ = control.recv(&mut [0u8; 16], Some(Duration::from_secs(120)));
            panic!("the child was not killed");
        }
        let seq = parse_count(&word, "send:");
        conn.send_frame(&make_frame(seq, 100), Some(OP_TIMEOUT))
            .expect("send");
        tell(&control, b"sent");
    }
}

/// Waits for `epoll` for at most `timeout`; returns the number of events.
fn epoll_wait(epoll: &OwnedFd, timeout: Duration) -> usize {
    let mut events = Vec::with_capacity(4);
    let timeout = rustix::time::Timespec::try_from(timeout).expect("a timespec");
    loop {
        events.clear();
        match epoll::wait(
            epoll,
            rustix::buffer::spare_capacity(&mut events),
            Some(&timeout),
        ) {
            Ok(n) => return n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => panic!("epoll_wait: {e}"),
        }
    }
}

/// `readiness_fd` in an epoll set: readable when the peer sends while armed,
/// not signalled while disarmed (`arm` then reports the waiting frame), and
/// readable when the peer dies while armed.
#[test]
fn readiness_fd_in_epoll() {
    let config = ConnectionConfig::default().wait(WaitStrategy::Park);
    let (mut conn, mut peer) = connect_peer("on-demand", &config, &[]);
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll_create");
    epoll::add(
        &epoll,
        conn.readiness_fd(),
        epoll::EventData::new_u64(1),
        epoll::EventFlags::IN,
    )
    .expect("epoll_ctl");
    for seq in 0..20 {
        assert_eq!(conn.arm(), Ok(false), "nothing to read before frame {seq}");
        assert_eq!(
            epoll_wait(&epoll, Duration::ZERO),
            0,
            "armed, nothing sent: not readable"
        );
        peer.tell(format!("send:{seq}").as_bytes());
        peer.expect_word(b"sent");
        assert_eq!(
            epoll_wait(&epoll, OP_TIMEOUT),
            1,
            "frame {seq} makes the descriptor readable"
        );
        conn.disarm();
        assert_eq!(
            epoll_wait(&epoll, Duration::ZERO),
            0,
            "disarm empties the descriptor"
        );
        let frame = conn.try_recv_frame().expect("the frame that woke us");
        check_frame(seq, frame.bytes()).unwrap();
        drop(frame);
        assert!(matches!(conn.try_recv_frame(), Err(RecvError::Empty)));
    }
    // Disarmed: a frame arrives without a signal; arm reports it.
    peer.tell(b"send:20");
    peer.expect_word(b"sent");
    assert_eq!(
        epoll_wait(&epoll, Duration::ZERO),
        0,
        "disarmed: not signalled"
    );
    assert_eq!(conn.arm(), Ok(true), "arm sees the waiting frame");
    conn.disarm();
    check_frame(20, conn.try_recv_frame().expect("frame 20").bytes()).unwrap();
    // The peer dies while we are armed.
    peer.tell(b"hold");
    assert_eq!(conn.arm(), Ok(false));
    peer.kill();
    assert_eq!(
        epoll_wait(&epoll, OP_TIMEOUT),
        1,
        "the peer's death makes the descriptor readable"
    );
    conn.disarm();
    assert!(matches!(
        conn.try_recv_frame(),
        Err(RecvError::Disconnected)
    ));
    assert_eq!(conn.arm(), Err(RecvError::Disconnected));
    assert!(!peer.wait_timeout(EXIT_TIMEOUT).success());
}

/// Frames committed with `commit_deferred` reach the peer only with the
/// flush that publishes them together (in one process: the point is the
/// API; batches cross processes in the ring's own tests).
#[test]
fn deferred_frames_are_published_by_flush() {
    let (mut a, mut b) = Connection::pair(ConnectionConfig::default()).expect("pair");
    for i in 0..10u8 {
        let mut frame = a.reserve_frame(1, Some(OP_TIMEOUT)).expect("room");
        frame[0] = i;
        frame.commit_deferred();
    }
    assert!(
        matches!(b.try_recv_frame(), Err(RecvError::Empty)),
        "nothing before the flush"
    );
    a.flush();
    for i in 0..10u8 {
        assert_eq!(b.try_recv_frame().expect("a frame").bytes(), [i]);
    }
    assert_eq!(a.stats().tx_ring.wakes, 0, "the peer never slept");
}
