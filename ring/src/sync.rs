//! The atomics the ring is built on: std's, or loom's under `cfg(loom)` so the
//! model checker can explore every interleaving of the protocol.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};

/// One step of a busy-wait. Under loom a spin must yield, or the model
/// checker would explore an unbounded loop.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}
