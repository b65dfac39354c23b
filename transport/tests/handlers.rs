//! What a handler cannot break: a panicking handler gives its frame back;
//! a reply handler runs whatever ends its request; a call given up on costs
//! nothing when its late reply comes. In one process: the peer is a
//! producer attached by hand to the ring the victim reads, so it can send
//! replies that name anything.

use ferry_handoff::Channel;
use ferry_ring::{Producer, Region};
use ferry_transport::rkyv;
use ferry_transport::wire::{ENVELOPE_SIZE, Envelope, Flags};
use ferry_transport::{
    CallError, Connection, ConnectionConfig, Context, DispatchError, EndpointInfo, Message,
    Receiver, Remote, SendError, Violation,
};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

ferry_transport::protocol! {
    /// The receiver under test.
    pub receiver Probe handled_by ProbeHandler {
        fn ask => Ask { n: u32 } -> Answer { n: u32 };
        fn note => Note { n: u32, pad: Vec<u8> };
        fn boom => Boom {};
        @allowed_while_waiting
        fn poke => Poke {};
    }
}

const RING: usize = 16 * 1024;
const WAIT: Option<Duration> = Some(Duration::from_secs(5));

fn config() -> ConnectionConfig {
    ConnectionConfig::default()
        .ring_capacity(RING)
        .schema(ferry_transport::schema_of(&[Probe::SCHEMA]))
}

/// Counts notes; panics on `Boom`.
#[derive(Clone, Default)]
struct Counter(Arc<Mutex<u32>>);

impl ProbeHandler for Counter {
    fn ask(&self, _: &mut Context, message: &ArchivedAsk) -> Answer {
        Answer {
            n: message.n.to_native(),
        }
    }
    fn note(&self, _: &mut Context, _: &ArchivedNote) {
        *self.0.lock().unwrap() += 1;
    }
    fn boom(&self, _: &mut Context, _: &ArchivedBoom) {
        panic!("boom");
    }
    fn poke(&self, _: &mut Context, _: &ArchivedPoke) {}
}

/// A handler that panics does not keep its frame's room: after the panic
/// (caught by the application) the connection carries many ringfuls more.
/// Before frames owned their pin, the panicking frame pinned the ring for
/// good and the sender saw `Full` forever.
#[test]
fn a_panicking_handler_gives_its_frame_back() {
    let (mut sender, mut receiver) = Connection::pair(config()).expect("pair");
    let counter = Counter::default();
    receiver.register(1, Probe::handler(counter.clone()));
    let probe = Remote::<Probe>::new(1);
    sender.send(probe, &Boom {}).expect("send boom");
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = receiver.dispatch(WAIT);
    }));
    assert!(panicked.is_err(), "the handler's panic reaches the caller");
    assert!(receiver.is_open());

    let note = Note {
        n: 0,
        pad: vec![7; 200],
    };
    let total = 8 * RING / 256;
    let mut sent = 0;
    let mut stalls = 0;
    while sent < total {
        match sender.try_send(probe, &note) {
            Ok(()) => sent += 1,
            Err(SendError::Full) => {
                let dispatched = receiver.try_dispatch().expect("dispatch");
                if dispatched == 0 {
                    stalls += 1;
                    assert!(stalls < 100, "the ring stays full: the frame still pins it");
                }
            }
            Err(other) => panic!("send: {other}"),
        }
    }
    while receiver.try_dispatch().expect("dispatch") > 0 {}
    assert_eq!(*counter.0.lock().unwrap(), total as u32);
}

/// The victim's end, and a hand-held producer on the ring it reads.
struct Rig {
    victim: Connection,
    peer: Producer,
    _control: Channel,
    _rest: Vec<OwnedFd>,
}

fn rig() -> Rig {
    let (victim, endpoint) = Connection::create(config()).expect("create");
    let info = EndpointInfo::decode(&endpoint.metadata, endpoint.fds.len()).expect("metadata");
    let mut fds = endpoint.fds.into_iter();
    let region = Region::open(fds.next().expect("region")).expect("open region");
    let control = Channel::from(fds.next().expect("control"));
    let peer = Producer::attach(Arc::new(region), info.tx_offset as usize).expect("attach");
    Rig {
        victim,
        peer,
        _control: control,
        _rest: fds.collect(),
    }
}

impl Rig {
    /// Publishes a `Poke` (allowed while waiting) for destination 1.
    fn poke(&mut self) {
        let envelope = Envelope {
            destination: 1,
            request_id: 0,
            receiver: Probe::ID,
            schema: Probe::SCHEMA,
            message: <Poke as Message>::ID,
            flags: Flags(Flags::ALLOWED_WHILE_WAITING),
            fd_count: 0,
        };
        let archive = rkyv::to_bytes::<rkyv::rancor::Error>(&Poke {}).expect("archive");
        let mut frame = vec![0u8; ENVELOPE_SIZE + archive.len()];
        envelope.write_to(&mut frame);
        frame[ENVELOPE_SIZE..].copy_from_slice(&archive);
        self.peer.send(&frame, WAIT).expect("publish");
    }

