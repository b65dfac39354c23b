//! What a victim process holds, measured before and after an attack: its
//! resident memory (`VmRSS` of `/proc/self/status`) and its descriptors
//! (`/proc/self/fd`). The figures are the whole process's, so the tests that
//! measure them run one at a time ([`serial`]).

use super::open_fd_count;
use std::sync::{Mutex, MutexGuard};

/// Holds the other measuring tests of this binary off while a test runs:
/// another test's connections and threads would disturb the figures.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// This process's resident memory and open descriptors at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    /// Resident memory (`VmRSS`), in KiB.
    pub rss_kib: u64,
    /// Open descriptors.
    pub fds: usize,
}

impl Footprint {
    /// The figures now.
    pub fn now() -> Footprint {
        Footprint {
            rss_kib: status_kib("VmRSS:"),
            fds: open_fd_count(),
        }
    }

    /// KiB of resident memory gained since `before` (0 if it shrank).
    pub fn rss_growth_kib(&self, before: &Footprint) -> u64 {
        self.rss_kib.saturating_sub(before.rss_kib)
    }

    /// Descriptors gained since `before` (0 if fewer are open).
    pub fn fd_growth(&self, before: &Footprint) -> usize {
        self.fds.saturating_sub(before.fds)
    }
}

impl std::fmt::Display for Footprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VmRSS {} KiB, {} descriptors", self.rss_kib, self.fds)
    }
}

/// A `kB` field of `/proc/self/status`.
pub fn status_kib(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /proc/self/status"))
}
