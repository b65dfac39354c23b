//! ferry-bench: the benchmark tool lands with issue 6.
#![deny(missing_docs)]
