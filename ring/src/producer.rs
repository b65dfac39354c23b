//! The writing end of a ring.

use crate::claim::Side;
use crate::disconnect::{DisconnectFlag, DisconnectHandle};
use crate::error::{AttachError, Corruption, SendError};
use crate::frame::{
    FRAME_ALIGN, FRAME_HEADER_SIZE, KIND_DATA, KIND_PADDING, encode_header, frame_size, max_payload,
};
use crate::notifier::Notifier;
use crate::region::Region;
use crate::ring::RingRef;
use crate::stats::Stats;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::wait::{self, Announcer, Blocked, WaitStrategy, Waiter};
use std::sync::Arc;
use std::time::Duration;

/// The writing end of a ring: reserves room for a frame, lets the caller
/// write the payload in place, and publishes it.
///
/// The producer keeps its position privately and never reads it back from
/// shared memory; it keeps a cached copy of the consumer's position and loads
/// the real one (validating it) only when the cache says the ring is full.
///
/// ```
/// let (mut tx, mut rx) = ferry_ring::channel(4096);
/// let mut grant = tx.try_reserve(5).unwrap();
/// grant.copy_from_slice(b"hello");
/// grant.commit();
/// assert_eq!(rx.try_peek().unwrap().payload(), b"hello");
/// ```
pub struct Producer {
    ring: RingRef,
    /// Unique among this process's producers: which one found a room.
    id: u64,
    /// Where the next frame goes (may run ahead of `published`).
    tail: u64,
    /// The tail last stored to shared memory.
    published: u64,
    /// The consumer's head as last loaded (and validated).
    cached_head: u64,
    /// Our private copy of the sequence word we bump on publish.
    data_seq: u32,
    strategy: WaitStrategy,
    corrupt: Option<Corruption>,
    disconnect: DisconnectFlag,
    /// Our end of the notification socketpair, through which a consumer
    /// waiting in an event loop is signalled.
    notifier: Option<Notifier>,
    /// The consumer's parked word we last woke (see `wait::notify_peer`).
    last_woken: u64,
    /// What we announce in our own parked word when we wait for room.
    announcer: Announcer,
    stats: Stats,
    /// Set by `detach`: dropping touches nothing shared.
    detached: bool,
}

impl Producer {
    /// Attaches the producer end of the ring at `offset` in `region`,
    /// validating the ring header first.
    pub fn attach(region: Arc<Region>, offset: usize) -> Result<Producer, AttachError> {
        let (ring, positions) = RingRef::attach(region, offset, Side::Producer)?;
        let announcer = Announcer::new(&ring.header().producer_parked.parked);
        Ok(Producer {
            id: next_producer_id(),
            tail: positions.tail,
            published: positions.tail,
            cached_head: positions.head,
            data_seq: ring.header().producer.data_seq.load(Ordering::Relaxed),
            ring,
            strategy: WaitStrategy::default(),
            corrupt: None,
            disconnect: DisconnectFlag::default(),
            notifier: None,
            last_woken: 0,
            announcer,
            stats: Stats::default(),
            detached: false,
        })
    }

    /// Sets how this end waits for room. Returns `self` for chaining.
    pub fn with_wait_strategy(mut self, strategy: WaitStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Changes how this end waits for room.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// Gives this end our end of the notification socketpair whose other
    /// end the consumer watches: while the consumer waits in an event loop
    /// ([`Consumer::arm_notification`]), a publish also signals it (once per
    /// arming, not once per publish). Signalling never blocks, whatever the
    /// peer did to the socket (see [`Notifier`]).
    ///
    /// [`Consumer::arm_notification`]: crate::Consumer::arm_notification
    pub fn set_notifier(&mut self, notifier: Option<Notifier>) {
        self.notifier = notifier;
    }

    /// The largest payload this ring accepts.
    pub fn max_payload(&self) -> usize {
        max_payload(self.ring.capacity())
    }

    /// Size of the data area in bytes.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// What this end has done so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The region the ring lives in.
    pub fn region(&self) -> &Arc<Region> {
        self.ring.region()
    }

    /// A handle another thread can use to declare the consumer gone (for
    /// instance when its process died), which wakes this end if it waits.
    pub fn disconnect_handle(&self) -> DisconnectHandle {
        DisconnectHandle::new(
            &self.disconnect,
            self.ring.region(),
            &self.ring.header().consumer.space_seq,
        )
    }

    /// Reserves room for a `len`-byte payload without waiting.
    #[inline(always)]
    pub fn try_reserve(&mut self, len: usize) -> Result<Grant<'_>, SendError> {
        match self.poll_room(len)? {
            Some(()) => Ok(self.grant(len)),
            None => Err(SendError::Full),
        }
    }

