//! The send half of a connection's data path: an envelope and a body
//! written straight into a ring grant; descriptors sent ahead over the
//! control socket; bodies too large for the ring sent out of line as sealed
//! blobs. Every send ends in the one `publish` step.
//!
//! No body above the connection's `max_message_size` is sent: such a send
//! fails with `SendError::TooLarge` before anything is published. The peer
//! has a limit of its own, which this end cannot know; ours bounds what we
//! build (a blob of that size, mapped and written) and is, for a connection
//! configured alike at both ends, exactly what the peer accepts.

use crate::error::{Cause, SendError, from_control_send, from_ring_send};
use crate::message::Archivable;
use crate::wire::{
    ENVELOPE_SIZE, Envelope, Flags, OUT_OF_LINE_BODY_SIZE, encode_attachment_header,
    encode_out_of_line_body,
};
use ferry_handoff::Channel;
use ferry_ring::{BlobWriter, FoundRoom, Grant, Producer};
use rkyv::rancor;
use rkyv::ser::allocator::Arena;
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

/// The ring this end writes, with what sending needs besides.
pub(crate) struct Outbox {
    pub(crate) tx: Producer,
    /// The largest body sent.
    max_message_size: usize,
    /// Room to reserve for the next archive (learned from the last one).
    size_hint: usize,
    pub(crate) published: Published,
    /// Event-loop waiters armed for room right now: the connection's own
    /// (`own_armed`) and its async sending halves'. The producer stays
    /// armed while any is.
    room_waiters: usize,
    /// Whether the connection itself (its `arm_send`, or its async
    /// wrapper) is one of them.
    own_armed: bool,
    /// rkyv's scratch space for serializing in place. Owned rather than
    /// rkyv's thread-local one, whose take-and-put-back cost about 240
    /// instructions per message (callgrind). It starts at 1 KiB and keeps
    /// its largest block, as the thread-local one does: what it holds is
    /// bounded by the largest archive this end itself serialized (the
    /// peer's input never sizes it), for the connection's lifetime.
    arena: Arena,
}

/// What has been published so far. (Apart from the producer, so that a
/// grant, which borrows the producer, can be published.)
#[derive(Default)]
pub(crate) struct Published {
    /// Attachments sent (the receiver counts them too).
    attachments: u64,
    pub(crate) out_of_line: u64,
    pub(crate) fds: u64,
}

impl Outbox {
    pub(crate) fn new(tx: Producer, max_message_size: usize) -> Self {
        Outbox {
            tx,
            max_message_size,
            size_hint: 256,
            published: Published::default(),
            room_waiters: 0,
            own_armed: false,
            arena: Arena::new(),
        }
    }

    /// The largest body that travels inside the ring.
    pub(crate) fn max_inline(&self) -> usize {
        self.tx.max_payload() - ENVELOPE_SIZE
    }

    /// The ring room, in payload bytes, a body of `len` bytes needs: its
    /// envelope and itself, or for a body too large for the ring the small
    /// frame that names its out-of-line blob.
    pub(crate) fn room_for(&self, len: usize) -> usize {
        if len > self.max_inline() {
            ENVELOPE_SIZE + OUT_OF_LINE_BODY_SIZE
        } else {
            ENVELOPE_SIZE + len
        }
    }

    /// The ring room the next typed message is expected to need (the last
    /// archive's size, with a margin): what an async send waits for when
    /// the ring was full.
    #[cfg(feature = "tokio")]
    pub(crate) fn expected_room(&self) -> usize {
        self.room_for(self.size_hint.min(self.max_inline()))
    }

