//! Errors, one enum per operation family.

use std::io;
use thiserror::Error;

/// What a peer broke in the shared ring. Once reported, the endpoint that
/// saw it stays failed: nothing it would read afterwards can be trusted.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// The peer's position moved backwards, past ours, beyond the capacity or
    /// off the frame alignment.
    #[error("peer position {observed} is impossible (ours {own}, last seen {last_seen})")]
    Position {
        /// The value loaded from shared memory.
        observed: u64,
        /// This side's own position.
        own: u64,
        /// The peer's position this side saw before.
        last_seen: u64,
    },
    /// A data frame longer than the maximum or than what was published.
    #[error("frame of {len} bytes does not fit the {available} published bytes or the maximum")]
    FrameLength {
        /// The length in the frame header.
        len: usize,
        /// Bytes published from the frame's start.
        available: usize,
    },
    /// A padding frame that does not end exactly at the end of the data area.
    #[error("padding frame of {len} bytes does not reach the end ({to_end} bytes away)")]
    Padding {
        /// The length in the padding frame header.
        len: usize,
        /// Bytes from the frame to the end of the data area.
        to_end: usize,
    },
    /// A frame kind that is neither data nor padding.
    #[error("unknown frame kind {kind:#x}")]
    FrameKind {
        /// The kind in the frame header.
        kind: u32,
    },
}

/// Why a producer could not send.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No room right now (only from the `try_` operations).
    #[error("ring is full")]
    Full,
    /// No room before the timeout.
    #[error("timed out waiting for room in the ring")]
    TimedOut,
    /// The payload is larger than this ring's maximum frame.
    #[error("payload of {len} bytes exceeds the ring's maximum of {max}")]
    TooLarge {
        /// Requested payload length.
        len: usize,
        /// The ring's maximum payload.
        max: usize,
    },
    /// The consumer closed its end in an orderly way.
    #[error("the consumer closed the ring")]
    Closed,
    /// The endpoint was told the peer is gone (see [`crate::DisconnectHandle`]).
    #[error("the peer is disconnected")]
    Disconnected,
    /// The consumer broke the protocol.
    #[error("ring corrupted by the peer: {0}")]
    Corrupt(#[from] Corruption),
}

/// Why a consumer could not receive.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// Nothing published right now (only from the `try_` operations).
    #[error("ring is empty")]
    Empty,
    /// Nothing published before the timeout.
    #[error("timed out waiting for a frame")]
    TimedOut,
    /// The producer closed its end and every frame it sent was received.
    #[error("the producer closed the ring")]
    Closed,
    /// The endpoint was told the peer is gone (see [`crate::DisconnectHandle`]).
    #[error("the peer is disconnected")]
    Disconnected,
    /// The producer broke the protocol.
    #[error("ring corrupted by the peer: {0}")]
    Corrupt(#[from] Corruption),
}

/// Why a ring could not be created in, or attached to, a region, or why a
/// layout of rings was refused ([`crate::check_layout`]).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttachError {
    /// The capacity is not a power of two within the supported range.
    #[error("capacity {0} is not a power of two between MIN_CAPACITY and MAX_CAPACITY")]
    BadCapacity(u64),
    /// The offset is not a multiple of [`crate::RING_ALIGN`].
    #[error("ring offset {0} is not aligned to RING_ALIGN")]
    Misaligned(usize),
    /// The ring would extend past the end of the region.
    #[error("a ring of {needed} bytes at offset {offset} does not fit a region of {region} bytes")]
    DoesNotFit {
        /// Offset of the ring in the region.
        offset: usize,
        /// Bytes the ring needs.
        needed: u64,
        /// Bytes in the region.
        region: usize,
    },
    /// The magic number is wrong: this is not a ferry ring.
    #[error("not a ferry ring (magic {0:#018x})")]
    BadMagic(u64),
    /// The ring was laid out by an incompatible version of ferry.
    #[error("ring layout version {found}, this build speaks {expected}")]
    BadVersion {
        /// Version in the header.
        found: u32,
        /// Version this build writes.
        expected: u32,
    },
    /// The positions in the header are inconsistent.
    #[error("ring positions are inconsistent: {0}")]
    Corrupt(#[from] Corruption),
    /// Two rings of one region share bytes (or start at the same offset):
    /// found by [`crate::check_layout`], or at attach when an endpoint of
    /// the other ring is attached through the same region.
    #[error("the rings at offsets {first} and {second} overlap")]
    Overlap {
        /// Offset of one ring.
        first: usize,
        /// Offset of the other.
        second: usize,
    },
    /// This side of the ring at `offset` already has an endpoint attached
    /// through this region (a ring has one producer and one consumer).
    #[error("the ring at offset {offset} already has this end attached")]
    AlreadyAttached {
        /// Offset of the ring in the region.
        offset: usize,
    },
    /// A ring's data area is larger than the opener accepts.
    #[error("ring capacity {capacity} exceeds the limit of {max} bytes")]
    CapacityTooLarge {
        /// The ring's capacity.
        capacity: u64,
        /// The largest capacity the opener accepts.
        max: u64,
    },
}

/// Why a shared-memory region or blob could not be created or opened.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RegionError {
    /// `memfd_create`, `ftruncate` or adding the seals failed.
    #[error("creating the shared memory failed: {0}")]
    Create(#[source] io::Error),
    /// The descriptor is not a memfd (it cannot carry seals).
    #[error("the descriptor is not a sealable memfd: {0}")]
    NotMemfd(#[source] io::Error),
    /// The memfd lacks seals a region requires (a peer could shrink it and
    /// kill us with SIGBUS).
    #[error("the memfd lacks required seals (has {present:#x}, needs {required:#x})")]
    MissingSeals {
        /// Seals present (`F_GET_SEALS`).
        present: u32,
        /// Seals required.
        required: u32,
    },
    /// The memfd lives on hugetlbfs, whose pages a peer can punch out from
    /// under us (SIGBUS when the pool is empty).
    #[error("the memfd is on hugetlbfs, which seals cannot protect")]
    HugeTlb,
    /// The memfd's size is zero or beyond what a region may be.
    #[error("the memfd's size {0} is outside 1..=MAX_REGION_SIZE")]
    BadSize(u64),
    /// `fstat` or `mmap` failed.
    #[error("mapping the shared memory failed: {0}")]
    Map(#[source] io::Error),
    /// The memfd is larger than the receiver accepts (its own limit, below
    /// [`crate::MAX_REGION_SIZE`]). Checked before anything is mapped.
    #[error("the memfd's size {size} exceeds the limit of {max} bytes")]
    TooLarge {
        /// The memfd's size.
        size: u64,
        /// The largest size the receiver accepts.
        max: u64,
    },
    /// A received blob has holes: pages its sender never wrote, which the
    /// receiver would allocate (and be charged for) by reading them.
    #[error("the blob has holes: {allocated} of its {size} bytes are allocated")]
    Sparse {
        /// The blob's size.
        size: u64,
        /// Bytes of memory the blob holds (`st_blocks` × 512).
        allocated: u64,
    },
}
