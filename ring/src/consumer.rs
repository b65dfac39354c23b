//! The reading end of a ring.

use crate::claim::Side;
use crate::disconnect::{DisconnectFlag, DisconnectHandle};
use crate::error::{AttachError, Corruption, RecvError};
use crate::frame::{FRAME_ALIGN, FRAME_HEADER_SIZE, FrameSpan, decode_header, max_payload};
use crate::notifier::Notifier;
use crate::pinned::{PinToken, PinnedFrame};
use crate::region::Region;
use crate::ring::RingRef;
use crate::stats::Stats;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::wait::{self, Announcer, Blocked, WaitStrategy, Waiter};
use crate::wake::{WakeFlag, WakeHandle};
use std::sync::Arc;
use std::time::Duration;

/// The reading end of a ring: peeks at the next frame in place and releases
/// it when done.
///
/// Everything loaded from shared memory is checked before use: the
/// producer's tail (monotonic, never more than the capacity ahead of what we
/// released) and each frame header (kind, length against what was published,
/// the end of the data area and the maximum). A violation fails this end for
/// good with [`RecvError::Corrupt`].
///
/// ```
/// let (mut tx, mut rx) = ferry_ring::channel(4096);
/// tx.try_send(b"one").unwrap();
/// tx.try_send(b"two").unwrap();
/// // Release in a batch: one store of the head for both frames.
/// for expected in [b"one", b"two"] {
///     let frame = rx.try_peek().unwrap();
///     assert_eq!(frame.payload(), expected);
///     frame.release_deferred();
/// }
/// rx.flush();
/// ```
pub struct Consumer {
    ring: RingRef,
    /// Where the next frame starts (may run ahead of `published`).
    read: u64,
    /// While non-zero, the head is not published (see `pin`).
    pins: u32,
    /// Shared with every frame kept in place; while any exists, the head is
    /// not published either (see `Frame::keep_in_place`).
    pin_token: Arc<PinToken>,
    /// A clone of `pin_token` a frame kept in place gave back
    /// ([`give_back`](Self::give_back)), for the next one: a frame taken
    /// and given back on this thread then costs no atomic read-modify-write
    /// of the count. Only ever touched through `&mut self`.
    spare_pin: Option<Arc<PinToken>>,
    /// The head last stored to shared memory.
    published: u64,
    /// The producer's tail as last loaded (and validated).
    cached_tail: u64,
    /// Our private copy of the sequence word we bump on release.
    space_seq: u32,
    strategy: WaitStrategy,
    corrupt: Option<Corruption>,
    disconnect: DisconnectFlag,
    /// Set by a [`WakeHandle`]: the current wait ends early.
    woken: WakeFlag,
    /// Our end of the notification socketpair, through which a producer
    /// waiting for room in an event loop is signalled.
    notifier: Option<Notifier>,
    /// The producer's parked word we last woke (see `wait::notify_peer`).
    last_woken: u64,
    /// What we announce in our own parked word when we wait for frames or
    /// arm for an event loop.
    announcer: Announcer,
    stats: Stats,
    /// Set by `detach`: dropping touches nothing shared.
    detached: bool,
}

/// Where the frame at the read position is, once validated.
#[derive(Clone, Copy)]
struct FrameAt {
    len: usize,
    size: usize,
}

impl Consumer {
    /// Attaches the consumer end of the ring at `offset` in `region`,
    /// validating the ring header first.
    pub fn attach(region: Arc<Region>, offset: usize) -> Result<Consumer, AttachError> {
        let (ring, positions) = RingRef::attach(region, offset, Side::Consumer)?;
        let announcer = Announcer::new(&ring.header().consumer_parked.parked);
        Ok(Consumer {
            read: positions.head,
            pins: 0,
            pin_token: PinToken::new(Arc::clone(ring.attachment())),
            spare_pin: None,
            published: positions.head,
            cached_tail: positions.head,
            space_seq: ring.header().consumer.space_seq.load(Ordering::Relaxed),
            ring,
            strategy: WaitStrategy::default(),
            corrupt: None,
            disconnect: DisconnectFlag::default(),
            woken: WakeFlag::default(),
            notifier: None,
            last_woken: 0,
            announcer,
            stats: Stats::default(),
            detached: false,
        })
    }

