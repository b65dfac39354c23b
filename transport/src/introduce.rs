//! Connections made through a broker: the requester's `connect(service)`
//! and the target's handler that creates them.
//!
//! The requester sends its schema hash as the introduction's metadata; the
//! target refuses a mismatch before creating anything, and the requester
//! checks the target's hash in the endpoint it gets back. So two processes
//! built from different protocol declarations never exchange a message.

use crate::config::ConnectionConfig;
use crate::connection::Connection;
use crate::error::OpenError;
use ferry_handoff::{BrokerClient, ConnectionHandler, ConnectionRequest, Endpoint, PeerId};
use std::sync::mpsc;
use std::time::Duration;
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

/// A connection a target created for a requester.
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
pub struct Acceptor {
    config: ConnectionConfig,
    accepted: mpsc::Sender<Accepted>,
}

impl Acceptor {
    /// An acceptor creating connections with `config`, and the receiver on
    /// which the service's thread gets each new connection.
    pub fn new(config: ConnectionConfig) -> (Acceptor, mpsc::Receiver<Accepted>) {
        let (accepted, receiver) = mpsc::channel();
        (Acceptor { config, accepted }, receiver)
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
        let config = self.config.clone().peer_name(request.requester.to_string());
        let (connection, endpoint) = Connection::create(config).map_err(|e| e.to_string())?;
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
            .finish()
    }
}
