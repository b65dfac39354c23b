//! Typed receiving: routing each message to the handler registered for its
//! receiver and destination, and setting messages aside while a synchronous
//! call waits.

use crate::connection::{Connection, State};
use crate::envelope::{Envelope, Flags};
use crate::error::{DispatchError, RecvError, SendError, Violation};
use crate::id_map::IdMap;
use crate::incoming::Incoming;
use crate::message::Receiver;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

/// A handler as it is built: type-erased, validates and dispatches one
/// message.
type BoxedHandle = Box<dyn Fn(&mut Connection, &Incoming) -> Result<(), DispatchError> + Send>;

/// A registered handler. Shared, not taken out while it runs, so that a
/// message can re-enter a receiver whose handler is further up the stack
/// (handlers take `&self`).
type Handle = Rc<dyn Fn(&mut Connection, &Incoming) -> Result<(), DispatchError> + Send>;

/// A receiver implementation ready to be registered on a connection; made
/// by the `handler` function [`protocol!`](crate::protocol) generates.
pub struct BoundReceiver {
    name: &'static str,
    id: u32,
    schema: u32,
    handle: BoxedHandle,
}

impl BoundReceiver {
    /// Wraps a dispatch function for receiver `R`. Generated code calls this.
    #[doc(hidden)]
    pub fn new<R: Receiver>(
        handle: impl Fn(&mut Connection, &Incoming) -> Result<(), DispatchError> + Send + 'static,
    ) -> BoundReceiver {
        BoundReceiver {
            name: R::NAME,
            id: R::ID,
            schema: R::SCHEMA,
            handle: Box::new(handle),
        }
    }
}

impl std::fmt::Debug for BoundReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BoundReceiver({})", self.name)
    }
}

/// A registration.
struct Slot {
    name: &'static str,
    schema: u32,
    handle: Handle,
}

/// What a connection keeps for typed messaging.
#[derive(Default)]
pub(crate) struct Dispatcher {
    slots: IdMap<(u32, u64), Slot>,
    pub(crate) calls: crate::call::Calls,
    /// Messages that arrived while a synchronous call waited, in order.
    deferred: VecDeque<Incoming>,
    deferred_bytes: usize,
}

impl Dispatcher {
    /// Drops every message received but not yet dispatched, and the replies
    /// waiting for their synchronous callers: after a protocol violation
    /// nothing the peer sent is trusted.
    pub(crate) fn discard_received(&mut self) {
        self.deferred.clear();
        self.deferred_bytes = 0;
        self.calls.discard_arrived();
    }
}

impl Connection {
    /// Registers `receiver` to handle the messages sent to `destination`.
    /// Replaces an earlier registration of the same receiver there (and
    /// returns whether there was one).
    pub fn register(&mut self, destination: u64, receiver: BoundReceiver) -> bool {
        let slot = Slot {
            name: receiver.name,
            schema: receiver.schema,
            handle: Rc::from(receiver.handle),
        };
        let key = (receiver.id, destination);
        self.dispatcher.slots.insert(key, slot).is_some()
    }

    /// Removes the registration of receiver `R` at `destination`.
    pub fn unregister<R: Receiver>(&mut self, destination: u64) -> bool {
        self.dispatcher
            .slots
            .remove(&(R::ID, destination))
            .is_some()
    }

