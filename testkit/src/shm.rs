//! A raw second view of a shared-memory file: the hostile peer's hands.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

/// A second `MAP_SHARED` mapping of a memfd, through which a test reads or
/// writes whatever it likes (a peer's view of a ring header, or garbage).
/// All access is atomic, so the scribbling itself is free of data races in
/// this process.
pub struct RawMap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a RawMap is a mapping it owns; every access goes through atomics.
unsafe impl Send for RawMap {}
// SAFETY: as above.
unsafe impl Sync for RawMap {}

impl RawMap {
    /// Maps the whole memfd read-write and shared. The file must not shrink
    /// while mapped (ferry's memfds are sealed against it).
    pub fn new(fd: BorrowedFd<'_>) -> RawMap {
        let len = rustix::fs::fstat(fd).expect("fstat").st_size as usize;
        assert!(len > 0);
        // SAFETY: a fresh mapping chosen by the kernel (null hint), so it
        // replaces nothing of ours. Every access goes through atomics
        // (`u64_at` and friends), so a peer writing the same pages is no data
        // race. The file must not shrink while mapped (documented above;
        // ferry's memfds are sealed against it); if one did, an access
        // would die of SIGBUS, not read freed memory.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                fd,
                0,
            )
        }
        .expect("mmap");
        RawMap {
            ptr: ptr.cast(),
            len,
        }
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: an empty file is refused by [`RawMap::new`].
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The 8-aligned u64 at `offset`; panics if out of bounds or unaligned.
    pub fn u64_at(&self, offset: usize) -> &AtomicU64 {
        assert!(offset % 8 == 0 && offset + 8 <= self.len, "u64 at {offset}");
        // SAFETY: in bounds and 8-aligned (the mapping is page-aligned); the
        // mapping lives as long as `self`; AtomicU64 is valid for any bits.
        unsafe { AtomicU64::from_ptr(self.ptr.add(offset).cast()) }
    }

    /// The 4-aligned u32 at `offset`; panics if out of bounds or unaligned.
    pub fn u32_at(&self, offset: usize) -> &AtomicU32 {
        assert!(offset % 4 == 0 && offset + 4 <= self.len, "u32 at {offset}");
        // SAFETY: as in `u64_at`, for a 4-aligned u32.
        unsafe { AtomicU32::from_ptr(self.ptr.add(offset).cast()) }
    }

    /// The byte at `offset`; panics if out of bounds.
    pub fn u8_at(&self, offset: usize) -> &AtomicU8 {
        assert!(offset < self.len, "u8 at {offset}");
        // SAFETY: in bounds; a byte is always aligned.
        unsafe { AtomicU8::from_ptr(self.ptr.add(offset)) }
    }

    /// Stores a u64 (SeqCst).
    pub fn store_u64(&self, offset: usize, value: u64) {
        self.u64_at(offset).store(value, Ordering::SeqCst);
    }

    /// Stores a u32 (SeqCst).
    pub fn store_u32(&self, offset: usize, value: u32) {
        self.u32_at(offset).store(value, Ordering::SeqCst);
    }

    /// Stores a byte (Relaxed).
    pub fn store_u8(&self, offset: usize, value: u8) {
        self.u8_at(offset).store(value, Ordering::Relaxed);
    }

    /// Loads a u64 (SeqCst).
    pub fn load_u64(&self, offset: usize) -> u64 {
        self.u64_at(offset).load(Ordering::SeqCst)
    }

    /// Copies `bytes` into the mapping at `offset`, byte by byte (Relaxed,
    /// so it races with nobody); panics if out of bounds. Order it against
    /// the other process with a message or a SeqCst store.
    pub fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        assert!(
            offset
                .checked_add(bytes.len())
                .is_some_and(|end| end <= self.len),
            "{} bytes at {offset}",
            bytes.len()
        );
        for (i, byte) in bytes.iter().enumerate() {
            self.store_u8(offset + i, *byte);
        }
    }

    /// Copies `out.len()` bytes out of the mapping from `offset` (Relaxed
    /// byte loads); panics if out of bounds.
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        assert!(
            offset
                .checked_add(out.len())
                .is_some_and(|end| end <= self.len),
            "{} bytes at {offset}",
            out.len()
        );
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = self.u8_at(offset + i).load(Ordering::Relaxed);
        }
    }

    /// Loads a u32 (SeqCst).
    pub fn load_u32(&self, offset: usize) -> u32 {
        self.u32_at(offset).load(Ordering::SeqCst)
    }
}

impl Drop for RawMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping `new` made; no reference
        // into it outlives `self` (they all borrow `self`).
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
    }
}
