//! Who is at the other end of a Unix socket, as the kernel recorded it
//! (`SO_PEERCRED`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The peer's credentials as the kernel recorded them (`SO_PEERCRED`): for a
/// connected socket, the peer process at `connect` time; for a socketpair,
/// the process that created the pair (so a child whose parent created its
/// bootstrap socketpair sees the parent on both ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Process id (0 if the peer is in a pid namespace we cannot see).
    pub pid: i32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

/// `getsockopt(SO_PEERCRED)`. Read into a plain `libc::ucred` rather than
/// through rustix, whose `UCred` holds the pid as a non-zero `Pid`: the
/// kernel reports pid 0 for a peer outside our pid namespace.
pub(crate) fn peer_credentials(socket: BorrowedFd<'_>) -> io::Result<PeerCredentials> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `socket` is open for the duration of the call; `cred` and
    // `len` are live, aligned locals and `len` is the size of `cred`, so the
    // kernel writes within bounds.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(io::Error::other("short SO_PEERCRED"));
    }
    Ok(PeerCredentials {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}
