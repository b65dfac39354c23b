//! The child's side of the broker: [`BrokerClient`].
//!
//! A child has one channel to the broker, multiplexed by a reader thread
//! that
//! - routes connect replies to the thread waiting in
//!   [`BrokerClient::connect`], by request id;
//! - answers create-connection requests with the [`ConnectionHandler`] the
//!   child registered (the handler runs on the reader thread: keep it short,
//!   and do not call [`BrokerClient::connect`] from it);
//! - reports [`ClientEvent`]s (a peer gone, the broker gone) to the callback
//!   the child registered (also on the reader thread).
//!
//! When the broker hangs up (it exited or was killed) or sends anything
//! malformed, the reader closes the channel, fails every waiting connect
//! with [`ConnectError::BrokerGone`] and reports
//! [`ClientEvent::BrokerGone`].

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::bootstrap::{self, BootstrapError};
use crate::channel::{Channel, RecvError, SendError};
use crate::message::{
    self, ConnectFailure, ControlMessage, MAX_ENCODED_LEN, MAX_INTRODUCTION_FDS, MAX_METADATA_LEN,
    PeerId,
};
use crate::wait::Deadline;

/// How long the reader thread waits for room to answer the broker.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The default time to wait for the broker's `Hello`.
const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A request, forwarded by the broker, to create a connection for another
/// child.
#[derive(Debug, Clone)]
pub struct ConnectionRequest {
    /// The child that asked, as the broker identifies it (the broker fills
    /// this in; a requester cannot choose it). Its instance id is unique for
    /// the broker's lifetime and never reused (unlike a pid), so a service
    /// can bound what each requester holds with it (see
    /// [`RequesterLimits`](crate::RequesterLimits)).
    pub requester: PeerId,
    /// The requester's metadata.
    pub metadata: Vec<u8>,
}

/// What a [`ConnectionHandler`] hands over for the requester: descriptors
/// (at most [`MAX_INTRODUCTION_FDS`]) and metadata (at most
/// [`MAX_METADATA_LEN`] bytes). The client sends them and closes its copies
/// of the descriptors.
#[derive(Debug, Default)]
pub struct Endpoint {
    /// Descriptors for the requester.
    pub fds: Vec<OwnedFd>,
    /// Opaque bytes for the requester.
    pub metadata: Vec<u8>,
}

/// A successful introduction: the target's descriptors and metadata.
#[derive(Debug)]
pub struct Introduction {
    /// The child we are now connected to.
    pub peer: PeerId,
    /// The descriptors it created for us (close-on-exec).
    pub fds: Vec<OwnedFd>,
    /// Its metadata.
    pub metadata: Vec<u8>,
}

/// Creates connections for other children; registered by a service with
/// [`ClientBuilder::handler`]. Returning `Err(reason)` fails the
/// introduction with [`ConnectError::TargetFailed`] (the reason is cut to
/// [`MAX_TEXT_LEN`](crate::message::MAX_TEXT_LEN) bytes).
///
/// Any `FnMut(ConnectionRequest) -> Result<Endpoint, String> + Send` is a
/// handler.
pub trait ConnectionHandler: Send + 'static {
    /// Creates a connection for `request.requester`.
    fn create_connection(&mut self, request: ConnectionRequest) -> Result<Endpoint, String>;
}

impl<F> ConnectionHandler for F
where
    F: FnMut(ConnectionRequest) -> Result<Endpoint, String> + Send + 'static,
{
    fn create_connection(&mut self, request: ConnectionRequest) -> Result<Endpoint, String> {
        self(request)
    }
}

/// Something that happened to the child's relations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A child we were introduced to (either way) left the broker.
    PeerGone(PeerId),
    /// The broker channel is closed: `error` is `None` if the broker hung up
    /// (exited, was killed), or what was wrong with what it sent.
    BrokerGone {
        /// The protocol error, if that is why the channel was closed.
        error: Option<String>,
    },
}

