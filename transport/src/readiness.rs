//! Driving a connection from an event loop (epoll, mio, tokio): its
//! readiness descriptor becomes readable when a message arrives while the
//! connection is armed, or when the peer dies.

use crate::connection::Connection;
use crate::error::RecvError;
use std::os::fd::{AsFd, BorrowedFd};

impl Connection {
    /// The descriptor an event loop watches for readability (our end of an
    /// `AF_UNIX` datagram socketpair).
    pub fn readiness_fd(&self) -> BorrowedFd<'_> {
        self.notify.as_fd()
    }

    /// Call before waiting on [`readiness_fd`](Self::readiness_fd). Returns
    /// `Ok(true)` when there is something to receive already: do not wait,
    /// receive. `Ok(false)`: armed, the peer's next send makes the descriptor
    /// readable. After waking, call [`disarm`](Self::disarm), then receive
    /// until `Empty`, then arm again.
    pub fn arm(&mut self) -> Result<bool, RecvError> {
        if let Some(error) = self.lifecycle.recv_error() {
            return Err(error);
        }
        self.watched_here();
        // Answers queued by reply handles are sent by the next dispatch. (A
        // handle wakes waits on the ring, not an event loop's wait on this
        // descriptor: an event loop sends them at its next event.)
        if self.has_deferred() || self.late.has_queued() {
            return Ok(true);
        }
        match self.inbox.rx.arm_notification() {
            Ok(ready) => Ok(ready),
            // Let the next receive report it in the usual way.
            Err(_) => Ok(true),
        }
    }

    /// Stops the peer signalling the readiness descriptor and empties it.
    pub fn disarm(&mut self) {
        self.inbox.rx.disarm_notification();
        self.notify.clear();
    }
}

impl AsFd for Connection {
    /// The readiness descriptor.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.readiness_fd()
    }
}
