//! What the checkers know of a user's protocol: its receivers and messages,
//! listed by `protocol!` through `Protocol::visit`, and turned into a
//! table of functions (build a message from fuzz bytes, check an archive)
//! that the checkers use without naming the types.

use super::finding::Finding;
use super::protocol::{Fuzzable, Protocol, Visitor};
use super::round_trip::check_archive;
use super::watch::Watch;
use crate::connection::Connection;
use crate::error::{CallError, SendError};
use crate::message::{Message, Receiver, Remote, Request};
use crate::wire::{ENVELOPE_SIZE, Envelope, Flags};
use arbitrary::Unstructured;
use rkyv::rancor;
use rkyv::util::AlignedVec;
use std::time::Duration;

/// Builds a value from fuzz bytes and archives it.
pub(crate) type Build = fn(&mut Unstructured<'_>) -> Option<AlignedVec<16>>;
/// Checks bytes as an archive (see [`super::decode::check_archive`]):
/// `Ok(true)` accepted, `Ok(false)` refused.
pub(crate) type CheckArchive = fn(&[u8]) -> Result<bool, Finding>;

/// One message of the protocol, with what the checkers do with it.
#[derive(Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) receiver: u32,
    pub(crate) schema: u32,
    pub(crate) message: u32,
    pub(crate) allowed_while_waiting: bool,
    pub(crate) build: Build,
    pub(crate) check: CheckArchive,
    /// The reply's, for a request.
    pub(crate) reply: Option<(Build, CheckArchive)>,
    /// How to send it as a request, for a request.
    pub(crate) calls: Option<Calls>,
}

/// Sends a request built from fuzz bytes: synchronously (to the object at
/// a destination, waiting at most a timeout), or with a reply handler that
/// reports to a watch.
#[derive(Clone, Copy)]
pub(crate) struct Calls {
    pub(crate) sync:
        fn(&mut Connection, u64, &mut Unstructured<'_>, Duration) -> Result<(), CallError>,
    pub(crate) with_reply:
        fn(&mut Connection, u64, &mut Unstructured<'_>, Watch) -> Result<(), SendError>,
}

fn send_sync<M: Request<Reply: Fuzzable> + Fuzzable>(
    connection: &mut Connection,
    destination: u64,
    u: &mut Unstructured<'_>,
    timeout: Duration,
) -> Result<(), CallError> {
    let Ok(message) = M::arbitrary(u) else {
        return Ok(());
    };
    let reply = connection.send_sync(Remote::<M::Receiver>::new(destination), &message, timeout)?;
    std::hint::black_box(reply.get());
    Ok(())
}

fn send_with_reply<M: Request<Reply: Fuzzable> + Fuzzable>(
    connection: &mut Connection,
    destination: u64,
    u: &mut Unstructured<'_>,
    watch: Watch,
) -> Result<(), SendError> {
    let Ok(message) = M::arbitrary(u) else {
        return Ok(());
    };
    connection.send_with_reply(
        Remote::<M::Receiver>::new(destination),
        &message,
        move |context, reply| watch.reply_handled(context, reply.is_ok(), M::NAME),
    )
}

/// Every message of a protocol.
pub(crate) struct Catalog {
    pub(crate) entries: Vec<Entry>,
}

impl Catalog {
    pub(crate) fn of<P: Protocol>() -> Catalog {
        let mut catalog = Catalog {
            entries: Vec::new(),
        };
        P::visit(&mut catalog);
        catalog
    }

    /// The message an envelope names (by receiver, schema and message id).
    pub(crate) fn find(&self, receiver: u32, schema: u32, message: u32) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| (e.receiver, e.schema, e.message) == (receiver, schema, message))
    }

