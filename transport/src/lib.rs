//! # ferry-transport
//!
//! Connections between processes over shared memory: the layer
//! applications program against. It composes [`ferry_ring`] (the data path:
//! one lock-free ring per direction in one sealed memfd) and
//! [`ferry_handoff`] (the control path: a socket per connection for
//! liveness, descriptors and out-of-line payloads).
//!
//! - **Raw frames** ([`Connection::send_frame`], [`Connection::recv_frame`])
//!   for IPC layers with their own encoding: bytes in, bytes out, optionally
//!   with descriptors, blocking or not, with back-pressure when the ring is
//!   full.
//! - **Typed messages** declared with [`protocol!`]: rkyv archives written
//!   straight into the ring and validated on arrival, in place for a
//!   [`Trust::Trusted`] peer and from a private copy for an
//!   [`Trust::Untrusted`] one.
//! - **Replies and synchronous calls** with timeouts; a thread waiting for a
//!   synchronous reply still dispatches messages marked allowed-while-waiting.
//! - **Large payloads** go out of line automatically, in a memfd sealed
//!   against writes; **descriptors** travel with their message.
//! - **Faults**: a dead peer is noticed at once (its control socket hangs
//!   up) and every wait returns `Disconnected`; a peer that sends an invalid
//!   frame gets the connection closed with a [`Violation`] naming it.
//! - **Event loops**: [`Connection::readiness_fd`] is a socket that becomes
//!   readable when the armed connection has something to read.
//!
//! See [`protocol!`] for a typed example and [`Connection`] for a raw one;
//! `docs/transport.md` records the design decisions.
#![deny(missing_docs)]

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

mod call;
mod config;
mod connection;
mod dispatch;
mod endpoint;
pub mod envelope;
mod error;
mod id_map;
mod incoming;
mod introduce;
mod message;
mod outgoing;
mod protocol;
mod readiness;
mod stats;

pub use call::Reply;
pub use config::{ConnectionConfig, DEFAULT_RING_CAPACITY, Trust};
pub use connection::Connection;
pub use dispatch::BoundReceiver;
pub use endpoint::{ENDPOINT_FDS, Endpoint, EndpointError, EndpointInfo};
pub use error::{CallError, DispatchError, OpenError, RecvError, SendError, Violation};
pub use incoming::{Incoming, Received, decode_attachment_header};
pub use introduce::{Accepted, Acceptor, IntroductionError, connect, decode_request};
pub use message::{
    Archivable, Message, Receiver, Remote, Request, assert_distinct_ids, hash32, schema_of,
};
pub use outgoing::FrameWriter;
pub use stats::TransportStats;

/// Re-exported so users name one wait strategy type.
pub use ferry_ring::WaitStrategy;
/// The rkyv this crate was built with (and its format features), for
/// generated code and for users who deserialize archived messages.
pub use rkyv;
