//! ferry-handoff: the control plane of ferry (being written).
//!
//! - [`Channel`] — a `SOCK_SEQPACKET` Unix socket carrying bounded messages
//!   with descriptors; [`Listener`] for processes that do not share a parent.
#![deny(missing_docs)]

pub mod channel;
pub mod listener;
mod pidfd;
mod wait;

pub use channel::{
    Channel, PeerCredentials, Received, RecvError, SendError, SocketError, SocketKindError,
};
pub use listener::Listener;
pub use pidfd::PidfdError;
