//! A region of memory that holds rings: a sealed memfd mapped shared, or a
//! heap allocation for in-process tests, loom and miri.

use crate::claim::ClaimTable;
use crate::error::RegionError;
use crate::memfd;
use rustix::fs::SealFlags;
use std::alloc::Layout;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

/// The largest region ferry will create or map (1 TiB): a bound on what a
/// peer's descriptor can make us map.
pub const MAX_REGION_SIZE: u64 = 1 << 40;

/// Seals every shared region carries. Without SHRINK a peer could truncate the
/// file under our mapping and kill us with SIGBUS; without GROW it could make
/// us map more than agreed; SEAL stops anyone changing the set.
const REQUIRED_SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// Memory that holds one or more rings.
///
/// A shared region is a memfd (`MFD_CLOEXEC | MFD_ALLOW_SEALING`, and
/// `MFD_NOEXEC_SEAL` where the kernel has it), sized
/// once, sealed against shrinking and growing, and mapped `MAP_SHARED`; its
/// descriptor ([`Region::fd`]) is what travels to the peer, which opens it
/// with [`Region::open`]. It has no name in any filesystem, and the kernel
/// frees it when the last descriptor and mapping go away.
pub struct Region {
    base: NonNull<u8>,
    len: usize,
    backing: Backing,
    /// The rings endpoints are attached to through this mapping.
    claims: ClaimTable,
}

enum Backing {
    Shared {
        // Field order: unmap before closing (not required, but tidy).
        _map: memmap2::MmapRaw,
        file: File,
    },
    Heap {
        layout: Layout,
    },
}

// SAFETY: a Region is a pointer to memory it owns (a mapping or an
// allocation), its length and a mutex-guarded claim table; it has no thread
// affinity, and it frees its memory only in `drop`, which runs once, after
// every `Arc` holder (endpoints, kept frames, disconnect handles) is gone.
// All access to the bytes goes through atomics or through the
// single-producer/single-consumer protocol. That protocol needs one producer
// and one consumer per ring and no two rings sharing bytes: the claim table
// refuses a second endpoint of a side and overlapping rings at attach (safe
// code could otherwise alias two `Grant`s); each endpoint then enforces its
// side with `&mut self`.
unsafe impl Send for Region {}
// SAFETY: as above; `&Region` only hands out the base pointer and length.
unsafe impl Sync for Region {}

impl Region {
    /// Creates a sealed, shared region of `len` bytes, zero-filled.
    pub fn create(len: usize) -> Result<Region, RegionError> {
        if len == 0 || len as u64 > MAX_REGION_SIZE {
            return Err(RegionError::BadSize(len as u64));
        }
        let fd = memfd::create(c"ferry-region", len as u64)?;
        rustix::fs::fcntl_add_seals(&fd, REQUIRED_SEALS)
            .map_err(|e| RegionError::Create(e.into()))?;
        Self::map(fd, len)
    }

    /// Opens a region from a descriptor received from a peer, accepting any
    /// size up to [`MAX_REGION_SIZE`]: [`open_with_limit`](Self::open_with_limit)
    /// with no limit of the caller's own.
    pub fn open(fd: OwnedFd) -> Result<Region, RegionError> {
        Self::open_with_limit(fd, usize::MAX)
    }

    /// Opens a region from a descriptor received from a peer. Before
    /// anything is mapped, refuses a descriptor that is not a memfd sealed
    /// against shrinking, growing and resealing, one larger than `max_len`
    /// ([`RegionError::TooLarge`]: the opener's own bound on what a peer may
    /// make it map), and one whose size is zero or above [`MAX_REGION_SIZE`].
    ///
    /// A region may have holes (a ring's unused room is never touched), so
    /// unlike a blob it is not refused for them; `max_len` bounds what
    /// faulting it in can cost.
    pub fn open_with_limit(fd: OwnedFd, max_len: usize) -> Result<Region, RegionError> {
        // The seals make the size final: nobody can change it from now on.
        let size = memfd::check_received(&fd, REQUIRED_SEALS)?.size;
        if size > max_len as u64 {
            return Err(RegionError::TooLarge {
                size,
                max: max_len as u64,
            });
        }
        if size == 0 || size > MAX_REGION_SIZE {
            return Err(RegionError::BadSize(size));
        }
        Self::map(fd, size as usize)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Region, RegionError> {
        let file = File::from(fd);
        let map = memmap2::MmapOptions::new()
            .len(len)
            .map_raw(&file)
            .map_err(RegionError::Map)?;
        let base = NonNull::new(map.as_mut_ptr()).ok_or_else(|| {
            RegionError::Map(std::io::Error::other("mmap returned a null mapping"))
        })?;
        Ok(Region {
            base,
            len,
            backing: Backing::Shared { _map: map, file },
            claims: ClaimTable::default(),
        })
    }

    /// Creates a private, zero-filled, page-aligned region on the heap: for
    /// in-process use, tests, loom and miri.
    pub fn heap(len: usize) -> Region {
        let layout = Layout::from_size_align(len.max(1), 4096).expect("region size overflows");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let base = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Region {
            base,
            len,
            backing: Backing::Heap { layout },
            claims: ClaimTable::default(),
        }
    }

    /// The memfd behind a shared region, to send to the peer; `None` for a
    /// heap region.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.backing {
            Backing::Shared { file, .. } => Some(file.as_fd()),
            Backing::Heap { .. } => None,
        }
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region has no bytes (never true for a region ferry made).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the region is a shared memfd (as opposed to heap memory).
    pub fn is_shared(&self) -> bool {
        matches!(self.backing, Backing::Shared { .. })
    }