    /// Sets how this end waits for frames. Returns `self` for chaining.
    pub fn with_wait_strategy(mut self, strategy: WaitStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Changes how this end waits for frames.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// Gives this end our end of the notification socketpair whose other
    /// end the producer watches: while the producer waits for room in an
    /// event loop ([`Producer::arm_room_notification`]), a release that
    /// frees room also signals it (once per arming, not once per release).
    /// While nobody is armed this costs nothing: the release already loads
    /// the producer's parked word to decide whether to wake a futex sleeper.
    /// Signalling never blocks, whatever the peer did to the socket (see
    /// [`Notifier`]).
    ///
    /// [`Producer::arm_room_notification`]: crate::Producer::arm_room_notification
    pub fn set_notifier(&mut self, notifier: Option<Notifier>) {
        self.notifier = notifier;
    }

    /// The largest payload this ring carries.
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

    /// Whether the producer closed its end in an orderly way (dropped its
    /// endpoint), as opposed to vanishing. Read from shared memory: a hint
    /// about a peer, not a fact to rely on for safety.
    pub fn peer_closed(&self) -> bool {
        self.ring.header().producer.closed.load(Ordering::Acquire) != 0
    }

    /// A handle another thread can use to declare the producer gone (for
    /// instance when its process died), which wakes this end if it waits.
    pub fn disconnect_handle(&self) -> DisconnectHandle {
        DisconnectHandle::new(
            &self.disconnect,
            self.ring.region(),
            &self.ring.header().producer.data_seq,
        )
    }

    /// A handle that ends this end's waits early, from another thread of
    /// this process (see [`peek`](Self::peek)).
    pub fn wake_handle(&self) -> WakeHandle {
        WakeHandle::new(
            &self.woken,
            self.ring.region(),
            &self.ring.header().producer.data_seq,
        )
    }

    /// The next frame, without waiting.
    #[inline(always)]
    pub fn try_peek(&mut self) -> Result<Frame<'_>, RecvError> {
        match self.poll_frame()? {
            Some(at) => Ok(self.frame(at)),
            None => Err(RecvError::Empty),
        }
    }

