//! The memfds ferry makes and the ones it accepts from a peer: how a memfd is
//! created (flags, size) and what a received one must be before anything
//! maps it. [`Region`](crate::Region) and the blobs
//! ([`BlobWriter`](crate::BlobWriter), [`SealedBlob`](crate::SealedBlob))
//! both go through here.

use crate::error::RegionError;
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;
use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Flags every ferry memfd carries: closed on exec (a child spawned by the
/// application must not inherit shared memory by accident) and sealable.
const FLAGS: MemfdFlags = MemfdFlags::CLOEXEC.union(MemfdFlags::ALLOW_SEALING);

/// Set once `MFD_NOEXEC_SEAL` was refused (a kernel before 6.3): later
/// creations skip the attempt.
static NOEXEC_SEAL_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// `statfs` magic of hugetlbfs.
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// Creates a memfd of `len` bytes (zero-filled, no page allocated yet),
/// close-on-exec and sealable.
///
/// It is also made non-executable (`MFD_NOEXEC_SEAL`) where the kernel knows
/// that flag (6.3 and later): nothing ferry shares is code, and from 6.3 a
/// memfd created without `MFD_EXEC` or `MFD_NOEXEC_SEAL` draws a kernel log
/// warning and, under `vm.memfd_noexec = 2` on some kernels, a refusal.
/// Older kernels answer EINVAL to the unknown flag; the plain flags are used
/// there.
pub(crate) fn create(name: &CStr, len: u64) -> Result<OwnedFd, RegionError> {
    let create_error = |e: Errno| RegionError::Create(e.into());
    let fd = if NOEXEC_SEAL_UNSUPPORTED.load(Ordering::Relaxed) {
        rustix::fs::memfd_create(name, FLAGS)
    } else {
        match rustix::fs::memfd_create(name, FLAGS | MemfdFlags::NOEXEC_SEAL) {
            Err(Errno::INVAL) => {
                NOEXEC_SEAL_UNSUPPORTED.store(true, Ordering::Relaxed);
                rustix::fs::memfd_create(name, FLAGS)
            }
            other => other,
        }
    }
    .map_err(create_error)?;
    rustix::fs::ftruncate(&fd, len).map_err(create_error)?;
    Ok(fd)
}

/// What [`check_received`] learned about a memfd from a peer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    /// Its size (final: the memfd is sealed against shrinking and growing).
    pub(crate) size: u64,
    /// Bytes of memory (or swap) it holds (`st_blocks` × 512).
    pub(crate) allocated: u64,
}

/// Checks a memfd received from a peer before anything maps it: it lives
/// on tmpfs, not hugetlbfs, and carries at least the `required` seals.
/// Returns its size and allocation, read after the seals were checked, so
/// the size can no longer change.
pub(crate) fn check_received(fd: &OwnedFd, required: SealFlags) -> Result<Received, RegionError> {
    refuse_hugetlbfs(fd)?;
    let seals = rustix::fs::fcntl_get_seals(fd).map_err(|e| RegionError::NotMemfd(e.into()))?;
    if !seals.contains(required) {
        return Err(RegionError::MissingSeals {
            present: seals.bits(),
            required: required.bits(),
        });
    }
    let stat = rustix::fs::fstat(fd).map_err(|e| RegionError::Map(e.into()))?;
    Ok(Received {
        size: stat.st_size as u64,
        allocated: (stat.st_blocks as u64).saturating_mul(512),
    })
}

/// Refuses a memfd on hugetlbfs (`MFD_HUGETLB`). Its seals do not stop
/// `fallocate(PUNCH_HOLE)`, and a punched huge page is only faulted back in if
/// the pool has one free: otherwise touching it raises SIGBUS in the receiver.
fn refuse_hugetlbfs(fd: impl AsFd) -> Result<(), RegionError> {
    let stat = rustix::fs::fstatfs(fd).map_err(|e| RegionError::Map(e.into()))?;
    if stat.f_type as i64 == HUGETLBFS_MAGIC {
        return Err(RegionError::HugeTlb);
    }
    Ok(())
}

