//! Replying later: a handler takes its reply obligation with it (a
//! [`ReplyHandle`], WebKit's completion handler) and answers after it
//! returns, from any thread.
//!
//! The connection is driven by one thread (`&mut`) and its send ring has
//! one producer, so a handle never writes the ring. It serializes its reply
//! on its own thread into a private buffer and queues it in the
//! connection's [`LateReplies`]; the connection sends what is queued at its
//! next `dispatch` (or synchronous wait), and the handle wakes the
//! connection's wait on its ring so a blocked `dispatch` does that at once.
//!
//! The queue is bounded by the number of handles: each handle holds one
//! slot from the moment its request is handled until the connection has
//! sent its answer (or learned it needs none), and at most
//! [`max_reply_handles`](crate::ConnectionConfig::max_reply_handles) slots
//! exist. A request for a reply-later message beyond that bound is not
//! handled: the requester gets an error reply ([`NoReply::Busy`]) at once.
//!
//! A handle dropped unanswered sends an error reply ([`NoReply::Dropped`]),
//! so the requester is never left waiting. A handle may outlive its
//! connection: answering or dropping it then does nothing (the connection,
//! when dropped, closes the queue and lets go of its ring).
//!
//! The handling side also learns when the requester cancels: the peer's
//! cancel names a request id, and only requests with a live handle are
//! looked up (in a map bounded like the queue), so cancels for anything
//! else cost one lookup and grow nothing.

use crate::error::Violation;
use crate::message::Archivable;
use crate::outbox::serialize_aside;
use crate::wire::{Envelope, Flags, NoReply};
use ferry_ring::WakeHandle;
use rkyv::util::AlignedVec;
use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A reply (or the reason there is none) waiting for the connection.
pub(crate) struct LateReply {
    /// The request's envelope, turned into the reply's.
    pub(crate) envelope: Envelope,
    pub(crate) body: LateBody,
}

/// What a late reply carries.
pub(crate) enum LateBody {
    /// The reply's archive.
    Archive(AlignedVec<16>),
    /// An error reply.
    NoReply(NoReply),
}

/// What the connection and its handles share.
struct Shared {
    state: Mutex<State>,
    /// Set while `state.queue` is not empty: the connection checks it
    /// without taking the lock.
    queued: AtomicBool,
}

struct State {
    /// Until the connection is dropped.
    wake: Option<WakeHandle>,
    /// Answers for the connection to send, in the order they were given.
    queue: VecDeque<LateReply>,
    /// The cancelled flag of every request with a live handle, by request
    /// id. Keys come from the peer, so the map keeps std's keyed hash.
    in_progress: HashMap<u64, Arc<AtomicBool>>,
    /// Slots taken: live handles plus queued answers.
    slots: usize,
    max_slots: usize,
}

/// The connection's side: makes handles, takes the answers they queue,
/// and marks cancelled requests. Owned by the connection.
pub(crate) struct LateReplies {
    shared: Arc<Shared>,
    /// Cancels that named a request with a live handle.
    pub(crate) cancels_received: u64,
    /// Cancels that named nothing cancellable here (unknown ids, requests
    /// already answered or handled without a handle).
    pub(crate) cancels_ignored: u64,
    /// Requests refused at the bound (`NoReply::Busy`).
    pub(crate) refused_busy: u64,
}

/// Why no handle was made.
pub(crate) enum HandleRefusal {
    /// At the bound: answer with `NoReply::Busy`.
    Busy,
    /// The peer reused the id of a request still in progress.
    Duplicate(Violation),
}

