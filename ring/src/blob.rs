//! Out-of-line payloads: a memfd filled once, sealed against every change,
//! and mapped read-only by the receiver.
//!
//! A message too large for a ring travels as a blob's descriptor. Because the
//! receiver only accepts a blob sealed against writes (`F_SEAL_WRITE`) as
//! well as shrinking and growing, the bytes it validates are the bytes it
//! uses: a hostile sender cannot change them afterwards, so a blob can be
//! validated in place even for an untrusted peer.
//!
//! The receiver also refuses a blob with holes (see
//! [`SealedBlob::open_with_limit`]): reading a hole of a memfd allocates a
//! page charged to the reader, so a sparse blob would let a peer make us
//! allocate gigabytes at no cost to itself.

use crate::error::RegionError;
use crate::memfd;
use crate::region::MAX_REGION_SIZE;
use rustix::fs::SealFlags;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

/// Seals a received blob must carry.
const BLOB_SEALS: SealFlags = SealFlags::WRITE
    .union(SealFlags::SHRINK)
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// How long sealing keeps retrying while a forked child still holds the
/// writable mapping (see [`add_blob_seals`]).
const SEAL_RETRY_BUDGET: Duration = Duration::from_secs(1);

/// A blob being filled: a memfd of a fixed size mapped writable.
///
/// The writable mapping is `MADV_DONTFORK`: a process forked while the blob
/// is being filled (`Command` with a `pre_exec` hook forks) does not get a
/// copy of it, so it cannot stop the blob from being sealed.
pub struct BlobWriter {
    file: File,
    map: memmap2::MmapMut,
}

impl BlobWriter {
    /// Creates a zero-filled blob of `len` bytes (at least one).
    pub fn create(len: usize) -> Result<BlobWriter, RegionError> {
        if len == 0 || len as u64 > MAX_REGION_SIZE {
            return Err(RegionError::BadSize(len as u64));
        }
        let file = File::from(memfd::create(c"ferry-blob", len as u64)?);
        // SAFETY: the memfd is new, its descriptor is owned by this writer
        // and never handed out before `seal` unmaps this view, so no code
        // of ours can truncate it under the mapping. (Only code that opens
        // `/proc/self/fd/N` behind our back, or a process allowed to ptrace
        // us, could; memmap2's general caveat, which no mapping escapes.) A
        // child forked meanwhile gets neither the mapping (MADV_DONTFORK,
        // below) nor a usable writer: touching an inherited `BlobWriter`
        // there faults, and `fork` is `unsafe` for such reasons.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(&file) }
            .map_err(RegionError::Map)?;
        // The kernel refuses F_SEAL_WRITE while any writable shared mapping
        // of the memfd exists, in any process. A child forked from now until
        // the seal would inherit a copy of this one (fork copies every
        // mapping, and a shared one stays shared) and keep it until it execs
        // or exits, which may be never: the advice keeps it out of children.
        map.advise(memmap2::Advice::DontFork)
            .map_err(RegionError::Map)?;
        Ok(BlobWriter { file, map })
    }

    /// Unmaps the writable view and seals the blob against writes, shrinking,
    /// growing and further sealing. The result can be sent to a peer.
    pub fn seal(self) -> Result<SealedBlob, RegionError> {
        let len = self.map.len();
        self.seal_with_len(len)
    }

    /// Like [`seal`](Self::seal), keeping only the first `len` bytes: for a
    /// writer (a serializer) that did not know its size in advance and was
    /// given more room. The memfd's pages are allocated on first touch, so
    /// the unused room cost nothing. Pages of the kept bytes that were never
    /// written are allocated (zero-filled) before sealing: a receiver
    /// refuses a blob with holes.
    pub fn seal_with_len(self, len: usize) -> Result<SealedBlob, RegionError> {
        let BlobWriter { file, map } = self;
        if len == 0 || len > map.len() {
            return Err(RegionError::BadSize(len as u64));
        }
        // F_SEAL_WRITE is refused while a writable shared mapping exists.
        drop(map);
        rustix::fs::ftruncate(&file, len as u64).map_err(|e| RegionError::Create(e.into()))?;
        // The receiver refuses holes; bytes left untouched must still read
        // as zeros there, so they are allocated here, at the sender's cost.
        memfd::fill_holes(&file, len as u64)?;
        add_blob_seals(&file)?;
        SealedBlob::map_read_only(file.into(), len)
    }
}

