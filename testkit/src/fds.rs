//! This process's file descriptors, as `/proc/self/fd` lists them: for
//! tests that check nothing leaks.

use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;

/// How many descriptors this process has open (the directory handle used
/// to count them included).
pub fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// The (device, inode) of the file `fd` refers to.
pub fn identity(fd: BorrowedFd<'_>) -> (u64, u64) {
    let stat = rustix::fs::fstat(fd).expect("fstat");
    (stat.st_dev, stat.st_ino)
}

/// How many descriptors of this process refer to the file `(dev, ino)`
/// (see [`identity`]); 0 if `/proc/self/fd` cannot be read.
pub fn open_descriptors_of(identity: (u64, u64)) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| std::fs::metadata(entry.path()).ok())
        .filter(|meta| (meta.dev(), meta.ino()) == identity)
        .count()
}