    /// The next frame, waiting per the wait strategy for at most `timeout`
    /// (`None`: as long as it takes). A [`WakeHandle::wake`] ends the wait
    /// early with `TimedOut` when no frame is there (once per wake).
    pub fn peek(&mut self, timeout: Option<Duration>) -> Result<Frame<'_>, RecvError> {
        let mut waiter = FrameWaiter { consumer: self };
        match wait::block_on(&mut waiter, timeout) {
            Ok(at) => Ok(self.frame(at)),
            Err(Blocked::TimedOut) => Err(RecvError::TimedOut),
            Err(Blocked::Failed(e)) => Err(e),
        }
    }

    /// Receives the next frame into `out` (replacing its contents), waiting
    /// for at most `timeout`; returns the payload length. The copy is made
    /// before the frame is released, so a producer that rewrites published
    /// bytes cannot change what `out` holds afterwards.
    pub fn recv_into(
        &mut self,
        out: &mut Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<usize, RecvError> {
        let frame = self.peek(timeout)?;
        let len = frame.len();
        out.clear();
        out.reserve(len);
        // SAFETY: `reserve` made room for `len` bytes; `copy_to` writes them
        // all before we set the length. `out`'s buffer is its own live
        // allocation, so it cannot overlap the ring (a mapping, or another
        // live allocation for a heap region), as `copy_to` requires.
        unsafe {
            frame.copy_to(out.as_mut_ptr());
            out.set_len(len);
        }
        frame.release();
        Ok(len)
    }

    /// Keeps the room of released frames from the producer until the
    /// matching [`unpin`](Self::unpin): no flush, explicit or automatic,
    /// publishes the head meanwhile. For a reader that keeps a frame's bytes
    /// in place (through the pointer of [`Frame::payload`]) after
    /// `release_deferred`, while it reads further frames: while pinned, the
    /// producer cannot overwrite those bytes. Pins nest.
    ///
    /// A pinned consumer that keeps reading can empty the ring without
    /// freeing it: the producer then waits for room until it is unpinned.
    pub fn pin(&mut self) {
        self.pins += 1;
    }

    /// Gives back a frame this consumer kept in place: the same as dropping
    /// it, then [`flush`](Self::flush), except that its share of the pin
    /// count is kept for the next frame kept in place, which then costs no
    /// atomic read-modify-write (dropping one and cloning the next cost two
    /// per frame). A frame of another consumer is simply dropped.
    #[inline]
    pub fn give_back(&mut self, frame: PinnedFrame) {
        let token = frame.into_token();
        if self.spare_pin.is_none() && Arc::ptr_eq(&token, &self.pin_token) {
            // Counted as a spare by `frames_kept`: the frame is gone, and
            // its reads happened before this, on this thread.
            self.spare_pin = Some(token);
        } else {
            drop(token);
        }
        self.flush();
    }

    /// Releases one [`pin`](Self::pin); the last one publishes the head.
    pub fn unpin(&mut self) {
        self.pins = self.pins.saturating_sub(1);
        self.flush();
    }

    /// Prepares to wait in an event loop (epoll, mio, tokio) on the
    /// notification socket whose other end the producer was given with
    /// [`Producer::set_notifier`]. Returns `Ok(true)` when a frame (or the
    /// close) is already there: do not wait, read. Returns `Ok(false)` when
    /// armed: the producer's next publish signals the socket. Call
    /// [`disarm_notification`] once woken, before reading; the same
    /// fence-and-recheck protocol as the futex wait means no publish is
    /// missed between this check and the wait.
    ///
    /// A blocking wait of this consumer ([`peek`](Self::peek),
    /// [`recv_into`](Self::recv_into)) while armed keeps the arming: what the
    /// producer publishes during that wait signals the socket too, and the
    /// next publish after it still does. So frames the blocking wait left in
    /// the ring are never without a signal; the event loop wakes (perhaps
    /// for frames already read: a wake-up is a hint) and reads until empty.
    ///
    /// [`Producer::set_notifier`]: crate::Producer::set_notifier
    /// [`disarm_notification`]: Self::disarm_notification
    pub fn arm_notification(&mut self) -> Result<bool, RecvError> {
        let header = self.ring.header();
        let seen = header.producer.data_seq.load(Ordering::Acquire);
        self.announcer.arm(&header.consumer_parked.parked, seen);
        crate::sync::fence(Ordering::SeqCst);
        match self.poll_frame() {
            Ok(None) => Ok(false),
            Ok(Some(_)) | Err(RecvError::Closed | RecvError::Disconnected) => {
                self.disarm_notification();
                Ok(true)
            }
            Err(e) => {
                self.disarm_notification();
                Err(e)
            }
        }
    }

    /// Stops asking the producer for notifications.
    pub fn disarm_notification(&mut self) {
        self.announcer
            .disarm(&self.ring.header().consumer_parked.parked);
    }

    /// Whether this consumer is armed for an event loop
    /// ([`arm_notification`](Self::arm_notification) returned `Ok(false)`
    /// and [`disarm_notification`](Self::disarm_notification) was not
    /// called since).
    pub fn is_armed(&self) -> bool {
        self.announcer.is_armed()
    }

    /// Makes every frame released with [`Frame::release_deferred`] available
    /// to the producer with a single store of the head (unless pinned).
    #[inline]
    pub fn flush(&mut self) {
        if self.read == self.published
            || self.pins > 0
            || PinToken::frames_kept(&self.pin_token, self.spare_pin.is_some())
        {
            return;
        }
        let header = self.ring.header();
        header.consumer.head.store(self.read, Ordering::Release);
        self.published = self.read;
        wait::notify_peer(
            &header.consumer.space_seq,
            &mut self.space_seq,
            &header.producer_parked.parked,
            &mut self.last_woken,
            self.notifier.as_ref(),
            &mut self.stats,
        );
    }

    /// The validated frame at the read position, `None` when the ring is
    /// empty, or why this end cannot receive. Skips a padding frame.
    #[inline]
    fn poll_frame(&mut self) -> Result<Option<FrameAt>, RecvError> {
        if let Some(corruption) = self.corrupt {
            return Err(RecvError::Corrupt(corruption));
        }
        // Each pass either returns or skips one padding frame, and a padding
        // frame always reaches the end of the data area, so this runs at
        // most three times however the producer filled the ring.
        loop {
            if self.read == self.cached_tail {
                self.refresh_tail()?;
                if self.read == self.cached_tail && self.no_more_frames()? {
                    // Empty. Give back the room of frames released with
                    // `release_deferred`: the producer may be waiting for
                    // exactly that room, and we are about to wait for it.
                    self.flush();
                    return Ok(None);
                }
            }
            let index = self.ring.index(self.read);
            let available = (self.cached_tail - self.read) as usize;
            let word = self.ring.load_word(index);
            match decode_header(word, index, available, self.ring.capacity()) {
                Ok(FrameSpan::Data { len, size }) => return Ok(Some(FrameAt { len, size })),
                Ok(FrameSpan::Padding { size }) => self.read += size as u64,
                Err(corruption) => return Err(self.fail(corruption)),
            }
        }
    }

    /// Called when the ring looks empty: `Ok(true)` when it is, or why no
    /// frame will ever come (declared disconnected, or the producer closed
    /// and every frame it published was seen). `Ok(false)` when a last load
    /// of the tail after the close found more frames.
    fn no_more_frames(&mut self) -> Result<bool, RecvError> {
        let gone = if self.disconnect.is_set() {
            RecvError::Disconnected
        } else if self.ring.header().producer.closed.load(Ordering::Acquire) != 0 {
            RecvError::Closed
        } else {
            return Ok(true);
        };
        // The producer published before it closed or died (and before
        // whoever declared it gone learned of that): load the tail once more
        // so no frame it sent is missed.
        self.refresh_tail()?;
        if self.read == self.cached_tail {
            return Err(gone);
        }
        Ok(false)
    }

    /// Loads the producer's tail and checks it: it only moves forward, stays
    /// frame-aligned, and is never more than the capacity ahead of the head
    /// we published.
    fn refresh_tail(&mut self) -> Result<(), RecvError> {
        let tail = self.ring.header().producer.tail.load(Ordering::Acquire);
        let capacity = self.ring.capacity() as u64;
        let valid = tail >= self.cached_tail
            && tail % FRAME_ALIGN as u64 == 0
            && tail - self.published <= capacity;
        if !valid {
            return Err(self.fail(Corruption::Position {
                observed: tail,
                own: self.published,
                last_seen: self.cached_tail,
            }));
        }
        self.cached_tail = tail;
        Ok(())
    }

    fn fail(&mut self, corruption: Corruption) -> RecvError {
        self.corrupt = Some(corruption);
        RecvError::Corrupt(corruption)
    }

    fn frame(&mut self, at: FrameAt) -> Frame<'_> {
        let index = self.ring.index(self.read);
        let payload = self.ring.data_ptr(index + FRAME_HEADER_SIZE, at.len);
        Frame {
            consumer: self,
            payload,
            at,
        }
    }
}

