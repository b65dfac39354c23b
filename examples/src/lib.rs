//! Examples for ferry.
//!
//! The multi-process browser demo is the `browser` binary
//! (`src/bin/browser/`): `cargo run --release -p ferry-examples --bin browser`.
//! Its messages are in [`browser_protocol`], a library module so that other
//! crates (the fuzz targets of `fuzz/`) can use the same declarations.
#![deny(missing_docs)]

pub mod browser_protocol;
