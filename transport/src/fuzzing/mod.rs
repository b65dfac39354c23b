//! Fuzzing a user's own protocol (feature `fuzzing`).
//!
//! Three checkers, each a function a cargo-fuzz target calls in one line,
//! for the receivers a connection carries (a [`Protocol`]: one receiver
//! declared with [`protocol!`](crate::protocol), or a tuple of them):
//!
//! | checker | what it throws | what it checks beyond "no panic, no hang" |
//! |---|---|---|
//! | [`decode::check`] | arbitrary bytes as one frame | the envelope re-encodes byte for byte; a trusted (in place) and an untrusted (copied) receiver accept the same archives; an accepted archive's value re-encodes into an archive that validates and re-encodes identically |
//! | [`Target::dispatch`] | frames (any bytes, or well-formed messages of the protocol with mutated envelopes) and descriptor attachments from a hostile peer into a connection with the user's handlers, dispatched, received raw, or during a synchronous call | nothing is dispatched after a violation; calls nest at most `max_sync_nesting` deep; the set-aside queue stays within `max_deferred_bytes` / `max_deferred_fds` (and one message); batches stay within `max_dispatch_batch`; no descriptor leaks |
//! | [`Target::session`] | a live connection driven by sequences of valid messages, requests with replies (taken or never taken), synchronous calls both ways, hang-ups, mixed with mutated and garbage frames | the same invariants, and: traffic with nothing mutated never ends the connection with a violation |
//!
//! Under the feature, `protocol!` also implements
//! [`arbitrary::Arbitrary`] for every message and reply it declares (each
//! field's type must implement it), so valid messages are built from the
//! fuzzer's bytes and reach the handlers instead of failing validation.
//!
//! A finding is returned as a [`Finding`] naming the [`Check`] that failed;
//! the `fuzz_*` functions panic with it, which libFuzzer reports as a
//! crash. A downstream crate's fuzz targets are a few lines each:
//!
//! ```
//! use ferry_transport::fuzzing::{self, Target};
//! use ferry_transport::{ConnectionConfig, Context, Receiver, schema_of};
//!
//! ferry_transport::protocol! {
//!     /// The user's protocol.
//!     pub receiver Store handled_by StoreHandler {
//!         /// Stores a value.
//!         fn put => Put { key: String, value: u64 };
//!         /// Reads one back.
//!         fn get => Get { key: String } -> Got { value: Option<u64> };
//!     }
//! }
//!
//! struct Map;
//! impl StoreHandler for Map {
//!     fn put(&self, _: &mut Context, message: &ArchivedPut) {
//!         std::hint::black_box(message.key.as_str());
//!     }
//!     fn get(&self, _: &mut Context, message: &ArchivedGet) -> Got {
//!         Got { value: Some(message.key.len() as u64) }
//!     }
//! }
//!
//! fn target() -> Target<Store> {
//!     let config = ConnectionConfig::default().schema(schema_of(&[Store::SCHEMA]));
//!     Target::new(config).serve(0, || Store::handler(Map))
//! }
//!
//! // In fuzz_targets/decode.rs:
//! //     fuzz_target!(|data: &[u8]| ferry_transport::fuzzing::fuzz_decode::<Store>(data));
//! // In fuzz_targets/dispatch.rs and fuzz_targets/session.rs:
//! //     fuzz_target!(|data: &[u8]| target().fuzz_dispatch(data));
//! //     fuzz_target!(|data: &[u8]| target().fuzz_session(data));
//! // Here, one input of each:
//! fuzzing::fuzz_decode::<Store>(b"any bytes at all");
//! target().fuzz_dispatch(&[0x01, 0x02, 0x00, 0x03, 0x00, 0x00, 0x00]);
//! target().fuzz_session(b"a sequence of steps, decoded with `arbitrary`");
//! ```
//!
//! The repository's `fuzz/README.md` walks through it step by step, and
//! `fuzz/browser/` fuzzes the browser demo's protocols this way.

mod catalog;
pub mod decode;
pub mod dispatch;
pub mod fds;
mod finding;
mod peer;
mod protocol;
mod round_trip;
mod session;
mod target;
mod watch;

pub use arbitrary;
pub use dispatch::{DispatchReport, dispatch_input};
pub use finding::{Check, Finding};
pub use peer::{AttachedFd, PeerOp};
pub use protocol::{Fuzzable, Protocol, Visitor};
pub use session::SessionReport;
pub use target::Target;

/// [`decode::check`] for a fuzz target: panics with the finding, if any.
pub fn fuzz_decode<P: Protocol>(data: &[u8]) {
    if let Err(finding) = decode::check::<P>(data) {
        panic!("{finding}");
    }
}
