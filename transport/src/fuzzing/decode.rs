//! The decode checker: arbitrary bytes as one frame for a protocol's
//! receivers, through the same envelope and archive validation a
//! connection runs, with a differential check of everything accepted.
//!
//! ```
//! ferry_transport::protocol! {
//!     /// A receiver.
//!     pub receiver Lamp handled_by LampHandler {
//!         /// Turns it on.
//!         fn on => On { level: u8, label: String };
//!     }
//! }
//! use ferry_transport::fuzzing::decode::{self, Decoded};
//! // The input: a descriptor limit, then the frame (envelope and body).
//! assert_eq!(decode::check::<Lamp>(&[4, 1, 2, 3]), Ok(Decoded::Refused));
//! ```

use super::catalog::Catalog;
use super::finding::Finding;
use super::protocol::Protocol;
use crate::wire::{ENVELOPE_SIZE, Envelope, Flags, decode_out_of_line_body};
use rkyv::util::AlignedVec;

pub use super::round_trip::{check_archive, reencodes_identically};

/// What a frame turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// The envelope was refused (or the out-of-line body is malformed).
    Refused,
    /// A raw frame (its bytes are the application's).
    Raw,
    /// An out-of-line frame: its body announces a blob.
    OutOfLine,
    /// A message or reply the protocol does not declare.
    Unknown,
    /// A declared message (or reply) whose archive is invalid.
    Invalid,
    /// A declared message (or reply), valid, and every check passed.
    Accepted,
}

/// Checks one input: its first byte is the receiver's limit of descriptors
/// per message, the rest is the frame as it would lie in the ring (an
/// envelope, then the body). See [`check_frame`].
pub fn check<P: Protocol>(data: &[u8]) -> Result<Decoded, Finding> {
    let (max_fds, frame) = data.split_first().unwrap_or((&0, &[]));
    check_frame::<P>(frame, usize::from(*max_fds))
}

/// Decodes `frame` as a receiver of protocol `P` with a limit of `max_fds`
/// descriptors per message does, and checks:
///
/// - an accepted envelope re-encodes to the same 32 bytes
///   ([`Check::Reencode`]), and so does an out-of-line body;
/// - a message or reply of `P` is validated as a trusted receiver does (in
///   place, the frame 16-aligned as in the ring) and as an untrusted one
///   does (a private copy): both agree ([`Check::TrustDisagreement`]);
/// - an accepted archive deserializes, its value serializes into an
///   archive that validates, and that archive's value serializes to the
///   same bytes again ([`Check::ArchiveRoundTrip`]). rkyv archives are
///   not canonical (a relative pointer may point anywhere valid), so the
///   accepted bytes themselves are compared through their value.
pub fn check_frame<P: Protocol>(frame: &[u8], max_fds: usize) -> Result<Decoded, Finding> {
    let catalog = Catalog::of::<P>();
    // Where the ring would have it: frames start 16-aligned.
    let mut buffer = AlignedVec::<16>::with_capacity(frame.len());
    buffer.extend_from_slice(frame);
    let Ok(envelope) = Envelope::decode(&buffer, max_fds) else {
        return Ok(Decoded::Refused);
    };
    reencodes_identically("envelope", &buffer[..ENVELOPE_SIZE], &envelope, |e| {
        let mut out = [0u8; ENVELOPE_SIZE];
        e.write_to(&mut out);
        out.to_vec()
    })?;
    let body = &buffer[ENVELOPE_SIZE..];
    if envelope.flags.has(Flags::RAW) {
        return Ok(Decoded::Raw);
    }
    if envelope.flags.has(Flags::OUT_OF_LINE) {
        let Some(len) = decode_out_of_line_body(body) else {
            return Ok(Decoded::Refused);
        };
        reencodes_identically("out-of-line body", body, &len, |len| {
            crate::wire::encode_out_of_line_body(*len).to_vec()
        })?;
        return Ok(Decoded::OutOfLine);
    }
    let Some(entry) = catalog.find(envelope.receiver, envelope.schema, envelope.message) else {
        return Ok(Decoded::Unknown);
    };
    let check = if envelope.flags.has(Flags::REPLY) {
        match entry.reply {
            Some((_, check)) => check,
            None => return Ok(Decoded::Unknown),
        }
    } else {
        entry.check
    };
    Ok(if check(body)? {
        Decoded::Accepted
    } else {
        Decoded::Invalid
    })
}
