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
//!   synchronous reply still dispatches incoming synchronous requests and
//!   messages declared allowed-while-waiting. Handlers get a [`Context`];
//!   pull-style receiving ([`Received::get`], [`Received::reply`]) needs no
//!   handler at all.
//! - **Large payloads** go out of line automatically, in a memfd sealed
//!   against writes; **descriptors** travel with their message.
//! - **Faults**: a dead peer is noticed at once (its control socket hangs
//!   up) and every wait returns `Disconnected`; a peer that sends an invalid
//!   frame gets the connection closed with a [`Violation`] naming it.
//! - **Event loops**: [`Connection::readiness_fd`] (a socket) becomes readable when the
//!   armed connection has something to read ([`Connection::arm`]) or room
//!   to send ([`Connection::arm_send`]).
//! - **Threads**: [`Connection::split`] gives a cloneable
//!   [`ConnectionSender`] for any number of sending threads; the connection
//!   stays the receiving half.
//! - **Async** (cargo feature `tokio`, off by default): `AsyncConnection`
//!   and `AsyncSender` make receiving, sending, dispatching and calling
//!   futures over tokio's `AsyncFd`, with `poll_recv_ready` /
//!   `poll_send_ready` for adapters.
//! - **Setting up**: [`Connection::pair`]; [`connect`] / [`Acceptor`] through
//!   a broker; [`named`] for unrelated processes meeting at a path or an
//!   abstract name.
//! - **Hostile peers** cannot crash, hang or exhaust a process: every limit
//!   is a [`ConnectionConfig`] setting (the repository's `docs/security.md`).
//!
//! See [`protocol!`] for a typed example and [`Connection`] for a raw one;
//! the repository's `docs/design.md` is the map of the design and
//! `docs/decisions.md` records the decisions.
#![deny(missing_docs)]

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

// The state a connection owns, one owner type per concept.
mod inbox;
mod lifecycle;
mod outbox;
mod pending;
mod registry;
mod routed;
mod set_aside;
mod shared_outbox;

// The connection, and its operations grouped by use.
mod call;
mod connection;
mod context;
mod dispatch;
mod raw;
mod readiness;
mod reply_handle;
mod sender;

#[cfg(feature = "tokio")]
mod async_connection;
#[cfg(feature = "tokio")]
mod async_sender;
#[cfg(feature = "tokio")]
mod async_wait;

mod config;
mod endpoint;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod id_map;
mod incoming;
mod introduce;
mod message;
pub mod named;
mod protocol;
mod stats;
pub mod wire;

/// The wire layouts under their former name.
#[doc(hidden)]
pub use wire as envelope;

#[cfg(feature = "tokio")]
pub use async_connection::AsyncConnection;
#[cfg(feature = "tokio")]
pub use async_sender::AsyncSender;
pub use call::Reply;
pub use config::{
    ConnectionConfig, DEFAULT_ASYNC_SPIN, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_REGION_SIZE,
    DEFAULT_MAX_REPLY_HANDLES, DEFAULT_MAX_RING_CAPACITY, DEFAULT_RING_CAPACITY,
    DEFAULT_SEND_TIMEOUT, SET_ASIDE_OVERHEAD, Trust,
};
pub use connection::{BoundReceiver, Connection, Context};
pub use endpoint::{ENDPOINT_FDS, Endpoint, EndpointError, EndpointInfo};
pub use error::{
    AttachmentError, BlobRefusal, CallError, Cause, DispatchError, OpenError, RecvError, SendError,
    Violation,
};
pub use ferry_handoff::{Admission, LimitReached, RequesterLimits};
pub use incoming::Incoming;
pub use introduce::{
    Accepted, Acceptor, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_REQUESTER,
    IntroductionError, connect, connect_retrying, decode_request,
};
pub use message::{
    Archivable, Message, Receiver, Remote, Request, View, assert_distinct_ids, hash32,
    hash32_continue, schema_of,
};
pub use outbox::FrameWriter;
pub use pending::{CallCanceller, RequestId};
pub use raw::Received;
pub use reply_handle::ReplyHandle;
pub use sender::ConnectionSender;
pub use stats::TransportStats;
pub use wire::{NoReply, decode_attachment_header};

/// Re-exported so users name one wait strategy type.
pub use ferry_ring::WaitStrategy;
/// The rkyv this crate was built with (and its format features), for
/// generated code and for users who deserialize archived messages.
pub use rkyv;