/// Refuses a memfd with holes: one whose allocation is smaller than its
/// size rounded up to whole pages.
///
/// tmpfs allocates a page on the first *read* fault as well as on a write,
/// and charges it to the process that faults. A peer can therefore send a
/// sealed memfd `ftruncate`d to gigabytes without allocating anything itself,
/// and the receiver that reads (validates) it allocates every page. An
/// honest sender writes every byte of a blob, so every page of it is
/// allocated, and `st_blocks` (which counts pages in memory and in swap)
/// covers the size rounded up to the page size; with transparent huge pages
/// on tmpfs it can be larger, never smaller. A hole can only be filled by
/// the peer allocating it itself (with writes before the write seal, or
/// `fallocate` without growing the file): the receiver never pays for more
/// than the sender holds.
pub(crate) fn refuse_holes(received: Received) -> Result<(), RegionError> {
    let page = rustix::param::page_size() as u64;
    let pages_bytes = received.size.div_ceil(page).saturating_mul(page);
    if received.allocated < pages_bytes {
        return Err(RegionError::Sparse {
            size: received.size,
            allocated: received.allocated,
        });
    }
    Ok(())
}

/// Allocates every page of the first `len` bytes of a memfd we are about to
/// seal and send, if any is still a hole (a writer that left part of its
/// blob untouched, relying on zero-fill), so that its receiver, which
/// refuses holes ([`refuse_holes`]), accepts it. A blob whose every byte was
/// written costs one `fstat` here.
pub(crate) fn fill_holes(fd: impl AsFd, len: u64) -> Result<(), RegionError> {
    let create_error = |e: Errno| RegionError::Create(e.into());
    let stat = rustix::fs::fstat(&fd).map_err(create_error)?;
    let received = Received {
        size: len,
        allocated: (stat.st_blocks as u64).saturating_mul(512),
    };
    if refuse_holes(received).is_err() {
        rustix::fs::fallocate(&fd, rustix::fs::FallocateFlags::empty(), 0, len)
            .map_err(create_error)?;
    }
    Ok(())
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    const NAME: &CStr = c"ferry-test";

    #[test]
    fn created_memfd_is_sized_sealable_and_closed_on_exec() {
        let fd = create(NAME, 10_000).unwrap();
        assert_eq!(rustix::fs::fstat(&fd).unwrap().st_size, 10_000);
        assert!(
            rustix::io::fcntl_getfd(&fd)
                .unwrap()
                .contains(rustix::io::FdFlags::CLOEXEC)
        );
        rustix::fs::fcntl_add_seals(&fd, SealFlags::GROW).unwrap();
        let seals = rustix::fs::fcntl_get_seals(&fd).unwrap();
        assert!(seals.contains(SealFlags::GROW));
        // Nothing is allocated until touched.
        assert_eq!(rustix::fs::fstat(&fd).unwrap().st_blocks, 0);
    }

    /// What tmpfs reports for a memfd whose every byte was written,
    /// including the last partial page: exactly the size rounded up to
    /// whole pages, so `refuse_holes` accepts it.
    #[test]
    fn fully_written_memfd_has_no_holes() {
        let page = rustix::param::page_size();
        for len in [1, page - 1, page, page + 1, 10_000, (4 << 20) + 3] {
            let fd = create(NAME, len as u64).unwrap();
            rustix::io::pwrite(&fd, &vec![0u8; len], 0).unwrap();
            let received = check_received(&fd, SealFlags::empty()).unwrap();
            assert_eq!(received.size, len as u64);
            assert!(received.allocated >= len.next_multiple_of(page) as u64);
            refuse_holes(received).unwrap();
        }
    }

    #[test]
    fn filled_holes_are_allocated() {
        let page = rustix::param::page_size() as u64;
        let fd = create(NAME, 3 * page + 1).unwrap();
        rustix::io::pwrite(&fd, b"x", page).unwrap();
        fill_holes(&fd, 3 * page + 1).unwrap();
        let received = check_received(&fd, SealFlags::empty()).unwrap();
        assert_eq!(received.allocated, 4 * page);
        let mut byte = [9u8];
        rustix::io::pread(&fd, &mut byte, page).unwrap();
        assert_eq!(byte, *b"x", "filling holes keeps what was written");
    }

    #[test]
    fn memfd_missing_one_page_has_a_hole() {
        let page = rustix::param::page_size();
        let fd = create(NAME, 3 * page as u64).unwrap();
        rustix::io::pwrite(&fd, &vec![1u8; page], 0).unwrap();
        rustix::io::pwrite(&fd, &[1u8], 2 * page as u64 + 5).unwrap();
        let received = check_received(&fd, SealFlags::empty()).unwrap();
        assert!(matches!(
            refuse_holes(received),
            Err(RegionError::Sparse { size, allocated })
                if size == 3 * page as u64 && allocated == 2 * page as u64
        ));
    }
}