    /// Which rings have an endpoint attached through this mapping.
    pub(crate) fn claims(&self) -> &ClaimTable {
        &self.claims
    }

    /// Start of the memory. Valid for `len()` bytes while `self` lives.
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Backing::Heap { layout } = self.backing {
            // SAFETY: `base` was returned by `alloc_zeroed(layout)` in `heap`
            // and is freed only here, once.
            unsafe { std::alloc::dealloc(self.base.as_ptr(), layout) };
        }
    }
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("len", &self.len)
            .field("shared", &self.is_shared())
            .finish()
    }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn created_region_is_sealed_and_sized() {
        let region = Region::create(8192).unwrap();
        let fd = region.fd().unwrap();
        let seals = rustix::fs::fcntl_get_seals(fd).unwrap();
        assert!(seals.contains(REQUIRED_SEALS));
        assert_eq!(rustix::fs::fstat(fd).unwrap().st_size, 8192);
        assert!(
            rustix::fs::ftruncate(fd, 4096).is_err(),
            "shrinking must be refused"
        );
    }

    #[test]
    fn open_shares_the_bytes() {
        let a = Region::create(4096).unwrap();
        let b = Region::open(a.fd().unwrap().try_clone_to_owned().unwrap()).unwrap();
        assert_eq!(b.len(), 4096);
        // SAFETY: both mappings are 4096 bytes long and nothing else uses them.
        unsafe {
            a.base().as_ptr().add(100).write(42);
            assert_eq!(b.base().as_ptr().add(100).read(), 42);
        }
    }

    #[test]
    fn open_refuses_unsealed_memfd() {
        let fd = memfd::create(c"x", 4096).unwrap();
        rustix::fs::fcntl_add_seals(&fd, SealFlags::GROW).unwrap();
        assert!(matches!(
            Region::open(fd),
            Err(RegionError::MissingSeals { .. })
        ));
    }

    #[test]
    fn open_refuses_hugetlbfs() {
        use rustix::fs::MemfdFlags;
        let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING | MemfdFlags::HUGETLB;
        let Ok(fd) = rustix::fs::memfd_create("x", flags) else {
            return; // no hugetlbfs in this kernel: nothing to refuse
        };
        let _ = rustix::fs::ftruncate(&fd, 2 << 20);
        rustix::fs::fcntl_add_seals(&fd, REQUIRED_SEALS).unwrap();
        let copy = fd.try_clone().unwrap();
        assert!(matches!(Region::open(fd), Err(RegionError::HugeTlb)));
        assert!(matches!(
            crate::SealedBlob::open(copy, 2 << 20),
            Err(RegionError::HugeTlb)
        ));
    }

    #[test]
    fn open_refuses_non_memfd() {
        let (r, _w) = rustix::pipe::pipe().unwrap();
        assert!(matches!(Region::open(r), Err(RegionError::NotMemfd(_))));
    }

    #[test]
    fn open_refuses_empty_memfd() {
        let fd = memfd::create(c"x", 0).unwrap();
        rustix::fs::fcntl_add_seals(&fd, REQUIRED_SEALS).unwrap();
        assert!(matches!(Region::open(fd), Err(RegionError::BadSize(0))));
    }

    #[test]
    fn open_with_limit_refuses_a_larger_region_before_mapping() {
        let region = Region::create(64 * 1024).unwrap();
        let fd = || region.fd().unwrap().try_clone_to_owned().unwrap();
        assert!(matches!(
            Region::open_with_limit(fd(), 64 * 1024 - 1),
            Err(RegionError::TooLarge {
                size: 65536,
                max: 65535
            })
        ));
        assert_eq!(
            Region::open_with_limit(fd(), 64 * 1024).unwrap().len(),
            65536
        );
    }
}
