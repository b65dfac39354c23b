//! Every byte layout a connection puts on the wire, encoder beside decoder:
//!
//! - the [`Envelope`], the fixed header in front of every frame in the ring;
//! - the attachment header, the control-socket message that carries a
//!   frame's descriptors ahead of it;
//! - the out-of-line body, the frame body that names a sealed blob;
//! - the body of an error reply, which says why a request got no answer
//!   ([`NoReply`]).
//!
//! Every decoder here takes bytes a peer wrote and never panics, whatever
//! they are: fuzzers call them directly.
//!
//! The envelope:
//!
//! ```text
//! offset  size  field
//!      0     8  destination   which object instance on the receiving side
//!      8     8  request_id    non-zero when a reply is expected, or what a reply answers
//!     16     4  receiver      receiver id (0 for a raw frame)
//!     20     4  schema        the receiver's schema hash
//!     24     4  message       message id within the receiver
//!     28     2  flags         see `Flags` (an error reply's body is a `NoReply` code;
//!                             a cancel names the request it gives up)
//!     30     2  fd_count      descriptors sent with this frame over the control socket
//! ```
//!
//! 32 bytes, little-endian, so the body after it starts 16-aligned in the
//! ring, as rkyv requires.

use thiserror::Error;

/// Bytes of the envelope.
pub const ENVELOPE_SIZE: usize = 32;

/// Flag bits of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u16);

impl Flags {
    /// The frame answers the request named by `request_id`.
    pub const REPLY: u16 = 1 << 0;
    /// The sender blocks until the reply arrives.
    pub const SYNC: u16 = 1 << 1;
    /// The receiver may dispatch it while it waits for a synchronous reply.
    pub const ALLOWED_WHILE_WAITING: u16 = 1 << 2;
    /// The body is the length of a sealed blob sent as the first descriptor.
    pub const OUT_OF_LINE: u16 = 1 << 3;
    /// A raw frame: the body is the caller's bytes, not an rkyv archive.
    pub const RAW: u16 = 1 << 4;
    /// With `REPLY`: the request got no answer; the body is a [`NoReply`]
    /// code instead of the reply's archive.
    pub const ERROR: u16 = 1 << 5;
    /// The requester gave up on request `request_id` (it names the
    /// request's receiver and message); no body, no descriptors.
    pub const CANCEL: u16 = 1 << 6;
    /// Every bit a valid envelope may carry.
    pub const ALL: u16 = Self::REPLY
        | Self::SYNC
        | Self::ALLOWED_WHILE_WAITING
        | Self::OUT_OF_LINE
        | Self::RAW
        | Self::ERROR
        | Self::CANCEL;

    /// Whether all bits of `bit` are set.
    pub fn has(self, bit: u16) -> bool {
        self.0 & bit == bit
    }
}

/// The header of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Envelope {
    /// Object instance the message is for.
    pub destination: u64,
    /// Request id (0: no reply expected).
    pub request_id: u64,
    /// Receiver id (0 for raw frames).
    pub receiver: u32,
    /// The receiver's schema hash.
    pub schema: u32,
    /// Message id within the receiver.
    pub message: u32,
    /// Flag bits.
    pub flags: Flags,
    /// Descriptors attached over the control socket.
    pub fd_count: u16,
}

/// Why an envelope was refused.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Shorter than an envelope.
    #[error("frame of {0} bytes is shorter than its envelope")]
    Short(usize),
    /// Flag bits that no version of this protocol sets.
    #[error("unknown flag bits {0:#x}")]
    UnknownFlags(u16),
    /// A reply without a request id.
    #[error("reply without a request id")]
    ReplyWithoutRequest,
    /// A raw frame that names a receiver or message, or a typed one without
    /// a receiver.
    #[error("raw flag and receiver id disagree")]
    RawMismatch,
    /// An out-of-line frame without its blob descriptor.
    #[error("out-of-line frame carries no descriptor")]
    OutOfLineWithoutBlob,
    /// The error flag on a frame that is not a reply.
    #[error("error flag on a frame that is not a reply")]
    ErrorWithoutReply,
    /// A cancel that names no request, or that carries other flags or
    /// descriptors.
    #[error("malformed cancel")]
    MalformedCancel,
    /// More descriptors than this connection accepts per message.
    #[error("{count} descriptors exceed the limit of {max}")]
    TooManyFds {
        /// Announced count.
        count: u16,
        /// This end's limit.
        max: usize,
    },
}

