//! A connection as a byte stream: `tokio::io::AsyncRead + AsyncWrite`, so
//! protocols written for a socket (HTTP/2 with hyper, gRPC with tonic,
//! Cap'n Proto) run on ferry unchanged.
//!
//! Each write becomes one frame carrying a chunk of the bytes: a write
//! larger than the ring's in-place maximum
//! ([`max_inline_payload`](ByteStream::max_inline_payload)) writes only that
//! much (a partial write, as `AsyncWrite` allows; `write_all` loops), so a
//! byte stream never takes the slower out-of-line path. Reads copy a frame's
//! bytes into the reader's buffer; what does not fit is kept for the next
//! read. A zero-length frame is the end-of-stream marker.
//!
//! # Shutdown
//!
//! - `poll_shutdown` sends the end-of-stream marker (after every byte
//!   written before it): the peer's reads return the rest of the data, then
//!   end of stream (`Ok` with nothing read). Writes after it fail with
//!   `BrokenPipe`; reading goes on (a half-close, as with TCP).
//! - A peer that drops its end cleanly without shutting down also gives
//!   end of stream, after its data, like a socket closed without
//!   `shutdown`.
//! - A peer that dies (or breaks the protocol) makes reads fail with
//!   `ConnectionReset` (`InvalidData`), so a truncated stream is never
//!   mistaken for a complete one; writes to a gone peer fail with
//!   `BrokenPipe`.

use crate::port::Port;
use bytes::{Buf as _, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The end-of-stream marker: a frame with no bytes.
const END_OF_STREAM: &[u8] = &[];

/// A connection as `AsyncRead + AsyncWrite`.
pub struct ByteStream {
    port: Port,
    /// The rest of the last frame, which did not fit the reader's buffer.
    leftover: BytesMut,
    /// Whether the peer's end of stream was read.
    read_ended: bool,
    /// Whether our end of stream was sent.
    write_shut: bool,
}

/// What a frame turned out to be.
enum Chunk {
    /// Bytes (copied into the reader's buffer, the rest kept).
    Data,
    /// The end-of-stream marker.
    End,
}

impl ByteStream {
    /// A byte stream over `port`.
    pub(crate) fn from_port(port: Port) -> ByteStream {
        ByteStream {
            port,
            leftover: BytesMut::new(),
            read_ended: false,
            write_shut: false,
        }
    }

    pub(crate) fn port(&self) -> &Port {
        &self.port
    }

    /// The most one write sends (one frame in place in the ring).
    pub fn max_inline_payload(&self) -> usize {
        self.port.max_inline_payload()
    }
}

impl AsyncRead for ByteStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.leftover.is_empty() {
            let n = this.leftover.len().min(buf.remaining());
            buf.put_slice(&this.leftover[..n]);
            this.leftover.advance(n);
            return Poll::Ready(Ok(()));
        }
        if this.read_ended || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let leftover = &mut this.leftover;
        let take = |bytes: &[u8]| {
            if bytes.is_empty() {
                return Chunk::End;
            }
            let n = bytes.len().min(buf.remaining());
            buf.put_slice(&bytes[..n]);
            leftover.extend_from_slice(&bytes[n..]);
            Chunk::Data
        };
        match this.port.poll_recv(cx, take) {
            Poll::Ready(Ok(Some(Chunk::Data))) => Poll::Ready(Ok(())),
            // The marker, or a clean close without one: end of stream.
            Poll::Ready(Ok(Some(Chunk::End) | None)) => {
                this.read_ended = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for ByteStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_shut {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the byte stream was shut down for writing",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(this.port.max_inline_payload());
        match this.port.poll_send(cx, &buf[..n]) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Every write is in the ring when it returns: nothing to flush.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.write_shut {
            return Poll::Ready(Ok(()));
        }
        match this.port.poll_send(cx, END_OF_STREAM) {
            Poll::Ready(Ok(())) => {
                this.write_shut = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl std::fmt::Debug for ByteStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteStream")
            .field("leftover", &self.leftover.len())
            .field("read_ended", &self.read_ended)
            .field("write_shut", &self.write_shut)
            .finish_non_exhaustive()
    }
}
