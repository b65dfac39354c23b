//! Errors, one enum per operation family; the protocol violations that end
//! a connection; and every conversion between them and from the layers
//! below (ring, handoff, rkyv), so that "how does a ring error become a
//! transport error" has one answer, here.

use crate::wire::{EnvelopeError, NoReply};
use std::sync::Arc;
use thiserror::Error;

/// An error from a layer below (the ring, a socket, rkyv), kept whole and
/// cheap to clone: its message is the cause's, and
/// [`get`](Self::get)/[`downcast_ref`](Self::downcast_ref) reach the typed
/// value. Two causes are equal when they say the same thing.
#[derive(Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    /// Wraps `error`.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Cause(Arc::new(error))
    }

    /// The underlying error.
    pub fn get(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }

    /// The underlying error, if it is a `T`.
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.get().downcast_ref::<T>()
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.to_string() == other.to_string()
    }
}

impl Eq for Cause {}

/// Something the peer sent that breaks the protocol. The connection is
/// closed when one is found; the peer can be reported as misbehaving (a
/// broker may kill it).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// The shared ring's positions or frame headers were corrupted.
    #[error("ring corrupted: {0}")]
    Ring(#[from] ferry_ring::Corruption),
    /// A frame's envelope is invalid.
    #[error("bad envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    /// The descriptors announced by a frame did not arrive as announced.
    #[error("bad attachment: {0}")]
    Attachment(#[from] AttachmentError),
    /// An out-of-line blob was refused (not sealed, wrong size, with
    /// holes, ...).
    #[error("bad out-of-line blob: {0}")]
    Blob(#[from] BlobRefusal),
    /// A message body larger than this end's
    /// [`max_message_size`](crate::ConnectionConfig::max_message_size): in
    /// the ring, or out of line as its frame announced it (refused before
    /// the blob's descriptor was received or anything was mapped).
    #[error("a message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// The body's length (announced, for an out-of-line body).
        len: u64,
        /// This end's limit.
        max: usize,
    },
    /// A message for a receiver kind this side never registered (at any
    /// destination). A message for a kind it registered, at a destination
    /// not registered (any more), is dropped and counted instead
    /// ([`TransportStats::dropped_for_gone_destinations`](crate::TransportStats::dropped_for_gone_destinations)).
    #[error("no receiver {receiver:#x} (at destination {destination}) is handled here")]
    UnknownReceiver {
        /// Receiver id.
        receiver: u32,
        /// Destination id.
        destination: u64,
    },
    /// A message id the receiver does not declare.
    #[error("receiver {receiver} has no message {message:#x}")]
    UnknownMessage {
        /// Receiver name.
        receiver: &'static str,
        /// Message id.
        message: u32,
    },
    /// The frame was built from a different declaration of the receiver.
    #[error("receiver {receiver} schema {found:#x}, expected {expected:#x}")]
    SchemaMismatch {
        /// Receiver name.
        receiver: &'static str,
        /// Schema hash this side was built with.
        expected: u32,
        /// Schema hash in the frame.
        found: u32,
    },
    /// The body is not a valid archive of the declared message.
    #[error("invalid {message} archive: {reason}")]
    InvalidArchive {
        /// Message name.
        message: &'static str,
        /// What validation said (an rkyv error).
        reason: Cause,
    },
    /// A reply to a request this side never made (or already answered).
    #[error("reply to unknown request {0}")]
    UnexpectedReply(u64),
    /// A reply that names another receiver or message than its request.
    #[error("reply to request {0} names another message than the request")]
    MismatchedReply(u64),
    /// An error reply whose body is not a reason this side knows.
    #[error("error reply to request {0} with a malformed reason")]
    BadErrorReply(u64),
    /// A request whose id is that of a request of the peer's still waiting
    /// for its reply here.
    #[error("request id {0} reused while that request is in progress")]
    DuplicateRequest(u64),
    /// A raw frame where a typed message was expected.
    #[error("raw frame where a typed message was expected")]
    UnexpectedRawFrame,
    /// A message whose allowed-while-waiting flag differs from what this
    /// side's declaration of it says (the flag is the receiver's to decide,
    /// not the sender's).
    #[error("message {message:#x} of {receiver} lies about being allowed while waiting")]
    AllowedWhileWaitingMismatch {
        /// Receiver name.
        receiver: &'static str,
        /// Message id.
        message: u32,
    },
    /// The peer did not take a reply for the configured reply timeout: it
    /// stopped reading, and would stall every dispatch of ours.
    #[error("the peer did not take its reply within the reply timeout")]
    RepliesNotTaken,
}

/// How the descriptors announced by a frame failed to arrive.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttachmentError {
    /// Receiving them from the control socket failed (the peer sent none in
    /// time, too many, or something that is not an attachment).
    #[error("receiving the descriptors failed: {0}")]
    Recv(Cause),
    /// The control message is not an attachment header.
    #[error("malformed attachment header of {len} bytes")]
    MalformedHeader {
        /// Bytes received.
        len: usize,
    },
    /// The attachment is not the one this frame announced.
    #[error("got attachment {sequence} with {fds} descriptors, expected {expected} with {count}")]
    Mismatch {
        /// Its sequence number.
        sequence: u64,
        /// Descriptors it carried.
        fds: usize,
        /// The sequence number expected.
        expected: u64,
        /// Descriptors the frame announced.
        count: u16,
    },
}

