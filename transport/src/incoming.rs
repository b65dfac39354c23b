//! The receive path: taking a frame from the ring (in place or copied),
//! validating its envelope, and collecting its attachments.

use crate::config::{ATTACHMENT_TIMEOUT, Trust};
use crate::connection::{Connection, State};
use crate::envelope::{ENVELOPE_SIZE, Envelope, Flags};
use crate::error::{RecvError, Violation};
use crate::message::{Archivable, access_archive};
use ferry_ring::SealedBlob;
use rkyv::util::AlignedVec;
use std::os::fd::OwnedFd;
use std::time::Duration;

/// Where the bytes of a received frame are.
pub(crate) enum Body {
    /// In the ring (trusted peers). Valid while it holds a pin on the
    /// consumer (`Consumer::pin`): the head is not published past it until
    /// it is finished, so the producer cannot overwrite it.
    InPlace { ptr: *const u8, len: usize },
    /// In a private 16-aligned copy (untrusted peers, or set aside).
    Copied(AlignedVec<16>),
    /// In a sealed, read-only blob (out-of-line frames).
    Blob(SealedBlob),
    /// Already given back.
    Finished,
}

/// A received frame: its envelope, its body, its descriptors.
pub struct Incoming {
    pub(crate) envelope: Envelope,
    pub(crate) body: Body,
    pub(crate) fds: Vec<OwnedFd>,
}

// SAFETY: the in-place pointer refers to a region the connection keeps alive
// and is only dereferenced through `&Incoming`, which the connection hands
// out while it guarantees the bytes stay put; nothing here is thread-bound.
unsafe impl Send for Incoming {}

impl Incoming {
    /// The frame's envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The body: the bytes after the envelope (or the whole blob for an
    /// out-of-line frame), 16-aligned.
    pub fn bytes(&self) -> &[u8] {
        match &self.body {
            Body::InPlace { ptr, len } => {
                // SAFETY: `ptr` and `len` came from a validated ring frame,
                // and this frame holds a pin on the consumer until it is
                // finished (`Connection::finish`, which takes the Incoming
                // mutably, so not while this borrow lives): the head is not
                // published past it, so the producer cannot reuse the bytes,
                // and the region stays mapped while the connection lives. The
                // peer is trusted (the only mode that reads in place) not to
                // write frames it published.
                let frame = unsafe { std::slice::from_raw_parts(*ptr, *len) };
                &frame[ENVELOPE_SIZE..]
            }
            Body::Copied(buffer) => &buffer[ENVELOPE_SIZE..],
            Body::Blob(blob) => blob.bytes(),
            Body::Finished => &[],
        }
    }

    /// Takes the descriptors that came with the frame (out-of-line blobs not
    /// included).
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.fds)
    }

    /// Validates the body as an archive of `T` and returns it.
    pub fn access<T: Archivable>(&self, name: &'static str) -> Result<&T::Archived, Violation> {
        access_archive::<T>(self.bytes(), name)
    }

    /// Whether the body lives in the ring (and pins the consumer).
    fn in_place(&self) -> bool {
        matches!(self.body, Body::InPlace { .. })
    }
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("envelope", &self.envelope)
            .field("len", &self.bytes().len())
            .field("fds", &self.fds.len())
            .finish()
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

impl Connection {
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

    /// Takes the next frame off the ring. `wait`: `None` to try once,
    /// `Some(timeout)` to wait.
    pub(crate) fn next_incoming(
        &mut self,
        wait: Option<Option<Duration>>,
    ) -> Result<Incoming, RecvError> {
        if let Some(error) = self.closed_recv_error() {
            return Err(error);
        }
        let trust = self.config.trust;
        let peeked = match wait {
            None => self.rx.try_peek(),
            Some(timeout) => self.rx.peek(timeout),
        };
        let body = match peeked {
            Ok(frame) => take_frame(frame, trust, &mut self.spare_buffers),
            Err(error) => return Err(self.ring_recv_error(error)),
        };
        let mut incoming = Incoming {
            envelope: Envelope::default(),
            body,
            fds: Vec::new(),
        };
        if incoming.in_place() {
            self.rx.pin();
        } else {
            self.rx.flush();
        }
        self.stats.frames_received += 1;
        if let Err(violation) = self.complete_incoming(&mut incoming) {
            self.finish(&mut incoming);
            return Err(self.fail(violation));
        }
        Ok(incoming)
    }

    /// Validates the envelope, then collects the descriptors and opens the
    /// blob the envelope announces.
    fn complete_incoming(&mut self, incoming: &mut Incoming) -> Result<(), Violation> {
        let frame: &[u8] = match &incoming.body {
            Body::InPlace { ptr, len } => {
                // SAFETY: as in `Incoming::bytes`: a validated frame that holds
                // a pin on the consumer, so its room is not released yet.
                unsafe { std::slice::from_raw_parts(*ptr, *len) }
            }
            Body::Copied(buffer) => buffer,
            Body::Blob(_) | Body::Finished => &[],
        };
        // The envelope is read once, into a local: what is validated is
        // what is used.
        let envelope = Envelope::decode(frame, self.config.max_fds_per_message)?;
        let blob_len = if envelope.flags.has(Flags::OUT_OF_LINE) {
            let body = &frame[ENVELOPE_SIZE..];
            let bytes: [u8; 8] = body.try_into().map_err(|_| {
                Violation::Blob(format!("out-of-line frame body of {} bytes", body.len()))
            })?;
            Some(u64::from_le_bytes(bytes))
        } else {
            None
        };
        incoming.envelope = envelope;
        if envelope.fd_count > 0 {
            incoming.fds = self.recv_attachment(envelope.fd_count)?;
        }
        if let Some(len) = blob_len {
            let fd = incoming.fds.remove(0);
            let len = usize::try_from(len).map_err(|_| Violation::Blob(format!("length {len}")))?;
            let blob = SealedBlob::open(fd, len).map_err(|e| Violation::Blob(e.to_string()))?;
            self.finish(incoming);
            incoming.body = Body::Blob(blob);
            self.stats.out_of_line_received += 1;
        }
        Ok(())
    }

