//! What a checker found: which invariant failed, and how.

/// An invariant a checker verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Check {
    /// Accepted bytes do not re-encode to themselves (an envelope, an
    /// out-of-line body, or any wire value given to
    /// [`decode::reencodes_identically`](super::decode::reencodes_identically)).
    Reencode,
    /// A trusted receiver (validating in place) and an untrusted one
    /// (validating a private copy) disagree about an archive.
    TrustDisagreement,
    /// An accepted archive's value does not survive re-encoding: its own
    /// archive is refused, or re-encodes to other bytes.
    ArchiveRoundTrip,
    /// A handler ran after the connection ended with a protocol violation.
    DispatchedAfterViolation,
    /// A message handler ran inside more waiting synchronous calls than
    /// `max_sync_nesting` allows.
    NestingTooDeep,
    /// The process holds more descriptors after an input than before it.
    FdLeak,
    /// Messages set aside hold more descriptors than `max_deferred_fds`
    /// plus one message's worth.
    DeferredFds,
    /// Messages set aside cost more than `max_deferred_bytes` plus one
    /// message.
    DeferredBytes,
    /// One `dispatch` call handled more than `max_dispatch_batch` messages.
    DispatchBatch,
    /// A frame larger than `max_message_size` was received.
    MessageSize,
    /// Traffic in which nothing was mutated ended the connection with a
    /// violation.
    ValidTrafficRefused,
}

/// A failed invariant, found by a checker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Which invariant.
    pub check: Check,
    /// What was seen.
    pub detail: String,
}

impl Finding {
    pub(crate) fn new(check: Check, detail: impl Into<String>) -> Finding {
        Finding {
            check,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.check, self.detail)
    }
}

impl std::error::Error for Finding {}