/// Why an out-of-line blob was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobRefusal {
    /// The frame's body is not an out-of-line body.
    #[error("out-of-line frame body of {0} bytes")]
    BodyLength(usize),
    /// The announced length does not fit this machine's address space.
    #[error("announced length {0} does not fit in memory")]
    Length(u64),
    /// The blob descriptor was refused when opened (not a sealed memfd, not
    /// of the announced size, with holes: a
    /// [`ferry_ring::RegionError`] says which).
    #[error("{0}")]
    Open(Cause),
}

/// Why a message could not be sent.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// No room in the ring right now (only from the `try_` operations).
    #[error("ring is full")]
    Full,
    /// No room before the timeout.
    #[error("timed out waiting for room")]
    TimedOut,
    /// The peer closed the connection or died.
    #[error("peer disconnected")]
    Disconnected,
    /// More descriptors than a message may carry.
    #[error("{count} descriptors exceed the limit of {max} per message")]
    TooManyFds {
        /// Descriptors given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// As many `send_with_reply` requests wait for their replies as the
    /// configuration allows (`max_pending_replies`).
    #[error("{max} requests already wait for their replies")]
    TooManyPending {
        /// The limit.
        max: usize,
    },
    /// A message larger than this end's
    /// [`max_message_size`](crate::ConnectionConfig::max_message_size), or a
    /// frame larger than the operation allows (e.g. a `reserve_frame`
    /// beyond the in-ring maximum). Nothing was sent.
    #[error("a frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Bytes asked for.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The message could not be serialized (an rkyv error).
    #[error("serializing failed: {0}")]
    Serialize(Cause),
    /// An out-of-line blob or the control socket failed.
    #[error("i/o failed: {0}")]
    Io(Cause),
    /// The connection had already failed because the peer broke the protocol.
    #[error("connection failed earlier: {0}")]
    Failed(Violation),
}

/// Why nothing was received.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    /// Nothing there right now (only from the `try_` operations).
    #[error("nothing to receive")]
    Empty,
    /// Nothing arrived before the timeout.
    #[error("timed out")]
    TimedOut,
    /// The peer closed the connection or died (frames it sent before were
    /// all delivered first).
    #[error("peer disconnected")]
    Disconnected,
    /// The peer broke the protocol; the connection is closed.
    #[error("protocol violation by {peer}: {violation}")]
    ProtocolViolation {
        /// The peer's name (from the connection's configuration).
        peer: String,
        /// What it did.
        violation: Violation,
    },
}

/// Why a request with a reply failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// No reply before the timeout.
    #[error("no reply before the timeout")]
    TimedOut,
    /// The peer disconnected before replying.
    #[error("peer disconnected before replying")]
    Disconnected,
    /// The request could not be sent.
    #[error("sending the request failed: {0}")]
    Send(SendError),
    /// More messages arrived while waiting than may be set aside.
    #[error("too many messages arrived while waiting for the reply")]
    QueueFull,
    /// The peer answered that the request got no reply, and why.
    #[error("no reply: {0}")]
    NoReply(NoReply),
    /// The call was cancelled (a [`CallCanceller`](crate::CallCanceller)).
    #[error("the call was cancelled")]
    Cancelled,
    /// The peer broke the protocol; the connection is closed.
    #[error("protocol violation by {peer}: {violation}")]
    ProtocolViolation {
        /// The peer's name.
        peer: String,
        /// What it did.
        violation: Violation,
    },
}

/// Why dispatching stopped.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DispatchError {
    /// The peer closed the connection or died.
    #[error("peer disconnected")]
    Disconnected,
    /// The peer broke the protocol; the connection is closed.
    #[error("protocol violation by {peer}: {violation}")]
    ProtocolViolation {
        /// The peer's name.
        peer: String,
        /// What it did.
        violation: Violation,
    },
    /// Sending a reply failed.
    #[error("sending a reply failed: {0}")]
    Reply(SendError),
}