/// Seals a filled blob. The kernel answers EBUSY while a writable shared
/// mapping of the memfd exists anywhere. Ours is gone and `MADV_DONTFORK`
/// kept it out of children forked later, but a fork by another thread
/// between our `mmap` and `madvise` leaves a copy in the child until it
/// execs: retry with backoff within [`SEAL_RETRY_BUDGET`], then fail.
fn add_blob_seals(file: &File) -> Result<(), RegionError> {
    let mut pause = Duration::from_micros(50);
    let mut waited = Duration::ZERO;
    loop {
        match rustix::fs::fcntl_add_seals(file, BLOB_SEALS) {
            Err(rustix::io::Errno::BUSY) if waited < SEAL_RETRY_BUDGET => {
                std::thread::sleep(pause);
                waited += pause;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            result => return result.map_err(|e| RegionError::Create(e.into())),
        }
    }
}

impl std::ops::Deref for BlobWriter {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map
    }
}

impl std::ops::DerefMut for BlobWriter {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }
}

/// A sealed, read-only blob: its bytes can never change again.
pub struct SealedBlob {
    file: File,
    map: memmap2::Mmap,
}

impl SealedBlob {
    /// Opens a blob received from a peer, accepting any size up to
    /// [`MAX_REGION_SIZE`]: [`open_with_limit`](Self::open_with_limit) with
    /// no limit of the caller's own.
    pub fn open(fd: OwnedFd, expected_len: usize) -> Result<SealedBlob, RegionError> {
        Self::open_with_limit(fd, expected_len, usize::MAX)
    }

    /// Opens a blob received from a peer. Before anything is mapped or read,
    /// refuses a descriptor that is not a memfd sealed against writes,
    /// shrinking, growing and resealing ([`RegionError::MissingSeals`],
    /// [`RegionError::NotMemfd`], [`RegionError::HugeTlb`]), one larger than
    /// `max_len` ([`RegionError::TooLarge`]), one whose size differs from
    /// `expected_len` (what the sender's frame announced) or is zero or above
    /// [`MAX_REGION_SIZE`] ([`RegionError::BadSize`]), and one with holes
    /// ([`RegionError::Sparse`]): an honest sender wrote every byte.
    pub fn open_with_limit(
        fd: OwnedFd,
        expected_len: usize,
        max_len: usize,
    ) -> Result<SealedBlob, RegionError> {
        let received = memfd::check_received(&fd, BLOB_SEALS)?;
        let size = received.size;
        if size > max_len as u64 {
            return Err(RegionError::TooLarge {
                size,
                max: max_len as u64,
            });
        }
        if size != expected_len as u64 || size == 0 || size > MAX_REGION_SIZE {
            return Err(RegionError::BadSize(size));
        }
        memfd::refuse_holes(received)?;
        Self::map_read_only(fd, expected_len)
    }

    /// Maps a sealed blob `MAP_PRIVATE` + `PROT_READ`. Before Linux 6.7 the
    /// kernel refuses a shared mapping of a write-sealed memfd even when
    /// read-only (EPERM: it could be mprotect'ed writable later); a private
    /// read-only mapping is allowed everywhere and shows the same page-cache
    /// pages, without a copy.
    fn map_read_only(fd: OwnedFd, len: usize) -> Result<SealedBlob, RegionError> {
        let file = File::from(fd);
        // SAFETY: the memfd is sealed against writes, shrinking and growing
        // (`seal_with_len` added the seals, `open_with_limit` checked them,
        // and F_SEAL_SEAL keeps anyone from removing them), so the file's
        // bytes can never change or disappear under us: F_SEAL_WRITE is only
        // granted once no writable shared mapping exists, and none can be
        // made after. The mapping is read-only and private, and this crate
        // never makes it writable (safe code cannot `mprotect`), so no
        // copy-on-write page can replace what we read either.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .len(len)
                .map_copy_read_only(&file)
        }
        .map_err(RegionError::Map)?;
        Ok(SealedBlob { file, map })
    }

    /// The memfd, to send to a peer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The bytes (page-aligned).
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}