    /// Publishes a reply to request `id` naming `message` of `Probe`.
    fn reply(&mut self, id: u64, message: u32, body: &impl Archive) {
        let envelope = Envelope {
            destination: 1,
            request_id: id,
            receiver: Probe::ID,
            schema: Probe::SCHEMA,
            message,
            flags: Flags(Flags::REPLY),
            fd_count: 0,
        };
        let archive = body.archive();
        let mut frame = vec![0u8; ENVELOPE_SIZE + archive.len()];
        envelope.write_to(&mut frame);
        frame[ENVELOPE_SIZE..].copy_from_slice(&archive);
        self.peer.send(&frame, WAIT).expect("publish");
    }
}

/// Archives of the reply bodies the rig sends.
trait Archive {
    fn archive(&self) -> rkyv::util::AlignedVec;
}

impl Archive for Answer {
    fn archive(&self) -> rkyv::util::AlignedVec {
        rkyv::to_bytes::<rkyv::rancor::Error>(self).expect("archive")
    }
}

/// A reply that names another message than its request is a violation,
/// and the request's reply handler still runs, with that violation (before,
/// it was dropped without being called).
#[test]
fn a_mismatched_reply_still_runs_its_reply_handler() {
    let mut rig = rig();
    let outcome = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&outcome);
    rig.victim
        .send_with_reply(Remote::<Probe>::new(1), &Ask { n: 1 }, move |_, reply| {
            *seen.lock().unwrap() = Some(reply.map(|answer| answer.n.to_native()));
        })
        .expect("request");
    rig.reply(1, <Note as Message>::ID, &Answer { n: 1 });
    let error = rig.victim.dispatch(WAIT).expect_err("a violation");
    assert!(matches!(
        error,
        DispatchError::ProtocolViolation {
            violation: Violation::MismatchedReply(1),
            ..
        }
    ));
    let outcome = outcome.lock().unwrap().clone();
    assert!(
        matches!(
            outcome,
            Some(Err(CallError::ProtocolViolation {
                violation: Violation::MismatchedReply(1),
                ..
            }))
        ),
        "the reply handler ran with the violation: {outcome:?}"
    );
}

/// A call that timed out keeps nothing: its late reply is dropped quietly
/// and the connection goes on; a reply to a request never made is still a
/// violation.
#[test]
fn a_late_reply_to_an_abandoned_call_is_dropped_quietly() {
    let mut rig = rig();
    let probe = Remote::<Probe>::new(1);
    for n in 1..=3u32 {
        let outcome = rig
            .victim
            .send_sync(probe, &Ask { n }, Duration::from_millis(5));
        assert_eq!(outcome.err(), Some(CallError::TimedOut));
    }
    for id in 1..=3 {
        rig.reply(id, <Ask as Message>::ID, &Answer { n: id as u32 });
    }
    // Then an answer the victim waits for: it is the one delivered.
    let victim = &mut rig.victim;
    victim
        .send_with_reply(probe, &Ask { n: 4 }, |_, _| {})
        .expect("request");
    rig.reply(4, <Ask as Message>::ID, &Answer { n: 4 });
    assert_eq!(rig.victim.dispatch(WAIT), Ok(4));
    assert!(rig.victim.is_open());
    rig.reply(99, <Ask as Message>::ID, &Answer { n: 99 });
    assert!(matches!(
        rig.victim.dispatch(WAIT),
        Err(DispatchError::ProtocolViolation {
            violation: Violation::UnexpectedReply(99),
            ..
        })
    ));
}

/// A reply parked for an outer synchronous call while a nested call (made
/// by a handler of an allowed-while-waiting message) fails is delivered to
/// the outer call, even when the handler then fails too. Before, the outer
/// call returned the handler's error and the reply stayed parked forever.
#[test]
fn a_reply_parked_during_a_failing_nested_call_reaches_its_caller() {
    let mut rig = rig();
    let probe = Remote::<Probe>::new(1);
    // A handler whose nested call times out, and which then fails.
    rig.victim.register(
        1,
        ferry_transport::BoundReceiver::new::<Probe>(move |context, _| {
            let nested = context.send_sync(probe, &Ask { n: 2 }, Duration::from_millis(20));
            assert_eq!(nested.err(), Some(CallError::TimedOut));
            Err(DispatchError::Reply(SendError::Full))
        }),
    );
    // In the ring before the outer call starts: the poke, then the reply to
    // the outer call (request 1), which the nested call (request 2) reads
    // and parks.
    rig.poke();
    rig.reply(1, <Ask as Message>::ID, &Answer { n: 1 });
    let reply = rig
        .victim
        .send_sync(probe, &Ask { n: 1 }, Duration::from_secs(5))
        .expect("the outer call gets its reply");
    assert_eq!(reply.n.to_native(), 1);
    assert!(rig.victim.is_open());
}
