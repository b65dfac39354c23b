//! # ferry-adapters
//!
//! ferry under other IPC layers, for code written against the traits of the
//! async Rust ecosystem rather than against ferry:
//!
//! - [`Frames`]: a connection's frames as a `futures` `Stream` of
//!   [`bytes::BytesMut`] and a `Sink` of [`bytes::Bytes`] — the shape of a
//!   message transport; `tokio_serde::Framed::new(frames, codec)` is a
//!   tarpc transport.
//! - [`ByteStream`]: a connection as `tokio::io::AsyncRead + AsyncWrite` —
//!   the shape of a socket; HTTP/2 (hyper), gRPC (tonic) or Cap'n Proto run
//!   on it unchanged.
//!
//! Both are built on ferry-transport's async API (its `tokio` feature) and
//! inherit its waiting: a task waiting for a frame or for room spins for a
//! short, configurable time, then parks on the connection's readiness
//! descriptor; it never blocks the runtime's thread.
#![deny(missing_docs)]

mod byte_stream;
mod fan_out;
mod frames;
mod port;

pub use byte_stream::ByteStream;
pub use frames::Frames;

use ferry_transport::{AsyncConnection, Connection};
use port::Port;
use std::io;

impl Frames {
    /// The frames of `connection`.
    pub fn new(connection: AsyncConnection) -> Frames {
        Frames::from_port(Port::new(connection))
    }

    /// The frames of `connection`, registered with the current tokio
    /// runtime (as [`AsyncConnection::new`]; panics outside one).
    pub fn from_connection(connection: Connection) -> io::Result<Frames> {
        Ok(Frames::new(AsyncConnection::new(connection)?))
    }

    /// The connection (its configuration, stats, peer state).
    pub fn get_ref(&self) -> &AsyncConnection {
        self.port().get_ref()
    }

    /// The connection back. A frame the sink still holds is dropped: flush
    /// first.
    pub fn into_inner(self) -> AsyncConnection {
        self.into_port().into_inner()
    }
}

impl ByteStream {
    /// `connection` as a byte stream. Both ends of a connection must use
    /// it (its frames are chunks of the stream, an empty one its end).
    pub fn new(connection: AsyncConnection) -> ByteStream {
        ByteStream::from_port(Port::new(connection))
    }

    /// `connection` as a byte stream, registered with the current tokio
    /// runtime (as [`AsyncConnection::new`]; panics outside one).
    pub fn from_connection(connection: Connection) -> io::Result<ByteStream> {
        Ok(ByteStream::new(AsyncConnection::new(connection)?))
    }

    /// The connection (its configuration, stats, peer state).
    pub fn get_ref(&self) -> &AsyncConnection {
        self.port().get_ref()
    }
}
