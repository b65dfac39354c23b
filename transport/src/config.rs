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
    /// fails with `QueueFull` instead of using unbounded memory.
    pub max_deferred_bytes: usize,
    /// A name for the peer in errors (e.g. "webcontent/2").
    pub peer_name: String,
    /// How long `send` and `send_with_reply` wait for room in a full ring
    /// (`None`: as long as it takes; the peer's death still ends the wait).
    pub send_timeout: Option<Duration>,
}

/// Default ring size in each direction: 1 MiB.
pub const DEFAULT_RING_CAPACITY: usize = 1 << 20;

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            ring_capacity: DEFAULT_RING_CAPACITY,
            wait: WaitStrategy::default(),
            trust: Trust::Trusted,
            schema: 0,
            max_fds_per_message: 16,
            max_deferred_bytes: 64 << 20,
            peer_name: String::from("peer"),
            send_timeout: None,
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
}

/// How long a receiver waits for the descriptors announced by a frame. The
/// sender sends them before it publishes the frame, so they are normally
/// there already; the bound only limits what a hostile peer can stall.
pub(crate) const ATTACHMENT_TIMEOUT: Duration = Duration::from_secs(2);
