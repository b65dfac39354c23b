//! # ferry-fuzz
//!
//! The harnesses behind ferry's fuzz targets. Each module has a `run(data)`
//! that the matching target in `fuzz_targets/` calls, so the same code also
//! runs on stable from `cargo test` (replaying the seeds and every
//! regression input) and from the seed generator (`examples/seeds.rs`),
//! which writes its inputs with the encoders defined here.
//!
//! | target | module | what it throws bytes at |
//! |---|---|---|
//! | `frame_header` | [`frame_header`] | `ferry_ring::frame::decode_header`, checked against a reference predicate |
//! | `message` | [`message`] | the envelope, endpoint metadata, attachment header and introduction request decoders, and rkyv validation of every declared message ([`proto`]) |
//! | `control` | [`control`] | `ferry_handoff::ControlMessage::decode` with descriptor counts, re-encoded canonically |
//! | `ring_consumer` | [`ring_consumer`] | a `Consumer` over a ring whose header, positions and data a hostile peer writes between operations, next to an honest `Producer` and a model of what must arrive |
//! | `dispatch` | [`dispatch`] | a victim `Connection` dispatching frames and attachments a hostile peer put in its ring and socket |
//!
//! Every harness panics (which the fuzzer reports as a crash) only when a
//! checked property fails; whatever the input, ferry itself must neither
//! panic nor read out of bounds nor hang.

pub mod control;
pub mod dispatch;
pub mod frame_header;
pub mod input;
pub mod message;
pub mod proto;
pub mod ring_consumer;
