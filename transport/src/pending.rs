//! Requests in flight on one connection: their ids, who waits for each
//! reply, and the replies that arrived for synchronous callers further up
//! the stack. The connection owns one; the call and dispatch paths use it.

use crate::id_map::IdMap;
use crate::incoming::Incoming;
use crate::wire::Envelope;

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
    arrived: IdMap<u64, Incoming>,
}

impl<H> Default for PendingCalls<H> {
    fn default() -> Self {
        PendingCalls {
            last_id: 0,
            waiting: IdMap::default(),
            arrived: IdMap::default(),
        }
    }
}

impl<H> PendingCalls<H> {
    /// A fresh request id (never 0: 0 means "no reply expected").
    pub(crate) fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    /// Records who waits for the reply to request `id`.
    pub(crate) fn expect(&mut self, id: u64, waiter: Waiter<H>) {
        self.waiting.insert(id, waiter);
    }

    /// Takes the waiter of request `id` (its reply arrived).
    pub(crate) fn complete(&mut self, id: u64) -> Option<Waiter<H>> {
        self.waiting.remove(&id)
    }

    /// A synchronous caller gave up on request `id` after sending it:
    /// nothing is kept for it (a reply that arrives later is recognised by
    /// [`issued`](Self::issued) and dropped), so abandoned calls cost no
    /// memory however many there are.
    pub(crate) fn abandon(&mut self, id: u64) {
        self.waiting.remove(&id);
        self.arrived.remove(&id);
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
            if let Some(Waiter::Handler(_, handler)) = self.waiting.remove(&id) {
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
        let mut handlers = calls.take_handlers();
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
