//! The public fuzzing support (feature `fuzzing`): each checker passes on
//! honest and random inputs, reaches the handlers, and catches a planted
//! defect of its kind. Run with
//! `cargo test -p ferry-transport --features fuzzing --test fuzzing`.
#![cfg(feature = "fuzzing")]

use ferry_transport::fuzzing::arbitrary::{Arbitrary, Unstructured};
use ferry_transport::fuzzing::decode::{self, Decoded};
use ferry_transport::fuzzing::dispatch::mode;
use ferry_transport::fuzzing::{
    AttachedFd, Check, PeerOp, Protocol, Target, Visitor, dispatch_input,
};
use ferry_transport::rkyv;
use ferry_transport::wire::{ENVELOPE_SIZE, Envelope, Flags};
use ferry_transport::{ConnectionConfig, Context, Message, Receiver, Remote, schema_of};
use std::os::fd::IntoRawFd;

ferry_transport::protocol! {
    /// What the victim serves.
    pub receiver Store handled_by StoreHandler {
        /// Stores a value; the victim tells its peer.
        fn put => Put { key: String, value: u64 };
        /// Reads one back.
        fn get => Get { key: String } -> Got { value: Option<u64> };
        /// Allowed while waiting.
        @allowed_while_waiting
        fn ping => Ping { data: Vec<u8> } -> Pong { len: u32 };
        /// Takes descriptors; `leak` keeps them open for good on a leaky
        /// shop (a planted defect).
        fn share => Share { leak: bool };
    }
}

ferry_transport::protocol! {
    /// What the victim's peer serves.
    pub receiver Client handled_by ClientHandler {
        /// A value changed.
        fn changed => Changed { key: String };
        /// A question for the peer.
        fn ask => Ask { question: String } -> Answer { yes: bool };
        /// Configured out: no type, no `Arbitrary`, not in the list.
        #[cfg(any())]
        fn absent => Absent { missing: NoSuchType } -> AbsentReply { gone: NoSuchType };
        /// Configured in.
        #[cfg(all())]
        fn present => Present { here: u8 };
    }
}

type Both = (Store, Client);
const SCHEMA: u64 = schema_of(&[Store::SCHEMA, Client::SCHEMA]);

/// The victim's handler; a leaky one keeps descriptors when told to.
struct Shop {
    leaky: bool,
}

impl StoreHandler for Shop {
    fn put(&self, context: &mut Context, message: &ArchivedPut) {
        let key = message.key.as_str().chars().take(8).collect();
        let _ = context.try_send(Remote::<Client>::new(0), &Changed { key });
    }
    fn get(&self, _: &mut Context, message: &ArchivedGet) -> Got {
        Got {
            value: Some(message.key.len() as u64),
        }
    }
    fn ping(&self, _: &mut Context, message: &ArchivedPing) -> Pong {
        Pong {
            len: message.data.len() as u32,
        }
    }
    fn share(&self, context: &mut Context, message: &ArchivedShare) {
        let fds = context.take_fds();
        if self.leaky && message.leak {
            for fd in fds {
                let _ = fd.into_raw_fd();
            }
        }
    }
}

fn target() -> Target<Both> {
    Target::new(ConnectionConfig::default().schema(SCHEMA))
        .serve(0, || Store::handler(Shop { leaky: false }))
        .serve(5, || Store::handler(Shop { leaky: false }))
}

fn leaky_target() -> Target<Both> {
    Target::new(ConnectionConfig::default().schema(SCHEMA))
        .serve(0, || Store::handler(Shop { leaky: true }))
}

fn frame<M: Message>(destination: u64, message: &M, flags: u16, fd_count: u16) -> Vec<u8> {
    let body = rkyv::to_bytes::<rkyv::rancor::Error>(message).expect("serialize");
    let envelope = Envelope {
        destination,
        request_id: 0,
        receiver: <M::Receiver as Receiver>::ID,
        schema: <M::Receiver as Receiver>::SCHEMA,
        message: M::ID,
        flags: Flags(flags),
        fd_count,
    };
    let mut frame = vec![0u8; ENVELOPE_SIZE + body.len()];
    envelope.write_to(&mut frame);
    frame[ENVELOPE_SIZE..].copy_from_slice(&body);
    frame
}