impl Consumer {
    /// Lets go of this end in this process only: unlike dropping it, the
    /// ring is not marked closed and nothing deferred is published, so
    /// another process that holds the same end (a `fork` duplicated it)
    /// keeps using it, and the producer notices nothing. This copy's private
    /// positions are stale once the other process has moved on: publishing
    /// them would corrupt the ring, which is why dropping is not enough.
    pub fn detach(mut self) {
        self.detached = true;
    }
}

impl Drop for Consumer {
    /// Releases what was deferred and marks the ring closed, waking a
    /// producer that waits for room so it sees the close.
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        self.flush();
        let header = self.ring.header();
        header.consumer.closed.store(1, Ordering::Release);
        wait::notify_peer(
            &header.consumer.space_seq,
            &mut self.space_seq,
            &header.producer_parked.parked,
            &mut self.last_woken,
            self.notifier.as_ref(),
            &mut self.stats,
        );
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.ring.capacity())
            .field("read", &self.read)
            .field("cached_tail", &self.cached_tail)
            .field("corrupt", &self.corrupt)
            .finish()
    }
}

/// Waiting for a frame, as seen by the wait loop.
struct FrameWaiter<'a> {
    consumer: &'a mut Consumer,
}

impl Waiter for FrameWaiter<'_> {
    type Ready = FrameAt;
    type Error = RecvError;

    fn poll_ready(&mut self) -> Result<Option<FrameAt>, RecvError> {
        let ready = self.consumer.poll_frame()?;
        if ready.is_none() && self.consumer.woken.take() {
            return Err(RecvError::TimedOut);
        }
        Ok(ready)
    }
    fn wake_seq(&self) -> &AtomicU32 {
        &self.consumer.ring.header().producer.data_seq
    }
    fn parking(&mut self) -> (&AtomicU64, &mut Announcer) {
        let consumer = &mut *self.consumer;
        (
            &consumer.ring.header().consumer_parked.parked,
            &mut consumer.announcer,
        )
    }
    fn strategy(&self) -> WaitStrategy {
        self.consumer.strategy
    }
    fn stats_mut(&mut self) -> &mut Stats {
        &mut self.consumer.stats
    }
}

