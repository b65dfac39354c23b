//! [`Channel`]: a `SOCK_SEQPACKET` Unix socket that carries bounded messages
//! together with descriptors.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::event::PollFlags;
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, Shutdown, SocketFlags, SocketType,
};

use crate::credentials;
pub use crate::credentials::PeerCredentials;
use crate::pidfd::{self, PidfdError};
use crate::wait::{self, Deadline};

/// The most descriptors one message can carry (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS_PER_MESSAGE: usize = 253;
/// The descriptor limit of a new channel; see [`Channel::set_max_fds`].
pub const DEFAULT_MAX_FDS: usize = 16;
/// The largest message [`Channel::send`] accepts, in bytes.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// How long a waiting send pauses when `poll` reports room the message does
/// not fit in.
const SEND_RETRY_PAUSE: Duration = Duration::from_millis(1);

/// The kind of socket [`Channel::pair`] makes: `SOCK_SEQPACKET`.
#[cfg(not(miri))]
const PAIR_SOCKET_TYPE: SocketType = SocketType::SEQPACKET;

/// Under miri, which only has `SOCK_STREAM` socketpairs (and no
/// `sendmsg`/`recvmsg` at all), a stream pair. Such a channel can only tell
/// that its peer hung up (the hang-up watcher and `Drop` work on it); any
/// message sent on it needs `sendmsg`, which miri refuses outright, so no
/// test can pass under miri while relying on message boundaries. The real
/// channel is exercised by the multi-process suites.
#[cfg(miri)]
const PAIR_SOCKET_TYPE: SocketType = SocketType::STREAM;

/// Room for `SCM_RIGHTS` with [`MAX_FDS_PER_MESSAGE`] descriptors.
const CONTROL_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE));

/// One end of a `SOCK_SEQPACKET` Unix socket.
///
/// Messages keep their boundaries and a message's descriptors arrive with
/// it. The socket is always close-on-exec, and so is every received
/// descriptor (`MSG_CMSG_CLOEXEC`). A received message is bounded by the
/// caller's buffer and by [`max_fds`](Self::max_fds): anything larger is an
/// error, and descriptors that arrived with a rejected message are closed
/// before the error is returned.
///
/// All methods take `&self`: one thread may receive while others send (each
/// message is sent atomically). The channel is an ordinary descriptor
/// ([`AsFd`]), so it can sit in `poll`/`epoll`; poll for `POLLIN` to receive
/// and for `POLLRDHUP`/`POLLHUP` to learn that the peer is gone.
///
/// # A peer may share this end's open file description
///
/// Whoever else holds a copy of *this* end (a process it was passed to with
/// `SCM_RIGHTS`, a forked child, the creator of a socketpair it was handed
/// by) shares its open file description, and with it the `O_NONBLOCK` flag
/// and socket options: it can make the socket blocking behind our back. So
/// no method here relies on that flag. Every `sendmsg`/`recvmsg` is made
/// with `MSG_DONTWAIT`, and waiting (for room, for a message, with or
/// without a timeout) happens in `poll`. Whether [`send`](Self::send) waits
/// is this channel's own setting ([`set_nonblocking`](Self::set_nonblocking)),
/// kept in this process.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
    max_fds: usize,
    /// Whether [`send`](Self::send) returns instead of waiting for room;
    /// ours, not the file's `O_NONBLOCK`, which a sharer can change.
    nonblocking: AtomicBool,
}