fn random_input(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
    (0..rng.usize(..len)).map(|_| rng.u8(..)).collect()
}

#[test]
fn protocol_messages_are_arbitrary() {
    let bytes: Vec<u8> = (0..64u8)
        .map(|i| i.wrapping_mul(7).wrapping_add(3))
        .collect();
    let put = Put::arbitrary(&mut Unstructured::new(&bytes)).expect("a Put");
    let again = Put::arbitrary(&mut Unstructured::new(&bytes)).expect("a Put");
    assert_eq!(put, again, "the same bytes build the same message");
    let other = Put::arbitrary(&mut Unstructured::new(&bytes[1..])).expect("a Put");
    assert_ne!(put, other, "other bytes build another message");
    // Replies too.
    Pong::arbitrary(&mut Unstructured::new(&bytes)).expect("a Pong");
}

#[test]
fn protocol_lists_its_messages() {
    #[derive(Default)]
    struct Names(Vec<(&'static str, bool)>);
    impl Visitor for Names {
        fn message<M: Message + ferry_transport::fuzzing::Fuzzable>(&mut self) {
            self.0.push((M::NAME, false));
        }
        fn request<
            M: ferry_transport::Request<Reply: ferry_transport::fuzzing::Fuzzable>
                + ferry_transport::fuzzing::Fuzzable,
        >(
            &mut self,
        ) {
            self.0.push((M::NAME, true));
        }
    }
    let mut names = Names::default();
    Both::visit(&mut names);
    assert_eq!(
        names.0,
        [
            ("Put", false),
            ("Get", true),
            ("Ping", true),
            ("Share", false),
            ("Changed", false),
            ("Ask", true),
            ("Present", false)
        ]
    );
}

#[test]
fn decode_accepts_real_frames_and_survives_random_ones() {
    let put = frame(
        0,
        &Put {
            key: "k".into(),
            value: 9,
        },
        0,
        0,
    );
    assert_eq!(decode::check_frame::<Both>(&put, 4), Ok(Decoded::Accepted));
    let ping = frame(
        0,
        &Ping { data: vec![1, 2] },
        Flags::ALLOWED_WHILE_WAITING,
        0,
    );
    assert_eq!(decode::check_frame::<Both>(&ping, 4), Ok(Decoded::Accepted));
    // A reply is validated as the reply type.
    let got = rkyv::to_bytes::<rkyv::rancor::Error>(&Got { value: None }).expect("serialize");
    let mut reply = frame(0, &Get { key: String::new() }, Flags::REPLY, 0);
    reply.truncate(ENVELOPE_SIZE);
    reply[8] = 1; // request id
    reply.extend_from_slice(&got);
    assert_eq!(
        decode::check_frame::<Both>(&reply, 4),
        Ok(Decoded::Accepted)
    );
    // Cut short, the archive is invalid; unknown to the protocol, unknown.
    assert_eq!(
        decode::check_frame::<Both>(&put[..put.len() - 4], 4),
        Ok(Decoded::Invalid)
    );
    assert_eq!(
        decode::check_frame::<Store>(&frame(0, &Changed { key: "x".into() }, 0, 0), 4),
        Ok(Decoded::Unknown)
    );
    assert_eq!(
        decode::check_frame::<Both>(&put[..10], 4),
        Ok(Decoded::Refused)
    );

    let mut rng = fastrand::Rng::with_seed(16);
    for _ in 0..2000 {
        let mut input = random_input(&mut rng, 200);
        // Half of them start from a real frame, a few bytes flipped.
        if rng.bool() {
            input = put.clone();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..input.len());
                input[at] ^= rng.u8(1..);
            }
        }
        if let Err(finding) = decode::check_frame::<Both>(&input, 4) {
            panic!("{finding} for {input:02x?}");
        }
    }
}