    /// The requests.
    pub(crate) fn requests(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.reply.is_some())
    }

    /// A well-formed frame of a message (or, with `replies`, now and then
    /// a reply) of the protocol, chosen by the input: which message, to
    /// which of the `served` (receiver id, destination) pairs, with which
    /// request id, flags and value. With `lies`, now and then a flag is
    /// flipped, descriptors are announced, or the destination is anything.
    /// `None` when the input is too short or the protocol has no message.
    pub(crate) fn frame(
        &self,
        u: &mut Unstructured<'_>,
        served: &[(u32, u64)],
        lies: bool,
        replies: bool,
    ) -> Option<(Envelope, AlignedVec<16>)> {
        // Honest traffic goes only to receivers the other side serves.
        let entry = if lies {
            *self.pick(u)?
        } else {
            let honest: Vec<&Entry> = self
                .entries
                .iter()
                .filter(|e| served.iter().any(|(receiver, _)| *receiver == e.receiver))
                .collect();
            if honest.is_empty() {
                return None;
            }
            *honest[u.choose_index(honest.len()).ok()?]
        };
        let now_and_then = |u: &mut Unstructured<'_>| lies && u.ratio(1, 16).unwrap_or(false);
        let destinations: Vec<u64> = served
            .iter()
            .filter(|(receiver, _)| *receiver == entry.receiver)
            .map(|(_, destination)| *destination)
            .collect();
        let destination = if destinations.is_empty() || now_and_then(u) {
            u.arbitrary::<u8>().ok().map(u64::from)?
        } else {
            destinations[u.choose_index(destinations.len()).ok()?]
        };
        let mut flags = 0;
        let reply = match entry.reply {
            Some((build, _)) if replies && u.ratio(1, 4).ok()? => Some(build),
            _ => None,
        };
        let (request_id, build) = match reply {
            Some(build) => {
                flags |= Flags::REPLY;
                (u.int_in_range(1..=8).ok()?, build)
            }
            None => {
                let id = if entry.reply.is_some() && u.arbitrary::<bool>().ok()? {
                    u.int_in_range(1..=u64::from(u16::MAX)).ok()?
                } else {
                    0
                };
                if id != 0 && u.arbitrary::<bool>().ok()? {
                    flags |= Flags::SYNC;
                }
                if entry.allowed_while_waiting {
                    flags |= Flags::ALLOWED_WHILE_WAITING;
                }
                (id, entry.build)
            }
        };
        if now_and_then(u) {
            flags ^= 1 << u.int_in_range(0..=5u16).ok()?;
        }
        let fd_count = if now_and_then(u) {
            u.int_in_range(1..=2u16).ok()?
        } else {
            0
        };
        let body = build(u)?;
        let envelope = Envelope {
            destination,
            request_id,
            receiver: entry.receiver,
            schema: entry.schema,
            message: entry.message,
            flags: Flags(flags),
            fd_count,
        };
        Some((envelope, body))
    }

    /// An entry picked by the input (`None` if there is none).
    pub(crate) fn pick(&self, u: &mut Unstructured<'_>) -> Option<&Entry> {
        if self.entries.is_empty() {
            return None;
        }
        let index = u.choose_index(self.entries.len()).unwrap_or(0);
        self.entries.get(index)
    }
}

fn build<T: Fuzzable>(u: &mut Unstructured<'_>) -> Option<AlignedVec<16>> {
    let value = T::arbitrary(u).ok()?;
    rkyv::to_bytes::<rancor::Error>(&value).ok()
}

fn entry<M: Message + Fuzzable>(
    reply: Option<(Build, CheckArchive)>,
    calls: Option<Calls>,
) -> Entry {
    Entry {
        receiver: <M::Receiver as Receiver>::ID,
        schema: <M::Receiver as Receiver>::SCHEMA,
        message: M::ID,
        allowed_while_waiting: M::ALLOWED_WHILE_WAITING,
        build: build::<M>,
        check: check_archive::<M>,
        reply,
        calls,
    }
}

impl Visitor for Catalog {
    fn message<M: Message + Fuzzable>(&mut self) {
        self.entries.push(entry::<M>(None, None));
    }

    fn request<M: Request<Reply: Fuzzable> + Fuzzable>(&mut self) {
        let reply = (
            build::<M::Reply> as Build,
            check_archive::<M::Reply> as CheckArchive,
        );
        let calls = Calls {
            sync: send_sync::<M>,
            with_reply: send_with_reply::<M>,
        };
        self.entries.push(entry::<M>(Some(reply), Some(calls)));
    }
}

/// `envelope` and `body` as one frame's bytes.
pub(crate) fn frame_bytes(envelope: &Envelope, body: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; ENVELOPE_SIZE + body.len()];
    envelope.write_to(&mut frame);
    frame[ENVELOPE_SIZE..].copy_from_slice(body);
    frame
}
