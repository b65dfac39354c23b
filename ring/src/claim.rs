//! Which rings of a region have an endpoint attached in this process.
//!
//! A ring has one producer and one consumer. Two producers on one ring would
//! hand out two [`Grant`](crate::Grant)s over the same bytes (two `&mut [u8]`
//! aliasing each other), and a second consumer could release, and so let the
//! producer overwrite, bytes the first one still lends out as `&[u8]`
//! ([`Frame::payload`](crate::Frame::payload),
//! [`PinnedFrame`](crate::PinnedFrame)); two rings sharing bytes in one
//! region would do the same through a ring header or a frame. All three are
//! reachable from safe code through `attach`, so each region refuses them at
//! attach: every attached endpoint claims its ring's bytes for its side
//! until the endpoint (and, for a consumer, every frame it kept in place)
//! is gone.
//!
//! The table is per mapping (per [`Region`](crate::Region) value): a second
//! mapping of the same memfd is, to this process, another party writing the
//! same memory, exactly like a peer process, and is covered by the same
//! trust rule (a producer that breaks the protocol can rewrite what a
//! trusted consumer reads in place).

use crate::error::AttachError;
use std::sync::Mutex;

/// Which end of a ring an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Producer,
    Consumer,
}

#[derive(Debug, Clone, Copy)]
struct Claim {
    start: usize,
    end: usize,
    side: Side,
}

/// The bytes of a region claimed by the endpoints attached to it.
#[derive(Debug, Default)]
pub(crate) struct ClaimTable {
    claims: Mutex<Vec<Claim>>,
}

impl ClaimTable {
    /// Claims `start..end` (a whole ring, header and data) for `side`.
    /// Refused when the same side of the same ring is already attached
    /// ([`AttachError::AlreadyAttached`]) or when the bytes overlap another
    /// ring's ([`AttachError::Overlap`]); the other side of the very same
    /// ring (same offset, same size) may attach.
    pub(crate) fn claim(&self, start: usize, end: usize, side: Side) -> Result<(), AttachError> {
        let mut claims = self.lock();
        for other in claims.iter() {
            if other.start >= end || start >= other.end {
                continue;
            }
            let same_ring = other.start == start && other.end == end;
            if !same_ring {
                return Err(AttachError::Overlap {
                    first: other.start,
                    second: start,
                });
            }
            if other.side == side {
                return Err(AttachError::AlreadyAttached { offset: start });
            }
        }
        claims.push(Claim { start, end, side });
        Ok(())
    }

    /// Runs `write` (laying a ring out at `start..end`) while no attached
    /// endpoint claims any of those bytes, holding the table so none can
    /// attach meanwhile. Refused with [`AttachError::Overlap`] otherwise:
    /// the bytes may be lent out as a frame or a grant right now.
    pub(crate) fn while_unclaimed<R>(
        &self,
        start: usize,
        end: usize,
        write: impl FnOnce() -> R,
    ) -> Result<R, AttachError> {
        let claims = self.lock();
        if let Some(other) = claims.iter().find(|c| c.start < end && start < c.end) {
            return Err(AttachError::Overlap {
                first: other.start,
                second: start,
            });
        }
        let result = write();
        drop(claims);
        Ok(result)
    }

    /// Gives back the claim `claim` made for `side` at `start`.
    pub(crate) fn release(&self, start: usize, side: Side) {
        let mut claims = self.lock();
        if let Some(at) = claims
            .iter()
            .position(|c| c.start == start && c.side == side)
        {
            claims.swap_remove(at);
        }
    }

    /// The table, even after a panic elsewhere while it was locked: every
    /// update is a single push or remove, so it is never left half done.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Claim>> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }
}