/// A field whose decoder is not stable: every decode adds one (planted).
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize)]
#[rkyv(crate = ferry_transport::rkyv)]
pub struct Drift(u32);

impl<D: rkyv::rancor::Fallible + ?Sized> rkyv::Deserialize<Drift, D> for ArchivedDrift {
    fn deserialize(&self, _: &mut D) -> Result<Drift, D::Error> {
        Ok(Drift(self.0.to_native().wrapping_add(1)))
    }
}

impl<'a> Arbitrary<'a> for Drift {
    fn arbitrary(u: &mut Unstructured<'a>) -> ferry_transport::fuzzing::arbitrary::Result<Self> {
        Ok(Drift(u.arbitrary()?))
    }
}

ferry_transport::protocol! {
    /// A receiver with the planted field.
    pub receiver Drifting handled_by DriftingHandler {
        /// Carries it.
        fn step => Step { drift: Drift };
    }
}

#[test]
fn decode_catches_an_archive_that_does_not_re_encode_identically() {
    let step = frame(0, &Step { drift: Drift(5) }, 0, 0);
    let finding = decode::check_frame::<Drifting>(&step, 4).unwrap_err();
    assert_eq!(finding.check, Check::ArchiveRoundTrip, "{finding}");
}

#[test]
fn decode_catches_an_encoder_that_does_not_re_encode_identically() {
    let put = frame(
        0,
        &Put {
            key: "k".into(),
            value: 9,
        },
        0,
        0,
    );
    let envelope = Envelope::decode(&put, 4).expect("an envelope");
    let same = decode::reencodes_identically("envelope", &put[..ENVELOPE_SIZE], &envelope, |e| {
        let mut out = [0u8; ENVELOPE_SIZE];
        e.write_to(&mut out);
        out.to_vec()
    });
    assert_eq!(same, Ok(()));
    // Planted: an encoder that drops the flags.
    let lossy = decode::reencodes_identically("envelope", &put[..ENVELOPE_SIZE], &envelope, |e| {
        let mut out = [0u8; ENVELOPE_SIZE];
        Envelope {
            flags: Flags(0),
            ..*e
        }
        .write_to(&mut out);
        out.to_vec()
    });
    let ping = frame(0, &Ping { data: vec![] }, Flags::ALLOWED_WHILE_WAITING, 0);
    let envelope = Envelope::decode(&ping, 4).expect("an envelope");
    let lossy_ping =
        decode::reencodes_identically("envelope", &ping[..ENVELOPE_SIZE], &envelope, |e| {
            let mut out = [0u8; ENVELOPE_SIZE];
            Envelope {
                flags: Flags(0),
                ..*e
            }
            .write_to(&mut out);
            out.to_vec()
        });
    assert_eq!(lossy, Ok(()), "Put has no flags to lose");
    assert_eq!(lossy_ping.unwrap_err().check, Check::Reencode);
}

#[test]
#[cfg_attr(miri, ignore)]
fn dispatch_reaches_the_handlers_in_every_mode() {
    let put = frame(
        0,
        &Put {
            key: "k".into(),
            value: 9,
        },
        0,
        0,
    );
    let ping = frame(5, &Ping { data: vec![1] }, Flags::ALLOWED_WHILE_WAITING, 0);
    for mode in [
        0,
        mode::TRUSTED,
        mode::SYNC_CALL,
        mode::SYNC_CALL | mode::TRUSTED,
        1 << mode::REPLY_HANDLERS_SHIFT,
    ] {
        let input = dispatch_input(
            mode,
            None,
            &[PeerOp::Frame(put.clone()), PeerOp::Frame(ping.clone())],
        );
        let report = target().dispatch(&input).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(report.handled, 2, "mode {mode:#x}: {report:?}");
    }
    let raw = dispatch_input(mode::RAW_API, None, &[PeerOp::Frame(put.clone())]);
    assert_eq!(target().dispatch(&raw).map(|r| r.handled), Ok(1));
}

