//! The send path: an envelope and a body written straight into a ring
//! grant; descriptors sent ahead over the control socket; bodies too large
//! for the ring sent out of line as sealed blobs.

use crate::connection::{Connection, State};
use crate::envelope::{ENVELOPE_SIZE, Envelope, Flags};
use crate::error::{SendError, Violation};
use crate::incoming::encode_attachment_header;
use crate::message::Archivable;
use crate::stats::TransportStats;
use ferry_handoff::Channel;
use ferry_ring::{BlobWriter, Grant};
use rkyv::rancor;
use rkyv::ser::writer::Buffer;
use rkyv::util::{AlignedVec, with_arena};
use std::os::fd::BorrowedFd;
use std::time::Duration;

/// Whether a send waits for room.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Room {
    /// Fail with `Full` at once.
    Try,
    /// Wait per the wait strategy, for at most this long (`None`: forever).
    Wait(Option<Duration>),
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

    /// Reserves room for a `len`-byte frame in the ring and lets the caller
    /// write it in place; [`FrameWriter::commit`] sends it. `len` must not
    /// exceed [`max_inline_payload`](Self::max_inline_payload).
    pub fn reserve_frame(
        &mut self,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<FrameWriter<'_>, SendError> {
        self.check_sendable(&[])?;
        let max = self.max_inline_payload();
        if len > max {
            return Err(SendError::Serialize(format!(
                "frame of {len} bytes exceeds the in-ring maximum of {max}"
            )));
        }
        // Wait for the room, then take it: returning the grant out of this
        // function keeps `tx` borrowed, so the error path cannot come after.
        // Nothing else writes this ring, so the room is still there.
        if let Err(error) = reserve_in(&mut self.tx, ENVELOPE_SIZE + len, Room::Wait(timeout)) {
            return Err(self.reservation_failed(error));
        }
        let mut grant = self
            .tx
            .try_reserve(ENVELOPE_SIZE + len)
            .map_err(ring_send_error)?;
        raw_envelope(0).write_to(&mut grant);
        Ok(FrameWriter {
            grant,
            frames_sent: &mut self.stats.frames_sent,
        })
    }

    /// Publishes every frame completed with [`FrameWriter::commit_deferred`].
    pub fn flush(&mut self) {
        self.tx.flush();
    }

    fn send_raw(
        &mut self,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
        room: Room,
    ) -> Result<(), SendError> {
        self.check_sendable(fds)?;
        let envelope = raw_envelope(fds.len());
        if payload.len() > self.max_inline_payload() {
            let mut blob =
                BlobWriter::create(payload.len()).map_err(|e| SendError::Io(e.to_string()))?;
            blob.copy_from_slice(payload);
            return self.send_out_of_line(envelope, blob, payload.len(), fds, room);
        }
        self.send_copy(envelope, payload, fds, room)
    }

    /// Serializes `value` behind `envelope`: straight into a ring grant when
    /// the room the last archive needed is free and enough; otherwise
    /// serialized aside to learn its exact size, then copied into exactly
    /// that much room (waiting per `room`), or out of line when larger than
    /// the ring allows.
    pub(crate) fn send_archived<T: Archivable>(
        &mut self,
        mut envelope: Envelope,
        value: &T,
        fds: &[BorrowedFd<'_>],
        room: Room,
    ) -> Result<(), SendError> {
        self.check_sendable(fds)?;
        envelope.fd_count = fds.len() as u16;
        let max = self.max_inline_payload();
        if self.size_hint > max {
            // The last archive went out of line: this one likely will too.
            // Serialize straight into a memfd (one copy fewer than aside).
            let (blob, len) = serialize_into_blob(value, self.size_hint)?;
            self.size_hint = blob_hint(len);
            if len > max {
                return self.send_out_of_line(envelope, blob, len, fds, room);
            }
            // It turned out small: it goes in the ring after all.
            return self.send_copy(envelope, &blob[..len], fds, room);
        }
        // The hot path: no wait, no copy. A full ring or an archive larger
        // than the hint falls through to the exact-size path below.
        if let Ok(mut grant) = self.tx.try_reserve(ENVELOPE_SIZE + self.size_hint) {
            let written = with_arena(|arena| {
                rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(
                    value,
                    Buffer::from(&mut grant[ENVELOPE_SIZE..]),
                    arena.acquire(),
                )
                .map(|buffer| buffer.len())
            });
            if let Ok(len) = written {
                envelope.write_to(&mut grant);
                grant.shrink_to(ENVELOPE_SIZE + len);
                self.size_hint = blob_hint(len);
                publish(
                    grant,
                    &self.control,
                    &mut self.attachments_out,
                    &mut self.stats,
                    fds,
                    room,
                )
                .map_err(|error| self.attachment_failed(error))?;
                return Ok(());
            }
        }
        let archive = with_arena(|arena| {
            rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(
                value,
                AlignedVec::<16>::new(),
                arena.acquire(),
            )
        })
        .map_err(|e| SendError::Serialize(e.to_string()))?;
        self.size_hint = blob_hint(archive.len());
        if archive.len() > max {
            let mut blob =
                BlobWriter::create(archive.len()).map_err(|e| SendError::Io(e.to_string()))?;
            blob.copy_from_slice(&archive);
            let len = archive.len();
            drop(archive);
            return self.send_out_of_line(envelope, blob, len, fds, room);
        }
        self.send_copy(envelope, &archive, fds, room)
    }

    /// Copies a body (raw bytes, or an archive serialized aside) into exactly
    /// its room in the ring.
    fn send_copy(
        &mut self,
        envelope: Envelope,
        archive: &[u8],
        fds: &[BorrowedFd<'_>],
        room: Room,
    ) -> Result<(), SendError> {
        let mut grant = match reserve_in(&mut self.tx, ENVELOPE_SIZE + archive.len(), room) {
            Ok(grant) => grant,
            Err(error) => return Err(self.reservation_failed(error)),
        };
        envelope.write_to(&mut grant);
        grant[ENVELOPE_SIZE..].copy_from_slice(archive);
        publish(
            grant,
            &self.control,
            &mut self.attachments_out,
            &mut self.stats,
            fds,
            room,
        )
        .map_err(|error| self.attachment_failed(error))?;
        Ok(())
    }

    /// Seals `blob`, sends it (and `fds`) over the control socket, then
    /// publishes a frame that names it.
    fn send_out_of_line(
        &mut self,
        mut envelope: Envelope,
        blob: BlobWriter,
        len: usize,
        fds: &[BorrowedFd<'_>],
        room: Room,
    ) -> Result<(), SendError> {
        let blob = blob
            .seal_with_len(len)
            .map_err(|e| SendError::Io(e.to_string()))?;
        let len = blob.bytes().len() as u64;
        envelope.flags.0 |= Flags::OUT_OF_LINE;
        envelope.fd_count = (fds.len() + 1) as u16;
        let mut grant = match reserve_in(&mut self.tx, ENVELOPE_SIZE + 8, room) {
            Ok(grant) => grant,
            Err(error) => return Err(self.reservation_failed(error)),
        };
        envelope.write_to(&mut grant);
        grant[ENVELOPE_SIZE..].copy_from_slice(&len.to_le_bytes());
        let mut all_fds = Vec::with_capacity(fds.len() + 1);
        all_fds.push(blob.fd());
        all_fds.extend_from_slice(fds);
        publish(
            grant,
            &self.control,
            &mut self.attachments_out,
            &mut self.stats,
            &all_fds,
            room,
        )
        .map_err(|error| self.attachment_failed(error))?;
        self.stats.out_of_line_sent += 1;
        Ok(())
    }

    /// The transport's error for descriptors that could not be sent: a peer
    /// found gone ends the connection, as when the ring finds it.
    fn attachment_failed(&mut self, error: SendError) -> SendError {
        if error == SendError::Disconnected {
            self.state = State::Disconnected;
            self.fail_pending_calls(crate::error::CallError::Disconnected);
        }
        error
    }

    /// The transport's error for a failed reservation. Closed, dead or
    /// corrupting peers end the connection (and a corrupting one is told so
    /// by the hang-up); `Full` and `TimedOut` do not.
    fn reservation_failed(&mut self, error: ferry_ring::SendError) -> SendError {
        match ring_send_error(error) {
            SendError::Disconnected => {
                self.state = State::Disconnected;
                self.fail_pending_calls(crate::error::CallError::Disconnected);
                SendError::Disconnected
            }
            SendError::Failed(violation) => {
                self.fail(violation.clone());
                SendError::Failed(violation)
            }
            other => other,
        }
    }

    fn check_sendable(&self, fds: &[BorrowedFd<'_>]) -> Result<(), SendError> {
        if let Some(error) = self.closed_send_error() {
            return Err(error);
        }
        let max = self.config.max_fds_per_message;
        if fds.len() > max {
            return Err(SendError::TooManyFds {
                count: fds.len(),
                max,
            });
        }
        Ok(())
    }
}

/// A frame being written in place by the raw API.
pub struct FrameWriter<'a> {
    grant: Grant<'a>,
    frames_sent: &'a mut u64,
}

impl FrameWriter<'_> {
    /// Publishes the frame.
    pub fn commit(self) {
        self.grant.commit();
        *self.frames_sent += 1;
    }

    /// Completes the frame but publishes it only at the next
    /// [`Connection::flush`] or commit (or when the ring fills up): a batch
    /// of small frames costs one publish, and the peer at most one wake-up.
    pub fn commit_deferred(self) {
        self.grant.commit_deferred();
        *self.frames_sent += 1;
    }
}

impl std::ops::Deref for FrameWriter<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.grant[ENVELOPE_SIZE..]
    }
}