/// Why a [`BrokerClient`] could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No usable bootstrap channel.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// The broker did not say `Hello` in time.
    #[error("the broker did not say Hello in time")]
    HelloTimedOut,
    /// The broker's first message was not a valid `Hello`.
    #[error("bad Hello from the broker: {0}")]
    BadHello(String),
    /// The broker hung up before saying `Hello`.
    #[error("the broker hung up before saying Hello")]
    BrokerGone,
    /// The reader thread could not be started, or the channel failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Why [`BrokerClient::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The broker's policy does not allow it.
    #[error("denied by the broker's policy")]
    Denied,
    /// No child provides that service.
    #[error("unknown service")]
    UnknownService,
    /// The target refused or failed to create the connection.
    #[error("the target failed: {0}")]
    TargetFailed(String),
    /// The target exited or left before answering.
    #[error("the target is gone")]
    TargetGone,
    /// No answer in time (ours, or the broker's introduction timeout).
    #[error("timed out")]
    TimedOut,
    /// Too many of our introductions are in flight at the broker.
    #[error("too many introductions in flight")]
    Busy,
    /// The target has too many introductions in flight (from everyone, or
    /// from us) or cannot take more requests right now; nothing was created.
    /// Retrying later (after a pause) may succeed.
    #[error("the target is busy; try again later")]
    TargetBusy,
    /// The broker is gone (or was cut off for a protocol error).
    #[error("the broker is gone")]
    BrokerGone,
    /// The request itself is invalid (service name, metadata size, or called
    /// from the reader thread, where it would deadlock).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A system error on the broker channel.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<ConnectFailure> for ConnectError {
    fn from(failure: ConnectFailure) -> Self {
        match failure {
            ConnectFailure::UnknownService => ConnectError::UnknownService,
            ConnectFailure::TargetFailed(reason) => ConnectError::TargetFailed(reason),
            ConnectFailure::TargetGone => ConnectError::TargetGone,
            ConnectFailure::TimedOut => ConnectError::TimedOut,
            ConnectFailure::Busy => ConnectError::Busy,
            ConnectFailure::TargetBusy => ConnectError::TargetBusy,
        }
    }
}

type Reply = Result<Introduction, ConnectError>;

struct Shared {
    channel: Channel,
    identity: PeerId,
    state: Mutex<State>,
}

struct State {
    next_request: u64,
    /// One slot per connect in flight, removed by whoever finishes first
    /// (the reader delivering, or the caller timing out).
    waiting: HashMap<u64, SyncSender<Reply>>,
    gone: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn deliver(&self, request: u64, reply: Reply) {
        let waiter = self.state().waiting.remove(&request);
        if let Some(waiter) = waiter {
            // Capacity 1 and one reply per request: never full. If the
            // caller is gone the reply (and its descriptors) is dropped.
            let _ = waiter.try_send(reply);
        }
        // No waiter: a late reply to a connect that timed out; dropping it
        // closes its descriptors.
    }
}

/// Configures a [`BrokerClient`].
#[must_use]
pub struct ClientBuilder {
    handler: Option<Box<dyn ConnectionHandler>>,
    on_event: Option<Box<dyn FnMut(ClientEvent) + Send>>,
    hello_timeout: Duration,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("handler", &self.handler.is_some())
            .field("on_event", &self.on_event.is_some())
            .field("hello_timeout", &self.hello_timeout)
            .finish()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            handler: None,
            on_event: None,
            hello_timeout: DEFAULT_HELLO_TIMEOUT,
        }
    }
}

impl ClientBuilder {
    /// Serves connections: `handler` answers create-connection requests.
    /// Without one, every request is answered with a failure.
    pub fn handler(mut self, handler: impl ConnectionHandler) -> Self {
        self.handler = Some(Box::new(handler));
        self
    }

    /// Receives [`ClientEvent`]s (on the reader thread).
    pub fn on_event(mut self, on_event: impl FnMut(ClientEvent) + Send + 'static) -> Self {
        self.on_event = Some(Box::new(on_event));
        self
    }

    /// How long to wait for the broker's `Hello` (default 10 s).
    pub fn hello_timeout(mut self, timeout: Duration) -> Self {
        self.hello_timeout = timeout;
        self
    }

    /// Builds the client on the channel inherited from the parent (see
    /// [`bootstrap::channel_from_env`]).
    pub fn from_env(self) -> Result<BrokerClient, ClientError> {
        self.build(bootstrap::channel_from_env()?)
    }

