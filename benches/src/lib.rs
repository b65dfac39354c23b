//! # ferry-bench
//!
//! ferry's latency and throughput tool (the `ferry-bench` binary) and the
//! pieces its criterion benches share with it. Every measurement runs
//! between two real processes: the binary re-executes itself as the peer
//! ([`peer`]), hands it each transport's descriptors over a ferry-handoff
//! control channel ([`session`]), and drives the transport through one
//! [`Endpoint`](endpoint::Endpoint) interface ([`driver`]), next to the
//! baselines measured in the same run: the shared-memory floor (spinning and
//! futex), Unix sockets and pipes ([`transports`]).
//!
//! The copy rule is the same for every transport: the sender copies the
//! whole payload into the transport (`memcpy` from a private buffer), the
//! receiver copies it whole into a private buffer and checks a few stamped
//! words there (verified by the sender) — see [`payload`].
//!
//! Round trips run closed-loop ([`driver`]) or open-loop at a fixed rate,
//! each latency counted from the request's intended send time
//! ([`open_loop`]); optionally beside a stream on a second connection
//! ([`background`]) and with sizes drawn from a distribution ([`sizes`]).
//! Results become tables and JSON ([`report`]) and SVG plots ([`plot`]).
//! A user's own `protocol!` request and handler are measured the same way
//! through [`custom`].
#![deny(missing_docs)]

pub mod background;
pub mod catalog;
pub mod cpu;
pub mod custom;
pub mod driver;
pub mod endpoint;
pub mod job;
pub mod mode;
pub mod open_loop;
pub mod payload;
pub mod peer;
pub mod plot;
pub mod report;
#[cfg(feature = "rpc")]
pub mod rpc;
pub mod session;
pub mod sizes;
pub mod transports;

/// Any error, with a message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A result with [`BoxError`].
pub type Result<T> = std::result::Result<T, BoxError>;
