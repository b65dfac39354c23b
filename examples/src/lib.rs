//! Examples for ferry. The browser demo lands with issue 5.
#![deny(missing_docs)]
