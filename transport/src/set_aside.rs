//! Messages set aside while a synchronous call waits for its reply (those
//! not allowed while waiting), in arrival order, for the next `dispatch`.
//! Bounded: every message is charged its body plus a fixed overhead, and
//! the descriptors it holds (an out-of-line message's blob among them); the
//! caller learns when a budget is exceeded.

use crate::config::SET_ASIDE_OVERHEAD;
use crate::incoming::Incoming;
use std::collections::VecDeque;

/// What the queue may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) bytes: usize,
    pub(crate) fds: usize,
}

/// The set-aside queue and what it holds.
#[derive(Default)]
pub(crate) struct SetAside {
    queue: VecDeque<Incoming>,
    bytes: usize,
    fds: usize,
}

/// What holding `incoming` costs: its body and a fixed overhead.
fn charge(incoming: &Incoming) -> usize {
    incoming.bytes().len() + SET_ASIDE_OVERHEAD
}

impl SetAside {
    /// Adds a message (already copied out of the ring) at the back. Returns
    /// whether the queue now holds more than `budget` allows.
    pub(crate) fn push(&mut self, incoming: Incoming, budget: Budget) -> bool {
        self.bytes += charge(&incoming);
        self.fds += incoming.held_fds();
        self.queue.push_back(incoming);
        self.exceeds(budget)
    }

    /// Whether the queue holds more than `budget` allows.
    pub(crate) fn exceeds(&self, budget: Budget) -> bool {
        self.bytes > budget.bytes || self.fds > budget.fds
    }

    /// The oldest message.
    pub(crate) fn pop(&mut self) -> Option<Incoming> {
        let incoming = self.queue.pop_front()?;
        self.bytes -= charge(&incoming);
        self.fds -= incoming.held_fds();
        Some(incoming)
    }

    /// Whether the queue holds more than `budget` allows even without its
    /// newest message (it may exceed its budget by that one message).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn exceeds_by_more_than_one(&self, budget: Budget) -> bool {
        let (bytes, fds) = self
            .queue
            .back()
            .map_or((0, 0), |newest| (charge(newest), newest.held_fds()));
        self.bytes - bytes > budget.bytes || self.fds - fds > budget.fds
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Drops everything: after a protocol violation nothing the peer sent
    /// is dispatched.
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
        self.bytes = 0;
        self.fds = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incoming::Body;
    use crate::wire::{ENVELOPE_SIZE, Envelope};
    use rkyv::util::AlignedVec;

    const BYTES: Budget = Budget {
        bytes: 3 * SET_ASIDE_OVERHEAD + 25,
        fds: 2,
    };

    fn with_fds(mut incoming: Incoming, count: usize) -> Incoming {
        // Any descriptor will do: an eventfd is one that miri can create.
        let fd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).expect("eventfd");
        incoming.fds = (0..count).map(|_| fd.try_clone().expect("dup")).collect();
        incoming
    }

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
        assert!(!queue.push(message(10, 1), BYTES));
        assert!(!queue.push(message(15, 2), BYTES));
        assert!(queue.push(message(1, 3), BYTES));
        assert_eq!(queue.pop().map(|m| m.envelope.destination), Some(1));
        // 9 bytes left: room again.
        assert!(!queue.push(message(9, 4), BYTES));
        let order: Vec<u64> = std::iter::from_fn(|| queue.pop())
            .map(|m| m.envelope.destination)
            .collect();
        assert_eq!(order, [2, 3, 4]);
        assert!(queue.is_empty());
        queue.push(message(1000, 5), BYTES);
        queue.clear();
        assert!(queue.pop().is_none());
    }

    #[test]
    fn empty_messages_are_not_free() {
        let mut queue = SetAside::default();
        let budget = Budget {
            bytes: 10 * SET_ASIDE_OVERHEAD,
            fds: 0,
        };
        let accepted = (0..100)
            .take_while(|&tag| !queue.push(message(0, tag), budget))
            .count();
        assert_eq!(accepted, 10);
        assert!(queue.exceeds(budget), "full until a message is taken");
        queue.pop();
        assert!(!queue.exceeds(budget));
    }

    /// An out-of-line body keeps its blob's memfd open: a peer must not be
    /// able to set aside blobs beyond the descriptor budget (the fuzz
    /// target `dispatch` found it; fuzz/tests/regressions.rs).
    #[test]
    #[cfg_attr(miri, ignore = "a blob is a memfd, which miri does not have")]
    fn a_blob_counts_as_a_descriptor() {
        let blob = |tag| {
            let mut writer = ferry_ring::BlobWriter::create(1).expect("blob");
            writer[0] = 1;
            Incoming {
                body: Body::Blob(writer.seal().expect("seal")),
                ..message(0, tag)
            }
        };
        assert_eq!(with_fds(blob(0), 1).held_fds(), 2);
        let mut queue = SetAside::default();
        assert!(!queue.push(blob(1), BYTES));
        assert!(!queue.push(blob(2), BYTES));
        assert!(
            queue.push(blob(3), BYTES),
            "three blobs, two descriptors allowed"
        );
        queue.pop();
        assert!(!queue.exceeds(BYTES), "the budget is given back");
    }

    #[test]
    fn descriptors_have_their_own_budget() {
        let mut queue = SetAside::default();
        assert!(!queue.push(with_fds(message(0, 1), 2), BYTES));
        assert!(queue.push(with_fds(message(0, 2), 1), BYTES));
        queue.pop();
        assert!(!queue.push(message(0, 3), BYTES));
    }
}
