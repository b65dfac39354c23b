//! A connection driven by a tokio task (the `tokio` feature): every
//! operation that would wait is a future that parks the task on the
//! connection's readiness descriptor instead of blocking the thread.

use crate::async_wait::{self, ReadinessFd, Side, Spin};
use crate::call::{Reply, envelope_for, reply_to};
use crate::connection::Connection;
use crate::error::{CallError, DispatchError, RecvError, SendError};
use crate::message::{Message, Remote, Request, View};
use crate::outbox::Room;
use crate::pending::Waiter;
use crate::raw::Received;
use crate::wire::Flags;
use std::future::poll_fn;
use std::io;
use std::os::fd::AsFd;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How long a send whose ring has room but whose control socket is full
/// (descriptors, out-of-line blobs) waits before it tries again: the control
/// socket has no readiness of its own here.
const CONTROL_FULL_BACKOFF: Duration = Duration::from_millis(1);

/// A [`Connection`] for one tokio task at a time (multi-threaded runtime
/// included: it is `Send`). Receiving, sending, dispatching and calling are
/// futures; a waiting task polls the ring for at most
/// [`async_spin`](crate::ConnectionConfig::async_spin), then sleeps until
/// the peer signals the connection's readiness descriptor (or hangs up).
///
/// Sends wait for room for at most
/// [`send_timeout`](crate::ConnectionConfig::send_timeout); receives wait
/// until a frame comes or the peer is gone (wrap them in
/// `tokio::time::timeout` for a bound: they are cancel-safe, nothing is
/// taken before the future completes). The synchronous parts (handlers,
/// a frame's `reply`) run inside `poll` as they would on a thread.
///
/// To send from several tasks while one receives, [`split`](Self::split)
/// it. Must be created inside a tokio runtime (its descriptor is registered
/// with that runtime's reactor).
///
/// ```
/// # #[cfg(not(miri))]
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use ferry_transport::{AsyncConnection, Connection, ConnectionConfig};
///
/// let (a, b) = Connection::pair(ConnectionConfig::default())?;
/// let (mut a, mut b) = (AsyncConnection::new(a)?, AsyncConnection::new(b)?);
/// a.send_frame(b"ping").await?;
/// let frame = b.recv_frame().await?;
/// assert_eq!(frame.bytes(), b"ping");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct AsyncConnection {
    connection: Connection,
    fd: ReadinessFd,
    /// The spin of waits for frames (receive, dispatch, a call's reply).
    recv_spin: Spin,
    /// The spin of waits for room.
    send_spin: Spin,
}

impl AsyncConnection {
    /// Wraps `connection`, registering (a duplicate of) its readiness
    /// descriptor with the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O enabled (as `AsyncFd` does).
    pub fn new(connection: Connection) -> io::Result<AsyncConnection> {
        let fd = async_wait::register(connection.readiness_fd())?;
        let spin = connection.config.async_spin;
        Ok(AsyncConnection {
            connection,
            fd,
            recv_spin: Spin::new(spin),
            send_spin: Spin::new(spin),
        })
    }

    /// The connection, for what needs no waiting (registering receivers,
    /// stats, configuration).
    pub fn get_ref(&self) -> &Connection {
        &self.connection
    }

    /// The connection, for what needs no waiting. A blocking operation
    /// called through it blocks the executor thread.
    pub fn get_mut(&mut self) -> &mut Connection {
        &mut self.connection
    }

    /// The connection back (the descriptor's registration ends).
    pub fn into_inner(self) -> Connection {
        self.connection
    }

    // ---- readiness, for adapters (Stream, Sink, AsyncRead...) ----

    /// Ready when a frame can be received without waiting (or the
    /// connection ended: the receive then says how). `Pending` registers
    /// `cx`'s waker for the peer's next send or its hang-up.
    pub fn poll_recv_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RecvError>> {
        let mut side = FrameSide {
            connection: &mut self.connection,
            messages_set_aside: false,
        };
        async_wait::poll_ready(&mut side, &self.fd, &mut self.recv_spin, cx)
    }

    /// Ready when a frame with a body of `len` bytes can be sent without
    /// waiting (or the connection ended: the send then says how). `Pending`
    /// registers `cx`'s waker for the peer's next release of room or its
    /// hang-up. No timeout applies here: the caller bounds the wait.
    pub fn poll_send_ready(
        &mut self,
        cx: &mut Context<'_>,
        len: usize,
    ) -> Poll<Result<(), SendError>> {
        let room = self.connection.outbox.lock().room_for(len);
        let mut side = RoomSide {
            connection: &mut self.connection,
            room,
        };
        async_wait::poll_ready(&mut side, &self.fd, &mut self.send_spin, cx)
    }