    /// Reserves room for a `len`-byte payload, waiting per the wait strategy
    /// for at most `timeout` (`None`: as long as it takes).
    pub fn reserve(
        &mut self,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<Grant<'_>, SendError> {
        // Found on this producer just now: granted without a second look.
        let FoundRoom { len, .. } = self.wait_for_room(len, timeout)?;
        Ok(self.grant(len))
    }

    /// Room for a `len`-byte payload if there is some now, to take with
    /// [`take_room`](Self::take_room); `None` when the ring is full or this
    /// end cannot send (which [`wait_for_room`](Self::wait_for_room) or
    /// [`try_reserve`](Self::try_reserve) then report).
    #[inline]
    pub fn room_now(&mut self, len: usize) -> Option<FoundRoom> {
        match self.poll_room(len) {
            Ok(Some(())) => Some(self.found_room(len)),
            _ => None,
        }
    }

    /// Takes the room [`wait_for_room`](Self::wait_for_room) or
    /// [`room_now`](Self::room_now) found: the grant without a second look
    /// at the ring's state when this producer found it, with nothing
    /// reserved since (nothing else writes this ring and the consumer only
    /// frees room, so the room is still there), and the ring found neither
    /// corrupt nor disconnected since. Any other token (another producer's,
    /// or one outdated by a reserve) is checked like
    /// [`try_reserve`](Self::try_reserve), which reports those too.
    #[inline]
    pub fn take_room(&mut self, room: FoundRoom) -> Result<Grant<'_>, SendError> {
        if room.producer == self.id
            && room.tail == self.tail
            && self.corrupt.is_none()
            && !self.disconnect.is_set()
        {
            return Ok(self.grant(room.len));
        }
        self.try_reserve(room.len)
    }

    /// The token for room for a `len`-byte payload found just now.
    fn found_room(&self, len: usize) -> FoundRoom {
        FoundRoom {
            producer: self.id,
            tail: self.tail,
            len,
        }
    }

    /// Waits, per the wait strategy and for at most `timeout`, until a
    /// `len`-byte frame fits, and says where: [`take_room`](Self::take_room)
    /// then grants it (nothing else writes this ring). For a caller that
    /// must handle the failure before it holds the grant's borrow.
    #[inline]
    pub fn wait_for_room(
        &mut self,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<FoundRoom, SendError> {
        let mut waiter = RoomWaiter {
            producer: self,
            len,
        };
        match wait::block_on(&mut waiter, timeout) {
            Ok(()) => Ok(self.found_room(len)),
            Err(Blocked::TimedOut) => Err(SendError::TimedOut),
            Err(Blocked::Failed(e)) => Err(e),
        }
    }

    /// Whether a `len`-byte payload fits now (the next `try_reserve(len)`
    /// then succeeds), without reserving anything. Errors are those of
    /// [`try_reserve`](Self::try_reserve) except `Full`.
    pub fn has_room(&mut self, len: usize) -> Result<bool, SendError> {
        self.poll_room(len).map(|room| room.is_some())
    }

    /// Prepares to wait in an event loop for room for a `len`-byte payload,
    /// on the notification socket whose other end the consumer was given
    /// with [`Consumer::set_notifier`]. Returns `Ok(true)` when the frame
    /// fits already (or the consumer closed or was declared gone): do not
    /// wait, try again. Returns `Ok(false)` when armed: the consumer's next
    /// release signals the socket. Call
    /// [`disarm_room_notification`](Self::disarm_room_notification) once
    /// woken, before trying again; the same fence-and-recheck protocol as
    /// the futex wait means no release is missed between this check and the
    /// wait. Errors are those of [`try_reserve`](Self::try_reserve) (except
    /// `Full`, which is what arming waits out).
    ///
    /// As with [`Consumer::arm_notification`], a blocking wait of this end
    /// while armed keeps the arming.
    ///
    /// [`Consumer::set_notifier`]: crate::Consumer::set_notifier
    /// [`Consumer::arm_notification`]: crate::Consumer::arm_notification
    pub fn arm_room_notification(&mut self, len: usize) -> Result<bool, SendError> {
        self.announce_room_wait();
        match self.poll_room(len) {
            Ok(None) => Ok(false),
            Ok(Some(())) | Err(SendError::Closed | SendError::Disconnected) => {
                self.disarm_room_notification();
                Ok(true)
            }
            Err(e) => {
                self.disarm_room_notification();
                Err(e)
            }
        }
    }

    /// The first half of [`arm_room_notification`](Self::arm_room_notification):
    /// arms (anew: the consumer signals this announcement once) without
    /// checking for room. The caller must then check with
    /// [`has_room`](Self::has_room) before it waits, and disarm when it
    /// does not wait. For several event-loop waiters sharing this producer
    /// (one of them finding room must not disarm the others).
    pub fn announce_room_wait(&mut self) {
        let header = self.ring.header();
        let seen = header.consumer.space_seq.load(Ordering::Acquire);
        self.announcer.arm(&header.producer_parked.parked, seen);
        crate::sync::fence(Ordering::SeqCst);
    }

    /// Stops asking the consumer for room notifications.
    pub fn disarm_room_notification(&mut self) {
        self.announcer
            .disarm(&self.ring.header().producer_parked.parked);
    }

    /// Whether this producer is armed for room in an event loop
    /// ([`arm_room_notification`](Self::arm_room_notification) returned
    /// `Ok(false)` and
    /// [`disarm_room_notification`](Self::disarm_room_notification) was not
    /// called since).
    pub fn is_armed(&self) -> bool {
        self.announcer.is_armed()
    }

    /// Copies `payload` into a frame and publishes it, without waiting.
    pub fn try_send(&mut self, payload: &[u8]) -> Result<(), SendError> {
        let mut grant = self.try_reserve(payload.len())?;
        grant.copy_from_slice(payload);
        grant.commit();
        Ok(())
    }

    /// Copies `payload` into a frame and publishes it, waiting for room for
    /// at most `timeout`.
    pub fn send(&mut self, payload: &[u8], timeout: Option<Duration>) -> Result<(), SendError> {
        let mut grant = self.reserve(payload.len(), timeout)?;
        grant.copy_from_slice(payload);
        grant.commit();
        Ok(())
    }

    /// Publishes every frame committed with [`Grant::commit_deferred`] with a
    /// single store of the tail (and at most one wake-up).
    #[inline]
    pub fn flush(&mut self) {
        if self.tail == self.published {
            return;
        }
        let header = self.ring.header();
        header.producer.tail.store(self.tail, Ordering::Release);
        self.published = self.tail;
        wait::notify_peer(
            &header.producer.data_seq,
            &mut self.data_seq,
            &header.consumer_parked.parked,
            &mut self.last_woken,
            self.notifier.as_ref(),
            &mut self.stats,
        );
    }

    /// `Ok(Some(()))` when a `len`-byte frame fits now, `Ok(None)` when the
    /// ring is full, or why this end cannot send at all.
    #[inline]
    fn poll_room(&mut self, len: usize) -> Result<Option<()>, SendError> {
        if let Some(corruption) = self.corrupt {
            return Err(SendError::Corrupt(corruption));
        }
        if self.disconnect.is_set() {
            return Err(SendError::Disconnected);
        }
        let max = self.max_payload();
        if len > max {
            return Err(SendError::TooLarge { len, max });
        }
        let needed = self.bytes_needed(len) as u64;
        let capacity = self.ring.capacity() as u64;
        if self.tail + needed - self.cached_head <= capacity {
            return Ok(Some(()));
        }
        self.refresh_head()?;
        if self.tail + needed - self.cached_head <= capacity {
            return Ok(Some(()));
        }
        // Full. Frames committed with `commit_deferred` may be what fills
        // it: publish them, or the consumer could never free the room we wait
        // for (a batch larger than the ring would deadlock).
        self.flush();
        Ok(None)
    }

    /// Bytes a `len`-byte frame takes at the current tail, counting the
    /// padding frame needed when it does not fit before the end.
    fn bytes_needed(&self, len: usize) -> usize {
        let size = frame_size(len);
        let to_end = self.ring.capacity() - self.ring.index(self.tail);
        if size <= to_end { size } else { to_end + size }
    }

    /// Loads the consumer's head and checks it: it only moves forward, and
    /// never past what we published.
    fn refresh_head(&mut self) -> Result<(), SendError> {
        let consumer = &self.ring.header().consumer;
        let head = consumer.head.load(Ordering::Acquire);
        if head < self.cached_head || head > self.published || head % FRAME_ALIGN as u64 != 0 {
            let corruption = Corruption::Position {
                observed: head,
                own: self.published,
                last_seen: self.cached_head,
            };
            self.corrupt = Some(corruption);
            return Err(SendError::Corrupt(corruption));
        }
        self.cached_head = head;
        if consumer.closed.load(Ordering::Acquire) != 0 {
            return Err(SendError::Closed);
        }
        Ok(())
    }

    /// Hands out the room `poll_room` found, writing the padding frame first
    /// when the frame must start again at offset 0.
    fn grant(&mut self, len: usize) -> Grant<'_> {
        let size = frame_size(len);
        let index = self.ring.index(self.tail);
        let to_end = self.ring.capacity() - index;
        if size > to_end {
            let padding = (to_end - FRAME_HEADER_SIZE) as u32;
            self.ring
                .store_word(index, encode_header(padding, KIND_PADDING));
            self.tail += to_end as u64;
        }
        let index = self.ring.index(self.tail);
        let payload = self
            .ring
            .data_ptr(index + FRAME_HEADER_SIZE, size - FRAME_HEADER_SIZE);
        Grant {
            producer: self,
            index,
            payload,
            len,
        }
    }
}

