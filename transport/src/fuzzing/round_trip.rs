//! The differential checks behind the decode checker: a wire value
//! re-encodes to the bytes it was decoded from, and an archive validates
//! alike in place and copied and survives re-encoding.

use super::finding::{Check, Finding};
use super::protocol::Fuzzable;
use crate::incoming::access_archive;
use rkyv::rancor;
use rkyv::util::AlignedVec;

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
/// [`check_frame`](super::decode::check_frame)). `Ok(true)`: accepted; `Ok(false)`: refused by both.
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
