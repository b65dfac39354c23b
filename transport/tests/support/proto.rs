//! The test protocol most cross-process tests speak, and a server for it.

use super::{fnv64, tell};
use ferry_handoff::Channel;
use ferry_transport::Context;
use ferry_transport::rkyv;
use ferry_transport::{Connection, ConnectionConfig, Receiver, Trust};
use std::cell::Cell;
use std::time::Duration;

/// A nested struct inside a message.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(crate = ferry_transport::rkyv)]
pub struct Inner {
    pub id: u32,
    pub tags: Vec<String>,
}

/// A struct nesting others, options and vectors.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(crate = ferry_transport::rkyv)]
pub struct Outer {
    pub name: String,
    pub inners: Vec<Inner>,
    pub best: Option<Inner>,
    pub flag: bool,
}

// Under the `fuzzing` feature, `protocol!` implements `Arbitrary` for
// every message, so the types inside them need it too.
#[cfg(feature = "fuzzing")]
mod arbitrary_fields {
    use super::{Inner, Outer};
    use ferry_transport::fuzzing::arbitrary::{Arbitrary, Result, Unstructured};

    impl<'a> Arbitrary<'a> for Inner {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            Ok(Inner {
                id: u.arbitrary()?,
                tags: u.arbitrary()?,
            })
        }
    }

    impl<'a> Arbitrary<'a> for Outer {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            Ok(Outer {
                name: u.arbitrary()?,
                inners: u.arbitrary()?,
                best: u.arbitrary()?,
                flag: u.arbitrary()?,
            })
        }
    }
}

ferry_transport::protocol! {
    /// A test service: counts notes, adds, echoes, sleeps, hangs.
    pub receiver Service handled_by ServiceHandler {
        /// One of a numbered stream of notes, carrying its own checksum.
        fn note => Note { seq: u64, text: String, checksum: u64 };
        /// Adds two numbers.
        fn add => Add { a: u64, b: u64 } -> Sum { value: u64 };
        /// What the service has seen so far.
        fn tally => Tally {} -> TallyReply { notes: u64, bad: u64, next_seq: u64, fds: u64 };
        /// Echoes nested types back.
        fn echo_nested => EchoNested { items: Vec<String>, maybe: Option<u64>, outer: Outer }
            -> NestedReply { items: Vec<String>, maybe: Option<u64>, outer: Outer };
        /// Replies after sleeping.
        fn slow => Slow { millis: u64, token: u64 } -> SlowReply { token: u64 };
        /// A large payload; the reply is `reply_len` bytes of pattern.
        fn big => Big { data: Vec<u8>, checksum: u64, reply_len: u64 }
            -> BigReply { intact: bool, checksum: u64, data: Vec<u8> };
        /// Never replies: tells the parent over the control channel, then
        /// sleeps until killed.
        fn hang => Hang {} -> HangReply {};
    }
}

/// The schema hash of connections speaking [`Service`].
pub const SERVICE_SCHEMA: u64 = ferry_transport::schema_of(&[<Service as Receiver>::SCHEMA]);

/// The destination the service is registered at.
pub const SERVICE_DESTINATION: u64 = 1;

/// A configuration for the service protocol.
pub fn service_config(trust: Trust) -> ConnectionConfig {
    ConnectionConfig::default()
        .trust(trust)
        .schema(SERVICE_SCHEMA)
        .peer_name("child")
}

/// What the sender writes into the memfd it attaches to notes.
pub const FD_CONTENT: &[u8] = b"read through the attached memfd";

/// The checksum a note carries.
pub fn note_checksum(seq: u64, text: &str) -> u64 {
    fnv64(text.as_bytes()) ^ seq.rotate_left(17)
}

/// Note number `seq`, with text of a length and content determined by it.
pub fn note(seq: u64) -> Note {
    let len = (seq.wrapping_mul(7919) % 300) as usize;
    let text: String = (0..len)
        .map(|i| char::from(b'a' + ((seq as usize + i * 31) % 26) as u8))
        .collect();
    Note {
        checksum: note_checksum(seq, &text),
        seq,
        text,
    }
}

