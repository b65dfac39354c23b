//! A connection split into a sending half and a receiving half on different
//! threads, against a real second process: frames both ways, several sender
//! threads (every message arrives exactly once, each sender's in order), a
//! synchronous call from the sending half (its reply routed by the thread
//! that dispatches), a call nobody routes (bounded by its timeout), and the
//! peer SIGKILLed while both halves and a call wait.

mod support;

use ferry_transport::{CallError, ConnectionConfig, RecvError, Remote, SendError, Trust};
use std::sync::Barrier;
use std::time::{Duration, Instant};
use support::proto::*;
use support::*;

/// Sender threads in the several-senders test, and frames each.
const SENDERS: u64 = 4;
const PER_SENDER: u64 = 2000;
/// Small rings, so senders wait for room.
const RING: usize = 8 * 1024;

/// The child test: runs the role the parent asked for, or nothing.
#[test]
fn child() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "echo" => {
            let (mut conn, _control) = child_connect();
            let mut buf = Vec::new();
            loop {
                match conn.recv_frame(Some(OP_TIMEOUT)) {
                    Ok(frame) => {
                        buf.clear();
                        buf.extend_from_slice(frame.bytes());
                    }
                    Err(RecvError::Disconnected) => return,
                    Err(e) => panic!("echo: {e}"),
                }
                match conn.send_frame(&buf, Some(OP_TIMEOUT)) {
                    Ok(()) => {}
                    Err(SendError::Disconnected) => return,
                    Err(e) => panic!("echo send: {e}"),
                }
            }
        }
        "check-senders" => {
            // Frames are (sender, seq); each sender's must come in order,
            // each exactly once. Reports the verdict as one frame.
            let (mut conn, _control) = child_connect();
            let mut next = vec![0u64; SENDERS as usize];
            let mut verdict = String::from("ok");
            for _ in 0..SENDERS * PER_SENDER {
                let frame = conn.recv_frame(Some(OP_TIMEOUT)).expect("a frame");
                let bytes = frame.bytes();
                let sender = u64::from_le_bytes(bytes[..8].try_into().unwrap());
                let seq = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
                let expected = next.get_mut(sender as usize).expect("a known sender");
                if seq != *expected && verdict == "ok" {
                    verdict = format!("sender {sender}: got {seq}, expected {expected}");
                }
                *expected = seq + 1;
            }
            drop(conn.try_recv_frame().map(|_| {
                verdict = "a frame more than sent".into();
            }));
            conn.send_frame(verdict.as_bytes(), Some(OP_TIMEOUT))
                .expect("the verdict");
            let _ = conn.recv_frame(Some(OP_TIMEOUT));
        }
        "serve" => {
            let (mut conn, _control) = child_connect();
            serve(&mut conn, ServiceImpl::default());
        }
        "never-read" => {
            let (_conn, control) = child_connect();
            tell(&control, b"ready");
            std::thread::sleep(Duration::from_secs(120));
            panic!("not killed");
        }
        other => panic!("unknown role {other}"),
    }
}

fn raw_config() -> ConnectionConfig {
    ConnectionConfig::default()
        .ring_capacity(RING)
        .send_timeout(Some(OP_TIMEOUT))
}

/// The sending half on one thread, the receiving half on another, the peer
/// echoing: every frame comes back intact and in order.
#[test]
fn halves_on_two_threads_echo() {
    let (conn, peer) = connect_peer("echo", &raw_config(), &[]);
    let (sender, mut receiving) = conn.split().unwrap();
    const FRAMES: u64 = 3000;
    let len_of = |seq: u64| (seq as usize * 37) % 3000 + 16;
    let sending = std::thread::spawn(move || {
        for seq in 0..FRAMES {
            sender
                .send_frame(&make_frame(seq, len_of(seq)), Some(OP_TIMEOUT))
                .expect("send from the sending half");
        }
        sender
    });
    let received = bounded("receiving half", OP_TIMEOUT * 4, move || {
        for seq in 0..FRAMES {
            let frame = receiving.recv_frame(Some(OP_TIMEOUT)).expect("an echo");
            check_frame(seq, frame.bytes()).expect("intact, in order");
            assert_eq!(frame.bytes().len(), len_of(seq));
        }
        receiving.stats().frames_received
    });
    assert_eq!(received, FRAMES);
    let sender = sending.join().unwrap();
    drop(sender);
    peer.expect_success();
}

