//! The two stacks, run on either link: a client that calls `echo`, and a
//! server that answers it.

use crate::error::StackError;
use crate::link::Conn;
use crate::{grpc_echo, tarpc_echo};
use bytes::Bytes;
use std::str::FromStr;
use std::time::Duration;

/// Which RPC stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stack {
    /// tarpc (bincode over frames).
    Tarpc,
    /// gRPC with tonic (protobuf over HTTP/2 over a byte stream).
    Grpc,
}

impl Stack {
    /// Both stacks.
    pub const ALL: [Stack; 2] = [Stack::Tarpc, Stack::Grpc];

    /// The stack's name (`tarpc`, `grpc`).
    pub fn name(self) -> &'static str {
        match self {
            Stack::Tarpc => "tarpc",
            Stack::Grpc => "grpc",
        }
    }
}

impl std::fmt::Display for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Stack {
    type Err = StackError;

    fn from_str(s: &str) -> Result<Stack, StackError> {
        match s {
            "tarpc" => Ok(Stack::Tarpc),
            "grpc" => Ok(Stack::Grpc),
            other => Err(StackError::Link(format!(
                "unknown stack {other:?} (tarpc, grpc)"
            ))),
        }
    }
}

/// A client of either stack. Cloning is cheap; clones share the connection,
/// so each task of a concurrent caller takes its own.
#[derive(Clone)]
pub enum Caller {
    /// A tarpc client.
    Tarpc(tarpc_echo::EchoClient),
    /// A tonic client.
    Grpc(grpc_echo::EchoClient<tonic::transport::Channel>),
}

impl Caller {
    /// Calls `echo(payload)`, bounded by `timeout`, and returns the reply.
    pub async fn echo(&mut self, payload: Bytes, timeout: Duration) -> Result<Bytes, StackError> {
        match self {
            Caller::Tarpc(client) => tarpc_echo::call(client, payload, timeout).await,
            Caller::Grpc(client) => grpc_echo::call(client, payload, timeout).await,
        }
    }
}

/// Makes `stack`'s client over `conn`. Must run inside a tokio runtime.
pub async fn client(stack: Stack, conn: Conn) -> Result<Caller, StackError> {
    Ok(match (stack, conn) {
        (Stack::Tarpc, Conn::Unix(stream)) => {
            let transport =
                tarpc::serde_transport::Transport::from((unix(stream)?, tarpc_echo::codec()));
            Caller::Tarpc(tarpc_echo::client(transport))
        }
        (Stack::Tarpc, Conn::Ferry(connection)) => {
            let frames = ferry_adapters::Frames::from_connection(*connection)?;
            let transport = tarpc::tokio_serde::Framed::new(frames, tarpc_echo::codec());
            Caller::Tarpc(tarpc_echo::client(transport))
        }
        (Stack::Grpc, Conn::Unix(stream)) => Caller::Grpc(grpc_echo::client(unix(stream)?).await?),
        (Stack::Grpc, Conn::Ferry(connection)) => {
            let stream = ferry_adapters::ByteStream::from_connection(*connection)?;
            Caller::Grpc(grpc_echo::client(stream).await?)
        }
    })
}

/// Serves `stack` over `conn` until the client goes away. Must run inside
/// a tokio runtime.
pub async fn serve(stack: Stack, conn: Conn) -> Result<(), StackError> {
    match (stack, conn) {
        (Stack::Tarpc, Conn::Unix(stream)) => {
            let transport =
                tarpc::serde_transport::Transport::from((unix(stream)?, tarpc_echo::codec()));
            tarpc_echo::serve(transport).await
        }
        (Stack::Tarpc, Conn::Ferry(connection)) => {
            let frames = ferry_adapters::Frames::from_connection(*connection)?;
            let transport = tarpc::tokio_serde::Framed::new(frames, tarpc_echo::codec());
            tarpc_echo::serve(transport).await
        }
        (Stack::Grpc, Conn::Unix(stream)) => grpc_echo::serve(unix(stream)?).await,
        (Stack::Grpc, Conn::Ferry(connection)) => {
            let stream = ferry_adapters::ByteStream::from_connection(*connection)?;
            grpc_echo::serve(stream).await
        }
    }
}

/// A blocking Unix stream, registered with the runtime.
fn unix(stream: std::os::unix::net::UnixStream) -> Result<tokio::net::UnixStream, StackError> {
    stream.set_nonblocking(true)?;
    Ok(tokio::net::UnixStream::from_std(stream)?)
}
