//! The sending half of a split connection for tokio tasks (the `tokio`
//! feature): sends and synchronous calls as futures. Each task that sends
//! holds its own [`AsyncSender`] (see [`try_clone`](AsyncSender::try_clone)):
//! every one registers its own duplicate of the readiness descriptor, so a
//! release of room wakes every sender waiting for it.

use crate::async_connection::AsyncConnection;
use crate::async_wait::{self, ReadinessFd, Side, Spin};
use crate::call::{Reply, envelope_for};
use crate::error::{CallError, SendError};
use crate::message::{Message, Remote, Request, View};
use crate::outbox::Room;
use crate::sender::ConnectionSender;
use crate::wire::Flags;
use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The sending half of a split [`AsyncConnection`]: sends frames and typed
/// messages, and makes synchronous calls, as futures. For several tasks,
/// [`try_clone`](Self::try_clone) one per task. Waits for room are bounded
/// by the connection's `send_timeout` and end at once when the peer dies.
pub struct AsyncSender {
    sender: ConnectionSender,
    fd: ReadinessFd,
    /// Whether this sender is armed for room (the producer's arming is
    /// shared by every waiter: it ends with the last).
    armed: bool,
    /// The spin of waits for room.
    spin: Spin,
}

impl AsyncConnection {
    /// Splits the connection into an async sending half, for any number of
    /// tasks (clone it with [`AsyncSender::try_clone`]), and the receiving
    /// half: this connection, which goes on receiving, dispatching and
    /// sending. See [`Connection::split`](crate::Connection::split) for what
    /// needs which half; the receiving half must be driven for the senders'
    /// calls to get their replies.
    pub fn split(self) -> io::Result<(AsyncSender, AsyncConnection)> {
        let (sender, receiving) = self.into_inner().split()?;
        Ok((AsyncSender::new(sender)?, AsyncConnection::new(receiving)?))
    }
}

impl AsyncSender {
    /// Wraps a sending half, registering (a duplicate of) its readiness
    /// descriptor with the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O enabled (as `AsyncFd` does).
    pub fn new(sender: ConnectionSender) -> io::Result<AsyncSender> {
        let fd = async_wait::register(std::os::fd::AsFd::as_fd(&sender.inner().notify))?;
        let spin = Spin::new(sender.config().async_spin);
        Ok(AsyncSender {
            sender,
            fd,
            armed: false,
            spin,
        })
    }

    /// Another async sender on the same connection, for another task.
    pub fn try_clone(&self) -> io::Result<AsyncSender> {
        AsyncSender::new(self.sender.clone())
    }

    /// The blocking sending half inside (for threads, or `try_` sends).
    pub fn sender(&self) -> &ConnectionSender {
        &self.sender
    }

    /// Ready when a frame with a body of `len` bytes can be sent without
    /// waiting (or the connection ended: the send then says how).
    /// `Pending` registers `cx`'s waker for the peer's next release of room
    /// or its hang-up. No timeout applies here: the caller bounds the wait.
    pub fn poll_send_ready(
        &mut self,
        cx: &mut Context<'_>,
        len: usize,
    ) -> Poll<Result<(), SendError>> {
        let room = self.sender.inner().outbox.lock().room_for(len);
        self.poll_room(cx, room)
    }

    fn poll_room(&mut self, cx: &mut Context<'_>, room: usize) -> Poll<Result<(), SendError>> {
        let mut side = SenderSide {
            sender: &self.sender,
            armed: &mut self.armed,
            room,
        };
        async_wait::poll_ready(&mut side, &self.fd, &mut self.spin, cx)
    }

    /// Sends `payload` as one frame, waiting for room for at most the
    /// configured `send_timeout`.
    pub async fn send_frame(&mut self, payload: &[u8]) -> Result<(), SendError> {
        let len = payload.len();
        self.retry_send(Some(len), |sender| sender.try_send_frame(payload))
            .await
    }

    /// Sends `message` to `to`, waiting for room for at most the configured
    /// `send_timeout`.
    pub async fn send<M: Message>(
        &mut self,
        to: Remote<M::Receiver>,
        message: &M,
    ) -> Result<(), SendError> {
        self.send_as::<M>(to, message).await
    }

