#![no_main]
//! A live WebContent ↔ GPU connection: drawing commands and flushes.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz_browser::gpu().fuzz_session(data));
