//! Real connections in one process, on the paths that need neither a second
//! process nor a memfd: typed messages dispatched in place (trusted) and
//! from a copy (untrusted), re-entrant synchronous calls across two threads,
//! reply handlers (run with the reply, or with `Disconnected`), a panicking
//! handler, registrations replaced and removed from inside a handler, and
//! one end dropped.
//!
//! `.ci/run` runs this file under miri, where `Connection::pair` puts both
//! rings on the heap instead of in a memfd (docs/decisions.md, "miri over
//! the transport"); everything else is the code every connection runs. As
//! an ordinary test it runs over a real sealed memfd.

use ferry_transport::{
    CallError, Connection, ConnectionConfig, Context, DispatchError, Receiver, RecvError, Remote,
    SendError, Trust, Violation,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

ferry_transport::protocol! {
    /// What both ends of the test connections speak.
    pub receiver Desk handled_by DeskHandler {
        /// Something to record: owned data, read in place or from a copy.
        fn note => Note { seq: u32, text: String, values: Vec<u64> };
        /// Asks for a sum. With `check` set, the handler first sends a
        /// `Note` and a `Progress` and asks the caller to `Confirm`, all
        /// while the caller waits for this very reply.
        fn add => Add { a: u64, b: u64, check: bool } -> Sum { value: u64 };
        /// Dispatched even while its receiver waits for a synchronous reply.
        @allowed_while_waiting
        fn progress => Progress { step: u32 };
        /// A synchronous call back into a caller that is waiting.
        fn confirm => Confirm { value: u64 } -> Confirmed { value: u64 };
        /// Asynchronous: its handler calls back synchronously (`Confirm`),
        /// then reads the message again and reports with a note.
        fn relay => Relay { a: u64, b: u64, text: String };
        /// Its handler panics.
        fn boom => Boom {};
        /// Its handler replaces (`replace`) or removes the registration it
        /// runs from.
        fn rearrange => Rearrange { replace: bool };
    }
}

/// Small rings: a ringful takes few messages, and miri zeroes less memory.
const RING: usize = 4096;
/// Every wait is bounded by this; none should take long.
const WAIT: Option<Duration> = Some(Duration::from_secs(10));
const DESK: u64 = 7;

fn desk() -> Remote<Desk> {
    Remote::new(DESK)
}

fn config(trust: Trust) -> ConnectionConfig {
    ConnectionConfig::default()
        .ring_capacity(RING)
        .trust(trust)
        .schema(ferry_transport::schema_of(&[Desk::SCHEMA]))
}

/// What the handlers of one test saw, in order.
type Log = Arc<Mutex<Vec<String>>>;

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// A handler that logs what it handles, under its name, and counts its own
/// drops (to show when a replaced or removed handler goes away).
struct Recorder {
    name: &'static str,
    log: Log,
    drops: Arc<AtomicUsize>,
}

impl Recorder {
    fn new(name: &'static str, log: &Log, drops: &Arc<AtomicUsize>) -> Recorder {
        Recorder {
            name,
            log: Arc::clone(log),
            drops: Arc::clone(drops),
        }
    }

    fn record(&self, entry: String) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{} {entry}", self.name));
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

impl DeskHandler for Recorder {
    fn note(&self, _: &mut Context, message: &ArchivedNote) {
        let sum: u64 = message.values.iter().map(|v| v.to_native()).sum();
        self.record(format!(
            "note {} {} {sum}",
            message.seq.to_native(),
            message.text.as_str()
        ));
    }

    fn add(&self, context: &mut Context, message: &ArchivedAdd) -> Sum {
        let value = message.a.to_native() + message.b.to_native();
        if message.check {
            // The caller waits for our reply: a plain note is set aside
            // until its next dispatch, a `Progress` is dispatched at once,
            // and so is the synchronous `Confirm` (it calls back in).
            let note = Note {
                seq: 99,
                text: "set aside".into(),
                values: vec![1],
            };
            context.send(desk(), &note).expect("send a note");
            context
                .send(desk(), &Progress { step: 1 })
                .expect("send progress");
            let confirmed = context
                .send_sync(desk(), &Confirm { value }, WAIT.unwrap())
                .expect("the waiting caller confirms");
            self.record(format!("confirmed {}", confirmed.value.to_native()));
        }
        self.record(format!("add {value}"));
        Sum { value }
    }

    fn progress(&self, _: &mut Context, message: &ArchivedProgress) {
        self.record(format!("progress {}", message.step.to_native()));
    }

    fn confirm(&self, _: &mut Context, message: &ArchivedConfirm) -> Confirmed {
        self.record(format!("confirm {}", message.value.to_native()));
        Confirmed {
            value: message.value.to_native(),
        }
    }

    fn relay(&self, context: &mut Context, message: &ArchivedRelay) {
        // Read in place (trusted), this message pins its frame while the
        // nested call below receives the frames behind it.
        let value = message.a.to_native() + message.b.to_native();
        let confirmed = context
            .send_sync(desk(), &Confirm { value }, WAIT.unwrap())
            .expect("the peer confirms");
        // Still the same bytes after the nested receives.
        self.record(format!(
            "relay {} {}",
            message.text.as_str(),
            confirmed.value.to_native()
        ));
        let note = Note {
            seq: 100,
            text: "relayed".into(),
            values: Vec::new(),
        };
        context.send(desk(), &note).expect("report");
    }

    fn boom(&self, _: &mut Context, _: &ArchivedBoom) {
        panic!("boom (a handler panicking on purpose)");
    }

    fn rearrange(&self, context: &mut Context, message: &ArchivedRearrange) {
        if message.replace {
            let replacement = Recorder::new("second", &self.log, &self.drops);
            assert!(
                context.register(DESK, Desk::handler(replacement)),
                "there was a registration to replace"
            );
        } else {
            assert!(
                context.unregister::<Desk>(DESK),
                "there was a registration to remove"
            );
        }
        // This handler's registration is gone, but it runs on: `self` (and
        // its log) must still be alive here.
        self.record(format!("rearranged, replace={}", message.replace));
    }
}

/// Notes of a few sizes, with text and vectors, arrive intact and in order,
/// read in place (trusted) or from a private copy (untrusted).
#[test]
fn typed_messages_are_dispatched_in_both_trust_modes() {
    for trust in [Trust::Trusted, Trust::Untrusted] {
        let (mut sender, mut receiver) = Connection::pair(config(trust)).expect("pair");
        let log = Log::default();
        let drops = Arc::new(AtomicUsize::new(0));
        receiver.register(DESK, Desk::handler(Recorder::new("r", &log, &drops)));
        let mut expected = Vec::new();
        for seq in 0..6u32 {
            // All six fit the ring together (about half of it).
            let values: Vec<u64> = (0..u64::from(seq) * 10).collect();
            let text = format!("ñote {seq} {}", "x".repeat(seq as usize * 20));
            expected.push(format!(
                "r note {seq} {text} {}",
                values.iter().sum::<u64>()
            ));
            let note = Note { seq, text, values };
            sender.send(desk(), &note).expect("send");
        }
        let mut dispatched = 0;
        while dispatched < expected.len() {
            let count = receiver.dispatch(WAIT).expect("dispatch");
            assert!(count > 0, "{trust:?}: the notes are there already");
            dispatched += count;
        }
        assert_eq!(entries(&log), expected, "{trust:?}");
        assert_eq!(receiver.stats().frames_received, expected.len() as u64);
        drop(receiver);
        assert_eq!(drops.load(Ordering::SeqCst), 1, "the handler was dropped");
    }
}

/// A synchronous call whose handler, on another thread, sends a note (not
/// allowed while waiting: set aside), a `Progress` (allowed while waiting:
/// dispatched during the wait) and calls back synchronously (dispatched
/// during the wait, re-entrantly), before it replies. The serving end lives
/// on its own thread and sees `Disconnected` when the caller drops its end.
#[test]
fn reentrant_synchronous_calls_across_two_threads() {
    for trust in [Trust::Trusted, Trust::Untrusted] {
        let (mut caller, mut server) = Connection::pair(config(trust)).expect("pair");
        let log = Log::default();
        let drops = Arc::new(AtomicUsize::new(0));
        caller.register(DESK, Desk::handler(Recorder::new("caller", &log, &drops)));
        server.register(DESK, Desk::handler(Recorder::new("server", &log, &drops)));
        let serving = std::thread::spawn(move || {
            loop {
                match server.dispatch(WAIT) {
                    Ok(_) => {}
                    Err(DispatchError::Disconnected) => break,
                    Err(other) => panic!("server: {other}"),
                }
            }
            assert!(!server.is_open());
            assert!(server.peer_closed_cleanly(), "the caller dropped its end");
        });

        let sum = caller
            .send_sync(
                desk(),
                &Add {
                    a: 1,
                    b: 2,
                    check: true,
                },
                WAIT.unwrap(),
            )
            .expect("the call completes");
        assert_eq!(sum.value.to_native(), 3);
        drop(sum);
        assert_eq!(
            entries(&log),
            [
                "caller progress 1",
                "caller confirm 3",
                "server confirmed 3",
                "server add 3"
            ],
            "{trust:?}: what ran during the wait, in order"
        );
        assert!(caller.has_deferred(), "{trust:?}: the note was set aside");
        assert_eq!(caller.dispatch(WAIT), Ok(1));
        assert_eq!(
            entries(&log).last().map(String::as_str),
            Some("caller note 99 set aside 1")
        );

        // A plain call: no nesting.
        let sum = caller
            .send_sync(
                desk(),
                &Add {
                    a: 20,
                    b: 22,
                    check: false,
                },
                WAIT.unwrap(),
            )
            .expect("the second call completes");
        assert_eq!(sum.value.to_native(), 42);
        drop(sum);

        // An asynchronous message whose handler calls back synchronously:
        // the caller's dispatch answers the call, then gets the report.
        let relay = Relay {
            a: 3,
            b: 4,
            text: "through a nested call".into(),
        };
        caller.send(desk(), &relay).expect("send relay");
        let mut dispatched = 0;
        while dispatched < 2 {
            let count = caller.dispatch(WAIT).expect("dispatch");
            assert!(count > 0, "{trust:?}: the server relays within the timeout");
            dispatched += count;
        }
        assert_eq!(
            entries(&log)[5..],
            [
                "server add 42",
                "caller confirm 7",
                "server relay through a nested call 7",
                "caller note 100 relayed 0",
            ],
            "{trust:?}"
        );

        drop(caller);
        serving.join().expect("the server saw Disconnected");
        assert_eq!(drops.load(Ordering::SeqCst), 2, "both handlers dropped");
    }
}

/// The raw frame API: frames sent by copy and written in place (committed
/// at once, or deferred and flushed), received in place or copied, and
/// given back when dropped, for several ringfuls (so the rings wrap).
#[test]
fn raw_frames_round_trip() {
    for trust in [Trust::Trusted, Trust::Untrusted] {
        let (mut sender, mut receiver) = Connection::pair(config(trust)).expect("pair");
        for round in 0..3 * RING / 256 {
            let len = 100 + round * 37 % 300;
            let byte = round as u8;
            match round % 3 {
                0 => sender.send_frame(&vec![byte; len], WAIT).expect("send"),
                1 => {
                    let mut writer = sender.reserve_frame(len, WAIT).expect("reserve");
                    writer.fill(byte);
                    writer.commit();
                }
                _ => {
                    let mut writer = sender.reserve_frame(len, WAIT).expect("reserve");
                    writer.fill(byte);
                    writer.commit_deferred();
                    sender.flush();
                }
            }
            let frame = receiver.recv_frame(WAIT).expect("receive");
            assert_eq!(frame.bytes().len(), len, "{trust:?} round {round}");
            assert!(
                frame.bytes().iter().all(|&b| b == byte),
                "{trust:?} round {round}"
            );
        }
        assert!(matches!(receiver.try_recv_frame(), Err(RecvError::Empty)));
    }
}

/// Reply handlers run with their replies during `dispatch` (and may use
/// the connection they get); one whose reply never comes runs with
/// `Disconnected` when the peer drops its end.
#[test]
fn reply_handlers_run_with_the_reply_or_fail_on_disconnect() {
    let (mut client, mut server) = Connection::pair(config(Trust::Trusted)).expect("pair");
    let log = Log::default();
    let drops = Arc::new(AtomicUsize::new(0));
    client.register(DESK, Desk::handler(Recorder::new("client", &log, &drops)));
    server.register(DESK, Desk::handler(Recorder::new("server", &log, &drops)));
    let outcomes: Arc<Mutex<Vec<Result<u64, CallError>>>> = Arc::default();
    for (a, b) in [(1, 2), (3, 4)] {
        let seen = Arc::clone(&outcomes);
        let add = Add { a, b, check: false };
        client
            .send_with_reply(desk(), &add, move |context, reply| {
                let reply = reply.map(|sum| sum.value.to_native());
                if let Ok(value) = reply {
                    // A reply handler may send on the connection it runs on.
                    let note = Note {
                        seq: value as u32,
                        text: "from a reply handler".into(),
                        values: Vec::new(),
                    };
                    context
                        .send(desk(), &note)
                        .expect("send from a reply handler");
                }
                seen.lock().unwrap().push(reply);
            })
            .expect("request");
    }
    assert_eq!(server.dispatch(WAIT), Ok(2));
    assert_eq!(client.dispatch(WAIT), Ok(2));
    assert_eq!(*outcomes.lock().unwrap(), [Ok(3), Ok(7)]);
    assert_eq!(server.dispatch(WAIT), Ok(2), "the notes the handlers sent");

    let seen = Arc::clone(&outcomes);
    client
        .send_with_reply(
            desk(),
            &Add {
                a: 5,
                b: 6,
                check: false,
            },
            move |_, reply| {
                seen.lock()
                    .unwrap()
                    .push(reply.map(|sum| sum.value.to_native()));
            },
        )
        .expect("a request that gets no answer");
    drop(server);
    assert_eq!(client.dispatch(WAIT), Err(DispatchError::Disconnected));
    assert_eq!(
        *outcomes.lock().unwrap(),
        [Ok(3), Ok(7), Err(CallError::Disconnected)]
    );
    assert!(!client.is_open());
    assert_eq!(
        entries(&log),
        [
            "server add 3",
            "server add 7",
            "server note 3 from a reply handler 0",
            "server note 7 from a reply handler 0",
        ]
    );
}

/// A handler that panics gives its frame back: once the application caught
/// the panic, the connection still carries several ringfuls.
#[test]
fn a_panicking_handler_gives_its_frame_back() {
    let (mut sender, mut receiver) = Connection::pair(config(Trust::Trusted)).expect("pair");
    let log = Log::default();
    let drops = Arc::new(AtomicUsize::new(0));
    receiver.register(DESK, Desk::handler(Recorder::new("r", &log, &drops)));
    sender.send(desk(), &Boom {}).expect("send boom");
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = receiver.dispatch(WAIT);
    }));
    assert!(panicked.is_err(), "the handler's panic reaches the caller");
    assert!(receiver.is_open());

    // Each note takes 256 bytes of the ring or more: 3 ringfuls.
    let total = 3 * RING / 256;
    let mut sent = 0;
    let mut stalls = 0;
    while sent < total {
        let note = Note {
            seq: sent as u32,
            text: "y".repeat(150),
            values: Vec::new(),
        };
        match sender.try_send(desk(), &note) {
            Ok(()) => sent += 1,
            Err(SendError::Full) => {
                if receiver.try_dispatch().expect("dispatch") == 0 {
                    stalls += 1;
                    assert!(stalls < 10, "the ring stays full: the frame pins it");
                }
            }
            Err(other) => panic!("send: {other}"),
        }
    }
    while receiver.try_dispatch().expect("dispatch") > 0 {}
    assert_eq!(entries(&log).len(), total);
}