impl Producer {
    /// Lets go of this end in this process only: unlike dropping it, the
    /// ring is not marked closed and nothing deferred is published, so
    /// another process that holds the same end (a `fork` duplicated it)
    /// keeps using it, and the consumer notices nothing. This copy's private
    /// positions are stale once the other process has moved on: publishing
    /// them would corrupt the ring, which is why dropping is not enough.
    pub fn detach(mut self) {
        self.detached = true;
    }
}

impl Drop for Producer {
    /// Publishes what was deferred and marks the ring closed, waking a
    /// sleeping consumer so it sees the close.
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        self.flush();
        let header = self.ring.header();
        header.producer.closed.store(1, Ordering::Release);
        wait::notify_peer(
            &header.producer.data_seq,
            &mut self.data_seq,
            &header.consumer_parked.parked,
            &mut self.last_woken,
            self.notifier.as_ref(),
            &mut self.stats,
        );
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.ring.capacity())
            .field("tail", &self.tail)
            .field("cached_head", &self.cached_head)
            .field("corrupt", &self.corrupt)
            .finish()
    }
}

/// A new producer id (a plain counter: ids only have to differ).
fn next_producer_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Room for a frame that [`Producer::wait_for_room`] or
/// [`Producer::room_now`] found, for [`Producer::take_room`]: no borrow of
/// the producer, so a caller can handle a failed wait before it holds a
/// grant.
#[derive(Debug)]
#[must_use = "the room is taken with `Producer::take_room`"]
pub struct FoundRoom {
    /// The id of the producer that found it.
    producer: u64,
    /// The producer's tail when the room was found.
    tail: u64,
    /// The payload length it was found for.
    len: usize,
}