impl Envelope {
    /// Writes the envelope into the first [`ENVELOPE_SIZE`] bytes of `out`.
    #[inline]
    pub fn write_to(&self, out: &mut [u8]) {
        let out = &mut out[..ENVELOPE_SIZE];
        out[0..8].copy_from_slice(&self.destination.to_le_bytes());
        out[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        out[16..20].copy_from_slice(&self.receiver.to_le_bytes());
        out[20..24].copy_from_slice(&self.schema.to_le_bytes());
        out[24..28].copy_from_slice(&self.message.to_le_bytes());
        out[28..30].copy_from_slice(&self.flags.0.to_le_bytes());
        out[30..32].copy_from_slice(&self.fd_count.to_le_bytes());
    }

    /// Reads and validates the envelope at the start of `frame`, for a
    /// receiver that accepts at most `max_fds` descriptors per message.
    /// Never panics, whatever the bytes: fuzzers call it directly.
    #[inline]
    pub fn decode(frame: &[u8], max_fds: usize) -> Result<Envelope, EnvelopeError> {
        let Some(bytes) = frame.get(..ENVELOPE_SIZE) else {
            return Err(EnvelopeError::Short(frame.len()));
        };
        let u64_at =
            |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        let u32_at =
            |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
        let u16_at =
            |at: usize| u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap_or_default());
        let envelope = Envelope {
            destination: u64_at(0),
            request_id: u64_at(8),
            receiver: u32_at(16),
            schema: u32_at(20),
            message: u32_at(24),
            flags: Flags(u16_at(28)),
            fd_count: u16_at(30),
        };
        envelope.validate(max_fds)?;
        Ok(envelope)
    }

    fn validate(&self, max_fds: usize) -> Result<(), EnvelopeError> {
        let flags = self.flags;
        if flags.0 & !Flags::ALL != 0 {
            return Err(EnvelopeError::UnknownFlags(flags.0 & !Flags::ALL));
        }
        if flags.has(Flags::REPLY) && self.request_id == 0 {
            return Err(EnvelopeError::ReplyWithoutRequest);
        }
        if flags.has(Flags::ERROR) && !flags.has(Flags::REPLY) {
            return Err(EnvelopeError::ErrorWithoutReply);
        }
        if flags.has(Flags::CANCEL)
            && (flags.0 != Flags::CANCEL || self.request_id == 0 || self.fd_count != 0)
        {
            return Err(EnvelopeError::MalformedCancel);
        }
        let raw = flags.has(Flags::RAW);
        if raw != (self.receiver == 0) || (raw && self.message != 0) {
            return Err(EnvelopeError::RawMismatch);
        }
        let blob = usize::from(flags.has(Flags::OUT_OF_LINE));
        if usize::from(self.fd_count) < blob {
            return Err(EnvelopeError::OutOfLineWithoutBlob);
        }
        if usize::from(self.fd_count) > max_fds + blob {
            return Err(EnvelopeError::TooManyFds {
                count: self.fd_count,
                max: max_fds,
            });
        }
        Ok(())
    }
}

/// Bytes of the control-socket message that carries a frame's descriptors:
/// a magic number, then the attachment's sequence number (both sides count
/// attachments, so each set of descriptors is matched to its frame).
pub const ATTACHMENT_HEADER_SIZE: usize = 16;
const ATTACHMENT_MAGIC: u64 = u64::from_le_bytes(*b"FERRYFDS");

/// Encodes the header of attachment number `sequence`.
pub fn encode_attachment_header(sequence: u64) -> [u8; ATTACHMENT_HEADER_SIZE] {
    let mut out = [0u8; ATTACHMENT_HEADER_SIZE];
    out[..8].copy_from_slice(&ATTACHMENT_MAGIC.to_le_bytes());
    out[8..].copy_from_slice(&sequence.to_le_bytes());
    out
}

/// The sequence number in an attachment header, if `bytes` is one.
pub fn decode_attachment_header(bytes: &[u8]) -> Option<u64> {
    let bytes: &[u8; ATTACHMENT_HEADER_SIZE] = bytes.try_into().ok()?;
    let (magic, sequence) = bytes.split_at(8);
    (u64::from_le_bytes(magic.try_into().ok()?) == ATTACHMENT_MAGIC)
        .then(|| u64::from_le_bytes(sequence.try_into().unwrap_or_default()))
}

/// Bytes of an out-of-line frame's body: the blob's length (the blob itself
/// is the frame's first descriptor).
pub const OUT_OF_LINE_BODY_SIZE: usize = 8;

/// Encodes the body of a frame whose payload is a blob of `len` bytes.
pub fn encode_out_of_line_body(len: u64) -> [u8; OUT_OF_LINE_BODY_SIZE] {
    len.to_le_bytes()
}

/// The blob length an out-of-line frame's body announces, if the body has
/// the right size.
pub fn decode_out_of_line_body(body: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(body.try_into().ok()?))
}

/// Why a request got no answer: the body of an error reply (a
/// little-endian `u32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoReply {
    /// Nothing is registered at the destination (any more): the object the
    /// request was for is gone.
    DestinationGone,
    /// The handler let go of its reply handle without answering.
    Dropped,
    /// As many replies wait to be answered later as the handling side
    /// allows (its `max_reply_handles`); the request was not handled.
    Busy,
}

impl NoReply {
    const DESTINATION_GONE: u32 = 1;
    const DROPPED: u32 = 2;
    const BUSY: u32 = 3;
}

