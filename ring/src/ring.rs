//! Creating a ring in a region and attaching an endpoint to it.
//!
//! This module (with `RingRef`) owns the pointer arithmetic into the ring:
//! endpoints ask it for the header, a frame header word or a payload, by
//! indices they have already validated.

use crate::attachment::Attachment;
use crate::claim::Side;
use crate::error::{AttachError, Corruption};
use crate::frame::FRAME_ALIGN;
use crate::layout::{HEADER_SIZE, LAYOUT_VERSION, MAGIC, RING_ALIGN, RingHeader};
use crate::region::Region;
#[cfg(not(loom))]
use crate::sync::AtomicU64;
use crate::sync::Ordering;
use crate::{Consumer, Producer};
use std::ptr::NonNull;
use std::sync::Arc;

/// The smallest data area a ring may have.
pub const MIN_CAPACITY: usize = 256;
/// The largest data area a ring may have (8 GiB): the largest payload,
/// half of it, must fit the frame header's 32-bit length.
pub const MAX_CAPACITY: usize = 1 << 33;

const _: () = assert!(crate::frame::max_payload(MAX_CAPACITY) <= u32::MAX as usize);

/// Positions a ring may start from. Far beyond what any ring transfers (4
/// EiB), and low enough that no position arithmetic can overflow: a peer
/// that lays out a ring with positions near `u64::MAX` is refused at attach.
const MAX_POSITION: u64 = 1 << 62;

/// Bytes a ring with a data area of `capacity` bytes occupies in a region.
pub const fn ring_size(capacity: usize) -> usize {
    HEADER_SIZE + capacity
}

/// Writes a fresh, empty ring with a data area of `capacity` bytes at
/// `offset` in `region`. Do this before the region is shared: a peer already
/// using a ring there would see it reset. Refused with
/// [`AttachError::Overlap`] while an endpoint attached through `region`
/// uses any of those bytes (its frames or grants may be borrowed right now).
pub fn init(region: &Region, offset: usize, capacity: usize) -> Result<(), AttachError> {
    check_capacity(capacity as u64)?;
    let header = header_ptr(region, offset, capacity as u64)?;
    region
        .claims()
        .while_unclaimed(offset, offset + ring_size(capacity), || {
            write_empty_header(header, capacity)
        })
}

/// Writes the header of an empty ring at `header` (checked by
/// `header_ptr`; no endpoint of this process uses those bytes).
fn write_empty_header(header: NonNull<RingHeader>, capacity: usize) {
    #[cfg(not(loom))]
    {
        // SAFETY: `header_ptr` checked that a whole `RingHeader` fits at this
        // aligned offset inside the live region. Every field is an atomic
        // integer, for which any bytes are a valid value, so a reference is
        // sound even over memory a peer can also write. No endpoint attached
        // through this region uses these bytes (`init` holds the claim table
        // with none overlapping), so no frame or grant of this process
        // borrows them as plain bytes while we store.
        let header = unsafe { header.as_ref() };
        header.producer.tail.store(0, Ordering::Relaxed);
        header.producer.data_seq.store(0, Ordering::Relaxed);
        header.producer.closed.store(0, Ordering::Relaxed);
        header.consumer.head.store(0, Ordering::Relaxed);
        header.consumer.space_seq.store(0, Ordering::Relaxed);
        header.consumer.closed.store(0, Ordering::Relaxed);
        header.producer_parked.parked.store(0, Ordering::Relaxed);
        header.consumer_parked.parked.store(0, Ordering::Relaxed);
        let identity = &header.identity;
        identity.capacity.store(capacity as u64, Ordering::Relaxed);
        identity.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        // Magic last, with Release: an attacher that sees it sees the rest.
        identity.magic.store(MAGIC, Ordering::Release);
    }
    #[cfg(loom)]
    // SAFETY: as above for bounds and alignment; under loom the header must be
    // constructed in place because loom's atomics are not plain integers, and
    // loom tests create a ring before any thread uses it.
    unsafe {
        header.as_ptr().write(RingHeader::new(capacity as u64))
    };
}

