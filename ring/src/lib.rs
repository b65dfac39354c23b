//! ferry-ring (being written).
#![deny(missing_docs)]