/// Several threads send through clones of one sender at once: the peer
/// gets every frame exactly once, each sender's in the order it sent them.
#[test]
fn several_sender_threads_each_in_order_exactly_once() {
    let (conn, peer) = connect_peer("check-senders", &raw_config(), &[]);
    let (sender, mut receiving) = conn.split().unwrap();
    let start = std::sync::Arc::new(Barrier::new(SENDERS as usize));
    let threads: Vec<_> = (0..SENDERS)
        .map(|id| {
            let sender = sender.clone();
            let start = std::sync::Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                let mut payload = vec![0u8; 64 + id as usize * 100];
                payload[..8].copy_from_slice(&id.to_le_bytes());
                for seq in 0..PER_SENDER {
                    payload[8..16].copy_from_slice(&seq.to_le_bytes());
                    sender
                        .send_frame(&payload, Some(OP_TIMEOUT))
                        .expect("a concurrent send");
                }
            })
        })
        .collect();
    let verdict = bounded("the verdict", OP_TIMEOUT * 4, move || {
        let frame = receiving
            .recv_frame(Some(OP_TIMEOUT * 3))
            .expect("the verdict");
        String::from_utf8_lossy(frame.bytes()).into_owned()
    });
    assert_eq!(verdict, "ok");
    for thread in threads {
        thread.join().unwrap();
    }
    drop(sender);
    peer.expect_success();
}

/// Synchronous calls from the sending half, on several threads, while
/// another thread drives the receiving half: each reply reaches its caller.
/// Then, with nobody driving the receiving half, a call ends with
/// `TimedOut` after its timeout.
#[test]
fn sync_calls_from_the_sending_half() {
    let config = service_config(Trust::Untrusted).ring_capacity(RING);
    let (conn, peer) = connect_peer("serve", &config, &[]);
    let (sender, mut receiving) = conn.split().unwrap();
    let to = Remote::<Service>::new(SERVICE_DESTINATION);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let driver = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                receiving
                    .dispatch(Some(Duration::from_millis(20)))
                    .expect("the receiving half routes replies");
            }
            receiving
        })
    };
    let callers: Vec<_> = (0..3u64)
        .map(|caller| {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for a in 0..200u64 {
                    let sum = sender
                        .send_sync(to, &Add { a, b: caller }, OP_TIMEOUT)
                        .expect("a call from the sending half");
                    assert_eq!(sum.value.to_native(), a + caller);
                }
            })
        })
        .collect();
    for caller in callers {
        caller.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let receiving = driver.join().unwrap();

    // Nobody drives the receiving half now: the reply stays in the ring.
    let started = Instant::now();
    let result = sender.send_sync(to, &Add { a: 1, b: 2 }, Duration::from_millis(200));
    assert_eq!(result.unwrap_err(), CallError::TimedOut);
    assert!(started.elapsed() >= Duration::from_millis(200));
    drop(receiving);
    drop(sender);
    peer.expect_success();
}

/// The peer is SIGKILLed while the sending half waits for room (on one
/// thread), the receiving half waits for a frame (on another) and a third
/// thread waits in a synchronous call: all three see `Disconnected`, long
/// before their 60 s timeouts.
#[test]
fn both_halves_see_the_peer_killed() {
    let config = raw_config();
    let (conn, mut peer) = connect_peer("never-read", &config, &[]);
    peer.expect_word(b"ready");
    let (sender, mut receiving) = conn.split().unwrap();
    while sender.try_send_frame(&[1; 500]).is_ok() {}
    let long = Duration::from_secs(60);
    let blocked_sender = {
        let sender = sender.clone();
        std::thread::spawn(move || sender.send_frame(&[2; 500], Some(long)))
    };
    let blocked_caller = {
        let sender = sender.clone();
        std::thread::spawn(move || {
            sender
                .send_sync(Remote::<Service>::new(1), &Tally {}, long)
                .map(|_| ())
        })
    };
    let blocked_receiver = std::thread::spawn(move || receiving.recv_frame(Some(long)).map(|_| ()));
    std::thread::sleep(Duration::from_millis(100));
    peer.kill();
    let bound = Duration::from_secs(10);
    let sent = bounded("sender", bound, move || blocked_sender.join().unwrap());
    assert_eq!(sent, Err(SendError::Disconnected));
    let received = bounded("receiver", bound, move || blocked_receiver.join().unwrap());
    assert_eq!(received, Err(RecvError::Disconnected));
    let called = bounded("caller", bound, move || blocked_caller.join().unwrap());
    // The call's request could not even be sent (the ring is full), or it
    // waited for its reply: either way the peer's death ends it.
    assert!(
        matches!(
            called,
            Err(CallError::Disconnected | CallError::Send(SendError::Disconnected))
        ),
        "{called:?}"
    );
    assert!(!sender.is_open());
    assert_eq!(sender.try_send_frame(b"late"), Err(SendError::Disconnected));
}
