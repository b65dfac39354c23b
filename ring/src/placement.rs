//! Where rings lie in a region, when a peer chose it: an opener checks that
//! the rings it attached to neither overlap nor alias, and that none is
//! larger than it accepts.
//!
//! [`Producer::attach`](crate::Producer::attach) and
//! [`Consumer::attach`](crate::Consumer::attach) validate one ring each: that
//! it fits the region, and its header; through one region they also refuse
//! a ring sharing bytes with a ring already attached there. What they
//! cannot refuse is a creator's layout that puts both ends of a connection
//! on one ring (the producer and the consumer of the same ring may attach),
//! and they see only what is attached at the time. Two rings laid out by a
//! hostile creator that share bytes turn every frame one side writes into
//! garbage the other side reads as its own header or frames. Check the layout with the capacities the endpoints read
//! when they attached ([`Producer::capacity`](crate::Producer::capacity),
//! [`Consumer::capacity`](crate::Consumer::capacity)): those are the
//! endpoints' private copies, so a creator that rewrites a header afterwards
//! cannot change what was checked.

use crate::error::AttachError;
use crate::ring::ring_size;

/// One ring's place in its region: its offset, and the capacity of its data
/// area as an attached endpoint reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingSpan {
    /// Offset of the ring's header in the region.
    pub offset: usize,
    /// Bytes in the ring's data area.
    pub capacity: usize,
}

impl RingSpan {
    /// The bytes the ring occupies, header and data: `offset..end`.
    fn bytes(self) -> (u64, u64) {
        let start = self.offset as u64;
        (start, start.saturating_add(ring_size(self.capacity) as u64))
    }
}

/// Checks a layout of rings in one region that a peer chose: every ring's
/// capacity is at most `max_capacity` ([`AttachError::CapacityTooLarge`]),
/// and no two rings share a byte ([`AttachError::Overlap`]; two rings at the
/// same offset alias each other, which counts).
///
/// Call it after attaching, with the capacities the endpoints report (see
/// the module documentation), and before the endpoints are used.
pub fn check_layout(rings: &[RingSpan], max_capacity: usize) -> Result<(), AttachError> {
    for ring in rings {
        if ring.capacity > max_capacity {
            return Err(AttachError::CapacityTooLarge {
                capacity: ring.capacity as u64,
                max: max_capacity as u64,
            });
        }
    }
    for (i, a) in rings.iter().enumerate() {
        for b in &rings[i + 1..] {
            let ((a_start, a_end), (b_start, b_end)) = (a.bytes(), b.bytes());
            if a_start < b_end && b_start < a_end {
                return Err(AttachError::Overlap {
                    first: a.offset,
                    second: b.offset,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HEADER_SIZE, RING_ALIGN};

    fn span(offset: usize, capacity: usize) -> RingSpan {
        RingSpan { offset, capacity }
    }

    #[test]
    fn adjacent_rings_pass() {
        let second = ring_size(4096).next_multiple_of(RING_ALIGN);
        check_layout(&[span(0, 4096), span(second, 4096)], 4096).unwrap();
        check_layout(&[span(second, 4096), span(0, 4096)], 4096).unwrap();
        check_layout(&[], 0).unwrap();
    }

    #[test]
    fn overlapping_or_aliasing_rings_are_refused() {
        // The second header one line before the end of the first ring.
        let inside = ring_size(4096) - RING_ALIGN;
        for (a, b) in [
            (span(0, 4096), span(0, 4096)),
            (span(0, 4096), span(inside, 4096)),
            (span(inside, 4096), span(0, 4096)),
            (span(0, 1 << 20), span(HEADER_SIZE + 4096, 256)),
        ] {
            assert_eq!(
                check_layout(&[a, b], 1 << 20),
                Err(AttachError::Overlap {
                    first: a.offset,
                    second: b.offset
                }),
                "{a:?} and {b:?}"
            );
        }
    }

    #[test]
    fn a_ring_above_the_limit_is_refused() {
        assert_eq!(
            check_layout(&[span(0, 8192)], 4096),
            Err(AttachError::CapacityTooLarge {
                capacity: 8192,
                max: 4096
            })
        );
    }
}