impl std::ops::DerefMut for FrameWriter<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.grant[ENVELOPE_SIZE..]
    }
}

impl std::fmt::Debug for FrameWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameWriter")
            .field("len", &self.len())
            .finish()
    }
}

fn raw_envelope(fd_count: usize) -> Envelope {
    Envelope {
        flags: Flags(Flags::RAW),
        fd_count: fd_count as u16,
        ..Envelope::default()
    }
}

/// The room to reserve for the next archive after one of `len` bytes.
fn blob_hint(len: usize) -> usize {
    len + len / 4 + 64
}

/// Serializes `value` straight into a memfd of at least `capacity` bytes,
/// doubling it until the archive fits; returns the writer and the archive's
/// length. Pages are allocated on first touch, so spare room costs nothing.
fn serialize_into_blob<T: Archivable>(
    value: &T,
    capacity: usize,
) -> Result<(BlobWriter, usize), SendError> {
    let mut capacity = capacity.max(4096);
    loop {
        let mut blob = BlobWriter::create(capacity).map_err(|e| SendError::Io(e.to_string()))?;
        let written = with_arena(|arena| {
            rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(
                value,
                Buffer::from(&mut blob[..]),
                arena.acquire(),
            )
            .map(|buffer| buffer.len())
        });
        match written {
            Ok(len) => return Ok((blob, len)),
            Err(_) if capacity < ferry_ring::MAX_REGION_SIZE as usize / 2 => capacity *= 2,
            Err(e) => return Err(SendError::Serialize(e.to_string())),
        }
    }
}

