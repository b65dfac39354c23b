#![no_main]
//! See `ferry_fuzz::message` for the input format and what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz::message::run(data));