impl LateReplies {
    /// The late replies of a connection whose receiving ring `wake` wakes,
    /// with at most `max_slots` handles and queued answers.
    pub(crate) fn new(wake: WakeHandle, max_slots: usize) -> LateReplies {
        LateReplies {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    wake: Some(wake),
                    queue: VecDeque::new(),
                    in_progress: HashMap::new(),
                    slots: 0,
                    max_slots,
                }),
                queued: AtomicBool::new(false),
            }),
            cancels_received: 0,
            cancels_ignored: 0,
            refused_busy: 0,
        }
    }

    /// A handle for the reply to `request`. A message sent without a
    /// request id (it expects no reply) gets one too, which answers nothing
    /// but still holds a slot while it lives: whatever a peer sends, this
    /// side holds at most `max_slots` handles.
    pub(crate) fn handle<T: Archivable>(
        &mut self,
        request: &Envelope,
    ) -> Result<ReplyHandle<T>, HandleRefusal> {
        let mut state = lock(&self.shared);
        if state.slots >= state.max_slots {
            self.refused_busy += 1;
            return Err(HandleRefusal::Busy);
        }
        let cancelled = Arc::new(AtomicBool::new(false));
        if request.request_id != 0 {
            if state.in_progress.contains_key(&request.request_id) {
                return Err(HandleRefusal::Duplicate(Violation::DuplicateRequest(
                    request.request_id,
                )));
            }
            state
                .in_progress
                .insert(request.request_id, Arc::clone(&cancelled));
        }
        state.slots += 1;
        Ok(ReplyHandle {
            inner: Some(Obligation {
                shared: Arc::clone(&self.shared),
                request: *request,
                cancelled,
            }),
            _reply: PhantomData,
        })
    }

    /// The peer cancelled request `id`: its handle learns it, if it lives.
    pub(crate) fn cancel(&mut self, id: u64) {
        let found = lock(&self.shared)
            .in_progress
            .get(&id)
            .map(|cancelled| cancelled.store(true, Ordering::Release))
            .is_some();
        if found {
            self.cancels_received += 1;
        } else {
            self.cancels_ignored += 1;
        }
    }

    /// Whether answers wait to be sent (one relaxed load).
    #[inline]
    pub(crate) fn has_queued(&self) -> bool {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// The next answer to send; its slot is free again.
    pub(crate) fn pop(&mut self) -> Option<LateReply> {
        if !self.has_queued() {
            return None;
        }
        let mut state = lock(&self.shared);
        let reply = state.queue.pop_front()?;
        state.slots -= 1;
        if state.queue.is_empty() {
            self.shared.queued.store(false, Ordering::Relaxed);
        }
        Some(reply)
    }

    /// Handles alive and answers queued.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> usize {
        lock(&self.shared).slots
    }
}

impl Drop for LateReplies {
    /// The connection is gone: handles answer into nothing from now on, and
    /// let go of the ring (the wake handle keeps the region mapped).
    fn drop(&mut self) {
        let mut state = lock(&self.shared);
        state.wake = None;
        state.queue.clear();
        state.in_progress.clear();
        state.max_slots = 0;
        self.shared.queued.store(false, Ordering::Relaxed);
    }
}

/// The lock, whoever panicked while holding it: the state is a queue and a
/// map changed in single steps, consistent between any two of them.
fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a live handle holds.
struct Obligation {
    shared: Arc<Shared>,
    request: Envelope,
    cancelled: Arc<AtomicBool>,
}

impl Obligation {
    /// Queues `body` as the answer (nothing if the requester cancelled or
    /// the connection is gone), frees the request's cancel entry, and wakes
    /// the connection. Returns whether an answer was queued.
    fn settle(self, body: Option<LateBody>) -> bool {
        let mut state = lock(&self.shared);
        state.in_progress.remove(&self.request.request_id);
        let Some(wake) = state.wake.clone() else {
            // The connection is gone: its slots went with it.
            return false;
        };
        // Nobody wants an answer: the requester cancelled, or expects none.
        let body = body
            .filter(|_| self.request.request_id != 0 && !self.cancelled.load(Ordering::Acquire));
        let Some(body) = body else {
            state.slots -= 1;
            return false;
        };
        let mut flags = Flags::REPLY;
        if matches!(body, LateBody::NoReply(_)) {
            flags |= Flags::ERROR;
        }
        state.queue.push_back(LateReply {
            envelope: Envelope {
                flags: Flags(flags),
                fd_count: 0,
                ..self.request
            },
            body,
        });
        self.shared.queued.store(true, Ordering::Relaxed);
        drop(state);
        // After the unlock: the connection's thread wakes to take it.
        wake.wake();
        true
    }
}