/// The next frame, in place in the ring. Dropping it without releasing
/// leaves it in the ring: the next peek returns it again.
pub struct Frame<'a> {
    consumer: &'a mut Consumer,
    payload: *const u8,
    at: FrameAt,
}

impl<'a> Frame<'a> {
    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.at.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.at.len == 0
    }

    /// The payload, in place (16-aligned).
    ///
    /// For a **trusted** producer only. Under the protocol the producer never
    /// touches a published frame until we release it, so these bytes are
    /// stable; a producer that breaks the protocol can rewrite them while
    /// they are borrowed (validate-then-use would then be a time-of-check to
    /// time-of-use hole). For an untrusted producer, copy them out first with
    /// [`copy_to`](Self::copy_to) or [`Consumer::recv_into`].
    pub fn payload(&self) -> &[u8] {
        // SAFETY: the frame header was validated: `len` bytes from
        // `payload` lie inside the data area and within what the producer
        // published (Acquire load of the tail), and the region is alive while
        // the consumer is borrowed. The room is not released while this
        // `Frame` (and so the returned borrow) lives: releasing takes the
        // frame by value, and the consumer, the only one of this ring in
        // this process (its attach claim refuses a second), is mutably
        // borrowed. A caller that `mem::replace`s or drops the consumer must
        // first end this borrow. Only a producer that breaks the protocol
        // (another process, or a second mapping of the memfd) could write
        // these bytes meanwhile: the trust caveat above.
        unsafe { std::slice::from_raw_parts(self.payload, self.at.len) }
    }

    /// Copies the payload to `dst` without forming a reference to the shared
    /// bytes: the safe way to take a frame from an untrusted producer.
    ///
    /// # Safety
    ///
    /// `dst` must be valid for writes of [`len`](Self::len) bytes and must
    /// not overlap the ring.
    pub unsafe fn copy_to(&self, dst: *mut u8) {
        // SAFETY: the source is `len` validated bytes of the data area (see
        // `payload`); the caller guarantees the destination.
        unsafe { std::ptr::copy_nonoverlapping(self.payload, dst, self.at.len) }
    }

    /// Frees the frame's room for the producer now.
    #[inline]
    pub fn release(self) {
        let consumer = self.finish();
        consumer.flush();
    }

    /// Frees the frame's room at the next [`Consumer::flush`] or
    /// [`release`](Self::release), or when the consumer finds the ring empty
    /// (unless [pinned](Consumer::pin)): a batch costs one store.
    #[inline]
    pub fn release_deferred(self) {
        self.finish();
    }

    /// Frees the frame's room like [`release_deferred`](Self::release_deferred),
    /// but keeps its payload readable in place: the consumer publishes no
    /// head until the returned frame is dropped (it goes on reading later
    /// frames meanwhile). For a trusted producer, as [`payload`](Self::payload).
    #[inline]
    pub fn keep_in_place(self) -> PinnedFrame {
        let (payload, len) = (self.payload, self.at.len);
        let consumer = &mut *self.consumer;
        let token = consumer
            .spare_pin
            .take()
            .unwrap_or_else(|| Arc::clone(&consumer.pin_token));
        self.finish();
        // SAFETY: `payload..payload + len` is this frame's validated payload
        // inside the region `token` keeps mapped; `token` is a clone of the
        // consumer's (new, or the spare a frame gave back, which no longer
        // counts as the spare once taken), so the consumer's `flush` (the
        // only place a head is stored, `drop` included) publishes no head
        // until the frame is dropped or given back, and the room is not
        // given back to the producer meanwhile. Dropping,
        // replacing or moving the consumer changes nothing: the token also
        // keeps the consumer side of the ring claimed, so no second consumer
        // can attach through this region and release the room. Leaking the
        // `PinnedFrame` (`mem::forget`) leaks the clone: the head then stays
        // where it is for good (the producer stalls), which is safe.
        unsafe { PinnedFrame::new(payload, len, token) }
    }

    fn finish(self) -> &'a mut Consumer {
        let Frame { consumer, at, .. } = self;
        consumer.read += at.size as u64;
        consumer.stats.frames += 1;
        consumer.stats.bytes += at.len as u64;
        consumer
    }
}

impl std::fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame").field("len", &self.at.len).finish()
    }
}
