//! Driving a connection from an event loop (epoll, mio, tokio): its
//! readiness descriptor becomes readable when a message arrives while the
//! connection is armed for reading, when room is freed in the peer's ring
//! while it is armed for sending, or when the peer dies.
//!
//! Both kinds of readiness share the one descriptor (our end of the
//! notification socketpair): a wake-up is a hint, after which each waiter
//! checks its own condition again.

use crate::connection::Connection;
use crate::error::{RecvError, SendError};
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
        if self.has_deferred() {
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

    /// Write readiness: call before waiting on
    /// [`readiness_fd`](Self::readiness_fd) for room to send a frame of
    /// `len` bytes (a body larger than
    /// [`max_inline_payload`](Self::max_inline_payload) needs only the room
    /// of the small frame that names its out-of-line blob). Returns
    /// `Ok(true)` when the frame fits now, or when the connection has ended
    /// (the next send reports how): do not wait, send. `Ok(false)`: armed,
    /// the peer's next release of room makes the descriptor readable. After
    /// waking call [`disarm_send`](Self::disarm_send), then send (or arm
    /// again). Costs the peer nothing while not armed.
    pub fn arm_send(&mut self, len: usize) -> Result<bool, SendError> {
        if let Some(error) = self.lifecycle.send_error() {
            return Err(error);
        }
        self.watched_here();
        let mut outbox = self.outbox.lock();
        let room = outbox.room_for(len);
        // Any error is for the next send to report in the usual way.
        Ok(outbox.arm_own_room(room).unwrap_or(true))
    }

    /// Stops the peer signalling room on the readiness descriptor and
    /// empties it.
    pub fn disarm_send(&mut self) {
        self.outbox.lock().disarm_own_room();
        self.notify.clear();
    }
}

impl AsFd for Connection {
    /// The readiness descriptor.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.readiness_fd()
    }
}
