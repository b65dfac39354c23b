//! Counting this process's descriptors (`/proc/self/fd`), to catch a leak
//! from one input to the next and descriptors held beyond a budget.
//!
//! ```
//! use ferry_transport::fuzzing::{Check, fds::FdSnapshot};
//! use std::time::Duration;
//! let before = FdSnapshot::take();
//! let file = std::fs::File::open("/proc/self/stat")?;
//! let leak = before.check_no_leak(Duration::ZERO).unwrap_err();
//! assert_eq!(leak.check, Check::FdLeak);
//! drop(file);
//! assert!(before.check_no_leak(Duration::ZERO).is_ok());
//! # Ok::<(), std::io::Error>(())
//! ```

use super::finding::{Check, Finding};
use std::time::{Duration, Instant};

/// The name of the unsealed memfds a hostile peer of the checkers attaches
/// (counted as the peer's, with the sealed blobs and pipes it attaches).
pub(crate) const ATTACHED_MEMFD: &str = "ferry-fuzz-attached";

/// Every descriptor this process holds, as `"N -> what"`.
pub fn open_fds() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let target = std::fs::read_link(&path).ok()?;
            Some(format!("{} -> {}", path.display(), target.display()))
        })
        .collect()
}

/// How many descriptors this process holds (without reading what each is).
fn fd_count() -> usize {
    // The directory's own descriptor is listed while it is read, as it is
    // by `open_fds`.
    std::fs::read_dir("/proc/self/fd").map_or(0, |entries| entries.count())
}

/// The descriptors this process held at one moment.
#[derive(Debug, Clone)]
pub struct FdSnapshot {
    fds: Vec<String>,
}

impl FdSnapshot {
    /// The descriptors held now.
    pub fn take() -> FdSnapshot {
        FdSnapshot { fds: open_fds() }
    }

    /// How many were held.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// Whether none were (never, in practice: standard input is one).
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// Fails with [`Check::FdLeak`] if the process holds more descriptors
    /// than at the snapshot, after waiting at most `grace` for the count to
    /// come down (ferry's hang-up watcher drops a closed connection's
    /// registration from its own thread, a moment after the drop).
    pub fn check_no_leak(&self, grace: Duration) -> Result<(), Finding> {
        let deadline = Instant::now() + grace;
        let mut attempts = 0u32;
        loop {
            if fd_count() <= self.fds.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let now = open_fds();
                let new: Vec<_> = now.iter().filter(|fd| !self.fds.contains(fd)).collect();
                return Err(Finding::new(
                    Check::FdLeak,
                    format!(
                        "{} descriptors held, {} before; new: {new:?}",
                        now.len(),
                        self.fds.len()
                    ),
                ));
            }
            // The watcher's thread usually needs only to be scheduled.
            attempts += 1;
            if attempts < 100 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Descriptors of the kinds the checkers' peer attaches that this process
/// holds: memfds named [`ATTACHED_MEMFD`], sealed blobs, pipes. (Eventfds
/// are attached too but not counted: the connection has its own.)
pub(crate) fn attached_fds_held() -> usize {
    open_fds()
        .iter()
        .filter(|fd| {
            let target = fd.split(" -> ").nth(1).unwrap_or_default();
            target.starts_with(&format!("/memfd:{ATTACHED_MEMFD}"))
                || target.starts_with("/memfd:ferry-blob")
                || target.starts_with("pipe:")
        })
        .count()
}

/// Inputs of every checker run one at a time in a process, so that the
/// descriptors counted are one input's (tests run checkers from several
/// threads): the guard of that turn, with the hang-up watcher started.
pub(crate) fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    warm_up();
    guard
}

/// The first connection of a process starts the hang-up watcher, which
/// keeps a thread and descriptors for good: made once before any input is
/// measured.
fn warm_up() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let config = crate::ConnectionConfig::default().ring_capacity(4096);
        drop(crate::Connection::pair(config));
    });
}