impl std::fmt::Debug for SealedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedBlob")
            .field("len", &self.map.len())
            .finish()
    }
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("len", &self.map.len())
            .finish()
    }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn sealed_blob_round_trip() {
        let mut writer = BlobWriter::create(10_000).unwrap();
        writer[9_999] = 7;
        let blob = writer.seal().unwrap();
        let received = SealedBlob::open(blob.fd().try_clone_to_owned().unwrap(), 10_000).unwrap();
        assert_eq!(received.bytes()[9_999], 7);
        assert!(rustix::fs::ftruncate(blob.fd(), 1).is_err());
    }

    #[test]
    fn seal_with_len_keeps_the_prefix() {
        let mut writer = BlobWriter::create(1 << 20).unwrap();
        writer[..3].copy_from_slice(b"abc");
        let blob = writer.seal_with_len(3).unwrap();
        assert_eq!(blob.bytes(), b"abc");
        assert_eq!(rustix::fs::fstat(blob.fd()).unwrap().st_size, 3);
        assert!(BlobWriter::create(8).unwrap().seal_with_len(9).is_err());
    }

    #[test]
    fn open_refuses_a_blob_with_holes() {
        // What a hostile sender does: size it, write almost nothing, seal.
        let fd = crate::memfd::create(c"holes", 1 << 20).unwrap();
        rustix::io::pwrite(&fd, b"x", 0).unwrap();
        rustix::fs::fcntl_add_seals(&fd, BLOB_SEALS).unwrap();
        assert!(matches!(
            SealedBlob::open(fd, 1 << 20),
            Err(RegionError::Sparse {
                size: 1_048_576,
                allocated: 4096
            })
        ));
    }

    #[test]
    fn untouched_bytes_of_a_sealed_blob_are_allocated_zeros() {
        let mut writer = BlobWriter::create(3 * 4096 + 1).unwrap();
        writer[5000] = 1;
        let blob = writer.seal().unwrap();
        let received = SealedBlob::open(blob.fd().try_clone_to_owned().unwrap(), 3 * 4096 + 1)
            .expect("a blob sealed by BlobWriter has no holes");
        assert_eq!(
            received.bytes().iter().map(|&b| b as usize).sum::<usize>(),
            1
        );
        assert_eq!(received.bytes()[5000], 1);
    }

    #[test]
    fn open_with_limit_refuses_a_larger_blob() {
        let blob = BlobWriter::create(8192).unwrap().seal().unwrap();
        let fd = || blob.fd().try_clone_to_owned().unwrap();
        assert!(matches!(
            SealedBlob::open_with_limit(fd(), 8192, 8191),
            Err(RegionError::TooLarge {
                size: 8192,
                max: 8191
            })
        ));
        assert_eq!(
            SealedBlob::open_with_limit(fd(), 8192, 8192)
                .unwrap()
                .bytes()
                .len(),
            8192
        );
    }

    #[test]
    fn open_refuses_wrong_size_or_missing_write_seal() {
        let blob = BlobWriter::create(4096).unwrap().seal().unwrap();
        let fd = || blob.fd().try_clone_to_owned().unwrap();
        assert!(matches!(
            SealedBlob::open(fd(), 4095),
            Err(RegionError::BadSize(4096))
        ));
        let writable = crate::Region::create(4096).unwrap();
        let fd = writable.fd().unwrap().try_clone_to_owned().unwrap();
        assert!(matches!(
            SealedBlob::open(fd, 4096),
            Err(RegionError::MissingSeals { .. })
        ));
    }
}
