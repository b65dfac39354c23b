//! Typed sending: messages, requests with a reply handler, and synchronous
//! calls that keep dispatching the messages marked allowed-while-waiting, so
//! two processes calling each other synchronously do not deadlock.

use crate::connection::{Connection, Context, ReplyHandler};
use crate::error::{CallError, RecvError, SendError, Violation};
use crate::incoming::{Incoming, access_archive};
use crate::message::{Archivable, Message, Receiver, Remote, Request, View};
use crate::outbox::Room;
use crate::pending::{CallCanceller, ReplyTo, RequestId, Waiter};
use crate::wire::{Envelope, Flags, decode_no_reply};
use std::marker::PhantomData;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

/// The reply to a synchronous call, validated, in a private buffer or a
/// sealed blob.
pub struct Reply<T: Archivable> {
    incoming: Incoming,
    _type: PhantomData<fn() -> T>,
}

impl<T: Archivable> Reply<T> {
    pub(crate) fn new(incoming: Incoming, name: &'static str) -> Result<Self, Violation> {
        access_archive::<T>(incoming.bytes(), name)?;
        Ok(Reply {
            incoming,
            _type: PhantomData,
        })
    }

    /// The archived reply.
    pub fn get(&self) -> &T::Archived {
        // SAFETY: `new` validated these exact bytes as a `T` archive (the
        // same `T`: it is fixed by the type), and they cannot change or move
        // while the returned borrow lives: every synchronous reply reaches
        // its caller through `complete_reply`, which makes it owned before
        // parking it, so the body is a private 16-aligned copy (moving the
        // `Reply` moves the vector, not its heap bytes) or a blob sealed
        // against writes; `incoming` is private and nothing here mutates
        // its body; the borrow of `self` rules out dropping or replacing
        // the `Reply` meanwhile. Were the body ever in place, a trusted
        // peer's pinned frame would still hold (the `PinnedFrame` keeps it),
        // but it is not.
        unsafe { rkyv::access_unchecked::<T::Archived>(self.incoming.bytes()) }
    }
}

impl<T: Archivable> std::ops::Deref for Reply<T> {
    type Target = T::Archived;
    fn deref(&self) -> &T::Archived {
        self.get()
    }
}

impl<T: Archivable> std::fmt::Debug for Reply<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("len", &self.incoming.bytes().len())
            .finish()
    }
}

pub(crate) fn reply_to<M: Message>() -> ReplyTo {
    ReplyTo {
        receiver: <M::Receiver as Receiver>::ID,
        message: M::ID,
    }
}

pub(crate) fn envelope_for<M: Message>(
    to: Remote<M::Receiver>,
    request_id: u64,
    extra: u16,
) -> Envelope {
    let mut flags = extra;
    if M::ALLOWED_WHILE_WAITING {
        flags |= Flags::ALLOWED_WHILE_WAITING;
    }
    Envelope {
        destination: to.destination(),
        request_id,
        receiver: <M::Receiver as Receiver>::ID,
        schema: <M::Receiver as Receiver>::SCHEMA,
        message: M::ID,
        flags: Flags(flags),
        fd_count: 0,
    }
}

impl Connection {
    /// Sends `message` to `to`, waiting for room for at most the configured
    /// `send_timeout` (by default as long as it takes; the peer's death ends
    /// the wait with `Disconnected`). The archive is written
    /// straight into the ring; one too large for it goes out of line.
    pub fn send<M: Message>(
        &mut self,
        to: Remote<M::Receiver>,
        message: &M,
    ) -> Result<(), SendError> {
        self.send_as::<M>(to, message)
    }

    /// Sends `view` as message `M` (see [`View`]): serialized from the
    /// sender's own buffers into the ring, received as an `M`. Waits for
    /// room as [`send`](Self::send) does.
    pub fn send_as<M: Message>(
        &mut self,
        to: Remote<M::Receiver>,
        view: &impl View<M>,
    ) -> Result<(), SendError> {
        let room = Room::Wait(self.config.send_timeout);
        self.send_typed(envelope_for::<M>(to, 0, 0), view, &[], room)
    }

    /// Sends `message` if the ring has room now.
    pub fn try_send<M: Message>(
        &mut self,
        to: Remote<M::Receiver>,
        message: &M,
    ) -> Result<(), SendError> {
        self.send_typed(envelope_for::<M>(to, 0, 0), message, &[], Room::Try)
    }

