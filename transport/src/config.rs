//! How a connection is built and how it treats its peer.

use ferry_ring::WaitStrategy;
use std::time::Duration;

/// How far a connection trusts the process at the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trust {
    /// Same binary, same user: frames are validated and read in place in the
    /// ring, with no copy.
    #[default]
    Trusted,
    /// Anyone else: each frame is copied once into a private 16-aligned
    /// buffer and validated there, so the peer cannot change bytes between
    /// validation and use. Out-of-line payloads are sealed against writes and
    /// need no copy.
    Untrusted,
}

/// Settings of one connection. Both ends choose their own. Start from
/// `default()` and change what you need with the builder methods (new
/// settings may be added in any release):
///
/// ```
/// use ferry_transport::{ConnectionConfig, Trust, WaitStrategy};
/// let config = ConnectionConfig::default()
///     .trust(Trust::Untrusted)
///     .wait(WaitStrategy::Park)
///     .ring_capacity(1 << 16)
///     .peer_name("webcontent/1");
/// assert_eq!(config.ring_capacity, 1 << 16);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionConfig {
    /// Bytes in each direction's ring (a power of two). Messages larger than
    /// half of it travel out of line.
    pub ring_capacity: usize,
    /// How this end waits for messages and for room.
    pub wait: WaitStrategy,
    /// How this end treats what the peer sends.
    pub trust: Trust,
    /// Schema hash both ends must share (see [`crate::Receiver::SCHEMA`] and
    /// [`crate::schema_of`]); a mismatch refuses the connection.
    pub schema: u64,
    /// Descriptors one message may carry.
    pub max_fds_per_message: usize,
    /// Bytes of messages a synchronous call may set aside while it waits for
    /// its reply (messages not allowed while waiting); beyond that the call
    /// fails with `QueueFull` instead of using unbounded memory. Each message
    /// counts its body plus [`SET_ASIDE_OVERHEAD`] bytes, so empty messages
    /// are not free.
    pub max_deferred_bytes: usize,
    /// Descriptors the messages set aside may hold in all; beyond that the
    /// call fails with `QueueFull`, so a peer cannot fill our descriptor
    /// table while we wait.
    pub max_deferred_fds: usize,
    /// How many synchronous calls may wait inside one another on this
    /// connection (a handler of an allowed-while-waiting message that calls
    /// back, and so on). At the limit, the innermost call sets incoming
    /// messages aside instead of dispatching them, so a peer cannot nest
    /// dispatch until the stack overflows.
    pub max_sync_nesting: u32,
    /// Requests sent with `send_with_reply` that may wait for their replies
    /// at once; beyond that `send_with_reply` fails with
    /// `SendError::TooManyPending`.
    pub max_pending_replies: usize,
    /// How long a reply may wait for room in the peer's ring. A peer that
    /// does not take its replies for that long is cut off
    /// (`Violation::RepliesNotTaken`): it would stall every dispatch.
    pub reply_timeout: Duration,
    /// The most messages one `dispatch` call handles before it returns
    /// (its timeout bounds it too), so that one busy peer cannot monopolise
    /// a thread that serves several connections.
    pub max_dispatch_batch: usize,
    /// A name for the peer in errors (e.g. "webcontent/2").
    pub peer_name: String,
    /// How long `send` and `send_with_reply` wait for room in a full ring
    /// (`None`: as long as it takes; the peer's death still ends the wait).
    /// The default is finite: a live peer that stops reading must not hang
    /// us.
    pub send_timeout: Option<Duration>,
}

/// What each message set aside during a synchronous call counts against
/// [`ConnectionConfig::max_deferred_bytes`] besides its body: roughly what
/// holding it costs (its queue entry, envelope and buffer header).
pub const SET_ASIDE_OVERHEAD: usize = 256;

/// Default ring size in each direction: 1 MiB.
pub const DEFAULT_RING_CAPACITY: usize = 1 << 20;

/// How long `send` waits for room by default: 10 s.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            ring_capacity: DEFAULT_RING_CAPACITY,
            wait: WaitStrategy::default(),
            trust: Trust::Trusted,
            schema: 0,
            max_fds_per_message: 16,
            max_deferred_bytes: 64 << 20,
            max_deferred_fds: 256,
            max_sync_nesting: 16,
            max_pending_replies: 4096,
            reply_timeout: Duration::from_secs(5),
            max_dispatch_batch: 1024,
            peer_name: String::from("peer"),
            send_timeout: Some(DEFAULT_SEND_TIMEOUT),
        }
    }
}

impl ConnectionConfig {
    /// Sets the trust mode.
    pub fn trust(mut self, trust: Trust) -> Self {
        self.trust = trust;
        self
    }
    /// Sets the wait strategy.
    pub fn wait(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }
    /// Sets the schema hash.
    pub fn schema(mut self, schema: u64) -> Self {
        self.schema = schema;
        self
    }
    /// Sets the ring capacity in each direction.
    pub fn ring_capacity(mut self, capacity: usize) -> Self {
        self.ring_capacity = capacity;
        self
    }
    /// Sets how long `send` and `send_with_reply` wait for room.
    pub fn send_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.send_timeout = timeout;
        self
    }
    /// Sets the peer's name used in errors.
    pub fn peer_name(mut self, name: impl Into<String>) -> Self {
        self.peer_name = name.into();
        self
    }
    /// Sets how many descriptors one message may carry.
    pub fn max_fds_per_message(mut self, max: usize) -> Self {
        self.max_fds_per_message = max;
        self
    }
    /// Sets how many bytes of messages a synchronous call may set aside.
    pub fn max_deferred_bytes(mut self, max: usize) -> Self {
        self.max_deferred_bytes = max;
        self
    }
    /// Sets how many descriptors the messages set aside may hold.
    pub fn max_deferred_fds(mut self, max: usize) -> Self {
        self.max_deferred_fds = max;
        self
    }
    /// Sets how many synchronous calls may wait inside one another.
    pub fn max_sync_nesting(mut self, max: u32) -> Self {
        self.max_sync_nesting = max;
        self
    }
    /// Sets how many `send_with_reply` requests may wait at once.
    pub fn max_pending_replies(mut self, max: usize) -> Self {
        self.max_pending_replies = max;
        self
    }
    /// Sets how long a reply may wait for room before the peer is cut off.
    pub fn reply_timeout(mut self, timeout: Duration) -> Self {
        self.reply_timeout = timeout;
        self
    }
    /// Sets the most messages one `dispatch` call handles.
    pub fn max_dispatch_batch(mut self, max: usize) -> Self {
        self.max_dispatch_batch = max.max(1);
        self
    }
}

/// How long a receiver waits for the descriptors announced by a frame. The
/// sender sends them before it publishes the frame, so they are normally
/// there already; the bound only limits what a hostile peer can stall.
pub(crate) const ATTACHMENT_TIMEOUT: Duration = Duration::from_secs(2);
