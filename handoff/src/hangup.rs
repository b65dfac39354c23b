//! Noticing at once that the process at the other end of a socket died.
//!
//! When a process dies the kernel closes its descriptors, and the peer's end
//! of every socket it held reports a hang-up (`EPOLLRDHUP`/`EPOLLHUP`) within
//! microseconds. One background thread per process waits on an epoll set of
//! all the sockets registered here and runs each one's callback once, when its
//! peer hangs up. This only works if nobody else holds a copy of the peer's
//! end: whoever forwards an end must close its own copy.
//!
//! # What the watcher does with a peer's descriptor
//!
//! Only `epoll_ctl` (add, delete) on a duplicate of it: never a read, write
//! or anything else that a peer sharing the open file description could make
//! block. The callbacks are the caller's: they run on the watcher thread, one
//! at a time, so a callback that blocks delays every other watch of the
//! process. A callback must therefore not do I/O on a descriptor a peer
//! shares (use `MSG_DONTWAIT`-style per-call flags or a process-private
//! descriptor), must not wait for a lock held by a thread that may drop a
//! [`HangupWatch`], and should be short.
//!
//! # Fork
//!
//! The watcher belongs to the process that started it. A forked child
//! inherits the epoll descriptor (an open file description shared with the
//! parent) but not the thread. The first use of this module in the child
//! notices the changed pid, closes its inherited copies (the epoll
//! descriptor, and the socket duplicates if no thread held the registry at
//! the fork) without ever calling `epoll_ctl` on the parent's set, and starts
//! a fresh epoll set and thread of its own. A [`HangupWatch`] inherited from
//! the parent never runs its callback in the child, and dropping it there
//! only closes the child's copy of its duplicate (so that the child holds no
//! copy of the socket it let go of). [`HangupWatch::is_inherited`] tells a
//! process that keeps using a socket after a fork that it must watch it
//! again itself.
//!
//! Finding the watcher takes no lock. One window remains, as with any lock:
//! a `fork` while another thread of the parent is *starting* the watcher
//! (the process's first watch) leaves the child's first watch waiting for a
//! lock that thread held.

use rustix::event::epoll;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};
use std::thread::ThreadId;

type Callback = Box<dyn FnOnce() + Send>;

/// One registered socket.
struct Entry {
    /// Our duplicate of the socket: the very descriptor registered with
    /// epoll (the registration is keyed by descriptor number and open file
    /// description, so `EPOLL_CTL_DEL` must name this one), kept open until
    /// it is deleted so the number cannot be reused in between.
    fd: OwnedFd,
    callback: Callback,
}

/// The registry of one watcher.
struct Registry {
    entries: HashMap<u64, Entry>,
    /// The token whose callback the watcher thread is running, if any.
    running: Option<u64>,
}

/// A process's watcher: an epoll set, the callbacks of its sockets, and the
/// thread that waits on it.
struct Watcher {
    /// The process that created the epoll set and the thread.
    pid: u32,
    epoll: OwnedFd,
    registry: Mutex<Registry>,
    /// Signalled when a callback finishes (for drops waiting on it).
    finished: Condvar,
    next_token: AtomicU64,
    /// The watcher thread, set before any watch can be registered.
    thread: OnceLock<ThreadId>,
}

/// The current process's watcher, or the one inherited across `fork`: a
/// leaked `Watcher` (its thread uses it for the life of the process), or
/// null before the first watch. Read without a lock, so that a fork while
/// another thread is inside [`watch_hangup`] leaves the child nothing to
/// wait for.
static CURRENT: AtomicPtr<Watcher> = AtomicPtr::new(std::ptr::null_mut());
/// Serialises starting a watcher (the only time `CURRENT` changes).
static STARTING: Mutex<()> = Mutex::new(());

fn current() -> Option<&'static Watcher> {
    // SAFETY: `CURRENT` is null or points to a `Watcher` leaked by `start`,
    // which is never freed (nor mutated except through its own locks and
    // atomics), so a shared `'static` reference to it is valid.
    unsafe { CURRENT.load(Ordering::Acquire).as_ref() }
}