/// A handler may replace the registration it runs from (the next message
/// goes to the replacement; the replaced handler runs to its end and is
/// dropped after) or remove it (a message for nobody is then a violation).
#[test]
fn a_handler_replaces_and_removes_its_own_registration() {
    let (mut sender, mut receiver) = Connection::pair(config(Trust::Trusted)).expect("pair");
    let log = Log::default();
    let drops = Arc::new(AtomicUsize::new(0));
    receiver.register(DESK, Desk::handler(Recorder::new("first", &log, &drops)));
    let note = |seq| Note {
        seq,
        text: String::new(),
        values: Vec::new(),
    };

    sender
        .send(desk(), &Rearrange { replace: true })
        .expect("send");
    sender.send(desk(), &note(1)).expect("send");
    assert_eq!(receiver.dispatch(WAIT), Ok(2));
    assert_eq!(drops.load(Ordering::SeqCst), 1, "the replaced one is gone");

    sender
        .send(desk(), &Rearrange { replace: false })
        .expect("send");
    assert_eq!(receiver.dispatch(WAIT), Ok(1));
    assert_eq!(drops.load(Ordering::SeqCst), 2, "the removed one is gone");
    assert_eq!(
        entries(&log),
        [
            "first rearranged, replace=true",
            "second note 1  0",
            "second rearranged, replace=false",
        ]
    );

    sender.send(desk(), &note(2)).expect("send");
    let error = receiver.dispatch(WAIT).expect_err("nobody handles it");
    assert!(
        matches!(
            error,
            DispatchError::ProtocolViolation {
                violation: Violation::UnknownDestination {
                    destination: DESK,
                    ..
                },
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!receiver.is_open());
}

/// Dropping one end: the other still gets what was sent before, then
/// `Disconnected` on every operation.
#[test]
fn dropping_one_end_disconnects_the_other() {
    let (mut leaving, mut staying) = Connection::pair(config(Trust::Trusted)).expect("pair");
    let log = Log::default();
    let drops = Arc::new(AtomicUsize::new(0));
    staying.register(DESK, Desk::handler(Recorder::new("s", &log, &drops)));
    let last = Note {
        seq: 1,
        text: "last words".into(),
        values: vec![2, 3],
    };
    leaving.send(desk(), &last).expect("send");
    drop(leaving);
    assert_eq!(staying.dispatch(WAIT), Ok(1), "sent before the drop");
    assert_eq!(entries(&log), ["s note 1 last words 5"]);
    assert_eq!(staying.dispatch(WAIT), Err(DispatchError::Disconnected));
    assert!(!staying.is_open());
    assert!(staying.peer_closed_cleanly());
    assert_eq!(
        staying.send(desk(), &last).err(),
        Some(SendError::Disconnected)
    );
    let call = staying.send_sync(desk(), &Confirm { value: 1 }, WAIT.unwrap());
    assert_eq!(call.err(), Some(CallError::Disconnected));
}

/// A split connection in one process (and under miri): two threads send
/// through clones of the sending half while a third calls synchronously
/// from it; the receiving half's dispatch thread routes the call's reply to
/// that caller; the peer sees every note once, each thread's in order. Then
/// the peer goes away: the sending half learns it.
#[test]
fn split_halves_send_call_and_route_replies() {
    let (ours, mut theirs) = Connection::pair(config(Trust::Untrusted)).unwrap();
    let log = Log::default();
    let drops = Arc::new(AtomicUsize::new(0));
    theirs.register(DESK, Desk::handler(Recorder::new("peer", &log, &drops)));
    let (sender, mut receiving) = ours.split().unwrap();
    let peer = std::thread::spawn(move || {
        while theirs.dispatch(WAIT).expect("the peer dispatches") > 0 {
            if entries(&log).len() == 2 * 3 + 1 {
                break;
            }
        }
        (theirs, log)
    });
    let senders: Vec<_> = (0..2u32)
        .map(|thread| {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for seq in 0..3 {
                    let note = Note {
                        seq: thread * 10 + seq,
                        text: format!("t{thread}"),
                        values: vec![u64::from(seq)],
                    };
                    sender.send(desk(), &note).expect("a send from a clone");
                }
            })
        })
        .collect();
    // The receiving half is driven on a thread of its own: the call's reply
    // reaches the caller through it.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let driver = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                receiving
                    .dispatch(Some(Duration::from_millis(10)))
                    .expect("the receiving half dispatches");
            }
            receiving
        })
    };
    let sum = sender
        .send_sync(
            desk(),
            &Add {
                a: 2,
                b: 3,
                check: false,
            },
            WAIT.unwrap(),
        )
        .expect("a call from the sending half");
    assert_eq!(sum.value.to_native(), 5);
    for thread in senders {
        thread.join().unwrap();
    }
    let (theirs, log) = peer.join().unwrap();
    let seen = entries(&log);
    for thread in 0..2u32 {
        let notes: Vec<&String> = seen
            .iter()
            .filter(|e| e.starts_with("peer note") && e.contains(&format!(" t{thread} ")))
            .collect();
        assert_eq!(notes.len(), 3, "{seen:?}");
        for (seq, entry) in notes.iter().enumerate() {
            assert!(
                entry.starts_with(&format!("peer note {} ", thread * 10 + seq as u32)),
                "{seen:?}"
            );
        }
    }
    assert!(seen.contains(&"peer add 5".to_string()), "{seen:?}");
    done.store(true, Ordering::SeqCst);
    let receiving = driver.join().unwrap();
    drop(theirs);
    // The peer is gone: a send finds it (in the ring or from the watcher).
    let deadline = std::time::Instant::now() + WAIT.unwrap();
    while sender.try_send(desk(), &Progress { step: 1 }).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "never saw the peer go"
        );
        std::thread::yield_now();
    }
    assert_eq!(
        sender.send(desk(), &Progress { step: 2 }),
        Err(SendError::Disconnected)
    );
    drop(receiving);
}