/// The obligation to answer one request, taken out of its handler: answer
/// it with [`reply`](Self::reply), from any thread, whenever the answer is
/// ready (WebKit's completion handler). `Send`; cheap to move.
///
/// Dropping it unanswered sends the requester an error reply
/// ([`NoReply::Dropped`]); a requester that cancelled gets nothing (it
/// forgot the request). Messages declared `@reply_later` in
/// [`protocol!`](crate::protocol) give their handler one.
pub struct ReplyHandle<T> {
    /// `None` once answered.
    inner: Option<Obligation>,
    _reply: PhantomData<fn(&T)>,
}

impl<T: Archivable> ReplyHandle<T> {
    /// Answers the request: the reply is serialized here, on the calling
    /// thread, and sent by the connection's thread at its next `dispatch`
    /// (a `dispatch` waiting now is woken). Returns whether it was queued:
    /// not when the requester cancelled, expects no reply, or the
    /// connection is gone, nor when the reply cannot be serialized (the
    /// requester then gets [`NoReply::Dropped`]).
    pub fn reply(mut self, reply: &T) -> bool {
        let Some(obligation) = self.inner.take() else {
            return false;
        };
        match serialize_aside(reply) {
            Ok(archive) => obligation.settle(Some(LateBody::Archive(archive))),
            Err(_) => {
                obligation.settle(Some(LateBody::NoReply(NoReply::Dropped)));
                false
            }
        }
    }

    /// Whether the requester cancelled the request (its cancel arrived and
    /// was dispatched): the work can stop, no answer is wanted.
    pub fn is_cancelled(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|obligation| obligation.cancelled.load(Ordering::Acquire))
    }

    /// The request's id (0 when no reply is expected: the message was sent
    /// with `send`, and answering it does nothing).
    pub fn request_id(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |obligation| obligation.request.request_id)
    }
}

impl<T> Drop for ReplyHandle<T> {
    fn drop(&mut self) {
        if let Some(obligation) = self.inner.take() {
            obligation.settle(Some(LateBody::NoReply(NoReply::Dropped)));
        }
    }
}

impl<T> std::fmt::Debug for ReplyHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyHandle")
            .field(
                "request_id",
                &self.inner.as_ref().map(|o| o.request.request_id),
            )
            .finish()
    }
}