    /// Sends `payload` as the body behind `envelope`: in the ring, or out of
    /// line when larger than the ring allows.
    pub(crate) fn send_bytes(
        &mut self,
        envelope: Envelope,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
        room: Room,
        control: &Channel,
    ) -> Result<(), SendError> {
        check_size(payload.len(), self.max_message_size)?;
        if payload.len() > self.max_inline() {
            let mut blob = create_blob(payload.len())?;
            blob.copy_from_slice(payload);
            return self.send_out_of_line(envelope, blob, payload.len(), fds, room, control);
        }
        let mut grant = reserve(&mut self.tx, ENVELOPE_SIZE + payload.len(), room)?;
        grant[ENVELOPE_SIZE..].copy_from_slice(payload);
        self.published
            .publish(grant, envelope, payload.len(), fds, room, control)
    }

    /// Serializes `value` behind `envelope` with one write of its bytes:
    /// straight into a ring grant of the size the last archive suggests
    /// (never more than the ring allows, so an archive that fits the ring
    /// never goes through a memfd), or, after an archive that went out of
    /// line, straight into a memfd. An archive that outgrows its room is
    /// serialized aside once to learn its size, then copied into exactly
    /// that much room in the ring, or into a blob.
    pub(crate) fn send_archived<T: Archivable>(
        &mut self,
        envelope: Envelope,
        value: &T,
        fds: &[BorrowedFd<'_>],
        room: Room,
        control: &Channel,
    ) -> Result<(), SendError> {
        let max = self.max_inline();
        if self.size_hint > max {
            // The last archive went out of line: this one likely will too.
            let mut blob = create_blob(self.size_hint)?;
            if let Ok(len) = serialize_into(value, &mut blob, &mut self.arena) {
                self.size_hint = hint_after(len, max);
                check_size(len, self.max_message_size)?;
                if len > max {
                    return self.send_out_of_line(envelope, blob, len, fds, room, control);
                }
                // It turned out small: it goes in the ring after all.
                let mut grant = reserve(&mut self.tx, ENVELOPE_SIZE + len, room)?;
                grant[ENVELOPE_SIZE..].copy_from_slice(&blob[..len]);
                return self
                    .published
                    .publish(grant, envelope, len, fds, room, control);
            }
        } else {
            // The hot path: no wait, no copy. A full ring or an archive larger
            // than the grant falls through to the exact-size path below.
            match self.tx.try_reserve(ENVELOPE_SIZE + self.size_hint) {
                Ok(mut grant) => {
                    if let Ok(len) =
                        serialize_into(value, &mut grant[ENVELOPE_SIZE..], &mut self.arena)
                    {
                        self.size_hint = hint_after(len, max);
                        // Dropping the grant abandons it.
                        check_size(len, self.max_message_size)?;
                        return self
                            .published
                            .publish(grant, envelope, len, fds, room, control);
                    }
                    // Too small: dropping the grant abandons it.
                }
                Err(ferry_ring::SendError::Full) => {}
                Err(error) => return Err(from_ring_send(error)),
            }
        }
        let archive = serialize_aside(value)?;
        let len = archive.len();
        self.size_hint = hint_after(len, max);
        check_size(len, self.max_message_size)?;
        if len > max {
            let mut blob = create_blob(len)?;
            blob.copy_from_slice(&archive);
            drop(archive);
            return self.send_out_of_line(envelope, blob, len, fds, room, control);
        }
        let mut grant = reserve(&mut self.tx, ENVELOPE_SIZE + len, room)?;
        grant[ENVELOPE_SIZE..].copy_from_slice(&archive);
        self.published
            .publish(grant, envelope, len, fds, room, control)
    }

    /// Seals `blob`, then publishes a frame that names it, the blob going
    /// ahead with `fds` over the control socket.
    fn send_out_of_line(
        &mut self,
        mut envelope: Envelope,
        blob: BlobWriter,
        len: usize,
        fds: &[BorrowedFd<'_>],
        room: Room,
        control: &Channel,
    ) -> Result<(), SendError> {
        let blob = blob
            .seal_with_len(len)
            .map_err(|e| SendError::Io(Cause::new(e)))?;
        envelope.flags.0 |= Flags::OUT_OF_LINE;
        let mut grant = reserve(&mut self.tx, ENVELOPE_SIZE + OUT_OF_LINE_BODY_SIZE, room)?;
        grant[ENVELOPE_SIZE..].copy_from_slice(&encode_out_of_line_body(len as u64));
        let mut all_fds = Vec::with_capacity(fds.len() + 1);
        all_fds.push(blob.fd());
        all_fds.extend_from_slice(fds);
        self.published.publish(
            grant,
            envelope,
            OUT_OF_LINE_BODY_SIZE,
            &all_fds,
            room,
            control,
        )?;
        self.published.out_of_line += 1;
        Ok(())
    }

    /// Arms one event-loop waiter (`armed`: its own flag) for `room` bytes
    /// of ring room. `Ok(true)`: the room is there (or the ring says why it
    /// never will be: the next send reports it), not armed. `Ok(false)`:
    /// armed, the consumer's next release signals the readiness descriptor.
    pub(crate) fn arm_room(&mut self, room: usize, armed: &mut bool) -> Result<bool, SendError> {
        if !*armed {
            *armed = true;
            self.room_waiters += 1;
        }
        self.tx.announce_room_wait();
        match self.tx.has_room(room) {
            Ok(false) => Ok(false),
            Ok(true) => {
                self.disarm_room(armed);
                Ok(true)
            }
            Err(error) => {
                self.disarm_room(armed);
                match error {
                    ferry_ring::SendError::Closed | ferry_ring::SendError::Disconnected => Ok(true),
                    other => Err(from_ring_send(other)),
                }
            }
        }
    }

    /// Ends the arming of one waiter (a no-op if `armed` is false); the
    /// producer is disarmed with the last.
    pub(crate) fn disarm_room(&mut self, armed: &mut bool) {
        if !std::mem::replace(armed, false) {
            return;
        }
        self.room_waiters = self.room_waiters.saturating_sub(1);
        if self.room_waiters == 0 {
            self.tx.disarm_room_notification();
        }
    }

    /// [`arm_room`](Self::arm_room) for the connection itself.
    pub(crate) fn arm_own_room(&mut self, room: usize) -> Result<bool, SendError> {
        let mut armed = self.own_armed;
        let ready = self.arm_room(room, &mut armed);
        self.own_armed = armed;
        ready
    }

    /// [`disarm_room`](Self::disarm_room) for the connection itself.
    pub(crate) fn disarm_own_room(&mut self) {
        let mut armed = self.own_armed;
        self.disarm_room(&mut armed);
        self.own_armed = armed;
    }

    /// Whether the connection itself is armed for room.
    #[cfg(feature = "tokio")]
    pub(crate) fn own_room_armed(&self) -> bool {
        self.own_armed
    }

    /// Room for a `len`-byte raw frame if there is some now and the frame
    /// is within the limits; `None` for everything else, which
    /// `wait_for_frame_room` then waits for or reports.
    #[inline]
    pub(crate) fn frame_room_now(&mut self, len: usize) -> Option<FoundRoom> {
        if len > self.max_inline().min(self.max_message_size) {
            return None;
        }
        self.tx.room_now(ENVELOPE_SIZE + len)
    }

    /// Waits for room for a `len`-byte raw frame (see `reserve_frame`).
    #[inline]
    pub(crate) fn wait_for_frame_room(
        &mut self,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<FoundRoom, SendError> {
        let max = self.max_inline().min(self.max_message_size);
        if len > max {
            return Err(SendError::TooLarge { len, max });
        }
        self.tx
            .wait_for_room(ENVELOPE_SIZE + len, timeout)
            .map_err(from_ring_send)
    }

    /// Takes the room `wait_for_frame_room` found, for the caller to fill
    /// (no second look at the ring).
    #[inline]
    pub(crate) fn reserve_frame(
        &mut self,
        envelope: Envelope,
        room: FoundRoom,
    ) -> Result<FrameWriter<'_>, SendError> {
        let mut grant = self.tx.take_room(room).map_err(from_ring_send)?;
        envelope.write_to(&mut grant);
        Ok(FrameWriter { grant })
    }
}

impl Published {
    /// The one publish step: writes the envelope (with the descriptor
    /// count) in front of a filled `body_len`-byte body, trims the grant,
    /// sends the descriptors ahead over the control socket (so they wait for
    /// the receiver when it sees the frame, numbered so it can match them),
    /// then publishes the frame. On error nothing is published.
    fn publish(
        &mut self,
        mut grant: Grant<'_>,
        mut envelope: Envelope,
        body_len: usize,
        fds: &[BorrowedFd<'_>],
        room: Room,
        control: &Channel,
    ) -> Result<(), SendError> {
        envelope.fd_count = fds.len() as u16;
        envelope.write_to(&mut grant);
        grant.shrink_to(ENVELOPE_SIZE + body_len);
        if !fds.is_empty() {
            let next = self.attachments + 1;
            let header = encode_attachment_header(next);
            // Waits for room in the control socket as the caller asked to
            // wait for room in the ring; a dead peer ends it at once (EPIPE).
            let sent = match room {
                Room::Try => control.try_send(&header, fds),
                Room::Wait(None) => control.send(&header, fds),
                Room::Wait(Some(timeout)) => control.send_timeout(&header, fds, timeout),
            };
            sent.map_err(from_control_send)?;
            self.attachments = next;
            self.fds += fds.len() as u64;
        }
        grant.commit();
        Ok(())
    }
}

/// A frame being written in place by the raw API.
pub struct FrameWriter<'a> {
    grant: Grant<'a>,
}

impl FrameWriter<'_> {
    /// Publishes the frame.
    pub fn commit(self) {
        self.grant.commit();
    }

    /// Completes the frame but publishes it only at the next
    /// [`Connection::flush`](crate::Connection::flush) or commit (or when
    /// the ring fills up): a batch of small frames costs one publish, and
    /// the peer at most one wake-up.
    pub fn commit_deferred(self) {
        self.grant.commit_deferred();
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

/// Reserves `len` bytes, waiting per `room`. (A free function over `tx`, so
/// the grant borrows only that field.)
fn reserve(tx: &mut Producer, len: usize, room: Room) -> Result<Grant<'_>, SendError> {
    match room {
        Room::Try => tx.try_reserve(len),
        Room::Wait(timeout) => tx.reserve(len, timeout),
    }
    .map_err(from_ring_send)
}

/// The room to reserve for the next archive after one of `len` bytes, in a
/// ring whose largest body is `max`: at most `max` while archives fit the
/// ring, above it (meaning "serialize into a memfd") once one did not.
fn hint_after(len: usize, max: usize) -> usize {
    let hint = len + len / 4 + 64;
    if len > max { hint } else { hint.min(max) }
}

/// Refuses a body of `len` bytes above `max` (the connection's
/// `max_message_size`). A free function, so that it can be called while a
/// grant borrows the producer.
fn check_size(len: usize, max: usize) -> Result<(), SendError> {
    if len > max {
        return Err(SendError::TooLarge { len, max });
    }
    Ok(())
}

fn create_blob(len: usize) -> Result<BlobWriter, SendError> {
    BlobWriter::create(len).map_err(|e| SendError::Io(Cause::new(e)))
}

/// Serializes `value` into `out`; fails when it does not fit (or cannot be
/// serialized at all: the aside path then reports that).
fn serialize_into<T: Archivable>(
    value: &T,
    out: &mut [u8],
    arena: &mut Arena,
) -> Result<usize, rancor::Error> {
    rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(
        value,
        Buffer::from(out),
        arena.acquire(),
    )
    .map(|buffer| buffer.len())
}

/// Serializes `value` into a private buffer of whatever size it needs.
pub(crate) fn serialize_aside<T: Archivable>(value: &T) -> Result<AlignedVec<16>, SendError> {
    with_arena(|arena| {
        rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(
            value,
            AlignedVec::<16>::new(),
            arena.acquire(),
        )
    })
    .map_err(|e| SendError::Serialize(Cause::new(e)))
}
