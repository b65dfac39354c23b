//! The raw frame API, for IPC layers that bring their own encoding: bytes
//! in, bytes out, optionally with descriptors, blocking or not. The same
//! [`Received`] frame also gives pull-style typed access: look at the
//! message's type, read it, reply to it, or hand it to a handler.

use crate::connection::{Connection, Context};
use crate::error::{Cause, DispatchError, RecvError, SendError};
use crate::inbox::Ready;
use crate::incoming::{Incoming, access_archive};
use crate::message::{Message, Receiver, Request};
use crate::outbox::{FrameWriter, Outbox, Room};
use crate::shared_outbox::OutboxCell;
use crate::wire::{Envelope, Flags};
use ferry_ring::FoundRoom;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

/// The envelope of a raw frame: only the flag and the descriptor count.
pub(crate) fn raw_envelope() -> Envelope {
    Envelope {
        flags: Flags(Flags::RAW),
        ..Envelope::default()
    }
}

impl Connection {
    /// Sends `payload` as one frame, waiting for room for at most `timeout`.
    /// A payload larger than [`max_inline_payload`](Self::max_inline_payload)
    /// travels out of line, in a sealed memfd.
    pub fn send_frame(
        &mut self,
        payload: &[u8],
        timeout: Option<Duration>,
    ) -> Result<(), SendError> {
        self.send_raw(payload, &[], Room::Wait(timeout))
    }

    /// Sends `payload` as one frame if the ring has room now.
    pub fn try_send_frame(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_raw(payload, &[], Room::Try)
    }

    /// Sends `payload` with descriptors attached (each is duplicated into
    /// the peer; the caller keeps its own).
    pub fn send_frame_with_fds(
        &mut self,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
        timeout: Option<Duration>,
    ) -> Result<(), SendError> {
        self.send_raw(payload, fds, Room::Wait(timeout))
    }

    fn send_raw(
        &mut self,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
        room: Room,
    ) -> Result<(), SendError> {
        self.check_sendable(fds.len())?;
        let sent = self
            .outbox
            .lock()
            .send_bytes(raw_envelope(), payload, fds, room, &self.control);
        self.sent(sent)
    }

    /// Reserves room for a `len`-byte frame in the ring and lets the caller
    /// write it in place; [`FrameWriter::commit`] sends it. `len` must not
    /// exceed [`max_inline_payload`](Self::max_inline_payload).
    #[inline]
    pub fn reserve_frame(
        &mut self,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<FrameWriter<'_>, SendError> {
        // The grant borrows the outbox until the caller commits it, so the
        // room is found first (a token, no borrow), and a failure is
        // reported to the lifecycle before the grant is taken (nothing else
        // writes this ring, so the room is still there). Inlined into the
        // caller, with the waiting path out of line: the writer is then not
        // returned through memory.
        let room = match self.frame_room_now(len) {
            Some(room) => room,
            None => self.wait_for_frame_room(len, timeout)?,
        };
        self.own_outbox()?.reserve_frame(raw_envelope(), room)
    }

    /// [`reserve_frame`](Self::reserve_frame)'s general path: every check,
    /// then a wait for the room, a failure reported to the lifecycle.
    #[inline(never)]
    fn wait_for_frame_room(
        &mut self,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<FoundRoom, SendError> {
        self.check_sendable(0)?;
        match self.own_outbox()?.wait_for_frame_room(len, timeout) {
            Ok(room) => Ok(room),
            Err(error) => Err(self.send_failed(error)),
        }
    }

    /// Room for a `len`-byte frame right now on an open, unsplit
    /// connection in this process: the common case, without the checks
    /// and errors of the waiting path, which handles everything else.
    #[inline]
    fn frame_room_now(&mut self, len: usize) -> Option<FoundRoom> {
        if !self.lifecycle.is_open() || self.hangup.is_inherited() {
            return None;
        }
        match &mut self.outbox {
            OutboxCell::Own(outbox) => outbox.frame_room_now(len),
            OutboxCell::Shared(_) => None,
        }
    }

    /// The send path, if the connection is not split: a grant in place
    /// would otherwise have to hold the senders' lock.
    #[inline]
    fn own_outbox(&mut self) -> Result<&mut Outbox, SendError> {
        match &mut self.outbox {
            OutboxCell::Own(outbox) => Ok(outbox),
            OutboxCell::Shared(_) => Err(split_error()),
        }
    }

    /// Publishes every frame completed with [`FrameWriter::commit_deferred`].
    pub fn flush(&mut self) {
        self.outbox.lock().tx.flush();
    }

    /// Receives the next frame, waiting for at most `timeout` (`None`: as
    /// long as it takes).
    #[inline]
    pub fn recv_frame(&mut self, timeout: Option<Duration>) -> Result<Received<'_>, RecvError> {
        let incoming = match self.ready_incoming() {
            Ready::Frame(incoming) => incoming,
            Ready::Empty | Ready::Other => self.next_incoming_answering(timeout)?,
        };
        Ok(Received {
            connection: self,
            incoming,
        })
    }