/// Creates a ring at `offset` in `region` and returns both of its ends, for
/// use in one process (or across `fork`).
pub fn create(
    region: Arc<Region>,
    offset: usize,
    capacity: usize,
) -> Result<(Producer, Consumer), AttachError> {
    init(&region, offset, capacity)?;
    let producer = Producer::attach(Arc::clone(&region), offset)?;
    let consumer = Consumer::attach(region, offset)?;
    Ok((producer, consumer))
}

/// A ring with a `capacity`-byte data area on the heap: both ends, for
/// threads of one process.
///
/// ```
/// let (mut tx, mut rx) = ferry_ring::channel(4096);
/// tx.try_send(b"hello").unwrap();
/// let frame = rx.try_peek().unwrap();
/// assert_eq!(frame.payload(), b"hello");
/// frame.release();
/// ```
pub fn channel(capacity: usize) -> (Producer, Consumer) {
    let region = Arc::new(Region::heap(ring_size(capacity)));
    create(region, 0, capacity)
        .expect("capacity must be a power of two in MIN_CAPACITY..=MAX_CAPACITY")
}

fn check_capacity(capacity: u64) -> Result<(), AttachError> {
    if !capacity.is_power_of_two()
        || capacity < MIN_CAPACITY as u64
        || capacity > MAX_CAPACITY as u64
    {
        return Err(AttachError::BadCapacity(capacity));
    }
    Ok(())
}

/// Where the header of a ring of `capacity` at `offset` lives, if it fits.
fn header_ptr(
    region: &Region,
    offset: usize,
    capacity: u64,
) -> Result<NonNull<RingHeader>, AttachError> {
    if offset % RING_ALIGN != 0 {
        return Err(AttachError::Misaligned(offset));
    }
    let needed = HEADER_SIZE as u64 + capacity;
    let fits = (offset as u64)
        .checked_add(needed)
        .is_some_and(|end| end <= region.len() as u64);
    if !fits {
        return Err(AttachError::DoesNotFit {
            offset,
            needed,
            region: region.len(),
        });
    }
    // SAFETY: offset + needed <= region.len(), so the pointer stays inside
    // the region's allocation; the base is page-aligned and offset is a
    // multiple of RING_ALIGN, so the header is aligned.
    Ok(unsafe { region.base().add(offset) }.cast())
}

/// An endpoint's validated view of one ring.
pub(crate) struct RingRef {
    header: NonNull<RingHeader>,
    data: NonNull<u8>,
    capacity: usize,
    /// Keeps the memory behind `header` and `data` alive, and this side of
    /// the ring claimed (no second endpoint of this side, no overlapping
    /// ring, through this region).
    attachment: Arc<Attachment>,
}

/// Positions found in a ring's header when an endpoint attached.
pub(crate) struct Positions {
    pub(crate) head: u64,
    pub(crate) tail: u64,
}

