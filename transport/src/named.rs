//! Connections by name, without a broker: two unrelated processes meet at a
//! filesystem path or a Linux abstract socket name, the way they would
//! with a Unix socket, and get ordinary [`Connection`]s.
//!
//! - The listening side calls [`listen`] and then [`Listener::accept`]; it
//!   checks each connecting process's credentials (uid, gid, pid, and a
//!   pidfd where the kernel gives one) with a rule of its own
//!   ([`Listener::allow`]; by default only processes of our effective user
//!   are let in), creates the connection, and sends the connecting side its
//!   end over the accepted socket.
//! - The connecting side calls [`connect`], which opens that end.
//!
//! Both sides check the other's schema hash, as a broker introduction does:
//! the connecting side announces its hash first and the listener refuses a
//! mismatch before creating anything; the connecting side then checks the
//! listener's hash in the endpoint it receives.
//!
//! # A slow or silent connecting process
//!
//! A process that connects and then says nothing (or dribbles) must not
//! stall `accept` for the others. So `accept` never reads a socket without
//! its own deadline: each accepted socket waits in a set of pending
//! handshakes (at most [`DEFAULT_MAX_HANDSHAKES`], see
//! [`Listener::max_handshakes`], and [`DEFAULT_MAX_HANDSHAKES_PER_USER`] with
//! processes of one user) for at most
//! [`DEFAULT_HANDSHAKE_TIMEOUT`] ([`Listener::handshake_timeout`]); `accept`
//! waits for all of them and for new arrivals at once (one `poll`), and
//! answers whichever is ready. A process refused by the rule, one arriving
//! while the set is full, and one whose hello is malformed or late are
//! dropped (told why where that cannot block), without waiting for them.
//!
//! # Names and who can take them
//!
//! A path listener is protected by its directory's permissions, and the
//! file is removed when the listener is dropped (a stale file left by a
//! crashed listener makes [`listen`] fail: remove it first). An abstract
//! name has no permissions: any process in the network namespace can
//! connect to it, or take it first. The listener's rule protects the
//! listener; a connecting process that must know *who* listens should use a
//! path in a directory only the listener's user can write to.
//!
//! ```
//! use ferry_transport::named::{self, Name};
//! use ferry_transport::ConnectionConfig;
//! use std::time::Duration;
//!
//! let name = Name::abstract_name(format!("ferry-doc-{}", std::process::id()));
//! let mut listener = named::listen(&name, ConnectionConfig::default())?;
//! let server = std::thread::spawn(move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//!     let (mut connection, peer) = listener.accept(Some(Duration::from_secs(5)))?;
//!     assert_eq!(peer.credentials.pid, std::process::id() as i32);
//!     let frame = connection.recv_frame(Some(Duration::from_secs(5)))?;
//!     let reply = frame.bytes().to_ascii_uppercase();
//!     drop(frame);
//!     connection.send_frame(&reply, Some(Duration::from_secs(5)))?;
//!     Ok(())
//! });
//! let mut client = named::connect(&name, ConnectionConfig::default(), Duration::from_secs(5))?;
//! client.send_frame(b"hello", Some(Duration::from_secs(5)))?;
//! assert_eq!(client.recv_frame(Some(Duration::from_secs(5)))?.bytes(), b"HELLO");
//! server.join().unwrap().map_err(|e| e.to_string())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::config::ConnectionConfig;
use crate::connection::Connection;
use crate::endpoint::{ENDPOINT_FDS, Endpoint};
use crate::error::OpenError;
use ferry_handoff::{Channel, SocketError};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use thiserror::Error;

pub use ferry_handoff::PeerCredentials;

/// How long a connecting process has, by default, from the moment it is
/// accepted to the moment its hello has arrived (see
/// [`Listener::handshake_timeout`]).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// How many handshakes a listener has in progress at most by default (see
/// [`Listener::max_handshakes`]).
pub const DEFAULT_MAX_HANDSHAKES: usize = 64;
/// How many of a listener's handshakes in progress may be with processes of
/// one user by default (see [`Listener::max_handshakes_per_user`]).
pub const DEFAULT_MAX_HANDSHAKES_PER_USER: usize = 16;
/// How many new arrivals one round of `accept` takes from the backlog
/// before it reads the hellos that came: a process that connects in a loop
/// cannot keep `accept` from answering the others.
const ARRIVALS_PER_ROUND: usize = 64;

