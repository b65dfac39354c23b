//! The receive half of a connection's data path: takes frames off the ring
//! (in place for a trusted peer, copied once for an untrusted one),
//! validates their envelopes, collects their descriptors from the control
//! socket and opens their out-of-line blobs.
//!
//! Every body is bounded by the connection's `max_message_size`. A body in
//! the ring is bounded by the ring already (at most half its capacity, and
//! the capacity by `max_ring_capacity` when the peer chose it): it is
//! checked against the limit after it arrived, which costs nothing more.
//! An out-of-line body is checked on the length its frame announces,
//! before its descriptor is taken from the control socket and before
//! anything is mapped; the blob must then be exactly that long, sealed,
//! and without holes.

use crate::config::{ATTACHMENT_TIMEOUT, ConnectionConfig, Trust};
use crate::error::{AttachmentError, BlobRefusal, Cause, Violation};
use crate::incoming::{Body, Incoming};
use crate::wire::{
    ATTACHMENT_HEADER_SIZE, ENVELOPE_SIZE, Envelope, Flags, decode_attachment_header,
    decode_out_of_line_body,
};
use ferry_handoff::Channel;
use ferry_ring::{Consumer, SealedBlob};
use rkyv::util::AlignedVec;
use std::os::fd::OwnedFd;
use std::time::Duration;

/// Spare buffers kept for reuse (more would only hold memory).
const MAX_SPARE_BUFFERS: usize = 8;

/// Why no frame was taken.
pub(crate) enum InboxError {
    /// The ring said so (empty, timed out, closed, corrupted).
    Ring(ferry_ring::RecvError),
    /// The frame broke the protocol (it was given back).
    Violation(Violation),
}

/// What [`Inbox::next_plain`] found.
pub(crate) enum Ready {
    /// A plain frame, taken.
    Frame(Incoming),
    /// Nothing in the ring (and the ring neither closed nor broken).
    Empty,
    /// Something for the general path (`Inbox::next`); nothing was taken.
    Other,
}

/// The ring this end reads, with what receiving needs besides.
pub(crate) struct Inbox {
    pub(crate) rx: Consumer,
    trust: Trust,
    max_fds: usize,
    /// The largest body accepted, in the ring or out of line.
    max_message_size: usize,
    /// Private 16-aligned buffers for copies, reused.
    spare_buffers: Vec<AlignedVec<16>>,
    /// Attachments received so far (the sender numbers them).
    attachments: u64,
    pub(crate) out_of_line: u64,
    pub(crate) fds: u64,
}

impl Inbox {
    pub(crate) fn new(rx: Consumer, config: &ConnectionConfig) -> Self {
        Inbox {
            rx,
            trust: config.trust,
            max_fds: config.max_fds_per_message,
            max_message_size: config.max_message_size,
            spare_buffers: Vec::new(),
            attachments: 0,
            out_of_line: 0,
            fds: 0,
        }
    }

    /// Takes the next frame. `wait`: `None` to try once, `Some(timeout)` to
    /// wait.
    #[inline]
    pub(crate) fn next(
        &mut self,
        wait: Option<Option<Duration>>,
        control: &Channel,
    ) -> Result<Incoming, InboxError> {
        let peeked = match wait {
            None => self.rx.try_peek(),
            Some(timeout) => self.rx.peek(timeout),
        };
        let frame = peeked.map_err(InboxError::Ring)?;
        let body = match self.trust {
            Trust::Trusted => Body::InPlace(frame.keep_in_place()),
            Trust::Untrusted => {
                let mut buffer = self.spare_buffers.pop().unwrap_or_default();
                buffer.clear();
                let len = frame.len();
                buffer.reserve(len);
                // SAFETY: `reserve` made room for `len` bytes (the buffer was
                // cleared), `copy_to` writes exactly `len`, then the length
                // is set. The buffer is its own heap allocation, so it does
                // not overlap the ring. The copy goes through raw pointers:
                // no reference is formed over bytes the peer may still write;
                // everything after (envelope, archive validation) reads the
                // copy.
                unsafe {
                    frame.copy_to(buffer.as_mut_ptr());
                    buffer.set_len(len);
                }
                frame.release_deferred();
                self.rx.flush();
                Body::Copied(buffer)
            }
        };
        let mut incoming = Incoming {
            envelope: Envelope::default(),
            body,
            fds: Vec::new(),
        };
        if let Err(violation) = self.complete(&mut incoming, control) {
            self.finish(&mut incoming);
            return Err(InboxError::Violation(violation));
        }
        Ok(incoming)
    }

