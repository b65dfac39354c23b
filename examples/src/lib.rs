//! Examples for ferry.
//!
//! The multi-process browser demo is the `browser` binary
//! (`src/bin/browser/`): `cargo run --release -p ferry-examples --bin browser`.
#![deny(missing_docs)]