#[test]
#[cfg_attr(miri, ignore)]
fn dispatch_survives_random_inputs() {
    let mut rng = fastrand::Rng::with_seed(17);
    let mut handled = 0;
    for _ in 0..300 {
        let mut input = random_input(&mut rng, 300);
        if rng.bool() {
            // Mostly well-formed messages.
            input = vec![rng.u8(..) & !mode::LIMITS];
            for _ in 0..rng.usize(1..6) {
                input.push(2);
                let len = rng.u8(..);
                input.push(len);
                input.extend((0..len).map(|_| rng.u8(..)));
            }
        }
        match target().dispatch(&input) {
            Ok(report) => handled += report.handled,
            Err(finding) => panic!("{finding} for {input:02x?}"),
        }
    }
    assert!(handled > 50, "only {handled} messages reached a handler");
}

#[test]
#[cfg_attr(miri, ignore)]
fn dispatch_catches_a_handler_that_leaks_descriptors() {
    let attach = PeerOp::Attachment {
        header: None,
        fds: vec![AttachedFd::Unsealed(8)],
    };
    let keep = frame(0, &Share { leak: false }, 0, 1);
    let clean = dispatch_input(0, None, &[attach.clone(), PeerOp::Frame(keep)]);
    assert_eq!(leaky_target().dispatch(&clean).map(|r| r.handled), Ok(1));
    // Planted: the handler keeps the descriptor open for good.
    let leak = frame(0, &Share { leak: true }, 0, 1);
    let leaky = dispatch_input(0, None, &[attach, PeerOp::Frame(leak)]);
    let finding = leaky_target().dispatch(&leaky).unwrap_err();
    assert_eq!(finding.check, Check::FdLeak, "{finding}");
    // The session reaches the leak with messages it builds itself.
    let mut rng = fastrand::Rng::with_seed(20);
    let found = (0..300).find_map(|_| leaky_target().session(&random_input(&mut rng, 400)).err());
    assert_eq!(found.map(|f| f.check), Some(Check::FdLeak));
}

#[test]
#[cfg_attr(miri, ignore)]
fn session_runs_clean_and_reaches_the_handlers() {
    let mut rng = fastrand::Rng::with_seed(18);
    let mut handled = 0;
    let mut answered = 0;
    for _ in 0..200 {
        let input = random_input(&mut rng, 400);
        match target().session(&input) {
            Ok(report) => {
                handled += report.handled;
                answered += report.answered;
            }
            Err(finding) => panic!("{finding} for {input:02x?}"),
        }
    }
    assert!(handled > 100, "only {handled} messages reached a handler");
    assert!(answered > 0, "the victim never called the peer");
}

mod other_version {
    ferry_transport::protocol! {
        /// `Store` as another build declares it: the same name (so the
        /// same id), another schema.
        pub receiver Store handled_by StoreHandler {
            /// Stores a value.
            fn put => Put { key: String, value: u32 };
        }
    }

    pub struct Old;
    impl StoreHandler for Old {
        fn put(&self, _: &mut ferry_transport::Context, _: &ArchivedPut) {}
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn session_catches_a_victim_that_refuses_valid_traffic() {
    // Planted: the victim serves another declaration of `Store` than the
    // one the peer sends, so every honest message is a violation.
    let target = Target::<Both>::new(ConnectionConfig::default().schema(SCHEMA))
        .serve(0, || other_version::Store::handler(other_version::Old));
    let mut rng = fastrand::Rng::with_seed(19);
    let found = (0..200).find_map(|_| target.session(&random_input(&mut rng, 400)).err());
    let finding = found.expect("a finding");
    assert_eq!(finding.check, Check::ValidTrafficRefused, "{finding}");
}