impl RingRef {
    /// Validates the ring at `offset` (magic, version, capacity against the
    /// region, positions), claims `side` of it, and returns a view of it.
    pub(crate) fn attach(
        region: Arc<Region>,
        offset: usize,
        side: Side,
    ) -> Result<(RingRef, Positions), AttachError> {
        let probe = header_ptr(&region, offset, 0)?;
        // SAFETY: `header_ptr` checked that a header fits at this aligned
        // offset; its fields are atomics, valid for any bytes.
        let header = unsafe { probe.as_ref() };
        let magic = header.identity.magic.load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(AttachError::BadMagic(magic));
        }
        let version = header.identity.version.load(Ordering::Relaxed);
        if version != LAYOUT_VERSION {
            return Err(AttachError::BadVersion {
                found: version,
                expected: LAYOUT_VERSION,
            });
        }
        let capacity = header.identity.capacity.load(Ordering::Relaxed);
        check_capacity(capacity)?;
        header_ptr(&region, offset, capacity)?;
        let head = header.consumer.head.load(Ordering::Acquire);
        let tail = header.producer.tail.load(Ordering::Acquire);
        let consistent = head % FRAME_ALIGN as u64 == 0
            && tail % FRAME_ALIGN as u64 == 0
            && head <= tail
            && tail - head <= capacity
            && tail < MAX_POSITION;
        if !consistent {
            return Err(AttachError::Corrupt(Corruption::Position {
                observed: tail,
                own: head,
                last_seen: head,
            }));
        }
        // The capacity claimed is the one this endpoint keeps using (its
        // private copy): a peer rewriting the header later changes nothing.
        let attachment = Attachment::claim(region, offset, ring_size(capacity as usize), side)?;
        // SAFETY: the whole ring (header and `capacity` data bytes) fits in
        // the region, checked just above by `header_ptr`.
        let data = unsafe { probe.cast::<u8>().add(HEADER_SIZE) };
        let ring = RingRef {
            header: probe,
            data,
            capacity: capacity as usize,
            attachment,
        };
        Ok((ring, Positions { head, tail }))
    }

    #[inline]
    pub(crate) fn header(&self) -> &RingHeader {
        // SAFETY: validated at attach; the region (kept alive by `self`)
        // holds a whole header there, made of atomics only.
        unsafe { self.header.as_ref() }
    }

    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    #[inline]
    pub(crate) fn region(&self) -> &Arc<Region> {
        self.attachment.region()
    }

    /// This endpoint's claim on the ring.
    #[inline]
    pub(crate) fn attachment(&self) -> &Arc<Attachment> {
        &self.attachment
    }

    /// Index in the data area of a position.
    #[inline]
    pub(crate) fn index(&self, pos: u64) -> usize {
        (pos & (self.capacity as u64 - 1)) as usize
    }

    /// Loads the frame header word at `index` (a multiple of FRAME_ALIGN,
    /// below capacity: both come from our own positions and the mask).
    #[inline]
    pub(crate) fn load_word(&self, index: usize) -> u64 {
        debug_assert!(index < self.capacity && index % FRAME_ALIGN == 0);
        #[cfg(not(loom))]
        {
            // SAFETY: index < capacity and is 8-aligned, so the word lies in
            // the data area and is aligned; all accesses to frame header words
            // from both sides are atomic, so there is no data race.
            unsafe { AtomicU64::from_ptr(self.data.as_ptr().add(index).cast()) }
                .load(Ordering::Relaxed)
        }
        #[cfg(loom)]
        // SAFETY: as above; under loom the publishing Release/Acquire on the
        // positions is what the model checks, the word itself is plain memory.
        unsafe {
            self.data.as_ptr().add(index).cast::<u64>().read_volatile()
        }
    }

    /// Stores a frame header word at `index` (see `load_word`).
    #[inline]
    pub(crate) fn store_word(&self, index: usize, word: u64) {
        debug_assert!(index < self.capacity && index % FRAME_ALIGN == 0);
        #[cfg(not(loom))]
        {
            // SAFETY: see `load_word`.
            unsafe { AtomicU64::from_ptr(self.data.as_ptr().add(index).cast()) }
                .store(word, Ordering::Relaxed)
        }
        #[cfg(loom)]
        // SAFETY: see `load_word`.
        unsafe {
            self.data
                .as_ptr()
                .add(index)
                .cast::<u64>()
                .write_volatile(word)
        }
    }

    /// Pointer to `len` bytes at `index` of the data area. The caller has
    /// checked `index + len <= capacity`.
    #[inline]
    pub(crate) fn data_ptr(&self, index: usize, len: usize) -> *mut u8 {
        debug_assert!(
            index
                .checked_add(len)
                .is_some_and(|end| end <= self.capacity)
        );
        // SAFETY: index <= capacity, so the result is inside (or one past)
        // the data area.
        unsafe { self.data.as_ptr().add(index) }
    }
}

// SAFETY: RingRef is a view into a region it keeps alive (through its
// attachment); the region is Send and Sync. The endpoint that owns a RingRef
// is the only user of its side of the ring in this process: the attachment's
// claim refuses a second endpoint of that side, and any ring overlapping this
// one, through the same region. Moving it to another thread moves that sole
// use with it; it is not Sync (shared access would break the `&mut`
// discipline the endpoints rely on).
unsafe impl Send for RingRef {}
