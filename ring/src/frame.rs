//! The frame format inside the data area, and its validation.
//!
//! A frame is an 8-byte header word (payload length in the low 32 bits, kind
//! in the high 32 bits, little-endian) in a 16-byte slot, then the payload,
//! padded to [`FRAME_ALIGN`]. Every payload therefore starts 16-aligned (what
//! rkyv needs) and every frame is contiguous: when a frame does not fit before
//! the end of the data area, the producer fills the rest with one padding
//! frame and starts again at offset 0.

use crate::error::Corruption;

/// Frames start, and payloads start, at multiples of this.
pub const FRAME_ALIGN: usize = 16;
/// Bytes before each payload: the header word and 8 reserved bytes.
pub const FRAME_HEADER_SIZE: usize = 16;
/// Kind of a frame that carries a payload.
pub const KIND_DATA: u32 = 0x4154_4144; // "DATA"
/// Kind of the frame that fills the data area up to its end.
pub const KIND_PADDING: u32 = 0x5044_4150; // "PADP"

/// Bytes a frame with a `len`-byte payload occupies in the data area.
#[inline]
pub const fn frame_size(len: usize) -> usize {
    FRAME_HEADER_SIZE + len.next_multiple_of(FRAME_ALIGN)
}

/// The largest payload a ring of `capacity` bytes accepts: a frame may take at
/// most half the data area, so a frame plus the padding before it always fits
/// in an empty ring.
#[inline]
pub const fn max_payload(capacity: usize) -> usize {
    (capacity / 2).saturating_sub(FRAME_HEADER_SIZE)
}

/// Packs a frame header word.
#[inline]
pub const fn encode_header(len: u32, kind: u32) -> u64 {
    (len as u64) | ((kind as u64) << 32)
}

/// What a validated frame header says the consumer should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSpan {
    /// A data frame: `len` payload bytes; the frame takes `size` bytes.
    Data {
        /// Payload length.
        len: usize,
        /// Bytes the frame occupies (header, payload and padding).
        size: usize,
    },
    /// A padding frame taking `size` bytes: skip to the start of the data area.
    Padding {
        /// Bytes to skip.
        size: usize,
    },
}

/// Validates the header word of the frame at data-area `index`, given that
/// `available` bytes have been published from there on, in a data area of
/// `capacity` bytes (a power of two). This is everything a consumer trusts
/// about a frame; it is public so fuzzers can call it directly.
pub fn decode_header(
    word: u64,
    index: usize,
    available: usize,
    capacity: usize,
) -> Result<FrameSpan, Corruption> {
    let len = (word & 0xffff_ffff) as usize;
    let kind = (word >> 32) as u32;
    let to_end = capacity.saturating_sub(index);
    match kind {
        KIND_DATA => {
            if len > max_payload(capacity) {
                return Err(Corruption::FrameLength { len, available });
            }
            let size = frame_size(len);
            if size > available || size > to_end {
                return Err(Corruption::FrameLength { len, available });
            }
            Ok(FrameSpan::Data { len, size })
        }
        KIND_PADDING => {
            let size = FRAME_HEADER_SIZE.saturating_add(len);
            if size != to_end || size > available {
                return Err(Corruption::Padding { len, to_end });
            }
            Ok(FrameSpan::Padding { size })
        }
        other => Err(Corruption::FrameKind { kind: other }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_to_alignment() {
        assert_eq!(frame_size(0), 16);
        assert_eq!(frame_size(1), 32);
        assert_eq!(frame_size(16), 32);
        assert_eq!(frame_size(17), 48);
        assert_eq!(max_payload(1024), 496);
    }

    #[test]
    fn data_frame_must_fit_what_is_published_and_the_area() {
        let cap = 1024;
        let ok = encode_header(100, KIND_DATA);
        assert_eq!(
            decode_header(ok, 0, 128, cap),
            Ok(FrameSpan::Data {
                len: 100,
                size: 128
            })
        );
        assert!(decode_header(ok, 0, 112, cap).is_err(), "beyond the tail");
        assert!(decode_header(ok, 960, 1024, cap).is_err(), "beyond the end");
        let huge = encode_header(u32::MAX, KIND_DATA);
        assert!(decode_header(huge, 0, cap, cap).is_err());
        let too_big = encode_header(max_payload(cap) as u32 + 1, KIND_DATA);
        assert!(decode_header(too_big, 0, cap, cap).is_err());
    }

    #[test]
    fn padding_must_reach_exactly_the_end() {
        let cap = 1024;
        assert_eq!(
            decode_header(encode_header(48, KIND_PADDING), 960, 64, cap),
            Ok(FrameSpan::Padding { size: 64 })
        );
        assert!(decode_header(encode_header(32, KIND_PADDING), 960, 64, cap).is_err());
        assert!(decode_header(encode_header(u32::MAX, KIND_PADDING), 960, 64, cap).is_err());
        assert!(decode_header(encode_header(48, KIND_PADDING), 960, 48, cap).is_err());
    }

    #[test]
    fn unknown_kind_is_corruption() {
        assert_eq!(
            decode_header(encode_header(0, 7), 0, 16, 1024),
            Err(Corruption::FrameKind { kind: 7 })
        );
    }
}
