//! An endpoint's claim on its ring (see `claim.rs`), released when the last
//! holder is dropped.

use crate::claim::Side;
use crate::error::AttachError;
use crate::region::Region;
use std::sync::Arc;

/// Holds `side` of the ring at `offset` in `region` claimed, and the region
/// mapped, for as long as it lives. An endpoint holds it; a consumer also
/// lends it to every frame it keeps in place, so that neither a second
/// consumer nor anything overlapping can attach while such a frame lives,
/// even after the consumer itself was dropped or replaced.
#[derive(Debug)]
pub(crate) struct Attachment {
    region: Arc<Region>,
    offset: usize,
    side: Side,
}

impl Attachment {
    /// Claims `size` bytes at `offset` for `side`.
    pub(crate) fn claim(
        region: Arc<Region>,
        offset: usize,
        size: usize,
        side: Side,
    ) -> Result<Arc<Attachment>, AttachError> {
        let end = offset.saturating_add(size);
        region.claims().claim(offset, end, side)?;
        Ok(Arc::new(Attachment {
            region,
            offset,
            side,
        }))
    }

    /// The region the claimed ring lives in.
    pub(crate) fn region(&self) -> &Arc<Region> {
        &self.region
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.region.claims().release(self.offset, self.side);
    }
}