    /// Sends `view` as message `M` ([`Connection::send_as`] as a future).
    pub async fn send_as<M: Message>(
        &mut self,
        to: Remote<M::Receiver>,
        view: &impl View<M>,
    ) -> Result<(), SendError> {
        self.retry_send(None, |sender| {
            sender.send_typed(envelope_for::<M>(to, 0, 0), view, &[], Room::Try)
        })
        .await
    }

    /// A synchronous call as a future: sends the request and waits for its
    /// reply for at most `timeout`. The reply is routed by whoever drives
    /// the receiving half; if nobody does, the call ends with `TimedOut`.
    pub async fn call<M: Request>(
        &mut self,
        to: Remote<M::Receiver>,
        message: &M,
        timeout: Duration,
    ) -> Result<Reply<M::Reply>, CallError> {
        let deadline = Instant::now().checked_add(timeout);
        let id = self.sender.issue::<M>()?;
        let envelope = envelope_for::<M>(to, id, Flags::SYNC);
        let sending = self.retry_send(None, |sender| {
            sender.send_typed(envelope, message, &[], Room::Try)
        });
        let sent = async_wait::within(Some(timeout), sending)
            .await
            .unwrap_or(Err(SendError::TimedOut));
        if let Err(error) = sent {
            self.sender.routed().abandon(id);
            return Err(error.into());
        }
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let routed = self.sender.routed();
        let waited = async_wait::within(remaining, poll_fn(|cx| routed.poll(id, cx.waker())))
            .await
            .unwrap_or(Err(CallError::TimedOut));
        match waited {
            Ok(reply) => self.sender.reply::<M>(reply),
            Err(error) => {
                self.sender.routed().abandon(id);
                Err(error)
            }
        }
    }

    /// Tries `send` until it does not find the ring full, waiting for room
    /// between tries (for a body of `len` bytes, or for a typed message the
    /// room the last archive needed), within the send timeout.
    async fn retry_send(
        &mut self,
        len: Option<usize>,
        mut send: impl FnMut(&ConnectionSender) -> Result<(), SendError>,
    ) -> Result<(), SendError> {
        let timeout = self.sender.config().send_timeout;
        let sending = async {
            loop {
                match send(&self.sender) {
                    Err(SendError::Full) => {}
                    sent => return sent,
                }
                let room = {
                    let outbox = self.sender.inner().outbox.lock();
                    match len {
                        Some(len) => outbox.room_for(len),
                        None => outbox.expected_room(),
                    }
                };
                let started = Instant::now();
                poll_fn(|cx| self.poll_room(cx, room)).await?;
                if started.elapsed() < Duration::from_micros(1) {
                    // Room in the ring, yet the send found none: the control
                    // socket is full, and nothing signals its room.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };
        async_wait::within(timeout, sending)
            .await
            .unwrap_or(Err(SendError::TimedOut))
    }
}

impl Drop for AsyncSender {
    /// A sender dropped while armed (its future cancelled) ends its arming.
    fn drop(&mut self) {
        if self.armed {
            self.sender
                .inner()
                .outbox
                .lock()
                .disarm_room(&mut self.armed);
        }
    }
}

impl std::fmt::Debug for AsyncSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AsyncSender").field(&self.sender).finish()
    }
}

/// One async sender waiting for `room` bytes of ring room.
struct SenderSide<'a> {
    sender: &'a ConnectionSender,
    armed: &'a mut bool,
    room: usize,
}

impl Side for SenderSide<'_> {
    type Error = SendError;

    fn ready(&mut self) -> Result<bool, SendError> {
        if *self.armed {
            self.disarm();
        }
        let inner = self.sender.inner();
        if let Some(error) = inner.outbox.ended() {
            return Err(error);
        }
        let has_room = inner.outbox.lock().tx.has_room(self.room);
        Ok(has_room.unwrap_or(true))
    }

    fn arm(&mut self) -> Result<bool, SendError> {
        let inner = self.sender.inner();
        if let Some(error) = inner.outbox.ended() {
            return Err(error);
        }
        let ready = inner.outbox.lock().arm_room(self.room, self.armed);
        Ok(ready.unwrap_or(true))
    }

    fn disarm(&mut self) {
        let inner = self.sender.inner();
        inner.outbox.lock().disarm_room(self.armed);
        inner.notify.clear();
    }

    fn reactor_failed(error: io::Error) -> SendError {
        SendError::Io(crate::error::Cause::new(error))
    }
}