    /// Receives the descriptors sent ahead of a frame over the control
    /// socket, and checks they are the ones this frame announced.
    fn recv_attachment(&mut self, count: u16) -> Result<Vec<OwnedFd>, Violation> {
        let mut header = [0u8; ATTACHMENT_HEADER];
        let received = self
            .control
            .recv(&mut header, Some(ATTACHMENT_TIMEOUT))
            .map_err(|e| Violation::Attachment(e.to_string()))?;
        let expected = self.attachments_in + 1;
        let sequence = decode_attachment_header(&header[..received.len]).ok_or_else(|| {
            Violation::Attachment(format!("malformed header of {} bytes", received.len))
        })?;
        if sequence != expected || received.fds.len() != usize::from(count) {
            return Err(Violation::Attachment(format!(
                "got attachment {sequence} with {} descriptors, expected {expected} with {count}",
                received.fds.len()
            )));
        }
        self.attachments_in = expected;
        self.stats.fds_received += u64::from(count);
        Ok(received.fds)
    }

    /// Gives back what a received frame holds: the ring's room (once no
    /// frame is read in place any more) or the private buffer.
    pub(crate) fn finish(&mut self, incoming: &mut Incoming) {
        match std::mem::replace(&mut incoming.body, Body::Finished) {
            Body::InPlace { .. } => self.rx.unpin(),
            Body::Copied(buffer) => {
                if self.spare_buffers.len() < MAX_SPARE_BUFFERS {
                    self.spare_buffers.push(buffer);
                }
            }
            Body::Blob(_) | Body::Finished => {}
        }
    }

    /// Moves a frame read in place into a private buffer (copying its
    /// envelope slot too, so the body stays 16-aligned), for a message that
    /// must outlive its turn in the ring.
    pub(crate) fn make_owned(&mut self, incoming: &mut Incoming) {
        if let Body::InPlace { .. } = incoming.body {
            let mut copy = self.spare_buffers.pop().unwrap_or_default();
            copy.clear();
            copy.extend_from_slice(&[0u8; ENVELOPE_SIZE]);
            copy.extend_from_slice(incoming.bytes());
            self.finish(incoming);
            incoming.body = Body::Copied(copy);
        }
    }

    fn ring_recv_error(&mut self, error: ferry_ring::RecvError) -> RecvError {
        use ferry_ring::RecvError as Ring;
        match error {
            Ring::Empty => RecvError::Empty,
            Ring::TimedOut => RecvError::TimedOut,
            Ring::Closed | Ring::Disconnected => {
                self.state = State::Disconnected;
                self.fail_pending_calls(crate::error::CallError::Disconnected);
                RecvError::Disconnected
            }
            Ring::Corrupt(corruption) => self.fail(Violation::Ring(corruption)),
        }
    }
}

/// Spare buffers kept for reuse (more would only hold memory).
const MAX_SPARE_BUFFERS: usize = 8;

/// Takes the peeked frame: in place for a trusted peer, else copied once
/// into a private aligned buffer. Either way the ring's read position moves
/// on; the head is published when no in-place frame pins it.
fn take_frame(frame: ferry_ring::Frame<'_>, trust: Trust, spare: &mut Vec<AlignedVec<16>>) -> Body {
    let len = frame.len();
    let body = match trust {
        Trust::Trusted => Body::InPlace {
            ptr: frame.payload().as_ptr(),
            len,
        },
        Trust::Untrusted => {
            let mut buffer = spare.pop().unwrap_or_default();
            buffer.clear();
            buffer.reserve(len);
            // SAFETY: `reserve` made room for `len` bytes, `copy_to` writes
            // exactly `len`, then the length is set. The copy goes through
            // raw pointers: no reference is formed over the shared bytes.
            unsafe {
                frame.copy_to(buffer.as_mut_ptr());
                buffer.set_len(len);
            }
            Body::Copied(buffer)
        }
    };
    frame.release_deferred();
    body
}

/// Bytes of the message that precedes a frame's descriptors on the control
/// socket: magic, then the attachment's sequence number.
pub(crate) const ATTACHMENT_HEADER: usize = 16;
const ATTACHMENT_MAGIC: u64 = u64::from_le_bytes(*b"FERRYFDS");

pub(crate) fn encode_attachment_header(sequence: u64) -> [u8; ATTACHMENT_HEADER] {
    let mut out = [0u8; ATTACHMENT_HEADER];
    out[..8].copy_from_slice(&ATTACHMENT_MAGIC.to_le_bytes());
    out[8..].copy_from_slice(&sequence.to_le_bytes());
    out
}

/// The sequence number in an attachment header, if it is one.
pub fn decode_attachment_header(bytes: &[u8]) -> Option<u64> {
    let bytes: &[u8; ATTACHMENT_HEADER] = bytes.try_into().ok()?;
    let magic = u64::from_le_bytes(bytes[..8].try_into().ok()?);
    (magic == ATTACHMENT_MAGIC)
        .then(|| u64::from_le_bytes(bytes[8..].try_into().unwrap_or_default()))
}