/// The watcher of this process, started on first use (and again, fresh, in
/// a forked child).
fn watcher() -> io::Result<&'static Watcher> {
    let pid = std::process::id();
    if let Some(watcher) = current().filter(|w| w.pid == pid) {
        return Ok(watcher);
    }
    let _starting = STARTING.lock().unwrap_or_else(PoisonError::into_inner);
    let inherited = match current() {
        Some(watcher) if watcher.pid == pid => return Ok(watcher),
        other => other,
    };
    let watcher = start(pid)?;
    CURRENT.store(std::ptr::from_ref(watcher).cast_mut(), Ordering::Release);
    if let Some(inherited) = inherited {
        abandon_inherited(inherited);
    }
    Ok(watcher)
}

/// In a forked child: lets go of the parent's watcher without touching the
/// parent's epoll set. Called once per inherited watcher (under `STARTING`,
/// after `CURRENT` stopped naming it).
fn abandon_inherited(inherited: &'static Watcher) {
    // The registry's lock may have been held by a parent thread at the
    // fork: that thread does not exist here, so never wait for it.
    let entries = match inherited.registry.try_lock() {
        Ok(mut registry) => std::mem::take(&mut registry.entries),
        Err(TryLockError::Poisoned(poisoned)) => std::mem::take(&mut poisoned.into_inner().entries),
        Err(TryLockError::WouldBlock) => HashMap::new(),
    };
    for (_, entry) in entries {
        // Closing our copies of the duplicates does not touch the parent's
        // registrations (they live as long as the parent's copies). The
        // callbacks are the parent's: they must neither run nor be dropped
        // here (their captures may act on drop), so they are leaked.
        drop(entry.fd);
        std::mem::forget(entry.callback);
    }
    // SAFETY: this is this process's inherited copy of the parent's epoll
    // descriptor, owned by a watcher that is leaked (its `OwnedFd` is never
    // dropped, so this is the only close) and that nothing here uses any
    // more: `CURRENT` no longer names it, its thread does not exist in this
    // process, and every `HangupWatch` checks the pid before using its
    // watcher. Closing it drops only this process's reference; the parent's
    // set is unaffected.
    unsafe { libc::close(inherited.epoll.as_raw_fd()) };
}

fn start(pid: u32) -> io::Result<&'static Watcher> {
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    let watcher: &'static Watcher = Box::leak(Box::new(Watcher {
        pid,
        epoll,
        registry: Mutex::new(Registry {
            entries: HashMap::new(),
            running: None,
        }),
        finished: Condvar::new(),
        next_token: AtomicU64::new(1),
        thread: OnceLock::new(),
    }));
    let spawned = std::thread::Builder::new()
        .name("ferry-hangup".into())
        .spawn(move || watcher.run());
    let handle = match spawned {
        Ok(handle) => handle,
        Err(e) => {
            // SAFETY: the watcher was never published (not in `CURRENT`, no
            // thread, no watch), so nothing else can use its epoll
            // descriptor; it stays leaked, so its `OwnedFd` never closes the
            // number again.
            unsafe { libc::close(watcher.epoll.as_raw_fd()) };
            return Err(e);
        }
    };
    // Set before `watcher` is returned, hence before any registration.
    let _ = watcher.thread.set(handle.thread().id());
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
                self.fire(event.data.u64());
            }
        }
    }

    /// Runs the callback of `token`, unless its watch was dropped.
    fn fire(&self, token: u64) {
        let entry = {
            let mut registry = self.lock();
            let entry = registry.entries.remove(&token);
            if let Some(entry) = &entry {
                let _ = epoll::delete(&self.epoll, &entry.fd);
                registry.running = Some(token);
            }
            entry
        };
        let Some(Entry { fd, callback }) = entry else {
            return;
        };
        drop(fd);
        // A panicking callback must not take the watcher thread (and every
        // other watch of the process) down with it. Nor may its payload:
        // dropping it runs the payload's destructor, which may panic in
        // turn, unwind out of here with `running` still set (a drop of this
        // watch would then wait forever) and end the thread. It is leaked
        // (one small allocation per panicking callback).
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(callback)) {
            std::mem::forget(payload);
        }
        self.lock().running = None;
        self.finished.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Callbacks run outside the lock, so poisoning cannot leave the
        // registry inconsistent: recover it.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a watch waits for: a hang-up, reported once.
#[cfg(not(miri))]
const WATCH_FLAGS: epoll::EventFlags = epoll::EventFlags::RDHUP
    .union(epoll::EventFlags::HUP)
    .union(epoll::EventFlags::ONESHOT);