/// The connecting side's hello: magic, then its schema hash.
const HELLO_MAGIC: [u8; 8] = *b"FERRYNH1";
const HELLO_LEN: usize = 16;
/// The listener's answer: magic, a kind byte, then the kind's payload.
const ANSWER_MAGIC: [u8; 8] = *b"FERRYNA1";
/// The largest answer: magic, kind, and an endpoint's metadata (48 bytes).
const MAX_ANSWER_LEN: usize = 128;

/// What the listener answers a hello with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The endpoint follows (metadata in the payload, descriptors attached).
    Endpoint = 0,
    /// The listener's rule refused this process.
    NotAllowed = 1,
    /// Another schema: the listener's hash is the payload.
    SchemaMismatch = 2,
    /// Too many handshakes in progress; try again later.
    Busy = 3,
    /// The listener could not create the connection.
    Failed = 4,
}

impl Answer {
    fn from_byte(byte: u8) -> Option<Answer> {
        [
            Answer::Endpoint,
            Answer::NotAllowed,
            Answer::SchemaMismatch,
            Answer::Busy,
            Answer::Failed,
        ]
        .into_iter()
        .find(|answer| *answer as u8 == byte)
    }

    fn encode(self, payload: &[u8]) -> Vec<u8> {
        let mut out = ANSWER_MAGIC.to_vec();
        out.push(self as u8);
        out.extend_from_slice(payload);
        out
    }
}

/// Where processes meet: a filesystem path or a Linux abstract name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// A socket file at this path (created by [`listen`], removed when the
    /// listener is dropped).
    Path(PathBuf),
    /// A Linux abstract socket name (no file; any process in the network
    /// namespace can reach it).
    Abstract(Vec<u8>),
}

impl Name {
    /// A name at a filesystem path.
    pub fn path(path: impl Into<PathBuf>) -> Name {
        Name::Path(path.into())
    }

    /// An abstract name.
    pub fn abstract_name(name: impl Into<Vec<u8>>) -> Name {
        Name::Abstract(name.into())
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Name::Path(path) => write!(f, "{}", path.display()),
            Name::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
        }
    }
}

/// A connecting process as the kernel identified it when it connected.
#[derive(Debug)]
pub struct Peer {
    /// Its credentials (`SO_PEERCRED`, recorded at `connect`).
    pub credentials: PeerCredentials,
    pidfd: Option<OwnedFd>,
}

impl Peer {
    /// A pidfd for the process (`SO_PEERPIDFD`, or `pidfd_open` on older
    /// kernels), if one could be had: a handle that cannot name a later
    /// process reusing its pid. A rule that inspects the process through
    /// its pid (e.g. `/proc/<pid>/exe`) can check afterwards that this
    /// pidfd still names a live process, so the answer is about the process
    /// that connected.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(AsFd::as_fd)
    }

    /// The pidfd, to keep (e.g. to watch the process exit).
    pub fn into_pidfd(self) -> Option<OwnedFd> {
        self.pidfd
    }

    /// Whether the process runs as our effective user: the default rule.
    pub fn is_same_user(&self) -> bool {
        self.credentials.uid == rustix::process::geteuid().as_raw()
    }
}