impl std::fmt::Display for NoReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NoReply::DestinationGone => "nothing is registered at the destination",
            NoReply::Dropped => "the handler dropped its reply handle unanswered",
            NoReply::Busy => "too many replies wait to be answered later",
        })
    }
}

/// Bytes of an error reply's body.
pub const NO_REPLY_BODY_SIZE: usize = 4;

/// Encodes the body of an error reply.
pub fn encode_no_reply(reason: NoReply) -> [u8; NO_REPLY_BODY_SIZE] {
    match reason {
        NoReply::DestinationGone => NoReply::DESTINATION_GONE,
        NoReply::Dropped => NoReply::DROPPED,
        NoReply::Busy => NoReply::BUSY,
    }
    .to_le_bytes()
}

/// The reason an error reply's body names, if it is one this version knows.
pub fn decode_no_reply(body: &[u8]) -> Option<NoReply> {
    match u32::from_le_bytes(body.try_into().ok()?) {
        NoReply::DESTINATION_GONE => Some(NoReply::DestinationGone),
        NoReply::DROPPED => Some(NoReply::Dropped),
        NoReply::BUSY => Some(NoReply::Busy),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_reply_round_trip_and_refusals() {
        for reason in [NoReply::DestinationGone, NoReply::Dropped, NoReply::Busy] {
            assert_eq!(decode_no_reply(&encode_no_reply(reason)), Some(reason));
        }
        assert_eq!(decode_no_reply(&[0; 4]), None);
        assert_eq!(decode_no_reply(&[1, 0, 0]), None);
        assert_eq!(decode_no_reply(&[1, 0, 0, 0, 0]), None);
    }

    #[test]
    fn attachment_header_round_trip_and_refusals() {
        let header = encode_attachment_header(7);
        assert_eq!(decode_attachment_header(&header), Some(7));
        assert_eq!(decode_attachment_header(&header[1..]), None);
        let mut bad = header;
        bad[0] ^= 1;
        assert_eq!(decode_attachment_header(&bad), None);
    }

    #[test]
    fn out_of_line_body_round_trip_and_refusals() {
        let body = encode_out_of_line_body(1 << 40);
        assert_eq!(decode_out_of_line_body(&body), Some(1 << 40));
        assert_eq!(decode_out_of_line_body(&body[..7]), None);
        assert_eq!(decode_out_of_line_body(&[0; 9]), None);
    }

    fn typed() -> Envelope {
        Envelope {
            destination: 7,
            request_id: 9,
            receiver: 0xabcd,
            schema: 0x1234,
            message: 3,
            flags: Flags(Flags::SYNC),
            fd_count: 2,
        }
    }

    #[test]
    fn round_trip() {
        let mut bytes = [0u8; 40];
        typed().write_to(&mut bytes);
        assert_eq!(Envelope::decode(&bytes, 16), Ok(typed()));
    }

    #[test]
    fn refusals() {
        let mut bytes = [0u8; 32];
        assert_eq!(
            Envelope::decode(&bytes[..31], 16),
            Err(EnvelopeError::Short(31))
        );
        let cases = [
            (
                Envelope {
                    flags: Flags(1 << 9),
                    ..typed()
                },
                EnvelopeError::UnknownFlags(1 << 9),
            ),
            (
                Envelope {
                    flags: Flags(Flags::REPLY),
                    request_id: 0,
                    ..typed()
                },
                EnvelopeError::ReplyWithoutRequest,
            ),
            (
                Envelope {
                    flags: Flags(Flags::RAW),
                    ..typed()
                },
                EnvelopeError::RawMismatch,
            ),
            (
                Envelope {
                    receiver: 0,
                    ..typed()
                },
                EnvelopeError::RawMismatch,
            ),
            (
                Envelope {
                    flags: Flags(Flags::OUT_OF_LINE),
                    fd_count: 0,
                    ..typed()
                },
                EnvelopeError::OutOfLineWithoutBlob,
            ),
            (
                Envelope {
                    fd_count: 17,
                    ..typed()
                },
                EnvelopeError::TooManyFds { count: 17, max: 16 },
            ),
            (
                Envelope {
                    flags: Flags(Flags::ERROR),
                    ..typed()
                },
                EnvelopeError::ErrorWithoutReply,
            ),
            (
                Envelope {
                    flags: Flags(Flags::CANCEL | Flags::SYNC),
                    fd_count: 0,
                    ..typed()
                },
                EnvelopeError::MalformedCancel,
            ),
            (
                Envelope {
                    flags: Flags(Flags::CANCEL),
                    request_id: 0,
                    fd_count: 0,
                    ..typed()
                },
                EnvelopeError::MalformedCancel,
            ),
            (
                Envelope {
                    flags: Flags(Flags::CANCEL),
                    fd_count: 1,
                    ..typed()
                },
                EnvelopeError::MalformedCancel,
            ),
        ];
        for (envelope, expected) in cases {
            envelope.write_to(&mut bytes);
            assert_eq!(Envelope::decode(&bytes, 16), Err(expected));
        }
    }
}
