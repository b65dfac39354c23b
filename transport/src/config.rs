//! How a connection is built and how it treats its peer.

use ferry_ring::{RING_ALIGN, WaitStrategy, ring_size};
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
///     .max_message_size(64 << 20)
///     .peer_name("webcontent/1");
/// assert_eq!(config.ring_capacity, 1 << 16);
/// assert_eq!(config.max_message_size, 64 << 20);
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
    /// Descriptors the messages set aside may hold in all (those they carry,
    /// and the blob of each out-of-line message); beyond that the call fails
    /// with `QueueFull`, so a peer cannot fill our descriptor table while we
    /// wait.
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
    /// Reply handles (of messages declared `@reply_later`) alive at once,
    /// together with their answers not yet sent by the connection: what a
    /// peer can make this side hold for requests answered later. At the
    /// bound a further such request is not handled: its requester gets an
    /// error reply ([`NoReply::Busy`](crate::NoReply::Busy)).
    pub max_reply_handles: usize,
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
    /// The largest message body, in bytes, this end receives or sends,
    /// raw or typed, in the ring or out of line. A received frame whose body
    /// is larger is a violation ([`Violation::MessageTooLarge`]); an
    /// out-of-line frame is refused on the length it announces, before its
    /// blob's descriptor is received or anything is mapped. A send above it
    /// fails with [`SendError::TooLarge`] before anything is written. (The
    /// peer's limit is its own: a message within ours but above the peer's
    /// ends the connection, which this end then sees as `Disconnected`.)
    /// Default [`DEFAULT_MAX_MESSAGE_SIZE`].
    ///
    /// [`Violation::MessageTooLarge`]: crate::Violation::MessageTooLarge
    /// [`SendError::TooLarge`]: crate::SendError::TooLarge
    pub max_message_size: usize,
    /// The largest shared region, in bytes, [`Connection::open`] maps for
    /// the peer that created the connection; a larger one is refused before
    /// it is mapped. A region this end's own [`ring_capacity`] needs is
    /// always accepted. Default [`DEFAULT_MAX_REGION_SIZE`].
    ///
    /// [`Connection::open`]: crate::Connection::open
    /// [`ring_capacity`]: Self::ring_capacity
    pub max_region_size: usize,
    /// The largest ring, in bytes of data area, [`Connection::open`] accepts
    /// from the peer that created the connection (each direction). This
    /// end's own [`ring_capacity`] is always accepted. Default
    /// [`DEFAULT_MAX_RING_CAPACITY`].
    ///
    /// [`Connection::open`]: crate::Connection::open
    /// [`ring_capacity`]: Self::ring_capacity
    pub max_ring_capacity: usize,
    /// How long an async operation (the `tokio` feature) keeps polling the
    /// ring before it arms the readiness descriptor and sleeps. Waking a
    /// task through the descriptor costs a system call on both sides and,
    /// when the executor's thread sleeps, a wake-up of its CPU (tens of
    /// µs); a peer that answers within the spin is seen without either.
    /// The spin yields between polls (the task wakes itself and returns
    /// `Pending`), so every other task of the executor runs while it
    /// lasts: it keeps the thread awake, it never holds it. Default
    /// [`DEFAULT_ASYNC_SPIN`]; `Duration::ZERO` never spins.
    pub async_spin: Duration,
}

/// What each message set aside during a synchronous call counts against
/// [`ConnectionConfig::max_deferred_bytes`] besides its body: roughly what
/// holding it costs (its queue entry, envelope and buffer header).
pub const SET_ASIDE_OVERHEAD: usize = 256;

/// Default [`ConnectionConfig::max_reply_handles`]: 1024.
pub const DEFAULT_MAX_REPLY_HANDLES: usize = 1024;

/// Default [`ConnectionConfig::async_spin`]: 5 µs, as the ring's own
/// spin. Measured (`cargo bench -p ferry-transport --features tokio --bench
/// threads_and_async`, an async round trip to a spinning echo thread, on 2
/// shared vCPUs): 5 µs beat no spin (which parks the task and pays its
/// thread's wake-up every time) and beat 20 and 50 µs (a spinning task
/// holds the core its peer needs). See docs/decisions.md, "Threads and
/// async".
pub const DEFAULT_ASYNC_SPIN: Duration = Duration::from_micros(5);

