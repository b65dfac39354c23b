#![no_main]
//! A live WebContent ↔ Network connection: valid loads and cookie calls,
//! replies, hang-ups, mixed with mutated frames.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz_browser::network().fuzz_session(data));
