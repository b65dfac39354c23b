//! Test support shared by ferry's crates (a dev-dependency only).
//!
//! The multi-process tests of ferry-ring and ferry-transport drive their
//! peers the same way; what they share lives here, one concept a module:
//!
//! - [`payload`]: self-checking frames (every byte derived from a sequence
//!   number, with the number and a checksum embedded) and reproducible
//!   payload lengths.
//! - [`process`]: re-executing the test binary as a helper process, and a
//!   guard that kills and reaps it.
//! - [`bounded`]: running work with a time limit, so a hang fails a test
//!   instead of stalling the run.
//! - [`fds`]: counting and listing this process's descriptors.
//! - [`shm`]: a raw second mapping of a shared-memory file, through which a
//!   test plays a hostile peer.
//!
//! This crate knows nothing of ferry's own types: it depends on std,
//! rustix and fastrand only, and each crate keeps its specific harness
//! (how a region or an endpoint reaches the child, its layout offsets) in
//! its own `tests/support` module.

#![deny(missing_docs)]

pub mod bounded;
pub mod fds;
pub mod payload;
pub mod process;
pub mod shm;