/// A received message: its length in the caller's buffer, and the
/// descriptors that came with it (owned, close-on-exec).
#[derive(Debug)]
pub struct Received {
    /// Bytes written to the start of the buffer.
    pub len: usize,
    /// Descriptors that came with the message.
    pub fds: Vec<OwnedFd>,
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The message is empty: an empty packet is indistinguishable from
    /// end-of-stream on the receiving side, so it is never sent.
    #[error("refusing to send an empty message")]
    Empty,
    /// The message is larger than [`MAX_MESSAGE_LEN`] (or than the socket
    /// buffer).
    #[error("message of {len} bytes is too large (at most {MAX_MESSAGE_LEN})")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// More than [`MAX_FDS_PER_MESSAGE`] descriptors.
    #[error("{count} descriptors in one message (at most {MAX_FDS_PER_MESSAGE})")]
    TooManyDescriptors {
        /// How many were given.
        count: usize,
    },
    /// The peer has closed its end.
    #[error("peer disconnected")]
    Disconnected,
    /// The socket buffer is full and the send was not allowed to wait.
    #[error("socket buffer full")]
    WouldBlock,
    /// The socket buffer stayed full until the timeout.
    #[error("timed out waiting for room in the socket buffer")]
    TimedOut,
    /// Any other system error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Why a message could not be received.
///
/// After any error other than [`TimedOut`](Self::TimedOut) the offending
/// message (if any) is consumed and its descriptors closed. Callers that
/// speak a protocol treat every error but `TimedOut` as the end of the
/// channel.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// The peer has closed its end (end-of-stream).
    #[error("peer disconnected")]
    Disconnected,
    /// Nothing arrived before the timeout.
    #[error("timed out waiting for a message")]
    TimedOut,
    /// The message did not fit the buffer (`MSG_TRUNC`).
    #[error("message larger than the {capacity}-byte buffer")]
    Truncated {
        /// The buffer's size.
        capacity: usize,
    },
    /// More descriptors arrived than this channel accepts, or the control
    /// data was truncated (`MSG_CTRUNC`); all of them were closed.
    #[error("message carried more than {max} descriptors")]
    TooManyDescriptors {
        /// The channel's limit.
        max: usize,
    },
    /// An empty packet arrived while the peer is still connected; this crate
    /// never sends one.
    #[error("empty message")]
    EmptyMessage,
    /// Any other system error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Why a socket could not be created, bound, connected or accepted.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// No connection arrived before the timeout.
    #[error("timed out")]
    TimedOut,
    /// A system error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Why a descriptor is not a channel.
#[derive(Debug, thiserror::Error)]
pub enum SocketKindError {
    /// Not a socket at all.
    #[error("not a socket")]
    NotASocket,
    /// A socket, but not an `AF_UNIX` `SOCK_SEQPACKET` one.
    #[error("not a SOCK_SEQPACKET Unix socket")]
    WrongKind,
    /// The checks themselves failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Channel {
    /// A connected pair of channels (`socketpair`, close-on-exec). Under
    /// miri, a stream pair that only carries hang-ups (miri has neither
    /// `SOCK_SEQPACKET` pairs nor `sendmsg`).
    pub fn pair() -> Result<(Channel, Channel), SocketError> {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            PAIR_SOCKET_TYPE,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(io::Error::from)?;
        Ok((Channel::from(a), Channel::from(b)))
    }

    /// Wraps `fd` after checking that it is an `AF_UNIX` `SOCK_SEQPACKET`
    /// socket. Use this for sockets that came from elsewhere (another
    /// process, the environment); [`From<OwnedFd>`] does not check.
    pub fn from_checked(fd: OwnedFd) -> Result<Channel, SocketKindError> {
        check_seqpacket(fd.as_fd())?;
        Ok(Channel::from(fd))
    }

    /// The most descriptors one received message may carry.
    pub fn max_fds(&self) -> usize {
        self.max_fds
    }

    /// Sets the most descriptors one received message may carry (capped at
    /// [`MAX_FDS_PER_MESSAGE`]). A message with more is rejected with
    /// [`RecvError::TooManyDescriptors`] and its descriptors closed. The
    /// receive buffer for control data is sized from this, so the kernel
    /// installs at most a few more than `max` descriptors before we close
    /// them.
    pub fn set_max_fds(&mut self, max: usize) {
        self.max_fds = max.min(MAX_FDS_PER_MESSAGE);
    }