    /// Dispatches incoming messages to their handlers: first those set aside
    /// during synchronous calls, then everything in the ring, waiting at most
    /// `timeout` for the first one. Returns how many were dispatched (0 when
    /// the timeout expired).
    pub fn dispatch(&mut self, timeout: Option<Duration>) -> Result<usize, DispatchError> {
        let mut count = 0;
        while let Some(incoming) = self.dispatcher.deferred.pop_front() {
            self.dispatcher.deferred_bytes -= incoming.bytes().len();
            // A violation (maybe raised by a handler's nested call in this
            // very loop) ends all dispatching of what the peer sent.
            if let State::Failed(violation) = &self.state {
                return Err(DispatchError::ProtocolViolation {
                    peer: self.config.peer_name.clone(),
                    violation: violation.clone(),
                });
            }
            self.route(incoming)?;
            count += 1;
        }
        let mut wait = if count == 0 { Some(timeout) } else { None };
        loop {
            match self.next_incoming(wait) {
                Ok(incoming) => self.route(incoming)?,
                Err(RecvError::Empty | RecvError::TimedOut) => return Ok(count),
                Err(RecvError::Disconnected) if count > 0 => return Ok(count),
                Err(error) => return Err(recv_to_dispatch(error)),
            }
            count += 1;
            wait = None;
        }
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
        let key = (envelope.receiver, envelope.destination);
        let Some(slot) = self.dispatcher.slots.get(&key) else {
            self.finish(&mut incoming);
            return Err(self.protocol_violation(Violation::UnknownDestination {
                receiver: envelope.receiver,
                destination: envelope.destination,
            }));
        };
        if slot.schema != envelope.schema {
            let violation = Violation::SchemaMismatch {
                receiver: slot.name,
                expected: slot.schema,
                found: envelope.schema,
            };
            self.finish(&mut incoming);
            return Err(self.protocol_violation(violation));
        }
        // A clone, so the handler may unregister itself or be re-entered
        // (its own synchronous call may bring another message for it).
        let handle = Rc::clone(&slot.handle);
        if envelope.flags.has(Flags::SYNC) {
            // Its handler is the kind that calls back and waits. Read in
            // place, the request would pin the ring for that whole wait, and
            // a peer sending more than a ring's worth meanwhile would block.
            self.make_owned(&mut incoming);
        }
        let outer_fds = std::mem::replace(&mut self.message_fds, incoming.take_fds());
        let result = handle(self, &incoming);
        // Descriptors the handler did not take are closed here.
        self.message_fds = outer_fds;
        self.finish(&mut incoming);
        result
    }

    /// Sets a message aside until the next `dispatch` (a synchronous call
    /// waits and the message is not allowed meanwhile), copying it out of
    /// the ring if it is read in place there. Returns whether the set-aside
    /// messages now exceed the configured bound.
    pub(crate) fn defer(&mut self, mut incoming: Incoming) -> bool {
        self.make_owned(&mut incoming);
        self.dispatcher.deferred_bytes += incoming.bytes().len();
        self.dispatcher.deferred.push_back(incoming);
        self.dispatcher.deferred_bytes > self.config.max_deferred_bytes
    }

    /// Takes the descriptors that came with the message being dispatched
    /// (call it from a handler; those not taken are closed when the handler
    /// returns).
    pub fn take_fds(&mut self) -> Vec<std::os::fd::OwnedFd> {
        std::mem::take(&mut self.message_fds)
    }

    /// Whether messages are set aside, waiting for `dispatch`.
    pub fn has_deferred(&self) -> bool {
        !self.dispatcher.deferred.is_empty()
    }

    /// Reports a protocol violation found while dispatching: the connection
    /// is closed. Generated dispatch code calls this.
    #[doc(hidden)]
    pub fn protocol_violation(&mut self, violation: Violation) -> DispatchError {
        recv_to_dispatch(self.fail(violation))
    }

    /// Sends the reply to `request` (nothing if no reply was asked for).
    /// Generated dispatch code calls this.
    #[doc(hidden)]
    pub fn send_reply<T: crate::message::Archivable>(
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
        let room = crate::outgoing::Room::Wait(Some(REPLY_TIMEOUT));
        self.send_archived(envelope, reply, &[], room)
            .map_err(|error| match error {
                // The requester died before its answer: that is the peer
                // going away, not a failure to reply.
                SendError::Disconnected => DispatchError::Disconnected,
                other => DispatchError::Reply(other),
            })
    }
}

/// How long a reply may wait for room in the ring. The requester reads its
/// ring while it waits, so only a peer that stopped reading hits this.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn recv_to_dispatch(error: RecvError) -> DispatchError {
    match error {
        RecvError::ProtocolViolation { peer, violation } => {
            DispatchError::ProtocolViolation { peer, violation }
        }
        RecvError::Disconnected | RecvError::Empty | RecvError::TimedOut => {
            DispatchError::Disconnected
        }
    }
}
