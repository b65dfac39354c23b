//! ferry-handoff: the control plane of ferry (being written).
//!
//! - [`Channel`] — a `SOCK_SEQPACKET` Unix socket carrying bounded messages
//!   with descriptors; [`Listener`] for processes that do not share a parent.
//! - [`message`] — the typed, versioned control messages and their validated
//!   binary encoding ([`ControlMessage::decode`] is the fuzzing entry point).
//! - [`bootstrap`] — how a parent gives a spawned child its first channel
//!   (`FERRY_BOOTSTRAP_FD`), and how the child takes it.
#![deny(missing_docs)]

pub mod bootstrap;
pub mod channel;
pub mod listener;
pub mod message;
mod pidfd;
mod wait;

pub use bootstrap::{BOOTSTRAP_ENV, BootstrapError, SpawnError};
pub use channel::{
    Channel, PeerCredentials, Received, RecvError, SendError, SocketError, SocketKindError,
};
pub use listener::Listener;
pub use message::{ConnectFailure, ControlMessage, DecodeError, InstanceId, PeerId};
pub use pidfd::PidfdError;
