//! Typed messages across real processes: asynchronous sends, replies run by
//! `dispatch`, synchronous calls with timeouts, nested types, in both trust
//! modes; re-entrant synchronous calls both ways; a peer killed during a
//! synchronous call; schema mismatches at open and per frame.

mod support;

use ferry_transport::Context;
use ferry_transport::rkyv;
use ferry_transport::{
    CallError, Connection, ConnectionConfig, DispatchError, OpenError, Receiver, RecvError, Remote,
    SendError, Trust, Violation,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::proto::*;
use support::*;

/// The child test: runs the role the parent asked for, or nothing.
#[test]
fn child() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "fd-service" => {
            let (mut conn, control) = child_connect();
            conn.register(
                SERVICE_DESTINATION,
                Service::handler(ServiceImpl::default()),
            );
            let before = open_fd_count();
            let mut buf = [0u8; 16];
            loop {
                match conn.dispatch(Some(Duration::from_millis(10))) {
                    Ok(_) => {}
                    Err(DispatchError::Disconnected) => break,
                    Err(e) => panic!("dispatch: {e}"),
                }
                if let Some(word) = control.try_recv(&mut buf).expect("control") {
                    assert_eq!(&buf[..word.len], b"count");
                    assert_eq!(conn.stats().fds_received, 2 * FD_NOTES);
                    assert_eq!(
                        open_fd_count(),
                        before,
                        "descriptors of typed messages leaked"
                    );
                    tell(&control, b"no leak");
                }
            }
        }
        "late-service" => {
            let (mut conn, control) = child_connect();
            tell(&control, b"ready");
            assert_eq!(hear(&control), b"go");
            serve(&mut conn, ServiceImpl::default());
        }
        "service" => {
            let (mut conn, control) = child_connect();
            serve(
                &mut conn,
                ServiceImpl {
                    control: Some(control),
                    ..ServiceImpl::default()
                },
            );
        }
        "mirror-responder" => child_mirror_responder(),
        "mirror-initiator" => child_mirror_initiator(),
        "open-mismatch" => child_open_mismatch(),
        "misbehave" => child_misbehave(),
        other => panic!("unknown role {other}"),
    }
}

fn service() -> Remote<Service> {
    Remote::new(SERVICE_DESTINATION)
}

fn sample_outer() -> Outer {
    Outer {
        name: "outer ✓".into(),
        inners: vec![
            Inner {
                id: 1,
                tags: vec!["a".into(), String::new(), "ccc".repeat(40)],
            },
            Inner {
                id: 2,
                tags: vec![],
            },
        ],
        best: Some(Inner {
            id: 3,
            tags: vec!["best".into()],
        }),
        flag: true,
    }
}

