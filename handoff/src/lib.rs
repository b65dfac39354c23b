//! ferry-handoff: the control plane (being written).
#![deny(missing_docs)]
