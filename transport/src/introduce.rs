//! Connections made through a broker: the requester's `connect(service)`
//! and the target's handler that creates them.
//!
//! The requester sends its schema hash as the introduction's metadata; the
//! target refuses a mismatch before creating anything, and the requester
//! checks the target's hash in the endpoint it gets back. So two processes
//! built from different protocol declarations never exchange a message.
//!
//! The target bounds the live connections it holds per requester and in
//! all ([`Acceptor::with_limits`], defaults
//! [`DEFAULT_MAX_CONNECTIONS_PER_REQUESTER`] and
//! [`DEFAULT_MAX_CONNECTIONS`]), so one requester that keeps its
//! connections open cannot exhaust the service's descriptors and deny it
//! to the others. A requester told the target is busy (too many
//! introductions in flight at the broker) can wait for room with
//! [`connect_retrying`].

use crate::config::ConnectionConfig;
use crate::connection::Connection;
use crate::error::OpenError;
use ferry_handoff::{
    BrokerClient, ConnectError, ConnectionHandler, ConnectionRequest, Endpoint, PeerId,
    RequesterLimits,
};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Why `connect` failed.
#[derive(Debug, Error)]
pub enum IntroductionError {
    /// The broker did not introduce us (unknown service, denied, the target
    /// failed, died or did not answer, the broker is gone).
    #[error("introduction failed: {0}")]
    Broker(#[from] ferry_handoff::ConnectError),
    /// The endpoint we received could not be opened (or the schemas differ).
    #[error("opening the connection failed: {0}")]
    Open(#[from] OpenError),
}

const REQUEST_MAGIC: [u8; 8] = *b"FERRYRQ1";

fn encode_request(schema: u64) -> Vec<u8> {
    let mut out = REQUEST_MAGIC.to_vec();
    out.extend_from_slice(&schema.to_le_bytes());
    out
}

/// The schema hash in a requester's introduction metadata, if well formed.
pub fn decode_request(metadata: &[u8]) -> Option<u64> {
    let (magic, schema) = metadata.split_at_checked(8)?;
    if magic != REQUEST_MAGIC {
        return None;
    }
    Some(u64::from_le_bytes(schema.try_into().ok()?))
}

/// Asks the broker for a connection to `service` and opens it. The peer's
/// name in errors becomes the introduced peer's identity.
pub fn connect(
    client: &BrokerClient,
    service: &str,
    mut config: ConnectionConfig,
    timeout: Duration,
) -> Result<Connection, IntroductionError> {
    let introduction = client.connect(service, &encode_request(config.schema), timeout)?;
    config.peer_name = introduction.peer.to_string();
    let endpoint = Endpoint {
        fds: introduction.fds,
        metadata: introduction.metadata,
    };
    Ok(Connection::open(endpoint, config)?)
}

/// The first pause of [`connect_retrying`] after a busy answer; it doubles
/// up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(2);
/// The longest pause of [`connect_retrying`] between two attempts.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// [`connect`], retried while the broker answers that the target is busy
/// ([`ConnectError::TargetBusy`]: it has too many introductions in flight)
/// or that we have too many of our own in flight ([`ConnectError::Busy`]),
/// with pauses growing from 2 ms to 100 ms, for at most `timeout` in all.
/// Any other outcome is returned at once. A busy answer is returned when
/// the next pause would reach the deadline; an attempt started before it
/// waits only for the time left (and may then time out).
///
/// A target at its [live-connection limit](Acceptor::with_limits) refuses
/// with [`ConnectError::TargetFailed`], which is not retried: the
/// requester has to close one of its connections first.
pub fn connect_retrying(
    client: &BrokerClient,
    service: &str,
    config: ConnectionConfig,
    timeout: Duration,
) -> Result<Connection, IntroductionError> {
    let deadline = Instant::now().checked_add(timeout);
    let left = || deadline.map_or(timeout, |at| at.saturating_duration_since(Instant::now()));
    let mut pause = FIRST_RETRY_PAUSE;
    loop {
        match connect(client, service, config.clone(), left()) {
            Err(IntroductionError::Broker(ConnectError::TargetBusy | ConnectError::Busy))
                if left() > pause =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
            }
            outcome => return outcome,
        }
    }
}

/// How many live connections an [`Acceptor`] holds for one requester by
/// default (see [`Acceptor::with_limits`]).
pub const DEFAULT_MAX_CONNECTIONS_PER_REQUESTER: usize = 16;
/// How many live connections an [`Acceptor`] holds in all by default (see
/// [`Acceptor::with_limits`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// A connection a target created for a requester. The connection holds the
/// requester's slot in the acceptor's [limits](Acceptor::with_limits) for
/// as long as it lives: dropping it lets the requester open another.
#[derive(Debug)]
pub struct Accepted {
    /// Who asked for it.
    pub peer: PeerId,
    /// Our end.
    pub connection: Connection,
}

/// The target's side: a [`ConnectionHandler`] (register it with
/// `BrokerClient::builder().handler(...)`) that creates a connection for
/// each requester with the same schema, keeps our end for the service's
/// thread, and hands the requester's end to the broker.
///
/// It holds at most [`DEFAULT_MAX_CONNECTIONS_PER_REQUESTER`] live
/// connections per requester and [`DEFAULT_MAX_CONNECTIONS`] in all unless
/// told otherwise ([`with_limits`](Self::with_limits)); a request beyond a
/// limit is refused before anything is created, and the requester learns
/// why ([`ConnectError::TargetFailed`]). A connection is live until the
/// service drops its [`Accepted`] (or the receiver is gone).
pub struct Acceptor {
    config: ConnectionConfig,
    limits: RequesterLimits,
    accepted: mpsc::Sender<Accepted>,
}

impl Acceptor {
    /// An acceptor creating connections with `config` under the default
    /// limits, and the receiver on which the service's thread gets each
    /// new connection.
    pub fn new(config: ConnectionConfig) -> (Acceptor, mpsc::Receiver<Accepted>) {
        let (accepted, receiver) = mpsc::channel();
        let limits = RequesterLimits::new(
            DEFAULT_MAX_CONNECTIONS_PER_REQUESTER,
            DEFAULT_MAX_CONNECTIONS,
        );
        (
            Acceptor {
                config,
                limits,
                accepted,
            },
            receiver,
        )
    }

