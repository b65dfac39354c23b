//! # ferry-stacks
//!
//! Two real RPC stacks running on ferry between two processes, next to the
//! same stacks over a Unix socket:
//!
//! - **tarpc** over ferry's frames: [`ferry_adapters::Frames`] is a
//!   `Stream` + `Sink` of owned buffers, so tarpc's own
//!   `tokio_serde::Framed` (bincode) turns it into a tarpc transport with
//!   no glue ([`tarpc_echo`]);
//! - **gRPC with tonic** over ferry's byte stream:
//!   [`ferry_adapters::ByteStream`] is `AsyncRead + AsyncWrite`, so tonic's
//!   `Server` and `Channel` (hyper's HTTP/2) run on it unchanged
//!   ([`grpc_echo`]; the service is generated without `protoc`).
//!
//! [`process`] starts the server process and connects to it ([`link`]:
//! over ferry or a Unix socket at an abstract name); [`stack`] makes either
//! stack's client or server over either link. ferry's side is tuned with
//! its `ConnectionConfig`, `async_spin` above all (how long a waiting task
//! spins before it parks). The crate's tests and
//! examples, and ferry-bench's `rpc` command, are built on these.
#![deny(missing_docs)]

mod error;
pub mod example;
pub mod grpc_echo;
pub mod link;
pub mod process;
pub mod stack;
pub mod tarpc_echo;

pub use error::StackError;
pub use link::{Conn, Link};
pub use process::{Flavor, ServeSpec, ServerProcess};
pub use stack::{Caller, Stack};
