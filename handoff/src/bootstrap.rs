//! Bootstrap: how a parent hands a freshly spawned child its first channel.
//!
//! The parent creates a socketpair, keeps one end, and spawns the child with
//! the other end inherited at the descriptor number named in
//! [`BOOTSTRAP_ENV`] (`FERRY_BOOTSTRAP_FD=<n>`, the role of WebKit's
//! command-line token and Chromium's `--mojo-platform-channel-handle`). The
//! parent closes its copy of the child's end as soon as the child is spawned,
//! so the child's end lives only in the child: when either process dies, the
//! other sees the hang-up. No filesystem names are involved.
//!
//! # How the descriptor is inherited, and why
//!
//! The child's end is created close-on-exec like every descriptor of this
//! crate. In the child, between `fork` and `exec` (`pre_exec`), we clear
//! `FD_CLOEXEC` on that one descriptor, at the number it already has. We do
//! **not** `dup2` it to a fixed number: `std::process::Command` uses
//! descriptors of its own in the child (the pipe that reports `exec`
//! failures, the stdio it redirects), and a `dup2` onto a fixed number could
//! silently replace one of them. The number the socketpair got in the parent
//! is, by construction, not in use for anything else in the child. (If the
//! parent runs with stdio closed and the socket lands on 0–2, it is first
//! moved to 3 or above so the child's stdio setup cannot clobber it.)
//! Clearing the flag only in the forked child means concurrent spawns from
//! other threads of the parent never inherit this end.
//!
//! # The environment variable in the child
//!
//! [`channel_from_env`] reads the variable, validates the descriptor (open,
//! an `AF_UNIX` `SOCK_SEQPACKET` socket), marks it close-on-exec again so the
//! child's own children do not inherit it, and takes ownership — at most once
//! per process. It then removes the variable from the environment *if the
//! process is single-threaded at that moment* (counted in
//! `/proc/self/task`): `std::env::remove_var` is only sound when no other
//! thread can touch the environment. In a multi-threaded process the variable
//! stays, but it is harmless: the descriptor it names is close-on-exec, so a
//! grandchild that inherits the stale variable finds nothing (or something
//! that fails validation) at that number, and children spawned through this
//! module always get the variable overwritten. Call [`channel_from_env`]
//! first thing in `main` to get the removal.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::io::FdFlags;

use crate::channel::{self, Channel, SocketKindError};

/// The environment variable naming the inherited channel's descriptor
/// number, in decimal.
pub const BOOTSTRAP_ENV: &str = "FERRY_BOOTSTRAP_FD";

/// Why a child could not be spawned with a channel.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The service name is not valid (see
    /// [`validate_service_name`](crate::message::validate_service_name)).
    #[error("invalid service name {0:?}")]
    InvalidServiceName(String),
    /// The socketpair could not be created.
    #[error("cannot create the bootstrap socketpair: {0}")]
    Socket(#[source] io::Error),
    /// The process could not be spawned.
    #[error("cannot spawn the child: {0}")]
    Spawn(#[source] io::Error),
}

/// Why the child could not obtain its channel from the environment.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The variable is not set: this process was not started by a ferry
    /// parent.
    #[error("{BOOTSTRAP_ENV} is not set: this process was not spawned by a ferry broker")]
    Missing,
    /// The variable is not a descriptor number of 3 or more.
    #[error("{BOOTSTRAP_ENV}={0:?} is not a descriptor number (decimal, 3 or more)")]
    Invalid(String),
    /// No descriptor is open at that number.
    #[error("{BOOTSTRAP_ENV} names descriptor {0}, which is not open")]
    NotOpen(RawFd),
    /// The descriptor is not a `SOCK_SEQPACKET` Unix socket.
    #[error(
        "{BOOTSTRAP_ENV} names descriptor {fd}, which is not a SOCK_SEQPACKET Unix socket: {source}"
    )]
    NotAChannel {
        /// The descriptor number.
        fd: RawFd,
        /// What is wrong with it.
        #[source]
        source: SocketKindError,
    },
    /// The channel was already taken by an earlier call in this process.
    #[error("the bootstrap channel was already taken in this process")]
    AlreadyTaken,
    /// A system error while preparing the descriptor.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Spawns `command` with one end of a fresh channel inherited at the number
/// in [`BOOTSTRAP_ENV`]; returns the child and the parent's end. The parent's
/// copy of the child's end is closed before this returns.
///
/// This installs a `pre_exec` hook, so `std` spawns with `fork`+`exec`
/// rather than `posix_spawn`. The command is taken by value because the
/// hook names a descriptor number that is only valid for this spawn.
pub fn spawn_with_channel(mut command: Command) -> Result<(Child, Channel), SpawnError> {
    let (ours, theirs) = Channel::pair().map_err(|e| match e {
        channel::SocketError::Io(e) => SpawnError::Socket(e),
        channel::SocketError::TimedOut => SpawnError::Socket(io::ErrorKind::TimedOut.into()),
    })?;
    let theirs = OwnedFd::from(theirs);
    let theirs = if theirs.as_raw_fd() <= 2 {
        rustix::io::fcntl_dupfd_cloexec(&theirs, 3).map_err(|e| SpawnError::Socket(e.into()))?
    } else {
        theirs
    };
    let raw = theirs.as_raw_fd();
    command.env(BOOTSTRAP_ENV, raw.to_string());
    // SAFETY: the hook runs in the forked child before `exec`, where only
    // async-signal-safe work is allowed. `clear_cloexec` makes one `fcntl`
    // system call (rustix issues it directly: no allocation, no lock) and on
    // failure builds an `io::Error` from the raw errno, which does not
    // allocate either.
    unsafe {
        command.pre_exec(move || clear_cloexec(raw));
    }
    let spawned = command.spawn();
    // Close our copy of the child's end whatever happened: from here on it
    // lives only in the child.
    drop(theirs);
    let child = spawned.map_err(SpawnError::Spawn)?;
    Ok((child, ours))
}

