//! A connection: one ring per direction in one sealed region, plus a control
//! socket for liveness, descriptors and out-of-line payloads.

use crate::config::ConnectionConfig;
use crate::dispatch::Dispatcher;
use crate::endpoint::{ENDPOINT_FDS, Endpoint, EndpointInfo};
use crate::error::{OpenError, RecvError, SendError, Violation};
use crate::stats::TransportStats;
use ferry_handoff::Channel;
use ferry_handoff::hangup::{HangupWatch, watch_hangup};
use ferry_ring::{Consumer, Notifier, Producer, RING_ALIGN, Region, init, ring_size};
use rkyv::util::AlignedVec;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

/// Where a connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    Open,
    /// The peer closed its end or died.
    Disconnected,
    /// The peer broke the protocol; we closed the connection.
    Failed(Violation),
}

/// One end of a bidirectional, shared-memory connection to another process.
///
/// - The **raw frame API** ([`send_frame`](Self::send_frame),
///   [`recv_frame`](Self::recv_frame), ...) carries bytes, optionally with
///   descriptors, for IPC layers that bring their own encoding.
/// - The **typed API** ([`send`](Self::send), [`send_sync`](Self::send_sync),
///   [`dispatch`](Self::dispatch), ...) carries rkyv archives of messages
///   declared with [`protocol!`](crate::protocol), serialized straight into
///   the ring and read in place.
///
/// A connection is driven by one thread at a time (`&mut self`); it is `Send`.
///
/// ```
/// use ferry_transport::{Connection, ConnectionConfig};
/// use std::time::Duration;
///
/// let (mut a, mut b) = Connection::pair(ConnectionConfig::default())?;
/// a.send_frame(b"ping", Some(Duration::from_secs(1)))?;
/// let frame = b.recv_frame(Some(Duration::from_secs(1)))?;
/// assert_eq!(frame.bytes(), b"ping");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Connection {
    pub(crate) tx: Producer,
    pub(crate) rx: Consumer,
    pub(crate) control: Channel,
    pub(crate) config: ConnectionConfig,
    pub(crate) state: State,
    /// Our end of the notification socketpair: the peer signals it when we
    /// wait in an event loop (our readiness descriptor); we signal the peer
    /// through it.
    pub(crate) notify: Notifier,
    pub(crate) _hangup: HangupWatch,
    /// Attachments (descriptor messages) sent and received so far; both
    /// sides count, so each one is matched to its frame.
    pub(crate) attachments_out: u64,
    pub(crate) attachments_in: u64,
    /// Room to reserve for the next archive (learned from the last one).
    pub(crate) size_hint: usize,
    /// Private 16-aligned buffers for untrusted copies, reused.
    pub(crate) spare_buffers: Vec<AlignedVec<16>>,
    pub(crate) dispatcher: Dispatcher,
    /// Descriptors of the message a handler is running for.
    pub(crate) message_fds: Vec<OwnedFd>,
    pub(crate) stats: TransportStats,
}

/// Ring offsets of a region holding two rings of `capacity`.
fn layout(capacity: usize) -> (usize, usize, usize) {
    let second = ring_size(capacity).next_multiple_of(RING_ALIGN);
    (0, second, second + ring_size(capacity))
}

impl Connection {
    /// Both ends of a connection, in this process: for tests, for threads,
    /// and for handing one end to a child across `fork`.
    pub fn pair(config: ConnectionConfig) -> Result<(Connection, Connection), OpenError> {
        let (mine, endpoint) = Connection::create(config.clone())?;
        let theirs = Connection::open(endpoint, config)?;
        Ok((mine, theirs))
    }

    /// Creates a connection: keeps one end and returns the [`Endpoint`] to
    /// send to the peer, which opens it with [`Connection::open`].
    pub fn create(config: ConnectionConfig) -> Result<(Connection, Endpoint), OpenError> {
        let (first, second, region_len) = layout(config.ring_capacity);
        let region = Arc::new(Region::create(region_len)?);
        // The creator sends on the first ring and receives on the second.
        init(&region, first, config.ring_capacity)?;
        init(&region, second, config.ring_capacity)?;
        let (ours, theirs) =
            Channel::pair().map_err(|e| OpenError::Io(std::io::Error::other(e)))?;
        let (our_notify, their_notify) = Notifier::pair()?;
        let region_fd = region
            .fd()
            .expect("a created region is shared")
            .try_clone_to_owned()?;
        let endpoint = Endpoint {
            fds: vec![region_fd, OwnedFd::from(theirs), their_notify.into_fd()],
            metadata: EndpointInfo {
                region_len: region_len as u64,
                rx_offset: first as u64,
                tx_offset: second as u64,
                schema: config.schema,
            }
            .encode(),
        };
        let connection = Connection::assemble(region, second, first, ours, our_notify, config)?;
        Ok((connection, endpoint))
    }

