//! The raw frame API, for IPC layers that bring their own encoding: bytes
//! in, bytes out, optionally with descriptors, blocking or not.

use crate::connection::Connection;
use crate::error::{RecvError, SendError};
use crate::incoming::Incoming;
use crate::outbox::{FrameWriter, Room};
use crate::wire::{Envelope, Flags};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

/// The envelope of a raw frame: only the flag and the descriptor count.
fn raw_envelope() -> Envelope {
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
            .send_bytes(raw_envelope(), payload, fds, room, &self.control);
        self.sent(sent)
    }

    /// Reserves room for a `len`-byte frame in the ring and lets the caller
    /// write it in place; [`FrameWriter::commit`] sends it. `len` must not
    /// exceed [`max_inline_payload`](Self::max_inline_payload).
    pub fn reserve_frame(
        &mut self,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<FrameWriter<'_>, SendError> {
        self.check_sendable(0)?;
        // The grant borrows the outbox until the caller commits it, so a
        // failure is reported to the lifecycle in a first step that gives the
        // room back; the second takes it (nothing else writes this ring, so
        // the room is still there).
        match self.outbox.reserve_frame(raw_envelope(), len, timeout) {
            Ok(_room_is_free) => {}
            Err(error) => return Err(self.send_failed(error)),
        }
        self.outbox
            .reserve_frame(raw_envelope(), len, Some(Duration::ZERO))
    }

    /// Publishes every frame completed with [`FrameWriter::commit_deferred`].
    pub fn flush(&mut self) {
        self.outbox.tx.flush();
    }

    /// Receives the next frame, waiting for at most `timeout` (`None`: as
    /// long as it takes).
    pub fn recv_frame(&mut self, timeout: Option<Duration>) -> Result<Received<'_>, RecvError> {
        let incoming = self.next_incoming(Some(timeout))?;
        Ok(Received {
            connection: self,
            incoming,
        })
    }

    /// Receives the next frame if one is there.
    pub fn try_recv_frame(&mut self) -> Result<Received<'_>, RecvError> {
        let incoming = self.next_incoming(None)?;
        Ok(Received {
            connection: self,
            incoming,
        })
    }
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
