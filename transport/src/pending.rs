//! Requests in flight on one connection: their ids, who waits for each
//! reply, and the replies that arrived for synchronous callers further up
//! the stack. The connection owns one; the call and dispatch paths use it.

use crate::id_map::IdMap;
use crate::incoming::Incoming;
use crate::wire::Envelope;
use ferry_ring::WakeHandle;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a reply must name: the receiver and message of its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplyTo {
    pub(crate) receiver: u32,
    pub(crate) message: u32,
}

impl ReplyTo {
    pub(crate) fn named_by(&self, envelope: &Envelope) -> bool {
        envelope.receiver == self.receiver && envelope.message == self.message
    }
}

/// A request sent with
/// [`send_cancellable`](crate::Connection::send_cancellable), to
/// [`cancel`](crate::Connection::cancel) it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId {
    pub(crate) id: u64,
    pub(crate) destination: u64,
    pub(crate) to: ReplyTo,
    pub(crate) schema: u32,
}

impl RequestId {
    /// The id on the wire.
    pub fn get(&self) -> u64 {
        self.id
    }
}

/// Cancels, from any thread, the synchronous calls waiting on one
/// connection at that moment ([`Connection::call_canceller`]): each gives
/// up with [`CallError::Cancelled`](crate::CallError::Cancelled) and tells
/// the peer, as a call that times out does. A call that starts after the
/// cancel is not affected. Cheap to clone; it keeps the connection's shared
/// mapping alive while it lives (not its descriptors).
///
/// [`Connection::call_canceller`]: crate::Connection::call_canceller
#[derive(Clone, Debug)]
pub struct CallCanceller {
    epoch: Arc<AtomicU64>,
    wake: WakeHandle,
}

impl CallCanceller {
    /// Cancels the synchronous calls waiting now, waking them.
    pub fn cancel(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.wake.wake();
    }
}

/// Who waits for the reply to a request (`H`: a reply handler).
pub(crate) enum Waiter<H> {
    /// A handler given to `send_with_reply`.
    Handler(ReplyTo, H),
    /// A `send_sync` further up the stack; the reply is parked until it
    /// collects it.
    Sync(ReplyTo),
}

/// The requests in flight.
pub(crate) struct PendingCalls<H> {
    last_id: u64,
    waiting: IdMap<u64, Waiter<H>>,
    /// How many of `waiting` are reply handlers.
    handlers: usize,
    arrived: IdMap<u64, Incoming>,
    /// Synchronous calls waiting inside one another right now.
    sync_depth: u32,
    /// Replies that arrived for requests given up on (cancelled, timed
    /// out), dropped.
    pub(crate) late_replies_dropped: u64,
    /// Requests this side cancelled.
    pub(crate) cancelled: u64,
    /// Bumped by every [`CallCanceller::cancel`].
    cancel_epoch: Arc<AtomicU64>,
}

impl<H> Default for PendingCalls<H> {
    fn default() -> Self {
        PendingCalls {
            last_id: 0,
            waiting: IdMap::default(),
            handlers: 0,
            arrived: IdMap::default(),
            sync_depth: 0,
            late_replies_dropped: 0,
            cancelled: 0,
            cancel_epoch: Arc::default(),
        }
    }
}

