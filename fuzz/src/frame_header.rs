//! Target `frame_header`: `ferry_ring::frame::decode_header`, the only thing
//! a consumer trusts about a frame, against a reference predicate.
//!
//! Input: `mode: u8, word: u64, index: u64, available: u64`.
//! - `mode & 1 == 0`: the consumer's contract: a power-of-two capacity in
//!   `MIN_CAPACITY..=MAX_CAPACITY` (from `mode >> 1`), `index` a multiple of
//!   16 below it, `available` at most the capacity and a multiple of 16.
//! - `mode & 1 == 1`: loose: any `index` and `available`, and any power of
//!   two capacity from 32 up (below 32 `max_payload` is undefined).
//!
//! Checked: the decoder accepts exactly the frames the reference accepts, and
//! what it returns lies inside the published bytes and the data area.

use crate::input::{Cursor, Writer};
use ferry_ring::frame::{
    FRAME_ALIGN, FRAME_HEADER_SIZE, FrameSpan, KIND_DATA, KIND_PADDING, decode_header, frame_size,
    max_payload,
};
use ferry_ring::{Corruption, MAX_CAPACITY, MIN_CAPACITY};

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut c = Cursor::new(data);
    let mode = c.u8();
    let word = c.u64();
    let raw_index = c.u64();
    let raw_available = c.u64();
    let (capacity, index, available) = if mode & 1 == 0 {
        let shifts = (MAX_CAPACITY / MIN_CAPACITY).trailing_zeros() as u8 + 1;
        let capacity = MIN_CAPACITY << ((mode >> 1) % shifts);
        let index = (raw_index as usize & (capacity - 1)) & !(FRAME_ALIGN - 1);
        let available = (raw_available as usize % (capacity + 1)) & !(FRAME_ALIGN - 1);
        (capacity, index, available)
    } else {
        let shift = 5 + (mode >> 1) % (usize::BITS as u8 - 5);
        (1usize << shift, raw_index as usize, raw_available as usize)
    };
    check(word, index, available, capacity);
}

/// Decodes one header and checks the result against the reference.
pub fn check(word: u64, index: usize, available: usize, capacity: usize) {
    let result = decode_header(word, index, available, capacity);
    let len = (word & 0xffff_ffff) as usize;
    let kind = (word >> 32) as u32;
    let to_end = capacity.saturating_sub(index);
    match kind {
        KIND_DATA => {
            let size = frame_size(len);
            let valid = len <= max_payload(capacity) && size <= available && size <= to_end;
            match result {
                Ok(FrameSpan::Data { len: l, size: s }) => {
                    assert!(
                        valid,
                        "accepted {word:#x} at {index}/{available}/{capacity}"
                    );
                    assert_eq!((l, s), (len, size));
                    assert!(s >= FRAME_HEADER_SIZE + l && s % FRAME_ALIGN == 0);
                    assert!(s <= available && index + s <= capacity);
                }
                Err(Corruption::FrameLength { .. }) => {
                    assert!(
                        !valid,
                        "refused {word:#x} at {index}/{available}/{capacity}"
                    )
                }
                other => panic!("data frame decoded as {other:?}"),
            }
        }
        KIND_PADDING => {
            let valid = FRAME_HEADER_SIZE + len == to_end && to_end <= available;
            match result {
                Ok(FrameSpan::Padding { size }) => {
                    assert!(
                        valid,
                        "accepted padding {word:#x} at {index}/{available}/{capacity}"
                    );
                    assert_eq!(size, FRAME_HEADER_SIZE + len);
                    assert!(index + size == capacity && size <= available);
                }
                Err(Corruption::Padding { .. }) => {
                    assert!(
                        !valid,
                        "refused padding {word:#x} at {index}/{available}/{capacity}"
                    )
                }
                other => panic!("padding frame decoded as {other:?}"),
            }
        }
        _ => assert_eq!(result, Err(Corruption::FrameKind { kind })),
    }
}

/// Encodes an input for [`run`] in the consumer's contract (`mode` bit 0
/// clear); `capacity` must be a power of two in range.
pub fn encode(word: u64, index: usize, available: usize, capacity: usize) -> Vec<u8> {
    let shift = (capacity / MIN_CAPACITY).trailing_zeros() as u8;
    Writer::new()
        .u8(shift << 1)
        .u64(word)
        .u64(index as u64)
        .u64(available as u64)
        .finish()
}
