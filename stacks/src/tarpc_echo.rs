//! The tarpc echo service: its definition, the server's logic, and how a
//! server and a client run over any tarpc transport (ferry's frames as a
//! `Stream` + `Sink`, or a length-delimited Unix socket).

use crate::error::StackError;
use bytes::Bytes;
use futures_util::StreamExt as _;
use std::time::{Duration, Instant};
use tarpc::client;
use tarpc::server::{BaseChannel, Channel as _};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{ClientMessage, Response};

/// The service: one call, the one ferry-bench measures.
#[tarpc::service]
pub trait Echo {
    /// Returns `payload` (`Bytes`: serialized as one byte string, not as
    /// a sequence of `u8`s).
    async fn echo(payload: Bytes) -> Bytes;
}

/// The server's logic: echo the payload.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echoer;

impl Echo for Echoer {
    async fn echo(self, _: tarpc::context::Context, payload: Bytes) -> Bytes {
        payload
    }
}

/// What the server reads and writes: requests in, responses out.
type ServerItem = ClientMessage<EchoRequest>;
/// What the client reads and writes: responses in, requests out.
type ClientItem = Response<EchoResponse>;

/// The codec both stacks use over their frames: bincode, as tarpc's own
/// serde transports do.
pub fn codec<Item, SinkItem>() -> Bincode<Item, SinkItem> {
    Bincode::default()
}

/// Serves the echo service on `transport` until the client goes away,
/// each request in a task of its own (concurrent calls are answered
/// concurrently).
pub async fn serve<T>(transport: T) -> Result<(), StackError>
where
    T: tarpc::Transport<Response<EchoResponse>, ServerItem> + Send + 'static,
{
    BaseChannel::with_defaults(transport)
        .execute(Echoer.serve())
        .for_each(|response| async {
            tokio::spawn(response);
        })
        .await;
    Ok(())
}

/// A client on `transport`; its dispatch runs in a task of its own. Clones
/// share the transport: calls from several tasks are multiplexed on it.
pub fn client<T>(transport: T) -> EchoClient
where
    T: tarpc::Transport<ClientMessage<EchoRequest>, ClientItem> + Send + 'static,
{
    EchoClient::new(client::Config::default(), transport).spawn()
}

/// Calls `echo` once, with a deadline `timeout` from now.
pub async fn call(
    client: &EchoClient,
    payload: Bytes,
    timeout: Duration,
) -> Result<Bytes, StackError> {
    let mut context = tarpc::context::current();
    context.deadline = Instant::now() + timeout;
    client.echo(context, payload).await.map_err(|e| match e {
        client::RpcError::DeadlineExceeded => StackError::TimedOut,
        other => StackError::Tarpc(other.to_string()),
    })
}