    /// Builds the client on `channel`: waits for the broker's `Hello`, then
    /// starts the reader thread.
    pub fn build(self, mut channel: Channel) -> Result<BrokerClient, ClientError> {
        channel.set_max_fds(MAX_INTRODUCTION_FDS);
        let mut buf = vec![0; MAX_ENCODED_LEN];
        let hello = match channel.recv(&mut buf, Some(self.hello_timeout)) {
            Ok(hello) => hello,
            Err(RecvError::TimedOut) => return Err(ClientError::HelloTimedOut),
            Err(RecvError::Disconnected) => return Err(ClientError::BrokerGone),
            Err(RecvError::Io(e)) => return Err(e.into()),
            Err(e) => return Err(ClientError::BadHello(e.to_string())),
        };
        let identity = match ControlMessage::decode(&buf[..hello.len], hello.fds.len()) {
            Ok(ControlMessage::Hello { you }) => you,
            Ok(other) => {
                return Err(ClientError::BadHello(format!(
                    "expected Hello, got {}",
                    other.kind_name()
                )));
            }
            Err(e) => return Err(ClientError::BadHello(e.to_string())),
        };
        let shared = Arc::new(Shared {
            channel,
            identity,
            state: Mutex::new(State {
                next_request: 1,
                waiting: HashMap::new(),
                gone: false,
            }),
        });
        let reader = Reader {
            shared: shared.clone(),
            buf,
            send_buf: Vec::with_capacity(MAX_ENCODED_LEN),
            handler: self.handler,
            on_event: self.on_event,
        };
        let reader = thread::Builder::new()
            .name("ferry-broker-client".into())
            .spawn(move || reader.run())?;
        Ok(BrokerClient {
            shared,
            reader: Some(reader),
        })
    }
}

/// A child's connection to its broker. `Send + Sync`: share it (e.g. in an
/// `Arc`) and call [`connect`](Self::connect) from any thread.
///
/// Dropping it closes the broker channel — the broker then treats this child
/// as gone (its peers receive `PeerGone`) — and joins the reader thread.
pub struct BrokerClient {
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for BrokerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerClient")
            .field("identity", &self.shared.identity)
            .finish_non_exhaustive()
    }
}

impl BrokerClient {
    /// A builder, to register a handler or an event callback.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client on the inherited channel, with no handler and no event
    /// callback.
    pub fn from_env() -> Result<BrokerClient, ClientError> {
        ClientBuilder::default().from_env()
    }

    /// Who the broker says we are.
    pub fn identity(&self) -> &PeerId {
        &self.shared.identity
    }

    /// Whether the broker channel is still open.
    pub fn is_broker_alive(&self) -> bool {
        !self.shared.state().gone
    }

    /// Asks the broker to introduce us to a child of `service`, passing it
    /// `metadata`; waits at most `timeout` for the descriptors.
    pub fn connect(
        &self,
        service: &str,
        metadata: &[u8],
        timeout: Duration,
    ) -> Result<Introduction, ConnectError> {
        if !message::validate_service_name(service) {
            return Err(ConnectError::InvalidRequest(format!(
                "invalid service name {service:?}"
            )));
        }
        if metadata.len() > MAX_METADATA_LEN {
            return Err(ConnectError::InvalidRequest(format!(
                "{} bytes of metadata (at most {MAX_METADATA_LEN})",
                metadata.len()
            )));
        }
        if self
            .reader
            .as_ref()
            .is_some_and(|r| r.thread().id() == thread::current().id())
        {
            return Err(ConnectError::InvalidRequest(
                "connect from the client's reader thread (a handler or event callback) would deadlock"
                    .into(),
            ));
        }
        let deadline = Deadline::after(Some(timeout));
        let (tx, rx) = mpsc::sync_channel(1);
        let request = {
            let mut state = self.shared.state();
            if state.gone {
                return Err(ConnectError::BrokerGone);
            }
            let request = state.next_request;
            state.next_request += 1;
            state.waiting.insert(request, tx);
            request
        };
        let mut bytes = Vec::with_capacity(64 + service.len() + metadata.len());
        let ask = ControlMessage::Connect {
            request,
            service: service.to_owned(),
            metadata: metadata.to_vec(),
        };
        let sent = match ask.encode(0, &mut bytes) {
            Ok(()) => self
                .shared
                .channel
                .send_timeout(&bytes, &[], deadline.remaining().unwrap_or(timeout))
                .map_err(|e| match e {
                    SendError::TimedOut | SendError::WouldBlock => ConnectError::TimedOut,
                    SendError::Disconnected => ConnectError::BrokerGone,
                    SendError::Io(e) => ConnectError::Io(e),
                    other => ConnectError::InvalidRequest(other.to_string()),
                }),
            Err(e) => Err(ConnectError::InvalidRequest(e.to_string())),
        };
        if let Err(e) = sent {
            self.shared.state().waiting.remove(&request);
            return Err(e);
        }
        match rx.recv_timeout(deadline.remaining().unwrap_or(Duration::MAX)) {
            Ok(reply) => reply,
            Err(RecvTimeoutError::Timeout) => {
                self.shared.state().waiting.remove(&request);
                // The reply may have slipped in before we withdrew.
                rx.try_recv().unwrap_or(Err(ConnectError::TimedOut))
            }
            Err(RecvTimeoutError::Disconnected) => Err(ConnectError::BrokerGone),
        }
    }
}

