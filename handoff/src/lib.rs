//! ferry-handoff: the control plane of ferry.
//!
//! It moves descriptors between processes and knows nothing of rings: what
//! it forwards is opaque (descriptors plus a small metadata blob).
//!
//! - [`Channel`] — a `SOCK_SEQPACKET` Unix socket carrying bounded messages
//!   with descriptors (`SCM_RIGHTS`), close-on-exec everywhere, truncation
//!   an error that leaks nothing, timeouts on every wait, peer credentials
//!   and pidfd; [`Listener`] for processes that do not share a parent.
//! - [`message`] — the typed, versioned control messages and their validated
//!   binary encoding ([`ControlMessage::decode`] is the fuzzing entry
//!   point).
//! - [`bootstrap`] — how a parent gives a spawned child its first channel
//!   (`FERRY_BOOTSTRAP_FD`), and how the child takes it.
//! - [`Broker`] — the parent ("UI process"): spawns children, introduces
//!   them to each other under a [`Policy`], watches them (pidfd and
//!   hang-up), reaps them, tells the survivors.
//!   It can also provide services of its own ([`Broker::serve`]), relaunch
//!   crashed children ([`Broker::spawn_restarting`], [`restart`]) and judge
//!   reports of misbehaving peers ([`ReportPolicy`], [`report`]).
//! - [`BrokerClient`] — a child's side: `connect` to a service, serve
//!   connections with a [`ConnectionHandler`], learn of [`ClientEvent`]s.
//! - [`RequesterLimits`] — a service's bound on the live connections it
//!   holds per requester (named by the broker) and in all.
//! - [`hangup`] — the process-wide hang-up watcher (fork-safe).
//!
//! # Passing a descriptor
//!
//! ```
//! use std::io::{Read, Seek, Write};
//! use std::os::fd::AsFd;
//! use std::time::Duration;
//! use ferry_handoff::Channel;
//!
//! let (a, b) = Channel::pair()?;
//!
//! let mut file = std::fs::File::from(rustix::fs::memfd_create(
//!     "example",
//!     rustix::fs::MemfdFlags::CLOEXEC,
//! )?);
//! file.write_all(b"shared through a descriptor")?;
//! a.send(b"here is a memfd", &[file.as_fd()])?;
//! drop(file); // the message holds its own reference
//!
//! let mut buf = [0u8; 64];
//! let received = b.recv(&mut buf, Some(Duration::from_secs(5)))?;
//! assert_eq!(&buf[..received.len], b"here is a memfd");
//! let mut file = std::fs::File::from(received.fds.into_iter().next().unwrap());
//! let mut text = String::new();
//! file.rewind()?;
//! file.read_to_string(&mut text)?;
//! assert_eq!(text, "shared through a descriptor");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Decisions
//!
//! - **Wire format**: hand-written little-endian with a version byte; every
//!   length bounded ([`message`] has the table). No serde: the format is
//!   small, must be validated field by field, and must not change with a
//!   dependency's version.
//! - **Untrusted input**: everything read from a socket is bounded and
//!   validated; a malformed message closes the channel (and the broker kills
//!   the child that sent it). Nothing panics on input.
//! - **Descriptor hygiene**: sockets are created `SOCK_CLOEXEC`, received
//!   descriptors arrive with `MSG_CMSG_CLOEXEC`, the broker closes what it
//!   forwards, and a rejected message's descriptors are closed before the
//!   error is returned (rustix's `recvmsg` owns them from the start).
//! - **No unbounded waits in the protocol**: the broker never blocks on a
//!   child (`MSG_DONTWAIT` only; a child that lets its socket buffer fill is
//!   cut off), introductions have a broker-side deadline, and
//!   [`BrokerClient::connect`] has a caller-side one.
//! - **Descriptors a peer shares**: a peer may hold a copy of our end of a
//!   channel (the same open file description) and clear `O_NONBLOCK` on it.
//!   No system call this crate makes on such a descriptor can block: every
//!   `sendmsg`/`recvmsg` carries `MSG_DONTWAIT` and waits happen in `poll`
//!   (see [`Channel`]); the hang-up watcher only registers descriptors with
//!   epoll (see [`hangup`]).
//! - **Bootstrap inheritance**: `FD_CLOEXEC` is cleared in `pre_exec` on the
//!   child's copy, at its existing number, rather than `dup2` to a fixed
//!   number; see [`bootstrap`] for why, and for how the environment variable
//!   is removed.
//! - **`SO_PEERCRED` on socketpairs** names the process that created the
//!   pair; the broker therefore identifies children by the pid it spawned
//!   and watches them with `pidfd_open` on that (unreaped, so not
//!   recyclable) pid.
#![deny(missing_docs)]

pub mod admission;
pub mod bootstrap;
pub mod broker;
pub mod channel;
pub mod client;
mod credentials;
pub mod hangup;
pub mod listener;
pub mod message;
mod pidfd;
pub mod report;
pub mod restart;
mod wait;

pub use admission::{Admission, LimitReached, RequesterLimits};
pub use bootstrap::{BOOTSTRAP_ENV, BootstrapError, SpawnError};
pub use broker::{
    AllowAll, BROKER_INSTANCE, Broker, BrokerConfig, BrokerError, BrokerEvent, BrokerHandle,
    Decision, KillError, Policy,
};
pub use channel::{
    Channel, PeerCredentials, Received, RecvError, SendError, SocketError, SocketKindError,
};
pub use client::{
    BrokerClient, ClientBuilder, ClientError, ClientEvent, ConnectError, ConnectionHandler,
    ConnectionRequest, Endpoint, Introduction,
};
pub use listener::Listener;
pub use message::{ConnectFailure, ControlMessage, DecodeError, InstanceId, PeerId};
pub use pidfd::PidfdError;
pub use report::{IgnoreReports, ReportOutcome, ReportPolicy, Verdict};
