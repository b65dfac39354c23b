//! Hostile peers. The child here does not open a `Connection`: it maps the
//! region itself (the endpoint's first descriptor), attaches its own
//! `ferry_ring::Producer` to the ring the victim reads, and writes whatever
//! it likes, including over frames it has already published. The victim is a
//! real `Connection`; it must see only valid, unchanged messages or fail with
//! a protocol violation: never panic, crash, hang, or hand a handler bytes
//! that differ from what was validated.

mod support;

use ferry_handoff::Channel;
use ferry_ring::BlobWriter;
use ferry_transport::Context;
use ferry_transport::rkyv;
use ferry_transport::wire::{ENVELOPE_SIZE, Envelope, EnvelopeError, Flags};
use ferry_transport::{
    Connection, ConnectionConfig, DispatchError, EndpointInfo, Receiver, Trust, Violation,
};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::raw_peer::RawPeer;
use support::*;

/// The child test: runs the role the parent asked for, or nothing.
#[test]
fn child() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "scribbler" => child_scribbler(),
        "garbage" => child_garbage(),
        "head-scribbler" => child_head_scribbler(),
        other => panic!("unknown role {other}"),
    }
}

ferry_transport::protocol! {
    /// Messages that carry their own integrity check.
    pub receiver Checked handled_by CheckedHandler {
        /// `text` is `expected_text(seq)` for some `seq`.
        fn check => Check { text: String };
    }
}

const SCHEMA: u64 = ferry_transport::schema_of(&[<Checked as Receiver>::SCHEMA]);

fn victim_config(trust: Trust) -> ConnectionConfig {
    ConnectionConfig::default()
        .trust(trust)
        .schema(SCHEMA)
        .ring_capacity(256 * 1024)
        .peer_name("hostile")
}

/// The text of message `seq`: its number, a body, and a checksum of both,
/// so that a handler can tell an intact message from any other.
fn expected_text(seq: u64) -> String {
    let len = 200 + (seq.wrapping_mul(2_654_435_761) % 6000) as usize;
    let body: String = (0..len)
        .map(|i| char::from(b'a' + ((seq as usize * 7 + i * 13) % 26) as u8))
        .collect();
    let head = format!("{seq:010}:{body}");
    format!("{head}:{:016x}", fnv64(head.as_bytes()))
}

fn message(seq: u64) -> Check {
    Check {
        text: expected_text(seq),
    }
}

fn archive(seq: u64) -> rkyv::util::AlignedVec {
    rkyv::to_bytes::<rkyv::rancor::Error>(&message(seq)).expect("serialize")
}

fn check_envelope() -> Envelope {
    Envelope {
        destination: 1,
        request_id: 0,
        receiver: <Checked as Receiver>::ID,
        schema: <Checked as Receiver>::SCHEMA,
        message: <Check as ferry_transport::Message>::ID,
        flags: Flags(0),
        fd_count: 0,
    }
}

/// What the victim's handler saw.
#[derive(Default)]
struct Seen {
    /// Messages handled, all intact and in order.
    good: u64,
    /// The sequence number expected next.
    next: u64,
    /// Messages never handled, skipped over in the sequence: a frame whose
    /// destination was rewritten is addressed to nothing registered, and
    /// dropped (counted in the connection's stats).
    skipped: u64,
    /// Descriptions of messages that were not what was sent.
    bad: Vec<String>,
}

struct Victim(Arc<Mutex<Seen>>);

impl CheckedHandler for Victim {
    fn check(&self, _: &mut Context, message: &ArchivedCheck) {
        let mut seen = self.0.lock().unwrap();
        let text = message.text.as_str();
        // The message expected, or a later one (those between were dropped).
        let found =
            (seen.next..seen.next + MESSAGES_PER_ROUND).find(|&seq| text == expected_text(seq));
        if let Some(seq) = found {
            seen.skipped += seq - seen.next;
            seen.next = seq + 1;
            seen.good += 1;
        } else {
            let shown: String = text.chars().take(40).collect();
            let at = seen.next;
            seen.bad.push(format!(
                "message {at}: got {} bytes starting {shown:?}",
                text.len()
            ));
        }
    }
}

/// How a victim's run ended.
#[derive(Debug)]
enum Ending {
    Disconnected,
    Violation(Violation),
}

