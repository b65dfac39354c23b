//! A frame kept in place after the consumer moved past it: the ring-owned
//! way to read a trusted producer's bytes without copying them while the
//! consumer goes on to later frames (a handler that receives more messages
//! while it still reads its own).

use crate::attachment::Attachment;
use std::sync::Arc;

/// What a consumer shares with the frames it keeps in place: its attachment
/// (so the region stays mapped, and the consumer side of the ring stays
/// claimed, until every such frame is gone, even if the consumer is dropped
/// or moved away: no second consumer can attach and release their room)
/// and, by its reference count, how many frames are kept: while any exists,
/// the consumer publishes no head, so the producer cannot reuse their room.
#[derive(Debug)]
pub(crate) struct PinToken {
    _attachment: Arc<Attachment>,
}

impl PinToken {
    pub(crate) fn new(attachment: Arc<Attachment>) -> Arc<PinToken> {
        Arc::new(PinToken {
            _attachment: attachment,
        })
    }

    /// Whether a frame holding a clone of `token` still exists, when the
    /// consumer holds `token` and, if `spare` is true, one spare clone
    /// (`Consumer::give_back`). When this returns `false`, every such frame
    /// has been dropped or given back, and their reads of the ring happened
    /// before whatever the caller does next, so publishing the head past
    /// them is safe.
    ///
    /// Why the count can be trusted: clones are made only by
    /// `Frame::keep_in_place` (which may take the spare instead), under
    /// `&mut Consumer`, on the thread that calls this (no clone can appear
    /// concurrently; the type is private to the crate, so no `Weak` or other
    /// clone exists), and the spare is taken or stored only under that same
    /// `&mut Consumer`, so `spare` is exact. A frame given back became the
    /// spare on this thread, after its reads. Frames may be dropped on other
    /// threads: each drop is a Release decrement, the decrements form one
    /// release sequence, and the consumer's own count read here (whatever
    /// the ordering of `strong_count`'s load) followed by the Acquire fence
    /// synchronises with every one of them.
    pub(crate) fn frames_kept(token: &Arc<PinToken>, spare: bool) -> bool {
        if Arc::strong_count(token) > 1 + usize::from(spare) {
            return true;
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        false
    }
}

/// A frame's payload kept in place in the ring (see
/// [`Frame::keep_in_place`](crate::Frame::keep_in_place)). The bytes stay
/// valid and unchanged for as long as this value lives, whatever happens to
/// the consumer it came from (moved, replaced, dropped): the region stays
/// mapped, and that consumer publishes no head until every kept frame is
/// dropped. Dropping it lets the consumer publish at its next operation.
///
/// For a **trusted** producer only, like [`Frame::payload`](crate::Frame::payload):
/// a producer that breaks the protocol could rewrite the bytes.
pub struct PinnedFrame {
    payload: *const u8,
    len: usize,
    token: Arc<PinToken>,
}

impl PinnedFrame {
    /// Keeps `len` bytes at `payload` in place.
    ///
    /// # Safety
    ///
    /// `payload..payload + len` must be a validated frame payload inside
    /// the region `token` keeps alive, which the consumer holding `token`
    /// has not released to the producer (it publishes no head while this
    /// clone of `token` exists).
    pub(crate) unsafe fn new(payload: *const u8, len: usize, token: Arc<PinToken>) -> Self {
        PinnedFrame {
            payload,
            len,
            token,
        }
    }

    /// Its share of the pin count (`Consumer::give_back`); the bytes are
    /// not read through this value again.
    pub(crate) fn into_token(self) -> Arc<PinToken> {
        self.token
    }

    /// The payload (16-aligned).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `new`'s contract: the bytes are inside the region this
        // value keeps mapped (through its token), and their room is not
        // given back to the producer while the token clone lives (the
        // consumer publishes no head, and the token keeps the consumer side
        // claimed, so no second consumer in this process can release it),
        // so a producer that keeps the protocol does not write them. The
        // borrow cannot outlive `self`.
        unsafe { std::slice::from_raw_parts(self.payload, self.len) }
    }

    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

// SAFETY: the pointer refers to memory kept mapped by the `Arc` inside, and
// is only read (through `&self`); the reference count that pins the ring is
// atomic, and dropping the frame on another thread is a Release decrement
// that the consumer's `frames_kept` acquires. Moving the frame to, or
// reading it from, another thread changes nothing of that.
unsafe impl Send for PinnedFrame {}
// SAFETY: as above; `bytes` only reads.
unsafe impl Sync for PinnedFrame {}

impl std::fmt::Debug for PinnedFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedFrame")
            .field("len", &self.len)
            .finish()
    }
}
