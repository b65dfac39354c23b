//! Messages set aside while a synchronous call waits for its reply (those
//! not allowed while waiting), in arrival order, for the next `dispatch`.
//! Bounded: the caller learns when the budget is exceeded.

use crate::incoming::Incoming;
use std::collections::VecDeque;

/// The set-aside queue and the bytes it holds.
#[derive(Default)]
pub(crate) struct SetAside {
    queue: VecDeque<Incoming>,
    bytes: usize,
}

impl SetAside {
    /// Adds a message (already copied out of the ring) at the back. Returns
    /// whether the queue now holds more than `max_bytes`.
    pub(crate) fn push(&mut self, incoming: Incoming, max_bytes: usize) -> bool {
        self.bytes += incoming.bytes().len();
        self.queue.push_back(incoming);
        self.bytes > max_bytes
    }

    /// The oldest message.
    pub(crate) fn pop(&mut self) -> Option<Incoming> {
        let incoming = self.queue.pop_front()?;
        self.bytes -= incoming.bytes().len();
        Some(incoming)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Drops everything: after a protocol violation nothing the peer sent
    /// is dispatched.
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incoming::Body;
    use crate::wire::{ENVELOPE_SIZE, Envelope};
    use rkyv::util::AlignedVec;

    fn message(body: usize, tag: u64) -> Incoming {
        let mut buffer = AlignedVec::<16>::new();
        buffer.extend_from_slice(&vec![0u8; ENVELOPE_SIZE + body]);
        Incoming {
            envelope: Envelope {
                destination: tag,
                ..Envelope::default()
            },
            body: Body::Copied(buffer),
            fds: Vec::new(),
        }
    }

    #[test]
    fn keeps_order_and_counts_the_budget() {
        let mut queue = SetAside::default();
        assert!(queue.is_empty());
        assert!(!queue.push(message(10, 1), 25));
        assert!(!queue.push(message(15, 2), 25));
        assert!(queue.push(message(1, 3), 25));
        assert_eq!(queue.pop().map(|m| m.envelope.destination), Some(1));
        // 16 bytes left: room again.
        assert!(!queue.push(message(9, 4), 25));
        let order: Vec<u64> = std::iter::from_fn(|| queue.pop())
            .map(|m| m.envelope.destination)
            .collect();
        assert_eq!(order, [2, 3, 4]);
        assert!(queue.is_empty());
        queue.push(message(100, 5), 25);
        queue.clear();
        assert!(queue.pop().is_none());
        assert!(!queue.push(message(25, 6), 25));
    }
}