/// Dispatches until the connection ends; every wait is bounded.
fn dispatch_to_end(conn: &mut Connection) -> Ending {
    let deadline = Instant::now() + OP_TIMEOUT;
    loop {
        assert!(
            Instant::now() < deadline,
            "the victim neither finished nor failed (hang)"
        );
        match conn.dispatch(Some(OP_TIMEOUT)) {
            Ok(_) => {}
            Err(DispatchError::Disconnected) => return Ending::Disconnected,
            Err(DispatchError::ProtocolViolation { violation, .. }) => {
                return Ending::Violation(violation);
            }
            Err(e) => panic!("dispatch: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Rewriting published frames while the victim reads them.

const ROUNDS: u64 = 8;
const MESSAGES_PER_ROUND: u64 = 1500;

/// A published frame, as the scribbler knows it.
#[derive(Clone, Copy)]
struct Published {
    /// Ring position of the frame.
    position: u64,
    /// Region offset of the payload (the envelope).
    payload: usize,
    /// Bytes of the message's text, which follow the envelope.
    text_len: usize,
}

fn child_scribbler() {
    let control = child_control();
    for round in 0..ROUNDS {
        let mut peer = RawPeer::open(recv_endpoint(&control));
        let published = Arc::new(Mutex::new(std::collections::VecDeque::<Published>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let scribbler = {
            let raw = Arc::clone(&peer.raw);
            let (published, stop) = (Arc::clone(&published), Arc::clone(&stop));
            let head = peer.ring + offsets::HEAD;
            std::thread::spawn(move || scribble(&raw, head, &published, &stop, round))
        };
        let mut sent = 0;
        for seq in 0..MESSAGES_PER_ROUND {
            let mut head = [0u8; ENVELOPE_SIZE];
            check_envelope().write_to(&mut head);
            let Some((position, payload)) = peer.publish_at(&[&head, &archive(seq)]) else {
                break;
            };
            let mut published = published.lock().unwrap();
            if published.len() == 256 {
                published.pop_front();
            }
            published.push_back(Published {
                position,
                payload,
                text_len: expected_text(seq).len(),
            });
            sent += 1;
        }
        stop.store(true, Ordering::SeqCst);
        scribbler.join().expect("the scribbler");
        drop(peer);
        tell(&control, format!("round:{round}:{sent}").as_bytes());
    }
}

/// Writes 0xff over parts of published frames, again and again: mostly the
/// frame at the victim's head (the one it is reading, or about to), else the
/// latest; over the text's bytes (0xff is never valid UTF-8) and over the
/// envelope. Every such change makes the frame invalid, or (its destination
/// changed) addressed to nothing registered, so a victim that validates
/// what it uses sees the original message, a violation, or nothing.
fn scribble(
    raw: &RawMap,
    head: usize,
    published: &Mutex<std::collections::VecDeque<Published>>,
    stop: &AtomicBool,
    round: u64,
) {
    let mut rng = fastrand::Rng::with_seed(round);
    let limit = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::SeqCst) && Instant::now() < limit {
        std::thread::yield_now();
        // Only every so often, so that many frames get through untouched.
        if rng.u8(..) >= 16 {
            continue;
        }
        let target = {
            let published = published.lock().unwrap();
            if rng.bool() {
                let position = raw.load_u64(head);
                published
                    .iter()
                    .find(|frame| frame.position == position)
                    .copied()
            } else {
                published.back().copied()
            }
        };
        let Some(frame) = target else { continue };
        // The string's bytes come first in the archive, after the envelope.
        let (start, len) = if rng.u8(..) < 32 {
            (frame.payload + rng.usize(..ENVELOPE_SIZE), 1)
        } else {
            let at = rng.usize(..frame.text_len);
            (
                frame.payload + ENVELOPE_SIZE + at,
                rng.usize(1..=(frame.text_len - at).min(64)),
            )
        };
        for offset in start..start + len {
            raw.store_u8(offset, 0xff);
        }
    }
}

/// A peer that rewrites frames after publishing them, while an untrusted
/// victim copies and validates them: every message a handler sees is intact
/// and in order, or the connection fails with a violation. (A rewritten
/// destination readdresses a frame to nothing registered: it is dropped and
/// counted, never handled.) Four rounds, each
/// on a fresh connection to the same hostile process.
#[test]
fn rewriting_published_frames_never_reaches_a_handler() {
    let peer = spawn_peer("scribbler", &[]);
    let mut endings = Vec::new();
    let mut delivered = 0;
    for round in 0..ROUNDS {
        let (mut conn, endpoint) =
            Connection::create(victim_config(Trust::Untrusted)).expect("create");
        let seen = Arc::new(Mutex::new(Seen::default()));
        conn.register(1, Checked::handler(Victim(Arc::clone(&seen))));
        peer.send_endpoint(endpoint);
        let ending = dispatch_to_end(&mut conn);
        let dropped = conn.stats().dropped_for_gone_destinations;
        drop(conn);
        let word = String::from_utf8(peer.hear()).unwrap();
        let sent: u64 = word
            .strip_prefix(&format!("round:{round}:"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected {word}"));
        let seen = seen.lock().unwrap();
        assert!(
            seen.bad.is_empty(),
            "round {round}: a handler saw changed messages: {:?}",
            seen.bad
        );
        assert!(seen.good + dropped <= sent);
        assert!(
            seen.skipped <= dropped,
            "round {round}: {} skipped, {dropped} dropped for a rewritten destination",
            seen.skipped
        );
        if let Ending::Disconnected = ending {
            assert_eq!(
                seen.good + dropped,
                sent,
                "round {round}: an orderly end delivers everything not readdressed"
            );
        }
        delivered += seen.good;
        endings.push(format!(
            "{} of {sent} delivered ({dropped} readdressed and dropped), then {ending:?}",
            seen.good
        ));
    }
    eprintln!("rewriting published frames: {delivered} messages delivered intact; {endings:#?}");
    peer.expect_success();
}

// ---------------------------------------------------------------------------
// Malformed frames, one connection each.

/// A misdeed and the violation it must cause (`None`: any violation).
struct Case {
    name: &'static str,
    expected: Option<Violation>,
}

fn cases() -> Vec<Case> {
    let env = |e: EnvelopeError| Some(Violation::Envelope(e));
    vec![
        Case {
            name: "short",
            expected: env(EnvelopeError::Short(10)),
        },
        Case {
            name: "flags",
            expected: env(EnvelopeError::UnknownFlags(1 << 9)),
        },
        Case {
            name: "reply-without-request",
            expected: env(EnvelopeError::ReplyWithoutRequest),
        },
        Case {
            name: "raw-with-receiver",
            expected: env(EnvelopeError::RawMismatch),
        },
        Case {
            name: "out-of-line-without-blob",
            expected: env(EnvelopeError::OutOfLineWithoutBlob),
        },
        Case {
            name: "too-many-fds",
            expected: env(EnvelopeError::TooManyFds {
                count: 1000,
                max: 16,
            }),
        },
        Case {
            name: "archive",
            expected: None,
        },
        Case {
            name: "message",
            expected: Some(Violation::UnknownMessage {
                receiver: "Checked",
                message: 0xdead,
            }),
        },
        Case {
            name: "reply",
            expected: Some(Violation::UnexpectedReply(77)),
        },
        Case {
            name: "raw",
            expected: Some(Violation::UnexpectedRawFrame),
        },
        Case {
            name: "attachment",
            expected: None,
        },
        Case {
            name: "random",
            expected: None,
        },
        Case {
            name: "tail",
            expected: None,
        },
        Case {
            name: "kind",
            expected: None,
        },
        Case {
            name: "unsealed-blob",
            expected: None,
        },
        Case {
            name: "blob-size",
            expected: None,
        },
        Case {
            name: "blob-body",
            expected: None,
        },
    ]
}

/// Checks a violation of a case whose exact value is not fixed.
fn check_kind(case: &str, violation: &Violation) {
    let ok = match case {
        "archive" => matches!(
            violation,
            Violation::InvalidArchive {
                message: "Check",
                ..
            }
        ),
        "attachment" => matches!(violation, Violation::Attachment(_)),
        "random" => true,
        "tail" | "kind" => matches!(violation, Violation::Ring(_)),
        "unsealed-blob" | "blob-size" | "blob-body" => matches!(violation, Violation::Blob(_)),
        other => panic!("no check for {other}"),
    };
    assert!(ok, "{case}: unexpected violation {violation:?}");
}

fn memfd(len: usize) -> OwnedFd {
    let fd = rustix::fs::memfd_create("ferry-test-blob", rustix::fs::MemfdFlags::CLOEXEC)
        .expect("memfd");
    let mut file = std::fs::File::from(fd);
    file.write_all(&vec![7u8; len]).expect("write");
    OwnedFd::from(file)
}

fn child_garbage() {
    let control = child_control();
    for trust in ["trusted", "untrusted"] {
        for case in cases() {
            let mut peer = RawPeer::open(recv_endpoint(&control));
            // A valid message first: the victim handles it, then meets the
            // misdeed.
            peer.publish_message(&check_envelope(), &archive(0))
                .expect("publish");
            misbehave(&mut peer, case.name);
            peer.wait_closed();
            tell(&control, format!("closed:{trust}:{}", case.name).as_bytes());
        }
    }
    // A hand-made out-of-line message, sealed as it should be, is accepted:
    // the refusals above are about the blobs, not about the hand-made frames.
    let mut peer = RawPeer::open(recv_endpoint(&control));
    let body = archive(0);
    let mut blob = BlobWriter::create(body.len()).expect("blob");
    blob.copy_from_slice(&body);
    let blob = blob.seal().expect("seal");
    peer.attach(1, &[blob.fd()]);
    let envelope = Envelope {
        flags: Flags(Flags::OUT_OF_LINE),
        fd_count: 1,
        ..check_envelope()
    };
    peer.publish_message(&envelope, &(body.len() as u64).to_le_bytes())
        .expect("publish");
    peer.wait_consumed();
    drop(peer);
    tell(&control, b"sealed-ok");
}

fn misbehave(peer: &mut RawPeer, case: &str) {
    let typed = check_envelope();
    let body = archive(1);
    let published = match case {
        "short" => peer.publish(&[&[1u8; 10]]),
        "flags" => peer.publish_message(
            &Envelope {
                flags: Flags(1 << 9),
                ..typed
            },
            &body,
        ),
        "reply-without-request" => peer.publish_message(
            &Envelope {
                flags: Flags(Flags::REPLY),
                ..typed
            },
            &body,
        ),
        "raw-with-receiver" => peer.publish_message(
            &Envelope {
                flags: Flags(Flags::RAW),
                ..typed
            },
            &body,
        ),
        "out-of-line-without-blob" => peer.publish_message(
            &Envelope {
                flags: Flags(Flags::OUT_OF_LINE),
                ..typed
            },
            &8u64.to_le_bytes(),
        ),
        "too-many-fds" => peer.publish_message(
            &Envelope {
                fd_count: 1000,
                ..typed
            },
            &body,
        ),
        "archive" => {
            let mut rng = fastrand::Rng::with_seed(3);
            let garbage: Vec<u8> = (0..body.len()).map(|_| rng.u8(..)).collect();
            peer.publish_message(&typed, &garbage)
        }
        "message" => peer.publish_message(
            &Envelope {
                message: 0xdead,
                ..typed
            },
            &body,
        ),
        "reply" => peer.publish_message(
            &Envelope {
                flags: Flags(Flags::REPLY),
                request_id: 77,
                ..typed
            },
            &body,
        ),
        "raw" => peer.publish_message(
            &Envelope {
                flags: Flags(Flags::RAW),
                ..Envelope::default()
            },
            b"raw bytes",
        ),
        "attachment" => {
            let fd = memfd(16);
            peer.attach(5, &[fd.as_fd()]);
            peer.publish_message(
                &Envelope {
                    fd_count: 1,
                    ..typed
                },
                &body,
            )
        }
        "random" => {
            let mut rng = fastrand::Rng::with_seed(11);
            let garbage: Vec<u8> = (0..256).map(|_| rng.u8(..)).collect();
            peer.publish(&[&garbage])
        }
        "tail" => {
            peer.wait_consumed();
            peer.raw.store_u64(peer.ring + offsets::TAIL, peer.tail + 3);
            Some(0)
        }
        "kind" => {
            peer.wait_consumed();
            let index = peer.ring + offsets::DATA + (peer.tail % peer.capacity) as usize;
            peer.raw.store_u64(index, 16 | (0x1234_5678u64 << 32));
            peer.raw
                .store_u64(peer.ring + offsets::TAIL, peer.tail + 32);
            Some(0)
        }
        "unsealed-blob" => {
            let fd = memfd(4096);
            peer.attach(1, &[fd.as_fd()]);
            peer.publish_message(
                &Envelope {
                    flags: Flags(Flags::OUT_OF_LINE),
                    fd_count: 1,
                    ..typed
                },
                &4096u64.to_le_bytes(),
            )
        }
        "blob-size" => {
            let mut blob = BlobWriter::create(4096).expect("blob");
            blob.fill(1);
            let blob = blob.seal().expect("seal");
            peer.attach(1, &[blob.fd()]);
            peer.publish_message(
                &Envelope {
                    flags: Flags(Flags::OUT_OF_LINE),
                    fd_count: 1,
                    ..typed
                },
                &8192u64.to_le_bytes(),
            )
        }
        "blob-body" => peer.publish_message(
            &Envelope {
                flags: Flags(Flags::OUT_OF_LINE),
                fd_count: 1,
                ..typed
            },
            &[0u8; 4],
        ),
        other => panic!("unknown case {other}"),
    };
    assert!(
        published.is_some(),
        "{case}: the victim left before the misdeed"
    );
}

/// Malformed envelopes, invalid archives, unknown messages and replies, raw
/// frames where typed ones belong, bad attachments, corrupted ring positions
/// and frame headers, and out-of-line blobs that are not sealed against
/// writes or not of the announced size: each is a protocol violation naming
/// the misdeed, for a trusted and an untrusted victim alike; the message
/// before it is handled; the connection is closed (later calls report the
/// violation, the peer sees the hang-up).
#[test]
fn malformed_frames_are_violations() {
    let peer = spawn_peer("garbage", &[]);
    for trust in [Trust::Trusted, Trust::Untrusted] {
        for case in cases() {
            let (mut conn, endpoint) = Connection::create(victim_config(trust)).expect("create");
            let seen = Arc::new(Mutex::new(Seen::default()));
            conn.register(1, Checked::handler(Victim(Arc::clone(&seen))));
            peer.send_endpoint(endpoint);
            let ending = dispatch_to_end(&mut conn);
            let Ending::Violation(violation) = ending else {
                panic!(
                    "{trust:?} {}: expected a violation, got {ending:?}",
                    case.name
                );
            };
            match &case.expected {
                Some(expected) => assert_eq!(&violation, expected, "{trust:?} {}", case.name),
                None => check_kind(case.name, &violation),
            }
            {
                let seen = seen.lock().unwrap();
                assert_eq!(
                    (seen.good, seen.bad.len()),
                    (1, 0),
                    "{trust:?} {}",
                    case.name
                );
            }
            assert!(!conn.is_open());
            assert!(
                matches!(
                    conn.dispatch(Some(Duration::ZERO)),
                    Err(DispatchError::ProtocolViolation { .. })
                ),
                "the violation is reported again"
            );
            let trust_name = if trust == Trust::Trusted {
                "trusted"
            } else {
                "untrusted"
            };
            peer.expect_word(format!("closed:{trust_name}:{}", case.name).as_bytes());
        }
    }
    let (mut conn, endpoint) = Connection::create(victim_config(Trust::Untrusted)).expect("create");
    let seen = Arc::new(Mutex::new(Seen::default()));
    conn.register(1, Checked::handler(Victim(Arc::clone(&seen))));
    peer.send_endpoint(endpoint);
    let ending = dispatch_to_end(&mut conn);
    assert!(
        matches!(ending, Ending::Disconnected),
        "sealed blob: {ending:?}"
    );
    assert_eq!(conn.stats().out_of_line_received, 1);
    assert_eq!(seen.lock().unwrap().good, 1);
    peer.expect_word(b"sealed-ok");
    peer.expect_success();
}

// ---------------------------------------------------------------------------
// A hostile consumer: the victim sends.

fn child_head_scribbler() {
    let control = child_control();
    let endpoint = recv_endpoint(&control);
    let info = EndpointInfo::decode(&endpoint.metadata, endpoint.fds.len()).expect("metadata");
    let mut fds = endpoint.fds.into_iter();
    let raw = RawMap::new(fds.next().expect("region").as_fd());
    let connection_control = Channel::from(fds.next().expect("control socket"));
    // The victim's ring to us: claim to have read more than it ever wrote.
    raw.store_u64(info.rx_offset as usize + offsets::HEAD, 1 << 40);
    tell(&control, b"scribbled");
    assert!(
        connection_control
            .wait_hangup(Some(OP_TIMEOUT))
            .expect("poll"),
        "the victim did not close the connection after the violation"
    );
    tell(&control, b"closed");
}

/// A peer that corrupts the consumer position of the ring the victim
/// writes: the victim's send fails with the ring violation, the connection
/// is failed, and, as after any violation, closed: the peer sees the
/// hang-up.
#[test]
fn corrupt_consumer_position_fails_the_sender() {
    let config = victim_config(Trust::Untrusted).ring_capacity(16 * 1024);
    let (mut conn, peer) = connect_peer("head-scribbler", &config, &[]);
    peer.expect_word(b"scribbled");
    let frame = vec![5u8; 1000];
    let mut outcome = Ok(());
    for _ in 0..100 {
        outcome = conn.send_frame(&frame, Some(Duration::from_millis(100)));
        if outcome.is_err() {
            break;
        }
    }
    match outcome {
        Err(ferry_transport::SendError::Failed(Violation::Ring(_))) => {}
        other => panic!("expected a ring violation, got {other:?}"),
    }
    assert!(!conn.is_open());
    assert!(matches!(
        conn.recv_frame(Some(Duration::ZERO)),
        Err(ferry_transport::RecvError::ProtocolViolation { .. })
    ));
    peer.expect_word(b"closed");
    drop(conn);
    peer.expect_success();
}