    /// Sends `message` with descriptors attached, waiting for room for at
    /// most `timeout`.
    pub fn send_with_fds<M: Message>(
        &mut self,
        to: Remote<M::Receiver>,
        message: &M,
        fds: &[BorrowedFd<'_>],
        timeout: Option<Duration>,
    ) -> Result<(), SendError> {
        let envelope = envelope_for::<M>(to, 0, 0);
        self.send_typed(envelope, message, fds, Room::Wait(timeout))
    }

    /// Sends a request; `on_reply` runs during a later `dispatch` (or
    /// synchronous call) with the reply, or with the error that ended the
    /// wait (`Disconnected`, a protocol violation, or
    /// [`CallError::NoReply`] when the peer could not answer it).
    pub fn send_with_reply<M: Request>(
        &mut self,
        to: Remote<M::Receiver>,
        message: &M,
        on_reply: impl FnOnce(
            &mut Context<'_>,
            Result<&<M::Reply as rkyv::Archive>::Archived, CallError>,
        ) + Send
        + 'static,
    ) -> Result<(), SendError> {
        self.send_cancellable(to, message, on_reply).map(|_| ())
    }

    /// [`send_with_reply`](Self::send_with_reply), returning the request's
    /// id so that it can be [`cancel`](Self::cancel)led.
    pub fn send_cancellable<M: Request>(
        &mut self,
        to: Remote<M::Receiver>,
        message: &M,
        on_reply: impl FnOnce(
            &mut Context<'_>,
            Result<&<M::Reply as rkyv::Archive>::Archived, CallError>,
        ) + Send
        + 'static,
    ) -> Result<RequestId, SendError> {
        let max = self.config.max_pending_replies;
        if self.calls.handlers_waiting() >= max {
            return Err(SendError::TooManyPending { max });
        }
        let id = self.calls.next_id();
        let room = Room::Wait(self.config.send_timeout);
        self.send_typed(envelope_for::<M>(to, id, 0), message, &[], room)?;
        let handler: ReplyHandler = Box::new(move |context, result| match result {
            Ok(incoming) => match access_archive::<M::Reply>(incoming.bytes(), M::NAME) {
                Ok(reply) => on_reply(context, Ok(reply)),
                Err(violation) => {
                    let error = context.connection.fail(violation);
                    on_reply(context, Err(error.into()));
                }
            },
            Err(error) => on_reply(context, Err(error)),
        });
        self.calls
            .expect(id, Waiter::Handler(reply_to::<M>(), handler));
        Ok(RequestId {
            id,
            destination: to.destination(),
            to: reply_to::<M>(),
            schema: <M::Receiver as Receiver>::SCHEMA,
        })
    }

    /// Cancels a request sent with [`send_cancellable`](Self::send_cancellable):
    /// its reply handler is dropped without running, a reply that arrives
    /// later is dropped quietly (counted in
    /// [`TransportStats::late_replies_dropped`](crate::TransportStats::late_replies_dropped)),
    /// and the peer is told, so its handler can stop working on it
    /// ([`ReplyHandle::is_cancelled`](crate::ReplyHandle::is_cancelled)).
    /// Returns `Ok(false)` when there was nothing to cancel (its reply came
    /// already). The cancel waits for room in the ring like a `send`.
    pub fn cancel(&mut self, request: RequestId) -> Result<bool, SendError> {
        let Some(handler) = self.calls.cancel(request.id) else {
            return Ok(false);
        };
        drop(handler);
        self.send_cancel(request, Room::Wait(self.config.send_timeout))?;
        Ok(true)
    }

    /// Tells the peer that this side gave up on `request`.
    fn send_cancel(&mut self, request: RequestId, room: Room) -> Result<(), SendError> {
        let envelope = Envelope {
            destination: request.destination,
            request_id: request.id,
            receiver: request.to.receiver,
            schema: request.schema,
            message: request.to.message,
            flags: Flags(Flags::CANCEL),
            fd_count: 0,
        };
        self.check_sendable(0)?;
        let sent = self
            .outbox
            .lock()
            .send_bytes(envelope, &[], &[], room, &self.control);
        self.sent(sent)
    }

    /// Sends a request and waits for its reply for at most `timeout`.
    ///
    /// While it waits it still dispatches incoming synchronous requests and
    /// messages declared allowed-while-waiting (and replies to other
    /// requests); other messages are set aside, in order, for the next
    /// [`dispatch`](Self::dispatch). So two processes that call each other
    /// synchronously, even at the same moment, make progress instead of
    /// deadlocking. Calls nest at most
    /// [`max_sync_nesting`](crate::ConnectionConfig::max_sync_nesting) deep:
    /// the innermost one sets everything but its replies aside.
    ///
    /// A call that gives up (timed out, `QueueFull`, cancelled from another
    /// thread with a [`call_canceller`](Self::call_canceller), a handler's
    /// panic unwinding through it) cancels its request: the peer is told
    /// (if the ring has room at once), and the late reply is dropped
    /// quietly.
    pub fn send_sync<M: Request>(
        &mut self,
        to: Remote<M::Receiver>,
        message: &M,
        timeout: Duration,
    ) -> Result<Reply<M::Reply>, CallError> {
        self.send_sync_as::<M>(to, message, timeout)
    }

    /// [`send_sync`](Self::send_sync) with a [`View`] of the request:
    /// serialized from the caller's own buffers, received as an `M`.
    pub fn send_sync_as<M: Request>(
        &mut self,
        to: Remote<M::Receiver>,
        view: &impl View<M>,
        timeout: Duration,
    ) -> Result<Reply<M::Reply>, CallError> {
        let deadline = Instant::now().checked_add(timeout);
        let epoch = self.calls.cancel_epoch();
        let id = self.calls.next_id();
        let envelope = envelope_for::<M>(to, id, Flags::SYNC);
        self.send_typed(envelope, view, &[], Room::Wait(Some(timeout)))?;
        self.calls.expect(id, Waiter::Sync(reply_to::<M>()));
        self.calls.enter_sync();
        // A handler's panic further in unwinds through here: the call then
        // leaves nothing behind (no depth, no waiter) before it goes on.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.wait_for_reply(id, deadline, epoch)
        }));
        self.calls.leave_sync();
        let request = RequestId {
            id,
            destination: to.destination(),
            to: reply_to::<M>(),
            schema: <M::Receiver as Receiver>::SCHEMA,
        };
        let outcome = outcome.unwrap_or_else(|panic| {
            self.give_up(request);
            std::panic::resume_unwind(panic)
        });
        match outcome {
            Ok(incoming) if incoming.envelope.flags.has(Flags::ERROR) => {
                // `complete_reply` checked the reason.
                let reason = decode_no_reply(incoming.bytes());
                Err(reason.map_or(CallError::Disconnected, CallError::NoReply))
            }
            Ok(incoming) => {
                Reply::new(incoming, M::NAME).map_err(|violation| self.fail(violation).into())
            }
            Err(error) => {
                // The request went out: a reply may still come (after a
                // timeout, or a QueueFull). It is dropped quietly then.
                self.give_up(request);
                Err(error)
            }
        }
    }

    /// A synchronous caller stops waiting for `request`: nothing is kept
    /// for it, and the peer is told if the ring has room now (a cancel must
    /// not make a call that gave up wait longer; one that does not go out
    /// only leaves the peer answering for nothing).
    fn give_up(&mut self, request: RequestId) {
        self.calls.abandon(request.id);
        self.calls.cancelled += 1;
        if self.lifecycle.is_open() {
            let _ = self.send_cancel(request, Room::Try);
        }
    }

    /// A handle that cancels, from any thread, the synchronous calls
    /// waiting on this connection when it is used.
    pub fn call_canceller(&self) -> CallCanceller {
        self.calls.canceller(self.inbox.rx.wake_handle())
    }

    fn wait_for_reply(
        &mut self,
        id: u64,
        deadline: Option<Instant>,
        epoch: u64,
    ) -> Result<Incoming, CallError> {
        loop {
            if let Some(reply) = self.calls.take_arrived(id) {
                return Ok(reply);
            }
            if self.calls.cancel_epoch() != epoch {
                return Err(CallError::Cancelled);
            }
            // Answers given on other threads go out while we wait (a
            // handle's wake ends the ring wait below early for that).
            self.send_late_replies()?;
            // The budget is spent (by this call, or by one nested in it that
            // failed): reading on would set one more message aside per
            // nested call, without bound, while the calls further out wait.
            if self.set_aside_is_full() {
                return Err(CallError::QueueFull);
            }
            let remaining = match deadline {
                Some(deadline) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return Err(CallError::TimedOut);
                    }
                    Some(remaining)
                }
                None => None,
            };
            let incoming = match self.next_incoming(Some(remaining)) {
                Ok(incoming) => incoming,
                Err(RecvError::TimedOut | RecvError::Empty) => continue,
                Err(error) => return Err(error.into()),
            };
            let envelope = incoming.envelope;
            let flags = envelope.flags;
            // What may run now: replies and cancels (no handler runs for
            // either), and (unless calls already nest as deep as allowed)
            // synchronous requests, whose senders block as we do, and
            // messages declared allowed while waiting (`route` checks that
            // claim against the declaration).
            let may_nest = self.calls.sync_depth() < self.config.max_sync_nesting;
            let sync_request = flags.has(Flags::SYNC) && envelope.request_id != 0;
            if flags.has(Flags::REPLY)
                || flags.has(Flags::CANCEL)
                || (may_nest && (sync_request || flags.has(Flags::ALLOWED_WHILE_WAITING)))
            {
                if let Err(error) = self.route(incoming) {
                    // A nested handler's failure is not this call's: if our
                    // reply arrived meanwhile (parked by a nested wait), it
                    // is the answer.
                    return match self.calls.take_arrived(id) {
                        Some(reply) => Ok(reply),
                        None => Err(error.into()),
                    };
                }
            } else if self.set_message_aside(incoming) {
                return Err(CallError::QueueFull);
            }
        }
    }

    /// Sends a typed frame: `envelope` and the archive of `value`.
    pub(crate) fn send_typed<T: Archivable>(
        &mut self,
        envelope: Envelope,
        value: &T,
        fds: &[BorrowedFd<'_>],
        room: Room,
    ) -> Result<(), SendError> {
        self.check_sendable(fds.len())?;
        let sent = self
            .outbox
            .lock()
            .send_archived(envelope, value, fds, room, &self.control);
        self.sent(sent)
    }
}
