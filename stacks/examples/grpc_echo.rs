//! A gRPC service (tonic) between two processes over ferry.
//!
//! ```text
//! cargo run --release -p ferry-stacks --example grpc_echo [-- uds]
//! ```
//!
//! This process listens at an abstract name and starts itself again as the
//! server, which connects. The server runs tonic's `Server` with the `Echo`
//! service (see `ferry_stacks::grpc_echo`, generated without `protoc`) over
//! the connection as a byte stream: ferry-adapters' `ByteStream` is
//! `AsyncRead + AsyncWrite`, so hyper's HTTP/2 runs on it unchanged. Four
//! tasks here then call it concurrently over one tonic `Channel`; dropping
//! the client closes the connection and the server exits. With
//! `uds` the same runs over a Unix socket.
//!
//! The client's and the server's work is `ferry_stacks::example::main`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ferry_stacks::example::main(ferry_stacks::Stack::Grpc, "gRPC")
}
