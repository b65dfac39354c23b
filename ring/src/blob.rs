//! Out-of-line payloads: a memfd filled once, sealed against every change,
//! and mapped read-only by the receiver.
//!
//! A message too large for a ring travels as a blob's descriptor. Because the
//! receiver only accepts a blob sealed against writes (`F_SEAL_WRITE`) as
//! well as shrinking and growing, the bytes it validates are the bytes it
//! uses: a hostile sender cannot change them afterwards, so a blob can be
//! validated in place even for an untrusted peer.

use crate::error::RegionError;
use crate::region::MAX_REGION_SIZE;
use rustix::fs::{MemfdFlags, SealFlags};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Seals a received blob must carry.
const BLOB_SEALS: SealFlags = SealFlags::WRITE
    .union(SealFlags::SHRINK)
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// A blob being filled: a memfd of a fixed size mapped writable.
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
        let fd = rustix::fs::memfd_create(
            "ferry-blob",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|e| RegionError::Create(e.into()))?;
        rustix::fs::ftruncate(&fd, len as u64).map_err(|e| RegionError::Create(e.into()))?;
        let file = File::from(fd);
        // SAFETY: the memfd is new and private to this process until sealed;
        // nothing else can truncate or write it while this mapping lives.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(&file) }
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
    /// the unused room cost nothing.
    pub fn seal_with_len(self, len: usize) -> Result<SealedBlob, RegionError> {
        let BlobWriter { file, map } = self;
        if len == 0 || len > map.len() {
            return Err(RegionError::BadSize(len as u64));
        }
        // F_SEAL_WRITE is refused while a writable shared mapping exists.
        drop(map);
        rustix::fs::ftruncate(&file, len as u64).map_err(|e| RegionError::Create(e.into()))?;
        add_blob_seals(&file)?;
        SealedBlob::map_read_only(file.into(), len)
    }
}

/// Seals a filled blob. A fork by another thread between our `mmap` and
/// `madvise(MADV_DONTFORK)` (a real fork: `Command` with `pre_exec` forks)
/// leaves a writable mapping in the child until it execs, and the kernel
/// answers EBUSY meanwhile: retry with backoff, for up to about a second.
fn add_blob_seals(file: &File) -> Result<(), RegionError> {
    let mut pause = std::time::Duration::from_micros(50);
    let mut waited = std::time::Duration::ZERO;
    loop {
        match rustix::fs::fcntl_add_seals(file, BLOB_SEALS) {
            Err(rustix::io::Errno::BUSY) if waited < std::time::Duration::from_secs(1) => {
                std::thread::sleep(pause);
                waited += pause;
                pause = (pause * 2).min(std::time::Duration::from_millis(20));
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
    /// Opens a blob received from a peer. Refuses a descriptor that is not a
    /// memfd sealed against writes, shrinking, growing and resealing, or whose
    /// size differs from `expected_len` (what the sender's frame announced).
    pub fn open(fd: OwnedFd, expected_len: usize) -> Result<SealedBlob, RegionError> {
        crate::region::refuse_hugetlbfs(&fd)?;
        let seals =
            rustix::fs::fcntl_get_seals(&fd).map_err(|e| RegionError::NotMemfd(e.into()))?;
        if !seals.contains(BLOB_SEALS) {
            return Err(RegionError::MissingSeals {
                present: seals.bits(),
                required: BLOB_SEALS.bits(),
            });
        }
        let size = rustix::fs::fstat(&fd)
            .map_err(|e| RegionError::Map(e.into()))?
            .st_size as u64;
        if size != expected_len as u64 || size == 0 || size > MAX_REGION_SIZE {
            return Err(RegionError::BadSize(size));
        }
        Self::map_read_only(fd, expected_len)
    }

    fn map_read_only(fd: OwnedFd, len: usize) -> Result<SealedBlob, RegionError> {
        let file = File::from(fd);
        // SAFETY: the memfd is sealed against writes, shrinking and growing,
        // so the mapped bytes can never change or disappear under us.
        let map =
            unsafe { memmap2::MmapOptions::new().len(len).map(&file) }.map_err(RegionError::Map)?;
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