    /// The next frame if it is there and plain: read in place (a trusted
    /// peer), its envelope valid, no descriptors (so no blob either), its
    /// body within the size limit. Anything else, including an untrusted
    /// peer's frame (validated only once copied out), is left in the ring
    /// for [`next`](Self::next): [`Ready::Other`].
    #[inline]
    pub(crate) fn next_plain(&mut self) -> Ready {
        if self.trust != Trust::Trusted {
            return Ready::Other;
        }
        let frame = match self.rx.try_peek() {
            Ok(frame) => frame,
            Err(ferry_ring::RecvError::Empty) => return Ready::Empty,
            Err(_) => return Ready::Other,
        };
        let Ok(envelope) = Envelope::decode(frame.payload(), self.max_fds) else {
            return Ready::Other;
        };
        // `decode` succeeded: the frame holds at least the envelope.
        let body_len = frame.len() - ENVELOPE_SIZE;
        // `check_size`'s rule (the frame borrows the ring, so inline).
        if envelope.fd_count != 0 || body_len > self.max_message_size {
            return Ready::Other;
        }
        Ready::Frame(Incoming {
            envelope,
            body: Body::InPlace(frame.keep_in_place()),
            fds: Vec::new(),
        })
    }

    /// Validates the envelope, then collects the descriptors and opens the
    /// blob the envelope announces.
    #[inline]
    fn complete(&mut self, incoming: &mut Incoming, control: &Channel) -> Result<(), Violation> {
        // The envelope is read once, into a local: what is validated is
        // what is used.
        let envelope = Envelope::decode(incoming.frame(), self.max_fds)?;
        let body = incoming.bytes();
        let blob_len = if envelope.flags.has(Flags::OUT_OF_LINE) {
            let len = decode_out_of_line_body(body).ok_or(BlobRefusal::BodyLength(body.len()))?;
            // Refused on the announced length alone: nothing received,
            // nothing mapped.
            self.check_size(len)?;
            Some(len)
        } else {
            self.check_size(body.len() as u64)?;
            None
        };
        incoming.envelope = envelope;
        if envelope.fd_count > 0 {
            incoming.fds = self.recv_attachment(envelope.fd_count, control)?;
        }
        if let Some(len) = blob_len {
            // The envelope promised at least one descriptor: the blob.
            let fd = incoming.fds.remove(0);
            let len = usize::try_from(len).map_err(|_| BlobRefusal::Length(len))?;
            let blob = SealedBlob::open_with_limit(fd, len, self.max_message_size)
                .map_err(|e| BlobRefusal::Open(Cause::new(e)))?;
            self.finish(incoming);
            incoming.body = Body::Blob(blob);
            self.out_of_line += 1;
        }
        Ok(())
    }

    /// Refuses a message body of `len` bytes above the limit.
    fn check_size(&self, len: u64) -> Result<(), Violation> {
        if len > self.max_message_size as u64 {
            return Err(Violation::MessageTooLarge {
                len,
                max: self.max_message_size,
            });
        }
        Ok(())
    }

    /// Receives the descriptors sent ahead of a frame over the control
    /// socket, and checks they are the ones this frame announced.
    fn recv_attachment(
        &mut self,
        count: u16,
        control: &Channel,
    ) -> Result<Vec<OwnedFd>, AttachmentError> {
        let mut header = [0u8; ATTACHMENT_HEADER_SIZE];
        let received = control
            .recv(&mut header, Some(ATTACHMENT_TIMEOUT))
            .map_err(|e| AttachmentError::Recv(Cause::new(e)))?;
        let expected = self.attachments + 1;
        let sequence = decode_attachment_header(&header[..received.len])
            .ok_or(AttachmentError::MalformedHeader { len: received.len })?;
        if sequence != expected || received.fds.len() != usize::from(count) {
            return Err(AttachmentError::Mismatch {
                sequence,
                fds: received.fds.len(),
                expected,
                count,
            });
        }
        self.attachments = expected;
        self.fds += u64::from(count);
        Ok(received.fds)
    }

    /// Gives back what a received frame holds: its pin on the ring (the head
    /// is published once no frame is kept in place) or its private buffer.
    #[inline]
    pub(crate) fn finish(&mut self, incoming: &mut Incoming) {
        match std::mem::replace(&mut incoming.body, Body::Finished) {
            Body::InPlace(frame) => self.rx.give_back(frame),
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
        if incoming.in_place() {
            let mut copy = self.spare_buffers.pop().unwrap_or_default();
            copy.clear();
            copy.extend_from_slice(incoming.frame());
            self.finish(incoming);
            incoming.body = Body::Copied(copy);
        }
    }
}
