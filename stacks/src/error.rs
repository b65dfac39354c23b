//! What can go wrong running a stack between two processes.

/// An error of a stack, its link or its helper process.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// Setting up or using the connection (ferry or Unix socket) failed.
    #[error("link: {0}")]
    Link(String),
    /// A tarpc call or server failed.
    #[error("tarpc: {0}")]
    Tarpc(String),
    /// A gRPC call or server failed.
    #[error("gRPC: {0}")]
    Grpc(String),
    /// A call did not complete in time.
    #[error("the call timed out")]
    TimedOut,
    /// A reply did not carry what was sent.
    #[error("the reply does not match the request")]
    WrongReply,
    /// The helper process failed.
    #[error("server process: {0}")]
    Process(String),
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