/// Everything the typed API offers, against a service in another process.
fn typed_round_trips(trust: Trust) {
    let config = service_config(trust);
    let (mut conn, peer) = connect_peer("service", &config, &[]);

    // Asynchronous sends.
    const NOTES: u64 = 500;
    for seq in 0..NOTES {
        conn.send(service(), &note(seq)).expect("send a note");
    }

    // Requests whose reply handlers run during dispatch.
    let sums = Arc::new(Mutex::new(Vec::new()));
    for i in 0..50u64 {
        let sums = Arc::clone(&sums);
        conn.send_with_reply(service(), &Add { a: i, b: 3 * i }, move |_, reply| {
            let value = reply.expect("a reply").value.to_native();
            sums.lock().unwrap().push((i, value));
        })
        .expect("send_with_reply");
    }
    assert!(
        sums.lock().unwrap().is_empty(),
        "reply handlers run only in dispatch"
    );
    let deadline = Instant::now() + OP_TIMEOUT;
    while sums.lock().unwrap().len() < 50 {
        assert!(Instant::now() < deadline, "replies missing");
        conn.dispatch(Some(Duration::from_millis(100)))
            .expect("dispatch");
    }
    let sums = sums.lock().unwrap().clone();
    assert_eq!(
        sums,
        (0..50).map(|i| (i, 4 * i)).collect::<Vec<_>>(),
        "replies in order, correct"
    );

    // Synchronous calls.
    let tally = conn
        .send_sync(service(), &Tally {}, OP_TIMEOUT)
        .expect("tally");
    assert_eq!(
        (
            tally.notes.to_native(),
            tally.bad.to_native(),
            tally.next_seq.to_native()
        ),
        (NOTES, 0, NOTES),
        "every note arrived, in order, intact"
    );
    let sum = conn
        .send_sync(service(), &Add { a: u64::MAX, b: 2 }, OP_TIMEOUT)
        .expect("add");
    assert_eq!(sum.value.to_native(), 1);

    // Nested types.
    let sent = EchoNested {
        items: vec!["one".into(), "".into(), "three ✓".into(), "x".repeat(1000)],
        maybe: Some(42),
        outer: sample_outer(),
    };
    let reply = conn.send_sync(service(), &sent, OP_TIMEOUT).expect("echo");
    let echoed: NestedReply =
        rkyv::deserialize::<NestedReply, rkyv::rancor::Error>(&*reply).expect("deserialize");
    assert_eq!(
        (echoed.items, echoed.maybe, echoed.outer),
        (sent.items, sent.maybe, sent.outer)
    );
    let none = EchoNested {
        items: vec![],
        maybe: None,
        outer: Outer {
            best: None,
            inners: vec![],
            ..sample_outer()
        },
    };
    let reply = conn.send_sync(service(), &none, OP_TIMEOUT).expect("echo");
    let echoed: NestedReply =
        rkyv::deserialize::<NestedReply, rkyv::rancor::Error>(&*reply).expect("deserialize");
    assert_eq!(
        (echoed.items, echoed.maybe, echoed.outer),
        (none.items, none.maybe, none.outer)
    );

    // A timeout; the late reply is dropped quietly and the next call works.
    let started = Instant::now();
    let late = conn.send_sync(
        service(),
        &Slow {
            millis: 300,
            token: 1,
        },
        Duration::from_millis(20),
    );
    assert_eq!(late.unwrap_err(), CallError::TimedOut);
    assert!(started.elapsed() < OP_TIMEOUT);
    let slow = conn
        .send_sync(
            service(),
            &Slow {
                millis: 0,
                token: 2,
            },
            OP_TIMEOUT,
        )
        .expect("the call after a timed-out one");
    assert_eq!(
        slow.token.to_native(),
        2,
        "the late reply to token 1 is not taken for this one"
    );
    assert!(conn.is_open());
    assert_eq!(conn.stats().out_of_line_sent, 0);

    drop(conn);
    peer.expect_success();
}

/// Typed messages with a trusted peer (validated in place).
#[test]
fn typed_messages_trusted() {
    typed_round_trips(Trust::Trusted);
}

/// Typed messages with an untrusted peer (copied once, then validated).
#[test]
fn typed_messages_untrusted() {
    typed_round_trips(Trust::Untrusted);
}

/// The peer is SIGKILLed while we wait in `send_sync` with a long timeout:
/// the call fails with `Disconnected` before the timeout, and a pending
/// reply handler is told `Disconnected` too.
#[test]
fn peer_killed_during_send_sync() {
    let (mut conn, mut peer) = connect_peer("service", &service_config(Trust::Trusted), &[]);
    let control = peer.control_clone();
    let kill = peer.killer();
    let killer = std::thread::spawn(move || {
        assert_eq!(hear(&control), b"hung");
        kill();
    });
    // The service hangs on this one (no reply is asked for)...
    conn.send(service(), &Hang {}).expect("send Hang");
    // ...so this reply never comes...
    let pending = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&pending);
    conn.send_with_reply(service(), &Add { a: 1, b: 2 }, move |_, reply| {
        *seen.lock().unwrap() = Some(reply.map(|sum| sum.value.to_native()));
    })
    .expect("send_with_reply");
    // ...and neither does this one.
    let timeout = Duration::from_secs(60);
    let started = Instant::now();
    let outcome = conn.send_sync(service(), &Tally {}, timeout);
    let waited = started.elapsed();
    assert_eq!(outcome.unwrap_err(), CallError::Disconnected);
    assert!(waited < timeout, "send_sync returned only at its timeout");
    assert_eq!(*pending.lock().unwrap(), Some(Err(CallError::Disconnected)));
    assert!(!conn.is_open());
    assert_eq!(
        conn.send(service(), &Tally {}),
        Err(SendError::Disconnected)
    );
    killer.join().unwrap();
    assert!(!peer.wait_timeout(EXIT_TIMEOUT).success());
}

const FD_NOTES: u64 = 500;

