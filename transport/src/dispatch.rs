//! Typed receiving: routing each message to the handler registered for its
//! receiver and destination, each reply to whoever waits for it, and the
//! messages set aside during a synchronous call to the next `dispatch`.

use crate::connection::{BoundReceiver, Connection};
use crate::error::{CallError, DispatchError, RecvError, SendError, Violation, reply_failed};
use crate::inbox::Ready;
use crate::incoming::Incoming;
use crate::message::{Archivable, Receiver};
use crate::outbox::Room;
use crate::pending::Waiter;
use crate::registry::Registration;
use crate::reply_handle::{HandleRefusal, LateBody, ReplyHandle};
use crate::set_aside::Budget;
use crate::wire::{Envelope, Flags, NoReply, decode_no_reply, encode_no_reply};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How many messages `dispatch` handles between two reads of the clock.
const CLOCK_EVERY: usize = 16;

impl Connection {
    /// Registers `receiver` to handle the messages sent to `destination`.
    /// Replaces an earlier registration of the same receiver there (and
    /// returns whether there was one).
    pub fn register(&mut self, destination: u64, receiver: BoundReceiver) -> bool {
        let registration = Registration {
            name: receiver.name,
            schema: receiver.schema,
            allowed_while_waiting: receiver.allowed_while_waiting,
            handler: Rc::from(receiver.handler),
        };
        self.receivers
            .register(receiver.id, destination, registration)
    }

    /// Removes the registration of receiver `R` at `destination`.
    pub fn unregister<R: Receiver>(&mut self, destination: u64) -> bool {
        self.receivers.unregister(R::ID, destination)
    }

    /// Dispatches incoming messages to their handlers: first those set aside
    /// during synchronous calls, then what is in the ring, waiting at most
    /// `timeout` for the first one. Returns how many were dispatched (0 when
    /// the timeout expired). Replies answered on other threads
    /// ([`ReplyHandle`](crate::ReplyHandle)) are sent as it goes; one given
    /// while it waits wakes it, is sent, and the wait goes on.
    ///
    /// One call does bounded work, so that an event loop serving several
    /// connections stays fair: it returns after
    /// [`max_dispatch_batch`](crate::ConnectionConfig::max_dispatch_batch)
    /// messages, or once `timeout` has passed, even while a busy peer keeps
    /// sending (call again for more).
    pub fn dispatch(&mut self, timeout: Option<Duration>) -> Result<usize, DispatchError> {
        self.dispatch_up_to(self.config.max_dispatch_batch, timeout)
    }

    /// Dispatches exactly one message (a set-aside one first), waiting at
    /// most `timeout` for it. Returns whether there was one.
    pub fn dispatch_one(&mut self, timeout: Option<Duration>) -> Result<bool, DispatchError> {
        self.dispatch_up_to(1, timeout).map(|count| count == 1)
    }