/// Under miri, whose epoll only has edge-triggered watches (it refuses
/// level-triggered and `EPOLLONESHOT` ones): edge-triggered. A hang-up is a
/// state that happens once, so it is reported once either way, and the
/// watcher deletes the registration and its entry on the first event;
/// should a second event come, `fire` finds no entry and does nothing.
#[cfg(miri)]
const WATCH_FLAGS: epoll::EventFlags = epoll::EventFlags::RDHUP
    .union(epoll::EventFlags::HUP)
    .union(epoll::EventFlags::ET);

/// A registration made by [`watch_hangup`]; dropping it cancels the watch.
///
/// Once the drop returns, the callback is not running and never will —
/// except when the drop happens on the watcher thread itself (inside a
/// callback): then the callback may be the one running, and it runs on. A
/// drop on another thread while the callback runs waits for it to finish, so
/// a callback must not wait for anything the dropping thread holds. A watch
/// inherited by a forked child does nothing there (its callback never runs in
/// the child).
#[derive(Debug)]
pub struct HangupWatch {
    watcher: &'static Watcher,
    token: u64,
    /// `FORKS` when the watch was made: another value means this process is
    /// a fork of the one that made it.
    generation: u64,
}

/// How many times this process's line of ancestors forked since the program
/// started: incremented in every child by a `pthread_atfork` handler. A
/// relaxed load is enough to tell an inherited watch (the count is copied
/// into the child before any of its threads runs).
static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_fork_in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Installs the fork counter once per process image.
fn count_forks() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // SAFETY: registers a handler that only increments an atomic (async-
        // signal-safe, as a fork child handler must be); the function lives
        // for the whole program.
        unsafe { libc::pthread_atfork(None, None, Some(count_fork_in_child)) };
    });
}

