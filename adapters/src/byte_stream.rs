//! A connection as a byte stream: `tokio::io::AsyncRead + AsyncWrite`, so
//! protocols written for a socket (HTTP/2 with hyper, gRPC with tonic,
//! Cap'n Proto) run on ferry unchanged.
//!
//! Each write becomes one frame carrying a chunk of the bytes: a write
//! larger than the ring's in-place maximum
//! ([`max_inline_payload`](ByteStream::max_inline_payload)) writes only that
//! much (a partial write, as `AsyncWrite` allows; `write_all` loops), so a
//! byte stream never takes the slower out-of-line path. A vectored write
//! (HTTP/2 writes a frame's header and its payload as two buffers) gathers
//! its buffers into one frame, as `writev` gathers them into one socket
//! write. Reads copy a frame's bytes into the reader's buffer, and then the
//! frames already there while the buffer has room; what does not fit is
//! kept for the next read. A zero-length frame is the end-of-stream
//! marker.
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
    /// A vectored write's buffers, gathered into one frame.
    gathered: Vec<u8>,
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
            gathered: Vec::new(),
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
            this.read_more(buf);
            return Poll::Ready(Ok(()));
        }
        if this.read_ended || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let leftover = &mut this.leftover;
        match this
            .port
            .poll_recv(cx, |bytes| take_chunk(bytes, buf, leftover))
        {
            Poll::Ready(Ok(Some(Chunk::Data))) => {
                this.read_more(buf);
                Poll::Ready(Ok(()))
            }
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

/// A frame's bytes into the reader's buffer, what does not fit into
/// `leftover`; an empty frame is the end-of-stream marker.
fn take_chunk(bytes: &[u8], buf: &mut ReadBuf<'_>, leftover: &mut BytesMut) -> Chunk {
    if bytes.is_empty() {
        return Chunk::End;
    }
    let n = bytes.len().min(buf.remaining());
    buf.put_slice(&bytes[..n]);
    leftover.extend_from_slice(&bytes[n..]);
    Chunk::Data
}

impl ByteStream {
    /// After a frame was read into `buf`: the frames already there too,
    /// while `buf` has room (the rest of the last one kept), without
    /// waiting. An end-of-stream marker ends the stream after what was
    /// read; an error is left for the next read to report.
    fn read_more(&mut self, buf: &mut ReadBuf<'_>) {
        while self.leftover.is_empty() && buf.remaining() > 0 && !self.read_ended {
            let leftover = &mut self.leftover;
            match self.port.try_recv(|bytes| take_chunk(bytes, buf, leftover)) {
                Some(Chunk::Data) => {}
                Some(Chunk::End) => self.read_ended = true,
                None => break,
            }
        }
    }

    /// Whether writes are refused: our end of stream was sent.
    fn check_writable(&self) -> io::Result<()> {
        if self.write_shut {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the byte stream was shut down for writing",
            ));
        }
        Ok(())
    }
}

impl AsyncWrite for ByteStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_writable()?;
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

    /// The buffers gathered, in order, into one frame of at most
    /// [`max_inline_payload`](ByteStream::max_inline_payload) bytes (a
    /// lone buffer is written as it is, without the copy).
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_writable()?;
        let max = this.port.max_inline_payload();
        // One buffer with bytes, or a first one that fills a frame alone,
        // goes out as it is: nothing to gather.
        let mut with_bytes = bufs.iter().filter(|buf| !buf.is_empty());
        match (with_bytes.next(), with_bytes.next()) {
            (None, _) => return Poll::Ready(Ok(0)),
            (Some(first), second) if second.is_none() || first.len() >= max => {
                return Pin::new(this).poll_write(cx, first);
            }
            _ => {}
        }
        // A retried write (the ring was full) is gathered anew from the
        // same buffers: `AsyncWrite` callers pass them again.
        this.gathered.clear();
        for buf in bufs {
            let room = max - this.gathered.len();
            if room == 0 {
                break;
            }
            this.gathered.extend_from_slice(&buf[..buf.len().min(room)]);
        }
        let n = this.gathered.len();
        match this.port.poll_send(cx, &this.gathered) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
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
