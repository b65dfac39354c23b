//! The soak: self-checking messages of random sizes (0 to the largest
//! inline payload) from this process to a child through a
//! `ferry_transport::Connection`, in each wait mode — spin, park and hybrid
//! (`WaitStrategy::default()`, spinning for a few microseconds before it
//! parks) — plus a typed soak. The receiver checks every message against
//! its sequence number (length, every byte, the embedded sequence number and
//! checksum), so a lost, reordered, duplicated or corrupted message fails
//! it; at the end it acknowledges the count, the bytes and a digest of what
//! it received, which the sender compares with what it sent.
//!
//! `FERRY_SOAK_MESSAGES` sets the messages per mode (default 200 000, a few
//! seconds in a debug build). The full soak is 10^7 per mode, in release:
//!
//! ```text
//! FERRY_SOAK_MESSAGES=10000000 cargo test --release -p ferry-transport \
//!     --test soak -- --nocapture --test-threads=1
//! ```
//!
//! The soaks take a lock, so they run one at a time: two spinning processes
//! per soak are already more than a busy two-core machine has.

mod support;

use ferry_transport::{ConnectionConfig, RecvError, Remote, Trust, WaitStrategy};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::proto::*;
use support::*;

/// Each direction's ring. Its largest inline payload (32 KiB less a frame
/// header and an envelope) bounds the message sizes; with the sizes
/// `Sizes` draws, messages average about 1.7 KiB.
const RING: usize = 64 * 1024;

/// One soak at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The child test: runs the role the parent asked for, or nothing.
#[test]
fn child() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "receiver" => receiver(),
        "service" => {
            let (mut conn, _control) = child_connect();
            serve(&mut conn, ServiceImpl::default());
        }
        other => panic!("unknown role {other}"),
    }
}

/// Messages per mode: `FERRY_SOAK_MESSAGES`, by default 200 000.
fn messages() -> u64 {
    std::env::var("FERRY_SOAK_MESSAGES")
        .ok()
        .map(|n| n.parse().expect("FERRY_SOAK_MESSAGES is a number"))
        .unwrap_or(200_000)
}

/// Both processes busy-poll.
#[test]
fn soak_spin() {
    soak(WaitStrategy::Spin, 0x50A4_0001);
}

/// Both processes sleep on the futex whenever they wait.
#[test]
fn soak_park() {
    soak(WaitStrategy::Park, 0x50A4_0002);
}

/// Both processes spin briefly, then park (the default).
#[test]
fn soak_hybrid() {
    soak(WaitStrategy::default(), 0x50A4_0003);
}

/// What both ends fold every message into: its length and its first 16
/// bytes (the sequence number and the checksum of the rest, or the whole
/// message when shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Digest {
    count: u64,
    bytes: u64,
    hash: u64,
}

impl Digest {
    fn new() -> Digest {
        Digest {
            count: 0,
            bytes: 0,
            hash: 0xCBF2_9CE4_8422_2325,
        }
    }

    fn add(&mut self, message: &[u8]) {
        let mut head = [0u8; 16];
        let n = message.len().min(16);
        head[..n].copy_from_slice(&message[..n]);
        for word in [
            message.len() as u64,
            u64::from_le_bytes(head[..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(head[8..].try_into().expect("8 bytes")),
        ] {
            self.hash = (self.hash ^ word)
                .wrapping_mul(0x0000_0100_0000_01B3)
                .rotate_left(29);
        }
        self.count += 1;
        self.bytes += message.len() as u64;
    }

    fn encode(&self) -> Vec<u8> {
        [self.count, self.bytes, self.hash]
            .iter()
            .flat_map(|word| word.to_le_bytes())
            .collect()
    }

    fn decode(bytes: &[u8]) -> Digest {
        assert_eq!(bytes.len(), 24, "an acknowledgement is 24 bytes");
        let word = |i: usize| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().expect("8"));
        Digest {
            count: word(0),
            bytes: word(1),
            hash: word(2),
        }
    }
}

/// Sends `messages()` self-checking frames to a receiver child waiting with
/// `wait`; half are written in place (`reserve_frame`), half copied
/// (`send_frame`). Requires the receiver's acknowledgement to match.
fn soak(wait: WaitStrategy, seed: u64) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let n = messages();
    let config = ConnectionConfig::default().ring_capacity(RING).wait(wait);
    let params = [("SEED", seed.to_string()), ("N", n.to_string())];
    let (mut conn, peer) = connect_peer("receiver", &config, &params);
    let mut sizes = Sizes::messages(seed, conn.max_inline_payload());
    let mut sent = Digest::new();
    let mut buf = Vec::with_capacity(conn.max_inline_payload());
    let started = Instant::now();
    for seq in 0..n {
        let len = sizes.next_len();
        if seq % 2 == 0 {
            let mut writer = conn
                .reserve_frame(len, Some(OP_TIMEOUT))
                .unwrap_or_else(|e| panic!("{wait:?}: reserving message {seq}: {e}"));
            write_frame(seq, &mut writer);
            sent.add(&writer);
            writer.commit();
        } else {
            buf.resize(len, 0);
            write_frame(seq, &mut buf);
            sent.add(&buf);
            conn.send_frame(&buf, Some(OP_TIMEOUT))
                .unwrap_or_else(|e| panic!("{wait:?}: sending message {seq}: {e}"));
        }
    }
    let acknowledged = match conn.recv_frame(Some(OP_TIMEOUT)) {
        Ok(frame) => Digest::decode(frame.bytes()),
        Err(e) => panic!("{wait:?}: no acknowledgement ({e}); the receiver's stderr is above"),
    };
    let elapsed = started.elapsed();
    assert_eq!(
        acknowledged, sent,
        "{wait:?}: the receiver acknowledged other messages than were sent"
    );
    let stats = conn.stats();
    assert_eq!(stats.frames_sent, n);
    assert_eq!(stats.out_of_line_sent, 0, "every message fits the ring");
    drop(conn);
    peer.expect_success();
    report(&format!("{wait:?}"), n, sent.bytes, elapsed);
    eprintln!("  sender's ring: {:?}", stats.tx_ring);
}

