//! Typed receiving: routing each message to the handler registered for its
//! receiver and destination, and setting messages aside while a synchronous
//! call waits.

use crate::connection::Connection;
use crate::envelope::{Envelope, Flags};
use crate::error::{DispatchError, RecvError, Violation};
use crate::incoming::Incoming;
use crate::message::Receiver;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// A registered handler, type-erased: validates and dispatches one message.
pub(crate) type Handle =
    Box<dyn FnMut(&mut Connection, &Incoming) -> Result<(), DispatchError> + Send>;

/// A receiver implementation ready to be registered on a connection; made
/// by the `handler` function [`protocol!`](crate::protocol) generates.
pub struct BoundReceiver {
    name: &'static str,
    id: u32,
    schema: u32,
    handle: Handle,
}

impl BoundReceiver {
    /// Wraps a dispatch function for receiver `R`. Generated code calls this.
    #[doc(hidden)]
    pub fn new<R: Receiver>(
        handle: impl FnMut(&mut Connection, &Incoming) -> Result<(), DispatchError> + Send + 'static,
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

/// A registration: the handler is taken out while it runs, so that it can
/// use the connection; a message for it meanwhile is set aside.
struct Slot {
    name: &'static str,
    schema: u32,
    handle: Option<Handle>,
}

/// What a connection keeps for typed messaging.
#[derive(Default)]
pub(crate) struct Dispatcher {
    slots: HashMap<(u32, u64), Slot>,
    pub(crate) calls: crate::call::Calls,
    /// Messages that arrived while a synchronous call waited, in order.
    deferred: VecDeque<Incoming>,
    deferred_bytes: usize,
}

impl Connection {
    /// Registers `receiver` to handle the messages sent to `destination`.
    /// Replaces (and returns) an earlier registration of the same receiver
    /// there.
    pub fn register(&mut self, destination: u64, receiver: BoundReceiver) -> Option<BoundReceiver> {
        let slot = Slot {
            name: receiver.name,
            schema: receiver.schema,
            handle: Some(receiver.handle),
        };
        let old = self
            .dispatcher
            .slots
            .insert((receiver.id, destination), slot)?;
        Some(BoundReceiver {
            name: old.name,
            id: receiver.id,
            schema: old.schema,
            handle: old.handle?,
        })
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
        let Some(slot) = self.dispatcher.slots.get_mut(&key) else {
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
        let Some(mut handle) = slot.handle.take() else {
            // Its handler is running further up this thread's stack (a
            // re-entrant call): run this message after it returns.
            self.defer(incoming);
            return Ok(());
        };
        let result = handle(self, &incoming);
        if let Some(slot) = self.dispatcher.slots.get_mut(&key) {
            if slot.handle.is_none() {
                slot.handle = Some(handle);
            }
        }
        self.finish(&mut incoming);
        result
    }

    /// Sets a message aside until the next `dispatch`, copying it out of the
    /// ring if it is read in place there. Returns whether the set-aside
    /// messages now exceed the configured bound.
    pub(crate) fn defer(&mut self, mut incoming: Incoming) -> bool {
        self.make_owned(&mut incoming);
        self.dispatcher.deferred_bytes += incoming.bytes().len();
        self.dispatcher.deferred.push_back(incoming);
        self.dispatcher.deferred_bytes > self.config.max_deferred_bytes
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
        self.send_archived(
            envelope,
            reply,
            &[],
            crate::outgoing::Room::Wait(Some(REPLY_TIMEOUT)),
        )
        .map_err(DispatchError::Reply)
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