    /// Bounds the live connections this acceptor holds per requester and in
    /// all with `limits` (whose counts it shares with its clones: a service
    /// may count several acceptors together, or read
    /// [`RequesterLimits::live`]).
    ///
    /// ```
    /// use ferry_transport::{Acceptor, ConnectionConfig};
    /// use ferry_handoff::RequesterLimits;
    ///
    /// let limits = RequesterLimits::new(4, 256);
    /// let (acceptor, accepted) = Acceptor::new(ConnectionConfig::default());
    /// let acceptor = acceptor.with_limits(limits.clone());
    /// # drop((acceptor, accepted));
    /// assert_eq!(limits.total(), 0);
    /// ```
    pub fn with_limits(mut self, limits: RequesterLimits) -> Acceptor {
        self.limits = limits;
        self
    }

    /// The limits this acceptor counts against.
    pub fn limits(&self) -> &RequesterLimits {
        &self.limits
    }
}

impl ConnectionHandler for Acceptor {
    fn create_connection(&mut self, request: ConnectionRequest) -> Result<Endpoint, String> {
        let theirs = decode_request(&request.metadata)
            .ok_or_else(|| String::from("malformed connection request metadata"))?;
        if theirs != self.config.schema {
            return Err(format!(
                "schema mismatch: {} has {theirs:#x}, this service {:#x}",
                request.requester, self.config.schema
            ));
        }
        // Admitted before anything is created: a requester at its limit
        // costs the service no memory and no descriptors.
        let admission = self
            .limits
            .admit(&request.requester)
            .map_err(|e| e.to_string())?;
        let config = self.config.clone().peer_name(request.requester.to_string());
        let (mut connection, endpoint) = Connection::create(config).map_err(|e| e.to_string())?;
        connection.admission = Some(admission);
        self.accepted
            .send(Accepted {
                peer: request.requester,
                connection,
            })
            .map_err(|_| String::from("the service no longer accepts connections"))?;
        Ok(endpoint)
    }
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("schema", &self.config.schema)
            .field("limits", &self.limits)
            .finish()
    }
}
