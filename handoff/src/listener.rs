//! Named channels for unrelated processes: a [`Listener`] at a filesystem
//! path or an abstract name, and [`Channel::connect`] /
//! [`Channel::connect_abstract`].
//!
//! The broker flow does not need these (children inherit their channel, see
//! [`bootstrap`](crate::bootstrap)); they are for processes that do not share
//! a parent. Check [`Channel::peer_credentials`] / [`Channel::peer_pidfd`] on
//! accepted channels: anyone who can reach the name can connect.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::event::PollFlags;
use rustix::io::Errno;
use rustix::net::sockopt::Timeout;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::channel::{Channel, SocketError};
use crate::wait::{self, Deadline};

/// The listen backlog.
const BACKLOG: i32 = 64;

/// A listening `SOCK_SEQPACKET` Unix socket (close-on-exec, non-blocking:
/// it can sit in `poll`/`epoll`, where readable means a connection is
/// waiting).
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    /// The path to unlink on drop, for path listeners.
    path: Option<PathBuf>,
}

fn seqpacket_socket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

impl Listener {
    /// Listens at a filesystem path (which must not exist). The path is
    /// removed when the listener is dropped.
    pub fn bind(path: impl AsRef<Path>) -> Result<Listener, SocketError> {
        let path = path.as_ref();
        let addr = SocketAddrUnix::new(path).map_err(io::Error::from)?;
        let mut listener = Listener::bind_addr(&addr)?;
        listener.path = Some(path.to_owned());
        Ok(listener)
    }

    /// Listens at a Linux abstract socket name (no filesystem entry; gone
    /// when the socket closes). Any process in the same network namespace
    /// can connect.
    pub fn bind_abstract(name: &[u8]) -> Result<Listener, SocketError> {
        let addr = SocketAddrUnix::new_abstract_name(name).map_err(io::Error::from)?;
        Listener::bind_addr(&addr)
    }

    fn bind_addr(addr: &SocketAddrUnix) -> Result<Listener, SocketError> {
        let fd = seqpacket_socket()?;
        // Always non-blocking: `accept` waits in `poll`, with its timeout.
        rustix::io::ioctl_fionbio(&fd, true).map_err(io::Error::from)?;
        rustix::net::bind(&fd, addr).map_err(io::Error::from)?;
        rustix::net::listen(&fd, BACKLOG).map_err(io::Error::from)?;
        Ok(Listener { fd, path: None })
    }

