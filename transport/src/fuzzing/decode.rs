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

use super::catalog::{Catalog, Fuzzable, Protocol};
use super::finding::{Check, Finding};
use crate::incoming::access_archive;
use crate::wire::{ENVELOPE_SIZE, Envelope, Flags, decode_out_of_line_body};
use rkyv::rancor;
use rkyv::util::AlignedVec;

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

/// Checks that `bytes`, accepted and decoded to `value`, re-encode to
/// themselves with `encode`: the differential check for any wire value
/// (an application with its own raw-frame encoding can use it too).
///
/// ```
/// use ferry_transport::fuzzing::{Check, decode::reencodes_identically};
/// let bytes = 7u32.to_le_bytes();
/// let value = u32::from_le_bytes(bytes);
/// assert!(reencodes_identically("u32", &bytes, &value, |v| v.to_le_bytes().to_vec()).is_ok());
/// // An encoder that loses a bit is caught.
/// let lossy = reencodes_identically("u32", &bytes, &value, |v| (v & !1).to_le_bytes().to_vec());
/// assert_eq!(lossy.unwrap_err().check, Check::Reencode);
/// ```
pub fn reencodes_identically<T: std::fmt::Debug>(
    what: &str,
    bytes: &[u8],
    value: &T,
    encode: impl FnOnce(&T) -> Vec<u8>,
) -> Result<(), Finding> {
    let again = encode(value);
    if again == bytes {
        return Ok(());
    }
    Err(Finding::new(
        Check::Reencode,
        format!("{what} {bytes:02x?} decoded to {value:?}, which re-encodes to {again:02x?}"),
    ))
}

/// Validates `bytes` as an archive of `T` the way a connection does,
/// trusted (in place; the bytes are copied to a 16-aligned address first if
/// they are not at one, as the ring's frames always are) and untrusted (a
/// private copy), and checks the round trip of what is accepted (see
/// [`check_frame`]). `Ok(true)`: accepted; `Ok(false)`: refused by both.
pub fn check_archive<T: Fuzzable>(bytes: &[u8]) -> Result<bool, Finding> {
    let mut aligned = AlignedVec::<16>::new();
    let in_place = if bytes.as_ptr().align_offset(16) == 0 {
        bytes
    } else {
        aligned.extend_from_slice(bytes);
        &aligned
    };
    let trusted = access_archive::<T>(in_place, "in place").is_ok();
    let mut copy = AlignedVec::<16>::with_capacity(bytes.len());
    copy.extend_from_slice(bytes);
    let untrusted = access_archive::<T>(&copy, "copied");
    if trusted != untrusted.is_ok() {
        return Err(Finding::new(
            Check::TrustDisagreement,
            format!(
                "{}: in place {}, copied {}",
                std::any::type_name::<T>(),
                if trusted { "valid" } else { "invalid" },
                if untrusted.is_ok() {
                    "valid"
                } else {
                    "invalid"
                },
            ),
        ));
    }
    let Ok(archived) = untrusted else {
        return Ok(false);
    };
    let round_trip = |what: String| Finding::new(Check::ArchiveRoundTrip, what);
    let name = std::any::type_name::<T>();
    let value = rkyv::deserialize::<T, rancor::Error>(archived)
        .map_err(|e| round_trip(format!("a valid {name} archive does not deserialize: {e}")))?;
    let first = rkyv::to_bytes::<rancor::Error>(&value)
        .map_err(|e| round_trip(format!("{value:?} does not serialize: {e}")))?;
    let archived = access_archive::<T>(&first, "re-encoded").map_err(|e| {
        round_trip(format!(
            "{value:?} re-encodes into an archive that is refused: {e}"
        ))
    })?;
    let again = rkyv::deserialize::<T, rancor::Error>(archived)
        .map_err(|e| round_trip(format!("the re-encoded {name} does not deserialize: {e}")))?;
    let second = rkyv::to_bytes::<rancor::Error>(&again)
        .map_err(|e| round_trip(format!("{again:?} does not serialize: {e}")))?;
    if first[..] != second[..] {
        return Err(round_trip(format!(
            "{value:?} re-encodes to {:02x?}, which decodes to {again:?} and re-encodes to {:02x?}",
            &first[..],
            &second[..]
        )));
    }
    Ok(true)
}
