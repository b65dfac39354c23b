//! A tarpc service between two processes over ferry.
//!
//! ```text
//! cargo run --release -p ferry-stacks --example tarpc_echo [-- uds]
//! ```
//!
//! This process listens at an abstract name and starts itself again as the
//! server, which connects. The server serves `Echo` (see
//! `ferry_stacks::tarpc_echo`) over the connection's frames: ferry-adapters'
//! `Frames` is a `Stream` + `Sink` of owned buffers, and
//! `tokio_serde::Framed::new(frames, Bincode::default())` is a tarpc
//! transport. Four tasks here then call it concurrently over one client;
//! dropping the client closes the connection and the server exits. With
//! `uds` the same runs over a Unix socket.
//!
//! The client's and the server's work is `ferry_stacks::example::main`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ferry_stacks::example::main(ferry_stacks::Stack::Tarpc, "tarpc")
}
