//! How two processes meet: over ferry (a connection by name) or over a
//! Unix stream socket (the baseline), both at a Linux abstract name, so
//! nothing is left in the filesystem. The listening side is the process
//! that starts the other; either side may then be the RPC client.

use crate::error::StackError;
use ferry_transport::ConnectionConfig;
use ferry_transport::named::{self, Name};
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::str::FromStr;
use std::time::Duration;

/// What carries the stack's bytes between the two processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Link {
    /// A ferry connection: tarpc over its frames, gRPC over its byte stream.
    Ferry,
    /// A Unix stream socket: tarpc over length-delimited frames, gRPC
    /// directly.
    Unix,
}

impl Link {
    /// Both links, ferry first.
    pub const ALL: [Link; 2] = [Link::Ferry, Link::Unix];

    /// The link's name (`ferry`, `uds`).
    pub fn name(self) -> &'static str {
        match self {
            Link::Ferry => "ferry",
            Link::Unix => "uds",
        }
    }
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Link {
    type Err = StackError;

    fn from_str(s: &str) -> Result<Link, StackError> {
        match s {
            "ferry" => Ok(Link::Ferry),
            "uds" | "unix" => Ok(Link::Unix),
            other => Err(StackError::Link(format!(
                "unknown link {other:?} (ferry, uds)"
            ))),
        }
    }
}

/// An established connection, not yet in an async runtime.
pub enum Conn {
    /// A ferry connection (boxed: it is large, and moved around once).
    Ferry(Box<ferry_transport::Connection>),
    /// A Unix stream socket (blocking mode; made non-blocking when it
    /// enters the runtime).
    Unix(UnixStream),
}

/// A listening name, for one connecting process.
pub enum Listener {
    /// ferry's listener (boxed: it is large).
    Ferry(Box<named::Listener>),
    /// A Unix listening socket.
    Unix(UnixListener),
}

impl Listener {
    /// Listens on `link` at the abstract name `name`; ferry connections get
    /// `config`.
    pub fn bind(link: Link, name: &str, config: &ConnectionConfig) -> Result<Listener, StackError> {
        Ok(match link {
            Link::Ferry => Listener::Ferry(Box::new(
                named::listen(&Name::abstract_name(name), config.clone())
                    .map_err(|e| StackError::Link(e.to_string()))?,
            )),
            Link::Unix => {
                let address = SocketAddr::from_abstract_name(name.as_bytes())?;
                Listener::Unix(UnixListener::bind_addr(&address)?)
            }
        })
    }

    /// Accepts one connection, waiting at most `timeout`.
    pub fn accept(&mut self, timeout: Duration) -> Result<Conn, StackError> {
        match self {
            Listener::Ferry(listener) => {
                let (connection, _peer) = listener
                    .accept(Some(timeout))
                    .map_err(|e| StackError::Link(e.to_string()))?;
                Ok(Conn::Ferry(Box::new(connection)))
            }
            Listener::Unix(listener) => {
                if !wait_readable(listener.as_fd(), timeout)? {
                    return Err(StackError::Link(format!(
                        "no process connected within {timeout:?}"
                    )));
                }
                let (stream, _) = listener.accept()?;
                Ok(Conn::Unix(stream))
            }
        }
    }
}

/// Connects to the listener at the abstract name `name` on `link`, waiting
/// at most `timeout`.
pub fn connect(
    link: Link,
    name: &str,
    config: &ConnectionConfig,
    timeout: Duration,
) -> Result<Conn, StackError> {
    Ok(match link {
        Link::Ferry => Conn::Ferry(Box::new(
            named::connect(&Name::abstract_name(name), config.clone(), timeout)
                .map_err(|e| StackError::Link(e.to_string()))?,
        )),
        Link::Unix => {
            let address = SocketAddr::from_abstract_name(name.as_bytes())?;
            Conn::Unix(UnixStream::connect_addr(&address)?)
        }
    })
}

/// Waits until `fd` is readable, for at most `timeout`.
fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, timeout: Duration) -> Result<bool, StackError> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        let timespec = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        match poll(&mut fds, Some(&timespec)) {
            Ok(0) => continue,
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(std::io::Error::from(e).into()),
        }
    }
}