/// Why [`listen`] or [`Listener::accept`] failed.
#[derive(Debug, Error)]
pub enum AcceptError {
    /// No connection was made before the timeout (pending handshakes stay
    /// for the next call).
    #[error("no connection before the timeout")]
    TimedOut,
    /// Binding, listening, accepting or waiting failed.
    #[error("listening socket: {0}")]
    Socket(#[from] SocketError),
}

/// Why [`connect`] failed.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// Nobody listens at the name, or the socket could not be reached.
    #[error("cannot reach {name}: {source}")]
    Unreachable {
        /// The name.
        name: String,
        /// Why.
        source: SocketError,
    },
    /// No answer before the timeout.
    #[error("no answer from the listener before the timeout")]
    TimedOut,
    /// The listener's rule refused this process.
    #[error("the listener refused this process")]
    NotAllowed,
    /// The listener speaks another protocol.
    #[error("schema mismatch: the listener has {theirs:#x}, we have {ours:#x}")]
    SchemaMismatch {
        /// Ours.
        ours: u64,
        /// The listener's.
        theirs: u64,
    },
    /// The listener has too many handshakes in progress; retrying later may
    /// succeed.
    #[error("the listener is busy; try again later")]
    Busy,
    /// The listener could not create the connection.
    #[error("the listener failed to create the connection")]
    ListenerFailed,
    /// The listener closed the socket, or answered something that is not a
    /// ferry answer.
    #[error("bad answer from the listener: {0}")]
    BadAnswer(String),
    /// The endpoint received could not be opened.
    #[error("opening the connection failed: {0}")]
    Open(#[from] OpenError),
}

/// A listening name that turns connecting processes into [`Connection`]s.
/// Made by [`listen`]; tune it with the builder methods.
pub struct Listener {
    socket: ferry_handoff::Listener,
    name: Name,
    config: ConnectionConfig,
    rule: Box<dyn FnMut(&Peer) -> bool + Send>,
    handshake_timeout: Duration,
    max_handshakes: usize,
    max_handshakes_per_user: usize,
    handshakes: Vec<Handshake>,
}

/// An accepted socket whose hello has not arrived yet.
struct Handshake {
    channel: Channel,
    peer: Peer,
    deadline: Instant,
}

/// Listens at `name` for processes that [`connect`]; each connection is
/// created with `config` (its `peer_name` becomes the connecting process's
/// pid and uid). Only processes of our effective user are accepted until
/// [`Listener::allow`] says otherwise.
pub fn listen(name: &Name, config: ConnectionConfig) -> Result<Listener, AcceptError> {
    let socket = match name {
        Name::Path(path) => ferry_handoff::Listener::bind(path)?,
        Name::Abstract(name) => ferry_handoff::Listener::bind_abstract(name)?,
    };
    Ok(Listener {
        socket,
        name: name.clone(),
        config,
        rule: Box::new(Peer::is_same_user),
        handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        max_handshakes: DEFAULT_MAX_HANDSHAKES,
        max_handshakes_per_user: DEFAULT_MAX_HANDSHAKES_PER_USER,
        handshakes: Vec::new(),
    })
}

impl Listener {
    /// Lets in exactly the processes `rule` returns `true` for (replacing
    /// the default, [`Peer::is_same_user`]). The rule runs in
    /// [`accept`](Self::accept) as soon as a process has connected, before
    /// it has sent anything and before anything is created for it; a
    /// refused process is told so and dropped.
    pub fn allow(mut self, rule: impl FnMut(&Peer) -> bool + Send + 'static) -> Listener {
        self.rule = Box::new(rule);
        self
    }

    /// How long a connecting process has to send its hello once accepted
    /// (default [`DEFAULT_HANDSHAKE_TIMEOUT`]); later, it is dropped.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Listener {
        self.handshake_timeout = timeout;
        self
    }

    /// How many handshakes may be in progress at once (default
    /// [`DEFAULT_MAX_HANDSHAKES`], at least 1); a process arriving while
    /// that many are is told the listener is busy and dropped. Each
    /// handshake in progress holds two descriptors (the socket and the
    /// process's pidfd) and no other resource.
    pub fn max_handshakes(mut self, max: usize) -> Listener {
        self.max_handshakes = max.max(1);
        self
    }

    /// How many handshakes in progress may be with processes of one user
    /// (default [`DEFAULT_MAX_HANDSHAKES_PER_USER`], at least 1): the users
    /// a rule lets in cannot take each other's turns. (Processes of one
    /// user are not told apart: a user can always run many.)
    pub fn max_handshakes_per_user(mut self, max: usize) -> Listener {
        self.max_handshakes_per_user = max.max(1);
        self
    }