impl BrokerClient {
    /// Reports to the broker that `peer` (a child we were introduced to,
    /// either way) sent us garbage. The broker's
    /// [`ReportPolicy`](crate::ReportPolicy) decides what becomes of it;
    /// nothing is answered. `reason` is cut to
    /// [`MAX_TEXT_LEN`](crate::message::MAX_TEXT_LEN) bytes. Waits at most
    /// `timeout` for room in the broker channel.
    ///
    /// The broker trusts a report no more than anything else a child sends:
    /// accusing a child we were never introduced to gets *us* cut off, and
    /// reports beyond [`BrokerConfig::max_reports_per_child`](crate::BrokerConfig::max_reports_per_child)
    /// are ignored.
    pub fn report(
        &self,
        peer: &PeerId,
        reason: &str,
        timeout: Duration,
    ) -> Result<(), ConnectError> {
        if self.shared.state().gone {
            return Err(ConnectError::BrokerGone);
        }
        let report = ControlMessage::Report {
            peer: peer.clone(),
            reason: message::truncate_text(reason.to_owned()),
        };
        let mut bytes = Vec::with_capacity(128 + reason.len().min(message::MAX_TEXT_LEN));
        report
            .encode(0, &mut bytes)
            .map_err(|e| ConnectError::InvalidRequest(e.to_string()))?;
        self.shared
            .channel
            .send_timeout(&bytes, &[], timeout)
            .map_err(|e| match e {
                SendError::TimedOut | SendError::WouldBlock => ConnectError::TimedOut,
                SendError::Disconnected => ConnectError::BrokerGone,
                SendError::Io(e) => ConnectError::Io(e),
                other => ConnectError::InvalidRequest(other.to_string()),
            })
    }
}

impl Drop for BrokerClient {
    fn drop(&mut self) {
        // Wakes the reader (it sees end-of-stream) and tells the broker.
        let _ = self.shared.channel.shutdown();
        if let Some(reader) = self.reader.take() {
            // Joining ourselves would deadlock (the last reference dropped
            // from a handler or callback): let the thread finish alone.
            if reader.thread().id() != thread::current().id() {
                let _ = reader.join();
            }
        }
    }
}

/// The reader thread's state.
struct Reader {
    shared: Arc<Shared>,
    buf: Vec<u8>,
    send_buf: Vec<u8>,
    handler: Option<Box<dyn ConnectionHandler>>,
    on_event: Option<Box<dyn FnMut(ClientEvent) + Send>>,
}

impl Reader {
    fn run(mut self) {
        let error = loop {
            match self.step() {
                Ok(()) => {}
                Err(error) => break error,
            }
        };
        // Close our end: if we are leaving for a protocol error the broker
        // sees us go.
        let _ = self.shared.channel.shutdown();
        let waiting = {
            let mut state = self.shared.state();
            state.gone = true;
            std::mem::take(&mut state.waiting)
        };
        for waiter in waiting.into_values() {
            let _ = waiter.try_send(Err(ConnectError::BrokerGone));
        }
        self.emit(ClientEvent::BrokerGone { error });
    }

    fn emit(&mut self, event: ClientEvent) {
        if let Some(on_event) = self.on_event.as_mut() {
            on_event(event);
        }
    }