/// Typed messages with descriptors attached arrive in order, and the
/// receiver does not leak the descriptors (there is no way yet for a typed
/// handler to take them, so they are closed after the handler runs).
#[test]
fn typed_messages_with_descriptors() {
    let (mut conn, peer) = connect_peer("fd-service", &service_config(Trust::Untrusted), &[]);
    let memfd =
        rustix::fs::memfd_create("ferry-test", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
    rustix::io::write(&memfd, FD_CONTENT).expect("fill the memfd");
    let (read, _write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
    use std::os::fd::AsFd;
    for seq in 0..FD_NOTES {
        conn.send_with_fds(
            service(),
            &note(seq),
            &[memfd.as_fd(), read.as_fd()],
            Some(OP_TIMEOUT),
        )
        .expect("send with descriptors");
    }
    let tally = conn
        .send_sync(service(), &Tally {}, OP_TIMEOUT)
        .expect("tally");
    assert_eq!(
        (tally.notes.to_native(), tally.bad.to_native()),
        (FD_NOTES, 0),
        "every handler read the memfd's content through its descriptor"
    );
    assert_eq!(
        tally.fds.to_native(),
        2 * FD_NOTES,
        "handlers took the descriptors"
    );
    drop(tally);
    assert_eq!(conn.stats().fds_sent, 2 * FD_NOTES);
    peer.tell(b"count");
    peer.expect_word(b"no leak");
    drop(conn);
    peer.expect_success();
}

/// `try_send` fails with `Full` only when the message does not fit: with a
/// quarter of the ring free, a message of 2 KiB (much larger than the ones
/// before it) goes in at once, and so does `send_with_fds` with a short
/// timeout.
#[test]
fn try_send_is_full_only_when_the_message_does_not_fit() {
    let config = service_config(Trust::Trusted).ring_capacity(64 * 1024);
    let (mut conn, peer) = connect_peer("late-service", &config, &[]);
    peer.expect_word(b"ready");
    // Fill three quarters of the ring with small notes nobody reads yet.
    let mut notes = 0;
    loop {
        let ring = conn.stats().tx_ring;
        // Upper bound of the ring bytes used: payload plus header and
        // padding of each frame.
        if ring.bytes + 32 * ring.frames >= 48 * 1024 {
            break;
        }
        let message = note(notes);
        if let Err(e) = conn.try_send(service(), &message) {
            panic!(
                "try_send of a note with {} bytes of text: {e}, with at most {} of 65536 ring bytes used",
                message.text.len(),
                ring.bytes + 32 * ring.frames
            );
        }
        notes += 1;
    }
    let big_note = Note {
        seq: notes,
        text: "x".repeat(2048),
        checksum: note_checksum(notes, &"x".repeat(2048)),
    };
    // At least 16 KiB are free, minus a padding frame of at most 2.1 KiB.
    assert_eq!(
        conn.try_send(service(), &big_note),
        Ok(()),
        "a 2 KiB note with 16 KiB free"
    );
    notes += 1;
    assert_eq!(
        conn.send_with_fds(
            service(),
            &note(notes),
            &[],
            Some(Duration::from_millis(10))
        ),
        Ok(()),
        "a small note after it"
    );
    notes += 1;
    peer.tell(b"go");
    let tally = conn
        .send_sync(service(), &Tally {}, OP_TIMEOUT)
        .expect("tally");
    assert_eq!((tally.notes.to_native(), tally.bad.to_native()), (notes, 0));
    drop(tally);
    drop(conn);
    peer.expect_success();
}

// ---------------------------------------------------------------------------
// Re-entrant synchronous calls.

ferry_transport::protocol! {
    /// Both processes register it: each may call the other.
    pub receiver Mirror handled_by MirrorHandler {
        /// Calls back `depth` levels deep before replying.
        /// `flood`: how many `Later`s the callback handler sends first.
        fn call => Call { token: u64, depth: u32, flood: u32 } -> CallReply { token: u64, callback: u64 };
        /// Dispatched even while the receiver waits for a sync reply.
        @allowed_while_waiting
        fn callback => Callback { token: u64, depth: u32, flood: u32 } -> CallbackReply { token: u64 };
        /// Not allowed while waiting: set aside, dispatched afterwards.
        fn later => Later { seq: u64 };
    }
}

const MIRROR_SCHEMA: u64 = ferry_transport::schema_of(&[<Mirror as Receiver>::SCHEMA]);

fn mirror() -> Remote<Mirror> {
    Remote::new(1)
}

fn mirror_config(trust: Trust) -> ConnectionConfig {
    ConnectionConfig::default()
        .trust(trust)
        .schema(MIRROR_SCHEMA)
}

/// What a process's `Mirror` handler saw, in order.
type Log = Arc<Mutex<Vec<String>>>;

struct MirrorImpl {
    log: Log,
    /// Set when a `call` handler has replied: the main loop then sends
    /// `Later { seq: 5 }`, which arrives after the reply.
    replied: Arc<AtomicBool>,
    /// How long nested calls wait.
    timeout: Duration,
}

impl MirrorHandler for MirrorImpl {
    fn call(&self, conn: &mut Context, message: &ArchivedCall) -> CallReply {
        let token = message.token.to_native();
        self.log.lock().unwrap().push(format!("call {token}"));
        for seq in 1..=3 {
            conn.send(mirror(), &Later { seq }).expect("send Later");
        }
        let depth = message.depth.to_native();
        let flood = message.flood.to_native();
        let reply = conn
            .send_sync(
                mirror(),
                &Callback {
                    token,
                    depth,
                    flood,
                },
                self.timeout,
            )
            .expect("the nested call completes");
        let callback = reply.token.to_native();
        self.log
            .lock()
            .unwrap()
            .push(format!("callback-reply {callback}"));
        conn.send(mirror(), &Later { seq: 4 }).expect("send Later");
        self.replied.store(true, Ordering::SeqCst);
        CallReply { token, callback }
    }

    fn callback(&self, conn: &mut Context, message: &ArchivedCallback) -> CallbackReply {
        let token = message.token.to_native();
        let depth = message.depth.to_native();
        self.log.lock().unwrap().push(format!("callback {token}"));
        for i in 0..message.flood.to_native() {
            let later = Later {
                seq: 1000 + u64::from(i),
            };
            if let Err(e) = conn.send_with_fds(mirror(), &later, &[], Some(self.timeout)) {
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("flood failed after {i}: {e}"));
                break;
            }
        }
        if depth > 1 {
            // Deeper: call the peer back while it waits for us.
            let reply = conn
                .send_sync(
                    mirror(),
                    &Callback {
                        token: token + 100,
                        depth: depth - 1,
                        flood: 0,
                    },
                    self.timeout,
                )
                .expect("the doubly nested call completes");
            self.log
                .lock()
                .unwrap()
                .push(format!("callback-reply {}", reply.token.to_native()));
        }
        CallbackReply { token: token + 1 }
    }

    fn later(&self, _: &mut Context, message: &ArchivedLater) {
        self.log
            .lock()
            .unwrap()
            .push(format!("later {}", message.seq.to_native()));
    }
}

fn register_mirror(conn: &mut Connection, timeout: Duration) -> (Log, Arc<AtomicBool>) {
    let log = Log::default();
    let replied = Arc::new(AtomicBool::new(false));
    conn.register(
        1,
        Mirror::handler(MirrorImpl {
            log: Arc::clone(&log),
            replied: Arc::clone(&replied),
            timeout,
        }),
    );
    (log, replied)
}

/// The responder: dispatches until the peer leaves, sending `Later 5` after
/// each reply to a `call`.
fn respond(conn: &mut Connection, replied: &AtomicBool) {
    loop {
        match conn.dispatch(Some(OP_TIMEOUT)) {
            Ok(0) => panic!("no message for {OP_TIMEOUT:?}"),
            Ok(_) => {}
            Err(DispatchError::Disconnected) => return,
            Err(e) => panic!("dispatch failed: {e}"),
        }
        if replied.swap(false, Ordering::SeqCst) {
            conn.send(mirror(), &Later { seq: 5 })
                .expect("send Later 5");
        }
    }
}

/// The initiator: calls synchronously; the peer's handler calls back (allowed
/// while waiting) and sends `Later`s that must wait for the next dispatch,
/// in order.
fn initiate(conn: &mut Connection, log: &Log) {
    let reply = conn
        .send_sync(
            mirror(),
            &Call {
                token: 7,
                depth: 1,
                flood: 0,
            },
            OP_TIMEOUT,
        )
        .expect("the re-entrant call completes");
    assert_eq!(
        (reply.token.to_native(), reply.callback.to_native()),
        (7, 8)
    );
    assert_eq!(
        *log.lock().unwrap(),
        ["callback 7"],
        "only the allowed-while-waiting message ran during the call"
    );
    assert!(conn.has_deferred(), "the Laters were set aside");
    let deadline = Instant::now() + OP_TIMEOUT;
    while log.lock().unwrap().len() < 6 {
        assert!(
            Instant::now() < deadline,
            "Laters missing: {:?}",
            log.lock().unwrap()
        );
        conn.dispatch(Some(Duration::from_millis(100)))
            .expect("dispatch");
    }
    assert_eq!(
        *log.lock().unwrap(),
        [
            "callback 7",
            "later 1",
            "later 2",
            "later 3",
            "later 4",
            "later 5"
        ],
        "set-aside messages dispatched afterwards, in order, before later ones"
    );
    assert!(!conn.has_deferred());
}

fn child_mirror_responder() {
    let (mut conn, _control) = child_connect();
    let (log, replied) = register_mirror(&mut conn, OP_TIMEOUT);
    respond(&mut conn, &replied);
    // Two deep: the call, then the reply to its callback. Three deep: the
    // peer's callback handler called back into this receiver while its
    // `call` handler waited, so "callback 107" runs re-entrantly in between.
    let log = log.lock().unwrap();
    let expected: &[&str] = if log.get(1).is_some_and(|line| line == "callback 107") {
        &["call 7", "callback 107", "callback-reply 8"]
    } else {
        &["call 7", "callback-reply 8"]
    };
    assert_eq!(log[..expected.len()], *expected);
}

fn child_mirror_initiator() {
    let (mut conn, control) = child_connect();
    let (log, _) = register_mirror(&mut conn, OP_TIMEOUT);
    assert_eq!(hear(&control), b"go");
    initiate(&mut conn, &log);
}

/// Process A calls B synchronously; B's handler calls A synchronously with an
/// allowed-while-waiting message, which A dispatches while it waits; both
/// calls complete. Messages not allowed while waiting are dispatched after
/// the call, in order. With A the parent (trusted), then A the child
/// (untrusted).
#[test]
fn reentrant_sync_calls_parent_initiates() {
    for trust in [Trust::Trusted, Trust::Untrusted] {
        let (mut conn, peer) = connect_peer("mirror-responder", &mirror_config(trust), &[]);
        let (log, _) = register_mirror(&mut conn, OP_TIMEOUT);
        initiate(&mut conn, &log);
        drop(conn);
        peer.expect_success();
    }
}

/// The mirror image: the child initiates, the parent responds.
#[test]
fn reentrant_sync_calls_child_initiates() {
    for trust in [Trust::Untrusted, Trust::Trusted] {
        let (mut conn, peer) = connect_peer("mirror-initiator", &mirror_config(trust), &[]);
        let (log, replied) = register_mirror(&mut conn, OP_TIMEOUT);
        peer.tell(b"go");
        respond(&mut conn, &replied);
        assert_eq!(
            log.lock().unwrap()[..2],
            ["call 7".to_string(), "callback-reply 8".to_string()]
        );
        peer.expect_success();
    }
}

/// A synchronous call that fails with `QueueFull` (too many messages set
/// aside while it waited) leaves the connection usable: the set-aside
/// messages are dispatched later, in order, and the reply that still comes
/// for the failed call is dropped quietly, as after a timeout.
#[test]
fn queue_full_call_leaves_the_connection_usable() {
    let config = mirror_config(Trust::Trusted).max_deferred_bytes(1);
    let (mut conn, peer) = connect_peer("mirror-responder", &config, &[]);
    let (log, _) = register_mirror(&mut conn, OP_TIMEOUT);
    let outcome = conn.send_sync(
        mirror(),
        &Call {
            token: 7,
            depth: 1,
            flood: 0,
        },
        OP_TIMEOUT,
    );
    assert_eq!(outcome.unwrap_err(), CallError::QueueFull);
    let deadline = Instant::now() + OP_TIMEOUT;
    while log.lock().unwrap().len() < 6 {
        assert!(
            Instant::now() < deadline,
            "messages missing: {:?}",
            log.lock().unwrap()
        );
        if let Err(e) = conn.dispatch(Some(Duration::from_millis(100))) {
            panic!(
                "dispatch after QueueFull: {e}; handled {:?}",
                log.lock().unwrap()
            );
        }
    }
    assert_eq!(
        *log.lock().unwrap(),
        [
            "later 1",
            "later 2",
            "later 3",
            "callback 7",
            "later 4",
            "later 5"
        ]
    );
    assert!(conn.is_open());
    drop(conn);
    peer.expect_success();
}

/// A calls B; B's handler calls A back; A's callback handler sends B more
/// than a ring's worth of messages before replying. B, waiting for the
/// reply, must keep reading them (setting them aside) and keep giving the
/// ring's room back, or A blocks and the calls deadlock.
fn reentrant_call_with_a_flood(trust: Trust) {
    let config = mirror_config(trust).ring_capacity(64 * 1024);
    let (mut conn, peer) = connect_peer("mirror-responder", &config, &[]);
    let (log, _) = register_mirror(&mut conn, Duration::from_secs(5));
    let flood = 3000;
    let reply = conn
        .send_sync(
            mirror(),
            &Call {
                token: 7,
                depth: 1,
                flood,
            },
            OP_TIMEOUT,
        )
        .expect("the call completes");
    assert_eq!(reply.callback.to_native(), 8);
    drop(reply);
    assert_eq!(
        *log.lock().unwrap(),
        ["callback 7"],
        "the flood was sent in full"
    );
    // The peer's Laters (set aside during the call, and the one after it).
    let deadline = Instant::now() + OP_TIMEOUT;
    while log.lock().unwrap().len() < 6 {
        assert!(
            Instant::now() < deadline,
            "Laters missing: {:?}",
            log.lock().unwrap()
        );
        conn.dispatch(Some(Duration::from_millis(100)))
            .expect("dispatch");
    }
    drop(conn);
    peer.expect_success();
}

#[test]
fn reentrant_call_with_a_flood_untrusted() {
    reentrant_call_with_a_flood(Trust::Untrusted);
}

#[test]
fn reentrant_call_with_a_flood_trusted() {
    reentrant_call_with_a_flood(Trust::Trusted);
}

/// Three levels: A calls B, B's handler calls A back, and A's callback
/// handler calls B back again while B's `call` handler still waits. B waits
/// in `send_sync` for A, so the innermost callback must be dispatched then,
/// as docs/design.md promises ("two processes calling each other synchronously do
/// not deadlock").
#[test]
fn reentrant_sync_calls_three_deep() {
    let (mut conn, peer) = connect_peer("mirror-responder", &mirror_config(Trust::Trusted), &[]);
    let (log, _) = register_mirror(&mut conn, Duration::from_secs(5));
    let reply = conn.send_sync(
        mirror(),
        &Call {
            token: 7,
            depth: 2,
            flood: 0,
        },
        Duration::from_secs(10),
    );
    let reply = reply.expect("the three-deep call completes");
    assert_eq!(reply.callback.to_native(), 8);
    assert_eq!(*log.lock().unwrap(), ["callback 7", "callback-reply 108"]);
    // The peer sends `Later 5` after replying: take it before hanging up,
    // or its send races with our drop.
    let deadline = Instant::now() + OP_TIMEOUT;
    while !log.lock().unwrap().iter().any(|line| line == "later 5") {
        assert!(
            Instant::now() < deadline,
            "Later 5 missing: {:?}",
            log.lock().unwrap()
        );
        conn.dispatch(Some(Duration::from_millis(100)))
            .expect("dispatch");
    }
    drop(conn);
    peer.expect_success();
}

// ---------------------------------------------------------------------------
// Schema mismatches.

fn child_open_mismatch() {
    let control = child_control();
    let endpoint = recv_endpoint(&control);
    match Connection::open(endpoint, config_from_params()) {
        Err(OpenError::SchemaMismatch { ours, theirs }) => {
            assert_eq!(
                (ours, theirs),
                (param::<u64>("OURS"), param::<u64>("THEIRS"))
            );
        }
        Err(e) => panic!("expected SchemaMismatch, got {e}"),
        Ok(_) => panic!("a connection with a different schema opened"),
    }
    tell(&control, b"refused");
}

/// `Connection::open` with a different schema hash fails with
/// `SchemaMismatch`; the creator then sees `Disconnected`.
#[test]
fn open_with_a_different_schema_is_refused() {
    let config = ConnectionConfig::default().schema(0x1111);
    let params = [
        ("SCHEMA", "8738".to_string()), // 0x2222
        ("OURS", "8738".to_string()),
        ("THEIRS", "4369".to_string()), // 0x1111
    ];
    let (mut conn, peer) = connect_peer("open-mismatch", &config, &params);
    peer.expect_word(b"refused");
    assert!(matches!(
        conn.recv_frame(Some(OP_TIMEOUT)),
        Err(RecvError::Disconnected)
    ));
    peer.expect_success();
}

/// Two declarations of a receiver with the same name and different fields.
mod v1 {
    ferry_transport::protocol! {
        pub receiver Store handled_by StoreHandler {
            fn put => Put { key: String };
        }
    }
}

mod v2 {
    ferry_transport::protocol! {
        pub receiver Store handled_by StoreHandler {
            fn put => Put { key: String, value: u64 };
        }
    }

    /// Counts the puts it is handed.
    pub struct Counter(pub std::sync::Arc<std::sync::atomic::AtomicU64>);

    impl StoreHandler for Counter {
        fn put(&self, _: &mut ferry_transport::Context, _: &ArchivedPut) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// A schema both ends announce at open, so that frames of the two `Store`
/// declarations get through to the per-frame check.
const SHARED_SCHEMA: u64 = 0x5eed;

/// The misbehaviours, one connection each.
const CASES: [&str; 3] = ["schema", "schema-gone", "receiver"];

fn child_misbehave() {
    let control = child_control();
    for case in CASES {
        let endpoint = recv_endpoint(&control);
        let mut conn = Connection::open(endpoint, config_from_params()).expect("open");
        // A valid message first, then the bad one.
        conn.send(
            Remote::<v2::Store>::new(1),
            &v2::Put {
                key: "ok".into(),
                value: 1,
            },
        )
        .expect("send");
        match case {
            "schema" => conn.send(Remote::<v1::Store>::new(1), &v1::Put { key: "k".into() }),
            "schema-gone" => conn.send(Remote::<v1::Store>::new(99), &v1::Put { key: "k".into() }),
            "receiver" => conn.send(Remote::<Service>::new(1), &Add { a: 1, b: 1 }),
            other => panic!("unknown case {other}"),
        }
        .expect("send the bad message");
        // The victim closes the connection: we see it.
        assert!(matches!(
            conn.recv_frame(Some(OP_TIMEOUT)),
            Err(RecvError::Disconnected)
        ));
        assert_eq!(
            conn.send(
                Remote::<v2::Store>::new(1),
                &v2::Put {
                    key: "k".into(),
                    value: 3
                }
            ),
            Err(SendError::Disconnected)
        );
        tell(&control, format!("closed:{case}").as_bytes());
    }
}

/// Per-frame checks: a message built from another declaration of the
/// receiver (same name, other fields) is a `SchemaMismatch` violation, at a
/// registered destination or at one that is not (the kind is known, its
/// schema is not ours); a message for a receiver kind never registered here
/// is an `UnknownReceiver` violation. Each closes the connection: later
/// calls report the violation, and the peer sees `Disconnected`. (A
/// message of a known kind and schema for a destination not registered is
/// dropped: `transport/tests/late_replies.rs`.)
#[test]
fn schema_mismatch_and_unknown_receivers_are_violations() {
    assert_eq!(<v1::Store as Receiver>::ID, <v2::Store as Receiver>::ID);
    assert_ne!(
        <v1::Store as Receiver>::SCHEMA,
        <v2::Store as Receiver>::SCHEMA
    );
    let config = ConnectionConfig::default().schema(SHARED_SCHEMA);
    let peer = spawn_peer("misbehave", &config_params(&config));
    for case in CASES {
        let (mut conn, endpoint) = Connection::create(config.clone()).expect("create");
        peer.send_endpoint(endpoint);
        let puts = Arc::new(std::sync::atomic::AtomicU64::new(0));
        conn.register(1, v2::Store::handler(v2::Counter(Arc::clone(&puts))));
        let deadline = Instant::now() + OP_TIMEOUT;
        let error = loop {
            assert!(Instant::now() < deadline, "{case}: no violation");
            match conn.dispatch(Some(OP_TIMEOUT)) {
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(
            puts.load(Ordering::SeqCst),
            1,
            "{case}: the valid message was handled"
        );
        let DispatchError::ProtocolViolation { violation, .. } = error.clone() else {
            panic!("{case}: expected a protocol violation, got {error}");
        };
        match case {
            "schema" => assert_eq!(
                violation,
                Violation::SchemaMismatch {
                    receiver: "Store",
                    expected: <v2::Store as Receiver>::SCHEMA,
                    found: <v1::Store as Receiver>::SCHEMA,
                }
            ),
            "schema-gone" => assert_eq!(
                violation,
                Violation::SchemaMismatch {
                    receiver: "Store",
                    expected: <v2::Store as Receiver>::SCHEMA,
                    found: <v1::Store as Receiver>::SCHEMA,
                }
            ),
            "receiver" => assert_eq!(
                violation,
                Violation::UnknownReceiver {
                    receiver: <Service as Receiver>::ID,
                    destination: 1,
                }
            ),
            _ => unreachable!(),
        }
        assert!(!conn.is_open());
        assert_eq!(conn.dispatch(Some(Duration::ZERO)), Err(error));
        assert_eq!(
            conn.send(
                Remote::<v2::Store>::new(1),
                &v2::Put {
                    key: "k".into(),
                    value: 0
                }
            ),
            Err(SendError::Failed(violation))
        );
        peer.expect_word(format!("closed:{case}").as_bytes());
    }
    peer.expect_success();
}

/// `send` and `send_with_reply` wait for room at most the configured
/// `send_timeout` when the peer does not read (in one process: the point is
/// the API, the ring is exercised across processes elsewhere).
#[test]
fn send_waits_at_most_the_send_timeout() {
    let config = service_config(Trust::Trusted)
        .ring_capacity(16 * 1024)
        .send_timeout(Some(Duration::from_millis(50)));
    let (mut conn, _idle_peer) = Connection::pair(config).expect("pair");
    let mut sent = 0;
    while conn.try_send(service(), &note(sent)).is_ok() {
        sent += 1;
    }
    assert!(sent > 0);
    assert_eq!(conn.send(service(), &note(sent)), Err(SendError::TimedOut));
    assert_eq!(
        conn.send_with_reply(service(), &Add { a: 1, b: 2 }, |_, _| {}),
        Err(SendError::TimedOut)
    );
    assert!(conn.is_open(), "a timeout does not end the connection");
}

/// `Note`, borrowing the sender's text (see `ferry_transport::View`).
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(crate = ferry_transport::rkyv, as = ArchivedNote)]
#[rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator,
                        __S::Error: rkyv::rancor::Source))]
struct NoteView<'a> {
    seq: u64,
    #[rkyv(with = rkyv::with::AsString, omit_bounds)]
    text: &'a str,
    checksum: u64,
}

