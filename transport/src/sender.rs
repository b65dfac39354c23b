//! A connection split into a sending half and a receiving half, for threads:
//! [`Connection::split`] returns a [`ConnectionSender`] (cloneable, `Send`
//! and `Sync`: any number of threads send through it) and the connection
//! itself, which stays the receiving half.
//!
//! Sends are serialized by one lock (the ring has one producer); while a
//! send waits for room it holds it, so the other senders queue behind it,
//! each bounded by its own timeout. Frames from one sender thread arrive in
//! the order it sent them; frames of different threads interleave.
//!
//! Both halves learn of the peer's death at once: the hang-up watcher ends
//! the waits of both rings and of every synchronous call of the senders.

use crate::call::{Reply, envelope_for, reply_to};
use crate::config::ConnectionConfig;
use crate::connection::Connection;
use crate::error::{CallError, DispatchError, SendError, Violation};
use crate::incoming::Incoming;
use crate::message::{Archivable, Message, Remote, Request, View};
use crate::outbox::Room;
use crate::raw::raw_envelope;
use crate::routed::{Delivery, RoutedCalls};
use crate::shared_outbox::{OutboxCell, SharedOutbox};
use crate::wire::{Envelope, Flags};
use ferry_handoff::Channel;
use ferry_ring::DisconnectHandle;
#[cfg(feature = "tokio")]
use ferry_ring::Notifier;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The sending half of a split [`Connection`]: sends frames and typed
/// messages, and makes synchronous calls, from any thread (clone it, or
/// share it: it is `Send` and `Sync`). See [`Connection::split`].
///
/// Which operation needs which half:
///
/// | operation | needs |
/// |---|---|
/// | `send_frame`, `try_send_frame`, `send_frame_with_fds` | either half |
/// | `send`, `try_send`, `send_with_fds` (typed) | either half |
/// | `send_sync` (a synchronous call) | either half; from the sender, the reply is routed by whoever drives the receiving half |
/// | `recv_frame`, `dispatch`, `register`, `arm`, `arm_send`, `send_with_reply` | the receiving half (the connection; an `AsyncSender` has `poll_send_ready`) |
/// | `reserve_frame` (writing in place) | an unsplit connection |
///
/// A sender waiting for room holds the senders' lock: the other senders
/// queue behind it, each bounded by its own timeout. Frames from one sender
/// thread arrive in the order it sent them. The peer's death ends the waits
/// of both halves at once.
///
/// ```
/// use ferry_transport::{Connection, ConnectionConfig};
/// use std::time::Duration;
///
/// let (a, mut b) = Connection::pair(ConnectionConfig::default())?;
/// let (sender, _receiving_half) = a.split()?;
/// std::thread::scope(|scope| {
///     for n in 0..2u8 {
///         let sender = sender.clone();
///         scope.spawn(move || sender.send_frame(&[n], Some(Duration::from_secs(1))).unwrap());
///     }
/// });
/// let mut seen = Vec::new();
/// for _ in 0..2 {
///     seen.push(b.recv_frame(Some(Duration::from_secs(1)))?.bytes()[0]);
/// }
/// seen.sort();
/// assert_eq!(seen, [0, 1]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ConnectionSender {
    inner: Arc<SenderInner>,
}

/// What every clone of a sender shares.
pub(crate) struct SenderInner {
    pub(crate) outbox: Arc<SharedOutbox>,
    /// A second handle on the connection's control socket: descriptors and
    /// out-of-line blobs go ahead of their frames through it.
    control: Channel,
    pub(crate) config: ConnectionConfig,
    routed: Arc<RoutedCalls>,
    /// Our end of the notification socketpair (a duplicate), which the
    /// async sender registers and drains.
    #[cfg(feature = "tokio")]
    pub(crate) notify: Notifier,
    /// Ends the waits of both rings when a send finds the peer broke the
    /// protocol.
    rx_gone: DisconnectHandle,
    tx_gone: DisconnectHandle,
}