/// Reserves `len` bytes, waiting per `room`. (A free function over `tx`, so
/// the grant borrows only that field.)
fn reserve_in(
    tx: &mut ferry_ring::Producer,
    len: usize,
    room: Room,
) -> Result<Grant<'_>, ferry_ring::SendError> {
    match room {
        Room::Try => tx.try_reserve(len),
        Room::Wait(timeout) => tx.reserve(len, timeout),
    }
}

/// The transport's view of a ring send error.
fn ring_send_error(error: ferry_ring::SendError) -> SendError {
    use ferry_ring::SendError as Ring;
    match error {
        Ring::Full => SendError::Full,
        Ring::TimedOut => SendError::TimedOut,
        Ring::Closed | Ring::Disconnected => SendError::Disconnected,
        Ring::TooLarge { len, max } => {
            SendError::Serialize(format!("frame of {len} bytes exceeds {max}"))
        }
        Ring::Corrupt(corruption) => SendError::Failed(Violation::Ring(corruption)),
    }
}

/// Publishes a filled grant: its descriptors first (so they wait for the
/// receiver when it sees the frame), then the frame. On error nothing is
/// published: the grant is abandoned.
fn publish(
    grant: Grant<'_>,
    control: &Channel,
    sequence: &mut u64,
    stats: &mut TransportStats,
    fds: &[BorrowedFd<'_>],
    room: Room,
) -> Result<(), SendError> {
    send_attachment(control, sequence, stats, fds, room)?;
    grant.commit();
    stats.frames_sent += 1;
    Ok(())
}

/// Sends the descriptors of the frame about to be published, numbered so
/// the receiver can match them to it. They go before the frame is
/// published, so they are waiting when the receiver sees the frame. Waits
/// for room in the control socket as the caller asked to wait for room in
/// the ring. (Takes the connection's fields, not the connection: the grant
/// borrows `tx`.)
fn send_attachment(
    control: &Channel,
    sequence: &mut u64,
    stats: &mut TransportStats,
    fds: &[BorrowedFd<'_>],
    room: Room,
) -> Result<(), SendError> {
    if fds.is_empty() {
        return Ok(());
    }
    let next = *sequence + 1;
    let header = encode_attachment_header(next);
    let sent = match room {
        Room::Try => control.try_send(&header, fds),
        // A dead peer ends a blocking send at once (EPIPE).
        Room::Wait(None) => control.send(&header, fds),
        Room::Wait(Some(timeout)) => control.send_timeout(&header, fds, timeout),
    };
    sent.map_err(|error| match error {
        ferry_handoff::SendError::Disconnected => SendError::Disconnected,
        ferry_handoff::SendError::TimedOut => SendError::TimedOut,
        ferry_handoff::SendError::WouldBlock => SendError::Full,
        other => SendError::Io(other.to_string()),
    })?;
    *sequence = next;
    stats.fds_sent += fds.len() as u64;
    Ok(())
}
