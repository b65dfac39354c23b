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

/// [`open_fd_count`] once it holds still: the same in two reads 20 ms
/// apart (for at most 5 s). A descriptor another thread of the process is
/// about to close (a connection's teardown, a helper thread of the test)
/// then cannot be taken for one the code under test let go of.
pub fn settled_fd_count() -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut count = open_fd_count();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let now = open_fd_count();
        if now == count || std::time::Instant::now() >= deadline {
            return now;
        }
        count = now;
    }
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