impl Connection {
    /// Splits the connection into a sending half, for any number of
    /// threads, and a receiving half: the connection itself, which goes on
    /// receiving, dispatching and sending (its sends, handler replies
    /// included, share the senders' lock). The receiving half must be
    /// driven (`dispatch`, `recv_frame`, a `send_sync` of its own, or an
    /// async wrapper's) for the senders' synchronous calls to get their
    /// replies; a call whose reply nobody routes ends with `TimedOut`.
    /// `reserve_frame` is not available once split.
    ///
    /// Splitting a connection that was split already returns another sender
    /// on the same lock.
    pub fn split(self) -> Result<(ConnectionSender, Connection), std::io::Error> {
        let Connection {
            outbox,
            inbox,
            control,
            config,
            lifecycle,
            receivers,
            calls,
            late,
            set_aside,
            message_fds,
            notify,
            hangup,
            routed,
            admission,
        } = self;
        let shared = match outbox {
            OutboxCell::Own(outbox) => SharedOutbox::new(outbox),
            OutboxCell::Shared(shared) => shared,
        };
        let inner = SenderInner {
            tx_gone: shared.lock().tx.disconnect_handle(),
            rx_gone: inbox.rx.disconnect_handle(),
            outbox: Arc::clone(&shared),
            control: Channel::from(control.as_fd().try_clone_to_owned()?),
            config: config.clone(),
            routed: Arc::clone(&routed),
            #[cfg(feature = "tokio")]
            notify: notify.try_clone()?,
        };
        let receiving = Connection {
            outbox: OutboxCell::Shared(shared),
            inbox,
            control,
            config,
            lifecycle,
            receivers,
            calls,
            late,
            set_aside,
            message_fds,
            notify,
            hangup,
            routed,
            admission,
        };
        let sender = ConnectionSender {
            inner: Arc::new(inner),
        };
        Ok((sender, receiving))
    }
}

impl Connection {
    /// Routes a reply to a call of a sending half (the receiving half's
    /// dispatch calls this for ids with the routed bit).
    pub(crate) fn route_to_sender(&mut self, mut incoming: Incoming) -> Result<(), DispatchError> {
        let id = incoming.envelope.request_id;
        // The caller reads it on another thread, after this frame's turn.
        self.inbox.make_owned(&mut incoming);
        match self.routed.deliver(id, incoming) {
            Delivery::Delivered | Delivery::Abandoned => Ok(()),
            Delivery::Refused(violation) => Err(self.protocol_violation(violation)),
        }
    }
}

impl ConnectionSender {
    /// Sends `payload` as one frame, waiting for room for at most `timeout`
    /// ([`Connection::send_frame`]).
    pub fn send_frame(&self, payload: &[u8], timeout: Option<Duration>) -> Result<(), SendError> {
        self.send_raw(payload, &[], Room::Wait(timeout))
    }

    /// Sends `payload` as one frame if the ring has room now.
    pub fn try_send_frame(&self, payload: &[u8]) -> Result<(), SendError> {
        self.send_raw(payload, &[], Room::Try)
    }

    /// Sends `payload` with descriptors attached
    /// ([`Connection::send_frame_with_fds`]).
    pub fn send_frame_with_fds(
        &self,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
        timeout: Option<Duration>,
    ) -> Result<(), SendError> {
        self.send_raw(payload, fds, Room::Wait(timeout))
    }

    /// Sends `message` to `to`, waiting for room for at most the configured
    /// `send_timeout` ([`Connection::send`]).
    pub fn send<M: Message>(&self, to: Remote<M::Receiver>, message: &M) -> Result<(), SendError> {
        self.send_as::<M>(to, message)
    }

    /// Sends `view` as message `M` ([`Connection::send_as`]).
    pub fn send_as<M: Message>(
        &self,
        to: Remote<M::Receiver>,
        view: &impl View<M>,
    ) -> Result<(), SendError> {
        let room = Room::Wait(self.inner.config.send_timeout);
        self.send_typed(envelope_for::<M>(to, 0, 0), view, &[], room)
    }

    /// Sends `message` if the ring has room now.
    pub fn try_send<M: Message>(
        &self,
        to: Remote<M::Receiver>,
        message: &M,
    ) -> Result<(), SendError> {
        self.send_typed(envelope_for::<M>(to, 0, 0), message, &[], Room::Try)
    }

