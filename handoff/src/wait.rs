//! Bounded waiting: deadlines and `poll(2)` on one descriptor.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;

/// A point in time to stop waiting at, or never.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    /// `timeout` from now; `None` (or a timeout too large to represent) is
    /// never.
    pub(crate) fn after(timeout: Option<Duration>) -> Self {
        Deadline(timeout.and_then(|t| Instant::now().checked_add(t)))
    }

    /// The time left (zero once passed), or `None` for never.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.0
            .map(|at| at.saturating_duration_since(Instant::now()))
    }
}

/// Converts a duration to a `poll` timeout, saturating.
pub(crate) fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: d.subsec_nanos().into(),
    }
}

/// Waits until `fd` reports one of `events` (or an error/hang-up condition,
/// which `poll` always reports) or the deadline passes. Returns the reported
/// events, or `None` on timeout. Interrupted calls are resumed with the time
/// that is left.
pub(crate) fn poll_one(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Deadline,
) -> io::Result<Option<PollFlags>> {
    loop {
        let remaining = deadline.remaining();
        let timeout = remaining.map(timespec);
        let mut fds = [PollFd::from_borrowed_fd(fd, events)];
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(0) => {
                if remaining.is_some_and(|r| r.is_zero()) {
                    return Ok(None);
                }
                // The kernel rounds timeouts; go round until the deadline
                // has really passed.
            }
            Ok(_) => return Ok(Some(fds[0].revents())),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}