    // ---- raw frames ----

    /// Receives the next frame, waiting (without blocking the thread) as
    /// long as it takes; the peer's death ends the wait with
    /// `Disconnected`.
    pub async fn recv_frame(&mut self) -> Result<Received<'_>, RecvError> {
        poll_fn(|cx| self.poll_recv_ready(cx)).await?;
        // Ready: a frame is there (nothing else reads this ring), or the
        // connection ended and this says how.
        self.connection.try_recv_frame()
    }

    /// Sends `payload` as one frame, waiting for room for at most the
    /// configured `send_timeout` (`TimedOut` then). Larger than
    /// [`max_inline_payload`](Connection::max_inline_payload): out of line.
    pub async fn send_frame(&mut self, payload: &[u8]) -> Result<(), SendError> {
        let timeout = self.connection.config.send_timeout;
        let len = payload.len();
        let sending = self.retry_send(Body::Raw(len), |connection| {
            connection.try_send_frame(payload)
        });
        async_wait::within(timeout, sending)
            .await
            .unwrap_or(Err(SendError::TimedOut))
    }

    /// Tries `send` until it does not find the ring full, waiting for room
    /// for `body` between tries.
    async fn retry_send(
        &mut self,
        body: Body,
        mut send: impl FnMut(&mut Connection) -> Result<(), SendError>,
    ) -> Result<(), SendError> {
        loop {
            match send(&mut self.connection) {
                Err(SendError::Full) => {}
                sent => return sent,
            }
            let room = match body {
                Body::Raw(len) => self.connection.outbox.lock().room_for(len),
                Body::Typed => self.connection.outbox.lock().expected_room(),
            };
            let waited = WaitedFor::new();
            poll_fn(|cx| self.poll_room(cx, room)).await?;
            if waited.was_instant() {
                // Room in the ring, yet the send found no room: the control
                // socket is full. Nothing signals its room; back off.
                tokio::time::sleep(CONTROL_FULL_BACKOFF).await;
            }
        }
    }

    // ---- typed messages ----

    /// Sends `message` to `to` ([`Connection::send`] as a future), waiting
    /// for room for at most the configured `send_timeout`.
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
        let timeout = self.connection.config.send_timeout;
        let sending = self.retry_send(Body::Typed, |connection| {
            connection.send_typed(envelope_for::<M>(to, 0, 0), view, &[], Room::Try)
        });
        async_wait::within(timeout, sending)
            .await
            .unwrap_or(Err(SendError::TimedOut))
    }

    /// Waits for `room` bytes of ring room (envelope included).
    fn poll_room(&mut self, cx: &mut Context<'_>, room: usize) -> Poll<Result<(), SendError>> {
        let mut side = RoomSide {
            connection: &mut self.connection,
            room,
        };
        async_wait::poll_ready(&mut side, &self.fd, &mut self.send_spin, cx)
    }

    /// Dispatches incoming messages to their handlers
    /// ([`Connection::dispatch`] as a future): waits (without blocking the
    /// thread) for the first one, then handles what is there, at most
    /// [`max_dispatch_batch`](crate::ConnectionConfig::max_dispatch_batch).
    /// Returns how many were dispatched (at least one, unless the peer
    /// closed after the last one).
    pub async fn dispatch(&mut self) -> Result<usize, DispatchError> {
        loop {
            poll_fn(|cx| self.poll_dispatch_ready(cx))
                .await
                .map_err(DispatchError::from)?;
            let count = self.connection.try_dispatch()?;
            if count > 0 {
                return Ok(count);
            }
        }
    }

    /// Ready when a message (in the ring, or set aside by a call) can be
    /// dispatched.
    fn poll_dispatch_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RecvError>> {
        let mut side = FrameSide {
            connection: &mut self.connection,
            messages_set_aside: true,
        };
        async_wait::poll_ready(&mut side, &self.fd, &mut self.recv_spin, cx)
    }

    /// A synchronous call as a future: sends the request (flagged
    /// synchronous, so the peer answers it even while it waits in a call of
    /// its own) and waits for its reply for at most `timeout`. While it
    /// waits, everything else that arrives is dispatched to its handler or
    /// reply handler in order (the task is not blocked, so nothing needs to
    /// be set aside).
    pub async fn call<M: Request>(
        &mut self,
        to: Remote<M::Receiver>,
        message: &M,
        timeout: Duration,
    ) -> Result<Reply<M::Reply>, CallError> {
        let deadline = Instant::now().checked_add(timeout);
        let id = self.connection.calls.next_id();
        let envelope = envelope_for::<M>(to, id, Flags::SYNC);
        let sending = self.retry_send(Body::Typed, |connection| {
            connection.send_typed(envelope, message, &[], Room::Try)
        });
        async_wait::within(Some(timeout), sending)
            .await
            .unwrap_or(Err(SendError::TimedOut))?;
        self.connection
            .calls
            .expect(id, Waiter::Sync(reply_to::<M>()));
        let waited = async {
            loop {
                if let Some(reply) = self.connection.calls.take_arrived(id) {
                    return Ok(reply);
                }
                poll_fn(|cx| self.poll_recv_ready(cx)).await?;
                match self.connection.next_incoming(None) {
                    Ok(incoming) => self.connection.route(incoming)?,
                    Err(RecvError::Empty) => {}
                    Err(error) => return Err(CallError::from(error)),
                }
            }
        };
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let outcome = async_wait::within(remaining, waited)
            .await
            .unwrap_or(Err(CallError::TimedOut));
        match outcome {
            Ok(incoming) => Reply::new(incoming, M::NAME)
                .map_err(|violation| self.connection.fail(violation).into()),
            Err(error) => {
                // Like `send_sync`: a reply that still comes is dropped.
                self.connection.calls.abandon(id);
                Err(error)
            }
        }
    }
}