impl HangupWatch {
    /// Whether this watch was made by another process, of which this one is
    /// a fork: it does nothing here (its callback runs only in the process
    /// that made it), so a process that keeps using the socket watches it
    /// again. A relaxed atomic load: cheap enough for every operation
    /// (inlined across crates, it is one load and a compare).
    #[inline]
    pub fn is_inherited(&self) -> bool {
        FORKS.load(Ordering::Relaxed) != self.generation
    }
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Drop for HangupWatch {
    fn drop(&mut self) {
        let watcher = self.watcher;
        if watcher.pid != std::process::id() {
            // Inherited across fork: the parent's watcher is not ours to
            // touch (see the module documentation), but our copy of the
            // duplicate is: closing it keeps this process from holding the
            // socket it let go of (the peer would never see a hang-up).
            // Never wait for the lock: a parent thread may have held it at
            // the fork.
            let entry = match watcher.registry.try_lock() {
                Ok(mut registry) => registry.entries.remove(&self.token),
                Err(TryLockError::Poisoned(poisoned)) => {
                    poisoned.into_inner().entries.remove(&self.token)
                }
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(entry) = entry {
                drop(entry.fd);
                // The parent's callback: neither run nor dropped here.
                std::mem::forget(entry.callback);
            }
            return;
        }
        let mut registry = watcher.lock();
        if let Some(entry) = registry.entries.remove(&self.token) {
            let _ = epoll::delete(&watcher.epoll, &entry.fd);
            drop(registry);
            // Dropped outside the lock: the callback's captures may drop
            // watches of their own.
            drop(entry);
            return;
        }
        let on_watcher_thread = watcher.thread.get() == Some(&std::thread::current().id());
        if on_watcher_thread {
            return;
        }
        while registry.running == Some(self.token) {
            registry = watcher
                .finished
                .wait(registry)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Runs `on_hangup` once, on the watcher thread, as soon as the peer of
/// `socket` hangs up (closes its end, or dies). If the peer is already gone,
/// it runs promptly. Keep the returned guard for as long as the watch should
/// last; the same socket may be watched again once a watch of it is dropped
/// (or several times at once).
pub fn watch_hangup(
    socket: BorrowedFd<'_>,
    on_hangup: impl FnOnce() + Send + 'static,
) -> io::Result<HangupWatch> {
    count_forks();
    let generation = FORKS.load(Ordering::Relaxed);
    let watcher = watcher()?;
    let fd = socket.try_clone_to_owned()?;
    let token = watcher.next_token.fetch_add(1, Ordering::Relaxed);
    let flags = WATCH_FLAGS;
    {
        // Registered under the lock: an event that fires at once is handled
        // by the watcher thread only after the entry is in place.
        let mut registry = watcher.lock();
        epoll::add(
            &watcher.epoll,
            fd.as_fd(),
            epoll::EventData::new_u64(token),
            flags,
        )?;
        registry.entries.insert(
            token,
            Entry {
                fd,
                callback: Box::new(on_hangup),
            },
        );
    }
    Ok(HangupWatch {
        watcher,
        token,
        generation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A channel's socketpair (under miri, the stream pair miri has: a
    /// hang-up looks the same on it).
    fn socketpair() -> (OwnedFd, OwnedFd) {
        let (a, b) = crate::Channel::pair().unwrap();
        (OwnedFd::from(a), OwnedFd::from(b))
    }

    #[test]
    fn callback_runs_when_the_peer_closes_and_not_before() {
        let (a, b) = socketpair();
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
        let (a, b) = socketpair();
        let (tx, rx) = mpsc::channel();
        drop(watch_hangup(a.as_fd(), move || tx.send(()).unwrap()).unwrap());
        drop(b);
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    }

    /// Failed before: the registration was made on one duplicate and
    /// deleted through another, so it stayed, and a second watch of the same
    /// descriptor failed with EEXIST.
    #[test]
    fn the_same_socket_can_be_watched_again_after_a_drop() {
        let (a, b) = socketpair();
        for _ in 0..3 {
            let watch = watch_hangup(a.as_fd(), || {}).expect("watching again works");
            drop(watch);
        }
        let (tx, rx) = mpsc::channel();
        let _watch =
            watch_hangup(a.as_fd(), move || tx.send(()).unwrap()).expect("watching again works");
        drop(b);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the last watch still fires");
    }

    /// Failed before in the sense of the docs: a drop while the callback
    /// runs on the watcher thread returned at once.
    #[test]
    fn drop_waits_for_a_running_callback() {
        let (a, b) = socketpair();
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let finished = Arc::new(AtomicBool::new(false));
        let finished_in = Arc::clone(&finished);
        let watch = watch_hangup(a.as_fd(), move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(Duration::from_secs(10));
            finished_in.store(true, Ordering::SeqCst);
        })
        .unwrap();
        drop(b);
        started
            .recv_timeout(Duration::from_secs(10))
            .expect("callback started");
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let _ = release.send(());
        });
        drop(watch);
        assert!(
            finished.load(Ordering::SeqCst),
            "drop returned while the callback was running"
        );
        releaser.join().unwrap();
    }

    #[test]
    fn a_callback_may_drop_its_own_watch() {
        let (a, b) = socketpair();
        let slot: Arc<Mutex<Option<HangupWatch>>> = Arc::new(Mutex::new(None));
        let slot_in = Arc::clone(&slot);
        let (tx, rx) = mpsc::channel();
        let watch = watch_hangup(a.as_fd(), move || {
            let own = slot_in.lock().unwrap().take();
            drop(own);
            tx.send(()).unwrap();
        })
        .unwrap();
        *slot.lock().unwrap() = Some(watch);
        drop(b);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the callback dropped its own watch without deadlock");
    }

    #[test]
    fn a_callback_panicking_with_a_payload_that_panics_on_drop_does_not_stop_the_watcher() {
        struct PanicsOnDrop;
        impl Drop for PanicsOnDrop {
            fn drop(&mut self) {
                panic!("payload drop panic (expected)");
            }
        }
        let (a, b) = socketpair();
        let _panics = watch_hangup(a.as_fd(), || std::panic::panic_any(PanicsOnDrop)).unwrap();
        drop(b);
        let (c, d) = socketpair();
        let (tx, rx) = mpsc::channel();
        let _watch = watch_hangup(c.as_fd(), move || tx.send(()).unwrap()).unwrap();
        drop(d);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("later watches still fire");
    }

    #[test]
    fn a_panicking_callback_does_not_stop_the_watcher() {
        let (a, b) = socketpair();
        let _panics = watch_hangup(a.as_fd(), || panic!("callback panic (expected)")).unwrap();
        drop(b);
        let (c, d) = socketpair();
        let (tx, rx) = mpsc::channel();
        let _watch = watch_hangup(c.as_fd(), move || tx.send(()).unwrap()).unwrap();
        drop(d);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("later watches still fire");
    }
}
