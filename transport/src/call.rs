//! Requests and their replies: asynchronous sends, sends with a reply
//! handler, and synchronous calls that keep dispatching the messages marked
//! allowed-while-waiting, so two processes calling each other synchronously
//! do not deadlock.

use crate::connection::Connection;
use crate::envelope::{Envelope, Flags};
use crate::error::{CallError, DispatchError, RecvError, SendError, Violation};
use crate::id_map::IdMap;
use crate::incoming::Incoming;
use crate::message::{Archivable, Message, Receiver, Remote, Request, access_archive};
use crate::outgoing::Room;
use std::marker::PhantomData;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

type ReplyHandler = Box<dyn FnOnce(&mut Connection, Result<&Incoming, CallError>) + Send>;

/// Who waits for the reply to a request.
enum Pending {
    /// A handler given to `send_with_reply`.
    Handler(ReplyTo, ReplyHandler),
    /// A `send_sync` further up the stack; the reply is parked in `arrived`.
    Sync(ReplyTo),
    /// A `send_sync` that failed after sending: a late reply is dropped.
    Abandoned,
}

/// What a reply must name: the receiver and message of its request.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ReplyTo {
    receiver: u32,
    message: u32,
}

impl ReplyTo {
    fn of<M: Message>() -> Self {
        ReplyTo {
            receiver: <M::Receiver as Receiver>::ID,
            message: M::ID,
        }
    }

    fn named_by(&self, envelope: &Envelope) -> bool {
        envelope.receiver == self.receiver && envelope.message == self.message
    }
}

/// Requests in flight on one connection.
#[derive(Default)]
pub(crate) struct Calls {
    next_request: u64,
    pending: IdMap<u64, Pending>,
    /// Replies that arrived for synchronous calls, not yet collected.
    arrived: IdMap<u64, Incoming>,
}

impl Calls {
    /// Drops replies not yet collected by their synchronous callers.
    pub(crate) fn discard_arrived(&mut self) {
        self.arrived.clear();
    }

    fn next_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }
}

/// The reply to a synchronous call, validated, in a private buffer or a
/// sealed blob.
pub struct Reply<T: Archivable> {
    incoming: Incoming,
    _type: PhantomData<fn() -> T>,
}

impl<T: Archivable> Reply<T> {
    fn new(incoming: Incoming, name: &'static str) -> Result<Self, Violation> {
        access_archive::<T>(incoming.bytes(), name)?;
        Ok(Reply {
            incoming,
            _type: PhantomData,
        })
    }

