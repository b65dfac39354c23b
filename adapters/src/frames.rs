//! A connection's frames as a `futures` [`Stream`] of received frames and a
//! [`Sink`] of frames to send, with owned buffers: each received frame is
//! copied once out of the ring into a [`BytesMut`] (the ring's room goes
//! back to the peer at once); each frame sent is copied once from its
//! [`Bytes`] into the ring (or travels out of line, in a sealed memfd, when
//! it is larger than the ring's in-place maximum).
//!
//! This is the shape tarpc, `tokio_serde` and most message-oriented
//! libraries are written against: `tokio_serde::Framed::new(frames, codec)`
//! is a tarpc transport.

use crate::port::Port;
use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use futures_sink::Sink;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A connection's frames: `Stream<Item = io::Result<BytesMut>>` and
/// `Sink<Bytes, Error = io::Error>`.
///
/// The stream ends (`None`) when the peer closed the connection cleanly,
/// after every frame it sent; a peer that died or broke the protocol ends
/// it with an error (`ConnectionReset`, `InvalidData`). The sink keeps at
/// most one frame of its own: `poll_ready` waits until that frame is in the
/// ring (back-pressure is the ring's), `poll_flush` until it is, and
/// `poll_close` flushes and then shuts the sending direction for good
/// (further sends fail with `BrokenPipe`); the peer learns of it when the
/// connection is dropped.
pub struct Frames {
    port: Port,
    /// The frame `start_send` accepted and the ring has not taken yet.
    unsent: Option<Bytes>,
    /// Whether `poll_close` completed.
    closed: bool,
    /// Whether the stream has ended.
    ended: bool,
}

impl Frames {
    /// Frames over `port`.
    pub(crate) fn from_port(port: Port) -> Frames {
        Frames {
            port,
            unsent: None,
            closed: false,
            ended: false,
        }
    }

    pub(crate) fn port(&self) -> &Port {
        &self.port
    }

    pub(crate) fn into_port(self) -> Port {
        self.port
    }

    /// The largest frame that travels in place in the ring; larger ones go
    /// out of line (a sealed memfd each, much slower).
    pub fn max_inline_payload(&self) -> usize {
        self.port.max_inline_payload()
    }

    /// Sends the frame the sink holds, if any.
    fn poll_send_unsent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(frame) = &self.unsent {
            match self.port.poll_send(cx, frame) {
                Poll::Ready(Ok(())) => self.unsent = None,
                Poll::Ready(Err(e)) => {
                    // The frame is lost with the connection.
                    self.unsent = None;
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Stream for Frames {
    type Item = io::Result<BytesMut>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match this
            .port
            .poll_recv(cx, |bytes: &[u8]| BytesMut::from(bytes))
        {
            Poll::Ready(Ok(Some(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Ok(None)) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                this.ended = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Sink<Bytes> for Frames {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Err(closed_error()));
        }
        this.poll_send_unsent(cx)
    }

    fn start_send(self: Pin<&mut Self>, frame: Bytes) -> io::Result<()> {
        let this = self.get_mut();
        if this.closed {
            return Err(closed_error());
        }
        if this.unsent.is_some() {
            return Err(io::Error::other(
                "start_send without a successful poll_ready before it",
            ));
        }
        // Send it at once if the ring has room (the common case): the
        // frame is then on its way before the caller flushes.
        if !this.port.try_send(&frame)? {
            this.unsent = Some(frame);
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_unsent(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Ok(()));
        }
        match this.poll_send_unsent(cx) {
            Poll::Ready(result) => {
                this.closed = true;
                Poll::Ready(result)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the frame sink was closed")
}

impl std::fmt::Debug for Frames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frames")
            .field("unsent", &self.unsent.as_ref().map(Bytes::len))
            .field("closed", &self.closed)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}
