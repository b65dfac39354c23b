//! Process descriptors (pidfds): a handle on a process that becomes readable
//! when it exits and cannot be confused with a later process reusing its pid.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags};

use crate::credentials::peer_credentials;

/// Why no pidfd could be had.
#[derive(Debug, thiserror::Error)]
pub enum PidfdError {
    /// The kernel offers neither `SO_PEERPIDFD` nor `pidfd_open`.
    #[error("pidfds are not supported by this kernel")]
    Unsupported,
    /// The peer's pid is not visible from our pid namespace.
    #[error("the peer's pid is not visible in this pid namespace")]
    PidNotVisible,
    /// A system error (`ESRCH`: the process is already gone).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// `SO_PEERPIDFD` from `<asm-generic/socket.h>`; the architectures with their
/// own numbering are left out and fall back to `pidfd_open`.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "loongarch64",
    target_arch = "s390x",
    target_arch = "powerpc64"
))]
const SO_PEERPIDFD: Option<libc::c_int> = Some(77);
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "loongarch64",
    target_arch = "s390x",
    target_arch = "powerpc64"
)))]
const SO_PEERPIDFD: Option<libc::c_int> = None;

/// A pidfd for the peer of the Unix socket `socket`.
pub(crate) fn peer_pidfd(socket: BorrowedFd<'_>) -> Result<OwnedFd, PidfdError> {
    match so_peerpidfd(socket) {
        Ok(Some(fd)) => return Ok(fd),
        Ok(None) => {}
        Err(e) => return Err(e.into()),
    }
    open_raw(peer_credentials(socket)?.pid)
}

/// `getsockopt(SO_PEERPIDFD)`; `Ok(None)` when the kernel does not know the
/// option (before Linux 6.5).
fn so_peerpidfd(socket: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    let Some(option) = SO_PEERPIDFD else {
        return Ok(None);
    };
    let mut value: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `socket` is a valid open descriptor for the duration of the
    // call; `value` and `len` are live, properly aligned locals, and `len`
    // tells the kernel the size of `value`, so it writes within bounds.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOPROTOOPT) | Some(libc::EINVAL) => Ok(None),
            _ => Err(err),
        };
    }
    if len as usize != std::mem::size_of::<libc::c_int>() || value < 0 {
        return Err(io::Error::other("SO_PEERPIDFD returned no descriptor"));
    }
    // SAFETY: on success SO_PEERPIDFD installs a new descriptor (close-on-
    // exec) in our table and returns its number; nothing else owns it, so
    // taking ownership here is the only owner.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(value) }))
}

/// `pidfd_open(pid)`. Race-free only while `pid` cannot be reused, e.g. for
/// our own child that has not been reaped. Pid 0 (or negative) means the
/// process is not visible from our pid namespace.
pub(crate) fn open_raw(pid: i32) -> Result<OwnedFd, PidfdError> {
    let pid = Pid::from_raw(pid)
        .filter(|p| p.as_raw_nonzero().get() > 0)
        .ok_or(PidfdError::PidNotVisible)?;
    match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOSYS) => Err(PidfdError::Unsupported),
        Err(e) => Err(io::Error::from(e).into()),
    }
}
