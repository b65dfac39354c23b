//! The descriptor an endpoint waiting in an event loop is signalled through.
//!
//! One `AF_UNIX` `SOCK_DGRAM` socketpair serves a pair of endpoints in both
//! directions: each side holds one end. Sending one byte on our own end makes
//! the peer's end readable (a signal to the peer); our own end is the
//! descriptor our event loop watches, and receiving drains it.
//!
//! Why a socketpair and not an eventfd: a peer shares the open file
//! description of every descriptor exchanged with it, so it can clear
//! `O_NONBLOCK` on it (`fcntl`) and fill an eventfd's counter; a plain
//! `write` or `read` on that eventfd would then block forever. Every call here
//! carries its own non-blocking flag instead (`MSG_DONTWAIT`), which no
//! `fcntl` of the peer can take away; and no call here waits on anything the
//! peer controls. A full receive queue on the peer's side makes `send` fail
//! with `EAGAIN`, which means "already signalled".

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use thiserror::Error;

/// How many datagrams [`Notifier::clear`] receives at most per call: a peer
/// that floods the socket cannot keep us draining it; what is left merely
/// makes the descriptor readable again, as a spurious wake-up would.
pub const MAX_DRAINED_PER_CLEAR: usize = 64;

/// One end of the notification socketpair of two endpoints.
///
/// ```
/// use ferry_ring::Notifier;
/// # #[cfg(not(miri))] { // miri cannot create sockets
/// let (ours, theirs) = Notifier::pair().unwrap();
/// ours.signal(); // makes `theirs` readable
/// theirs.clear(); // and empties it again
/// # }
/// ```
#[derive(Debug)]
pub struct Notifier {
    socket: OwnedFd,
}

/// Why a received descriptor was refused as a notification descriptor.
#[derive(Debug, Error)]
pub enum NotifierError {
    /// Not a socket at all (a pipe, an eventfd, a file...).
    #[error("the notification descriptor is not a socket")]
    NotASocket,
    /// A socket of another family than `AF_UNIX`.
    #[error("the notification descriptor is a socket of family {0}, not AF_UNIX")]
    WrongFamily(u32),
    /// A stream, seqpacket or other socket instead of a datagram one.
    #[error("the notification descriptor is a socket of type {0}, not SOCK_DGRAM")]
    WrongType(u32),
    /// The descriptor could not be inspected.
    #[error("inspecting the notification descriptor: {0}")]
    Io(#[from] io::Error),
}

/// The kind of socket [`Notifier::pair`] makes: datagrams, so each signal
/// is one message and a full queue simply means "already signalled".
#[cfg(not(miri))]
const PAIR_SOCKET_TYPE: rustix::net::SocketType = rustix::net::SocketType::DGRAM;

/// Under miri, which only has `SOCK_STREAM` socketpairs (on which `send`,
/// `recv` and `shutdown` fail with ENOTSOCK, so signalling does nothing):
/// no test under miri uses event-loop readiness; the multi-process suites
/// exercise the real socket.
#[cfg(miri)]
const PAIR_SOCKET_TYPE: rustix::net::SocketType = rustix::net::SocketType::STREAM;

impl Notifier {
    /// Both ends of a fresh socketpair (close-on-exec, non-blocking): keep
    /// one, send the other to the peer.
    pub fn pair() -> io::Result<(Notifier, Notifier)> {
        use rustix::net::{AddressFamily, SocketFlags, socketpair};
        let (a, b) = socketpair(
            AddressFamily::UNIX,
            PAIR_SOCKET_TYPE,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        Ok((Notifier { socket: a }, Notifier { socket: b }))
    }

    /// Takes a descriptor a possibly hostile peer handed us as our end,
    /// after checking that it is an `AF_UNIX` `SOCK_DGRAM` socket: anything
    /// else (a full blocking pipe, an eventfd, a stream socket) could block
    /// or misbehave in ways the calls here do not guard against.
    ///
    /// Its `O_NONBLOCK` flag is irrelevant (every call passes
    /// `MSG_DONTWAIT`), so it is neither checked nor changed.
    pub fn from_received(fd: OwnedFd) -> Result<Notifier, NotifierError> {
        use rustix::net::{AddressFamily, SocketType, sockopt};
        let kind = match sockopt::socket_type(&fd) {
            Ok(kind) => kind,
            Err(rustix::io::Errno::NOTSOCK) => return Err(NotifierError::NotASocket),
            Err(e) => return Err(NotifierError::Io(e.into())),
        };
        let family = sockopt::socket_domain(&fd).map_err(io::Error::from)?;
        if family != AddressFamily::UNIX {
            return Err(NotifierError::WrongFamily(u32::from(family.as_raw())));
        }
        if kind != SocketType::DGRAM {
            return Err(NotifierError::WrongType(kind.as_raw()));
        }
        Ok(Notifier { socket: fd })
    }

    /// Signals the peer: makes its end readable. Never blocks. A full queue
    /// (`EAGAIN`, `ENOBUFS`) means the peer's end is readable already; any
    /// other failure (the peer closed its end, shut it down) leaves nobody
    /// to signal. Either way there is nothing to do, so nothing is returned.
    pub fn signal(&self) {
        use rustix::net::{SendFlags, send};
        let _ = send(
            &self.socket,
            &[1],
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        );
    }

    /// Empties our end after it became readable: receives up to
    /// [`MAX_DRAINED_PER_CLEAR`] datagrams, never blocking.
    pub fn clear(&self) {
        use rustix::net::{RecvFlags, recv};
        let mut byte = [0u8; 1];
        for _ in 0..MAX_DRAINED_PER_CLEAR {
            // A datagram of any size (the rest of it is discarded), even an
            // empty one, counts as drained; `Ok` is also the end-of-file of a
            // socket shut down for reading, which stays readable anyway, and
            // the bound ends that loop. EAGAIN (empty) or any other error:
            // nothing more to drain now.
            if recv(&self.socket, &mut byte, RecvFlags::DONTWAIT).is_err() {
                return;
            }
        }
    }

    /// Makes our own end readable for good, with no I/O the peer could
    /// block: `shutdown(SHUT_RD)` of our socket. For a connection whose peer
    /// is gone, so that an event loop watching this end wakes up and finds
    /// out; the hang-up watcher calls it.
    pub fn set_readable_forever(&self) {
        // Cannot block; the only failures (ENOTCONN on a socket the creator
        // never connected) leave nothing to do.
        let _ = rustix::net::shutdown(&self.socket, rustix::net::Shutdown::Read);
    }

    /// A second handle on the same end.
    pub fn try_clone(&self) -> io::Result<Notifier> {
        Ok(Notifier {
            socket: self.socket.try_clone()?,
        })
    }

    /// Gives up the descriptor (for sending it to the peer).
    pub fn into_fd(self) -> OwnedFd {
        self.socket
    }
}

impl AsFd for Notifier {
    /// Our end: readable when the peer signalled us.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
