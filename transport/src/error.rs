//! Errors, one enum per operation family, and the protocol violations that
//! end a connection.

use crate::envelope::EnvelopeError;
use thiserror::Error;

/// Something the peer sent that breaks the protocol. The connection is
/// closed when one is found; the peer can be reported as misbehaving (a
/// broker may kill it).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The shared ring's positions or frame headers were corrupted.
    #[error("ring corrupted: {0}")]
    Ring(#[from] ferry_ring::Corruption),
    /// A frame's envelope is invalid.
    #[error("bad envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    /// The descriptors announced by a frame did not arrive as announced.
    #[error("bad attachment: {0}")]
    Attachment(String),
    /// An out-of-line blob was refused (not sealed, wrong size, ...).
    #[error("bad out-of-line blob: {0}")]
    Blob(String),
    /// A message for a receiver or destination this side never registered.
    #[error("no receiver {receiver:#x} at destination {destination}")]
    UnknownDestination {
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
        /// What validation said.
        reason: String,
    },
    /// A reply to a request this side never made (or already answered).
    #[error("reply to unknown request {0}")]
    UnexpectedReply(u64),
    /// A reply that names another receiver or message than its request.
    #[error("reply to request {0} names another message than the request")]
    MismatchedReply(u64),
    /// A raw frame where a typed message was expected.
    #[error("raw frame where a typed message was expected")]
    UnexpectedRawFrame,
}

/// Why a message could not be sent.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
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
    /// The message could not be serialized.
    #[error("serializing failed: {0}")]
    Serialize(String),
    /// An out-of-line blob or the control socket failed.
    #[error("i/o failed: {0}")]
    Io(String),
    /// The connection had already failed because the peer broke the protocol.
    #[error("connection failed earlier: {0}")]
    Failed(Violation),
}

/// Why nothing was received.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
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
    /// The peer broke the protocol; the connection is closed.
    #[error("protocol violation by {peer}: {violation}")]
    ProtocolViolation {
        /// The peer's name.
        peer: String,
        /// What it did.
        violation: Violation,
    },
}

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

/// Why dispatching stopped.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
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
    /// A socket or eventfd could not be created.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