impl AsFd for AsyncConnection {
    /// The connection's readiness descriptor.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.connection.readiness_fd()
    }
}

impl std::fmt::Debug for AsyncConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AsyncConnection")
            .field(&self.connection)
            .finish()
    }
}

/// What a send waits for room for.
#[derive(Clone, Copy)]
enum Body {
    /// A raw frame's body of this many bytes.
    Raw(usize),
    /// A typed message, whose size is known only once serialized: the
    /// room the last archive needed.
    Typed,
}

/// Whether a wait returned at once (the condition held before any sleep).
struct WaitedFor(Instant);

impl WaitedFor {
    fn new() -> Self {
        WaitedFor(Instant::now())
    }
    /// Shorter than any wake-up through the reactor could take.
    fn was_instant(&self) -> bool {
        self.0.elapsed() < Duration::from_micros(1)
    }
}

/// Waiting for a frame to receive (or, for dispatch, a message set aside).
struct FrameSide<'a> {
    connection: &'a mut Connection,
    messages_set_aside: bool,
}

impl Side for FrameSide<'_> {
    type Error = RecvError;

    fn ready(&mut self) -> Result<bool, RecvError> {
        let connection = &mut *self.connection;
        if connection.inbox.rx.is_armed() {
            connection.disarm();
        }
        if let Some(error) = connection.lifecycle.recv_error() {
            return Err(error);
        }
        if self.messages_set_aside && connection.has_deferred() {
            return Ok(true);
        }
        // A peek that finds a frame leaves it in the ring; any error but
        // `Empty` is for the receive to report.
        Ok(!matches!(
            connection.inbox.rx.try_peek(),
            Err(ferry_ring::RecvError::Empty)
        ))
    }

    fn arm(&mut self) -> Result<bool, RecvError> {
        let connection = &mut *self.connection;
        if self.messages_set_aside {
            return connection.arm();
        }
        if let Some(error) = connection.lifecycle.recv_error() {
            return Err(error);
        }
        connection.watched_here();
        Ok(connection.inbox.rx.arm_notification().unwrap_or(true))
    }

    fn disarm(&mut self) {
        self.connection.disarm();
    }

    fn reactor_failed(_: io::Error) -> RecvError {
        // The runtime is shutting down: no wait can go on.
        RecvError::TimedOut
    }
}

/// Waiting for `room` bytes in the ring we write.
struct RoomSide<'a> {
    connection: &'a mut Connection,
    room: usize,
}

impl Side for RoomSide<'_> {
    type Error = SendError;

    fn ready(&mut self) -> Result<bool, SendError> {
        let connection = &mut *self.connection;
        if connection.outbox.lock().own_room_armed() {
            connection.disarm_send();
        }
        if let Some(error) = connection.lifecycle.send_error() {
            return Err(error);
        }
        let has_room = connection.outbox.lock().tx.has_room(self.room);
        Ok(has_room.unwrap_or(true))
    }

    fn arm(&mut self) -> Result<bool, SendError> {
        let connection = &mut *self.connection;
        if let Some(error) = connection.lifecycle.send_error() {
            return Err(error);
        }
        connection.watched_here();
        let ready = connection.outbox.lock().arm_own_room(self.room);
        Ok(ready.unwrap_or(true))
    }

    fn disarm(&mut self) {
        self.connection.disarm_send();
    }

    fn reactor_failed(error: io::Error) -> SendError {
        SendError::Io(crate::error::Cause::new(error))
    }
}
