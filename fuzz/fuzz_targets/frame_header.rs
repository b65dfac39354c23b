#![no_main]
//! See `ferry_fuzz::frame_header` for the input format and what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz::frame_header::run(data));