/// Default ring size in each direction: 1 MiB.
pub const DEFAULT_RING_CAPACITY: usize = 1 << 20;

/// How long `send` waits for room by default: 10 s.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Default [`ConnectionConfig::max_message_size`]: 1 GiB. Large enough for
/// any single buffer an application hands over in one message (a decoded
/// image, a file), small enough that a peer cannot make us map more than a
/// fraction of a 64-bit machine's memory per message. Larger payloads are
/// better shared as a memfd of their own, sent as a descriptor.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 30;

/// Default [`ConnectionConfig::max_ring_capacity`]: 16 MiB, sixteen times
/// the default ring. A ring larger than twice the largest message it
/// carries in line buys only batching (larger messages go out of line), so
/// no honest creator needs more; and the opener touches every page of the
/// ring it writes as it wraps around, so this bounds the shared memory a
/// creator can make the opener fault in to two such rings per connection.
pub const DEFAULT_MAX_RING_CAPACITY: usize = 16 << 20;

/// Default [`ConnectionConfig::max_region_size`]: exactly the region two
/// rings of [`DEFAULT_MAX_RING_CAPACITY`] need (32 MiB and two headers), so
/// a creator cannot pad the region beyond the rings it holds.
pub const DEFAULT_MAX_REGION_SIZE: usize = region_len(DEFAULT_MAX_RING_CAPACITY);

/// Bytes of the region that holds a connection's two rings of `capacity`
/// (the layout [`Connection::create`](crate::Connection::create) makes):
/// the second ring starts at the first aligned offset after the first.
pub(crate) const fn region_len(capacity: usize) -> usize {
    ring_size(capacity).next_multiple_of(RING_ALIGN) + ring_size(capacity)
}

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
            max_reply_handles: DEFAULT_MAX_REPLY_HANDLES,
            reply_timeout: Duration::from_secs(5),
            max_dispatch_batch: 1024,
            peer_name: String::from("peer"),
            send_timeout: Some(DEFAULT_SEND_TIMEOUT),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_region_size: DEFAULT_MAX_REGION_SIZE,
            max_ring_capacity: DEFAULT_MAX_RING_CAPACITY,
            async_spin: DEFAULT_ASYNC_SPIN,
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
    /// Sets how many reply handles (and their queued answers) may exist at
    /// once.
    pub fn max_reply_handles(mut self, max: usize) -> Self {
        self.max_reply_handles = max;
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
    /// Sets the largest message body this end receives or sends.
    pub fn max_message_size(mut self, max: usize) -> Self {
        self.max_message_size = max;
        self
    }
    /// Sets the largest shared region `Connection::open` maps.
    pub fn max_region_size(mut self, max: usize) -> Self {
        self.max_region_size = max;
        self
    }
    /// Sets how long an async operation polls before it waits for the
    /// readiness descriptor.
    pub fn async_spin(mut self, spin: Duration) -> Self {
        self.async_spin = spin;
        self
    }
    /// Sets the largest ring `Connection::open` accepts from the creator.
    pub fn max_ring_capacity(mut self, max: usize) -> Self {
        self.max_ring_capacity = max;
        self
    }

    /// The largest ring this end accepts when it opens a connection: its
    /// limit, or its own ring capacity if larger (a connection made with
    /// one configuration on both ends always opens).
    pub(crate) fn accepted_ring_capacity(&self) -> usize {
        self.max_ring_capacity.max(self.ring_capacity)
    }

    /// The largest region this end maps when it opens a connection: its
    /// limit, or what its own ring capacity needs if larger.
    pub(crate) fn accepted_region_size(&self) -> usize {
        // A capacity beyond what a ring may have makes no region at all
        // (`create` refuses it); it raises nothing.
        let own = if self.ring_capacity <= ferry_ring::MAX_CAPACITY {
            region_len(self.ring_capacity)
        } else {
            0
        };
        self.max_region_size.max(own)
    }
}

/// How long a receiver waits for the descriptors announced by a frame. The
/// sender sends them before it publishes the frame, so they are normally
/// there already; the bound only limits what a hostile peer can stall.
pub(crate) const ATTACHMENT_TIMEOUT: Duration = Duration::from_secs(2);
