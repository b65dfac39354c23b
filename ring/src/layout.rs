//! The ring header as both processes see it in shared memory.
//!
//! ```text
//! offset  line             written by        read by
//!      0  identity         creator, once     attacher, once
//!    128  producer block   producer (hot)    consumer: tail, data_seq, closed
//!    256  consumer block   consumer (hot)    producer: head, space_seq, closed
//!    384  producer parked  producer (rare)   consumer, once per release
//!    512  consumer parked  consumer (rare)   producer, once per publish
//!    640  data area (capacity bytes, frames of FRAME_ALIGN)
//! ```
//!
//! Lines are 128 bytes because x86's adjacent-line prefetcher pulls cache
//! lines in pairs. The "parked" flags sit on lines of their own: the peer
//! reads them on every publish or release, and they change only when a side
//! goes to sleep, so that read is an L1 hit instead of a transfer of the
//! peer's hot line.

use crate::sync::{AtomicU32, AtomicU64};

/// `b"FERRYRNG"` read as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"FERRYRNG");
/// Bumped whenever the shared layout, the frame format or the meaning of a
/// shared word changes (2: the parked words became 64-bit with a sleep
/// epoch).
pub const LAYOUT_VERSION: u32 = 2;
/// Size of one padded header line.
#[cfg_attr(loom, allow(dead_code))]
pub const LINE: usize = 128;

/// Identity of the ring, written once at creation.
#[repr(C, align(128))]
pub(crate) struct Identity {
    pub(crate) magic: AtomicU64,
    pub(crate) version: AtomicU32,
    pub(crate) _reserved: AtomicU32,
    pub(crate) capacity: AtomicU64,
}

/// The producer's hot line.
#[repr(C, align(128))]
pub(crate) struct ProducerLine {
    /// Bytes ever published (monotonic, a multiple of `FRAME_ALIGN`).
    pub(crate) tail: AtomicU64,
    /// Bumped after every publish; the consumer sleeps on it.
    pub(crate) data_seq: AtomicU32,
    /// Non-zero once the producer has closed its end.
    pub(crate) closed: AtomicU32,
}

/// The consumer's hot line.
#[repr(C, align(128))]
pub(crate) struct ConsumerLine {
    /// Bytes ever released (monotonic, a multiple of `FRAME_ALIGN`).
    pub(crate) head: AtomicU64,
    /// Bumped after every release; the producer sleeps on it.
    pub(crate) space_seq: AtomicU32,
    /// Non-zero once the consumer has closed its end.
    pub(crate) closed: AtomicU32,
}

/// A "this side is (about to be) asleep" word, alone on its line: the
/// `PARKED_ON_*` bits and a sleep epoch (see `wait::Announcer`).
#[repr(C, align(128))]
pub(crate) struct ParkedLine {
    pub(crate) parked: AtomicU64,
}

/// The whole header. Shared memory holds exactly this, then the data area.
#[repr(C)]
pub(crate) struct RingHeader {
    pub(crate) identity: Identity,
    pub(crate) producer: ProducerLine,
    pub(crate) consumer: ConsumerLine,
    pub(crate) producer_parked: ParkedLine,
    pub(crate) consumer_parked: ParkedLine,
}

/// Bytes taken by the ring header; the data area starts here.
pub const HEADER_SIZE: usize = core::mem::size_of::<RingHeader>();
/// A ring must start at an offset of its region that is a multiple of this.
pub const RING_ALIGN: usize = core::mem::align_of::<RingHeader>();

impl RingHeader {
    /// A fresh header; loom needs its atomics constructed in place.
    #[cfg(loom)]
    pub(crate) fn new(capacity: u64) -> Self {
        let parked = || ParkedLine {
            parked: AtomicU64::new(0),
        };
        RingHeader {
            identity: Identity {
                magic: AtomicU64::new(MAGIC),
                version: AtomicU32::new(LAYOUT_VERSION),
                _reserved: AtomicU32::new(0),
                capacity: AtomicU64::new(capacity),
            },
            producer: ProducerLine {
                tail: AtomicU64::new(0),
                data_seq: AtomicU32::new(0),
                closed: AtomicU32::new(0),
            },
            consumer: ConsumerLine {
                head: AtomicU64::new(0),
                space_seq: AtomicU32::new(0),
                closed: AtomicU32::new(0),
            },
            producer_parked: parked(),
            consumer_parked: parked(),
        }
    }
}

// Both processes must agree on every offset; loom's atomics are larger, so the
// checks hold for the real build only.
#[cfg(not(loom))]
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(RingHeader, identity) == 0);
    assert!(offset_of!(RingHeader, producer) == LINE);
    assert!(offset_of!(RingHeader, consumer) == 2 * LINE);
    assert!(offset_of!(RingHeader, producer_parked) == 3 * LINE);
    assert!(offset_of!(RingHeader, consumer_parked) == 4 * LINE);
    assert!(HEADER_SIZE == 5 * LINE);
    assert!(RING_ALIGN == LINE);
    assert!(offset_of!(Identity, magic) == 0);
    assert!(offset_of!(Identity, version) == 8);
    assert!(offset_of!(Identity, capacity) == 16);
    assert!(offset_of!(ProducerLine, tail) == 0);
    assert!(offset_of!(ProducerLine, data_seq) == 8);
    assert!(offset_of!(ProducerLine, closed) == 12);
    assert!(offset_of!(ConsumerLine, head) == 0);
    assert!(offset_of!(ConsumerLine, space_seq) == 8);
    assert!(offset_of!(ConsumerLine, closed) == 12);
    assert!(offset_of!(ParkedLine, parked) == 0);
};