fn report(what: &str, n: u64, bytes: u64, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    eprintln!(
        "soak {what}: {n} messages, {:.1} MiB, none lost, reordered or duplicated, in {elapsed:.2?}: \
         {:.0} messages/s, {:.1} MiB/s",
        bytes as f64 / (1 << 20) as f64,
        n as f64 / secs,
        bytes as f64 / (1 << 20) as f64 / secs
    );
}

/// The receiver: checks every message, acknowledges what it received, then
/// requires that nothing else arrives before the sender leaves.
fn receiver() {
    let (mut conn, _control) = child_connect();
    let seed: u64 = param("SEED");
    let n: u64 = param("N");
    let mut sizes = Sizes::messages(seed, conn.max_inline_payload());
    let mut received = Digest::new();
    for seq in 0..n {
        let frame = conn
            .recv_frame(Some(OP_TIMEOUT))
            .unwrap_or_else(|e| panic!("receiving message {seq} of {n}: {e}"));
        let bytes = frame.bytes();
        let len = sizes.next_len();
        assert_eq!(
            bytes.len(),
            len,
            "message {seq} has the length of another: lost, reordered or duplicated"
        );
        if let Err(e) = check_frame(seq, bytes) {
            panic!("{e}: lost, reordered, duplicated or corrupted");
        }
        received.add(bytes);
    }
    assert!(
        matches!(conn.try_recv_frame(), Err(RecvError::Empty)),
        "a message beyond the {n} sent"
    );
    conn.send_frame(&received.encode(), Some(OP_TIMEOUT))
        .expect("sending the acknowledgement");
    match conn.recv_frame(Some(OP_TIMEOUT)) {
        Err(RecvError::Disconnected) => {}
        Err(e) => panic!("after the acknowledgement: {e}"),
        Ok(frame) => panic!(
            "a message of {} bytes beyond the {n} sent",
            frame.bytes().len()
        ),
    }
}

/// Typed messages: `messages()` notes (a sequence number, text of 0 to 299
/// bytes, a checksum), then a synchronous tally; the service counts them
/// and checks each one's sequence number and checksum. Hybrid waiting, an
/// untrusted peer (every message copied out and validated).
#[test]
fn soak_typed() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let n = messages();
    let config = service_config(Trust::Untrusted).ring_capacity(RING);
    let (mut conn, peer) = connect_peer("service", &config, &[]);
    let service = Remote::<Service>::new(SERVICE_DESTINATION);
    let started = Instant::now();
    let mut bytes = 0;
    for seq in 0..n {
        let message = note(seq);
        bytes += message.text.len() as u64 + 16;
        conn.send(service, &message)
            .unwrap_or_else(|e| panic!("sending note {seq}: {e}"));
    }
    let tally = conn
        .send_sync(service, &Tally {}, OP_TIMEOUT)
        .expect("the tally");
    let elapsed = started.elapsed();
    assert_eq!(
        (
            tally.notes.to_native(),
            tally.bad.to_native(),
            tally.next_seq.to_native()
        ),
        (n, 0, n),
        "notes received, bad (out of order or corrupted), next sequence number"
    );
    drop(tally);
    drop(conn);
    peer.expect_success();
    report("typed", n, bytes, elapsed);
}