/// Runs in the forked child: lets descriptor `raw` survive `exec`.
fn clear_cloexec(raw: RawFd) -> io::Result<()> {
    // SAFETY: `raw` is the child's copy of the parent's `theirs` descriptor,
    // which the parent keeps open until `spawn` has returned, so it is open
    // in the forked child for the duration of this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    rustix::io::fcntl_setfd(fd, FdFlags::empty())?;
    Ok(())
}

/// Set once the bootstrap descriptor has been taken, so that no two
/// `OwnedFd`s ever own it.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes the channel this process inherited from its parent (see the module
/// documentation for the variable's handling). Works once per process; a
/// second call returns [`BootstrapError::AlreadyTaken`].
pub fn channel_from_env() -> Result<Channel, BootstrapError> {
    let value = std::env::var_os(BOOTSTRAP_ENV).ok_or(BootstrapError::Missing)?;
    let raw = parse(&value)?;
    if TAKEN.swap(true, Ordering::AcqRel) {
        return Err(BootstrapError::AlreadyTaken);
    }
    let taken = check(raw).and_then(|()| {
        // SAFETY: `check` verified that `raw` is open and a SEQPACKET Unix
        // socket, and `TAKEN` guarantees this crate wraps it at most once.
        // That it has no other owner in this process rests on the variable
        // being true: `spawn_with_channel` set it for a descriptor reserved
        // for this call (the convention of systemd's LISTEN_FDS). A stale
        // variable breaks it: one inherited from a multi-threaded ferry
        // child (which cannot remove it) by a process it started with a
        // plain `Command`, naming a number this process has since used for
        // a socket of its own; two owners would then close it twice.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Our own children must not inherit it.
        rustix::io::fcntl_setfd(&fd, FdFlags::CLOEXEC).map_err(io::Error::from)?;
        Ok(Channel::from(fd))
    });
    let channel = match taken {
        Ok(channel) => channel,
        Err(e) => {
            TAKEN.store(false, Ordering::Release);
            return Err(e);
        }
    };
    if single_threaded() {
        // SAFETY: this process has exactly one thread, this one (counted in
        // /proc/self/task, which lists every thread of the process), so no
        // other thread can read or write the environment while we modify
        // it; only this thread could start one, and it is here.
        unsafe { std::env::remove_var(BOOTSTRAP_ENV) };
    }
    Ok(channel)
}

/// Parses the variable's value: a decimal descriptor number of 3 or more.
fn parse(value: &OsStr) -> Result<RawFd, BootstrapError> {
    let invalid = || {
        let mut shown = value.to_string_lossy().into_owned();
        shown.truncate(shown.char_indices().nth(32).map_or(shown.len(), |(i, _)| i));
        BootstrapError::Invalid(shown)
    };
    let text = value.to_str().ok_or_else(invalid)?;
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    match text.parse::<RawFd>() {
        Ok(fd) if fd > 2 => Ok(fd),
        _ => Err(invalid()),
    }
}

/// Checks, without taking ownership, that `raw` is an open `SOCK_SEQPACKET`
/// Unix socket.
fn check(raw: RawFd) -> Result<(), BootstrapError> {
    // SAFETY: F_GETFD only reads the descriptor flags of the number `raw`;
    // it touches no memory and fails with EBADF if nothing is open there.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } == -1 {
        let err = io::Error::last_os_error();
        return Err(if err.raw_os_error() == Some(libc::EBADF) {
            BootstrapError::NotOpen(raw)
        } else {
            err.into()
        });
    }
    // SAFETY: `raw` was just seen open, and nothing in this process closes
    // it during this call: it is reserved for this bootstrap by our parent.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    channel::check_seqpacket(fd.as_fd())
        .map_err(|source| BootstrapError::NotAChannel { fd: raw, source })
}

/// Whether this process has exactly one thread.
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.count() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_descriptor_numbers_only() {
        assert_eq!(parse(OsStr::new("3")).unwrap(), 3);
        assert_eq!(parse(OsStr::new("1023")).unwrap(), 1023);
        for bad in [
            "",
            "0",
            "2",
            "-1",
            "+5",
            " 5",
            "5 ",
            "abc",
            "0x10",
            "99999999999",
            "4294967296",
        ] {
            assert!(
                matches!(parse(OsStr::new(bad)), Err(BootstrapError::Invalid(_))),
                "{bad:?}"
            );
        }
        use std::os::unix::ffi::OsStrExt;
        assert!(matches!(
            parse(OsStr::from_bytes(b"\xff7")),
            Err(BootstrapError::Invalid(_))
        ));
    }

    #[test]
    fn check_tells_what_is_wrong() {
        let (a, _b) = Channel::pair().unwrap();
        check(a.as_raw_fd()).unwrap();
        let (r, _w) = rustix::pipe::pipe().unwrap();
        assert!(matches!(
            check(r.as_raw_fd()),
            Err(BootstrapError::NotAChannel {
                source: SocketKindError::NotASocket,
                ..
            })
        ));
        let (s, _t) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::DGRAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        assert!(matches!(
            check(s.as_raw_fd()),
            Err(BootstrapError::NotAChannel {
                source: SocketKindError::WrongKind,
                ..
            })
        ));
        // A number far above anything this test process has open.
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(1 << 20);
        let unused = RawFd::try_from(limit.saturating_sub(1)).unwrap_or(RawFd::MAX - 1);
        assert!(matches!(check(unused), Err(BootstrapError::NotOpen(_))));
    }
}