/// Waiting for room, as seen by the wait loop.
struct RoomWaiter<'a> {
    producer: &'a mut Producer,
    len: usize,
}

impl Waiter for RoomWaiter<'_> {
    type Ready = ();
    type Error = SendError;

    fn poll_ready(&mut self) -> Result<Option<()>, SendError> {
        self.producer.poll_room(self.len)
    }
    fn wake_seq(&self) -> &AtomicU32 {
        &self.producer.ring.header().consumer.space_seq
    }
    fn parking(&mut self) -> (&AtomicU64, &mut Announcer) {
        let producer = &mut *self.producer;
        (
            &producer.ring.header().producer_parked.parked,
            &mut producer.announcer,
        )
    }
    fn strategy(&self) -> WaitStrategy {
        self.producer.strategy
    }
    fn stats_mut(&mut self) -> &mut Stats {
        &mut self.producer.stats
    }
}

/// Room for one frame, written in place. Dereferences to the payload bytes
/// (`len` of them, exactly). Nothing is visible to the consumer until
/// [`commit`](Grant::commit); dropping the grant abandons the frame.
pub struct Grant<'a> {
    producer: &'a mut Producer,
    /// Index of the frame header in the data area.
    index: usize,
    payload: *mut u8,
    len: usize,
}

impl<'a> Grant<'a> {
    /// Publishes the frame now (one store of the tail; a `futex_wake` only if
    /// the consumer sleeps).
    #[inline]
    pub fn commit(self) {
        let producer = self.finish();
        producer.flush();
    }