/// Bytes of the reply pattern of `Big`.
pub fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ salt).collect()
}

/// The service's state.
#[derive(Default)]
pub struct ServiceImpl {
    pub notes: Cell<u64>,
    pub bad: Cell<u64>,
    pub next_seq: Cell<u64>,
    /// Descriptors that came with notes; a first one is read through and
    /// must hold [`FD_CONTENT`].
    pub fds: Cell<u64>,
    /// Where `hang` reports that it hangs.
    pub control: Option<Channel>,
}

impl ServiceHandler for ServiceImpl {
    fn note(&self, connection: &mut Context, message: &ArchivedNote) {
        let fds = connection.take_fds();
        self.fds.set(self.fds.get() + fds.len() as u64);
        if let Some(first) = fds.first() {
            let mut content = [0u8; FD_CONTENT.len()];
            let read = rustix::io::pread(first, &mut content, 0);
            if read != Ok(FD_CONTENT.len()) || content != *FD_CONTENT {
                self.bad.set(self.bad.get() + 1);
            }
        }
        let seq = message.seq.to_native();
        self.notes.set(self.notes.get() + 1);
        if seq != self.next_seq.get()
            || message.checksum.to_native() != note_checksum(seq, message.text.as_str())
        {
            self.bad.set(self.bad.get() + 1);
        }
        self.next_seq.set(seq + 1);
    }

    fn add(&self, _: &mut Context, message: &ArchivedAdd) -> Sum {
        Sum {
            value: message.a.to_native().wrapping_add(message.b.to_native()),
        }
    }

    fn tally(&self, _: &mut Context, _: &ArchivedTally) -> TallyReply {
        TallyReply {
            notes: self.notes.get(),
            bad: self.bad.get(),
            next_seq: self.next_seq.get(),
            fds: self.fds.get(),
        }
    }

    fn echo_nested(&self, _: &mut Context, message: &ArchivedEchoNested) -> NestedReply {
        let native: EchoNested = rkyv::deserialize::<EchoNested, rkyv::rancor::Error>(message)
            .expect("deserialize a validated archive");
        NestedReply {
            items: native.items,
            maybe: native.maybe,
            outer: native.outer,
        }
    }

    fn slow(&self, _: &mut Context, message: &ArchivedSlow) -> SlowReply {
        std::thread::sleep(Duration::from_millis(message.millis.to_native()));
        SlowReply {
            token: message.token.to_native(),
        }
    }

    fn big(&self, _: &mut Context, message: &ArchivedBig) -> BigReply {
        let checksum = fnv64(message.data.as_slice());
        BigReply {
            intact: checksum == message.checksum.to_native(),
            checksum,
            data: pattern(message.reply_len.to_native() as usize, 0x5a),
        }
    }

    fn hang(&self, _: &mut Context, _: &ArchivedHang) -> HangReply {
        if let Some(control) = &self.control {
            tell(control, b"hung");
        }
        std::thread::sleep(Duration::from_secs(120));
        HangReply {}
    }
}

/// Serves [`Service`] at [`SERVICE_DESTINATION`] until the peer disconnects;
/// any other ending fails the child.
pub fn serve(connection: &mut Connection, service: ServiceImpl) {
    connection.register(SERVICE_DESTINATION, Service::handler(service));
    serve_registered(connection);
}

/// Dispatches until the peer disconnects; any other ending fails the child.
pub fn serve_registered(connection: &mut Connection) {
    loop {
        match connection.dispatch(Some(super::OP_TIMEOUT)) {
            Ok(0) => panic!("no message for {:?}", super::OP_TIMEOUT),
            Ok(_) => {}
            Err(ferry_transport::DispatchError::Disconnected) => return,
            Err(e) => panic!("dispatch failed: {e}"),
        }
    }
}
