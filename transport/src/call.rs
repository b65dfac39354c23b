//! Typed sending: messages, requests with a reply handler, and synchronous
//! calls that keep dispatching the messages marked allowed-while-waiting, so
//! two processes calling each other synchronously do not deadlock.

use crate::connection::{Connection, Context, ReplyHandler};
use crate::error::{CallError, RecvError, SendError, Violation};
use crate::incoming::{Incoming, access_archive};
use crate::message::{Archivable, Message, Receiver, Remote, Request};
use crate::outbox::Room;
use crate::pending::{ReplyTo, Waiter};
use crate::wire::{Envelope, Flags};
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
        let room = Room::Wait(self.config.send_timeout);
        self.send_typed(envelope_for::<M>(to, 0, 0), message, &[], room)
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
    /// wait (`Disconnected`, a protocol violation).
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
        Ok(())
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
    pub fn send_sync<M: Request>(
        &mut self,
        to: Remote<M::Receiver>,
        message: &M,
        timeout: Duration,
    ) -> Result<Reply<M::Reply>, CallError> {
        let deadline = Instant::now().checked_add(timeout);
        let id = self.calls.next_id();
        let envelope = envelope_for::<M>(to, id, Flags::SYNC);
        self.send_typed(envelope, message, &[], Room::Wait(Some(timeout)))?;
        self.calls.expect(id, Waiter::Sync(reply_to::<M>()));
        self.calls.enter_sync();
        // A handler's panic further in unwinds through here: the call then
        // leaves nothing behind (no depth, no waiter) before it goes on.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.wait_for_reply(id, deadline)
        }));
        self.calls.leave_sync();
        let outcome = outcome.unwrap_or_else(|panic| {
            self.calls.abandon(id);
            std::panic::resume_unwind(panic)
        });
        match outcome {
            Ok(incoming) => {
                Reply::new(incoming, M::NAME).map_err(|violation| self.fail(violation).into())
            }
            Err(error) => {
                // The request went out: a reply may still come (after a
                // timeout, or a QueueFull). It is dropped quietly then.
                self.calls.abandon(id);
                Err(error)
            }
        }
    }

    fn wait_for_reply(
        &mut self,
        id: u64,
        deadline: Option<Instant>,
    ) -> Result<Incoming, CallError> {
        loop {
            if let Some(reply) = self.calls.take_arrived(id) {
                return Ok(reply);
            }
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
            // What may run now: replies, and (unless calls already nest as
            // deep as allowed) synchronous requests, whose senders block as
            // we do, and messages declared allowed while waiting (`route`
            // checks that claim against the declaration).
            let may_nest = self.calls.sync_depth() < self.config.max_sync_nesting;
            let sync_request = flags.has(Flags::SYNC) && envelope.request_id != 0;
            if flags.has(Flags::REPLY)
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