    /// Opens the end a peer created and sent us. Checks the metadata, the
    /// descriptors (a sealed memfd of the announced size, a SEQPACKET
    /// socket), the rings, and that both sides share the schema hash.
    pub fn open(endpoint: Endpoint, config: ConnectionConfig) -> Result<Connection, OpenError> {
        let info = EndpointInfo::decode(&endpoint.metadata, endpoint.fds.len())?;
        if info.schema != config.schema {
            return Err(OpenError::SchemaMismatch {
                ours: config.schema,
                theirs: info.schema,
            });
        }
        let [region_fd, control, notify]: [OwnedFd; ENDPOINT_FDS] =
            endpoint.fds.try_into().map_err(|fds: Vec<OwnedFd>| {
                crate::endpoint::EndpointError::FdCount { found: fds.len() }
            })?;
        let region = Region::open(region_fd)?;
        if region.len() as u64 != info.region_len {
            return Err(OpenError::Region(ferry_ring::RegionError::BadSize(
                region.len() as u64,
            )));
        }
        let control =
            Channel::from_checked(control).map_err(|e| OpenError::Io(std::io::Error::other(e)))?;
        let notify = Notifier::from_received(notify)
            .map_err(|e| crate::endpoint::EndpointError::Notification(e.to_string()))?;
        Connection::assemble(
            Arc::new(region),
            info.rx_offset as usize,
            info.tx_offset as usize,
            control,
            notify,
            config,
        )
    }

    fn assemble(
        region: Arc<Region>,
        rx_offset: usize,
        tx_offset: usize,
        mut control: Channel,
        notify: Notifier,
        config: ConnectionConfig,
    ) -> Result<Connection, OpenError> {
        let mut tx =
            Producer::attach(Arc::clone(&region), tx_offset)?.with_wait_strategy(config.wait);
        tx.set_notifier(Some(notify.try_clone()?));
        let rx = Consumer::attach(region, rx_offset)?.with_wait_strategy(config.wait);
        // One more than the user limit: an out-of-line blob travels as a
        // descriptor too.
        control.set_max_fds(config.max_fds_per_message + 1);
        let hangup = {
            let rx_gone = rx.disconnect_handle();
            let tx_gone = tx.disconnect_handle();
            let notify = notify.try_clone()?;
            watch_hangup(control.as_fd(), move || {
                rx_gone.disconnect();
                tx_gone.disconnect();
                // No I/O on the socket the peer shares: a peer that
                // filled it or cleared O_NONBLOCK cannot block this thread
                // (which watches every connection of the process).
                notify.set_readable_forever();
            })?
        };
        Ok(Connection {
            tx,
            rx,
            control,
            config,
            state: State::Open,
            notify,
            _hangup: hangup,
            attachments_out: 0,
            attachments_in: 0,
            size_hint: 256,
            spare_buffers: Vec::new(),
            dispatcher: Dispatcher::default(),
            message_fds: Vec::new(),
            stats: TransportStats::default(),
        })
    }

    /// The configuration this end was built with.
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    /// Whether the connection is still usable (the peer has not closed,
    /// died, or broken the protocol).
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// After a `Disconnected`: whether the peer closed its end in an orderly
    /// way (dropped its connection) rather than vanishing (killed, crashed).
    /// Read from memory the peer shares: a hint for reporting, not a fact
    /// to rely on.
    pub fn peer_closed_cleanly(&self) -> bool {
        self.rx.peer_closed()
    }

    /// The largest frame body that travels inside the ring; larger ones go
    /// out of line automatically.
    pub fn max_inline_payload(&self) -> usize {
        self.tx.max_payload() - crate::envelope::ENVELOPE_SIZE
    }

    /// What this end has done so far, with its rings' counters.
    pub fn stats(&self) -> TransportStats {
        TransportStats {
            tx_ring: self.tx.stats(),
            rx_ring: self.rx.stats(),
            ..self.stats
        }
    }

    /// Records that the peer broke the protocol: closes the connection (the
    /// peer sees the hang-up) and returns the error to report.
    pub(crate) fn fail(&mut self, violation: Violation) -> RecvError {
        // Also after a disconnection: the violation is the more telling
        // report, and nothing the peer sent may be dispatched any more.
        if !matches!(self.state, State::Failed(_)) {
            self.state = State::Failed(violation.clone());
            let _ = self.control.shutdown();
            self.rx.disconnect_handle().disconnect();
            self.tx.disconnect_handle().disconnect();
            self.dispatcher.discard_received();
            self.fail_pending_calls(crate::error::CallError::ProtocolViolation {
                peer: self.config.peer_name.clone(),
                violation: violation.clone(),
            });
        }
        RecvError::ProtocolViolation {
            peer: self.config.peer_name.clone(),
            violation,
        }
    }

    /// The error a receive returns once the connection is no longer open.
    pub(crate) fn closed_recv_error(&self) -> Option<RecvError> {
        match &self.state {
            State::Open => None,
            State::Disconnected => Some(RecvError::Disconnected),
            State::Failed(violation) => Some(RecvError::ProtocolViolation {
                peer: self.config.peer_name.clone(),
                violation: violation.clone(),
            }),
        }
    }

    /// The error a send returns once the connection is no longer open.
    pub(crate) fn closed_send_error(&self) -> Option<SendError> {
        match &self.state {
            State::Open => None,
            State::Disconnected => Some(SendError::Disconnected),
            State::Failed(violation) => Some(SendError::Failed(violation.clone())),
        }
    }
}

// SAFETY: every field is Send except the handlers' `Rc`s in the dispatcher
// (the handlers themselves are required to be Send). Those `Rc`s are cloned
// only by `Connection::route`, and each clone lives on the stack of that
// call, which holds `&mut Connection` for as long as the clone exists: the
// connection cannot be moved to, or used from, another thread while a clone
// is alive. So every count change of these `Rc`s happens on the thread that
// owns the connection at that moment, as if the `Rc`s were owned values.
unsafe impl Send for Connection {}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.config.peer_name)
            .field("state", &self.state)
            .field("trust", &self.config.trust)
            .finish()
    }
}

/// A connection can be moved to another thread (checked at compile time).
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<Connection>();
    assert_send::<crate::BoundReceiver>();
};
