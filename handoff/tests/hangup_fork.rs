//! The hang-up watcher across `fork` (issue 14): a forked child inherits the
//! parent's epoll descriptor (one open file description for both) but not
//! its thread. The child's own watches must work, and nothing the child does
//! with watches may disturb the parent's.
//!
//! One test in a binary of its own: the child is a real `fork` of this
//! process (not a re-exec), so no other test may be running threads that
//! hold locks at the fork.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferry_handoff::hangup::{HangupWatch, watch_hangup};
use ferry_testkit::process::OP_TIMEOUT;

/// How long a negative check ("no callback ran") watches for a spurious
/// callback. It cannot fail because the machine is slow, only miss a bug.
const QUIET: Duration = Duration::from_millis(200);

fn socketpair() -> (OwnedFd, OwnedFd) {
    rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .expect("socketpair")
}

/// A watched socket: `ours` is watched, `peer` is its other end, and the
/// watch reports its index on `fired`.
struct Watched {
    /// Kept open for as long as the watch (and the test) lasts.
    _ours: OwnedFd,
    peer: Option<OwnedFd>,
    watch: Option<HangupWatch>,
}

fn watched(index: usize, fired: &mpsc::Sender<usize>) -> Watched {
    let (ours, peer) = socketpair();
    let fired = fired.clone();
    let watch = watch_hangup(ours.as_fd(), move || {
        let _ = fired.send(index);
    })
    .expect("watch_hangup");
    Watched {
        _ours: ours,
        peer: Some(peer),
        watch: Some(watch),
    }
}

/// Waits (bounded) for a byte on `fd`.
fn wait_readable(fd: &OwnedFd) -> bool {
    let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
    let timeout = rustix::event::Timespec {
        tv_sec: OP_TIMEOUT.as_secs() as i64,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&timeout)), Ok(1))
}

/// The child's part; returns its exit code (0: its watches behaved).
fn child(go: OwnedFd) -> i32 {
    if !wait_readable(&go) {
        return 10;
    }
    let (tx, fired) = mpsc::channel();
    // Watches whose peers hang up: each must fire here, in the child (in
    // the old code the parent's thread took their events, and ran the
    // parent's callbacks of the same tokens).
    let mut mine: Vec<Watched> = (0..8).map(|i| watched(i, &tx)).collect();
    for w in &mut mine {
        drop(w.peer.take());
    }
    let mut seen = Vec::new();
    let deadline = Instant::now() + OP_TIMEOUT;
    while seen.len() < mine.len() {
        match fired.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(i) if i < mine.len() && !seen.contains(&i) => seen.push(i),
            Ok(_) => return 11,
            Err(_) => return 12,
        }
    }
    for w in &mut mine {
        drop(w.watch.take());
    }
    drop(mine);
    // Watches made and dropped without firing (in the old code their
    // registrations went into, and stayed in, the parent's epoll set).
    for i in 0..8 {
        drop(watched(100 + i, &tx));
    }
    0
}

#[test]
fn the_watcher_survives_fork_in_both_processes() {
    let (tx, fired) = mpsc::channel();
    // Started before the fork: the child inherits this watcher.
    let mut before: Vec<Watched> = (0..4).map(|i| watched(i, &tx)).collect();
    let (go_child, go_parent) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");

    // SAFETY: the child only runs `child` and `_exit`s. This test is alone
    // in its binary, so the only other threads are libtest's main thread
    // (waiting for this one) and the watcher thread (waiting in epoll, or
    // holding the watcher's registry lock, which the child never waits for).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        drop(go_parent);
        let code = child(go_child);
        // SAFETY: ends the forked child without running the parent's
        // atexit handlers or libtest's teardown.
        unsafe { libc::_exit(code) };
    }
    drop(go_child);
    let child_guard = ForkedChild(pid);

    // Watches made after the fork: the child's watcher would hand out the
    // same tokens in the old code, so the child's hang-ups ran these
    // callbacks here.
    let mut after: Vec<Watched> = (10..18).map(|i| watched(i, &tx)).collect();
    rustix::io::write(&go_parent, b"g").expect("start the child");

    let status = child_guard.wait(OP_TIMEOUT);
    assert_eq!(
        status,
        Some(0),
        "the child's own watches did not all fire (exit code; see child())"
    );
    assert!(
        fired.recv_timeout(QUIET).is_err(),
        "a parent's callback ran although no peer of the parent hung up"
    );
    for w in before.iter_mut().chain(after.iter_mut()) {
        drop(w.peer.take());
    }
    let expected = before.len() + after.len();
    let mut seen = Vec::new();
    let deadline = Instant::now() + OP_TIMEOUT;
    while seen.len() < expected {
        let i = fired
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("only {seen:?} of the parent's watches fired"));
        assert!(!seen.contains(&i), "watch {i} fired twice");
        seen.push(i);
    }
    // The sockets stay open until here so no duplicate number is reused.
    drop((before, after));
}

/// A forked child, killed and reaped if the test fails first.
struct ForkedChild(libc::pid_t);

impl ForkedChild {
    /// Its exit code, waiting at most `limit` (`None` if it was killed by a
    /// signal or did not exit in time).
    fn wait(self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            let mut status = 0;
            // SAFETY: waitpid on our own child with a valid status pointer.
            let rc = unsafe { libc::waitpid(self.0, &mut status, libc::WNOHANG) };
            if rc == self.0 {
                std::mem::forget(self);
                return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
            }
            if Instant::now() >= deadline {
                return None; // Drop kills and reaps it.
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for ForkedChild {
    fn drop(&mut self) {
        // SAFETY: signalling and reaping our own unreaped child.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}
