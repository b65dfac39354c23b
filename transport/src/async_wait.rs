//! How an async operation waits for its side of a connection (the `tokio`
//! feature): poll the ring, yielding to the executor between polls, for a
//! short spin (see [`Spin`]), then arm the readiness descriptor and let
//! tokio's reactor wake the task when the peer signals it (or hangs up,
//! which makes the descriptor readable for good).
//!
//! The same fence-and-recheck protocol as the blocking waits: arming
//! announces the wait in shared memory and then checks the ring again, so a
//! publish (or release) that the check missed saw the announcement and
//! signals the descriptor. The descriptor is shared by every waiter of the
//! connection (receiving and sending, several halves): tokio delivers each
//! signal's edge to every registration, a wake-up is a hint, and each waiter
//! checks its own condition again. Nothing here blocks a thread: the
//! descriptor is only watched by the reactor and drained with
//! `MSG_DONTWAIT`.

use std::io;
use std::os::fd::OwnedFd;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;

/// One side of a connection that a task can wait for.
pub(crate) trait Side {
    /// Why the side cannot go on at all.
    type Error;
    /// Whether the side can go on now (without arming). Ends an arming
    /// left in place by an earlier wait first.
    fn ready(&mut self) -> Result<bool, Self::Error>;
    /// Arms the readiness descriptor; `Ok(true)` when ready already (not
    /// armed then).
    fn arm(&mut self) -> Result<bool, Self::Error>;
    /// Ends the arming and drains the descriptor.
    fn disarm(&mut self);
    /// The error a failure of the reactor itself becomes.
    fn reactor_failed(error: io::Error) -> Self::Error;
}

/// The readiness descriptor as tokio's reactor sees it: a duplicate of the
/// connection's end of the notification socketpair (so each half registers
/// its own).
pub(crate) type ReadinessFd = AsyncFd<OwnedFd>;

/// Registers a duplicate of `fd` with the current tokio runtime's reactor.
/// Panics outside a runtime (as `AsyncFd::new` does).
pub(crate) fn register(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<ReadinessFd> {
    let owned = fd.try_clone_to_owned()?;
    // SAFETY: `owned` is an open descriptor this function just made and
    // hands over to the `AsyncFd`, which owns it from here on: it stays open
    // and names the same open file description until the `AsyncFd` is
    // dropped (or `into_inner` gives it back), and `OwnedFd::as_raw_fd`
    // returns the same number every time. Nothing else in this crate
    // closes or reuses that number (it is not shared with the connection,
    // which keeps its own descriptor).
    unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)
}

/// A waiter's spin: how long it may poll before it sleeps on the
/// descriptor, and since when the current wait has been polling.
///
/// The spin yields between polls instead of holding the thread: a waiting
/// task that is not ready wakes itself and returns `Pending`, so the
/// executor runs every other ready task (and its reactor) before polling
/// it again. The thread stays awake, which is what the spin buys (a peer
/// that answers within it is seen without the reactor, the descriptor's
/// syscalls or a sleeping thread's wake-up), but no task waits behind it.
#[derive(Debug)]
pub(crate) struct Spin {
    budget: Duration,
    since: Option<Instant>,
    /// Polls of the current wait since the clock was last read.
    polls: u32,
}

/// How many polls of a spin share one clock read: a read costs about as
/// much as the poll itself (30 ns on a VM), and a spinning task polls as
/// often as its executor comes back to it.
const POLLS_PER_CLOCK_READ: u32 = 16;

impl Spin {
    pub(crate) fn new(budget: Duration) -> Spin {
        Spin {
            budget,
            since: None,
            polls: 0,
        }
    }

    /// Whether a wait that is not ready yet may poll again rather than
    /// sleep: the first call of a wait starts its clock, and every
    /// `POLLS_PER_CLOCK_READ`th looks at it.
    fn may_poll_again(&mut self) -> bool {
        if self.budget.is_zero() {
            return false;
        }
        let Some(since) = self.since else {
            self.since = Some(Instant::now());
            self.polls = 0;
            return true;
        };
        self.polls += 1;
        if self.polls < POLLS_PER_CLOCK_READ {
            return true;
        }
        self.polls = 0;
        since.elapsed() < self.budget
    }

    /// The wait is over (ready, failed, or asleep on the descriptor): the
    /// next one spins anew.
    fn end(&mut self) {
        self.since = None;
    }
}

/// Polls until `side` is ready: while `spin` allows, yields to the
/// executor between polls (see [`Spin`]); then arms and waits for the
/// descriptor. `Poll::Pending` leaves the task woken (spinning) or the side
/// armed and the task's waker registered with the reactor (sleeping).
pub(crate) fn poll_ready<S: Side>(
    side: &mut S,
    fd: &ReadinessFd,
    spin: &mut Spin,
    cx: &mut Context<'_>,
) -> Poll<Result<(), S::Error>> {
    match side.ready() {
        Ok(true) => {
            spin.end();
            return Poll::Ready(Ok(()));
        }
        Ok(false) => {}
        Err(error) => {
            spin.end();
            return Poll::Ready(Err(error));
        }
    }
    if spin.may_poll_again() {
        cx.waker().wake_by_ref();
        return Poll::Pending;
    }
    spin.end();
    loop {
        match side.arm() {
            Ok(true) => return Poll::Ready(Ok(())),
            Ok(false) => {}
            Err(error) => return Poll::Ready(Err(error)),
        }
        match fd.poll_read_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(error)) => {
                side.disarm();
                return Poll::Ready(Err(S::reactor_failed(error)));
            }
            Poll::Ready(Ok(mut guard)) => {
                // A signal (or a stale one, or the hang-up): drain, look
                // again, and arm anew if still not ready. Clearing tokio's
                // readiness only clears what this guard saw: a signal that
                // arrives meanwhile makes it ready again.
                guard.clear_ready();
                side.disarm();
                match side.ready() {
                    Ok(true) => return Poll::Ready(Ok(())),
                    Ok(false) => {}
                    Err(error) => return Poll::Ready(Err(error)),
                }
            }
        }
    }
}

/// Runs `operation` to completion within `timeout` (`None`: no bound);
/// `Err(())` when the time ran out first (the future is dropped then).
pub(crate) async fn within<T>(
    timeout: Option<Duration>,
    operation: impl std::future::Future<Output = T>,
) -> Result<T, ()> {
    match timeout {
        Some(timeout) => tokio::time::timeout(timeout, operation)
            .await
            .map_err(|_| ()),
        None => Ok(operation.await),
    }
}