/// Why a connection could not be created or opened.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The endpoint's metadata or descriptors are malformed.
    #[error("bad endpoint: {0}")]
    Endpoint(#[from] crate::endpoint::EndpointError),
    /// The two sides were built from different protocol declarations.
    #[error("schema mismatch: this side {ours:#x}, peer {theirs:#x}")]
    SchemaMismatch {
        /// Our schema hash.
        ours: u64,
        /// The peer's.
        theirs: u64,
    },
    /// Creating or mapping the shared memory failed, or it was refused.
    #[error("shared memory: {0}")]
    Region(#[from] ferry_ring::RegionError),
    /// The rings in the shared memory are invalid.
    #[error("ring: {0}")]
    Ring(#[from] ferry_ring::AttachError),
    /// The control socket was refused or could not be created.
    #[error("control socket: {0}")]
    Control(Cause),
    /// A socket or notification descriptor could not be created.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

// ---- conversions between the operation families ----

impl From<RecvError> for CallError {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Empty | RecvError::TimedOut => CallError::TimedOut,
            RecvError::Disconnected => CallError::Disconnected,
            RecvError::ProtocolViolation { peer, violation } => {
                CallError::ProtocolViolation { peer, violation }
            }
        }
    }
}

impl From<SendError> for CallError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Disconnected => CallError::Disconnected,
            SendError::TimedOut => CallError::TimedOut,
            other => CallError::Send(other),
        }
    }
}

impl From<DispatchError> for CallError {
    fn from(e: DispatchError) -> Self {
        match e {
            DispatchError::Disconnected => CallError::Disconnected,
            DispatchError::ProtocolViolation { peer, violation } => {
                CallError::ProtocolViolation { peer, violation }
            }
            DispatchError::Reply(error) => CallError::from(error),
        }
    }
}

impl From<RecvError> for DispatchError {
    /// A receive that ended dispatching: a timeout or an empty ring are not
    /// errors of dispatch (callers handle them first); anything else that
    /// ends a receive ends the connection.
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::ProtocolViolation { peer, violation } => {
                DispatchError::ProtocolViolation { peer, violation }
            }
            RecvError::Disconnected | RecvError::Empty | RecvError::TimedOut => {
                DispatchError::Disconnected
            }
        }
    }
}

/// A reply that could not be sent: a requester that died before its answer
/// is the peer going away, not a failure to reply.
pub(crate) fn reply_failed(error: SendError) -> DispatchError {
    match error {
        SendError::Disconnected => DispatchError::Disconnected,
        other => DispatchError::Reply(other),
    }
}

// ---- conversions from the layers below ----

/// What a ring's send error means for the connection.
pub(crate) fn from_ring_send(error: ferry_ring::SendError) -> SendError {
    use ferry_ring::SendError as Ring;
    match error {
        Ring::Full => SendError::Full,
        Ring::TimedOut => SendError::TimedOut,
        Ring::Closed | Ring::Disconnected => SendError::Disconnected,
        Ring::TooLarge { len, max } => SendError::TooLarge { len, max },
        Ring::Corrupt(corruption) => SendError::Failed(Violation::Ring(corruption)),
    }
}

/// A ring's receive error, before the connection reacts to it.
pub(crate) enum RingRecvOutcome {
    /// Nothing yet (`Empty`, `TimedOut`): the connection stays as it is.
    Wait(RecvError),
    /// The peer closed or died.
    PeerGone,
    /// The peer corrupted the ring.
    Violation(Violation),
}

/// What a ring's receive error means for the connection.
pub(crate) fn from_ring_recv(error: ferry_ring::RecvError) -> RingRecvOutcome {
    use ferry_ring::RecvError as Ring;
    match error {
        Ring::Empty => RingRecvOutcome::Wait(RecvError::Empty),
        Ring::TimedOut => RingRecvOutcome::Wait(RecvError::TimedOut),
        Ring::Closed | Ring::Disconnected => RingRecvOutcome::PeerGone,
        Ring::Corrupt(corruption) => RingRecvOutcome::Violation(Violation::Ring(corruption)),
    }
}

/// What a failed descriptor send on the control socket means.
pub(crate) fn from_control_send(error: ferry_handoff::SendError) -> SendError {
    match error {
        ferry_handoff::SendError::Disconnected => SendError::Disconnected,
        ferry_handoff::SendError::TimedOut => SendError::TimedOut,
        ferry_handoff::SendError::WouldBlock => SendError::Full,
        other => SendError::Io(Cause::new(other)),
    }
}

/// An rkyv validation failure of message `name`.
pub(crate) fn invalid_archive(name: &'static str, error: rkyv::rancor::Error) -> Violation {
    Violation::InvalidArchive {
        message: name,
        reason: Cause::new(error),
    }
}
