//! Declaring the peer gone from outside the ring.
//!
//! A peer that dies never sets its "closed" flag. Whoever learns of the death
//! (a watcher polling the connection's socket for hang-up) uses this handle:
//! it marks the endpoint disconnected and wakes it if it sleeps.

use crate::futex;
use crate::region::Region;
use crate::sync::{AtomicBool, AtomicU32, Ordering};
// The flag is shared with the handle; under loom its sharing is modelled too.
#[cfg(loom)]
use loom::sync::Arc as FlagArc;
use std::ptr::NonNull;
use std::sync::Arc;
#[cfg(not(loom))]
use std::sync::Arc as FlagArc;

/// The endpoint's private "peer is gone" flag.
pub(crate) struct DisconnectFlag(FlagArc<AtomicBool>);

impl Default for DisconnectFlag {
    fn default() -> Self {
        DisconnectFlag(FlagArc::new(AtomicBool::new(false)))
    }
}

impl DisconnectFlag {
    #[inline]
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Declares an endpoint's peer gone and wakes the endpoint. Cheap to clone;
/// usable from any thread.
#[derive(Clone)]
pub struct DisconnectHandle {
    flag: FlagArc<AtomicBool>,
    /// The word the endpoint sleeps on.
    wake_seq: NonNull<AtomicU32>,
    /// Keeps `wake_seq` alive.
    _region: Arc<Region>,
}

// SAFETY: the handle only performs atomic operations and a futex wake on a
// word inside a region it keeps alive; none of that is tied to a thread.
unsafe impl Send for DisconnectHandle {}
// SAFETY: as above; every method takes `&self` and is atomic.
unsafe impl Sync for DisconnectHandle {}

impl DisconnectHandle {
    pub(crate) fn new(flag: &DisconnectFlag, region: &Arc<Region>, wake_seq: &AtomicU32) -> Self {
        DisconnectHandle {
            flag: FlagArc::clone(&flag.0),
            wake_seq: NonNull::from(wake_seq),
            _region: Arc::clone(region),
        }
    }

    /// Marks the endpoint's peer gone: its pending and future operations
    /// return `Disconnected` (frames already published can still be read).
    pub fn disconnect(&self) {
        self.flag.store(true, Ordering::Release);
        // SAFETY: the word lies in the region `_region` keeps alive.
        let word = unsafe { self.wake_seq.as_ref() };
        // Change the word, not just wake it: a waiter between its last check
        // and its futex_wait then finds a different value and does not sleep.
        // The peer that owns the word is gone, so writing it is harmless.
        word.fetch_add(1, Ordering::Release);
        futex::wake(word);
    }

    /// Whether [`disconnect`](Self::disconnect) was called.
    pub fn is_disconnected(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for DisconnectHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DisconnectHandle")
            .field("disconnected", &self.is_disconnected())
            .finish()
    }
}