/// A handle can go to another thread (checked at compile time).
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<ReplyHandle<()>>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::decode_no_reply;
    use std::time::Duration;

    /// Far longer than a wake takes: only a lost wake reaches it.
    const LONG: Duration = Duration::from_secs(60);

    fn request(id: u64) -> Envelope {
        Envelope {
            destination: 3,
            request_id: id,
            receiver: 1,
            schema: 2,
            message: 4,
            flags: Flags(Flags::SYNC),
            fd_count: 0,
        }
    }

    /// Late replies waking the consumer of a ring whose producer lives as
    /// long as the consumer is used (a closed ring would end waits itself).
    fn late(max: usize) -> (LateReplies, (ferry_ring::Producer, ferry_ring::Consumer)) {
        let (tx, rx) = ferry_ring::channel(4096);
        (LateReplies::new(rx.wake_handle(), max), (tx, rx))
    }

    #[test]
    fn a_reply_from_another_thread_wakes_the_connection_and_is_queued() {
        let (mut late, (_tx, mut rx)) = late(4);
        let handle = late.handle::<u64>(&request(9)).ok().expect("a handle");
        assert_eq!(handle.request_id(), 9);
        let answering = std::thread::spawn(move || handle.reply(&42));
        // The connection's thread waits on its ring: the reply wakes it.
        assert_eq!(
            rx.peek(Some(LONG)).err(),
            Some(ferry_ring::RecvError::TimedOut)
        );
        assert!(answering.join().expect("the answering thread"));
        assert!(late.has_queued());
        let reply = late.pop().expect("the reply");
        assert_eq!(reply.envelope.request_id, 9);
        assert_eq!(reply.envelope.flags, Flags(Flags::REPLY));
        assert_eq!(reply.envelope.message, 4, "it answers its request");
        let LateBody::Archive(archive) = reply.body else {
            panic!("an archive");
        };
        let value = rkyv::access::<rkyv::Archived<u64>, rkyv::rancor::Error>(&archive);
        assert_eq!(value.map(|v| v.to_native()).ok(), Some(42));
        assert!(late.pop().is_none());
        assert_eq!(late.slots(), 0);
    }

    #[test]
    fn a_handle_dropped_unanswered_queues_an_error_reply() {
        let (mut late, _rx) = late(4);
        let handle = late.handle::<u64>(&request(5)).ok().expect("a handle");
        std::thread::spawn(move || drop(handle))
            .join()
            .expect("the dropping thread");
        let reply = late.pop().expect("the error reply");
        assert_eq!(reply.envelope.flags, Flags(Flags::REPLY | Flags::ERROR));
        assert!(matches!(reply.body, LateBody::NoReply(NoReply::Dropped)));
        assert_eq!(
            decode_no_reply(&crate::wire::encode_no_reply(NoReply::Dropped)),
            Some(NoReply::Dropped)
        );
        assert_eq!(late.slots(), 0);
    }

    #[test]
    fn a_cancelled_request_is_answered_with_nothing() {
        let (mut late, _rx) = late(4);
        let handle = late.handle::<u64>(&request(5)).ok().expect("a handle");
        late.cancel(6);
        assert!(!handle.is_cancelled());
        late.cancel(5);
        assert!(handle.is_cancelled());
        assert_eq!((late.cancels_received, late.cancels_ignored), (1, 1));
        assert!(!std::thread::spawn(move || handle.reply(&1)).join().unwrap());
        assert!(late.pop().is_none());
        assert_eq!(late.slots(), 0);
        // Its entry is gone: a second cancel finds nothing.
        late.cancel(5);
        assert_eq!(late.cancels_ignored, 2);
    }

    #[test]
    fn handles_and_queued_answers_are_bounded() {
        let (mut late, _rx) = late(2);
        let first = late.handle::<u64>(&request(1)).ok().expect("a handle");
        assert!(matches!(
            late.handle::<u64>(&request(1)),
            Err(HandleRefusal::Duplicate(Violation::DuplicateRequest(1)))
        ));
        let second = late.handle::<u64>(&request(2)).ok().expect("a handle");
        assert!(matches!(
            late.handle::<u64>(&request(3)),
            Err(HandleRefusal::Busy)
        ));
        // An answer queued still holds its slot until the connection sends it.
        assert!(first.reply(&1));
        assert!(matches!(
            late.handle::<u64>(&request(3)),
            Err(HandleRefusal::Busy)
        ));
        assert_eq!(late.refused_busy, 2);
        assert!(late.pop().is_some());
        let third = late.handle::<u64>(&request(3)).ok().expect("a slot again");
        drop((second, third));
        assert_eq!(late.slots(), 2, "two error replies queued");
    }

    #[test]
    fn a_message_expecting_no_reply_holds_a_slot_and_answers_nothing() {
        let (mut late, _ring) = late(1);
        let handle = late.handle::<u64>(&request(0)).ok().expect("a handle");
        assert!(matches!(
            late.handle::<u64>(&request(0)),
            Err(HandleRefusal::Busy)
        ));
        assert!(!handle.reply(&1));
        assert!(late.pop().is_none());
        assert_eq!(late.slots(), 0);
        let dropped = late.handle::<u64>(&request(0)).ok().expect("a slot again");
        drop(dropped);
        assert!(late.pop().is_none(), "no error reply for no request");
        assert_eq!(late.slots(), 0);
    }

    #[test]
    fn a_handle_may_outlive_its_connection() {
        let (mut late, ring) = late(2);
        let handle = late.handle::<u64>(&request(1)).ok().expect("a handle");
        let dropped = late.handle::<u64>(&request(2)).ok().expect("a handle");
        drop(late);
        drop(ring);
        let answered = std::thread::spawn(move || {
            drop(dropped);
            handle.reply(&1)
        });
        assert!(!answered.join().expect("no panic"));
    }
}