    /// Completes the frame but publishes it only at the next
    /// [`Producer::flush`] or [`commit`](Grant::commit), or when the producer
    /// finds the ring full: a batch costs one publish.
    #[inline]
    pub fn commit_deferred(self) {
        self.finish();
    }

    /// Shortens the frame to its first `len` bytes before committing: for a
    /// serializer that was given more room than it turned out to need.
    /// Larger values are ignored.
    pub fn shrink_to(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    fn finish(self) -> &'a mut Producer {
        let Grant {
            producer,
            index,
            len,
            ..
        } = self;
        producer
            .ring
            .store_word(index, encode_header(len as u32, KIND_DATA));
        producer.tail += frame_size(len) as u64;
        producer.stats.frames += 1;
        producer.stats.bytes += len as u64;
        producer
    }
}

impl std::fmt::Debug for Grant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant").field("len", &self.len).finish()
    }
}

impl std::ops::Deref for Grant<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `payload` points at `len` bytes of the data area that lie
        // between our private tail and the head the consumer published:
        // under the protocol nobody else touches them until we publish. In
        // this process this producer is the ring's only one (its attach
        // claim refuses a second, and any overlapping ring) and the `&mut`
        // borrow of the producer makes this its only grant, so no other
        // reference to these bytes exists. A consumer process that breaks
        // the protocol can still write here (shared memory): we only write
        // these bytes and never read back what we wrote to decide anything,
        // so that spoils only the frame it will itself receive.
        unsafe { std::slice::from_raw_parts(self.payload, self.len) }
    }
}

impl std::ops::DerefMut for Grant<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference
        // (the grant cannot be cloned, and `finish` takes it by value).
        unsafe { std::slice::from_raw_parts_mut(self.payload, self.len) }
    }
}