impl<H> PendingCalls<H> {
    /// A fresh request id (never 0: 0 means "no reply expected").
    pub(crate) fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    /// The id the next request will get (the fuzzing session's peer
    /// answers a call before it is made).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn peek_next_id(&self) -> u64 {
        self.last_id + 1
    }

    /// Records who waits for the reply to request `id`.
    pub(crate) fn expect(&mut self, id: u64, waiter: Waiter<H>) {
        if matches!(waiter, Waiter::Handler(..)) {
            self.handlers += 1;
        }
        if let Some(Waiter::Handler(..)) = self.waiting.insert(id, waiter) {
            self.handlers -= 1;
        }
    }

    /// Takes the waiter of request `id` (its reply arrived).
    pub(crate) fn complete(&mut self, id: u64) -> Option<Waiter<H>> {
        let waiter = self.waiting.remove(&id);
        if let Some(Waiter::Handler(..)) = waiter {
            self.handlers -= 1;
        }
        waiter
    }

    /// How many reply handlers wait.
    pub(crate) fn handlers_waiting(&self) -> usize {
        self.handlers
    }

    /// How many synchronous calls wait inside one another.
    pub(crate) fn sync_depth(&self) -> u32 {
        self.sync_depth
    }

    /// A synchronous call starts waiting (inside those already waiting).
    pub(crate) fn enter_sync(&mut self) {
        self.sync_depth += 1;
    }

    /// The innermost synchronous call stopped waiting.
    pub(crate) fn leave_sync(&mut self) {
        self.sync_depth = self.sync_depth.saturating_sub(1);
    }

    /// A synchronous caller gave up on request `id` after sending it:
    /// nothing is kept for it (a reply that arrives later is recognised by
    /// [`issued`](Self::issued) and dropped), so abandoned calls cost no
    /// memory however many there are.
    pub(crate) fn abandon(&mut self, id: u64) {
        self.complete(id);
        self.arrived.remove(&id);
    }

    /// The requester cancels request `id`: its reply handler is dropped
    /// without running (returned, so it is dropped outside any borrow), and
    /// a reply that arrives later is dropped like one to an abandoned call.
    /// `None` when nothing waits for it (its reply came already).
    pub(crate) fn cancel(&mut self, id: u64) -> Option<H> {
        match self.complete(id)? {
            Waiter::Handler(_, handler) => {
                self.cancelled += 1;
                Some(handler)
            }
            // Synchronous calls are cancelled by giving up (`abandon`).
            waiter @ Waiter::Sync(_) => {
                self.expect(id, waiter);
                None
            }
        }
    }

    /// A canceller of the synchronous calls waiting, waking them with
    /// `wake` (the connection's receiving ring's).
    pub(crate) fn canceller(&self, wake: WakeHandle) -> CallCanceller {
        CallCanceller {
            epoch: Arc::clone(&self.cancel_epoch),
            wake,
        }
    }

    /// The cancel epoch now: a call that starts notes it, and is cancelled
    /// once it changed.
    pub(crate) fn cancel_epoch(&self) -> u64 {
        self.cancel_epoch.load(Ordering::Acquire)
    }

    /// Whether `id` is a request id this side handed out (so a reply naming
    /// it, with no waiter, answers a call given up on, rather than a request
    /// never made).
    pub(crate) fn issued(&self, id: u64) -> bool {
        id != 0 && id <= self.last_id
    }

    /// Takes every reply handler: no reply will come (the peer is gone or
    /// broke the protocol). Synchronous callers stay registered: they learn
    /// it from their own receive.
    pub(crate) fn take_handlers(&mut self) -> Vec<H> {
        let ids: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, waiter)| matches!(waiter, Waiter::Handler(..)))
            .map(|(id, _)| *id)
            .collect();
        let mut handlers = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(Waiter::Handler(_, handler)) = self.complete(id) {
                handlers.push(handler);
            }
        }
        handlers
    }

    /// Parks the reply to synchronous request `id` for its caller.
    pub(crate) fn park_reply(&mut self, id: u64, reply: Incoming) {
        self.arrived.insert(id, reply);
    }

    /// The parked reply to request `id`, if it arrived.
    pub(crate) fn take_arrived(&mut self, id: u64) -> Option<Incoming> {
        self.arrived.remove(&id)
    }

    /// Drops replies not yet collected: after a protocol violation nothing
    /// the peer sent is trusted.
    pub(crate) fn discard_arrived(&mut self) {
        self.arrived.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incoming::Body;

    const TO: ReplyTo = ReplyTo {
        receiver: 1,
        message: 2,
    };

    fn reply() -> Incoming {
        Incoming {
            envelope: Envelope::default(),
            body: Body::Finished,
            fds: Vec::new(),
        }
    }

    #[test]
    fn sync_depth_nests() {
        let mut calls = PendingCalls::<()>::default();
        calls.enter_sync();
        calls.enter_sync();
        assert_eq!(calls.sync_depth(), 2);
        calls.leave_sync();
        calls.leave_sync();
        calls.leave_sync();
        assert_eq!(calls.sync_depth(), 0);
    }

    #[test]
    fn ids_are_fresh_and_never_zero() {
        let mut calls = PendingCalls::<()>::default();
        let first = calls.next_id();
        assert_ne!(first, 0);
        assert_ne!(calls.next_id(), first);
    }

    #[test]
    fn expect_complete_abandon() {
        let mut calls = PendingCalls::<&str>::default();
        calls.expect(1, Waiter::Handler(TO, "h"));
        calls.expect(2, Waiter::Sync(TO));
        assert!(matches!(calls.complete(1), Some(Waiter::Handler(_, "h"))));
        assert!(calls.complete(1).is_none());
        calls.park_reply(2, reply());
        calls.abandon(2);
        assert!(calls.complete(2).is_none());
        assert!(calls.take_arrived(2).is_none());
        // Abandoning what is not waited for records nothing.
        calls.abandon(3);
        assert!(calls.complete(3).is_none());
    }

    #[test]
    fn cancel_takes_the_handler_and_counts() {
        let mut calls = PendingCalls::<&str>::default();
        calls.expect(1, Waiter::Handler(TO, "h"));
        calls.expect(2, Waiter::Sync(TO));
        assert_eq!(calls.cancel(1), Some("h"));
        assert_eq!(calls.cancel(1), None, "cancelled once");
        assert_eq!(calls.cancelled, 1);
        assert_eq!(calls.handlers_waiting(), 0);
        // A synchronous caller stays registered.
        assert_eq!(calls.cancel(2), None);
        assert!(matches!(calls.complete(2), Some(Waiter::Sync(_))));
        assert_eq!(calls.cancel(7), None, "never sent");
    }

    #[test]
    fn issued_ids_are_the_ones_handed_out() {
        let mut calls = PendingCalls::<()>::default();
        assert!(!calls.issued(0));
        assert!(!calls.issued(1));
        let id = calls.next_id();
        assert!(calls.issued(id));
        assert!(!calls.issued(id + 1));
        assert!(!calls.issued(0));
    }

    #[test]
    fn take_handlers_keeps_synchronous_callers() {
        let mut calls = PendingCalls::<&str>::default();
        calls.expect(1, Waiter::Handler(TO, "a"));
        calls.expect(2, Waiter::Sync(TO));
        calls.expect(3, Waiter::Handler(TO, "b"));
        assert_eq!(calls.handlers_waiting(), 2);
        let mut handlers = calls.take_handlers();
        assert_eq!(calls.handlers_waiting(), 0);
        handlers.sort();
        assert_eq!(handlers, ["a", "b"]);
        assert!(matches!(calls.complete(2), Some(Waiter::Sync(_))));
        assert!(calls.complete(1).is_none());
    }

    #[test]
    fn parked_replies_are_collected_once_or_discarded() {
        let mut calls = PendingCalls::<()>::default();
        calls.park_reply(4, reply());
        assert!(calls.take_arrived(4).is_some());
        assert!(calls.take_arrived(4).is_none());
        calls.park_reply(5, reply());
        calls.discard_arrived();
        assert!(calls.take_arrived(5).is_none());
    }

    #[test]
    fn reply_to_checks_receiver_and_message() {
        let mut envelope = Envelope {
            receiver: 1,
            message: 2,
            ..Envelope::default()
        };
        assert!(TO.named_by(&envelope));
        envelope.message = 3;
        assert!(!TO.named_by(&envelope));
    }
}