    fn dispatch_up_to(
        &mut self,
        batch: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, DispatchError> {
        // Read the clock only once it is needed: a message already there
        // (a busy peer) costs no clock read, and a clock read costs about
        // as much as a small message.
        let mut deadline = LazyDeadline::new(timeout);
        let batch = batch.max(1);
        let mut count = 0;
        while count < batch {
            let Some(incoming) = self.set_aside.pop() else {
                break;
            };
            // A violation (maybe raised by a handler's nested call in this
            // very loop) ends all dispatching of what the peer sent.
            if let Some(error) = self.lifecycle.dispatch_error() {
                return Err(error);
            }
            self.route(incoming)?;
            count += 1;
        }
        // Only a call that dispatched nothing yet waits.
        let mut may_wait = count == 0 && timeout != Some(Duration::ZERO);
        while count < batch {
            // The common cases first (a plain frame there, or nothing and no
            // wait asked for), then the general path, late replies first.
            let next = match self.ready_incoming() {
                Ready::Frame(incoming) => Ok(incoming),
                Ready::Empty if !may_wait => return Ok(count),
                Ready::Empty | Ready::Other => {
                    self.send_late_replies()?;
                    match self.next_incoming(None) {
                        Err(RecvError::Empty) if may_wait => match deadline.remaining() {
                            Some(wait) => self.next_incoming(Some(wait)),
                            None => return Ok(count),
                        },
                        other => other,
                    }
                }
            };
            match next {
                Ok(incoming) => {
                    // A batch of more than one message starts the clock
                    // (a dispatch of one, a round trip's, reads none).
                    if count == 1 {
                        deadline.start();
                    }
                    self.route(incoming)?
                }
                // A reply handle's wake ends the wait early: send what it
                // queued (next turn) and wait on for what is left.
                Err(RecvError::TimedOut) if may_wait => continue,
                Err(RecvError::Empty | RecvError::TimedOut) => return Ok(count),
                Err(RecvError::Disconnected) if count > 0 => return Ok(count),
                Err(error) => return Err(error.into()),
            }
            count += 1;
            may_wait = false;
            // The clock is read every few messages.
            if count % CLOCK_EVERY == 0 && deadline.passed() {
                break;
            }
        }
        Ok(count)
    }

    /// Dispatches what is there without waiting.
    pub fn try_dispatch(&mut self) -> Result<usize, DispatchError> {
        self.dispatch(Some(Duration::ZERO))
    }

    /// Hands one message to whoever waits for it: a reply to its caller, a
    /// message to its receiver's handler.
    pub(crate) fn route(&mut self, mut incoming: Incoming) -> Result<(), DispatchError> {
        let envelope = incoming.envelope;
        if envelope.flags.has(Flags::REPLY) {
            return self.complete_reply(incoming);
        }
        if envelope.flags.has(Flags::RAW) {
            self.finish(&mut incoming);
            return Err(self.protocol_violation(Violation::UnexpectedRawFrame));
        }
        if envelope.flags.has(Flags::CANCEL) {
            // One lookup among the live reply handles, whatever it names.
            self.finish(&mut incoming);
            self.late.cancel(envelope.request_id);
            return Ok(());
        }
        let Some(registration) = self
            .receivers
            .lookup(envelope.receiver, envelope.destination)
        else {
            self.finish(&mut incoming);
            return self.route_to_gone_destination(&envelope);
        };
        if registration.schema != envelope.schema {
            let violation = Violation::SchemaMismatch {
                receiver: registration.name,
                expected: registration.schema,
                found: envelope.schema,
            };
            self.finish(&mut incoming);
            return Err(self.protocol_violation(violation));
        }
        let claimed = envelope.flags.has(Flags::ALLOWED_WHILE_WAITING);
        if (registration.allowed_while_waiting)(envelope.message)
            .is_some_and(|ours| ours != claimed)
        {
            // The receiver's declaration decides; a sender that claims
            // otherwise lies (an unknown message is the handler's to report).
            let violation = Violation::AllowedWhileWaitingMismatch {
                receiver: registration.name,
                message: envelope.message,
            };
            self.finish(&mut incoming);
            return Err(self.protocol_violation(violation));
        }
        // A clone, so the handler may unregister itself or be re-entered
        // (its own synchronous call may bring another message for it).
        let handler = Rc::clone(&registration.handler);
        if envelope.flags.has(Flags::SYNC) {
            // Its handler is the kind that calls back and waits. Read in
            // place, the request would pin the ring for that whole wait, and
            // a peer sending more than a ring's worth meanwhile would block.
            self.inbox.make_owned(&mut incoming);
        }
        let outer_fds = std::mem::replace(&mut self.message_fds, incoming.take_fds());
        // A handler that panics must not take its frame's room or the
        // enclosing message's descriptors with it: a caller that catches the
        // panic keeps a working connection. So the frame is finished and the
        // descriptors restored before the panic goes on.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handler(&mut self.context(), &incoming)
        }));
        // Descriptors the handler did not take are closed here.
        self.message_fds = outer_fds;
        self.finish(&mut incoming);
        match result {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// A message for no registered destination: a violation if its receiver
    /// kind is not one this side handles; otherwise (the object it was for
    /// is gone, e.g. a load cancelled while its data was in flight) dropped
    /// and counted, and a request answered with an error reply so its
    /// requester is not left waiting.
    fn route_to_gone_destination(&mut self, envelope: &Envelope) -> Result<(), DispatchError> {
        let Some(kind) = self.receivers.kind(envelope.receiver) else {
            return Err(self.protocol_violation(Violation::UnknownReceiver {
                receiver: envelope.receiver,
                destination: envelope.destination,
            }));
        };
        if kind.schema != envelope.schema {
            return Err(self.protocol_violation(Violation::SchemaMismatch {
                receiver: kind.name,
                expected: kind.schema,
                found: envelope.schema,
            }));
        }
        self.receivers.dropped_gone += 1;
        self.send_no_reply(envelope, NoReply::DestinationGone)
    }

    /// Delivers a reply to whoever waits for it.
    fn complete_reply(&mut self, mut incoming: Incoming) -> Result<(), DispatchError> {
        let id = incoming.envelope.request_id;
        let Some(waiter) = self.calls.complete(id) else {
            if crate::routed::is_routed(id) {
                // A call of a sending half: its caller waits elsewhere.
                return self.route_to_sender(incoming);
            }
            self.finish(&mut incoming);
            if self.calls.issued(id) {
                // The late answer to a call given up on (cancelled, timed
                // out, set-aside queue full): dropped quietly.
                self.calls.late_replies_dropped += 1;
                return Ok(());
            }
            return Err(self.protocol_violation(Violation::UnexpectedReply(id)));
        };
        let (Waiter::Handler(expected, _) | Waiter::Sync(expected)) = &waiter;
        if !expected.named_by(&incoming.envelope) {
            // A reply must answer the message it claims to: a different
            // receiver or message id would have its bytes validated as the
            // wrong type. Its reply handler still learns how it ended.
            self.finish(&mut incoming);
            let error = self.protocol_violation(Violation::MismatchedReply(id));
            if let Waiter::Handler(_, handler) = waiter {
                handler(&mut self.context(), Err(error.clone().into()));
            }
            return Err(error);
        }
        let refused = incoming
            .envelope
            .flags
            .has(Flags::ERROR)
            .then(|| decode_no_reply(incoming.bytes()));
        if let Some(None) = refused {
            self.finish(&mut incoming);
            let error = self.protocol_violation(Violation::BadErrorReply(id));
            if let Waiter::Handler(_, handler) = waiter {
                handler(&mut self.context(), Err(error.clone().into()));
            }
            return Err(error);
        }
        match waiter {
            Waiter::Handler(_, handler) => {
                match refused {
                    Some(Some(reason)) => {
                        handler(&mut self.context(), Err(CallError::NoReply(reason)))
                    }
                    _ => handler(&mut self.context(), Ok(&incoming)),
                }
                self.finish(&mut incoming);
            }
            Waiter::Sync(_) => {
                // The caller is further up the stack and collects it later:
                // it must not stay in the ring.
                self.inbox.make_owned(&mut incoming);
                self.calls.park_reply(id, incoming);
            }
        }
        Ok(())
    }

    /// Sets a message aside until the next `dispatch` (a synchronous call
    /// waits and the message is not allowed meanwhile), copying it out of
    /// the ring if it is read in place there. Returns whether the set-aside
    /// messages now exceed the configured bound.
    pub(crate) fn set_message_aside(&mut self, mut incoming: Incoming) -> bool {
        self.inbox.make_owned(&mut incoming);
        let budget = self.set_aside_budget();
        self.set_aside.push(incoming, budget)
    }

    /// Whether the messages set aside exceed the configured bound: then no
    /// synchronous call may read on (each would set one more aside) until
    /// a `dispatch` has taken some.
    pub(crate) fn set_aside_is_full(&self) -> bool {
        self.set_aside.exceeds(self.set_aside_budget())
    }

    pub(crate) fn set_aside_budget(&self) -> Budget {
        Budget {
            bytes: self.config.max_deferred_bytes,
            fds: self.config.max_deferred_fds,
        }
    }

    /// Takes the descriptors that came with the message being dispatched
    /// (call it from a handler; those not taken are closed when the handler
    /// returns).
    pub fn take_fds(&mut self) -> Vec<std::os::fd::OwnedFd> {
        std::mem::take(&mut self.message_fds)
    }

    /// Whether messages are set aside, waiting for `dispatch`.
    pub fn has_deferred(&self) -> bool {
        !self.set_aside.is_empty()
    }

    /// Reports a protocol violation found while dispatching: the connection
    /// is closed. Generated dispatch code calls this.
    #[doc(hidden)]
    pub fn protocol_violation(&mut self, violation: Violation) -> DispatchError {
        self.fail(violation).into()
    }

    /// Sends an error reply to `request` (nothing if no reply was asked
    /// for): it will get no answer, for `reason`.
    pub(crate) fn send_no_reply(
        &mut self,
        request: &Envelope,
        reason: NoReply,
    ) -> Result<(), DispatchError> {
        if request.request_id == 0 {
            return Ok(());
        }
        let envelope = Envelope {
            flags: Flags(Flags::REPLY | Flags::ERROR),
            fd_count: 0,
            ..*request
        };
        self.send_reply_bytes(envelope, &encode_no_reply(reason))
    }

    /// Sends a reply frame already encoded, waiting for room as replies do
    /// (see [`send_reply`](Self::send_reply)).
    fn send_reply_bytes(&mut self, envelope: Envelope, body: &[u8]) -> Result<(), DispatchError> {
        if let Some(error) = self.lifecycle.send_error() {
            return Err(reply_failed(error));
        }
        let room = Room::Wait(Some(self.config.reply_timeout));
        let sent = self
            .outbox
            .lock()
            .send_bytes(envelope, body, &[], room, &self.control);
        match self.sent(sent) {
            Err(SendError::TimedOut) => Err(self.protocol_violation(Violation::RepliesNotTaken)),
            sent => sent.map_err(reply_failed),
        }
    }

    /// Sends the answers reply handles gave on other threads since the last
    /// call (nothing to do costs one relaxed load). Once the connection has
    /// ended they are dropped.
    #[inline]
    pub(crate) fn send_late_replies(&mut self) -> Result<(), DispatchError> {
        if !self.late.has_queued() {
            return Ok(());
        }
        self.send_queued_late_replies()
    }

    /// [`send_late_replies`](Self::send_late_replies) once answers wait.
    #[cold]
    fn send_queued_late_replies(&mut self) -> Result<(), DispatchError> {
        while let Some(reply) = self.late.pop() {
            if !self.lifecycle.is_open() {
                continue;
            }
            let sent = match &reply.body {
                LateBody::Archive(archive) => self.send_reply_bytes(reply.envelope, archive),
                LateBody::NoReply(reason) => {
                    self.send_reply_bytes(reply.envelope, &encode_no_reply(*reason))
                }
            };
            match sent {
                // The requester is gone: what is left has nobody to go to.
                Err(DispatchError::Disconnected) => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// Takes the next frame for pull-style receiving (`recv_frame`),
    /// sending the answers reply handles queued, first and whenever a
    /// handle's wake ends the ring wait early (the wait then goes on for
    /// what is left of `timeout`). An answer that cannot be sent is what the
    /// receive reports if it ended the connection; otherwise the next
    /// `dispatch` would, and pull-style receiving drops it.
    #[inline(never)]
    pub(crate) fn next_incoming_answering(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Incoming, RecvError> {
        let _ = self.send_late_replies();
        // A frame already there (a busy peer) costs no clock read.
        match self.next_incoming(None) {
            Err(RecvError::Empty) => {}
            other => return other,
        }
        let mut deadline = LazyDeadline::new(timeout);
        loop {
            let Some(wait) = deadline.remaining() else {
                return Err(RecvError::TimedOut);
            };
            let _ = self.send_late_replies();
            match self.next_incoming(Some(wait)) {
                Err(RecvError::TimedOut) => {}
                other => return other,
            }
        }
    }

    /// The reply handle of `request`, for a handler of a message declared
    /// `@reply_later`; `None` when the request was refused at
    /// `max_reply_handles` (its requester got an error reply, if it expects
    /// a reply). Generated dispatch code calls this.
    #[doc(hidden)]
    pub fn reply_handle<T: Archivable>(
        &mut self,
        request: &Envelope,
    ) -> Result<Option<ReplyHandle<T>>, DispatchError> {
        match self.late.handle(request) {
            Ok(handle) => Ok(Some(handle)),
            Err(HandleRefusal::Busy) => self.send_no_reply(request, NoReply::Busy).map(|()| None),
            Err(HandleRefusal::Duplicate(violation)) => Err(self.protocol_violation(violation)),
        }
    }

    /// Sends the reply to `request` (nothing if no reply was asked for).
    /// Generated dispatch code calls this.
    #[doc(hidden)]
    pub fn send_reply<T: Archivable>(
        &mut self,
        request: &Envelope,
        reply: &T,
    ) -> Result<(), DispatchError> {
        if request.request_id == 0 {
            return Ok(());
        }
        let envelope = Envelope {
            flags: Flags(Flags::REPLY),
            fd_count: 0,
            ..*request
        };
        // The requester reads its ring while it waits for the reply, so only
        // a peer that stopped reading hits the timeout: it is cut off, or it
        // would stall every dispatch of ours for that long.
        let room = Room::Wait(Some(self.config.reply_timeout));
        match self.send_typed(envelope, reply, &[], room) {
            Err(SendError::TimedOut) => Err(self.protocol_violation(Violation::RepliesNotTaken)),
            sent => sent.map_err(reply_failed),
        }
    }
}

/// A deadline `timeout` from the first moment it is asked for: the clock
/// is not read until a receive has to wait, or a dispatch goes on to a
/// second message. A batch then ends at most the first message's handling plus
/// `CLOCK_EVERY` messages after `timeout` (it was `CLOCK_EVERY` messages
/// when the clock was read on entry).
struct LazyDeadline {
    timeout: Option<Duration>,
    /// `None` until computed; then `None` inside for no deadline (no
    /// timeout, or one too long to have an `Instant`).
    at: Option<Option<Instant>>,
}

impl LazyDeadline {
    fn new(timeout: Option<Duration>) -> Self {
        LazyDeadline { timeout, at: None }
    }

    /// The deadline, computed from `now` if this is the first time it is
    /// asked for.
    fn at_from(&mut self, timeout: Duration, now: Instant) -> Option<Instant> {
        *self.at.get_or_insert_with(|| now.checked_add(timeout))
    }

    /// How long a wait may still take: `Some(None)` as long as it takes,
    /// `None` once the deadline has passed. One clock read, none without a
    /// timeout.
    fn remaining(&mut self) -> Option<Option<Duration>> {
        let Some(timeout) = self.timeout else {
            return Some(None);
        };
        let now = Instant::now();
        match self.at_from(timeout, now) {
            None => Some(None),
            Some(at) => at
                .checked_duration_since(now)
                .filter(|d| !d.is_zero())
                .map(Some),
        }
    }

    /// Starts the clock if it has not started yet.
    fn start(&mut self) {
        if let (Some(timeout), None) = (self.timeout, self.at) {
            self.at_from(timeout, Instant::now());
        }
    }

    fn passed(&mut self) -> bool {
        let Some(timeout) = self.timeout else {
            return false;
        };
        let now = Instant::now();
        self.at_from(timeout, now).is_some_and(|at| now >= at)
    }
}
