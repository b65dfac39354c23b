//! Work with a time limit: a hang becomes a test failure, not a stuck run.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A thread whose result the test waits for with a time limit.
pub struct BoundedThread<T> {
    what: String,
    rx: mpsc::Receiver<T>,
    handle: JoinHandle<()>,
}

/// Runs `f` on a new thread named `what`; collect its result with
/// [`BoundedThread::join_within`].
pub fn spawn_bounded<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> BoundedThread<T> {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(what.to_owned())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawning a thread");
    BoundedThread {
        what: what.to_owned(),
        rx,
        handle,
    }
}

impl<T> BoundedThread<T> {
    /// The thread's result, waiting at most `limit`: a hang becomes a test
    /// failure instead of a stuck run (the thread is then abandoned). A
    /// panic on the thread is re-raised here.
    pub fn join_within(self, limit: Duration) -> T {
        match self.rx.recv_timeout(limit) {
            Ok(value) => {
                self.handle.join().expect("thread finished");
                value
            }
            Err(RecvTimeoutError::Disconnected) => match self.handle.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => unreachable!("the thread sends before it ends"),
            },
            Err(RecvTimeoutError::Timeout) => {
                panic!("{}: no result after {limit:?} (hang)", self.what)
            }
        }
    }
}

/// Runs `f` on a thread and waits at most `limit` for its result (see
/// [`BoundedThread::join_within`]).
pub fn bounded<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    spawn_bounded(what, f).join_within(limit)
}

/// Polls `cond` every millisecond for at most `limit`; panics on timeout.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