    /// The name this listener listens at.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Waits at most `timeout` (`None`: without limit; `Some(ZERO)`: only
    /// what is ready now) for a process to connect and complete its
    /// handshake, and returns our end of its new connection and who it is.
    /// Refused, silent and malformed connecting processes are dealt with on
    /// the way and never end the call; handshakes still in progress when it
    /// returns are carried over to the next call.
    pub fn accept(&mut self, timeout: Option<Duration>) -> Result<(Connection, Peer), AcceptError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            self.take_arrivals()?;
            if let Some(accepted) = self.advance_handshakes() {
                return Ok(accepted);
            }
            let now = Instant::now();
            if deadline.is_some_and(|at| at <= now) {
                return Err(AcceptError::TimedOut);
            }
            // Wake for a new arrival, a hello, or the first deadline.
            let wake = self
                .handshakes
                .iter()
                .map(|h| h.deadline)
                .chain(deadline)
                .min();
            self.wait(wake.map(|at| at.saturating_duration_since(now)))?;
        }
    }

    /// Takes the processes waiting in the backlog (at most
    /// [`ARRIVALS_PER_ROUND`]): the rule and the bounds on handshakes
    /// decide, at once, without reading from them.
    fn take_arrivals(&mut self) -> Result<(), AcceptError> {
        for _ in 0..ARRIVALS_PER_ROUND {
            let channel = match self.socket.accept(Some(Duration::ZERO)) {
                Ok(channel) => channel,
                Err(SocketError::TimedOut) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            // The process may be gone already; then there is nothing to do.
            let Ok(credentials) = channel.peer_credentials() else {
                continue;
            };
            let peer = Peer {
                credentials,
                pidfd: channel.peer_pidfd().ok(),
            };
            if !(self.rule)(&peer) {
                refuse(&channel, Answer::NotAllowed);
                continue;
            }
            let same_user = self
                .handshakes
                .iter()
                .filter(|h| h.peer.credentials.uid == peer.credentials.uid)
                .count();
            if self.handshakes.len() >= self.max_handshakes
                || same_user >= self.max_handshakes_per_user
            {
                refuse(&channel, Answer::Busy);
                continue;
            }
            let mut channel = channel;
            // A hello carries no descriptors: any that come are closed.
            channel.set_max_fds(0);
            self.handshakes.push(Handshake {
                channel,
                peer,
                deadline: Instant::now() + self.handshake_timeout,
            });
        }
        Ok(())
    }

    /// Reads every hello that has arrived (without waiting), drops the
    /// handshakes that failed or ran out of time, and returns the first
    /// connection made.
    fn advance_handshakes(&mut self) -> Option<(Connection, Peer)> {
        let now = Instant::now();
        let mut index = 0;
        while index < self.handshakes.len() {
            let mut buf = [0u8; HELLO_LEN];
            let outcome = match self.handshakes[index].channel.try_recv(&mut buf) {
                Ok(None) if self.handshakes[index].deadline > now => {
                    index += 1;
                    continue;
                }
                // Silent past its deadline.
                Ok(None) => None,
                Ok(Some(received)) => Some(&buf[..received.len]),
                // Hung up, oversized, carried descriptors: nothing to answer.
                Err(_) => None,
            };
            let Handshake { channel, peer, .. } = self.handshakes.swap_remove(index);
            if let Some(hello) = outcome {
                if let Some(connection) = self.answer(&channel, &peer, hello) {
                    return Some((connection, peer));
                }
            }
        }
        None
    }

    /// Answers one hello: the endpoint of a new connection, or why not.
    fn answer(&self, channel: &Channel, peer: &Peer, hello: &[u8]) -> Option<Connection> {
        let (magic, schema) = hello.split_at_checked(HELLO_MAGIC.len())?;
        if magic != HELLO_MAGIC {
            return None;
        }
        let theirs = u64::from_le_bytes(schema.try_into().ok()?);
        if theirs != self.config.schema {
            refuse_with(
                channel,
                Answer::SchemaMismatch,
                &self.config.schema.to_le_bytes(),
            );
            return None;
        }
        let config = self.config.clone().peer_name(format!(
            "pid {} (uid {})",
            peer.credentials.pid, peer.credentials.uid
        ));
        let Ok((connection, endpoint)) = Connection::create(config) else {
            refuse(channel, Answer::Failed);
            return None;
        };
        let fds: Vec<BorrowedFd<'_>> = endpoint.fds.iter().map(AsFd::as_fd).collect();
        // A fresh socket has room for this small message; the peer cannot
        // shrink our buffer (it holds the other end, not this one). If it
        // does not fit anyway, the handshake fails rather than waits.
        match channel.try_send(&Answer::Endpoint.encode(&endpoint.metadata), &fds) {
            Ok(()) => Some(connection),
            Err(_) => None,
        }
        // `endpoint` drops here: the connecting process holds the only
        // copies of its descriptors.
    }

    /// Waits (at most `timeout`) until the backlog or a handshake socket
    /// is readable.
    fn wait(&self, timeout: Option<Duration>) -> Result<(), AcceptError> {
        let mut fds: Vec<PollFd<'_>> = std::iter::once(self.socket.as_fd())
            .chain(self.handshakes.iter().map(|h| h.channel.as_fd()))
            .map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::IN))
            .collect();
        let timeout = timeout.map(|t| Timespec {
            tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: t.subsec_nanos().into(),
        });
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            // Woken, timed out or interrupted: the caller looks again.
            Ok(_) | Err(Errno::INTR) => Ok(()),
            Err(e) => Err(SocketError::Io(e.into()).into()),
        }
    }
}