    /// Accepts one connection, waiting at most `timeout` (`None`: forever;
    /// `Some(Duration::ZERO)`: only if one is already waiting). The accepted
    /// channel is close-on-exec and blocking.
    pub fn accept(&self, timeout: Option<Duration>) -> Result<Channel, SocketError> {
        let deadline = Deadline::after(timeout);
        loop {
            match rustix::net::accept_with(&self.fd, SocketFlags::CLOEXEC) {
                Ok(fd) => return Ok(Channel::from(fd)),
                // The connection went away before we took it, or no
                // connection yet: wait.
                Err(Errno::AGAIN | Errno::INTR | Errno::CONNABORTED) => {}
                Err(e) => return Err(io::Error::from(e).into()),
            }
            if wait::poll_one(self.fd.as_fd(), PollFlags::IN, deadline)?.is_none() {
                return Err(SocketError::TimedOut);
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Channel {
    /// Connects to a [`Listener`] at a filesystem path.
    pub fn connect(path: impl AsRef<Path>) -> Result<Channel, SocketError> {
        let addr = SocketAddrUnix::new(path.as_ref()).map_err(io::Error::from)?;
        Channel::connect_addr(&addr)
    }

    /// Connects to a [`Listener`] at an abstract name.
    pub fn connect_abstract(name: &[u8]) -> Result<Channel, SocketError> {
        let addr = SocketAddrUnix::new_abstract_name(name).map_err(io::Error::from)?;
        Channel::connect_addr(&addr)
    }

    /// Connects to a [`Listener`] at a filesystem path, waiting at most
    /// `timeout` while its backlog is full (plain [`connect`](Self::connect)
    /// waits as long as the listener does not accept).
    pub fn connect_timeout(
        path: impl AsRef<Path>,
        timeout: Duration,
    ) -> Result<Channel, SocketError> {
        let addr = SocketAddrUnix::new(path.as_ref()).map_err(io::Error::from)?;
        Channel::connect_addr_until(&addr, Deadline::after(Some(timeout)))
    }

    /// Connects to a [`Listener`] at an abstract name, waiting at most
    /// `timeout` while its backlog is full.
    pub fn connect_abstract_timeout(
        name: &[u8],
        timeout: Duration,
    ) -> Result<Channel, SocketError> {
        let addr = SocketAddrUnix::new_abstract_name(name).map_err(io::Error::from)?;
        Channel::connect_addr_until(&addr, Deadline::after(Some(timeout)))
    }

    fn connect_addr(addr: &SocketAddrUnix) -> Result<Channel, SocketError> {
        Channel::connect_addr_until(addr, Deadline::after(None))
    }

    /// `connect`, which on a Unix socket waits while the listener's backlog
    /// is full: bounded by `SO_SNDTIMEO`, which the kernel applies to that
    /// wait (then `EAGAIN`). The socket is new and ours alone, so nobody can
    /// change the option behind our back; it is cleared once connected.
    fn connect_addr_until(
        addr: &SocketAddrUnix,
        deadline: Deadline,
    ) -> Result<Channel, SocketError> {
        let fd = seqpacket_socket()?;
        loop {
            if let Some(left) = deadline.remaining() {
                if left.is_zero() {
                    return Err(SocketError::TimedOut);
                }
                // A zero SO_SNDTIMEO would mean "forever": at least 1 ms.
                let wait = left.max(Duration::from_millis(1));
                rustix::net::sockopt::set_socket_timeout(&fd, Timeout::Send, Some(wait))
                    .map_err(io::Error::from)?;
            }
            match rustix::net::connect(&fd, addr) {
                Ok(()) => break,
                // Interrupted, or the backlog stayed full for `wait`: go
                // round (the deadline check above ends it).
                Err(Errno::AGAIN) if deadline.remaining().is_some() => {}
                Err(Errno::INTR) => {}
                Err(e) => return Err(io::Error::from(e).into()),
            }
        }
        if deadline.remaining().is_some() {
            rustix::net::sockopt::set_socket_timeout(&fd, Timeout::Send, None)
                .map_err(io::Error::from)?;
        }
        Ok(Channel::from(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Option<Duration> = Some(Duration::from_secs(5));

    fn unique(tag: &str) -> String {
        format!(
            "ferry-handoff-test-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        )
    }

    #[test]
    fn abstract_listener_accepts_and_reports_credentials() {
        let name = unique("abstract");
        let listener = Listener::bind_abstract(name.as_bytes()).unwrap();
        let client = Channel::connect_abstract(name.as_bytes()).unwrap();
        let server = listener.accept(T).unwrap();
        client.send(b"hi", &[client.as_fd()]).unwrap();
        let mut buf = [0u8; 8];
        let got = server.recv(&mut buf, T).unwrap();
        assert_eq!((got.len, got.fds.len()), (2, 1));
        let cred = server.peer_credentials().unwrap();
        assert_eq!(cred.pid, std::process::id() as i32);
        assert!(server.peer_pidfd().is_ok());
    }

    #[test]
    fn path_listener_is_removed_on_drop() {
        let path = std::env::temp_dir().join(unique("path"));
        let listener = Listener::bind(&path).unwrap();
        let client = Channel::connect(&path).unwrap();
        let server = listener.accept(T).unwrap();
        server.send(b"pong", &[]).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(client.recv(&mut buf, T).unwrap().len, 4);
        drop(listener);
        assert!(!path.exists());
    }

    #[test]
    fn connect_times_out_on_a_full_backlog() {
        let name = unique("backlog");
        let _listener = Listener::bind_abstract(name.as_bytes()).unwrap();
        // Nobody accepts: fill the backlog until a connect has to wait.
        let mut held = Vec::new();
        let refused = loop {
            match Channel::connect_abstract_timeout(name.as_bytes(), Duration::from_millis(20)) {
                Ok(channel) => held.push(channel),
                Err(e) => break e,
            }
            assert!(
                held.len() <= 4 * BACKLOG as usize,
                "the backlog never filled"
            );
        };
        assert!(matches!(refused, SocketError::TimedOut), "{refused:?}");
        assert!(held.len() >= BACKLOG as usize);
    }

    #[test]
    fn accept_times_out() {
        let listener = Listener::bind_abstract(unique("timeout").as_bytes()).unwrap();
        assert!(matches!(
            listener.accept(Some(Duration::from_millis(10))),
            Err(SocketError::TimedOut)
        ));
    }
}