    /// The archived reply.
    pub fn get(&self) -> &T::Archived {
        // SAFETY: `new` validated these exact bytes as a `T` archive, and
        // they cannot change: they are a private copy owned by `self` or a
        // blob sealed against writes.
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

fn envelope_for<M: Message>(to: Remote<M::Receiver>, request_id: u64, extra: u16) -> Envelope {
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
        self.send_archived(
            envelope_for::<M>(to, 0, 0),
            message,
            &[],
            Room::Wait(self.config.send_timeout),
        )
    }

    /// Sends `message` if the ring has room now.
    pub fn try_send<M: Message>(
        &mut self,
        to: Remote<M::Receiver>,
        message: &M,
    ) -> Result<(), SendError> {
        self.send_archived(envelope_for::<M>(to, 0, 0), message, &[], Room::Try)
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
        self.send_archived(
            envelope_for::<M>(to, 0, 0),
            message,
            fds,
            Room::Wait(timeout),
        )
    }

    /// Sends a request; `on_reply` runs during a later `dispatch` (or
    /// synchronous call) with the reply, or with the error that ended the
    /// wait (`Disconnected`, a protocol violation).
    pub fn send_with_reply<M: Request>(
        &mut self,
        to: Remote<M::Receiver>,
        message: &M,
        on_reply: impl FnOnce(
            &mut Connection,
            Result<&<M::Reply as rkyv::Archive>::Archived, CallError>,
        ) + Send
        + 'static,
    ) -> Result<(), SendError> {
        let id = self.dispatcher.calls.next_id();
        self.send_archived(
            envelope_for::<M>(to, id, 0),
            message,
            &[],
            Room::Wait(self.config.send_timeout),
        )?;
        let handler: ReplyHandler = Box::new(move |connection, result| match result {
            Ok(incoming) => match access_archive::<M::Reply>(incoming.bytes(), M::NAME) {
                Ok(reply) => on_reply(connection, Ok(reply)),
                Err(violation) => {
                    let error = connection.fail(violation);
                    on_reply(connection, Err(error.into()));
                }
            },
            Err(error) => on_reply(connection, Err(error)),
        });
        let expected = ReplyTo::of::<M>();
        let pending = Pending::Handler(expected, handler);
        self.dispatcher.calls.pending.insert(id, pending);
        Ok(())
    }

    /// Sends a request and waits for its reply for at most `timeout`.
    ///
    /// While it waits it still dispatches incoming messages marked
    /// allowed-while-waiting (and replies to other requests); other messages
    /// are set aside, in order, for the next [`dispatch`](Self::dispatch).
    /// So two processes that call each other synchronously and re-entrantly
    /// make progress instead of deadlocking.
    pub fn send_sync<M: Request>(
        &mut self,
        to: Remote<M::Receiver>,
        message: &M,
        timeout: Duration,
    ) -> Result<Reply<M::Reply>, CallError> {
        let deadline = Instant::now().checked_add(timeout);
        let id = self.dispatcher.calls.next_id();
        self.send_archived(
            envelope_for::<M>(to, id, Flags::SYNC),
            message,
            &[],
            Room::Wait(Some(timeout)),
        )?;
        self.dispatcher
            .calls
            .pending
            .insert(id, Pending::Sync(ReplyTo::of::<M>()));
        let outcome = self.wait_for_reply(id, deadline);
        let calls = &mut self.dispatcher.calls;
        match outcome {
            Ok(incoming) => {
                Reply::new(incoming, M::NAME).map_err(|violation| self.fail(violation).into())
            }
            Err(error) => {
                // The request went out: a reply may still come (after a
                // timeout, or a QueueFull). Drop it quietly when it does.
                if calls.pending.remove(&id).is_some() {
                    calls.pending.insert(id, Pending::Abandoned);
                }
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
            if let Some(reply) = self.dispatcher.calls.arrived.remove(&id) {
                return Ok(reply);
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
            let flags = incoming.envelope.flags;
            if flags.has(Flags::REPLY) || flags.has(Flags::ALLOWED_WHILE_WAITING) {
                self.route(incoming).map_err(dispatch_to_call)?;
            } else if self.defer(incoming) {
                return Err(CallError::QueueFull);
            }
        }
    }

    /// Delivers a reply to whoever waits for it.
    pub(crate) fn complete_reply(&mut self, mut incoming: Incoming) -> Result<(), DispatchError> {
        let id = incoming.envelope.request_id;
        let pending = self.dispatcher.calls.pending.remove(&id);
        let expected = match &pending {
            Some(Pending::Handler(expected, _) | Pending::Sync(expected)) => Some(*expected),
            _ => None,
        };
        if expected.is_some_and(|expected| !expected.named_by(&incoming.envelope)) {
            // A reply must answer the message it claims to: a different
            // receiver or message id would have its bytes validated as the
            // wrong type.
            self.finish(&mut incoming);
            return Err(self.protocol_violation(Violation::MismatchedReply(id)));
        }
        match pending {
            Some(Pending::Handler(_, handler)) => {
                handler(self, Ok(&incoming));
                self.finish(&mut incoming);
                Ok(())
            }
            Some(Pending::Sync(_)) => {
                // The caller is further up the stack and collects it later:
                // it must not stay in the ring.
                self.make_owned(&mut incoming);
                self.dispatcher.calls.arrived.insert(id, incoming);
                Ok(())
            }
            Some(Pending::Abandoned) => {
                self.finish(&mut incoming);
                Ok(())
            }
            None => {
                self.finish(&mut incoming);
                Err(self.protocol_violation(Violation::UnexpectedReply(id)))
            }
        }
    }

    /// Fails every request still waiting for a reply handler: the peer is
    /// gone, no reply will come.
    pub(crate) fn fail_pending_calls(&mut self, error: CallError) {
        let pending = std::mem::take(&mut self.dispatcher.calls.pending);
        for (id, waiter) in pending {
            match waiter {
                Pending::Handler(_, handler) => handler(self, Err(error.clone())),
                // Synchronous callers learn it from their own receive.
                Pending::Sync(expected) => {
                    let still_waiting = Pending::Sync(expected);
                    self.dispatcher.calls.pending.insert(id, still_waiting);
                }
                Pending::Abandoned => {}
            }
        }
    }
}

fn dispatch_to_call(error: DispatchError) -> CallError {
    match error {
        DispatchError::Disconnected => CallError::Disconnected,
        DispatchError::ProtocolViolation { peer, violation } => {
            CallError::ProtocolViolation { peer, violation }
        }
        DispatchError::Reply(error) => CallError::from(error),
    }
}