/// Tells a connecting process why it is dropped, if that fits without
/// waiting.
fn refuse(channel: &Channel, answer: Answer) {
    refuse_with(channel, answer, &[]);
}

fn refuse_with(channel: &Channel, answer: Answer, payload: &[u8]) {
    let _ = channel.try_send(&answer.encode(payload), &[]);
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("name", &self.name)
            .field("schema", &self.config.schema)
            .field("handshakes", &self.handshakes.len())
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_handshakes", &self.max_handshakes)
            .field("max_handshakes_per_user", &self.max_handshakes_per_user)
            .finish()
    }
}

/// Connects to the [`Listener`] at `name` and opens the connection it
/// creates for us, waiting at most `timeout` in all (for room in its
/// backlog, for its answer). Our `config.schema` must equal the listener's;
/// the connection's `peer_name` becomes the name.
pub fn connect(
    name: &Name,
    mut config: ConnectionConfig,
    timeout: Duration,
) -> Result<Connection, ConnectError> {
    let deadline = Instant::now().checked_add(timeout);
    let left = || deadline.map_or(timeout, |at| at.saturating_duration_since(Instant::now()));
    let unreachable = |source| ConnectError::Unreachable {
        name: name.to_string(),
        source,
    };
    let mut channel = match name {
        Name::Path(path) => Channel::connect_timeout(path, left()),
        Name::Abstract(abstract_name) => Channel::connect_abstract_timeout(abstract_name, left()),
    }
    .map_err(unreachable)?;
    channel.set_max_fds(ENDPOINT_FDS);
    let mut hello = HELLO_MAGIC.to_vec();
    hello.extend_from_slice(&config.schema.to_le_bytes());
    match channel.send_timeout(&hello, &[], left()) {
        Ok(()) => {}
        Err(ferry_handoff::SendError::TimedOut) => return Err(ConnectError::TimedOut),
        // Refused at once: its answer is waiting.
        Err(ferry_handoff::SendError::Disconnected) => {}
        Err(e) => return Err(ConnectError::BadAnswer(format!("sending the hello: {e}"))),
    }
    let mut buf = [0u8; MAX_ANSWER_LEN];
    let received = match channel.recv(&mut buf, Some(left())) {
        Ok(received) => received,
        Err(ferry_handoff::RecvError::TimedOut) => return Err(ConnectError::TimedOut),
        Err(e) => return Err(ConnectError::BadAnswer(e.to_string())),
    };
    let answer = &buf[..received.len];
    let bad = || ConnectError::BadAnswer(format!("{} bytes", answer.len()));
    let (magic, rest) = answer
        .split_at_checked(ANSWER_MAGIC.len())
        .ok_or_else(bad)?;
    let (&kind, payload) = rest.split_first().ok_or_else(bad)?;
    if magic != ANSWER_MAGIC {
        return Err(bad());
    }
    match Answer::from_byte(kind).ok_or_else(bad)? {
        Answer::Endpoint => {}
        Answer::NotAllowed => return Err(ConnectError::NotAllowed),
        Answer::SchemaMismatch => {
            let theirs = u64::from_le_bytes(payload.try_into().map_err(|_| bad())?);
            return Err(ConnectError::SchemaMismatch {
                ours: config.schema,
                theirs,
            });
        }
        Answer::Busy => return Err(ConnectError::Busy),
        Answer::Failed => return Err(ConnectError::ListenerFailed),
    }
    config.peer_name = name.to_string();
    let endpoint = Endpoint {
        fds: received.fds,
        metadata: payload.to_vec(),
    };
    Ok(Connection::open(endpoint, config)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    fn unique(tag: &str) -> Name {
        Name::abstract_name(format!(
            "ferry-named-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ))
    }

    /// The listener back, and what its `accept` returned.
    type AcceptOutcome = (Listener, Result<(Connection, Peer), AcceptError>);

    /// Runs `accept` on a thread until it returns, with `listener`.
    fn accept_on_thread(
        mut listener: Listener,
        timeout: Duration,
    ) -> std::thread::JoinHandle<AcceptOutcome> {
        std::thread::spawn(move || {
            let accepted = listener.accept(Some(timeout));
            (listener, accepted)
        })
    }

    #[test]
    #[cfg_attr(miri, ignore = "listening sockets: miri has none")]
    fn a_schema_mismatch_is_refused_before_anything_is_created() {
        let name = unique("schema");
        let listener = listen(&name, ConnectionConfig::default().schema(1)).unwrap();
        let server = accept_on_thread(listener, Duration::from_millis(500));
        match connect(&name, ConnectionConfig::default().schema(2), T) {
            Err(ConnectError::SchemaMismatch { ours: 2, theirs: 1 }) => {}
            other => panic!("expected a schema mismatch, got {other:?}"),
        }
        let (_, accepted) = server.join().unwrap();
        assert!(matches!(accepted, Err(AcceptError::TimedOut)));
    }

    #[test]
    #[cfg_attr(miri, ignore = "listening sockets: miri has none")]
    fn a_malformed_hello_is_dropped_and_others_still_connect() {
        let name = unique("garbage");
        let Name::Abstract(raw) = &name else {
            unreachable!()
        };
        let listener = listen(&name, ConnectionConfig::default()).unwrap();
        let garbage = Channel::connect_abstract(raw).unwrap();
        garbage.send(b"GARBAGE!GARBAGE!", &[]).unwrap();
        let server = accept_on_thread(listener, T);
        let mut client = connect(&name, ConnectionConfig::default(), T).unwrap();
        let (_, accepted) = server.join().unwrap();
        let (mut connection, peer) = accepted.unwrap();
        assert_eq!(peer.credentials.pid, std::process::id() as i32);
        assert!(peer.pidfd().is_some());
        // The garbage sender was dropped, unanswered.
        assert!(garbage.wait_hangup(Some(T)).unwrap());
        client.send_frame(b"x", Some(T)).unwrap();
        assert_eq!(connection.recv_frame(Some(T)).unwrap().bytes(), b"x");
    }

    #[test]
    #[cfg_attr(miri, ignore = "listening sockets: miri has none")]
    fn a_full_handshake_set_answers_busy() {
        let name = unique("busy");
        let Name::Abstract(raw) = &name else {
            unreachable!()
        };
        let mut listener = listen(&name, ConnectionConfig::default())
            .unwrap()
            .max_handshakes(1)
            .handshake_timeout(T);
        let _silent = Channel::connect_abstract(raw).unwrap();
        assert!(matches!(
            listener.accept(Some(Duration::ZERO)),
            Err(AcceptError::TimedOut)
        ));
        let server = accept_on_thread(listener, Duration::from_millis(500));
        match connect(&name, ConnectionConfig::default(), T) {
            Err(ConnectError::Busy) => {}
            other => panic!("expected Busy, got {other:?}"),
        }
        let (listener, _) = server.join().unwrap();
        assert_eq!(listener.handshakes.len(), 1);
    }

    #[test]
    #[cfg_attr(miri, ignore = "listening sockets: miri has none")]
    fn one_user_gets_at_most_its_share_of_the_handshakes() {
        let name = unique("per-user");
        let Name::Abstract(raw) = &name else {
            unreachable!()
        };
        let mut listener = listen(&name, ConnectionConfig::default())
            .unwrap()
            .max_handshakes_per_user(2)
            .handshake_timeout(T);
        let _silent: Vec<Channel> = (0..2)
            .map(|_| Channel::connect_abstract(raw).unwrap())
            .collect();
        assert!(matches!(
            listener.accept(Some(Duration::ZERO)),
            Err(AcceptError::TimedOut)
        ));
        let server = accept_on_thread(listener, Duration::from_millis(500));
        match connect(&name, ConnectionConfig::default(), T) {
            Err(ConnectError::Busy) => {}
            other => panic!("expected Busy, got {other:?}"),
        }
        let (listener, _) = server.join().unwrap();
        assert_eq!(listener.handshakes.len(), 2);
    }

    #[test]
    #[cfg_attr(miri, ignore = "listening sockets: miri has none")]
    fn a_refused_process_hears_not_allowed() {
        let name = unique("rule");
        let listener = listen(&name, ConnectionConfig::default())
            .unwrap()
            .allow(|peer| !peer.is_same_user());
        let server = accept_on_thread(listener, Duration::from_millis(500));
        match connect(&name, ConnectionConfig::default(), T) {
            Err(ConnectError::NotAllowed) => {}
            other => panic!("expected NotAllowed, got {other:?}"),
        }
        let (listener, accepted) = server.join().unwrap();
        assert!(matches!(accepted, Err(AcceptError::TimedOut)));
        assert!(listener.handshakes.is_empty());
    }

    #[test]
    #[cfg_attr(miri, ignore = "listening sockets: miri has none")]
    fn nobody_listening_is_unreachable() {
        match connect(&unique("nobody"), ConnectionConfig::default(), T) {
            Err(ConnectError::Unreachable { .. }) => {}
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }
}