    /// Handles one message. `Err(None)`: the broker hung up;
    /// `Err(Some(e))`: it broke the protocol.
    fn step(&mut self) -> Result<(), Option<String>> {
        let received = match self.shared.channel.recv(&mut self.buf, None) {
            Ok(received) => received,
            Err(RecvError::Disconnected) => return Err(None),
            Err(RecvError::TimedOut) => return Ok(()),
            Err(e) => return Err(Some(format!("bad control packet from the broker: {e}"))),
        };
        let msg = ControlMessage::decode(&self.buf[..received.len], received.fds.len())
            .map_err(|e| Some(format!("malformed control message from the broker: {e}")))?;
        match msg {
            ControlMessage::CreateConnection {
                request,
                requester,
                metadata,
            } => self.create_connection(
                request,
                ConnectionRequest {
                    requester,
                    metadata,
                },
            ),
            ControlMessage::Connected {
                request,
                peer,
                metadata,
            } => {
                let introduction = Introduction {
                    peer,
                    fds: received.fds,
                    metadata,
                };
                self.shared.deliver(request, Ok(introduction));
                Ok(())
            }
            ControlMessage::ConnectFailed { request, failure } => {
                self.shared.deliver(request, Err(failure.into()));
                Ok(())
            }
            ControlMessage::Denied { request } => {
                self.shared.deliver(request, Err(ConnectError::Denied));
                Ok(())
            }
            ControlMessage::PeerGone { peer } => {
                self.emit(ClientEvent::PeerGone(peer));
                Ok(())
            }
            other => Err(Some(format!(
                "the broker sent {}, which it never sends to a running child",
                other.kind_name()
            ))),
        }
    }

