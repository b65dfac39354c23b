//! Ending a consumer's wait from another thread of its own process, without
//! a frame: for a connection whose other threads hand it work (a reply
//! answered on another thread) while it waits for the peer.
//!
//! The waker sets the consumer's private "woken" flag, changes the word the
//! consumer sleeps on and wakes it; the consumer's wait sees the flag at its
//! next check and returns `TimedOut` early (see [`Consumer::peek`]). The
//! flag is ours, in private memory; the word is the peer's sequence word,
//! which is only ever a hint: the peer overwrites it with its own counter at
//! its next publish, and every sleep is bounded.
//!
//! [`Consumer::peek`]: crate::Consumer::peek

use crate::futex;
use crate::region::Region;
use crate::sync::{AtomicBool, AtomicU32, Ordering};
#[cfg(loom)]
use loom::sync::Arc as FlagArc;
use std::ptr::NonNull;
use std::sync::Arc;
#[cfg(not(loom))]
use std::sync::Arc as FlagArc;

/// What a wake adds to the sleep word. The consumer sleeps on the value it
/// read; any change makes a `futex_wait` about to start return at once, so
/// a wake between the consumer's last check and its sleep is not lost. The
/// step is odd and far from 1 so the changed word practically never equals
/// the peer's next value (the peer skips waking a sleeper that announced
/// the value it is about to store; such a sleep would still end within the
/// bounded sleep of the wait loop).
const WAKE_STEP: u32 = 0x4000_0001;

/// The consumer's private "woken" flag.
pub(crate) struct WakeFlag(FlagArc<AtomicBool>);

impl Default for WakeFlag {
    fn default() -> Self {
        WakeFlag(FlagArc::new(AtomicBool::new(false)))
    }
}

impl WakeFlag {
    /// Whether a wake came since the last call (and clears it).
    #[inline]
    pub(crate) fn take(&self) -> bool {
        self.0.load(Ordering::Relaxed) && self.0.swap(false, Ordering::Acquire)
    }
}

/// Ends the current (or next) wait of one consumer early. Cheap to clone;
/// usable from any thread of the process.
#[derive(Clone)]
pub struct WakeHandle {
    flag: FlagArc<AtomicBool>,
    /// The word the consumer sleeps on.
    wake_seq: NonNull<AtomicU32>,
    /// Keeps `wake_seq` alive.
    _region: Arc<Region>,
}

// SAFETY: the handle only performs atomic operations and a futex wake on a
// word inside a region it keeps alive; none of that is tied to a thread.
unsafe impl Send for WakeHandle {}
// SAFETY: as above; `wake` takes `&self` and is atomic.
unsafe impl Sync for WakeHandle {}

impl WakeHandle {
    pub(crate) fn new(flag: &WakeFlag, region: &Arc<Region>, wake_seq: &AtomicU32) -> Self {
        WakeHandle {
            flag: FlagArc::clone(&flag.0),
            wake_seq: NonNull::from(wake_seq),
            _region: Arc::clone(region),
        }
    }

    /// Ends the consumer's wait: a `peek` waiting now, or the next one that
    /// finds the ring empty, returns `TimedOut` at once. Frames already
    /// published are still returned first.
    pub fn wake(&self) {
        self.flag.store(true, Ordering::Release);
        // SAFETY: the word lies in the region `_region` keeps alive; it is
        // an atomic, so a concurrent store by the peer is no data race.
        let word = unsafe { self.wake_seq.as_ref() };
        word.fetch_add(WAKE_STEP, Ordering::Release);
        futex::wake(word);
    }
}

impl std::fmt::Debug for WakeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeHandle").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::RecvError;
    use std::time::{Duration, Instant};

    /// Far longer than a wake takes: only a lost wake reaches it.
    const LONG: Duration = Duration::from_secs(60);

    #[test]
    fn a_wake_ends_a_wait_early_and_frames_still_come_first() {
        let (mut tx, mut rx) = crate::channel(4096);
        let waker = rx.wake_handle();
        let waiting = std::thread::spawn(move || {
            let started = Instant::now();
            let first = rx.peek(Some(LONG)).map(|_| ()).err();
            (first, started.elapsed(), rx)
        });
        // Wake until the waiter is gone: a wake before it sleeps is kept.
        waker.wake();
        let (first, waited, mut rx) = waiting.join().expect("the waiting thread");
        assert_eq!(first, Some(RecvError::TimedOut));
        assert!(waited < LONG, "woken, not timed out");
        // A published frame wins over a pending wake, which then ends the
        // next wait that finds the ring empty.
        tx.try_send(b"frame").expect("room");
        waker.wake();
        assert_eq!(rx.peek(Some(LONG)).expect("the frame").payload(), b"frame");
        rx.try_peek().expect("still there").release();
        assert_eq!(rx.peek(Some(LONG)).err(), Some(RecvError::TimedOut));
        assert_eq!(rx.try_peek().err(), Some(RecvError::Empty));
    }
}
