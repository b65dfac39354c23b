//! What both adapters need from a connection, as poll functions: receive a
//! frame into a closure, send a frame, each waiting (without blocking the
//! thread) through ferry-transport's `AsyncConnection`, and ferry's errors
//! as `io::Error`s.

use crate::fan_out::{Direction, FanOut};
use ferry_transport::{AsyncConnection, RecvError, SendError};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// How long a send waits before trying again when the ring had room but
/// the send found none: the frame went out of line and the control socket
/// (which has no readiness of its own here) is full.
const CONTROL_FULL_BACKOFF: Duration = Duration::from_millis(1);

/// How many times one poll retries a receive that readiness announced but
/// that found nothing (a frame the connection consumed itself), before it
/// yields to the executor.
const MAX_EMPTY_RETRIES: u32 = 64;

/// A connection driven by poll functions.
pub(crate) struct Port {
    connection: AsyncConnection,
    /// The waker the connection is polled with (both directions' tasks).
    fan_out: FanOut,
    /// Since when the current send has been waiting (bounded by the
    /// connection's `send_timeout`), and the timer that wakes the task
    /// then (or after a back-off).
    send_wait: Option<SendWait>,
}

struct SendWait {
    deadline: Option<Instant>,
    timer: Pin<Box<Sleep>>,
}

impl Port {
    pub(crate) fn new(connection: AsyncConnection) -> Port {
        Port {
            connection,
            fan_out: FanOut::new(),
            send_wait: None,
        }
    }

    pub(crate) fn get_ref(&self) -> &AsyncConnection {
        &self.connection
    }

    pub(crate) fn into_inner(self) -> AsyncConnection {
        self.connection
    }

    pub(crate) fn max_inline_payload(&self) -> usize {
        self.connection.get_ref().max_inline_payload()
    }

    /// Receives the next frame and hands its bytes to `take`. `Ok(None)`:
    /// the peer closed the connection cleanly, after every frame it sent.
    pub(crate) fn poll_recv<R>(
        &mut self,
        cx: &mut Context<'_>,
        take: impl FnOnce(&[u8]) -> R,
    ) -> Poll<io::Result<Option<R>>> {
        for _ in 0..MAX_EMPTY_RETRIES {
            let waker = self.fan_out.register(Direction::Recv, cx.waker());
            let ready = self
                .connection
                .poll_recv_ready(&mut Context::from_waker(waker));
            let error = match ready!(ready) {
                Ok(()) => match self.connection.get_mut().try_recv_frame() {
                    Ok(frame) => return Poll::Ready(Ok(Some(take(frame.bytes())))),
                    Err(error) => error,
                },
                Err(error) => error,
            };
            match error {
                RecvError::Empty => continue,
                RecvError::Disconnected if self.connection.get_ref().peer_closed_cleanly() => {
                    return Poll::Ready(Ok(None));
                }
                error => return Poll::Ready(Err(recv_error(error))),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Takes the next frame if one is there now, handing its bytes to
    /// `take`; `None` when none is (or the connection ended: the next
    /// [`poll_recv`](Self::poll_recv) says how).
    pub(crate) fn try_recv<R>(&mut self, take: impl FnOnce(&[u8]) -> R) -> Option<R> {
        match self.connection.get_mut().try_recv_frame() {
            Ok(frame) => Some(take(frame.bytes())),
            Err(_) => None,
        }
    }

    /// Sends `bytes` as one frame if the ring has room now: `Ok(false)`
    /// when it has not.
    pub(crate) fn try_send(&mut self, bytes: &[u8]) -> io::Result<bool> {
        match self.connection.get_mut().try_send_frame(bytes) {
            Ok(()) => Ok(true),
            Err(SendError::Full) => Ok(false),
            Err(error) => Err(send_error(error)),
        }
    }

    /// Sends `bytes` as one frame, waiting for room for at most the
    /// connection's `send_timeout` (`TimedOut` then).
    pub(crate) fn poll_send(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<()>> {
        loop {
            if self.try_send(bytes)? {
                self.send_wait = None;
                return Poll::Ready(Ok(()));
            }
            let wait = self.send_wait.get_or_insert_with(|| {
                let timeout = self.connection.get_ref().config().send_timeout;
                let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
                SendWait {
                    deadline,
                    timer: Box::pin(tokio::time::sleep_until(far_future(deadline))),
                }
            });
            if wait.deadline.is_some_and(|d| Instant::now() >= d) {
                self.send_wait = None;
                return Poll::Ready(Err(send_error(SendError::TimedOut)));
            }
            let waker = self.fan_out.register(Direction::Send, cx.waker());
            let ready = self
                .connection
                .poll_send_ready(&mut Context::from_waker(waker), bytes.len());
            match ready {
                Poll::Ready(Ok(())) => {
                    // Room in the ring, yet the send found none: the control
                    // socket is full. Nothing signals its room: back off.
                    let wait = self.send_wait.as_mut().expect("set above");
                    let until = Instant::now() + CONTROL_FULL_BACKOFF;
                    let until = wait.deadline.map_or(until, |d| d.min(until));
                    wait.timer.as_mut().reset(until);
                    ready!(wait.timer.as_mut().poll(cx));
                }
                Poll::Ready(Err(error)) => {
                    self.send_wait = None;
                    return Poll::Ready(Err(send_error(error)));
                }
                Poll::Pending => {
                    // Also wake at the deadline, to report `TimedOut`.
                    let wait = self.send_wait.as_mut().expect("set above");
                    if let Some(deadline) = wait.deadline {
                        wait.timer.as_mut().reset(deadline);
                        if wait.timer.as_mut().poll(cx).is_ready() {
                            continue;
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// A deadline for a timer that may have none.
fn far_future(deadline: Option<Instant>) -> Instant {
    deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365))
}

/// ferry's receive errors as I/O errors.
fn recv_error(error: RecvError) -> io::Error {
    let kind = match &error {
        RecvError::Disconnected => io::ErrorKind::ConnectionReset,
        RecvError::ProtocolViolation { .. } => io::ErrorKind::InvalidData,
        RecvError::TimedOut => io::ErrorKind::TimedOut,
        RecvError::Empty => io::ErrorKind::WouldBlock,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, error)
}

/// ferry's send errors as I/O errors.
fn send_error(error: SendError) -> io::Error {
    let kind = match &error {
        SendError::Disconnected => io::ErrorKind::BrokenPipe,
        SendError::TimedOut => io::ErrorKind::TimedOut,
        SendError::TooLarge { .. } => io::ErrorKind::InvalidInput,
        SendError::Full => io::ErrorKind::WouldBlock,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, error)
}