    fn create_connection(
        &mut self,
        request: u64,
        ask: ConnectionRequest,
    ) -> Result<(), Option<String>> {
        let answer = match self.handler.as_mut() {
            Some(handler) => handler.create_connection(ask),
            None => Err("this process accepts no connections".to_owned()),
        };
        let (reply, fds) = match answer {
            Ok(endpoint)
                if endpoint.fds.len() <= MAX_INTRODUCTION_FDS
                    && endpoint.metadata.len() <= MAX_METADATA_LEN =>
            {
                let reply = ControlMessage::ConnectionCreated {
                    request,
                    metadata: endpoint.metadata,
                };
                (reply, endpoint.fds)
            }
            Ok(endpoint) => {
                let reason = format!(
                    "the handler produced {} descriptors and {} bytes of metadata \
                     (at most {MAX_INTRODUCTION_FDS} and {MAX_METADATA_LEN})",
                    endpoint.fds.len(),
                    endpoint.metadata.len()
                );
                (ControlMessage::CreateFailed { request, reason }, Vec::new())
            }
            Err(reason) => {
                let reason = message::truncate_text(reason);
                (ControlMessage::CreateFailed { request, reason }, Vec::new())
            }
        };
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        reply
            .encode(fds.len(), &mut self.send_buf)
            .map_err(|e| Some(format!("cannot encode an answer: {e}")))?;
        match self
            .shared
            .channel
            .send_timeout(&self.send_buf, &borrowed, ANSWER_TIMEOUT)
        {
            Ok(()) => Ok(()),
            Err(SendError::Disconnected) => Err(None),
            Err(e) => Err(Some(format!("cannot answer the broker: {e}"))),
        }
        // `fds` drops here: our copies of the requester's end are closed.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::InstanceId;
    use std::sync::mpsc::Receiver;

    const T: Duration = Duration::from_secs(5);

    fn me() -> PeerId {
        PeerId {
            service: "web".into(),
            instance: InstanceId(2),
        }
    }

    fn send(channel: &Channel, msg: &ControlMessage, fds: &[BorrowedFd<'_>]) {
        let mut bytes = Vec::new();
        msg.encode(fds.len(), &mut bytes).unwrap();
        channel.send(&bytes, fds).unwrap();
    }

    fn recv(channel: &Channel) -> (ControlMessage, Vec<OwnedFd>) {
        let mut buf = vec![0; MAX_ENCODED_LEN];
        let got = channel.recv(&mut buf, Some(T)).unwrap();
        (
            ControlMessage::decode(&buf[..got.len], got.fds.len()).unwrap(),
            got.fds,
        )
    }

    /// A client on an in-process pair, the other end playing the broker.
    fn client(builder: ClientBuilder) -> (BrokerClient, Channel, Receiver<ClientEvent>) {
        let (ours, broker) = Channel::pair().unwrap();
        send(&broker, &ControlMessage::Hello { you: me() }, &[]);
        let (tx, rx) = mpsc::channel();
        let client = builder
            .on_event(move |e| {
                let _ = tx.send(e);
            })
            .build(ours)
            .unwrap();
        (client, broker, rx)
    }

    #[test]
    fn hello_gives_the_identity() {
        let (client, _broker, _events) = client(BrokerClient::builder());
        assert_eq!(client.identity(), &me());
        assert!(client.is_broker_alive());
    }

    #[test]
    fn a_bad_hello_is_refused() {
        let (ours, broker) = Channel::pair().unwrap();
        send(&broker, &ControlMessage::Denied { request: 1 }, &[]);
        assert!(matches!(
            BrokerClient::builder().build(ours),
            Err(ClientError::BadHello(_))
        ));
        let (ours, _broker) = Channel::pair().unwrap();
        assert!(matches!(
            BrokerClient::builder()
                .hello_timeout(Duration::from_millis(10))
                .build(ours),
            Err(ClientError::HelloTimedOut)
        ));
    }

    #[test]
    fn replies_are_routed_by_request_id() {
        let (client, broker, _events) = client(BrokerClient::builder());
        let client = Arc::new(client);
        let waiters: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|service| {
                let client = client.clone();
                thread::spawn(move || client.connect(service, service.as_bytes(), T))
            })
            .collect();
        let mut requests = HashMap::new();
        for _ in 0..2 {
            match recv(&broker).0 {
                ControlMessage::Connect {
                    request,
                    service,
                    metadata,
                } => {
                    assert_eq!(service.as_bytes(), metadata);
                    requests.insert(service, request);
                }
                other => panic!("{other:?}"),
            }
        }
        // Answer in the other order: "b" is denied, "a" connected with a
        // descriptor.
        send(
            &broker,
            &ControlMessage::Denied {
                request: requests["b"],
            },
            &[],
        );
        let (x, _y) = Channel::pair().unwrap();
        let peer = PeerId {
            service: "a".into(),
            instance: InstanceId(9),
        };
        send(
            &broker,
            &ControlMessage::Connected {
                request: requests["a"],
                peer: peer.clone(),
                metadata: b"meta".to_vec(),
            },
            &[x.as_fd()],
        );
        let mut results = waiters.into_iter().map(|w| w.join().unwrap());
        let a = results.next().unwrap().unwrap();
        assert_eq!(
            (a.peer, a.fds.len(), a.metadata),
            (peer, 1, b"meta".to_vec())
        );
        assert!(matches!(results.next().unwrap(), Err(ConnectError::Denied)));
    }

    #[test]
    fn failures_map_to_errors_and_timeouts_are_bounded() {
        let (client, broker, _events) = client(BrokerClient::builder());
        let client = Arc::new(client);
        for (failure, check) in [
            (ConnectFailure::UnknownService, "UnknownService"),
            (ConnectFailure::TargetGone, "TargetGone"),
            (ConnectFailure::TimedOut, "TimedOut"),
            (ConnectFailure::Busy, "Busy"),
            (
                ConnectFailure::TargetFailed("nope".into()),
                "TargetFailed(\"nope\")",
            ),
        ] {
            let c = client.clone();
            let waiter = thread::spawn(move || c.connect("net", b"", T));
            let ControlMessage::Connect { request, .. } = recv(&broker).0 else {
                panic!()
            };
            send(
                &broker,
                &ControlMessage::ConnectFailed { request, failure },
                &[],
            );
            let err = waiter.join().unwrap().unwrap_err();
            assert_eq!(format!("{err:?}"), check);
        }
        // No answer at all: our own timeout.
        let started = std::time::Instant::now();
        assert!(matches!(
            client.connect("net", b"", Duration::from_millis(50)),
            Err(ConnectError::TimedOut)
        ));
        assert!(started.elapsed() < T);
        // Invalid requests never reach the broker.
        assert!(matches!(
            client.connect("bad name", b"", T),
            Err(ConnectError::InvalidRequest(_))
        ));
        assert!(matches!(
            client.connect("net", &vec![0; MAX_METADATA_LEN + 1], T),
            Err(ConnectError::InvalidRequest(_))
        ));
    }

    #[test]
    fn the_handler_answers_create_connection() {
        let (tx, rx) = mpsc::channel();
        let builder = BrokerClient::builder().handler(move |req: ConnectionRequest| {
            let _ = tx.send(req.requester.clone());
            if req.metadata == b"fail" {
                return Err("refused".to_owned());
            }
            let (a, b) = Channel::pair().map_err(|e| e.to_string())?;
            drop(b);
            Ok(Endpoint {
                fds: vec![a.into()],
                metadata: req.metadata,
            })
        });
        let (_client, broker, _events) = client(builder);
        let requester = PeerId {
            service: "asker".into(),
            instance: InstanceId(5),
        };
        send(
            &broker,
            &ControlMessage::CreateConnection {
                request: 77,
                requester: requester.clone(),
                metadata: b"hi".to_vec(),
            },
            &[],
        );
        match recv(&broker) {
            (
                ControlMessage::ConnectionCreated {
                    request: 77,
                    metadata,
                },
                fds,
            ) => {
                assert_eq!(metadata, b"hi");
                assert_eq!(fds.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(rx.recv_timeout(T).unwrap(), requester);
        send(
            &broker,
            &ControlMessage::CreateConnection {
                request: 78,
                requester,
                metadata: b"fail".to_vec(),
            },
            &[],
        );
        assert_eq!(
            recv(&broker).0,
            ControlMessage::CreateFailed {
                request: 78,
                reason: "refused".into()
            }
        );
    }

    #[test]
    fn without_a_handler_requests_fail() {
        let (_client, broker, _events) = client(BrokerClient::builder());
        send(
            &broker,
            &ControlMessage::CreateConnection {
                request: 1,
                requester: me(),
                metadata: vec![],
            },
            &[],
        );
        assert!(matches!(
            recv(&broker).0,
            ControlMessage::CreateFailed { request: 1, .. }
        ));
    }

    #[test]
    fn peer_gone_and_broker_gone_are_reported() {
        let (client, broker, events) = client(BrokerClient::builder());
        let gone = PeerId {
            service: "net".into(),
            instance: InstanceId(1),
        };
        send(
            &broker,
            &ControlMessage::PeerGone { peer: gone.clone() },
            &[],
        );
        assert_eq!(events.recv_timeout(T).unwrap(), ClientEvent::PeerGone(gone));
        let client = Arc::new(client);
        let c = client.clone();
        let waiter = thread::spawn(move || c.connect("net", b"", Duration::from_secs(30)));
        let _ = recv(&broker);
        drop(broker);
        assert!(matches!(
            waiter.join().unwrap(),
            Err(ConnectError::BrokerGone)
        ));
        assert_eq!(
            events.recv_timeout(T).unwrap(),
            ClientEvent::BrokerGone { error: None }
        );
        assert!(!client.is_broker_alive());
        assert!(matches!(
            client.connect("net", b"", T),
            Err(ConnectError::BrokerGone)
        ));
    }

    #[test]
    fn a_malformed_message_from_the_broker_closes_the_channel() {
        for garbage in [&b"\x01\xff"[..], b"\x07\x01", b"\x01\x08\x01"] {
            let (client, broker, events) = client(BrokerClient::builder());
            broker.send(garbage, &[]).unwrap();
            match events.recv_timeout(T).unwrap() {
                ClientEvent::BrokerGone { error: Some(_) } => {}
                other => panic!("{other:?}"),
            }
            assert!(broker.wait_hangup(Some(T)).unwrap(), "the client hung up");
            assert!(matches!(
                client.connect("net", b"", T),
                Err(ConnectError::BrokerGone)
            ));
        }
        // A message only children send is a protocol error too.
        let (_client, broker, events) = client(BrokerClient::builder());
        send(&broker, &ControlMessage::Hello { you: me() }, &[]);
        assert!(matches!(
            events.recv_timeout(T).unwrap(),
            ClientEvent::BrokerGone { error: Some(_) }
        ));
    }

    #[test]
    fn dropping_the_client_hangs_up() {
        let (client, broker, _events) = client(BrokerClient::builder());
        drop(client);
        assert!(broker.wait_hangup(Some(T)).unwrap());
    }
}
