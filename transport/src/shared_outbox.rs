//! Where a connection's send path lives: owned by the connection (one
//! thread sends and receives), or, once the connection is
//! [split](crate::Connection::split), behind a lock shared with its sending
//! halves. The lock serializes the senders (one producer per ring); while
//! the connection is not split nothing is locked.

use crate::error::SendError;
use crate::outbox::Outbox;
use ferry_ring::DisconnectHandle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The send path of a split connection, shared by its halves.
pub(crate) struct SharedOutbox {
    outbox: Mutex<Outbox>,
    /// Ends a send waiting for room without taking the lock (that sender
    /// holds it).
    tx_gone: DisconnectHandle,
    /// The largest body in the ring (fixed): read without the lock.
    max_inline: usize,
    /// How the connection ended, once one of the halves learned it
    /// (the peer gone, or a protocol violation): every later send fails
    /// with it.
    ended: Mutex<Option<SendError>>,
    /// Whether `ended` holds an error: every send checks this load, not
    /// the lock.
    has_ended: AtomicBool,
}

impl SharedOutbox {
    pub(crate) fn new(outbox: Outbox) -> Arc<SharedOutbox> {
        Arc::new(SharedOutbox {
            tx_gone: outbox.tx.disconnect_handle(),
            max_inline: outbox.max_inline(),
            outbox: Mutex::new(outbox),
            ended: Mutex::new(None),
            has_ended: AtomicBool::new(false),
        })
    }

    /// The send path, for one sender at a time. A sender that panicked
    /// while holding it left a consistent outbox (a grant dropped by the
    /// panic is abandoned, never published), so the poison is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Declares the ring's consumer gone: every send, the one waiting for
    /// room included, ends with `Disconnected`.
    pub(crate) fn disconnect(&self) {
        self.tx_gone.disconnect();
    }

    /// The largest body that travels inside the ring.
    pub(crate) fn max_inline(&self) -> usize {
        self.max_inline
    }

    /// How the connection ended, if it has.
    pub(crate) fn ended(&self) -> Option<SendError> {
        if !self.has_ended.load(Ordering::Acquire) {
            return None;
        }
        self.ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records how the connection ended (the first report wins, except that
    /// a violation replaces a disconnection, as in the lifecycle).
    pub(crate) fn end(&self, error: SendError) {
        let mut ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
        if ended.is_none() || matches!(error, SendError::Failed(_)) {
            *ended = Some(error);
        }
        // Under the lock, after the store: a sender that sees the flag
        // finds the error.
        self.has_ended.store(true, Ordering::Release);
    }
}

/// A connection's send path: its own, or shared with its sending halves.
/// Not boxed: the unsplit connection's every send goes through `Own`, and an
/// indirection there would cost what the split is meant to avoid.
#[allow(clippy::large_enum_variant)]
pub(crate) enum OutboxCell {
    Own(Outbox),
    Shared(Arc<SharedOutbox>),
}

/// Access to the send path for the length of one operation.
pub(crate) enum OutboxGuard<'a> {
    Own(&'a mut Outbox),
    Shared(MutexGuard<'a, Outbox>),
}

/// Read access to the send path (stats, limits).
pub(crate) enum OutboxRef<'a> {
    Own(&'a Outbox),
    Shared(MutexGuard<'a, Outbox>),
}

impl OutboxCell {
    /// The send path, locked if shared.
    #[inline]
    pub(crate) fn lock(&mut self) -> OutboxGuard<'_> {
        match self {
            OutboxCell::Own(outbox) => OutboxGuard::Own(outbox),
            OutboxCell::Shared(shared) => OutboxGuard::Shared(shared.lock()),
        }
    }

    /// The send path to read, locked if shared.
    pub(crate) fn read(&self) -> OutboxRef<'_> {
        match self {
            OutboxCell::Own(outbox) => OutboxRef::Own(outbox),
            OutboxCell::Shared(shared) => OutboxRef::Shared(shared.lock()),
        }
    }

    /// The shared part, once split.
    pub(crate) fn shared(&self) -> Option<&Arc<SharedOutbox>> {
        match self {
            OutboxCell::Own(_) => None,
            OutboxCell::Shared(shared) => Some(shared),
        }
    }
}

impl std::ops::Deref for OutboxGuard<'_> {
    type Target = Outbox;
    #[inline]
    fn deref(&self) -> &Outbox {
        match self {
            OutboxGuard::Own(outbox) => outbox,
            OutboxGuard::Shared(outbox) => outbox,
        }
    }
}

impl std::ops::DerefMut for OutboxGuard<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Outbox {
        match self {
            OutboxGuard::Own(outbox) => outbox,
            OutboxGuard::Shared(outbox) => outbox,
        }
    }
}

impl std::ops::Deref for OutboxRef<'_> {
    type Target = Outbox;
    fn deref(&self) -> &Outbox {
        match self {
            OutboxRef::Own(outbox) => outbox,
            OutboxRef::Shared(outbox) => outbox,
        }
    }
}