    /// Sends `message` with descriptors attached, waiting for room for at
    /// most `timeout`.
    pub fn send_with_fds<M: Message>(
        &self,
        to: Remote<M::Receiver>,
        message: &M,
        fds: &[BorrowedFd<'_>],
        timeout: Option<Duration>,
    ) -> Result<(), SendError> {
        let envelope = envelope_for::<M>(to, 0, 0);
        self.send_typed(envelope, message, fds, Room::Wait(timeout))
    }

    /// A synchronous call from the sending side: sends the request and
    /// blocks this thread until its reply, for at most `timeout`. The reply
    /// reaches this thread through whoever drives the receiving half (its
    /// `dispatch`, or its own `send_sync`'s wait); if nobody does, the call
    /// ends with `TimedOut`. Unlike [`Connection::send_sync`] this thread
    /// dispatches nothing while it waits (it has no receiving half): the
    /// peer's requests are the receiving half's to handle. So do not call it
    /// on the thread that drives the receiving half (a handler, say): no
    /// one would route the reply, and it would time out; call the
    /// connection's (or the handler context's) `send_sync` there.
    pub fn send_sync<M: Request>(
        &self,
        to: Remote<M::Receiver>,
        message: &M,
        timeout: Duration,
    ) -> Result<Reply<M::Reply>, CallError> {
        self.send_sync_as::<M>(to, message, timeout)
    }

    /// [`send_sync`](Self::send_sync) with a [`View`] of the request
    /// ([`Connection::send_sync_as`]).
    pub fn send_sync_as<M: Request>(
        &self,
        to: Remote<M::Receiver>,
        view: &impl View<M>,
        timeout: Duration,
    ) -> Result<Reply<M::Reply>, CallError> {
        let deadline = Instant::now().checked_add(timeout);
        let id = self.issue::<M>()?;
        let envelope = envelope_for::<M>(to, id, Flags::SYNC);
        if let Err(error) = self.send_typed(envelope, view, &[], Room::Wait(Some(timeout))) {
            self.inner.routed.abandon(id);
            return Err(error.into());
        }
        let reply = self.inner.routed.wait(id, deadline)?;
        self.reply::<M>(reply)
    }

    /// Whether the connection has not ended as far as the sending side
    /// knows (the peer is there, no violation).
    pub fn is_open(&self) -> bool {
        self.inner.outbox.ended().is_none()
    }

    /// The largest frame body that travels inside the ring.
    pub fn max_inline_payload(&self) -> usize {
        self.inner.outbox.max_inline()
    }

    /// The configuration of the connection this half comes from.
    pub fn config(&self) -> &ConnectionConfig {
        &self.inner.config
    }

    // ---- shared with the async sender ----

    #[cfg(feature = "tokio")]
    pub(crate) fn inner(&self) -> &Arc<SenderInner> {
        &self.inner
    }

    /// A request id for a call of `M` whose reply is routed to us.
    pub(crate) fn issue<M: Request>(&self) -> Result<u64, CallError> {
        let max = self.inner.config.max_pending_replies;
        self.inner.routed.issue(reply_to::<M>(), max)
    }

    /// The routed calls of this connection.
    #[cfg(feature = "tokio")]
    pub(crate) fn routed(&self) -> &RoutedCalls {
        &self.inner.routed
    }

    /// Validates a routed reply as `M::Reply`; an invalid one ends the
    /// connection.
    pub(crate) fn reply<M: Request>(
        &self,
        reply: crate::incoming::Incoming,
    ) -> Result<Reply<M::Reply>, CallError> {
        Reply::new(reply, M::NAME).map_err(|violation| {
            let error = CallError::ProtocolViolation {
                peer: self.inner.config.peer_name.clone(),
                violation: violation.clone(),
            };
            self.cut_off(violation);
            error
        })
    }

    fn send_raw(
        &self,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
        room: Room,
    ) -> Result<(), SendError> {
        self.check_sendable(fds.len())?;
        let sent = self.inner.outbox.lock().send_bytes(
            raw_envelope(),
            payload,
            fds,
            room,
            &self.inner.control,
        );
        self.sent(sent)
    }

    pub(crate) fn send_typed<T: Archivable>(
        &self,
        envelope: Envelope,
        value: &T,
        fds: &[BorrowedFd<'_>],
        room: Room,
    ) -> Result<(), SendError> {
        self.check_sendable(fds.len())?;
        let sent =
            self.inner
                .outbox
                .lock()
                .send_archived(envelope, value, fds, room, &self.inner.control);
        self.sent(sent)
    }

    fn check_sendable(&self, fds: usize) -> Result<(), SendError> {
        if let Some(error) = self.inner.outbox.ended() {
            return Err(error);
        }
        let max = self.inner.config.max_fds_per_message;
        if fds > max {
            return Err(SendError::TooManyFds { count: fds, max });
        }
        Ok(())
    }

    /// What a send's outcome means for the connection (as
    /// `Connection::sent`).
    pub(crate) fn sent(&self, result: Result<(), SendError>) -> Result<(), SendError> {
        match &result {
            Err(SendError::Disconnected) => self.inner.outbox.end(SendError::Disconnected),
            Err(SendError::Failed(violation)) => self.cut_off(violation.clone()),
            _ => {}
        }
        result
    }

    /// The peer broke the protocol (found by a send, or in a routed reply):
    /// the connection is closed for both halves. The receiving half then
    /// sees the connection gone (`Disconnected`); the senders see the
    /// violation.
    fn cut_off(&self, violation: Violation) {
        let inner = &self.inner;
        inner.outbox.end(SendError::Failed(violation.clone()));
        inner.routed.end(CallError::ProtocolViolation {
            peer: inner.config.peer_name.clone(),
            violation,
        });
        let _ = inner.control.shutdown();
        inner.rx_gone.disconnect();
        inner.tx_gone.disconnect();
    }
}

impl std::fmt::Debug for ConnectionSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionSender")
            .field("peer", &self.inner.config.peer_name)
            .field("open", &self.is_open())
            .finish()
    }
}

/// Both halves can move to other threads; the sender is shared by them
/// (checked at compile time).
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ConnectionSender>();
};