    /// Sends one message with `fds` attached. A blocking channel (the
    /// default) waits for room for as long as it takes (the peer's hang-up
    /// ends the wait with [`SendError::Disconnected`]); a non-blocking one
    /// (see [`set_nonblocking`](Self::set_nonblocking)) returns
    /// [`SendError::WouldBlock`] instead. Either way the system call itself
    /// never blocks, whatever the file's `O_NONBLOCK` flag says.
    pub fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), SendError> {
        if self.nonblocking.load(Ordering::Relaxed) {
            self.try_send(bytes, fds)
        } else {
            self.send_until(bytes, fds, Deadline::after(None))
        }
    }

    /// Sends one message without waiting: [`SendError::WouldBlock`] if the
    /// socket buffer is full.
    pub fn try_send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), SendError> {
        self.send_dontwait(bytes, fds)
    }

    /// Sends one message, waiting at most `timeout` for room.
    pub fn send_timeout(
        &self,
        bytes: &[u8],
        fds: &[BorrowedFd<'_>],
        timeout: Duration,
    ) -> Result<(), SendError> {
        self.send_until(bytes, fds, Deadline::after(Some(timeout)))
    }

    /// Tries to send, and waits in `poll` for room until `deadline`.
    fn send_until(
        &self,
        bytes: &[u8],
        fds: &[BorrowedFd<'_>],
        deadline: Deadline,
    ) -> Result<(), SendError> {
        let mut polled_writable = false;
        loop {
            match self.try_send(bytes, fds) {
                Err(SendError::WouldBlock) => {}
                other => return other,
            }
            if polled_writable {
                // `poll` said there was room, yet the message did not fit
                // (it needs more than the half buffer `poll` promises, e.g.
                // after a sharer shrank SO_SNDBUF): do not spin on it.
                let pause = SEND_RETRY_PAUSE.min(deadline.remaining().unwrap_or(SEND_RETRY_PAUSE));
                std::thread::sleep(pause);
            }
            match wait::poll_one(self.fd.as_fd(), PollFlags::OUT, deadline)? {
                None => return Err(SendError::TimedOut),
                Some(revents) => polled_writable = revents.contains(PollFlags::OUT),
            }
        }
    }

    /// One `sendmsg` with `MSG_DONTWAIT`: the only send this type makes.
    fn send_dontwait(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), SendError> {
        if bytes.is_empty() {
            return Err(SendError::Empty);
        }
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(SendError::TooLarge { len: bytes.len() });
        }
        if fds.len() > MAX_FDS_PER_MESSAGE {
            return Err(SendError::TooManyDescriptors { count: fds.len() });
        }
        let mut space = [MaybeUninit::<u8>::uninit(); CONTROL_SPACE];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            // Cannot happen: the buffer is sized for MAX_FDS_PER_MESSAGE.
            return Err(SendError::TooManyDescriptors { count: fds.len() });
        }
        let iov = [IoSlice::new(bytes)];
        loop {
            // NOSIGNAL: a dead peer is an error, not a SIGPIPE. DONTWAIT: per
            // call, whatever the (shared) file's O_NONBLOCK flag says.
            let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
            match rustix::net::sendmsg(&self.fd, &iov, &mut control, flags) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::other(format!(
                        "short send on a SOCK_SEQPACKET socket: {n} of {} bytes",
                        bytes.len()
                    ))
                    .into());
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return Err(SendError::WouldBlock),
                Err(Errno::PIPE | Errno::CONNRESET | Errno::NOTCONN | Errno::CONNREFUSED) => {
                    return Err(SendError::Disconnected);
                }
                Err(Errno::MSGSIZE) => return Err(SendError::TooLarge { len: bytes.len() }),
                Err(e) => return Err(io::Error::from(e).into()),
            }
        }
    }

    /// Receives one message into `buf`, waiting at most `timeout` (`None`:
    /// until a message arrives or the peer hangs up).
    pub fn recv(&self, buf: &mut [u8], timeout: Option<Duration>) -> Result<Received, RecvError> {
        let deadline = Deadline::after(timeout);
        loop {
            if let Some(received) = self.try_recv(buf)? {
                return Ok(received);
            }
            if wait::poll_one(self.fd.as_fd(), PollFlags::IN, deadline)?.is_none() {
                return Err(RecvError::TimedOut);
            }
        }
    }

    /// Receives one message if one is queued, without waiting.
    pub fn try_recv(&self, buf: &mut [u8]) -> Result<Option<Received>, RecvError> {
        let mut space = [MaybeUninit::<u8>::uninit(); CONTROL_SPACE];
        // Offer the kernel only room for `max_fds` (plus alignment slack), so
        // a peer cannot make us install hundreds of descriptors.
        let room = rustix::cmsg_space!(ScmRights(self.max_fds)).min(CONTROL_SPACE);
        let mut control = RecvAncillaryBuffer::new(&mut space[..room]);
        let mut iov = [IoSliceMut::new(buf)];
        let flags = RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC;
        let msg = loop {
            match rustix::net::recvmsg(&self.fd, &mut iov, &mut control, flags) {
                Ok(msg) => break msg,
                // A peer that died with unread data reports ECONNRESET once,
                // *before* the messages it sent us; read on: end-of-stream
                // follows them.
                Err(Errno::INTR | Errno::CONNRESET) => {}
                Err(Errno::AGAIN) => return Ok(None),
                Err(Errno::NOTCONN | Errno::PIPE) => return Err(RecvError::Disconnected),
                Err(e) => return Err(io::Error::from(e).into()),
            }
        };
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        // Every early return below drops `fds`, closing what arrived.
        if msg.flags.contains(ReturnFlags::CTRUNC) || fds.len() > self.max_fds {
            return Err(RecvError::TooManyDescriptors { max: self.max_fds });
        }
        if msg.flags.contains(ReturnFlags::TRUNC) {
            return Err(RecvError::Truncated {
                capacity: iov[0].len(),
            });
        }
        if msg.bytes == 0 {
            // End-of-stream, or an empty packet from a peer that is still
            // there (which this crate never sends).
            return Err(if self.is_hung_up()? {
                RecvError::Disconnected
            } else {
                RecvError::EmptyMessage
            });
        }
        Ok(Some(Received {
            len: msg.bytes,
            fds,
        }))
    }

    /// Makes the channel non-blocking (or blocking again): only
    /// [`send`](Self::send) changes, returning [`SendError::WouldBlock`]
    /// instead of waiting for room. [`recv`](Self::recv),
    /// [`try_recv`](Self::try_recv), [`try_send`](Self::try_send) and
    /// [`send_timeout`](Self::send_timeout) behave the same either way. The
    /// setting is kept in this process; the file's `O_NONBLOCK` flag is set
    /// too, for code that uses the raw descriptor, but this type never relies
    /// on it (see the [type's documentation](Channel)).
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        rustix::io::ioctl_fionbio(&self.fd, nonblocking)?;
        self.nonblocking.store(nonblocking, Ordering::Relaxed);
        Ok(())
    }

    /// Waits until the peer hangs up, without consuming messages. Returns
    /// `true` if it did, `false` if the timeout passed first. Queued messages
    /// do not end the wait.
    pub fn wait_hangup(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let revents = wait::poll_one(self.fd.as_fd(), PollFlags::RDHUP, Deadline::after(timeout))?;
        Ok(revents
            .is_some_and(|r| r.intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR)))
    }

    /// Whether the peer has hung up (does not wait).
    pub fn is_hung_up(&self) -> io::Result<bool> {
        self.wait_hangup(Some(Duration::ZERO))
    }

    /// Shuts both directions down: the peer sees end-of-stream and a thread
    /// blocked in [`recv`](Self::recv) on this end wakes with
    /// [`RecvError::Disconnected`], while the descriptor stays open.
    pub fn shutdown(&self) -> io::Result<()> {
        match rustix::net::shutdown(&self.fd, Shutdown::Both) {
            Ok(()) | Err(Errno::NOTCONN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The peer's credentials (`SO_PEERCRED`); see [`PeerCredentials`] for
    /// what they mean on a socketpair.
    pub fn peer_credentials(&self) -> io::Result<PeerCredentials> {
        credentials::peer_credentials(self.fd.as_fd())
    }

    /// A pidfd for the peer process: `SO_PEERPIDFD` (Linux 6.5+, race-free),
    /// else `pidfd_open` on the `SO_PEERCRED` pid (Linux 5.3+; racy if the
    /// peer has already exited and its pid was reused), else
    /// [`PidfdError::Unsupported`]. Same caveat as
    /// [`peer_credentials`](Self::peer_credentials) for socketpairs.
    pub fn peer_pidfd(&self) -> Result<OwnedFd, PidfdError> {
        pidfd::peer_pidfd(self.fd.as_fd())
    }
}

/// Checks that `fd` is an `AF_UNIX` `SOCK_SEQPACKET` socket.
pub(crate) fn check_seqpacket(fd: BorrowedFd<'_>) -> Result<(), SocketKindError> {
    let stat = rustix::fs::fstat(fd).map_err(io::Error::from)?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
        return Err(SocketKindError::NotASocket);
    }
    let domain = rustix::net::sockopt::socket_domain(fd).map_err(io::Error::from)?;
    let kind = rustix::net::sockopt::socket_type(fd).map_err(io::Error::from)?;
    if domain != AddressFamily::UNIX || kind != SocketType::SEQPACKET {
        return Err(SocketKindError::WrongKind);
    }
    Ok(())
}

impl From<OwnedFd> for Channel {
    /// Wraps a descriptor without checking it; see
    /// [`Channel::from_checked`].
    fn from(fd: OwnedFd) -> Self {
        Channel {
            fd,
            max_fds: DEFAULT_MAX_FDS,
            nonblocking: AtomicBool::new(false),
        }
    }
}

impl From<Channel> for OwnedFd {
    fn from(channel: Channel) -> Self {
        channel.fd
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::FdFlags;

    const T: Option<Duration> = Some(Duration::from_secs(5));

    /// A socketpair used as a "probe": send one end, drop ours, and the other
    /// end sees POLLHUP exactly when every copy of the sent end is closed.
    fn probe() -> (OwnedFd, Channel) {
        let (a, b) = Channel::pair().unwrap();
        (a.into(), b)
    }

    #[test]
    fn bytes_and_descriptors_arrive_together() {
        let (a, b) = Channel::pair().unwrap();
        let (x, y) = Channel::pair().unwrap();
        a.send(b"hello", &[x.as_fd()]).unwrap();
        let mut buf = [0u8; 64];
        let got = b.recv(&mut buf, T).unwrap();
        assert_eq!(&buf[..got.len], b"hello");
        assert_eq!(got.fds.len(), 1);
        let flags = rustix::io::fcntl_getfd(&got.fds[0]).unwrap();
        assert!(
            flags.contains(FdFlags::CLOEXEC),
            "received descriptors are CLOEXEC"
        );
        assert!(
            rustix::io::fcntl_getfd(&a)
                .unwrap()
                .contains(FdFlags::CLOEXEC)
        );
        // The received descriptor is the same socket.
        let x2 = Channel::from(got.fds.into_iter().next().unwrap());
        x2.send(b"via copy", &[]).unwrap();
        let got = y.recv(&mut buf, T).unwrap();
        assert_eq!(&buf[..got.len], b"via copy");
        drop(x);
    }

    #[test]
    fn boundaries_are_kept() {
        let (a, b) = Channel::pair().unwrap();
        a.send(b"one", &[]).unwrap();
        a.send(b"two!", &[]).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(b.recv(&mut buf, T).unwrap().len, 3);
        assert_eq!(b.recv(&mut buf, T).unwrap().len, 4);
    }

    #[test]
    fn timeout_and_try_recv() {
        let (_a, b) = Channel::pair().unwrap();
        let mut buf = [0u8; 8];
        assert!(b.try_recv(&mut buf).unwrap().is_none());
        let start = std::time::Instant::now();
        assert!(matches!(
            b.recv(&mut buf, Some(Duration::from_millis(20))),
            Err(RecvError::TimedOut)
        ));
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn hang_up_is_disconnected_after_queued_messages() {
        let (a, b) = Channel::pair().unwrap();
        a.send(b"last words", &[]).unwrap();
        // Leave unread data on a's side too, so the kernel reports
        // ECONNRESET first.
        b.send(b"unread", &[]).unwrap();
        drop(a);
        assert!(b.wait_hangup(T).unwrap());
        let mut buf = [0u8; 64];
        let got = b.recv(&mut buf, T).unwrap();
        assert_eq!(&buf[..got.len], b"last words");
        assert!(matches!(b.recv(&mut buf, T), Err(RecvError::Disconnected)));
        assert!(matches!(b.recv(&mut buf, T), Err(RecvError::Disconnected)));
        assert!(matches!(b.send(b"x", &[]), Err(SendError::Disconnected)));
    }

    #[test]
    fn wait_hangup_does_not_consume_and_times_out() {
        let (a, b) = Channel::pair().unwrap();
        a.send(b"queued", &[]).unwrap();
        assert!(!b.wait_hangup(Some(Duration::from_millis(10))).unwrap());
        assert!(!b.is_hung_up().unwrap());
        drop(a);
        assert!(b.is_hung_up().unwrap());
        let mut buf = [0u8; 64];
        assert_eq!(b.recv(&mut buf, T).unwrap().len, 6);
    }

    #[test]
    fn shutdown_wakes_a_blocked_receiver() {
        let (_a, b) = Channel::pair().unwrap();
        let b = std::sync::Arc::new(b);
        let b2 = b.clone();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 8];
            b2.recv(&mut buf, Some(Duration::from_secs(10))).map(|_| ())
        });
        std::thread::sleep(Duration::from_millis(20));
        b.shutdown().unwrap();
        assert!(matches!(t.join().unwrap(), Err(RecvError::Disconnected)));
    }

    #[test]
    fn truncated_data_is_an_error_and_closes_its_descriptors() {
        let (a, b) = Channel::pair().unwrap();
        let (sent, watch) = probe();
        a.send(&[7u8; 100], &[sent.as_fd()]).unwrap();
        drop(sent);
        let mut small = [0u8; 10];
        assert!(matches!(
            b.recv(&mut small, T),
            Err(RecvError::Truncated { capacity: 10 })
        ));
        assert!(watch.wait_hangup(T).unwrap(), "the descriptor was closed");
        // The channel still works for the next message.
        a.send(b"ok", &[]).unwrap();
        assert_eq!(b.recv(&mut small, T).unwrap().len, 2);
    }

    #[test]
    fn too_many_descriptors_is_an_error_and_leaks_nothing() {
        let (a, mut b) = Channel::pair().unwrap();
        b.set_max_fds(2);
        // 3: fits the control buffer's alignment slack (no MSG_CTRUNC) but
        // exceeds the limit; 5 and MAX_FDS_PER_MESSAGE: MSG_CTRUNC.
        for count in [3, 5, MAX_FDS_PER_MESSAGE] {
            let (sent, watch) = probe();
            let copies: Vec<OwnedFd> = (0..count)
                .map(|_| rustix::io::dup(&sent).unwrap())
                .collect();
            let borrowed: Vec<BorrowedFd<'_>> = copies.iter().map(|f| f.as_fd()).collect();
            a.send(b"fds", &borrowed).unwrap();
            drop((sent, copies));
            let mut buf = [0u8; 8];
            assert!(
                matches!(
                    b.recv(&mut buf, T),
                    Err(RecvError::TooManyDescriptors { max: 2 })
                ),
                "{count} descriptors"
            );
            assert!(
                watch.wait_hangup(T).unwrap(),
                "every received copy was closed ({count} descriptors)"
            );
        }
        // Within the limit is fine.
        let (x, _y) = probe();
        a.send(b"fds", &[x.as_fd(), x.as_fd()]).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(b.recv(&mut buf, T).unwrap().fds.len(), 2);
    }

    #[test]
    fn send_bounds() {
        let (a, _b) = Channel::pair().unwrap();
        assert!(matches!(a.send(b"", &[]), Err(SendError::Empty)));
        assert!(matches!(
            a.send(&vec![0; MAX_MESSAGE_LEN + 1], &[]),
            Err(SendError::TooLarge { .. })
        ));
        let fds: Vec<BorrowedFd<'_>> = (0..=MAX_FDS_PER_MESSAGE).map(|_| a.as_fd()).collect();
        assert!(matches!(
            a.send(b"x", &fds),
            Err(SendError::TooManyDescriptors { .. })
        ));
    }

    #[test]
    fn full_buffer_would_block_then_times_out() {
        let (a, _b) = Channel::pair().unwrap();
        let chunk = vec![1u8; 32 * 1024];
        let mut sent = 0;
        loop {
            match a.try_send(&chunk, &[]) {
                Ok(()) => sent += 1,
                Err(SendError::WouldBlock) => break,
                Err(e) => panic!("{e}"),
            }
            assert!(sent < 10_000, "the socket buffer never filled");
        }
        assert!(matches!(
            a.send_timeout(&chunk, &[], Duration::from_millis(20)),
            Err(SendError::TimedOut)
        ));
    }

    #[test]
    fn empty_packet_from_a_live_peer_is_not_end_of_stream() {
        let (a, b) = Channel::pair().unwrap();
        // Bypass Channel::send, which refuses empty messages.
        rustix::net::send(&a, b"", SendFlags::NOSIGNAL).unwrap();
        let mut buf = [0u8; 8];
        assert!(matches!(b.recv(&mut buf, T), Err(RecvError::EmptyMessage)));
    }

    #[test]
    fn nonblocking_channel_in_poll() {
        let (a, b) = Channel::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        a.send(b"ping", &[]).unwrap();
        let revents = wait::poll_one(b.as_fd(), PollFlags::IN, Deadline::after(T))
            .unwrap()
            .unwrap();
        assert!(revents.contains(PollFlags::IN));
        let mut buf = [0u8; 8];
        assert_eq!(b.try_recv(&mut buf).unwrap().unwrap().len, 4);
        assert!(b.try_recv(&mut buf).unwrap().is_none());
    }

    #[test]
    fn credentials_and_pidfd_of_the_peer() {
        let (a, _b) = Channel::pair().unwrap();
        let cred = a.peer_credentials().unwrap();
        assert_eq!(cred.pid, std::process::id() as i32);
        assert_eq!(cred.uid, rustix::process::getuid().as_raw());
        assert_eq!(cred.gid, rustix::process::getgid().as_raw());
        match a.peer_pidfd() {
            Ok(pidfd) => {
                assert!(
                    rustix::io::fcntl_getfd(&pidfd)
                        .unwrap()
                        .contains(FdFlags::CLOEXEC)
                );
                // A pidfd of a live process is not readable.
                let r = wait::poll_one(
                    pidfd.as_fd(),
                    PollFlags::IN,
                    Deadline::after(Some(Duration::ZERO)),
                )
                .unwrap();
                assert!(r.is_none());
            }
            Err(PidfdError::Unsupported) => eprintln!("pidfds unsupported on this kernel"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn checked_conversion() {
        let (a, _b) = Channel::pair().unwrap();
        assert!(Channel::from_checked(a.into()).is_ok());
        let (r, _w) = rustix::pipe::pipe().unwrap();
        assert!(matches!(
            Channel::from_checked(r),
            Err(SocketKindError::NotASocket)
        ));
        let (s, _t) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        assert!(matches!(
            Channel::from_checked(s),
            Err(SocketKindError::WrongKind)
        ));
    }
}