/// `Big`, borrowing the sender's bytes.
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(crate = ferry_transport::rkyv, as = ArchivedBig)]
#[rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator,
                        __S::Error: rkyv::rancor::Source))]
struct BigView<'a> {
    #[rkyv(with = rkyv::with::AsVec, omit_bounds)]
    data: &'a [u8],
    checksum: u64,
    reply_len: u64,
}

/// Views of messages, serialized from the sender's own buffers, reach a
/// service in another process as the messages they stand for: notes (each
/// checked against its checksum by the service), a call whose request is a
/// 256 KiB view (in the ring) and one of 4 MiB (out of line), from the
/// connection and from a split sender. The archives are byte for byte
/// those of the messages.
fn views_reach_the_service_as_their_messages(trust: Trust) {
    // The archive of a view is the archive of its message.
    let text = "borrowed, not copied";
    let owned = Note {
        seq: 7,
        text: text.into(),
        checksum: 99,
    };
    let view = NoteView {
        seq: 7,
        text,
        checksum: 99,
    };
    assert_eq!(
        rkyv::to_bytes::<rkyv::rancor::Error>(&owned)
            .unwrap()
            .as_slice(),
        rkyv::to_bytes::<rkyv::rancor::Error>(&view)
            .unwrap()
            .as_slice()
    );

    let config = service_config(trust);
    let (mut conn, peer) = connect_peer("service", &config, &[]);
    const NOTES: u64 = 300;
    for seq in 0..NOTES {
        let note = note(seq);
        let view = NoteView {
            seq,
            text: &note.text,
            checksum: note.checksum,
        };
        conn.send_as::<Note>(service(), &view)
            .expect("send a note view");
    }
    for (len, salt) in [(256 << 10, 0x21_u8), (4 << 20, 0x42)] {
        let data = pattern(len, salt);
        let view = BigView {
            data: &data,
            checksum: fnv64(&data),
            reply_len: 32,
        };
        let reply = conn
            .send_sync_as::<Big>(service(), &view, OP_TIMEOUT)
            .expect("a call with a view");
        assert!(reply.intact, "the service saw a {len}-byte view intact");
        assert_eq!(reply.checksum.to_native(), fnv64(&data));
    }
    assert_eq!(conn.stats().out_of_line_sent, 1, "only the 4 MiB view");
    let (sender, mut conn) = conn.split().expect("split");
    let last = note(NOTES);
    let view = NoteView {
        seq: NOTES,
        text: &last.text,
        checksum: last.checksum,
    };
    sender
        .send_as::<Note>(service(), &view)
        .expect("a view from the sending half");
    let tally = conn
        .send_sync(service(), &Tally {}, OP_TIMEOUT)
        .expect("tally");
    assert_eq!(tally.notes.to_native(), NOTES + 1);
    assert_eq!(tally.bad.to_native(), 0, "every note's checksum matched");
    assert_eq!(tally.next_seq.to_native(), NOTES + 1, "in order");
    drop(tally);
    drop((sender, conn));
    peer.expect_success();
}

#[test]
fn views_reach_the_service_as_their_messages_trusted() {
    views_reach_the_service_as_their_messages(Trust::Trusted);
}

#[test]
fn views_reach_the_service_as_their_messages_untrusted() {
    views_reach_the_service_as_their_messages(Trust::Untrusted);
}