    /// Receives the next frame if one is there.
    pub fn try_recv_frame(&mut self) -> Result<Received<'_>, RecvError> {
        let incoming = match self.ready_incoming() {
            Ready::Frame(incoming) => incoming,
            Ready::Empty | Ready::Other => {
                let _ = self.send_late_replies();
                self.next_incoming(None)?
            }
        };
        Ok(Received {
            connection: self,
            incoming,
        })
    }
}

/// Why `reserve_frame` refuses a split connection.
#[cold]
fn split_error() -> SendError {
    SendError::Io(Cause::new(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "reserve_frame needs a connection that is not split (use send_frame)",
    )))
}

/// A frame received with the raw API. Its bytes may be in place in the
/// ring; dropping it gives the room back to the peer.
pub struct Received<'a> {
    connection: &'a mut Connection,
    incoming: Incoming,
}

impl Received<'_> {
    /// The frame's bytes (16-aligned).
    pub fn bytes(&self) -> &[u8] {
        self.incoming.bytes()
    }

    /// The descriptors that came with the frame.
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        self.incoming.take_fds()
    }

    /// The frame's envelope (raw frames have only `fd_count` and flags set).
    pub fn envelope(&self) -> &Envelope {
        &self.incoming.envelope
    }

    /// Whether the frame is a message `M` (by receiver, schema and message
    /// id; not yet validated).
    pub fn is<M: Message>(&self) -> bool {
        let envelope = &self.incoming.envelope;
        !envelope.flags.has(Flags::RAW)
            && !envelope.flags.has(Flags::REPLY)
            && envelope.receiver == <M::Receiver as Receiver>::ID
            && envelope.schema == <M::Receiver as Receiver>::SCHEMA
            && envelope.message == M::ID
    }

    /// The frame as a message `M`, validated (in place for a trusted peer,
    /// from its private copy for an untrusted one): `Ok(None)` when it is
    /// another kind of frame. An invalid archive is a violation: the
    /// connection is closed, as in `dispatch`.
    pub fn get<M: Message>(&mut self) -> Result<Option<&M::Archived>, RecvError> {
        if !self.is::<M>() {
            return Ok(None);
        }
        match access_archive::<M>(self.incoming.bytes(), M::NAME) {
            Ok(message) => Ok(Some(message)),
            Err(violation) => Err(self.connection.fail(violation)),
        }
    }

    /// Sends `reply` to this request (if the sender asked for one).
    pub fn reply<M: Request>(&mut self, reply: &M::Reply) -> Result<(), DispatchError> {
        let envelope = self.incoming.envelope;
        self.connection.context().send_reply(&envelope, reply)
    }

    /// Runs `handle` with a context and the frame if it is a message of
    /// receiver `R`; returns whether it was. `protocol!`'s generated
    /// `Receiver::handle` calls this.
    #[doc(hidden)]
    pub fn handle_as<R: Receiver>(
        &mut self,
        handle: impl FnOnce(&mut Context<'_>, &Incoming) -> Result<(), DispatchError>,
    ) -> Result<bool, DispatchError> {
        let envelope = &self.incoming.envelope;
        if envelope.flags.has(Flags::RAW)
            || envelope.flags.has(Flags::REPLY)
            || envelope.receiver != R::ID
            || envelope.schema != R::SCHEMA
        {
            return Ok(false);
        }
        let fds = self.incoming.take_fds();
        let outer = std::mem::replace(&mut self.connection.message_fds, fds);
        let result = handle(&mut self.connection.context(), &self.incoming);
        self.connection.message_fds = outer;
        result.map(|()| true)
    }
}

impl Drop for Received<'_> {
    fn drop(&mut self) {
        self.connection.finish(&mut self.incoming);
    }
}

impl std::fmt::Debug for Received<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.incoming.fmt(f)
    }
}
