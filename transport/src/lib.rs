//! ferry-transport: connections built on ferry-ring and ferry-handoff.
//!
//! Empty for now: the transport is issue 4 and lands on top of the ring and
//! the control plane.
#![deny(missing_docs)]
