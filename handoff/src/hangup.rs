//! Noticing at once that the process at the other end of a socket died.
//!
//! When a process dies the kernel closes its descriptors, and the peer's end
//! of every socket it held reports a hang-up (`EPOLLRDHUP`/`EPOLLHUP`) within
//! microseconds. One background thread per process waits on an epoll set of
//! all the sockets registered here and runs each one's callback once, when its
//! peer hangs up. This only works if nobody else holds a copy of the peer's
//! end: whoever forwards an end must close its own copy.

use rustix::event::epoll;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

type Callback = Box<dyn FnOnce() + Send>;

/// The process-wide watcher: an epoll set and the callbacks of its sockets.
struct Watcher {
    epoll: OwnedFd,
    /// Registered sockets by token: our duplicate of the socket (so the
    /// registration cannot outlive or alias a reused descriptor number) and
    /// the callback.
    entries: Mutex<HashMap<u64, (OwnedFd, Callback)>>,
    next_token: AtomicU64,
}

/// The watcher, started on first use. A start that failed (no epoll, no
/// thread) is remembered and reported to every caller, rather than leaving a
/// watcher without its thread.
fn watcher() -> io::Result<&'static Watcher> {
    static WATCHER: OnceLock<Result<Arc<Watcher>, io::ErrorKind>> = OnceLock::new();
    match WATCHER.get_or_init(|| start().map_err(|e| e.kind())) {
        Ok(watcher) => Ok(watcher),
        Err(kind) => Err(io::Error::new(*kind, "the hang-up watcher could not start")),
    }
}

fn start() -> io::Result<Arc<Watcher>> {
    let watcher = Arc::new(Watcher {
        epoll: epoll::create(epoll::CreateFlags::CLOEXEC)?,
        entries: Mutex::new(HashMap::new()),
        next_token: AtomicU64::new(1),
    });
    let thread_watcher = Arc::clone(&watcher);
    std::thread::Builder::new()
        .name("ferry-hangup".into())
        .spawn(move || thread_watcher.run())?;
    Ok(watcher)
}

impl Watcher {
    fn run(&self) {
        let mut events = Vec::with_capacity(64);
        loop {
            events.clear();
            match epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                None,
            ) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                // Nothing sensible can be done with EBADF/EFAULT here; stop
                // rather than spin. Waiters still have their bounded timeouts.
                Err(_) => return,
            }
            for event in &events {
                let token = event.data.u64();
                let entry = self.lock().remove(&token);
                if let Some((fd, callback)) = entry {
                    let _ = epoll::delete(&self.epoll, &fd);
                    drop(fd);
                    callback();
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (OwnedFd, Callback)>> {
        // A panicking callback runs outside the lock, so poisoning cannot
        // leave the map inconsistent: recover it.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A registration made by [`watch_hangup`]; dropping it cancels the watch: once
/// the drop returns, the callback either never runs or had already started.
#[derive(Debug)]
pub struct HangupWatch {
    token: u64,
}

impl Drop for HangupWatch {
    fn drop(&mut self) {
        if let Ok(watcher) = watcher() {
            let entry = watcher.lock().remove(&self.token);
            if let Some((fd, _callback)) = entry {
                let _ = epoll::delete(&watcher.epoll, &fd);
            }
        }
    }
}

/// Runs `on_hangup` once, on the watcher thread, as soon as the peer of
/// `socket` hangs up (closes its end, or dies). If the peer is already gone,
/// it runs promptly. Keep the returned guard for as long as the watch should
/// last.
pub fn watch_hangup(
    socket: BorrowedFd<'_>,
    on_hangup: impl FnOnce() + Send + 'static,
) -> io::Result<HangupWatch> {
    let watcher = watcher()?;
    let fd = socket.try_clone_to_owned()?;
    let token = watcher.next_token.fetch_add(1, Ordering::Relaxed);
    // Insert before adding to epoll: the event may fire immediately.
    watcher
        .lock()
        .insert(token, (fd.try_clone()?, Box::new(on_hangup)));
    let flags = epoll::EventFlags::RDHUP | epoll::EventFlags::HUP | epoll::EventFlags::ONESHOT;
    if let Err(e) = epoll::add(
        &watcher.epoll,
        fd.as_fd(),
        epoll::EventData::new_u64(token),
        flags,
    ) {
        watcher.lock().remove(&token);
        return Err(e.into());
    }
    Ok(HangupWatch { token })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn callback_runs_when_the_peer_closes_and_not_before() {
        let (a, b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let (tx, rx) = mpsc::channel();
        let _watch = watch_hangup(a.as_fd(), move || tx.send(()).unwrap()).unwrap();
        assert!(
            rx.recv_timeout(Duration::from_millis(50)).is_err(),
            "no hang-up yet"
        );
        drop(b);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("hang-up reported");
    }

    #[test]
    fn dropping_the_watch_cancels_it() {
        let (a, b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let (tx, rx) = mpsc::channel();
        drop(watch_hangup(a.as_fd(), move || tx.send(()).unwrap()).unwrap());
        drop(b);
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    }
}
