//! Synchronous calls made from a connection's sending half
//! ([`ConnectionSender::send_sync`](crate::ConnectionSender::send_sync)):
//! the caller waits on its own thread (or task) while whoever drives the
//! receiving half routes the reply to it. Their request ids have the top bit
//! set, so they never meet the receiving half's own.
//!
//! The table is bounded (`max_pending_replies` callers at once), and every
//! caller's wait is bounded by its timeout: if nobody drives the receiving
//! half, the call times out. The peer's death (seen by the hang-up watcher)
//! or a violation ends every wait at once.

use crate::error::{CallError, Violation};
use crate::id_map::IdMap;
use crate::incoming::Incoming;
use crate::pending::ReplyTo;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
#[cfg(feature = "tokio")]
use std::task::Poll;
use std::task::Waker;
use std::time::Instant;

/// The bit that marks a request id as a sending half's.
const ROUTED_BIT: u64 = 1 << 63;

/// Whether request `id` was issued by a sending half.
pub(crate) fn is_routed(id: u64) -> bool {
    id & ROUTED_BIT != 0
}

/// Calls from the sending halves waiting for their replies.
#[derive(Default)]
pub(crate) struct RoutedCalls {
    table: Mutex<Table>,
    /// Signalled whenever a reply arrives or every call ends.
    changed: Condvar,
}

#[derive(Default)]
struct Table {
    /// The last id handed out (without the bit).
    last: u64,
    waiting: IdMap<u64, Slot>,
    /// Set when the connection ended: every call fails with it.
    ended: Option<CallError>,
}

enum Slot {
    Waiting {
        reply_to: ReplyTo,
        /// The task to wake (async callers).
        waker: Option<Waker>,
    },
    Arrived(Incoming),
}

/// What became of a reply handed to [`RoutedCalls::deliver`].
pub(crate) enum Delivery {
    Delivered,
    /// Its caller gave up (timed out): dropped.
    Abandoned,
    /// No such call was ever made, or the reply names another message.
    Refused(Violation),
}

impl RoutedCalls {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh request id for a call expecting a reply to `reply_to`, or why
    /// no call can be made (the connection ended, or `max` calls wait).
    pub(crate) fn issue(&self, reply_to: ReplyTo, max: usize) -> Result<u64, CallError> {
        let mut table = self.table();
        if let Some(error) = &table.ended {
            return Err(error.clone());
        }
        if table.waiting.len() >= max {
            return Err(CallError::Send(crate::SendError::TooManyPending { max }));
        }
        table.last += 1;
        let id = table.last | ROUTED_BIT;
        table.waiting.insert(
            id,
            Slot::Waiting {
                reply_to,
                waker: None,
            },
        );
        Ok(id)
    }

    /// Hands the reply to call `id` (already made owned) to its caller.
    pub(crate) fn deliver(&self, id: u64, reply: Incoming) -> Delivery {
        let mut table = self.table();
        let issued = is_routed(id) && id & !ROUTED_BIT <= table.last;
        match table.waiting.get_mut(&id) {
            Some(Slot::Waiting { reply_to, waker }) => {
                if !reply_to.named_by(&reply.envelope) {
                    return Delivery::Refused(Violation::MismatchedReply(id));
                }
                let waker = waker.take();
                table.waiting.insert(id, Slot::Arrived(reply));
                drop(table);
                self.changed.notify_all();
                if let Some(waker) = waker {
                    waker.wake();
                }
                Delivery::Delivered
            }
            // A second reply to the same call.
            Some(Slot::Arrived(_)) => Delivery::Refused(Violation::UnexpectedReply(id)),
            None if issued => Delivery::Abandoned,
            None => Delivery::Refused(Violation::UnexpectedReply(id)),
        }
    }

    /// Waits on this thread for the reply to call `id` until `deadline`.
    pub(crate) fn wait(&self, id: u64, deadline: Option<Instant>) -> Result<Incoming, CallError> {
        let mut table = self.table();
        loop {
            if let Some(done) = Self::take_done(&mut table, id) {
                return done;
            }
            table = match deadline {
                None => self
                    .changed
                    .wait(table)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        table.waiting.remove(&id);
                        return Err(CallError::TimedOut);
                    }
                    self.changed
                        .wait_timeout(table, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// Polls for the reply to call `id` from a task; `Pending` registers
    /// the task's waker.
    #[cfg(feature = "tokio")]
    pub(crate) fn poll(&self, id: u64, waker: &Waker) -> Poll<Result<Incoming, CallError>> {
        let mut table = self.table();
        if let Some(done) = Self::take_done(&mut table, id) {
            return Poll::Ready(done);
        }
        if let Some(Slot::Waiting { waker: slot, .. }) = table.waiting.get_mut(&id) {
            *slot = Some(waker.clone());
        }
        Poll::Pending
    }

    /// The outcome of call `id` if it has one (taking it).
    fn take_done(table: &mut Table, id: u64) -> Option<Result<Incoming, CallError>> {
        match table.waiting.get(&id) {
            Some(Slot::Arrived(_)) => match table.waiting.remove(&id) {
                Some(Slot::Arrived(reply)) => Some(Ok(reply)),
                _ => None,
            },
            Some(Slot::Waiting { .. }) => table.ended.clone().map(|error| {
                table.waiting.remove(&id);
                Err(error)
            }),
            // Abandoned already, or never issued.
            None => Some(Err(table.ended.clone().unwrap_or(CallError::TimedOut))),
        }
    }

    /// The caller of `id` gave up: a reply that still comes is dropped.
    pub(crate) fn abandon(&self, id: u64) {
        self.table().waiting.remove(&id);
    }

    /// The connection ended: every call waiting, and every later one, fails
    /// with `error` (a violation replaces a disconnection).
    pub(crate) fn end(&self, error: CallError) {
        let mut table = self.table();
        if table.ended.is_none() || matches!(error, CallError::ProtocolViolation { .. }) {
            table.ended = Some(error);
        }
        // Replies that arrived stay for their callers; the others wake.
        let wakers: Vec<Waker> = table
            .waiting
            .iter_mut()
            .filter_map(|(_, slot)| match slot {
                Slot::Waiting { waker, .. } => waker.take(),
                Slot::Arrived(_) => None,
            })
            .collect();
        drop(table);
        self.changed.notify_all();
        for waker in wakers {
            waker.wake();
        }
    }
}
